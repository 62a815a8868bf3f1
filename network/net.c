/* net.c - from the database to the switch.
 *
 * The database says what this host's network should look like; this file
 * works it out and asks the selected backend to make it so.
 *
 *   network            -> bridge network.bridge: xenbrN over a physical
 *                         PIF, over a bond, or xapiN with no uplink
 *   VLAN network       -> a fake bridge xapiN: an internal port of that
 *                         name with tag T on the tagged PIF's bridge
 *   attached PIF       -> its device (or bond) as the bridge's uplink port
 *   attached VIF       -> a port carrying xapi's external-ids, on the real
 *                         bridge with the VLAN's tag when there is one
 *
 * Two ways in: incremental (ensure one bridge, plug one VIF) on the API
 * path, and a full convergence (xa_net_converge) at start-up and whenever
 * the backend's epoch changes (ovsdb-server or ovs-vswitchd restarted):
 * what is xapid's and should not exist is removed, the rest is (re)made
 * (unchanged ports are left alone) and every VIF's rules are put again.
 * A watcher thread retries the convergence every second until it
 * succeeds, so an OVS that was down simply catches up when it comes
 * back.
 *
 * No database transaction is held across a backend call: each operation
 * reads what it needs into a plain struct first. */
#include "network/net.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/vm.h"
#include "hmap.h"
#include "log.h"
#include "network/dhcp.h"
#include "network/net-driver.h"
#include "network/netlink.h"
#include "self.h"
#include "util.h"

#define LOG_MODULE "net"

extern const struct xa_class_desc xa_cls_PIF, xa_cls_VLAN, xa_cls_Bond,
    xa_cls_tunnel;

static const struct xa_net_driver *drv;

/* VIFs with a port: vif ref -> struct plugged.  Lets unplug find the port
 * without the VM's old domid, and keeps a hypervisor's tap from being
 * replaced by an internal port. */
struct plugged {
    char *port;
    char *vm;
    bool by_hv;         /* the hypervisor gave the device */
    char *bridge;       /* the real bridge the port is on */
    char *uuid;         /* the VIF's, which tags its locking rules */
    char *rules;        /* digest of the locking rules in place ("": none), or
                           NULL: unknown (not set by this process) */
    unsigned dead_seen; /* sweeps in a row that found the VIF not live */
};
static pthread_mutex_t plugged_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xa_hmap plugged_map;

static pthread_t watcher;
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t watch_cond = PTHREAD_COND_INITIALIZER;
static bool watch_stop, watch_running;
static unsigned synced_epoch;   /* 0: never converged */
static unsigned prune_failures; /* in a row; under watch_lock */

static void
plugged_free(void *p)
{
    struct plugged *g = p;
    if (g) {
        free(g->port);
        free(g->vm);
        free(g->bridge);
        free(g->uuid);
        free(g->rules);
        free(g);
    }
}

void
xa_net_owned_free(struct xa_net_owned *o)
{
    for (size_t i = 0; i < o->n_bridges; i++) {
        free(o->bridges[i]);
    }
    for (size_t i = 0; i < o->n_ports; i++) {
        free(o->ports[i]);
        free(o->port_specs[i]);
    }
    free(o->bridges);
    free(o->ports);
    free(o->port_specs);
    memset(o, 0, sizeof *o);
}

/* --- growable string lists (k, v, ... or plain) ----------------------- */

struct strv {
    char **v;
    size_t n, cap;
};

static void
strv_push(struct strv *s, char *owned)
{
    if (s->n + 2 > s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = xa_realloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = owned;
    s->v[s->n] = NULL;
}

static void
strv_kv(struct strv *s, const char *k, const char *v)
{
    strv_push(s, xa_strdup(k));
    strv_push(s, xa_strdup(v));
}

static void
strv_free(struct strv *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i]);
    }
    free(s->v);
    memset(s, 0, sizeof *s);
}

static const char *const *
strv_get(const struct strv *s)
{
    static const char *const empty[] = {NULL};
    return s->v ? (const char *const *)s->v : empty;
}

/* --- reading the database --------------------------------------------- */

/* What a network needs on this host. */
struct bridge_plan {
    char *network; /* ref */
    char *name;    /* network.bridge */
    char *real;    /* the OVS bridge: name, or the VLAN's parent */
    int64_t tag;   /* VLAN tag, -1 */
    int64_t mtu;
    struct strv ids;    /* external-ids of the real bridge */
    char *hwaddr;       /* the uplink's MAC */
    char *uplink;       /* port name of the NIC or bond; NULL: none */
    struct strv slaves; /* bond member devices */
    char *bond_mode;
    bool lacp;
    char *tunnel;         /* uplink is a tunnel: "gre", "vxlan"; or NULL */
    struct strv tun_opts; /* its options */
};

static void
plan_free(struct bridge_plan *p)
{
    free(p->network);
    free(p->name);
    free(p->real);
    strv_free(&p->ids);
    free(p->hwaddr);
    free(p->uplink);
    strv_free(&p->slaves);
    free(p->bond_mode);
    free(p->tunnel);
    strv_free(&p->tun_opts);
    memset(p, 0, sizeof *p);
}

/* This host's PIF on 'net' (caller frees), or NULL. */
static char *
local_pif(struct xa_txn *t, const char *net)
{
    struct xa_value *pifs =
        xa_db_get_field(t, &xa_cls_network, net, XA_F(xa_cls_network, "PIFs"));
    const char *self = xa_self_host();
    const char *found = NULL;
    for (size_t i = 0; pifs && i < pifs->u.arr.n && !found; i++) {
        const char *p = pifs->u.arr.items[i]->u.str.s;
        if (self &&
            strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host")),
                   self) == 0) {
            found = xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "uuid"));
        }
    }
    xa_value_unref(pifs);
    if (!found) {
        return NULL;
    }
    return xa_db_ref_by_uuid(t, &xa_cls_PIF, found);
}

/* Uuids (;-separated) of the networks riding on real bridge 'real':
 * its own network and every VLAN network whose parent it is. */
struct uuids_ctx {
    struct xa_txn *t;
    const char *real;
    char *acc;
};

