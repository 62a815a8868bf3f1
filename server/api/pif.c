/* pif.c - physical interfaces: discovery, plug/unplug, IP addressing.
 *
 * A NIC is a device the kernel reports without a link "kind" (veth, tun,
 * bridge, bond, vlan, openvswitch... all have one) that is not loopback
 * and has a MAC, unless --nics names the NICs outright (hosts whose NICs
 * look virtual, and the tests, which use veths in a namespace).  Each new
 * NIC gets a PIF, its PIF_metrics and a network of its own whose bridge
 * is the first free xenbrN.  PIFs start unplugged: plugging one moves the
 * NIC onto its bridge, which on a live host is a decision, not a side
 * effect of discovery.
 *
 * The address of a PIF (reconfigure_ip) lives where its traffic does:
 * on the bridge when the PIF is plugged into Open vSwitch, otherwise on
 * the device itself. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/net-api.h"
#include "api/vm.h"
#include "log.h"
#include "network/dhcp.h"
#include "network/net.h"
#include "network/netlink.h"
#include "self.h"
#include "xa-impl.h"

static char *nic_list; /* --nics, "" for discovery */

static bool
in_list(const char *name)
{
    size_t n = strlen(name);
    for (const char *p = nic_list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) {
            return true;
        }
        p = e ? e + 1 : p + len;
    }
    return false;
}

static bool
is_nic(const struct xa_nl_link *l)
{
    if (nic_list && *nic_list) {
        return in_list(l->name);
    }
    return !l->loopback && !l->kind[0] && l->mac[0] &&
           !xa_str_has_prefix(l->name, "xenbr") &&
           !xa_str_has_prefix(l->name, "xapi") &&
           !xa_str_has_prefix(l->name, "vif") &&
           !xa_str_has_prefix(l->name, "tap") &&
           !xa_str_has_prefix(l->name, "ovs-");
}

static int
by_name(const void *a, const void *b)
{
    return strcmp(((const struct xa_nl_link *)a)->name,
                  ((const struct xa_nl_link *)b)->name);
}

/* This host's PIF with device 'dev' and VLAN -1 (caller frees), or NULL. */
static char *
pif_by_device(struct xa_txn *t, const char *host, const char *dev)
{
    struct xa_value *all = xa_db_get_all(t, &xa_cls_PIF);
    char *found = NULL;
    for (size_t i = 0; all && i < all->u.arr.n && !found; i++) {
        const char *p = all->u.arr.items[i]->u.str.s;
        if (strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host")),
                   host) == 0 &&
            strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "device")),
                   dev) == 0 &&
            xa_api_int(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "VLAN")) < 0) {
            found = xa_strdup(p);
        }
    }
    xa_value_unref(all);
    return found;
}

static struct xa_error *
write_metrics(struct xa_txn *t, const char *pif, const struct xa_nl_link *l)
{
    char now[32];
    xa_datetime_now(now);
    const char *m =
        xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "metrics"));
    if (xa_db_exists(t, &xa_cls_PIF_metrics, m)) {
        struct xa_error *err = xa_api_set(t, &xa_cls_PIF_metrics, m,
                                          XA_F(xa_cls_PIF_metrics, "carrier"),
                                          xa_bool(l->carrier));
        if (!err) {
            err = xa_api_set(t, &xa_cls_PIF_metrics, m,
                             XA_F(xa_cls_PIF_metrics, "last_updated"),
                             xa_datetime(now));
        }
        return err;
    }
    struct xa_value *rec = xa_struct();
    xa_struct_set(rec, "carrier", xa_bool(l->carrier));
    xa_struct_set(rec, "speed", xa_int(0));
    xa_struct_set(rec, "duplex", xa_bool(l->carrier));
    xa_struct_set(rec, "vendor_id", xa_string(""));
    xa_struct_set(rec, "vendor_name", xa_string(""));
    xa_struct_set(rec, "device_id", xa_string(""));
    xa_struct_set(rec, "device_name", xa_string(""));
    xa_struct_set(rec, "pci_bus_path", xa_string(""));
    xa_struct_set(rec, "last_updated", xa_datetime(now));
    char *ref = xa_ref_new();
    struct xa_error *err = xa_db_create(t, &xa_cls_PIF_metrics, ref, rec);
    if (!err) {
        err = xa_api_set(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "metrics"),
                         xa_string(ref));
    }
    free(ref);
    return err;
}

