/* bond.c - bonds: several NICs as one uplink.
 *
 * Bond.create gives 'network' a master PIF "bondN" and takes the member
 * PIFs off their own bridges; on the switch the bond is one port of
 * several interfaces on the network's bridge, in the bond mode asked for
 * (balance-slb and active-backup as named; lacp is OVS's balance-tcp with
 * LACP active). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/net-api.h"
#include "api/vm.h"
#include "network/net.h"
#include "xa-impl.h"

static bool
device_taken(struct xa_txn *t, const char *host, const char *dev)
{
    struct xa_value *all = xa_db_get_all(t, &xa_cls_PIF);
    bool taken = false;
    for (size_t i = 0; all && i < all->u.arr.n && !taken; i++) {
        const char *p = all->u.arr.items[i]->u.str.s;
        taken =
            strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host")),
                   host) == 0 &&
            strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "device")),
                   dev) == 0;
    }
    xa_value_unref(all);
    return taken;
}

static struct xa_error *
check_members(struct xa_txn *t, const char *network,
              const struct xa_value *members, const char **host)
{
    if (!members || members->u.arr.n < 2) {
        return xa_error_new("PIF_BOND_NEEDS_MORE_MEMBERS", 0);
    }
    *host = NULL;
    for (size_t i = 0; i < members->u.arr.n; i++) {
        const char *p = members->u.arr.items[i]->u.str.s;
        if (!xa_db_exists(t, &xa_cls_PIF, p)) {
            return xa_error_handle_invalid("PIF", p);
        }
        const char *h = xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host"));
        if (*host && strcmp(*host, h) != 0) {
            return xa_error_new("PIF_CANNOT_BOND_CROSS_HOST", 0);
        }
        *host = h;
        if (xa_api_int(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "VLAN")) >= 0) {
            return xa_error_new("PIF_IS_VLAN", 1, p);
        }
        if (xa_db_exists(t, &xa_cls_Bond,
                         xa_api_str(t, &xa_cls_PIF, p,
                                    XA_F(xa_cls_PIF, "bond_slave_of")))) {
            return xa_error_new("PIF_ALREADY_BONDED", 1, p);
        }
        if (!xa_api_bool(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "physical"))) {
            return xa_error_new("PIF_IS_NOT_PHYSICAL", 1, p);
        }
        if (xa_api_bool(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "management"))) {
            return xa_error_new("PIF_IS_MANAGEMENT_INTERFACE", 1, p);
        }
    }
    struct xa_value *pifs = xa_db_get_field(t, &xa_cls_network, network,
                                            XA_F(xa_cls_network, "PIFs"));
    struct xa_error *err = NULL;
    for (size_t i = 0; pifs && i < pifs->u.arr.n && !err; i++) {
        const char *p = pifs->u.arr.items[i]->u.str.s;
        if (strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host")),
                   *host) == 0) {
            err = xa_error_new("NETWORK_ALREADY_CONNECTED", 2, network, p);
        }
    }
    xa_value_unref(pifs);
    return err;
}

static struct xa_value *
default_properties(const char *mode, const struct xa_value *given)
{
    struct xa_value *p =
        given && given->kind == XA_STRUCT ? xa_value_copy(given) : xa_struct();
    if (!xa_struct_get(p, "hashing_algorithm")) {
        xa_struct_set(
            p, "hashing_algorithm",
            xa_string(strcmp(mode, "lacp") == 0 ? "tcpudp_ports" : "src_mac"));
    }
    if (strcmp(mode, "lacp") == 0 && !xa_struct_get(p, "lacp-time")) {
        xa_struct_set(p, "lacp-time", xa_string("slow"));
    }
    return p;
}

struct xa_error *
xa_impl_Bond_create(struct xa_call *call, const char *network,
                    const struct xa_value *members, const char *MAC,
                    const char *mode, const struct xa_value *properties,
                    struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_error *err = xa_net_check_backend();
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_write();
    const char *host = NULL;
    char *bref = NULL, *mref = NULL;
    if (!xa_db_exists(t, &xa_cls_network, network)) {
        err = xa_error_handle_invalid("network", network);
    } else {
        err = check_members(t, network, members, &host);
    }
    if (!err && *MAC && !xa_vif_mac_valid(MAC)) {
        err = xa_error_new("MAC_INVALID", 1, MAC);
    }
    if (!err) {
        const char *first = members->u.arr.items[0]->u.str.s;
        char *dev = NULL;
        for (unsigned n = 0; !dev; n++) {
            dev = xa_asprintf("bond%u", n);
            if (device_taken(t, host, dev)) {
                free(dev);
                dev = NULL;
            }
        }
        bref = xa_ref_new();
        mref = xa_ref_new();
        struct xa_value *p = xa_struct();
        xa_struct_set(p, "device", xa_string_take(dev));
        xa_struct_set(p, "network", xa_string(network));
        xa_struct_set(p, "host", xa_string(host));
        xa_struct_set(p, "MAC",
                      xa_string(*MAC ? MAC
                                     : xa_api_str(t, &xa_cls_PIF, first,
                                                  XA_F(xa_cls_PIF, "MAC"))));
        xa_struct_set(p, "MTU",
                      xa_int(xa_api_int(t, &xa_cls_network, network,
                                        XA_F(xa_cls_network, "MTU"))));
        xa_struct_set(p, "VLAN", xa_int(-1));
        xa_struct_set(p, "physical", xa_bool(false));
        xa_struct_set(p, "currently_attached", xa_bool(true));
        xa_struct_set(p, "ip_configuration_mode", xa_string("None"));
        xa_struct_set(p, "other_config", xa_struct());
        err = xa_db_create(t, &xa_cls_PIF, mref, p);
        if (!err) {
            struct xa_value *b = xa_struct();
            xa_struct_set(b, "master", xa_string(mref));
            xa_struct_set(b, "primary_slave", xa_string(first));
            xa_struct_set(b, "mode", xa_string(mode));
            xa_struct_set(b, "properties",
                          default_properties(mode, properties));
            xa_struct_set(b, "links_up", xa_int(0));
            xa_struct_set(b, "other_config", xa_struct());
            err = xa_db_create(t, &xa_cls_Bond, bref, b);
        }
        for (size_t i = 0; !err && i < members->u.arr.n; i++) {
            const char *m = members->u.arr.items[i]->u.str.s;
            err =
                xa_api_set(t, &xa_cls_PIF, m, XA_F(xa_cls_PIF, "bond_slave_of"),
                           xa_string(bref));
            if (!err) {
                err = xa_api_set(t, &xa_cls_PIF, m,
                                 XA_F(xa_cls_PIF, "currently_attached"),
                                 xa_bool(false));
            }
        }
    }
    err = xa_api_finish(t, err);
    free(mref);
    if (err) {
        free(bref);
        return err;
    }
    xa_net_restructure();
    *ret = xa_string_take(bref);
    return NULL;
}

struct xa_error *
xa_impl_Bond_destroy(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    char *master = xa_strdup(
        xa_api_str(t, &xa_cls_Bond, self, XA_F(xa_cls_Bond, "master")));
    struct xa_value *slaves =
        xa_db_get_field(t, &xa_cls_Bond, self, XA_F(xa_cls_Bond, "slaves"));
    if (!xa_db_exists(t, &xa_cls_Bond, self)) {
        err = xa_error_handle_invalid("Bond", self);
    } else if (xa_api_bool(t, &xa_cls_PIF, master,
                           XA_F(xa_cls_PIF, "management"))) {
        err = xa_error_new("PIF_IS_MANAGEMENT_INTERFACE", 1, master);
    } else if (xa_db_count_related(t, &xa_cls_PIF, master,
                                   XA_F(xa_cls_PIF, "VLAN_slave_of")) > 0) {
        err = xa_error_new("PIF_VLAN_STILL_EXISTS", 1, master);
    }
    /* The members come back as NICs of their own, plugged again. */
    for (size_t i = 0; !err && slaves && i < slaves->u.arr.n; i++) {
        const char *m = slaves->u.arr.items[i]->u.str.s;
        err = xa_api_set(t, &xa_cls_PIF, m, XA_F(xa_cls_PIF, "bond_slave_of"),
                         xa_string("OpaqueRef:NULL"));
        if (!err) {
            err = xa_api_set(t, &xa_cls_PIF, m,
                             XA_F(xa_cls_PIF, "currently_attached"),
                             xa_bool(true));
        }
    }
    if (!err) {
        err = xa_db_destroy(t, &xa_cls_Bond, self);
    }
    if (!err && xa_db_exists(t, &xa_cls_PIF, master)) {
        err = xa_db_destroy(t, &xa_cls_PIF, master);
    }
    xa_value_unref(slaves);
    free(master);
    err = xa_api_finish(t, err);
    if (!err) {
        xa_net_restructure();
    }
    return err;
}