static bool
collect_uuid(const char *net, void *c_)
{
    struct uuids_ctx *c = c_;
    const char *br =
        xa_api_str(c->t, &xa_cls_network, net, XA_F(xa_cls_network, "bridge"));
    bool match = strcmp(br, c->real) == 0;
    if (!match) {
        char *pif = local_pif(c->t, net);
        if (pif) {
            const char *vlan = xa_api_str(c->t, &xa_cls_PIF, pif,
                                          XA_F(xa_cls_PIF, "VLAN_master_of"));
            const char *tagged = xa_api_str(c->t, &xa_cls_VLAN, vlan,
                                            XA_F(xa_cls_VLAN, "tagged_PIF"));
            const char *pnet = xa_api_str(c->t, &xa_cls_PIF, tagged,
                                          XA_F(xa_cls_PIF, "network"));
            match = *pnet && strcmp(xa_api_str(c->t, &xa_cls_network, pnet,
                                               XA_F(xa_cls_network, "bridge")),
                                    c->real) == 0;
            free(pif);
        }
    }
    if (match) {
        const char *u = xa_api_str(c->t, &xa_cls_network, net,
                                   XA_F(xa_cls_network, "uuid"));
        char *n = c->acc ? xa_asprintf("%s;%s", c->acc, u) : xa_strdup(u);
        free(c->acc);
        c->acc = n;
    }
    return true;
}

/* A tunnel's access PIF: its device is the bridge's uplink, a port whose
 * interface has the tunnel's protocol as type and the remote end from the
 * tunnel's other_config (remote_ip, key), "flow" (the OpenFlow controller
 * decides per packet) when absent. */
static void
plan_tunnel(struct xa_txn *t, const char *pif, const char *tunnel,
            struct bridge_plan *p)
{
    p->uplink =
        xa_strdup(xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "device")));
    const char *proto =
        xa_api_str(t, &xa_cls_tunnel, tunnel, XA_F(xa_cls_tunnel, "protocol"));
    p->tunnel = xa_strdup(*proto ? proto : "gre");
    static const char *const keys[] = {"remote_ip", "key"};
    for (size_t i = 0; i < 2; i++) {
        const char *v =
            xa_api_map_get(t, &xa_cls_tunnel, tunnel,
                           XA_F(xa_cls_tunnel, "other_config"), keys[i]);
        strv_kv(&p->tun_opts, keys[i], v && *v ? v : "flow");
    }
}

static struct xa_error *
plan_read(struct xa_txn *t, const char *net, struct bridge_plan *p)
{
    memset(p, 0, sizeof *p);
    p->tag = -1;
    if (!xa_db_exists(t, &xa_cls_network, net)) {
        return xa_error_handle_invalid("network", net);
    }
    p->network = xa_strdup(net);
    p->name = xa_strdup(
        xa_api_str(t, &xa_cls_network, net, XA_F(xa_cls_network, "bridge")));
    p->mtu = xa_api_int(t, &xa_cls_network, net, XA_F(xa_cls_network, "MTU"));
    if (!*p->name) {
        return xa_error_new("NETWORK_UNMANAGED", 1, net);
    }
    char *pif = local_pif(t, net);
    p->real = xa_strdup(p->name);
    if (pif) {
        const char *vlan =
            xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "VLAN_master_of"));
        struct xa_value *bonds = xa_db_get_field(
            t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "bond_master_of"));
        bool attached = xa_api_bool(t, &xa_cls_PIF, pif,
                                    XA_F(xa_cls_PIF, "currently_attached"));
        struct xa_value *tun = xa_db_get_field(
            t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "tunnel_access_PIF_of"));
        if (tun && tun->u.arr.n > 0 && attached) {
            plan_tunnel(t, pif, tun->u.arr.items[0]->u.str.s, p);
        } else if (xa_db_exists(t, &xa_cls_VLAN, vlan)) {
            const char *tagged = xa_api_str(t, &xa_cls_VLAN, vlan,
                                            XA_F(xa_cls_VLAN, "tagged_PIF"));
            const char *pnet =
                xa_api_str(t, &xa_cls_PIF, tagged, XA_F(xa_cls_PIF, "network"));
            free(p->real);
            p->real = xa_strdup(xa_api_str(t, &xa_cls_network, pnet,
                                           XA_F(xa_cls_network, "bridge")));
            p->tag =
                xa_api_int(t, &xa_cls_VLAN, vlan, XA_F(xa_cls_VLAN, "tag"));
        } else if (bonds && bonds->u.arr.n > 0 && attached) {
            const char *bond = bonds->u.arr.items[0]->u.str.s;
            p->uplink = xa_strdup(
                xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "device")));
            p->hwaddr = xa_strdup(
                xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "MAC")));
            const char *mode =
                xa_api_str(t, &xa_cls_Bond, bond, XA_F(xa_cls_Bond, "mode"));
            p->lacp = strcmp(mode, "lacp") == 0;
            /* OVS calls LACP's hashing mode balance-tcp. */
            p->bond_mode = xa_strdup(p->lacp ? "balance-tcp" : mode);
            struct xa_value *sl = xa_db_get_field(t, &xa_cls_Bond, bond,
                                                  XA_F(xa_cls_Bond, "slaves"));
            for (size_t i = 0; sl && i < sl->u.arr.n; i++) {
                strv_push(&p->slaves,
                          xa_strdup(xa_api_str(t, &xa_cls_PIF,
                                               sl->u.arr.items[i]->u.str.s,
                                               XA_F(xa_cls_PIF, "device"))));
            }
            xa_value_unref(sl);
        } else if (attached && xa_api_bool(t, &xa_cls_PIF, pif,
                                           XA_F(xa_cls_PIF, "physical"))) {
            p->uplink = xa_strdup(
                xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "device")));
            p->hwaddr = xa_strdup(
                xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "MAC")));
        }
        xa_value_unref(bonds);
        xa_value_unref(tun);
        free(pif);
    }
    struct uuids_ctx c = {t, p->real, NULL};
    xa_db_foreach(t, &xa_cls_network, collect_uuid, &c);
    strv_kv(&p->ids, "xs-network-uuids", c.acc ? c.acc : "");
    free(c.acc);
    return NULL;
}

/* Makes the bridges a plan needs: the real bridge with its uplink, and
 * the fake bridge of a VLAN.  For a VLAN the parent's own plan runs
 * first (its uplink included). */
static struct xa_error *plan_apply(struct bridge_plan *p);