/* Creates the PIF of NIC 'l' with a network of its own. */
static struct xa_error *
make_pif(struct xa_txn *t, const char *host, const struct xa_nl_link *l,
         bool managed, char **ret)
{
    char *bridge = xa_net_free_bridge(t, "xenbr");
    char *label = xa_asprintf("Pool-wide network associated with %s", l->name);
    char *net = NULL;
    struct xa_error *err =
        xa_net_make_network(t, label, bridge, l->mtu > 0 ? l->mtu : 1500, &net);
    free(label);
    free(bridge);
    if (err) {
        return err;
    }
    struct xa_value *rec = xa_struct();
    xa_struct_set(rec, "device", xa_string(l->name));
    xa_struct_set(rec, "network", xa_string(net));
    xa_struct_set(rec, "host", xa_string(host));
    xa_struct_set(rec, "MAC", xa_string(l->mac));
    xa_struct_set(rec, "MTU", xa_int(l->mtu > 0 ? l->mtu : 1500));
    xa_struct_set(rec, "VLAN", xa_int(-1));
    xa_struct_set(rec, "physical", xa_bool(true));
    xa_struct_set(rec, "currently_attached", xa_bool(false));
    xa_struct_set(rec, "managed", xa_bool(managed));
    xa_struct_set(rec, "ip_configuration_mode", xa_string("None"));
    xa_struct_set(rec, "other_config", xa_struct());
    free(net);
    char *ref = xa_ref_new();
    err = xa_db_create(t, &xa_cls_PIF, ref, rec);
    if (!err) {
        err = write_metrics(t, ref, l);
    }
    if (err || !ret) {
        free(ref);
    } else {
        *ret = ref;
    }
    return err;
}

struct xa_error *
xa_pif_scan(const char *host)
{
    struct xa_nl_link *links = NULL;
    size_t n = 0;
    struct xa_error *err = xa_nl_list_links(&links, &n);
    if (err) {
        return err;
    }
    qsort(links, n, sizeof *links, by_name);
    struct xa_txn *t = xa_db_begin_write();
    unsigned made = 0;
    for (size_t i = 0; i < n && !err; i++) {
        if (!is_nic(&links[i])) {
            continue;
        }
        char *pif = pif_by_device(t, host, links[i].name);
        if (pif) {
            err = write_metrics(t, pif, &links[i]);
        } else {
            err = make_pif(t, host, &links[i], true, NULL);
            made++;
        }
        free(pif);
    }
    free(links);
    err = xa_api_finish(t, err);
    if (!err && made) {
        xa_log_info("net", "PIF scan: %u new NIC(s)", made);
    }
    return err;
}

struct xa_error *
xa_impl_PIF_scan(struct xa_call *call, const char *host)
{
    XA_UNUSED(call);
    return xa_pif_scan(host);
}

struct xa_error *
xa_impl_PIF_introduce(struct xa_call *call, const char *host, const char *MAC,
                      const char *device, bool managed, struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_nl_link *links = NULL;
    size_t n = 0;
    struct xa_error *err = xa_nl_list_links(&links, &n);
    if (err) {
        return err;
    }
    const struct xa_nl_link *l = NULL;
    for (size_t i = 0; i < n && !l; i++) {
        if (strcmp(links[i].name, device) == 0 &&
            (!*MAC || strcasecmp(links[i].mac, MAC) == 0)) {
            l = &links[i];
        }
    }
    if (!l) {
        free(links);
        return xa_error_new("COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_"
                            "DEVICE_NAME_AND_MAC_ADDRESS",
                            2, device, MAC);
    }
    struct xa_txn *t = xa_db_begin_write();
    char *old = pif_by_device(t, host, device);
    char *ref = NULL;
    if (old) {
        err = xa_error_new("DUPLICATE_PIF_DEVICE_NAME", 1, device);
    } else {
        err = make_pif(t, host, l, managed, &ref);
    }
    free(old);
    free(links);
    err = xa_api_finish(t, err);
    if (err) {
        free(ref);
        return err;
    }
    *ret = xa_string_take(ref);
    return NULL;
}

