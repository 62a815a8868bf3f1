/* net.h - the core's side of the network driver (see net-driver.h).
 *
 * xapid runs one network backend per host, chosen at start-up with
 * --network: "sim" keeps bridges and ports in memory (the default, for
 * the quickstart and scale tests), "ovs" programs Open vSwitch through
 * OVSDB.  The API layer and the hypervisor backends call only these
 * functions; they read what they need (bridge names, uuids, MACs) from
 * the database themselves, so callers pass refs, not records.
 *
 * Every function may block on the backend (bounded by a timeout: OVSDB
 * down answers an error, never hangs) and must be called with no
 * database transaction held.  Safe from several threads at once. */
#ifndef XA_NET_H
#define XA_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

/* Selects and initialises the backend 'name' ("sim" or "ovs").  'ovsdb'
 * is the OVSDB remote for "ovs" ("unix:PATH"; NULL or "" for Open
 * vSwitch's standard socket) and is ignored by "sim".  Unknown name:
 * INTERNAL_ERROR. */
struct xa_error *xa_net_select(const char *name,
                               const char *ovsdb) XA_WARN_UNUSED;
/* The selected backend's name, or NULL before xa_net_select(). */
const char *xa_net_name(void);
/* Shuts the backend down (xapid exit). */
void xa_net_shutdown(void);

/* Makes sure the bridge of network 'network_ref' exists on this host
 * (creating it, and the VLAN fake bridge or bond it rides on, when first
 * needed) and returns its name in '*ret_bridge' (caller frees; may be
 * NULL when the name is not wanted).  This is what a hypervisor backend
 * calls before putting a guest's tap device on the network. */
struct xa_error *xa_net_ensure_bridge(const char *network_ref,
                                      char **ret_bridge) XA_WARN_UNUSED;

/* The ref of the VIF 'device' of the VM whose uuid is 'vm_uuid' (the
 * hypervisor names NICs by VM and device), or NULL when there is none (a
 * domain built outside the API); caller frees.  Opens its own read
 * transaction. */
char *xa_net_vif_of(const char *vm_uuid, const char *device);
/* Puts the VIF 'vif_ref' on its network's bridge as a port carrying the
 * external-ids xapi sets (xs-vm-uuid, xs-vif-uuid, xs-network-uuid,
 * attached-mac, iface-id), with the VIF's MTU and locking mode.
 * 'ifname' is the device the hypervisor already created (a tap), or NULL
 * for a backend without real devices (the sim hypervisor): the port is
 * then an internal port named "vif<domid>.<devid>".  Idempotent: plugging
 * a plugged VIF updates its port. */
struct xa_error *xa_net_plug_vif(const char *vif_ref,
                                 const char *ifname) XA_WARN_UNUSED;
/* Removes the VIF's port, wherever it is.  Unplugging a VIF that has no
 * port is not an error. */
struct xa_error *xa_net_unplug_vif(const char *vif_ref) XA_WARN_UNUSED;
/* Brings the locking rules of the VIF's port up to date with its
 * locking_mode and allowed addresses (changed on a running VIF).  A VIF
 * with no port here: nothing to do. */
struct xa_error *xa_net_refresh_vif(const char *vif_ref) XA_WARN_UNUSED;

/* --- for the core (main.c, the API layer) ----------------------------- */

/* xa_net_select() with the OVS datapath type for new bridges ("netdev":
 * the userspace datapath, no kernel module; NULL or "": OVS's default)
 * and the network namespace whose interfaces are the host's (a file like
 * /run/netns/NAME; NULL or "": xapid's own). */
struct xa_error *xa_net_select_ext(const char *name, const char *ovsdb,
                                   const char *datapath,
                                   const char *netns) XA_WARN_UNUSED;
/* Starts the thread that converges the switch with the database at once
 * and again whenever it may have lost state (call after the API is up). */
void xa_net_start(void);
/* Asks that thread for a convergence now (after a structural change:
 * bonds, VLANs, networks destroyed). */
void xa_net_kick(void);
/* One full convergence, synchronously. */
struct xa_error *xa_net_converge(void) XA_WARN_UNUSED;

/* VM start: ports for every VIF of 'vm_ref', whose new domain is
 * 'domid' (not recorded yet), except those its hypervisor already put on
 * the bridge.  On failure nothing stays plugged. */
struct xa_error *xa_net_vm_plug(const char *vm_ref,
                                int64_t domid) XA_WARN_UNUSED;
/* After any change of a VM's state (stopped, rebooted with a new domid,
 * suspended): removes the ports of VIFs no longer live and renames those
 * whose domid changed.  Failures are logged: the convergence catches up. */
void xa_net_vm_sync(const char *vm_ref);

/* NULL when the backend answers (connecting if needed). */
struct xa_error *xa_net_ping(void) XA_WARN_UNUSED;

/* The network, PIF, VLAN and Bond messages (server/api/network.c ...):
 * registers overrides; when this host has no PIF yet (first start),
 * discovers its NICs.  'nics' (comma-separated; NULL or "": discover the
 * physical ones) names the devices that are this host's NICs. */
void xa_net_api_init(const char *nics);

#endif