static struct xa_error *
ensure_parent(const char *real)
{
    /* The parent network: the one whose bridge is 'real'. */
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *all = xa_db_get_all(t, &xa_cls_network);
    char *pnet = NULL;
    for (size_t i = 0; all && i < all->u.arr.n && !pnet; i++) {
        const char *n = all->u.arr.items[i]->u.str.s;
        if (strcmp(xa_api_str(t, &xa_cls_network, n,
                              XA_F(xa_cls_network, "bridge")),
                   real) == 0) {
            pnet = xa_strdup(n);
        }
    }
    xa_value_unref(all);
    struct bridge_plan pp;
    struct xa_error *err =
        pnet ? plan_read(t, pnet, &pp)
             : xa_error_internal("no network has bridge %s", real);
    xa_db_end(t);
    free(pnet);
    if (!err) {
        err = plan_apply(&pp);
    }
    plan_free(&pp);
    return err;
}

static struct xa_error *
plan_apply(struct bridge_plan *p)
{
    struct xa_error *err;
    if (p->tag >= 0) {
        err = ensure_parent(p->real);
        if (err) {
            return err;
        }
        struct xa_net_iface f = {p->name, "internal", NULL, p->mtu, NULL, NULL};
        const char *ids[] = {"xs-network-uuids", p->ids.v ? p->ids.v[1] : "",
                             NULL};
        char *spec = xa_asprintf("fake:%s:%lld:%lld", p->real,
                                 (long long)p->tag, (long long)p->mtu);
        struct xa_net_port port = {
            .name = p->name,
            .bridge = p->real,
            .tag = p->tag,
            .fake_bridge = true,
            .ifaces = &f,
            .n_ifaces = 1,
            .ids = ids,
            .spec = spec,
        };
        err = drv->put_port(&port);
        free(spec);
        /* err is an error object, not a pointer into the port */
        // cppcheck-suppress returnDanglingLifetime
        return err;
    }
    struct xa_net_bridge b = {p->name, strv_get(&p->ids), p->hwaddr, p->mtu};
    err = drv->ensure_bridge(&b);
    if (err || !p->uplink) {
        /* err is an error object, not a pointer into the port */
        // cppcheck-suppress returnDanglingLifetime
        return err;
    }
    size_t n = p->slaves.n ? p->slaves.n : 1;
    struct xa_net_iface *ifs = xa_malloc(n * sizeof *ifs);
    char *spec =
        xa_asprintf("uplink:%s:%s:%lld", p->real,
                    p->bond_mode ? p->bond_mode : "", (long long)p->mtu);
    for (size_t i = 0; i < n; i++) {
        const char *dev = p->slaves.n ? p->slaves.v[i] : p->uplink;
        ifs[i] = (struct xa_net_iface){dev, "", NULL, p->mtu, NULL, NULL};
        char *s2 = xa_asprintf("%s:%s", spec, dev);
        free(spec);
        spec = s2;
    }
    if (p->tunnel) {
        ifs[0] = (struct xa_net_iface){
            p->uplink, p->tunnel, NULL, 0, NULL, strv_get(&p->tun_opts)};
        char *s2 =
            xa_asprintf("%s:%s:%s=%s:%s=%s", spec, p->tunnel, p->tun_opts.v[0],
                        p->tun_opts.v[1], p->tun_opts.v[2], p->tun_opts.v[3]);
        free(spec);
        spec = s2;
    }
    /* A device can be on one port only: a NIC joining a bond leaves the
     * port it had of its own. */
    for (size_t i = 0; i < p->slaves.n && !err; i++) {
        err = drv->remove_port(p->slaves.v[i]);
    }
    const char *oc[] = {"bond-detect-mode", "carrier", NULL};
    struct xa_net_port port = {
        .name = p->uplink,
        .bridge = p->real,
        .tag = -1,
        .ifaces = ifs,
        .n_ifaces = n,
        .bond_mode = p->bond_mode,
        .lacp = p->lacp,
        .other_config = p->bond_mode ? oc : NULL,
        .spec = spec,
    };
    if (!err) {
        err = drv->put_port(&port);
    }
    free(spec);
    free(ifs);
    /* err is an error object, not a pointer into the port */
    // cppcheck-suppress returnDanglingLifetime
    return err;
}

/* The port a VIF should have. */
struct vif_plan {
    char *vif, *vm;
    char *port, *bridge;
    int64_t tag, mtu;
    char *network;
    struct strv ids;
    bool by_hv;
    bool live; /* VIF attached and VM running or paused here */
    char *spec;
    /* Locking: the effective mode ("locked", "unlocked", "disabled"),
     * what the rules need, and a digest of the rules ("": none). */
    char *mode, *mac, *uuid;
    struct strv ipv4, ipv6;
    char *rules;
};

static void
vif_plan_free(struct vif_plan *v)
{
    free(v->vif);
    free(v->vm);
    free(v->port);
    free(v->bridge);
    free(v->network);
    strv_free(&v->ids);
    free(v->spec);
    free(v->mode);
    free(v->mac);
    free(v->uuid);
    strv_free(&v->ipv4);
    strv_free(&v->ipv6);
    free(v->rules);
    memset(v, 0, sizeof *v);
}

/* The effective locking mode of 'vif' (network_default resolved through
 * its network, as xapi does) and its allowed addresses; then the digest
 * of the rules: a change of anything they depend on (the port too: a new
 * port has a new OpenFlow number) changes it. */
static void
vif_lock_read(struct xa_txn *t, const char *vif, struct vif_plan *v)
{
    const char *lock =
        xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "locking_mode"));
    if (strcmp(lock, "network_default") == 0 || !*lock) {
        lock = xa_api_str(t, &xa_cls_network, v->network,
                          XA_F(xa_cls_network, "default_locking_mode"));
    }
    v->mode =
        xa_strdup(strcmp(lock, "locked") == 0 || strcmp(lock, "disabled") == 0
                      ? lock
                      : "unlocked");
    static const char *const lists[] = {"ipv4_allowed", "ipv6_allowed"};
    char *acc = xa_strdup("");
    for (size_t k = 0; k < 2; k++) {
        struct strv *to = k == 0 ? &v->ipv4 : &v->ipv6;
        struct xa_value *a = xa_db_get_field(
            t, &xa_cls_VIF, vif, xa_schema_field_index(&xa_cls_VIF, lists[k]));
        for (size_t i = 0; a && i < a->u.arr.n; i++) {
            const char *ip = a->u.arr.items[i]->u.str.s;
            strv_push(to, xa_strdup(ip));
            char *n = xa_asprintf("%s%s%s", acc, *acc ? "," : "", ip);
            free(acc);
            acc = n;
        }
        char *n = xa_asprintf("%s;", acc);
        free(acc);
        acc = n;
        xa_value_unref(a);
    }
    if (strcmp(v->mode, "unlocked") == 0) {
        v->rules = xa_strdup("");
    } else {
        v->rules = xa_asprintf("%s|%s|%s|%s", v->mode, v->port, v->spec, acc);
    }
    free(acc);
}