struct xa_error *
xa_impl_PIF_forget(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (xa_api_int(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "VLAN")) >= 0) {
        err = xa_error_new("PIF_IS_VLAN", 1, self);
    } else if (xa_db_count_related(t, &xa_cls_PIF, self,
                                   XA_F(xa_cls_PIF, "VLAN_slave_of")) > 0) {
        err = xa_error_new("PIF_VLAN_STILL_EXISTS", 1, self);
    } else if (xa_db_exists(t, &xa_cls_Bond,
                            xa_api_str(t, &xa_cls_PIF, self,
                                       XA_F(xa_cls_PIF, "bond_slave_of")))) {
        err = xa_error_new("PIF_ALREADY_BONDED", 1, self);
    } else if (xa_api_bool(t, &xa_cls_PIF, self,
                           XA_F(xa_cls_PIF, "management"))) {
        err = xa_error_new("PIF_IS_MANAGEMENT_INTERFACE", 1, self);
    } else {
        char *m = xa_strdup(
            xa_api_str(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "metrics")));
        err = xa_db_destroy(t, &xa_cls_PIF, self);
        if (!err && xa_db_exists(t, &xa_cls_PIF_metrics, m)) {
            err = xa_db_destroy(t, &xa_cls_PIF_metrics, m);
        }
        free(m);
    }
    err = xa_api_finish(t, err);
    if (!err) {
        xa_dhcp_stop(self);
        xa_net_restructure();
    }
    return err;
}

struct xa_error *
xa_impl_PIF_destroy(struct xa_call *call, const char *self)
{
    struct xa_txn *t = xa_db_begin_read();
    bool physical =
        xa_api_bool(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "physical"));
    char *vlan = xa_strdup(
        xa_api_str(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "VLAN_master_of")));
    bool is_vlan = xa_db_exists(t, &xa_cls_VLAN, vlan);
    xa_db_end(t);
    struct xa_error *err = NULL;
    if (physical) {
        err = xa_error_new("PIF_IS_PHYSICAL", 1, self);
    } else if (is_vlan) {
        err = xa_impl_VLAN_destroy(call, vlan);
    } else {
        err = xa_error_new("PIF_IS_NOT_PHYSICAL", 1, self);
    }
    free(vlan);
    return err;
}

static struct xa_error *ip_device(const char *pif, char **dev);
static struct xa_error *start_dhcp(const char *pif, const char *dev);
static bool record_lease(const char *pif, const struct xa_dhcp_lease *l);

/* A DHCP PIF's client follows its plugging: plugged, it runs (and puts
 * the lease back); unplugged, it stops and the address goes, as an
 * ifdown would do.  Other modes are left alone. */
static struct xa_error *
dhcp_follow(const char *pif, bool attached)
{
    struct xa_txn *t = xa_db_begin_read();
    bool dhcp = strcmp(xa_api_str(t, &xa_cls_PIF, pif,
                                  XA_F(xa_cls_PIF, "ip_configuration_mode")),
                       "DHCP") == 0;
    xa_db_end(t);
    if (!dhcp) {
        return NULL;
    }
    xa_dhcp_stop(pif);
    char *dev = NULL;
    struct xa_error *err = ip_device(pif, &dev);
    if (!err && attached) {
        err = xa_nl_wait_link(dev, 5.0);
        if (!err) {
            err = start_dhcp(pif, dev);
        }
    } else if (!err) {
        err = xa_nl_flush_v4(dev);
        record_lease(pif, &(struct xa_dhcp_lease){0});
    }
    free(dev);
    return err;
}

static struct xa_error *
set_attached(const char *pif, bool attached)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err =
        xa_api_set(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "currently_attached"),
                   xa_bool(attached));
    return xa_api_finish(t, err);
}

struct xa_error *
xa_impl_PIF_plug(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    bool slave = xa_db_exists(
        t, &xa_cls_Bond,
        xa_api_str(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "bond_slave_of")));
    char *net = xa_strdup(
        xa_api_str(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "network")));
    bool was = xa_api_bool(t, &xa_cls_PIF, self,
                           XA_F(xa_cls_PIF, "currently_attached"));
    xa_db_end(t);
    struct xa_error *err = NULL;
    if (slave) {
        err = xa_error_new("CANNOT_PLUG_BOND_SLAVE", 1, self);
    } else {
        err = xa_net_check_backend();
    }
    if (!err) {
        err = set_attached(self, true);
    }
    if (!err) {
        err = xa_net_ensure_bridge(net, NULL);
        if (err && !was) {
            xa_error_free(set_attached(self, false));
        }
    }
    if (!err && !was) {
        err = dhcp_follow(self, true);
    }
    free(net);
    return err;
}

