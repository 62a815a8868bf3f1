/* vlan.c - VLANs: an untagged PIF on top of a tagged one.
 *
 * As in xapi, VLAN.create(tagged_PIF, tag, network) gives 'network' a
 * PIF of its own (same device, VLAN = tag, not physical); on the switch
 * the network's bridge becomes a fake bridge with that tag on the tagged
 * PIF's bridge, so VIFs on the VLAN network are tagged ports there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/net-api.h"
#include "api/vm.h"
#include "network/net.h"
#include "xa-impl.h"

struct xa_error *
xa_impl_VLAN_create(struct xa_call *call, const char *tagged_PIF, int64_t tag,
                    const char *network, struct xa_value **ret)
{
    XA_UNUSED(call);
    char tagtext[24];
    snprintf(tagtext, sizeof tagtext, "%lld", (long long)tag);
    if (tag < 0 || tag > 4094) {
        return xa_error_new("VLAN_TAG_INVALID", 1, tagtext);
    }
    struct xa_error *err = xa_net_check_backend();
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_write();
    const char *dev =
        xa_api_str(t, &xa_cls_PIF, tagged_PIF, XA_F(xa_cls_PIF, "device"));
    const char *host =
        xa_api_str(t, &xa_cls_PIF, tagged_PIF, XA_F(xa_cls_PIF, "host"));
    char *vref = NULL, *pref = NULL;
    if (!xa_db_exists(t, &xa_cls_PIF, tagged_PIF)) {
        err = xa_error_handle_invalid("PIF", tagged_PIF);
    } else if (!xa_db_exists(t, &xa_cls_network, network)) {
        err = xa_error_handle_invalid("network", network);
    } else if (xa_api_int(t, &xa_cls_PIF, tagged_PIF,
                          XA_F(xa_cls_PIF, "VLAN")) >= 0) {
        err = xa_error_new("PIF_IS_VLAN", 1, tagged_PIF);
    } else if (xa_db_exists(t, &xa_cls_Bond,
                            xa_api_str(t, &xa_cls_PIF, tagged_PIF,
                                       XA_F(xa_cls_PIF, "bond_slave_of")))) {
        err = xa_error_new("CANNOT_ADD_VLAN_TO_BOND_SLAVE", 1, tagged_PIF);
    }
    /* One VLAN per tag on a device; one PIF per host on a network. */
    struct xa_value *pifs = err ? NULL : xa_db_get_all(t, &xa_cls_PIF);
    for (size_t i = 0; pifs && i < pifs->u.arr.n && !err; i++) {
        const char *p = pifs->u.arr.items[i]->u.str.s;
        if (strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host")),
                   host) != 0) {
            continue;
        }
        if (strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "device")),
                   dev) == 0 &&
            xa_api_int(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "VLAN")) == tag) {
            err = xa_error_new("PIF_VLAN_EXISTS", 1, dev);
        } else if (strcmp(xa_api_str(t, &xa_cls_PIF, p,
                                     XA_F(xa_cls_PIF, "network")),
                          network) == 0) {
            err = xa_error_new("NETWORK_ALREADY_CONNECTED", 2, network, p);
        }
    }
    xa_value_unref(pifs);
    if (!err) {
        vref = xa_ref_new();
        pref = xa_ref_new();
        struct xa_value *v = xa_struct();
        xa_struct_set(v, "tagged_PIF", xa_string(tagged_PIF));
        xa_struct_set(v, "tag", xa_int(tag));
        xa_struct_set(v, "other_config", xa_struct());
        err = xa_db_create(t, &xa_cls_VLAN, vref, v);
    }
    if (!err) {
        struct xa_value *p = xa_struct();
        xa_struct_set(p, "device", xa_string(dev));
        xa_struct_set(p, "network", xa_string(network));
        xa_struct_set(p, "host", xa_string(host));
        xa_struct_set(p, "MAC",
                      xa_string(xa_api_str(t, &xa_cls_PIF, tagged_PIF,
                                           XA_F(xa_cls_PIF, "MAC"))));
        xa_struct_set(p, "MTU",
                      xa_int(xa_api_int(t, &xa_cls_network, network,
                                        XA_F(xa_cls_network, "MTU"))));
        xa_struct_set(p, "VLAN", xa_int(tag));
        xa_struct_set(p, "physical", xa_bool(false));
        xa_struct_set(p, "currently_attached", xa_bool(true));
        xa_struct_set(p, "VLAN_master_of", xa_string(vref));
        xa_struct_set(p, "ip_configuration_mode", xa_string("None"));
        xa_struct_set(p, "other_config", xa_struct());
        err = xa_db_create(t, &xa_cls_PIF, pref, p);
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_VLAN, vref,
                         XA_F(xa_cls_VLAN, "untagged_PIF"), xa_string(pref));
    }
    err = xa_api_finish(t, err);
    free(pref);
    if (err) {
        free(vref);
        return err;
    }
    xa_net_bridge_soon(network);
    *ret = xa_string_take(vref);
    return NULL;
}

struct xa_error *
xa_impl_VLAN_destroy(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    const char *pif =
        xa_api_str(t, &xa_cls_VLAN, self, XA_F(xa_cls_VLAN, "untagged_PIF"));
    if (!xa_db_exists(t, &xa_cls_VLAN, self)) {
        err = xa_error_handle_invalid("VLAN", self);
    } else if (xa_db_exists(t, &xa_cls_PIF, pif) &&
               xa_api_bool(t, &xa_cls_PIF, pif,
                           XA_F(xa_cls_PIF, "management"))) {
        err = xa_error_new("PIF_IS_MANAGEMENT_INTERFACE", 1, pif);
    } else {
        char *p = xa_strdup(pif);
        if (xa_db_exists(t, &xa_cls_PIF, p)) {
            err = xa_db_destroy(t, &xa_cls_PIF, p);
        }
        free(p);
        if (!err) {
            err = xa_db_destroy(t, &xa_cls_VLAN, self);
        }
    }
    err = xa_api_finish(t, err);
    if (!err) {
        xa_net_restructure();
    }
    return err;
}

void
xa_vlan_init(void)
{
}
