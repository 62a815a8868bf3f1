/* openflow.h - a small OpenFlow 1.3 client: the flow rules that enforce a
 * VIF's locking mode, as xapi's setup-vif-rules installs them with
 * ovs-ofctl, but spoken directly over a bridge's management socket
 * (<ovs rundir>/<bridge>.mgmt) so the product runs no command.
 *
 * Every rule of one VIF carries the same cookie, so the whole set can be
 * replaced (mode changed on a running VIF) or removed (unplug) with one
 * cookie-masked delete.  Cookies made by xa_of_cookie() share a tag in
 * their top 16 bits, which lets xa_of_prune() find rules of VIFs that no
 * longer exist (left by a previous run) without touching anyone else's.
 *
 * Connections are cached per socket path and reopened after any failure;
 * every wait is bounded.  Safe from several threads (one lock inside). */
#ifndef XA_OPENFLOW_H
#define XA_OPENFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Which fields of a match are set. */
enum {
    XA_OF_IN_PORT = 1 << 0,
    XA_OF_ETH_SRC = 1 << 1,
    XA_OF_ETH_TYPE = 1 << 2,
    XA_OF_IP_PROTO = 1 << 3,
    XA_OF_IPV4_SRC = 1 << 4,
    XA_OF_IPV6_SRC = 1 << 5,
    XA_OF_UDP_DST = 1 << 6,
    XA_OF_ARP_SPA = 1 << 7,
    XA_OF_ARP_SHA = 1 << 8,
    XA_OF_ICMPV6_TYPE = 1 << 9,
    XA_OF_ND_TARGET = 1 << 10,
    XA_OF_ND_SLL = 1 << 11,
};

/* One rule: a match, a priority, and "normal" (the switch's own L2
 * forwarding) or drop. */
struct xa_of_flow {
    unsigned fields; /* XA_OF_* */
    uint32_t in_port;
    uint8_t eth_src[6];
    uint16_t eth_type;
    uint8_t ip_proto;
    uint8_t ipv4_src[4]; /* network order */
    uint8_t ipv6_src[16];
    uint16_t udp_dst;
    uint8_t arp_spa[4];
    uint8_t arp_sha[6];
    uint8_t icmpv6_type;
    uint8_t nd_target[16];
    uint8_t nd_sll[6];
    uint16_t priority;
    bool normal; /* false: drop */
};

#define XA_OF_FLOW_MOD_ADD    0
#define XA_OF_FLOW_MOD_DELETE 3

/* Encodes an OpenFlow 1.3 flow_mod into 'buf' ('cap' bytes; 256 is always
 * enough) and returns its length, or 0 when it does not fit.  ADD uses
 * 'f' (table 0); DELETE removes every rule of every table whose cookie
 * matches 'cookie' under 'cookie_mask' ('f' may be NULL). */
size_t xa_of_encode_flow_mod(uint8_t *buf, size_t cap, uint32_t xid,
                             int command, uint64_t cookie, uint64_t cookie_mask,
                             const struct xa_of_flow *f);

/* The rules of a VIF in 'mode' ("locked" or "disabled"; anything else
 * has none) on switch port 'ofport'.  'mac' is "aa:bb:..", 'ipv4' and
 * 'ipv6' NULL-terminated address lists.  Returns how many were written to
 * '*out' (caller frees); an address that does not parse: INVALID_VALUE. */
struct xa_error *xa_of_vif_flows(const char *mode, uint32_t ofport,
                                 const char *mac, const char *const *ipv4,
                                 const char *const *ipv6,
                                 struct xa_of_flow **out,
                                 size_t *n_out) XA_WARN_UNUSED;

/* The cookie of a VIF's rules, from its uuid (tagged as xapid's). */
uint64_t xa_of_cookie(const char *vif_uuid);

/* Replaces, on the switch behind management socket 'sock', the rules with
 * 'cookie' by 'flows' (none: only removes them), then waits until the
 * switch has applied everything (barrier) or refused something. */
struct xa_error *xa_of_replace(const char *sock, uint64_t cookie,
                               const struct xa_of_flow *flows,
                               size_t n) XA_WARN_UNUSED;

/* Removes every xapid-tagged rule whose cookie is not in 'keep'. */
struct xa_error *xa_of_prune(const char *sock, const uint64_t *keep,
                             size_t n_keep) XA_WARN_UNUSED;

/* Closes the cached connections (xapid exit). */
void xa_of_shutdown(void);

#endif