struct xa_error *
xa_impl_PIF_unplug(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    bool mgmt =
        xa_api_bool(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "management"));
    bool disallow =
        xa_api_bool(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "disallow_unplug"));
    xa_db_end(t);
    if (mgmt) {
        return xa_error_new("PIF_IS_MANAGEMENT_INTERFACE", 1, self);
    }
    if (disallow) {
        return xa_error_new("PIF_DOES_NOT_ALLOW_UNPLUG", 1, self);
    }
    struct xa_error *err = dhcp_follow(self, false);
    if (!err) {
        err = set_attached(self, false);
    }
    if (!err) {
        /* The uplink port goes; the bridge stays for the VIFs on it. */
        xa_net_restructure();
    }
    return err;
}

struct xa_error *
xa_impl_PIF_set_disallow_unplug(struct xa_call *call, const char *self,
                                bool value)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err =
        xa_api_set(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "disallow_unplug"),
                   xa_bool(value));
    return xa_api_finish(t, err);
}

static bool
valid_ip(const char *ip)
{
    struct in_addr a;
    return inet_pton(AF_INET, ip, &a) == 1;
}

/* A DHCP lease applied to the PIF's device: its fields report it, as
 * xapi's do.  False while the PIF is not (yet) recorded as DHCP. */
static bool
record_lease(const char *pif, const struct xa_dhcp_lease *l)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    bool dhcp = xa_db_exists(t, &xa_cls_PIF, pif) &&
                strcmp(xa_api_str(t, &xa_cls_PIF, pif,
                                  XA_F(xa_cls_PIF, "ip_configuration_mode")),
                       "DHCP") == 0;
    if (dhcp) {
        err = xa_api_set(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "IP"),
                         xa_string(l->ip));
    }
    if (dhcp && !err) {
        err = xa_api_set(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "netmask"),
                         xa_string(l->netmask));
    }
    if (dhcp && !err) {
        err = xa_api_set(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "gateway"),
                         xa_string(l->gateway));
    }
    if (dhcp && !err) {
        err = xa_api_set(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "DNS"),
                         xa_string(l->dns));
    }
    err = xa_api_finish(t, err);
    if (err) {
        xa_log_warn("net", "PIF %s: lease not recorded: %s", pif, err->code);
        xa_error_free(err);
        return false;
    }
    return dhcp;
}

/* The device that carries 'pif's address into '*dev' (caller frees):
 * on Open vSwitch the bridge of its network (made now if need be),
 * else the NIC itself. */
static struct xa_error *
ip_device(const char *pif, char **dev)
{
    struct xa_txn *t = xa_db_begin_read();
    bool attached = xa_api_bool(t, &xa_cls_PIF, pif,
                                XA_F(xa_cls_PIF, "currently_attached"));
    char *netref =
        xa_strdup(xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "network")));
    *dev =
        xa_strdup(xa_api_str(t, &xa_cls_PIF, pif, XA_F(xa_cls_PIF, "device")));
    xa_db_end(t);
    const char *backend = xa_net_name();
    struct xa_error *err = NULL;
    if (attached && backend && strcmp(backend, "ovs") == 0) {
        free(*dev);
        *dev = NULL;
        err = xa_net_ensure_bridge(netref, dev);
    }
    free(netref);
    return err;
}

static struct xa_error *
start_dhcp(const char *pif, const char *dev)
{
    struct xa_error *err = xa_nl_link_up(dev);
    return err ? err : xa_dhcp_start(pif, dev, record_lease);
}

/* At start-up (on its own thread: bridges and links may take a moment),
 * the DHCP clients of this host's DHCP PIFs run again, as they did
 * before xapid stopped. */
