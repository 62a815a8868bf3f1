/* net-api.h - shared by the network, PIF, VLAN and Bond modules
 * (server/api/network.c, pif.c, vlan.c, bond.c). */
#ifndef XA_API_NET_API_H
#define XA_API_NET_API_H

#include <stdbool.h>
#include <stdint.h>

#include "db/db.h"
#include "error.h"

extern const struct xa_class_desc xa_cls_PIF, xa_cls_PIF_metrics, xa_cls_VLAN,
    xa_cls_Bond, xa_cls_tunnel;

/* Whether some network already has bridge 'bridge'. */
bool xa_net_bridge_taken(struct xa_txn *t, const char *bridge);
/* The first "<prefix>N" no network has (caller frees). */
char *xa_net_free_bridge(struct xa_txn *t, const char *prefix);
/* Creates a network row; '*ret' gets its ref (caller frees). */
struct xa_error *xa_net_make_network(struct xa_txn *t, const char *label,
                                     const char *bridge, int64_t mtu,
                                     char **ret) XA_WARN_UNUSED;
/* Makes 'network's bridge now, or leaves it to the next convergence
 * when the switch cannot be reached (the records are already written). */
void xa_net_bridge_soon(const char *network);
/* After a change of structure (bond, VLAN, network gone, PIF plugged):
 * converges the switch now, or, when it is unreachable, soon. */
void xa_net_restructure(void);
/* Fails with a clear error when the backend cannot be reached, before a
 * change the switch must follow is recorded. */
struct xa_error *xa_net_check_backend(void) XA_WARN_UNUSED;

/* Discovers this host's NICs and creates the PIFs (and their networks)
 * it does not have yet; refreshes PIF_metrics of the others. */
struct xa_error *xa_pif_scan(const char *host) XA_WARN_UNUSED;

void xa_network_init(void);
void xa_pif_init(const char *nics);
/* Starts the DHCP clients of this host's DHCP PIFs again (at start-up,
 * once the network backend runs); returns at once. */
void xa_pif_resume_dhcp(void);
void xa_vlan_init(void);
void xa_bond_init(void);

#endif
