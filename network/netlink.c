/* netlink.c - see netlink.h. */
#include "network/netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int nl_fd = -1;
static unsigned seq;
static char *netns_path;

/* Opens the netlink socket inside the namespace: setns() moves only the
 * calling thread, so a short-lived thread does it and the socket it
 * creates stays bound to that namespace for good. */
static void *
open_in_netns(void *arg)
{
    int *fd = arg;
    int ns = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
        *fd = -errno;
    } else {
        *fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (*fd < 0) {
            *fd = -errno;
        }
    }
    if (ns >= 0) {
        close(ns);
    }
    return NULL;
}

struct xa_error *
xa_nl_init(const char *netns)
{
    int fd;
    free(netns_path);
    netns_path = netns && *netns ? xa_strdup(netns) : NULL;
    if (netns_path) {
        pthread_t th;
        pthread_create(&th, NULL, open_in_netns, &fd);
        pthread_join(th, NULL);
    } else {
        fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        fd = fd < 0 ? -errno : fd;
    }
    if (fd < 0) {
        return xa_error_internal("rtnetlink%s%s: %s", netns ? " in " : "",
                                 netns ? netns : "", strerror(-fd));
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    nl_fd = fd;
    return NULL;
}

void
xa_nl_fini(void)
{
    if (nl_fd >= 0) {
        close(nl_fd);
        nl_fd = -1;
    }
    free(netns_path);
    netns_path = NULL;
}

const char *
xa_nl_netns(void)
{
    return netns_path;
}

struct req {
    struct nlmsghdr h;
    union {
        struct ifinfomsg ifi;
        struct ifaddrmsg ifa;
        struct rtmsg rt;
    } u;
    char attrs[256];
};

static void
add_attr(struct req *r, unsigned short type, const void *data, size_t len)
{
    struct rtattr *a =
        (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));
    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(a), data, len);
    r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Sends 'r' and reads the answer: for dumps, 'each' gets every message;
 * otherwise the ACK decides.  Under 'lock'. */
static struct xa_error *
talk(struct req *r, void (*each)(struct nlmsghdr *h, void *ctx), void *ctx)
{
    if (nl_fd < 0) {
        return xa_error_internal("rtnetlink is not open");
    }
    r->h.nlmsg_seq = ++seq;
    r->h.nlmsg_flags |= NLM_F_REQUEST | (each ? 0 : NLM_F_ACK);
    if (send(nl_fd, r, r->h.nlmsg_len, 0) < 0) {
        return xa_error_internal("rtnetlink send: %s", strerror(errno));
    }
    static char buf[65536];
    for (;;) {
        ssize_t n = recv(nl_fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return xa_error_internal("rtnetlink recv: %s", strerror(errno));
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf;
             NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq) {
                continue;
            }
            if (h->nlmsg_type == NLMSG_DONE) {
                return NULL;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *e = NLMSG_DATA(h);
                if (e->error == 0) {
                    return NULL;
                }
                return xa_error_internal("%s", strerror(-e->error));
            }
            if (each) {
                each(h, ctx);
            }
        }
    }
}

struct link_list {
    struct xa_nl_link *v;
    size_t n;
};