/* Whether 'vif' of 'vm' should have a port here: attached, and its VM
 * running or paused on this host. */
static bool
vif_is_live(struct xa_txn *t, const char *vif, const char *vm)
{
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    const char *self = xa_self_host();
    return xa_api_bool(t, &xa_cls_VIF, vif,
                       XA_F(xa_cls_VIF, "currently_attached")) &&
           (strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0) && self &&
           strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on")),
                  self) == 0;
}

/* 'domid' < 0: the VM's recorded domid.  'ifname' NULL: the port made up
 * from the domid (or the hypervisor's device recorded earlier). */
static struct xa_error *
vif_plan_read(struct xa_txn *t, const char *vif, const char *ifname,
              int64_t domid, struct vif_plan *v)
{
    memset(v, 0, sizeof *v);
    v->tag = -1;
    if (!xa_db_exists(t, &xa_cls_VIF, vif)) {
        return xa_error_handle_invalid("VIF", vif);
    }
    const char *vm = xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "VM"));
    const char *net =
        xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "network"));
    v->vif = xa_strdup(vif);
    v->vm = xa_strdup(vm);
    v->network = xa_strdup(net);
    v->live = vif_is_live(t, vif, vm);
    if (domid < 0) {
        domid = xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "domid"));
    }
    const char *dev =
        xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "device"));
    if (ifname) {
        v->port = xa_strdup(ifname);
        v->by_hv = true;
    } else {
        pthread_mutex_lock(&plugged_lock);
        struct plugged *g = xa_hmap_get(&plugged_map, vif);
        if (g && g->by_hv) {
            v->port = xa_strdup(g->port);
            v->by_hv = true;
        }
        pthread_mutex_unlock(&plugged_lock);
        if (!v->port) {
            v->port = xa_asprintf("vif%lld.%s", (long long)domid, dev);
        }
    }
    struct bridge_plan bp;
    struct xa_error *err = plan_read(t, net, &bp);
    if (err) {
        return err;
    }
    v->bridge = xa_strdup(bp.real);
    v->tag = bp.tag;
    plan_free(&bp);
    v->mtu = xa_api_int(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "MTU"));
    if (v->mtu <= 0) {
        v->mtu =
            xa_api_int(t, &xa_cls_network, net, XA_F(xa_cls_network, "MTU"));
    }
    const char *mac = xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "MAC"));
    const char *vif_uuid =
        xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "uuid"));
    const char *vm_uuid =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid"));
    strv_kv(&v->ids, "attached-mac", mac);
    strv_kv(&v->ids, "iface-id", vif_uuid);
    strv_kv(&v->ids, "iface-status", "active");
    strv_kv(&v->ids, "xs-network-uuid",
            xa_api_str(t, &xa_cls_network, net, XA_F(xa_cls_network, "uuid")));
    strv_kv(&v->ids, "xs-vif-uuid", vif_uuid);
    strv_kv(&v->ids, "xs-vm-uuid", vm_uuid);
    strv_kv(&v->ids, "vm-id", vm_uuid);
    /* The locking mode is not part of the port (changing it changes
     * only the rules): xapi does not record it in external-ids either. */
    v->spec = xa_asprintf("vif:%s:%s:%s:%lld:%lld:%s:%s", vif_uuid,
                          v->by_hv ? "hv" : "int", v->bridge, (long long)v->tag,
                          (long long)v->mtu, mac, vm_uuid);
    vif_lock_read(t, vif, v);
    v->mac = xa_strdup(mac);
    v->uuid = xa_strdup(vif_uuid);
    return NULL;
}

/* Brings the VIF's locking rules from 'have' (digest; NULL: unknown) to
 * what the plan says.  Unknown and none wanted: nothing is done (a
 * convergence prunes what a previous run may have left). */
static struct xa_error *
rules_apply(const struct vif_plan *v, const char *have)
{
    if (!drv->set_rules || (have ? strcmp(have, v->rules) == 0 : !*v->rules)) {
        return NULL;
    }
    struct xa_net_rules r = {
        .bridge = v->bridge,
        .port = v->port,
        .vif_uuid = v->uuid,
        .mode = v->mode,
        .mac = v->mac,
        .ipv4 = strv_get(&v->ipv4),
        .ipv6 = strv_get(&v->ipv6),
    };
    /* an error object, not a pointer into 'r' */
    // cppcheck-suppress returnDanglingLifetime
    return drv->set_rules(&r);
}

/* Records that the VIF's port (and rules, digest 'rules', NULL: unknown)
 * are in place; returns the previous record (caller frees). */
static struct plugged *
remember(const struct vif_plan *v, const char *rules)
{
    struct plugged *g = xa_malloc(sizeof *g);
    g->port = xa_strdup(v->port);
    g->vm = xa_strdup(v->vm);
    g->by_hv = v->by_hv;
    g->bridge = xa_strdup(v->bridge);
    g->uuid = xa_strdup(v->uuid);
    g->rules = rules ? xa_strdup(rules) : NULL;
    g->dead_seen = 0;
    pthread_mutex_lock(&plugged_lock);
    struct plugged *old = xa_hmap_put(&plugged_map, v->vif, g);
    pthread_mutex_unlock(&plugged_lock);
    return old;
}

/* The rules digest recorded for 'vif' (caller frees), NULL: unknown. */
static char *
rules_have(const char *vif)
{
    pthread_mutex_lock(&plugged_lock);
    struct plugged *g = xa_hmap_get(&plugged_map, vif);
    char *r = g && g->rules ? xa_strdup(g->rules) : NULL;
    pthread_mutex_unlock(&plugged_lock);
    return r;
}

