/* network.c - networks: bridge names as xapi gives them, and destroy.
 *
 * network.create picks the bridge: "" means the first free xapiN (an
 * internal network); a name of the user's own must fit a Linux interface
 * (15 characters) and must not take a prefix xapi reserves for the
 * devices it makes itself (xen, xapi, vif, tap, eth).  The bridge is made
 * on the switch only when first needed (a PIF plugged, a VIF port). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/implicit.h"
#include "api/net-api.h"
#include "api/vm.h"
#include "log.h"
#include "network/net.h"
#include "xa-impl.h"

bool
xa_net_bridge_taken(struct xa_txn *t, const char *bridge)
{
    struct xa_value *all = xa_db_get_all(t, &xa_cls_network);
    bool taken = false;
    for (size_t i = 0; all && i < all->u.arr.n && !taken; i++) {
        taken =
            strcmp(xa_api_str(t, &xa_cls_network, all->u.arr.items[i]->u.str.s,
                              XA_F(xa_cls_network, "bridge")),
                   bridge) == 0;
    }
    xa_value_unref(all);
    return taken;
}

char *
xa_net_free_bridge(struct xa_txn *t, const char *prefix)
{
    for (unsigned n = 0;; n++) {
        char *b = xa_asprintf("%s%u", prefix, n);
        if (!xa_net_bridge_taken(t, b)) {
            return b;
        }
        free(b);
    }
}

struct xa_error *
xa_net_make_network(struct xa_txn *t, const char *label, const char *bridge,
                    int64_t mtu, char **ret)
{
    struct xa_value *rec = xa_struct();
    xa_struct_set(rec, "name_label", xa_string(label));
    xa_struct_set(rec, "name_description", xa_string(""));
    xa_struct_set(rec, "bridge", xa_string(bridge));
    xa_struct_set(rec, "MTU", xa_int(mtu > 0 ? mtu : 1500));
    xa_struct_set(rec, "managed", xa_bool(true));
    xa_struct_set(rec, "other_config", xa_struct());
    char *ref = xa_ref_new();
    struct xa_error *err = xa_db_create(t, &xa_cls_network, ref, rec);
    if (err) {
        free(ref);
        return err;
    }
    *ret = ref;
    return NULL;
}

static bool
reserved_prefix(const char *b)
{
    static const char *const reserved[] = {"xen", "xapi", "vif", "tap", "eth"};
    for (size_t i = 0; i < XA_ARRAY_SIZE(reserved); i++) {
        if (xa_str_has_prefix(b, reserved[i])) {
            return true;
        }
    }
    return false;
}

static bool
valid_ifname(const char *b)
{
    if (!*b || strlen(b) > 15) {
        return false;
    }
    for (const char *p = b; *p; p++) {
        if (*p == '/' || *p == ' ' || *p == ':' || (unsigned char)*p < 0x21 ||
            (unsigned char)*p > 0x7e) {
            return false;
        }
    }
    return true;
}

static struct xa_error *
network_create(struct xa_call *call, struct xa_value *const *args,
               struct xa_value **ret)
{
    const struct xa_value *in = args[0];
    const char *bridge = xa_struct_get_str(in, "bridge");
    struct xa_value *rec = xa_value_copy(in);
    struct xa_error *err = NULL;
    /* The name check and the create are two transactions: two creates
     * racing for the same free xapiN are told apart by the retry below. */
    for (int attempt = 0; attempt < 8; attempt++) {
        struct xa_txn *t = xa_db_begin_read();
        char *use = NULL;
        if (!bridge || !*bridge) {
            use = xa_net_free_bridge(t, "xapi");
        } else if (!valid_ifname(bridge) || reserved_prefix(bridge)) {
            err = xa_error_invalid_value("bridge", bridge);
        } else if (xa_net_bridge_taken(t, bridge)) {
            err = xa_error_new("BRIDGE_NAME_EXISTS", 1, bridge);
        } else {
            use = xa_strdup(bridge);
        }
        xa_db_end(t);
        if (err) {
            break;
        }
        xa_struct_set(rec, "bridge", xa_string_take(use));
        const struct xa_value *mtu = xa_struct_get(rec, "MTU");
        if (!mtu || mtu->kind != XA_INT || mtu->u.i <= 0) {
            xa_struct_set(rec, "MTU", xa_int(1500));
        }
        struct xa_value *a[1] = {rec};
        err = xa_implicit_generic(call, a, ret);
        if (!err) {
            /* Lost a race? Then two networks share a bridge: undo. */
            t = xa_db_begin_write();
            const char *b = xa_struct_get_str(rec, "bridge");
            size_t same = 0;
            struct xa_value *all = xa_db_get_all(t, &xa_cls_network);
            for (size_t i = 0; all && i < all->u.arr.n; i++) {
                same += strcmp(xa_api_str(t, &xa_cls_network,
                                          all->u.arr.items[i]->u.str.s,
                                          XA_F(xa_cls_network, "bridge")),
                               b) == 0;
            }
            xa_value_unref(all);
            if (same > 1) {
                err = xa_db_destroy(t, &xa_cls_network, (*ret)->u.str.s);
                xa_value_unref(*ret);
                *ret = NULL;
                err = xa_api_finish(t, err);
                if (!err && bridge && *bridge) {
                    err = xa_error_new("BRIDGE_NAME_EXISTS", 1, bridge);
                }
                if (!err) {
                    continue;
                }
            } else {
                xa_db_abort(t);
            }
        }
        break;
    }
    xa_value_unref(rec);
    return err;
}