static void
one_link(struct nlmsghdr *h, void *ctx)
{
    struct link_list *l = ctx;
    if (h->nlmsg_type != RTM_NEWLINK) {
        return;
    }
    struct ifinfomsg *ifi = NLMSG_DATA(h);
    struct xa_nl_link k;
    memset(&k, 0, sizeof k);
    k.index = ifi->ifi_index;
    k.loopback = ifi->ifi_type == ARPHRD_LOOPBACK;
    k.carrier = (ifi->ifi_flags & IFF_LOWER_UP) != 0;
    int len = (int)IFLA_PAYLOAD(h);
    for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len);
         a = RTA_NEXT(a, len)) {
        if (a->rta_type == IFLA_IFNAME) {
            snprintf(k.name, sizeof k.name, "%s", (char *)RTA_DATA(a));
        } else if (a->rta_type == IFLA_MTU) {
            k.mtu = *(unsigned *)RTA_DATA(a);
        } else if (a->rta_type == IFLA_ADDRESS && RTA_PAYLOAD(a) == 6) {
            unsigned char *m = RTA_DATA(a);
            snprintf(k.mac, sizeof k.mac, "%02x:%02x:%02x:%02x:%02x:%02x", m[0],
                     m[1], m[2], m[3], m[4], m[5]);
        } else if (a->rta_type == IFLA_LINKINFO) {
            int ilen = (int)RTA_PAYLOAD(a);
            for (struct rtattr *b = RTA_DATA(a); RTA_OK(b, ilen);
                 b = RTA_NEXT(b, ilen)) {
                if (b->rta_type == IFLA_INFO_KIND) {
                    snprintf(k.kind, sizeof k.kind, "%s", (char *)RTA_DATA(b));
                }
            }
        }
    }
    l->v = xa_realloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = k;
}

struct xa_error *
xa_nl_list_links(struct xa_nl_link **out, size_t *n)
{
    struct req r;
    memset(&r, 0, sizeof r);
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof r.u.ifi);
    r.h.nlmsg_type = RTM_GETLINK;
    r.h.nlmsg_flags = NLM_F_DUMP;
    r.u.ifi.ifi_family = AF_UNSPEC;
    struct link_list l = {NULL, 0};
    pthread_mutex_lock(&lock);
    struct xa_error *err = talk(&r, one_link, &l);
    pthread_mutex_unlock(&lock);
    if (err) {
        free(l.v);
        return err;
    }
    *out = l.v;
    *n = l.n;
    return NULL;
}

/* The index of 'ifname' in the namespace (if_nametoindex would look in
 * xapid's own namespace). */
static struct xa_error *
index_of(const char *ifname, int *index)
{
    struct xa_nl_link *v = NULL;
    size_t n = 0;
    struct xa_error *err = xa_nl_list_links(&v, &n);
    *index = 0;
    for (size_t i = 0; !err && i < n; i++) {
        if (strcmp(v[i].name, ifname) == 0) {
            *index = v[i].index;
        }
    }
    free(v);
    if (!err && !*index) {
        err = xa_error_internal("no network device %s", ifname);
    }
    return err;
}

struct addr_list {
    int index;
    struct {
        unsigned char prefix;
        struct in_addr a;
    } v[64];
    size_t n;
};

static void
one_addr(struct nlmsghdr *h, void *ctx)
{
    struct addr_list *l = ctx;
    struct ifaddrmsg *ifa = NLMSG_DATA(h);
    if (h->nlmsg_type != RTM_NEWADDR || (int)ifa->ifa_index != l->index ||
        ifa->ifa_family != AF_INET || l->n >= 64) {
        return;
    }
    int len = (int)IFA_PAYLOAD(h);
    for (struct rtattr *a = IFA_RTA(ifa); RTA_OK(a, len);
         a = RTA_NEXT(a, len)) {
        if (a->rta_type == IFA_LOCAL) {
            l->v[l->n].prefix = ifa->ifa_prefixlen;
            memcpy(&l->v[l->n].a, RTA_DATA(a), 4);
            l->n++;
        }
    }
}

static struct xa_error *
addr_change(int type, int flags, int index, struct in_addr a, int prefix)
{
    struct req r;
    memset(&r, 0, sizeof r);
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof r.u.ifa);
    r.h.nlmsg_type = (unsigned short)type;
    r.h.nlmsg_flags = (unsigned short)flags;
    r.u.ifa.ifa_family = AF_INET;
    r.u.ifa.ifa_prefixlen = (unsigned char)prefix;
    r.u.ifa.ifa_index = (unsigned)index;
    add_attr(&r, IFA_LOCAL, &a, 4);
    add_attr(&r, IFA_ADDRESS, &a, 4);
    return talk(&r, NULL, NULL);
}