/* Makes the port, then its rules.  'fresh': the port was known to be
 * missing or different, so whatever rules were recorded are gone. */
static struct xa_error *
vif_plan_apply(const struct vif_plan *v, bool fresh)
{
    struct xa_net_iface f = {
        v->port, v->by_hv ? "" : "internal", strv_get(&v->ids), v->mtu, NULL,
        NULL};
    struct xa_net_port p = {
        .name = v->port,
        .bridge = v->bridge,
        .tag = v->tag,
        .ifaces = &f,
        .n_ifaces = 1,
        .spec = v->spec,
    };
    struct xa_error *err = drv->put_port(&p);
    char *have = fresh ? NULL : rules_have(v->vif);
    if (!err) {
        err = rules_apply(v, have);
        if (err) {
            /* The port is there, its rules are not known to be. */
            plugged_free(remember(v, NULL));
        }
    }
    if (!err) {
        struct plugged *old = remember(v, v->rules);
        if (old && strcmp(old->port, v->port) != 0) {
            /* The domid changed (reboot): the old port is stale. */
            xa_error_free(drv->remove_port(old->port));
        }
        plugged_free(old);
    }
    free(have);
    /* err is an error object, not a pointer into the port */
    // cppcheck-suppress returnDanglingLifetime
    return err;
}

/* --- the public entries ----------------------------------------------- */

static struct xa_error *
need_driver(void)
{
    return drv ? NULL : xa_error_internal("no network backend selected");
}

/* Turns a backend failure into what the API answers. */
static struct xa_error *
backend_error(struct xa_error *err, const char *what)
{
    if (err && strcmp(err->code, "INTERNAL_ERROR") == 0 && err->n_params) {
        struct xa_error *e =
            xa_error_internal("network backend %s: %s: %s",
                              drv ? drv->name : "?", what, err->params[0]);
        xa_error_free(err);
        return e;
    }
    return err;
}

struct xa_error *
xa_net_ensure_bridge(const char *network_ref, char **ret_bridge)
{
    if (ret_bridge) {
        *ret_bridge = NULL;
    }
    struct xa_error *err = need_driver();
    if (err) {
        return err;
    }
    struct bridge_plan p;
    struct xa_txn *t = xa_db_begin_read();
    err = plan_read(t, network_ref, &p);
    xa_db_end(t);
    if (!err) {
        err = backend_error(plan_apply(&p), "ensure bridge");
    }
    if (!err && ret_bridge) {
        *ret_bridge = xa_strdup(p.tag >= 0 ? p.name : p.real);
    }
    plan_free(&p);
    return err;
}

static struct xa_error *
plug_one(const char *vif, const char *ifname, int64_t domid)
{
    struct xa_error *err = need_driver();
    if (err) {
        return err;
    }
    struct vif_plan v;
    struct xa_txn *t = xa_db_begin_read();
    err = vif_plan_read(t, vif, ifname, domid, &v);
    xa_db_end(t);
    if (!err) {
        err = xa_net_ensure_bridge(v.network, NULL);
    }
    if (!err) {
        err = backend_error(vif_plan_apply(&v, false), "plug VIF");
    }
    vif_plan_free(&v);
    return err;
}

struct xa_error *
xa_net_plug_vif(const char *vif_ref, const char *ifname)
{
    return plug_one(vif_ref, ifname, -1);
}

struct xa_error *
xa_net_unplug_vif(const char *vif_ref)
{
    struct xa_error *err = need_driver();
    if (err) {
        return err;
    }
    pthread_mutex_lock(&plugged_lock);
    struct plugged *g = xa_hmap_remove(&plugged_map, vif_ref);
    pthread_mutex_unlock(&plugged_lock);
    char *port = g ? xa_strdup(g->port) : NULL;
    if (g && drv->set_rules && g->bridge && (!g->rules || *g->rules)) {
        struct xa_net_rules r = {.bridge = g->bridge,
                                 .port = g->port,
                                 .vif_uuid = g->uuid,
                                 .mode = "unlocked"};
        err = backend_error(drv->set_rules(&r), "unplug VIF");
        if (err) {
            /* Keep the record, so that unplugging again retries. */
            pthread_mutex_lock(&plugged_lock);
            plugged_free(xa_hmap_put(&plugged_map, vif_ref, g));
            pthread_mutex_unlock(&plugged_lock);
            free(port);
            return err;
        }
    }
    plugged_free(g);
    if (!port) {
        /* Not plugged by this process (e.g. before a restart that the
         * convergence has not caught up with): the name the VM's domid
         * gives. */
        struct xa_txn *t = xa_db_begin_read();
        if (xa_db_exists(t, &xa_cls_VIF, vif_ref)) {
            const char *vm =
                xa_api_str(t, &xa_cls_VIF, vif_ref, XA_F(xa_cls_VIF, "VM"));
            port = xa_asprintf("vif%lld.%s",
                               (long long)xa_api_int(t, &xa_cls_VM, vm,
                                                     XA_F(xa_cls_VM, "domid")),
                               xa_api_str(t, &xa_cls_VIF, vif_ref,
                                          XA_F(xa_cls_VIF, "device")));
        }
        xa_db_end(t);
    }
    if (port) {
        err = backend_error(drv->remove_port(port), "unplug VIF");
    }
    free(port);
    return err;
}

struct xa_error *
xa_net_refresh_vif(const char *vif_ref)
{
    if (!drv) {
        return NULL;
    }
    pthread_mutex_lock(&plugged_lock);
    bool plugged = xa_hmap_contains(&plugged_map, vif_ref);
    pthread_mutex_unlock(&plugged_lock);
    if (!plugged) {
        return NULL;
    }
    struct vif_plan v;
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = vif_plan_read(t, vif_ref, NULL, -1, &v);
    xa_db_end(t);
    if (!err && v.live) {
        char *have = rules_have(vif_ref);
        err = backend_error(rules_apply(&v, have), "locking rules");
        free(have);
        if (!err) {
            plugged_free(remember(&v, v.rules));
        }
    }
    vif_plan_free(&v);
    return err;
}