static void *
resume_dhcp_main(void *arg)
{
    XA_UNUSED(arg);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *all = xa_db_get_all(t, &xa_cls_PIF);
    struct xa_value *mine = xa_array();
    for (size_t i = 0; all && i < all->u.arr.n; i++) {
        const char *p = all->u.arr.items[i]->u.str.s;
        if (strcmp(xa_api_str(t, &xa_cls_PIF, p, XA_F(xa_cls_PIF, "host")),
                   xa_self_host()) == 0 &&
            strcmp(xa_api_str(t, &xa_cls_PIF, p,
                              XA_F(xa_cls_PIF, "ip_configuration_mode")),
                   "DHCP") == 0) {
            xa_array_append(mine, xa_string(p));
        }
    }
    xa_db_end(t);
    xa_value_unref(all);
    for (size_t i = 0; i < mine->u.arr.n; i++) {
        const char *p = mine->u.arr.items[i]->u.str.s;
        char *dev = NULL;
        struct xa_error *err = ip_device(p, &dev);
        if (!err) {
            err = xa_nl_wait_link(dev, 5.0);
        }
        if (!err) {
            err = start_dhcp(p, dev);
        }
        if (err) {
            xa_log_warn("net", "PIF %s: DHCP not resumed: %s", p,
                        err->n_params ? err->params[0] : err->code);
            xa_error_free(err);
        }
        free(dev);
    }
    xa_value_unref(mine);
    return NULL;
}

void
xa_pif_resume_dhcp(void)
{
    if (!xa_self_host() || !xa_net_name()) {
        return;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, resume_dhcp_main, NULL) == 0) {
        pthread_detach(th);
    }
}

struct xa_error *
xa_impl_PIF_reconfigure_ip(struct xa_call *call, const char *self,
                           const char *mode, const char *IP,
                           const char *netmask, const char *gateway,
                           const char *DNS)
{
    XA_UNUSED(call);
    int prefix = -1;
    if (strcmp(mode, "Static") == 0) {
        if (!valid_ip(IP)) {
            return xa_error_invalid_value("IP", IP);
        }
        prefix = xa_nl_prefix_len(netmask);
        if (prefix < 0) {
            return xa_error_invalid_value("netmask", netmask);
        }
        if (*gateway && !valid_ip(gateway)) {
            return xa_error_invalid_value("gateway", gateway);
        }
    }
    char *dev = NULL;
    struct xa_error *err = ip_device(self, &dev);
    /* Whatever the new mode, the old DHCP client (if any) goes first, so
     * it cannot put its lease back. */
    xa_dhcp_stop(self);
    if (!err) {
        err = xa_nl_wait_link(dev, 5.0);
    }
    if (!err) {
        err = xa_nl_flush_v4(dev);
    }
    if (!err && strcmp(mode, "Static") == 0) {
        err = xa_nl_add_v4(dev, IP, prefix);
        if (!err && *gateway) {
            err = xa_nl_default_route(dev, gateway);
        }
    } else if (!err && strcmp(mode, "DHCP") == 0) {
        err = start_dhcp(self, dev);
    }
    if (err) {
        struct xa_error *e =
            xa_error_new("PIF_CONFIGURATION_ERROR", 2, self,
                         err->n_params ? err->params[0] : err->code);
        xa_error_free(err);
        free(dev);
        return e;
    }
    free(dev);
    bool st = strcmp(mode, "Static") == 0;
    struct xa_txn *t = xa_db_begin_write();
    err =
        xa_api_set(t, &xa_cls_PIF, self,
                   XA_F(xa_cls_PIF, "ip_configuration_mode"), xa_string(mode));
    if (!err) {
        err = xa_api_set(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "IP"),
                         xa_string(st ? IP : ""));
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "netmask"),
                         xa_string(st ? netmask : ""));
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "gateway"),
                         xa_string(st ? gateway : ""));
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_PIF, self, XA_F(xa_cls_PIF, "DNS"),
                         xa_string(st ? DNS : ""));
    }
    return xa_api_finish(t, err);
}

void
xa_pif_init(const char *nics)
{
    free(nic_list);
    nic_list = xa_strdup(nics ? nics : "");
    const char *host = xa_self_host();
    if (!host) {
        return;
    }
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *all = xa_db_get_all(t, &xa_cls_PIF);
    bool have = false;
    for (size_t i = 0; all && i < all->u.arr.n && !have; i++) {
        have = strcmp(xa_api_str(t, &xa_cls_PIF, all->u.arr.items[i]->u.str.s,
                                 XA_F(xa_cls_PIF, "host")),
                      host) == 0;
    }
    xa_value_unref(all);
    xa_db_end(t);
    /* First start (no PIF of ours yet): discover the NICs. */
    struct xa_error *err = have ? NULL : xa_pif_scan(host);
    if (err) {
        xa_log_warn("net", "PIF scan: %s",
                    err->n_params ? err->params[0] : err->code);
        xa_error_free(err);
    }
}