struct xa_error *
xa_nl_flush_v4(const char *ifname)
{
    struct addr_list l;
    memset(&l, 0, sizeof l);
    struct xa_error *err = index_of(ifname, &l.index);
    if (err) {
        return err;
    }
    struct req r;
    memset(&r, 0, sizeof r);
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof r.u.ifa);
    r.h.nlmsg_type = RTM_GETADDR;
    r.h.nlmsg_flags = NLM_F_DUMP;
    r.u.ifa.ifa_family = AF_INET;
    pthread_mutex_lock(&lock);
    err = talk(&r, one_addr, &l);
    for (size_t i = 0; !err && i < l.n; i++) {
        err = addr_change(RTM_DELADDR, 0, l.index, l.v[i].a, l.v[i].prefix);
    }
    pthread_mutex_unlock(&lock);
    return err;
}

static struct xa_error *
link_up_index(int index)
{
    struct req r;
    memset(&r, 0, sizeof r);
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof r.u.ifi);
    r.h.nlmsg_type = RTM_NEWLINK;
    r.u.ifi.ifi_family = AF_UNSPEC;
    r.u.ifi.ifi_index = index;
    r.u.ifi.ifi_flags = IFF_UP;
    r.u.ifi.ifi_change = IFF_UP;
    return talk(&r, NULL, NULL);
}

struct xa_error *
xa_nl_link_up(const char *ifname)
{
    int index;
    struct xa_error *err = index_of(ifname, &index);
    if (!err) {
        pthread_mutex_lock(&lock);
        err = link_up_index(index);
        pthread_mutex_unlock(&lock);
    }
    return err;
}

struct xa_error *
xa_nl_add_v4(const char *ifname, const char *ip, int prefix)
{
    struct in_addr a;
    if (inet_pton(AF_INET, ip, &a) != 1 || prefix < 0 || prefix > 32) {
        return xa_error_invalid_value("IP", ip);
    }
    int index;
    struct xa_error *err = index_of(ifname, &index);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    err = link_up_index(index);
    if (!err) {
        err = addr_change(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, index, a,
                          prefix);
    }
    pthread_mutex_unlock(&lock);
    return err;
}

struct xa_error *
xa_nl_default_route(const char *ifname, const char *gateway)
{
    struct in_addr gw;
    if (inet_pton(AF_INET, gateway, &gw) != 1) {
        return xa_error_invalid_value("gateway", gateway);
    }
    int index;
    struct xa_error *err = index_of(ifname, &index);
    if (err) {
        return err;
    }
    struct req r;
    memset(&r, 0, sizeof r);
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof r.u.rt);
    r.h.nlmsg_type = RTM_NEWROUTE;
    r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
    r.u.rt.rtm_family = AF_INET;
    r.u.rt.rtm_table = RT_TABLE_MAIN;
    r.u.rt.rtm_protocol = RTPROT_STATIC;
    r.u.rt.rtm_scope = RT_SCOPE_UNIVERSE;
    r.u.rt.rtm_type = RTN_UNICAST;
    add_attr(&r, RTA_GATEWAY, &gw, 4);
    add_attr(&r, RTA_OIF, &index, sizeof index);
    pthread_mutex_lock(&lock);
    err = talk(&r, NULL, NULL);
    pthread_mutex_unlock(&lock);
    return err;
}

struct xa_error *
xa_nl_wait_link(const char *ifname, double timeout)
{
    for (double waited = 0;; waited += 0.05) {
        int index;
        struct xa_error *err = index_of(ifname, &index);
        if (!err || waited >= timeout) {
            return err;
        }
        xa_error_free(err);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int
xa_nl_prefix_len(const char *mask)
{
    struct in_addr a;
    if (inet_pton(AF_INET, mask, &a) != 1) {
        return -1;
    }
    uint32_t m = ntohl(a.s_addr);
    int n = 0;
    while (n < 32 && (m & (0x80000000u >> n))) {
        n++;
    }
    return (n == 32 || (m << n) == 0) ? n : -1;
}