struct xa_error *
xa_net_vm_plug(const char *vm_ref, int64_t domid)
{
    if (!drv) {
        return NULL;
    }
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *vifs =
        xa_db_get_field(t, &xa_cls_VM, vm_ref, XA_F(xa_cls_VM, "VIFs"));
    xa_db_end(t);
    struct xa_error *err = NULL;
    for (size_t i = 0; vifs && i < vifs->u.arr.n && !err; i++) {
        const char *vif = vifs->u.arr.items[i]->u.str.s;
        pthread_mutex_lock(&plugged_lock);
        struct plugged *g = xa_hmap_get(&plugged_map, vif);
        bool hv = g && g->by_hv;
        pthread_mutex_unlock(&plugged_lock);
        if (!hv) {
            err = plug_one(vif, NULL, domid);
        }
    }
    if (err) {
        /* Leave nothing half-plugged behind a failed start. */
        for (size_t i = 0; vifs && i < vifs->u.arr.n; i++) {
            xa_error_free(xa_net_unplug_vif(vifs->u.arr.items[i]->u.str.s));
        }
    }
    xa_value_unref(vifs);
    return err;
}

void
xa_net_vm_sync(const char *vm_ref)
{
    if (!drv) {
        return;
    }
    struct strv mine = {0};
    pthread_mutex_lock(&plugged_lock);
    XA_HMAP_FOR_EACH (s, &plugged_map) {
        struct plugged *g = s->val;
        if (strcmp(g->vm, vm_ref) == 0) {
            strv_push(&mine, xa_strdup(s->key));
        }
    }
    pthread_mutex_unlock(&plugged_lock);
    for (size_t i = 0; i < mine.n; i++) {
        struct vif_plan v;
        struct xa_txn *t = xa_db_begin_read();
        struct xa_error *err = vif_plan_read(t, mine.v[i], NULL, -1, &v);
        xa_db_end(t);
        if (err || !v.live) {
            xa_error_free(err);
            err = xa_net_unplug_vif(mine.v[i]);
        } else {
            pthread_mutex_lock(&plugged_lock);
            struct plugged *g = xa_hmap_get(&plugged_map, mine.v[i]);
            bool same = g && strcmp(g->port, v.port) == 0;
            pthread_mutex_unlock(&plugged_lock);
            /* Still live under the same name: nothing to do.  A new
             * domid (reboot) means a new name: replace the port. */
            err = same ? NULL : vif_plan_apply(&v, false);
        }
        if (err) {
            xa_log_warn(LOG_MODULE, "VIF %s: %s %s", mine.v[i], err->code,
                        err->n_params ? err->params[0] : "");
            xa_error_free(err);
        }
        vif_plan_free(&v);
    }
    strv_free(&mine);
}

/* --- convergence ------------------------------------------------------ */

struct desired {
    struct xa_hmap bridges; /* real and fake bridge names -> network ref */
    struct xa_hmap ports;   /* port name -> spec (borrowed from plans) */
    struct bridge_plan *plans;
    size_t n_plans;
    struct vif_plan *vifs;
    size_t n_vifs;
};

struct collect_ctx {
    struct xa_txn *t;
    struct desired *d;
    struct xa_hmap *in_use; /* bridge names that must exist */
};

static bool
collect_network(const char *net, void *c_)
{
    struct collect_ctx *c = c_;
    struct bridge_plan p;
    struct xa_error *err = plan_read(c->t, net, &p);
    if (err) {
        xa_error_free(err);
        plan_free(&p);
        return true;
    }
    /* A bridge is made when first needed (an attached PIF, a VIF port)
     * and then kept while its network exists. */
    char *pif = local_pif(c->t, net);
    bool needed = p.uplink != NULL || xa_hmap_contains(c->in_use, p.name);
    if (pif && p.tag >= 0) {
        needed = true;
    }
    free(pif);
    if (!needed) {
        plan_free(&p);
        return true;
    }
    c->d->plans = xa_realloc(c->d->plans, (c->d->n_plans + 1) * sizeof p);
    c->d->plans[c->d->n_plans++] = p;
    return true;
}

static bool
collect_vif(const char *vif, void *c_)
{
    struct collect_ctx *c = c_;
    struct vif_plan v;
    struct xa_error *err = vif_plan_read(c->t, vif, NULL, -1, &v);
    if (err || !v.live) {
        xa_error_free(err);
        vif_plan_free(&v);
        return true;
    }
    c->d->vifs = xa_realloc(c->d->vifs, (c->d->n_vifs + 1) * sizeof v);
    c->d->vifs[c->d->n_vifs++] = v;
    return true;
}

/* Removes, from every bridge of the plan, the locking rules of VIFs that
 * are not live or have none now. */
static struct xa_error *
prune_rules(const struct desired *d)
{
    if (!drv->prune_rules) {
        return NULL;
    }
    struct strv keep = {0};
    for (size_t i = 0; i < d->n_vifs; i++) {
        if (*d->vifs[i].rules) {
            strv_push(&keep, xa_strdup(d->vifs[i].uuid));
        }
    }
    struct xa_error *err = NULL;
    for (size_t i = 0; i < d->n_plans && !err; i++) {
        if (d->plans[i].tag < 0) {
            err = drv->prune_rules(d->plans[i].real, strv_get(&keep));
        }
    }
    strv_free(&keep);
    return err;
}

/* Adopts ports a hypervisor plugged before a restart: an owned port whose
 * spec names a VIF and says "hv" keeps its device name. */
static void
adopt_hv_ports(const struct xa_net_owned *o, struct xa_txn *t)
{
    for (size_t i = 0; i < o->n_ports; i++) {
        const char *s = o->port_specs[i];
        if (!xa_str_has_prefix(s, "vif:") || strlen(s) < 4 + 36 + 4 ||
            strncmp(s + 4 + 36, ":hv:", 4) != 0) {
            continue;
        }
        char uuid[37];
        memcpy(uuid, s + 4, 36);
        uuid[36] = '\0';
        char *vif = xa_db_ref_by_uuid(t, &xa_cls_VIF, uuid);
        if (vif) {
            struct plugged *g = xa_malloc(sizeof *g);
            g->port = xa_strdup(o->ports[i]);
            g->vm = xa_strdup(
                xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "VM")));
            g->by_hv = true;
            g->bridge = NULL; /* known once the convergence has run */
            g->uuid = xa_strdup(uuid);
            g->rules = NULL;
            g->dead_seen = 0;
            pthread_mutex_lock(&plugged_lock);
            plugged_free(xa_hmap_put(&plugged_map, vif, g));
            pthread_mutex_unlock(&plugged_lock);
            free(vif);
        }
    }
}

