/* tunnel.c - GRE and VXLAN tunnels: an access PIF on top of a transport
 * PIF.
 *
 * As in xapi, tunnel.create(transport_PIF, network, protocol) gives
 * 'network' a PIF of its own on the transport PIF's host (device
 * "tunnelN", not physical, a made-up MAC) and plugs it; on the switch
 * the network's bridge gets a port of that name whose interface has the
 * tunnel's type ("gre" or "vxlan").  Its remote end is the tunnel's
 * other_config:remote_ip (and key other_config:key) when given, else
 * "flow": chosen per packet by the OpenFlow controller, which is how
 * xapi leaves tunnels to the SDN controller. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/net-api.h"
#include "api/vm.h"
#include "network/net.h"
#include "xa-impl.h"

/* The first "tunnelN" no PIF of 'host' has (caller frees). */
static char *
free_device(struct xa_txn *t, const char *host)
{
    struct xa_value *pifs = xa_db_get_all(t, &xa_cls_PIF);
    for (int n = 0;; n++) {
        char *name = xa_asprintf("tunnel%d", n);
        bool taken = false;
        for (size_t i = 0; pifs && i < pifs->u.arr.n && !taken; i++) {
            const char *p = pifs->u.arr.items[i]->u.str.s;
            taken =
                strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host")),
                       host) == 0 &&
                strcmp(
                    xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "device")),
                    name) == 0;
        }
        if (!taken) {
            xa_value_unref(pifs);
            return name;
        }
        free(name);
    }
}

/* xapi's checks, in its order. */
static struct xa_error *
check_create(struct xa_txn *t, const char *transport, const char *network)
{
    if (!xa_db_exists(t, &xa_cls_PIF, transport)) {
        return xa_error_handle_invalid("PIF", transport);
    }
    if (!xa_db_exists(t, &xa_cls_network, network)) {
        return xa_error_handle_invalid("network", network);
    }
    if (!*xa_api_str(t, &xa_cls_network, network,
                     XA_F(xa_cls_network, "bridge"))) {
        return xa_error_new("NETWORK_UNMANAGED", 1, network);
    }
    if (xa_db_exists(t, &xa_cls_Bond,
                     xa_api_str(t, &xa_cls_PIF, transport,
                                XA_F(xa_cls_PIF, "bond_slave_of")))) {
        return xa_error_new("CANNOT_ADD_TUNNEL_TO_BOND_SLAVE", 1, transport);
    }
    const char *host =
        xa_api_str(t, &xa_cls_PIF, transport, XA_F(xa_cls_PIF, "host"));
    struct xa_value *pifs = xa_db_get_all(t, &xa_cls_PIF);
    struct xa_error *err = NULL;
    for (size_t i = 0; pifs && i < pifs->u.arr.n && !err; i++) {
        const char *p = pifs->u.arr.items[i]->u.str.s;
        if (strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host")),
                   host) == 0 &&
            strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "network")),
                   network) == 0) {
            err = xa_error_new("NETWORK_ALREADY_CONNECTED", 2, network, p);
        }
    }
    xa_value_unref(pifs);
    if (err) {
        return err;
    }
    const char *backend = xa_net_name();
    if (!backend || strcmp(backend, "ovs") != 0) {
        return xa_error_new("OPENVSWITCH_NOT_ACTIVE", 0);
    }
    struct xa_value *of = xa_db_get_field(
        t, &xa_cls_PIF, transport, XA_F(xa_cls_PIF, "tunnel_access_PIF_of"));
    bool is_access = of && of->u.arr.n > 0;
    xa_value_unref(of);
    if (is_access) {
        return xa_error_new("IS_TUNNEL_ACCESS_PIF", 1, transport);
    }
    if (strcmp(xa_api_str(t, &xa_cls_PIF, transport,
                          XA_F(xa_cls_PIF, "ip_configuration_mode")),
               "None") == 0) {
        return xa_error_new("TRANSPORT_PIF_NOT_CONFIGURED", 1, transport);
    }
    return NULL;
}

/* The access PIF's row. */
static struct xa_value *
access_pif_row(const char *device, const char *network, const char *host)
{
    char seed[37];
    xa_uuid_generate(seed);
    char *mac = xa_vif_mac_from_seed(seed, device);
    struct xa_value *p = xa_struct();
    xa_struct_set(p, "device", xa_string(device));
    xa_struct_set(p, "network", xa_string(network));
    xa_struct_set(p, "host", xa_string(host));
    xa_struct_set(p, "MAC", xa_string(mac));
    xa_struct_set(p, "MTU", xa_int(-1));
    xa_struct_set(p, "VLAN", xa_int(-1));
    xa_struct_set(p, "physical", xa_bool(false));
    xa_struct_set(p, "currently_attached", xa_bool(true));
    xa_struct_set(p, "ip_configuration_mode", xa_string("None"));
    xa_struct_set(p, "other_config", xa_struct());
    free(mac);
    return p;
}

struct xa_error *
xa_impl_tunnel_create(struct xa_call *call, const char *transport_PIF,
                      const char *network, const char *protocol,
                      struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_error *err = xa_net_check_backend();
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_write();
    err = check_create(t, transport_PIF, network);
    char *tref = NULL, *pref = NULL;
    if (!err) {
        const char *host =
            xa_api_str(t, &xa_cls_PIF, transport_PIF, XA_F(xa_cls_PIF, "host"));
        char *dev = free_device(t, host);
        tref = xa_ref_new();
        pref = xa_ref_new();
        err = xa_db_create(t, &xa_cls_PIF, pref,
                           access_pif_row(dev, network, host));
        free(dev);
    }
    if (!err) {
        struct xa_value *v = xa_struct();
        xa_struct_set(v, "access_PIF", xa_string(pref));
        xa_struct_set(v, "transport_PIF", xa_string(transport_PIF));
        struct xa_value *status = xa_struct();
        xa_struct_set(status, "active", xa_string("true"));
        xa_struct_set(v, "status", status);
        xa_struct_set(v, "other_config", xa_struct());
        xa_struct_set(v, "protocol", xa_string(*protocol ? protocol : "gre"));
        err = xa_db_create(t, &xa_cls_tunnel, tref, v);
    }
    err = xa_api_finish(t, err);
    free(pref);
    if (err) {
        free(tref);
        return err;
    }
    xa_net_bridge_soon(network);
    *ret = xa_string_take(tref);
    return NULL;
}

struct xa_error *
xa_impl_tunnel_destroy(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_tunnel, self)) {
        err = xa_error_handle_invalid("tunnel", self);
    } else {
        char *pif = xa_strdup(xa_api_str(t, &xa_cls_tunnel, self,
                                         XA_F(xa_cls_tunnel, "access_PIF")));
        if (xa_db_exists(t, &xa_cls_PIF, pif)) {
            err = xa_db_destroy(t, &xa_cls_PIF, pif);
        }
        free(pif);
        if (!err) {
            err = xa_db_destroy(t, &xa_cls_tunnel, self);
        }
    }
    err = xa_api_finish(t, err);
    if (!err) {
        /* The access PIF is gone: the convergence removes its port. */
        xa_net_restructure();
    }
    return err;
}