struct xa_error *
xa_impl_Bond_set_mode(struct xa_call *call, const char *self, const char *value)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_api_set(
        t, &xa_cls_Bond, self, XA_F(xa_cls_Bond, "mode"), xa_string(value));
    if (!err) {
        const struct xa_value *old = xa_db_peek_field(
            t, &xa_cls_Bond, self, XA_F(xa_cls_Bond, "properties"));
        err = xa_api_set(t, &xa_cls_Bond, self, XA_F(xa_cls_Bond, "properties"),
                         default_properties(value, old));
    }
    err = xa_api_finish(t, err);
    if (!err) {
        xa_net_restructure();
    }
    return err;
}

struct xa_error *
xa_impl_Bond_set_property(struct xa_call *call, const char *self,
                          const char *name, const char *value)
{
    XA_UNUSED(call);
    if (strcmp(name, "hashing_algorithm") != 0 &&
        strcmp(name, "lacp-time") != 0 &&
        strcmp(name, "lacp-aggregation-key") != 0 &&
        strcmp(name, "lacp-fallback-ab") != 0) {
        return xa_error_invalid_value("properties", name);
    }
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err =
        xa_api_map_set(t, &xa_cls_Bond, self, XA_F(xa_cls_Bond, "properties"),
                       name, xa_string(value));
    return xa_api_finish(t, err);
}

void
xa_bond_init(void)
{
}