struct xa_error *
xa_net_converge(void)
{
    struct xa_error *err = need_driver();
    if (err) {
        return err;
    }
    unsigned epoch = drv->epoch();
    /* Since a new epoch the switch may have lost rules the records say
     * are in place (a restarted ovs-vswitchd keeps its ports, not its
     * rules): they are put again, whatever was recorded. */
    pthread_mutex_lock(&watch_lock);
    bool rules_kept = synced_epoch != 0 && synced_epoch == epoch;
    pthread_mutex_unlock(&watch_lock);
    struct xa_net_owned o;
    err = drv->list_owned(&o);
    if (err) {
        return backend_error(err, "list");
    }
    struct xa_hmap owned_ports = {0};
    for (size_t i = 0; i < o.n_ports; i++) {
        xa_hmap_put(&owned_ports, o.ports[i], o.port_specs[i]);
    }
    /* Bridges count as in use when they exist now, so a wiped switch
     * gets its internal bridges back only as VIFs need them. */
    struct xa_hmap in_use = {0};
    for (size_t i = 0; i < o.n_bridges; i++) {
        xa_hmap_put(&in_use, o.bridges[i], (void *)"");
    }
    struct desired d;
    memset(&d, 0, sizeof d);
    struct xa_txn *t = xa_db_begin_read();
    adopt_hv_ports(&o, t);
    struct collect_ctx c = {t, &d, &in_use};
    xa_db_foreach(t, &xa_cls_VIF, collect_vif, &c);
    /* A live VIF needs its bridge even when the switch lost it. */
    for (size_t i = 0; i < d.n_vifs; i++) {
        const char *br = xa_api_str(t, &xa_cls_network, d.vifs[i].network,
                                    XA_F(xa_cls_network, "bridge"));
        xa_hmap_put(&in_use, br, (void *)"");
    }
    xa_db_foreach(t, &xa_cls_network, collect_network, &c);
    xa_db_end(t);

    for (size_t i = 0; i < d.n_plans; i++) {
        struct bridge_plan *p = &d.plans[i];
        xa_hmap_put(&d.bridges, p->name, p->network);
        if (p->tag < 0) {
            xa_hmap_put(&d.bridges, p->real, p->network);
        }
        if (p->uplink) {
            xa_hmap_put(&d.ports, p->uplink, (void *)"");
        }
        for (size_t k = 0; k < p->slaves.n; k++) {
            xa_hmap_put(&d.ports, p->slaves.v[k], (void *)"bond-member");
        }
    }
    for (size_t i = 0; i < d.n_vifs; i++) {
        xa_hmap_put(&d.ports, d.vifs[i].port, d.vifs[i].spec);
    }
    unsigned removed = 0, made = 0;
    /* Leftovers first, so names are free for what replaces them. */
    for (size_t i = 0; i < o.n_ports && !err; i++) {
        const char *want = xa_hmap_get(&d.ports, o.ports[i]);
        bool is_bridge_port = xa_hmap_contains(&d.bridges, o.ports[i]);
        if ((!want || strcmp(want, "bond-member") == 0) && !is_bridge_port) {
            err = drv->remove_port(o.ports[i]);
            removed++;
        }
    }
    for (size_t i = 0; i < o.n_bridges && !err; i++) {
        if (!xa_hmap_contains(&d.bridges, o.bridges[i])) {
            err = drv->remove_bridge(o.bridges[i]);
            removed++;
        }
    }
    /* Real bridges before the fake bridges that hang off them. */
    for (int pass = 0; pass < 2 && !err; pass++) {
        for (size_t i = 0; i < d.n_plans && !err; i++) {
            if ((d.plans[i].tag >= 0) == (pass == 1)) {
                err = plan_apply(&d.plans[i]);
            }
        }
    }
    for (size_t i = 0; i < d.n_vifs && !err; i++) {
        const struct vif_plan *v = &d.vifs[i];
        const char *have = xa_hmap_get(&owned_ports, v->port);
        if (have && strcmp(have, v->spec) == 0) {
            /* Unchanged port: its rules may still need to change (a
             * network's default locking mode did) or to be put back. */
            char *had = rules_kept ? rules_have(v->vif) : NULL;
            err = rules_apply(v, had);
            free(had);
            if (!err) {
                plugged_free(remember(v, v->rules));
            }
            continue;
        }
        err = vif_plan_apply(v, true);
        made++;
    }
    bool pruned = true;
    if (!err) {
        /* Leftover rules match no port of ours: not worth failing the
         * convergence for (ovs-vswitchd may be catching up with a new
         * bridge), but worth a few more tries. */
        struct xa_error *perr = prune_rules(&d);
        bool failed = perr != NULL;
        if (perr) {
            xa_log_debug(LOG_MODULE, "rules not pruned: %s",
                         perr->n_params ? perr->params[0] : perr->code);
            xa_error_free(perr);
        }
        pthread_mutex_lock(&watch_lock);
        prune_failures = failed ? prune_failures + 1 : 0;
        pruned = prune_failures == 0 || prune_failures >= 10;
        pthread_mutex_unlock(&watch_lock);
    }
    if (!err) {
        xa_log_info(LOG_MODULE,
                    "converged: %zu bridges, %zu VIF ports (%u removed, %u "
                    "made)",
                    d.n_plans, d.n_vifs, removed, made);
        pthread_mutex_lock(&watch_lock);
        synced_epoch = pruned ? epoch : 0; /* 0: again in a second */
        pthread_mutex_unlock(&watch_lock);
    }
    for (size_t i = 0; i < d.n_plans; i++) {
        plan_free(&d.plans[i]);
    }
    for (size_t i = 0; i < d.n_vifs; i++) {
        vif_plan_free(&d.vifs[i]);
    }
    free(d.plans);
    free(d.vifs);
    xa_hmap_clear(&d.bridges, NULL);
    xa_hmap_clear(&d.ports, NULL);
    xa_hmap_clear(&owned_ports, NULL);
    xa_hmap_clear(&in_use, NULL);
    xa_net_owned_free(&o);
    return backend_error(err, "converge");
}

