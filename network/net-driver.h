/* net-driver.h - what a network backend provides to xapid.
 *
 * Backends are thin and stateless as far as xapid is concerned: net.c
 * works out from the database what bridges and ports this host should
 * have and asks the backend to make each one so.  Every entry is
 * idempotent (making a bridge that exists updates it, removing one that
 * is gone succeeds), which is what lets a restarted xapid, or a
 * restarted ovsdb-server, converge by simply replaying the whole state.
 *
 * Everything a backend creates is marked as xapid's (external-ids
 * xapid-owned=true in OVS) so that list_owned() finds leftovers, and
 * nothing else is ever removed.  Entries may be called from several
 * threads; a backend does its own locking. */
#ifndef XA_NET_DRIVER_H
#define XA_NET_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* One bridge. */
struct xa_net_bridge {
    const char *name;       /* "xenbr0", "xapi3" */
    const char *const *ids; /* external-ids, NULL-terminated k, v, ... */
    const char *hwaddr;     /* other-config:hwaddr, or NULL */
    int64_t mtu;            /* of the bridge's own interface; 0: default */
};

/* One interface of a port. */
struct xa_net_iface {
    const char *name;
    const char *type;           /* "" (a system device), "internal" */
    const char *const *ids;     /* external-ids, NULL-terminated k, v, ... */
    int64_t mtu;                /* mtu_request; 0: leave it */
    const char *mac;            /* mac (for internal ports), or NULL */
    const char *const *options; /* options (tunnels: remote_ip, key), k, v,
                                   ..., NULL-terminated; or NULL */
};

/* One port: a NIC, a bond (several interfaces), a VIF, or a VLAN fake
 * bridge (an internal port with fake_bridge set, named like a bridge). */
struct xa_net_port {
    const char *name;
    const char *bridge; /* the real bridge it is on */
    int64_t tag;        /* access VLAN, -1: none */
    bool fake_bridge;
    const struct xa_net_iface *ifaces;
    size_t n_ifaces;
    const char *bond_mode; /* "balance-slb", "active-backup", "balance-tcp" */
    bool lacp;             /* lacp=active */
    const char *const *other_config; /* NULL-terminated k, v, ... */
    const char *const *ids;          /* the port's external-ids */
    const char *spec; /* a digest of everything above: unchanged digest,
                         unchanged port (no need to touch it) */
};

/* The locking rules of one VIF's port (see openflow.h). */
struct xa_net_rules {
    const char *bridge; /* the real bridge the port is on */
    const char *port;
    const char *vif_uuid; /* tags every rule of this VIF */
    const char *mode;     /* "locked", "disabled"; else: no rules */
    const char *mac;
    const char *const *ipv4; /* NULL-terminated */
    const char *const *ipv6;
};

/* What list_owned() reports. */
struct xa_net_owned {
    char **bridges; /* names */
    size_t n_bridges;
    char **ports;      /* names */
    char **port_specs; /* their digests ("" when none) */
    size_t n_ports;
};

void xa_net_owned_free(struct xa_net_owned *o);

struct xa_net_driver {
    const char *name; /* "sim", "ovs" */
    /* Once at start-up; 'remote' is --ovsdb (may be NULL). */
    struct xa_error *(*init)(const char *remote, const char *datapath);
    void (*fini)(void);
    /* NULL when the backend is reachable (connecting if needed). */
    struct xa_error *(*ping)(void);
    /* Changes when the backend may have lost state (a new connection to
     * ovsdb-server, a new ovs-vswitchd): net.c then replays everything,
     * rules included.  Called every second: must be cheap. */
    unsigned (*epoch)(void);
    struct xa_error *(*ensure_bridge)(const struct xa_net_bridge *b);
    struct xa_error *(*remove_bridge)(const char *name);
    /* Creates or replaces the port 'p->name' (wherever it was). */
    struct xa_error *(*put_port)(const struct xa_net_port *p);
    struct xa_error *(*remove_port)(const char *name);
    struct xa_error *(*list_owned)(struct xa_net_owned *out);
    /* Optional (NULL: the backend filters nothing).  Replaces the rules
     * with r->cookie by those of r->mode (none: removes them). */
    struct xa_error *(*set_rules)(const struct xa_net_rules *r);
    /* Removes the rules on 'bridge' of every VIF not in 'keep' (uuids,
     * NULL-terminated): rules of VIFs gone while xapid was not looking. */
    struct xa_error *(*prune_rules)(const char *bridge,
                                    const char *const *keep);
};

extern const struct xa_net_driver xa_net_sim_driver;
extern const struct xa_net_driver xa_net_ovs_driver;

#endif
