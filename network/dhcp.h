/* dhcp.h - DHCP for PIFs (PIF.reconfigure_ip mode=DHCP).
 *
 * The protocol is ISC dhclient's, run as xapid's own child (in the
 * interfaces' network namespace) with a private lease file and pid file
 * under the state dir, in the foreground and with a script that does
 * nothing: dhclient only negotiates and records leases.  A thread of
 * this module watches each lease file and applies what it says with
 * netlink (address, prefix, default route), then hands the lease to a
 * callback that records it in the PIF's fields, which is how xapi fills
 * IP, netmask, gateway and DNS for a DHCP PIF.  Nothing of the machine's
 * own configuration (/etc/resolv.conf, hostname) is touched. */
#ifndef XA_DHCP_H
#define XA_DHCP_H

#include <stdbool.h>

#include "error.h"

struct xa_dhcp_lease {
    char ip[16];
    char netmask[16];
    char gateway[16]; /* "" when none */
    char dns[64];     /* comma-separated, "" when none */
};

/* Called from the watcher thread, with no lock held, each time a new or
 * changed lease of 'pif' has been applied to its device; false: not
 * recorded, call again later. */
typedef bool (*xa_dhcp_cb)(const char *pif, const struct xa_dhcp_lease *l);

/* Starts (or restarts) the client of PIF 'pif' on device 'dev'. */
struct xa_error *xa_dhcp_start(const char *pif, const char *dev,
                               xa_dhcp_cb cb) XA_WARN_UNUSED;
/* Stops the client of 'pif' (none running: nothing to do). */
void xa_dhcp_stop(const char *pif);
/* Stops every client and the watcher (xapid exit). */
void xa_dhcp_shutdown(void);

/* Parses the last lease of a dhclient lease file's text; false when it
 * has none. */
bool xa_dhcp_parse_lease(const char *text, struct xa_dhcp_lease *out);

#endif