/* Removes the ports of VIFs that are no longer live although nobody said
 * so (a path that changed a VM's state without xa_net_vm_sync(), e.g.
 * VM.power_state_reset of a VM whose domain vanished).  A port is plugged
 * before its VM is recorded as running, so a VIF counts as dead only when
 * its VM has no operation in progress, and two sweeps in a row found it
 * so. */
static void
sweep_dead(void)
{
    struct strv mine = {0}, vms = {0}, dead = {0};
    pthread_mutex_lock(&plugged_lock);
    XA_HMAP_FOR_EACH (s, &plugged_map) {
        const struct plugged *g = s->val;
        strv_push(&mine, xa_strdup(s->key));
        strv_push(&vms, xa_strdup(g->vm));
    }
    pthread_mutex_unlock(&plugged_lock);
    if (mine.n == 0) {
        return;
    }
    bool *live = xa_malloc(mine.n * sizeof *live);
    struct xa_txn *t = xa_db_begin_read();
    for (size_t i = 0; i < mine.n; i++) {
        const struct xa_value *ops = xa_db_peek_field(
            t, &xa_cls_VM, vms.v[i], XA_F(xa_cls_VM, "current_operations"));
        bool busy = ops && ops->u.st.n > 0;
        live[i] = busy || vif_is_live(t, mine.v[i], vms.v[i]);
    }
    xa_db_end(t);
    pthread_mutex_lock(&plugged_lock);
    for (size_t i = 0; i < mine.n; i++) {
        struct plugged *g = xa_hmap_get(&plugged_map, mine.v[i]);
        if (!g) {
            continue;
        }
        g->dead_seen = live[i] ? 0 : g->dead_seen + 1;
        if (g->dead_seen >= 2) {
            strv_push(&dead, xa_strdup(mine.v[i]));
        }
    }
    pthread_mutex_unlock(&plugged_lock);
    for (size_t i = 0; i < dead.n; i++) {
        xa_log_info(LOG_MODULE, "VIF %s is no longer live: port removed",
                    dead.v[i]);
        struct xa_error *err = xa_net_unplug_vif(dead.v[i]);
        if (err) {
            xa_log_warn(LOG_MODULE, "VIF %s: %s", dead.v[i],
                        err->n_params ? err->params[0] : err->code);
            xa_error_free(err);
        }
    }
    free(live);
    strv_free(&mine);
    strv_free(&vms);
    strv_free(&dead);
}

/* Converges at start and again whenever the backend may have lost state
 * or a convergence failed (OVS down): retried every second. */
static void *
watch_main(void *arg)
{
    XA_UNUSED(arg);
    pthread_mutex_lock(&watch_lock);
    while (!watch_stop) {
        unsigned have = synced_epoch;
        pthread_mutex_unlock(&watch_lock);
        struct xa_error *err = drv->ping();
        if (!err && (have == 0 || drv->epoch() != have)) {
            err = xa_net_converge();
        }
        if (!err) {
            sweep_dead();
        }
        if (err) {
            xa_log_debug(LOG_MODULE, "not converged: %s",
                         err->n_params ? err->params[0] : err->code);
            xa_error_free(err);
            pthread_mutex_lock(&watch_lock);
            synced_epoch = 0;
        } else {
            pthread_mutex_lock(&watch_lock);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        if (!watch_stop) {
            pthread_cond_timedwait(&watch_cond, &watch_lock, &ts);
        }
    }
    pthread_mutex_unlock(&watch_lock);
    return NULL;
}

struct xa_error *
xa_net_select(const char *name, const char *ovsdb)
{
    return xa_net_select_ext(name, ovsdb, NULL, NULL);
}

struct xa_error *
xa_net_select_ext(const char *name, const char *ovsdb, const char *datapath,
                  const char *netns)
{
    const struct xa_net_driver *d = NULL;
    if (strcmp(name, "sim") == 0) {
        d = &xa_net_sim_driver;
    } else if (strcmp(name, "ovs") == 0) {
        d = &xa_net_ovs_driver;
    } else {
        return xa_error_internal("unknown network backend '%s' (sim, ovs)",
                                 name);
    }
    struct xa_error *err = xa_nl_init(netns);
    if (!err) {
        err = d->init(ovsdb, datapath);
    }
    if (err) {
        return err;
    }
    drv = d;
    return NULL;
}

void
xa_net_start(void)
{
    if (!drv || watch_running) {
        return;
    }
    watch_stop = false;
    watch_running = pthread_create(&watcher, NULL, watch_main, NULL) == 0;
}

struct xa_error *
xa_net_ping(void)
{
    struct xa_error *err = need_driver();
    return err ? err : backend_error(drv->ping(), "connect");
}

const char *
xa_net_name(void)
{
    return drv ? drv->name : NULL;
}

void
xa_net_shutdown(void)
{
    if (watch_running) {
        pthread_mutex_lock(&watch_lock);
        watch_stop = true;
        pthread_cond_signal(&watch_cond);
        pthread_mutex_unlock(&watch_lock);
        pthread_join(watcher, NULL);
        watch_running = false;
    }
    xa_dhcp_shutdown(); /* before netlink goes */
    if (drv) {
        drv->fini();
        drv = NULL;
    }
    xa_nl_fini();
    pthread_mutex_lock(&plugged_lock);
    xa_hmap_clear(&plugged_map, plugged_free);
    pthread_mutex_unlock(&plugged_lock);
}

void
xa_net_kick(void)
{
    pthread_mutex_lock(&watch_lock);
    synced_epoch = 0;
    pthread_cond_signal(&watch_cond);
    pthread_mutex_unlock(&watch_lock);
}

char *
xa_net_vif_of(const char *vm_uuid, const char *device)
{
    struct xa_txn *t = xa_db_begin_read();
    char *vm = xa_db_ref_by_uuid(t, &xa_cls_VM, vm_uuid);
    struct xa_value *vifs =
        vm ? xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs")) : NULL;
    char *found = NULL;
    for (size_t i = 0; vifs && i < vifs->u.arr.n && !found; i++) {
        const char *v = vifs->u.arr.items[i]->u.str.s;
        if (strcmp(xa_api_str(t, &xa_cls_VIF, v, XA_F(xa_cls_VIF, "device")),
                   device) == 0) {
            found = xa_strdup(v);
        }
    }
    xa_db_end(t);
    xa_value_unref(vifs);
    free(vm);
    return found;
}
