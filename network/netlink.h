/* netlink.h - the host's interfaces through rtnetlink (no shelling out to
 * ip): discovery for PIF.scan and addressing for PIF.reconfigure_ip.
 *
 * All requests run in one network namespace, the one xapid runs in or
 * the one named at start-up (tests keep their veths in a namespace of
 * their own and never touch the machine's interfaces). */
#ifndef XA_NETLINK_H
#define XA_NETLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct xa_nl_link {
    char name[16];
    int index;
    char mac[18]; /* "aa:bb:..." or "" */
    int64_t mtu;
    bool carrier;
    bool loopback;
    char kind[16]; /* rtnetlink link kind: "veth", "tun", "openvswitch",
                      ...; "" for a plain (physical) device */
};

/* 'netns' is a namespace file (/run/netns/NAME) or NULL for xapid's own.
 * Called once at start-up. */
struct xa_error *xa_nl_init(const char *netns) XA_WARN_UNUSED;
void xa_nl_fini(void);
/* The namespace file given to xa_nl_init, or NULL. */
const char *xa_nl_netns(void);

/* Every link; caller frees '*out'. */
struct xa_error *xa_nl_list_links(struct xa_nl_link **out,
                                  size_t *n) XA_WARN_UNUSED;
/* Removes every IPv4 address of 'ifname'. */
struct xa_error *xa_nl_flush_v4(const char *ifname) XA_WARN_UNUSED;
/* Netmask "255.255.255.0" -> 24; -1 when not a contiguous IPv4 mask. */
int xa_nl_prefix_len(const char *netmask);
/* Adds 'ip'/'prefix' to 'ifname' and sets the link up. */
struct xa_error *xa_nl_add_v4(const char *ifname, const char *ip,
                              int prefix) XA_WARN_UNUSED;
/* Replaces the IPv4 default route by one via 'gateway' on 'ifname'. */
struct xa_error *xa_nl_default_route(const char *ifname,
                                     const char *gateway) XA_WARN_UNUSED;
/* Waits up to 'timeout' seconds for 'ifname' to exist (a bridge's device
 * appears once ovs-vswitchd has caught up with the database). */
struct xa_error *xa_nl_wait_link(const char *ifname,
                                 double timeout) XA_WARN_UNUSED;
/* Sets the link up. */
struct xa_error *xa_nl_link_up(const char *ifname) XA_WARN_UNUSED;

#endif