static struct xa_error *
network_destroy(struct xa_call *call, struct xa_value *const *args,
                struct xa_value **ret)
{
    const char *net = args[0]->u.str.s;
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = NULL;
    struct xa_value *pifs = NULL, *vifs = NULL;
    if (!xa_db_exists(t, &xa_cls_network, net)) {
        err = xa_error_handle_invalid("network", net);
    } else {
        pifs = xa_db_get_field(t, &xa_cls_network, net,
                               XA_F(xa_cls_network, "PIFs"));
        vifs = xa_db_get_field(t, &xa_cls_network, net,
                               XA_F(xa_cls_network, "VIFs"));
        if (pifs && pifs->u.arr.n > 0) {
            err = xa_error_new("NETWORK_CONTAINS_PIF", 0);
            for (size_t i = 0; i < pifs->u.arr.n; i++) {
                xa_error_add_param(err, pifs->u.arr.items[i]->u.str.s);
            }
        } else if (vifs && vifs->u.arr.n > 0) {
            err = xa_error_new("NETWORK_CONTAINS_VIF", 0);
            for (size_t i = 0; i < vifs->u.arr.n; i++) {
                xa_error_add_param(err, vifs->u.arr.items[i]->u.str.s);
            }
        }
    }
    xa_db_end(t);
    xa_value_unref(pifs);
    xa_value_unref(vifs);
    if (!err) {
        err = xa_implicit_generic(call, args, ret);
    }
    if (!err) {
        /* The bridge now belongs to no network: convergence removes it. */
        xa_net_restructure();
    }
    return err;
}

struct xa_error *
xa_impl_network_set_default_locking_mode(struct xa_call *call,
                                         const char *network, const char *value)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_api_set(
        t, &xa_cls_network, network,
        XA_F(xa_cls_network, "default_locking_mode"), xa_string(value));
    err = xa_api_finish(t, err);
    if (!err) {
        xa_net_restructure();
    }
    return err;
}

void
xa_net_bridge_soon(const char *network)
{
    struct xa_error *err = xa_net_ensure_bridge(network, NULL);
    if (err) {
        xa_error_free(err);
        xa_net_kick();
    }
}

void
xa_net_restructure(void)
{
    struct xa_error *err = xa_net_converge();
    if (err) {
        xa_log_warn("net", "switch not updated yet (%s); will retry",
                    err->n_params ? err->params[0] : err->code);
        xa_error_free(err);
        xa_net_kick();
    }
}

struct xa_error *
xa_net_check_backend(void)
{
    return xa_net_ping();
}

void
xa_net_api_init(const char *nics)
{
    xa_network_init();
    xa_pif_init(nics);
    xa_vlan_init();
    xa_bond_init();
}

void
xa_network_init(void)
{
    xa_implicit_override("network.create", network_create);
    xa_implicit_override("network.destroy", network_destroy);
}
