/* openflow.c - see openflow.h.  OpenFlow 1.3 (wire version 4), the
 * messages used: HELLO, ERROR, ECHO_REQUEST/REPLY, FLOW_MOD (add,
 * cookie-masked delete), MULTIPART flow stats (to list cookies) and
 * BARRIER.  All integers on the wire are big-endian. */
#include "network/openflow.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hmap.h"
#include "util.h"

#define OFP_VERSION 0x04

#define OFPT_HELLO           0
#define OFPT_ERROR           1
#define OFPT_ECHO_REQUEST    2
#define OFPT_ECHO_REPLY      3
#define OFPT_FLOW_MOD        14
#define OFPT_MULTIPART_REQ   18
#define OFPT_MULTIPART_REPLY 19
#define OFPT_BARRIER_REQUEST 20
#define OFPT_BARRIER_REPLY   21

#define OFPP_NORMAL   0xfffffffau
#define OFPP_ANY      0xffffffffu
#define OFPG_ANY      0xffffffffu
#define OFP_NO_BUFFER 0xffffffffu
#define OFPTT_ALL     0xff

#define OXM_CLASS_BASIC 0x8000u

#define TIMEOUT_S 5.0
#define MAX_MSG   65535

/* The top 16 bits of every cookie xapid makes ("XA"). */
#define COOKIE_TAG  0x5841000000000000ull
#define COOKIE_MASK 0xffff000000000000ull

/* --- encoding -------------------------------------------------------- */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool overflow;
};

static void
put_bytes(struct wbuf *w, const void *b, size_t n)
{
    if (w->len + n > w->cap) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + w->len, b, n);
    w->len += n;
}

static void
put8(struct wbuf *w, uint8_t v)
{
    put_bytes(w, &v, 1);
}

static void
put16(struct wbuf *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put_bytes(w, b, 2);
}

static void
put32(struct wbuf *w, uint32_t v)
{
    put16(w, (uint16_t)(v >> 16));
    put16(w, (uint16_t)v);
}

static void
put64(struct wbuf *w, uint64_t v)
{
    put32(w, (uint32_t)(v >> 32));
    put32(w, (uint32_t)v);
}

static void
put_zeros(struct wbuf *w, size_t n)
{
    static const uint8_t z[8];
    while (n > 0) {
        size_t k = n < sizeof z ? n : sizeof z;
        put_bytes(w, z, k);
        n -= k;
    }
}

static void
set16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint16_t
get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t
get32(const uint8_t *p)
{
    return ((uint32_t)get16(p) << 16) | get16(p + 2);
}

static uint64_t
get64(const uint8_t *p)
{
    return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

static void
put_header(struct wbuf *w, uint8_t type, uint32_t xid)
{
    put8(w, OFP_VERSION);
    put8(w, type);
    put16(w, 0); /* length: set when the message is complete */
    put32(w, xid);
}

static void
finish_header(struct wbuf *w)
{
    if (!w->overflow) {
        set16(w->p + 2, (uint16_t)w->len);
    }
}

/* One OXM TLV: class OPENFLOW_BASIC, no mask. */
static void
put_oxm(struct wbuf *w, unsigned field, const void *v, size_t n)
{
    put32(w, (OXM_CLASS_BASIC << 16) | (field << 9) | (uint32_t)n);
    put_bytes(w, v, n);
}

/* ofp_match of type OXM, padded to 8; fields in prerequisite order. */
static void
put_match(struct wbuf *w, const struct xa_of_flow *f)
{
    size_t start = w->len;
    put16(w, 1); /* OFPMT_OXM */
    put16(w, 0); /* length, set below */
    unsigned m = f ? f->fields : 0;
    uint8_t b[4];
    if (m & XA_OF_IN_PORT) {
        uint32_t v = htonl(f->in_port);
        put_oxm(w, 0, &v, 4);
    }
    if (m & XA_OF_ETH_SRC) {
        put_oxm(w, 4, f->eth_src, 6);
    }
    if (m & XA_OF_ETH_TYPE) {
        set16(b, f->eth_type);
        put_oxm(w, 5, b, 2);
    }
    if (m & XA_OF_IP_PROTO) {
        put_oxm(w, 10, &f->ip_proto, 1);
    }
    if (m & XA_OF_IPV4_SRC) {
        put_oxm(w, 11, f->ipv4_src, 4);
    }
    if (m & XA_OF_UDP_DST) {
        set16(b, f->udp_dst);
        put_oxm(w, 16, b, 2);
    }
    if (m & XA_OF_ARP_SPA) {
        put_oxm(w, 22, f->arp_spa, 4);
    }
    if (m & XA_OF_ARP_SHA) {
        put_oxm(w, 24, f->arp_sha, 6);
    }
    if (m & XA_OF_IPV6_SRC) {
        put_oxm(w, 26, f->ipv6_src, 16);
    }
    if (m & XA_OF_ICMPV6_TYPE) {
        put_oxm(w, 29, &f->icmpv6_type, 1);
    }
    if (m & XA_OF_ND_TARGET) {
        put_oxm(w, 31, f->nd_target, 16);
    }
    if (m & XA_OF_ND_SLL) {
        put_oxm(w, 32, f->nd_sll, 6);
    }
    if (w->overflow) {
        return;
    }
    size_t mlen = w->len - start;
    set16(w->p + start + 2, (uint16_t)mlen);
    put_zeros(w, (8 - mlen % 8) % 8);
}

size_t
xa_of_encode_flow_mod(uint8_t *buf, size_t cap, uint32_t xid, int command,
                      uint64_t cookie, uint64_t cookie_mask,
                      const struct xa_of_flow *f)
{
    struct wbuf w = {buf, 0, cap, false};
    bool add = command == XA_OF_FLOW_MOD_ADD;
    put_header(&w, OFPT_FLOW_MOD, xid);
    put64(&w, cookie);
    put64(&w, add ? 0 : cookie_mask);
    put8(&w, add ? 0 : OFPTT_ALL);
    put8(&w, (uint8_t)command);
    put16(&w, 0); /* idle_timeout */
    put16(&w, 0); /* hard_timeout */
    put16(&w, add && f ? f->priority : 0);
    put32(&w, OFP_NO_BUFFER);
    put32(&w, OFPP_ANY);
    put32(&w, OFPG_ANY);
    put16(&w, 0); /* flags */
    put_zeros(&w, 2);
    put_match(&w, add ? f : NULL);
    if (add && f && f->normal) {
        /* APPLY_ACTIONS [OUTPUT:NORMAL] */
        put16(&w, 4);
        put16(&w, 24);
        put_zeros(&w, 4);
        put16(&w, 0); /* OFPAT_OUTPUT */
        put16(&w, 16);
        put32(&w, OFPP_NORMAL);
        put16(&w, 0); /* max_len */
        put_zeros(&w, 6);
    }
    finish_header(&w);
    return w.overflow ? 0 : w.len;
}

/* A flow stats request for every table, filtered by cookie. */
static size_t
encode_flow_stats_request(uint8_t *buf, size_t cap, uint32_t xid,
                          uint64_t cookie, uint64_t mask)
{
    struct wbuf w = {buf, 0, cap, false};
    put_header(&w, OFPT_MULTIPART_REQ, xid);
    put16(&w, 1); /* OFPMP_FLOW */
    put16(&w, 0);
    put_zeros(&w, 4);
    put8(&w, OFPTT_ALL);
    put_zeros(&w, 3);
    put32(&w, OFPP_ANY);
    put32(&w, OFPG_ANY);
    put_zeros(&w, 4);
    put64(&w, cookie);
    put64(&w, mask);
    put_match(&w, NULL);
    finish_header(&w);
    return w.overflow ? 0 : w.len;
}

/* --- the rules of a VIF ---------------------------------------------- */

uint64_t
xa_of_cookie(const char *vif_uuid)
{
    /* The first 48 bits of the uuid: its first 12 hex digits. */
    uint64_t v = 0;
    int digits = 0;
    for (const char *p = vif_uuid; *p && digits < 12; p++) {
        int d = *p >= '0' && *p <= '9'   ? *p - '0'
                : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
                : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
                                         : -1;
        if (d >= 0) {
            v = (v << 4) | (uint64_t)d;
            digits++;
        }
    }
    return COOKIE_TAG | v;
}

static bool
parse_mac(const char *s, uint8_t mac[6])
{
    unsigned b[6];
    char tail;
    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3],
               &b[4], &b[5], &tail) != 6) {
        return false;
    }
    for (int i = 0; i < 6; i++) {
        mac[i] = (uint8_t)b[i];
    }
    return true;
}

struct flows {
    struct xa_of_flow *v;
    size_t n, cap;
    uint32_t port;
    uint8_t mac[6];
};

/* A new rule on the VIF's port; 'from_mac': only frames sourced from the
 * VIF's MAC. */
static struct xa_of_flow *
add(struct flows *fl, uint16_t priority, bool normal, bool from_mac)
{
    if (fl->n == fl->cap) {
        fl->cap = fl->cap ? fl->cap * 2 : 16;
        fl->v = xa_realloc(fl->v, fl->cap * sizeof *fl->v);
    }
    struct xa_of_flow *f = &fl->v[fl->n++];
    memset(f, 0, sizeof *f);
    f->fields = XA_OF_IN_PORT;
    f->in_port = fl->port;
    f->priority = priority;
    f->normal = normal;
    if (from_mac) {
        f->fields |= XA_OF_ETH_SRC;
        memcpy(f->eth_src, fl->mac, 6);
    }
    return f;
}

static void
set_proto(struct xa_of_flow *f, uint16_t eth_type, int ip_proto)
{
    f->fields |= XA_OF_ETH_TYPE;
    f->eth_type = eth_type;
    if (ip_proto >= 0) {
        f->fields |= XA_OF_IP_PROTO;
        f->ip_proto = (uint8_t)ip_proto;
    }
}

static void
set_icmpv6(struct xa_of_flow *f, uint8_t type)
{
    set_proto(f, 0x86dd, 58);
    f->fields |= XA_OF_ICMPV6_TYPE;
    f->icmpv6_type = type;
}

/* The rules xapi's setup-vif-rules installs for a locked VIF. */
static void
locked_flows(struct flows *fl, const uint8_t (*v4)[4], size_t n4,
             const uint8_t (*v6)[16], size_t n6)
{
    /* DHCP requests (to UDP port 67), whatever the addresses. */
    struct xa_of_flow *f = add(fl, 8000, true, true);
    set_proto(f, 0x0800, 17);
    f->fields |= XA_OF_UDP_DST;
    f->udp_dst = 67;
    /* ARP probes (sender address 0.0.0.0) from the VIF's own MAC. */
    f = add(fl, 7000, true, true);
    set_proto(f, 0x0806, -1);
    f->fields |= XA_OF_ARP_SHA | XA_OF_ARP_SPA;
    memcpy(f->arp_sha, fl->mac, 6);
    for (size_t i = 0; i < n4; i++) {
        /* ARP for an allowed address, and its IPv4 traffic. */
        f = add(fl, 7000, true, true);
        set_proto(f, 0x0806, -1);
        f->fields |= XA_OF_ARP_SHA | XA_OF_ARP_SPA;
        memcpy(f->arp_sha, fl->mac, 6);
        memcpy(f->arp_spa, v4[i], 4);
        f = add(fl, 6000, true, true);
        set_proto(f, 0x0800, -1);
        f->fields |= XA_OF_IPV4_SRC;
        memcpy(f->ipv4_src, v4[i], 4);
    }
    for (size_t i = 0; i < n6; i++) {
        /* Neighbour solicitation and advertisement for the address. */
        f = add(fl, 8000, true, true);
        set_icmpv6(f, 135);
        f->fields |= XA_OF_IPV6_SRC | XA_OF_ND_SLL;
        memcpy(f->ipv6_src, v6[i], 16);
        memcpy(f->nd_sll, fl->mac, 6);
        f = add(fl, 8000, true, true);
        set_icmpv6(f, 136);
        f->fields |= XA_OF_IPV6_SRC | XA_OF_ND_TARGET;
        memcpy(f->ipv6_src, v6[i], 16);
        memcpy(f->nd_target, v6[i], 16);
        /* ICMPv6, TCP and UDP from it. */
        static const int protos[] = {58, 6, 17};
        for (size_t k = 0; k < 3; k++) {
            f = add(fl, 5000, true, true);
            set_proto(f, 0x86dd, protos[k]);
            f->fields |= XA_OF_IPV6_SRC;
            memcpy(f->ipv6_src, v6[i], 16);
        }
    }
    /* Any other neighbour discovery, and router or redirect messages. */
    set_icmpv6(add(fl, 7000, false, false), 135);
    set_icmpv6(add(fl, 7000, false, false), 136);
    static const uint8_t router[] = {134, 137, 146, 147, 151, 152, 153};
    for (size_t k = 0; k < sizeof router; k++) {
        set_icmpv6(add(fl, 6000, false, false), router[k]);
    }
}

struct xa_error *
xa_of_vif_flows(const char *mode, uint32_t ofport, const char *mac,
                const char *const *ipv4, const char *const *ipv6,
                struct xa_of_flow **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    bool locked = strcmp(mode, "locked") == 0;
    if (!locked && strcmp(mode, "disabled") != 0) {
        return NULL;
    }
    struct flows fl = {.port = ofport};
    size_t n4 = 0, n6 = 0;
    while (ipv4 && ipv4[n4]) {
        n4++;
    }
    while (ipv6 && ipv6[n6]) {
        n6++;
    }
    uint8_t(*v4)[4] = xa_malloc((n4 + 1) * sizeof *v4);
    uint8_t(*v6)[16] = xa_malloc((n6 + 1) * sizeof *v6);
    struct xa_error *err = NULL;
    if (locked && !parse_mac(mac, fl.mac)) {
        err = xa_error_new("INVALID_VALUE", 2, "MAC", mac);
    }
    for (size_t i = 0; i < n4 && !err; i++) {
        if (inet_pton(AF_INET, ipv4[i], v4[i]) != 1) {
            err = xa_error_new("INVALID_VALUE", 2, "ipv4_allowed", ipv4[i]);
        }
    }
    for (size_t i = 0; i < n6 && !err; i++) {
        if (inet_pton(AF_INET6, ipv6[i], v6[i]) != 1) {
            err = xa_error_new("INVALID_VALUE", 2, "ipv6_allowed", ipv6[i]);
        }
    }
    if (!err) {
        if (locked) {
            locked_flows(&fl, (const uint8_t(*)[4])v4, n4,
                         (const uint8_t(*)[16])v6, n6);
        }
        /* Everything not let through above. */
        add(&fl, 4000, false, false);
        *out = fl.v;
        *n_out = fl.n;
    } else {
        free(fl.v);
    }
    free(v4);
    free(v6);
    return err;
}

/* --- the connection -------------------------------------------------- */

struct conn {
    int fd;
    uint32_t next_xid;
    uint8_t *msg; /* the last message received (header included) */
};

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xa_hmap conns; /* socket path -> struct conn */

static double
now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
conn_free(void *p)
{
    struct conn *c = p;
    if (c) {
        if (c->fd >= 0) {
            close(c->fd);
        }
        free(c->msg);
        free(c);
    }
}

static struct xa_error *
io_error(const char *sock, const char *what, int e)
{
    return xa_error_internal("Open vSwitch bridge socket %s: %s%s%s", sock,
                             what, e ? ": " : "", e ? strerror(e) : "");
}

/* Waits for 'events' until 'deadline'; false on timeout or error. */
static bool
wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        double left = deadline - now_mono();
        if (left <= 0) {
            return false;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0) {
            return true;
        }
        if (r < 0 && errno != EINTR) {
            return false;
        }
    }
}

static struct xa_error *
send_all(const char *sock, struct conn *c, const uint8_t *b, size_t n,
         double deadline)
{
    while (n > 0) {
        ssize_t k = send(c->fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            b += k;
            n -= (size_t)k;
        } else if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!wait_fd(c->fd, POLLOUT, deadline)) {
                return io_error(sock, "send timed out", 0);
            }
        } else {
            return io_error(sock, "send", errno);
        }
    }
    return NULL;
}

static struct xa_error *
recv_exact(const char *sock, struct conn *c, uint8_t *b, size_t n,
           double deadline)
{
    while (n > 0) {
        ssize_t k = recv(c->fd, b, n, MSG_DONTWAIT);
        if (k > 0) {
            b += k;
            n -= (size_t)k;
        } else if (k == 0) {
            return io_error(sock, "closed by the switch", 0);
        } else if (errno == EAGAIN || errno == EINTR) {
            if (!wait_fd(c->fd, POLLIN, deadline)) {
                return io_error(sock, "no answer within 5 s", 0);
            }
        } else {
            return io_error(sock, "recv", errno);
        }
    }
    return NULL;
}

/* Reads one message into c->msg, answering echo requests on the way. */
static struct xa_error *
recv_msg(const char *sock, struct conn *c, double deadline)
{
    for (;;) {
        uint8_t h[8];
        struct xa_error *err = recv_exact(sock, c, h, 8, deadline);
        if (err) {
            return err;
        }
        uint16_t len = get16(h + 2);
        if (len < 8) {
            return io_error(sock, "bad message length", 0);
        }
        free(c->msg);
        c->msg = xa_malloc(len);
        memcpy(c->msg, h, 8);
        err = recv_exact(sock, c, c->msg + 8, len - 8u, deadline);
        if (err) {
            return err;
        }
        if (h[1] != OFPT_ECHO_REQUEST) {
            return NULL;
        }
        c->msg[0] = OFP_VERSION;
        c->msg[1] = OFPT_ECHO_REPLY;
        err = send_all(sock, c, c->msg, len, deadline);
        if (err) {
            return err;
        }
    }
}

static struct xa_error *
conn_open(const char *sock, struct conn **out)
{
    *out = NULL;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock) >= sizeof sa.sun_path) {
        return io_error(sock, "path too long", 0);
    }
    strcpy(sa.sun_path, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return io_error(sock, "socket", errno);
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        return io_error(sock, "not reachable", e);
    }
    struct conn *c = xa_malloc(sizeof *c);
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->next_xid = 1;
    double deadline = now_mono() + TIMEOUT_S;
    uint8_t hello[8] = {OFP_VERSION, OFPT_HELLO, 0, 8, 0, 0, 0, 0};
    struct xa_error *err = send_all(sock, c, hello, sizeof hello, deadline);
    if (!err) {
        err = recv_msg(sock, c, deadline);
    }
    if (!err && (c->msg[1] != OFPT_HELLO || c->msg[0] < OFP_VERSION)) {
        err = io_error(sock, "the switch does not speak OpenFlow 1.3", 0);
    }
    if (err) {
        conn_free(c);
        return err;
    }
    *out = c;
    return NULL;
}

/* An ERROR message as an error naming its type and code. */
static struct xa_error *
of_error(const char *sock, const struct conn *c)
{
    uint16_t len = get16(c->msg + 2);
    unsigned type = len >= 12 ? get16(c->msg + 8) : 0;
    unsigned code = len >= 12 ? get16(c->msg + 10) : 0;
    return xa_error_internal("Open vSwitch bridge socket %s: the switch "
                             "refused a request (OpenFlow error type %u "
                             "code %u)",
                             sock, type, code);
}

/* Sends 'n' encoded messages ('msgs' back to back, 'len' bytes), then a
 * barrier, and reads until its reply.  Multipart replies are handed to
 * 'on_reply' (may be NULL). */
static struct xa_error *
exchange(const char *sock, struct conn *c, const uint8_t *msgs, size_t len,
         void (*on_reply)(const uint8_t *msg, void *ctx), void *ctx)
{
    double deadline = now_mono() + TIMEOUT_S;
    struct xa_error *err = send_all(sock, c, msgs, len, deadline);
    uint32_t bxid = c->next_xid++;
    uint8_t barrier[8] = {OFP_VERSION,
                          OFPT_BARRIER_REQUEST,
                          0,
                          8,
                          (uint8_t)(bxid >> 24),
                          (uint8_t)(bxid >> 16),
                          (uint8_t)(bxid >> 8),
                          (uint8_t)bxid};
    if (!err) {
        err = send_all(sock, c, barrier, sizeof barrier, deadline);
    }
    struct xa_error *refused = NULL;
    while (!err) {
        err = recv_msg(sock, c, deadline);
        if (err) {
            break;
        }
        uint8_t type = c->msg[1];
        if (type == OFPT_ERROR && !refused) {
            refused = of_error(sock, c);
        } else if (type == OFPT_MULTIPART_REPLY && on_reply) {
            on_reply(c->msg, ctx);
        } else if (type == OFPT_BARRIER_REPLY && get32(c->msg + 4) == bxid) {
            break;
        }
    }
    if (err) {
        xa_error_free(refused);
        return err;
    }
    return refused;
}

/* Runs one exchange on the cached connection to 'sock', opening it (and
 * retrying once on a fresh one when a cached connection turns out dead:
 * the switch restarted or hung up on an idle client).  Messages are
 * encoded by 'build' with the connection's xids. */
typedef size_t (*build_fn)(struct conn *c, uint8_t **out, void *ctx);

static struct xa_error *
run(const char *sock, build_fn build, void *bctx,
    void (*on_reply)(const uint8_t *msg, void *ctx), void *rctx)
{
    pthread_mutex_lock(&conns_lock);
    struct xa_error *err = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct conn *c = xa_hmap_get(&conns, sock);
        bool cached = c != NULL;
        if (!c) {
            err = conn_open(sock, &c);
            if (err) {
                break;
            }
            xa_hmap_put(&conns, sock, c);
        }
        uint8_t *msgs = NULL;
        size_t len = build(c, &msgs, bctx);
        err = exchange(sock, c, msgs, len, on_reply, rctx);
        free(msgs);
        if (!err || strstr(err->params[0], "refused a request")) {
            break;
        }
        conn_free(xa_hmap_remove(&conns, sock));
        if (!cached) {
            break;
        }
        xa_error_free(err);
        err = NULL;
    }
    pthread_mutex_unlock(&conns_lock);
    return err;
}

/* --- replace, prune -------------------------------------------------- */

struct replace_ctx {
    uint64_t cookie;
    const struct xa_of_flow *flows;
    size_t n;
};

static size_t
build_replace(struct conn *c, uint8_t **out, void *ctx_)
{
    const struct replace_ctx *r = ctx_;
    size_t cap = (r->n + 1) * 256, len = 0;
    uint8_t *b = xa_malloc(cap);
    len += xa_of_encode_flow_mod(b, cap, c->next_xid++, XA_OF_FLOW_MOD_DELETE,
                                 r->cookie, ~0ull, NULL);
    for (size_t i = 0; i < r->n; i++) {
        len += xa_of_encode_flow_mod(b + len, cap - len, c->next_xid++,
                                     XA_OF_FLOW_MOD_ADD, r->cookie, 0,
                                     &r->flows[i]);
    }
    *out = b;
    return len;
}

struct xa_error *
xa_of_replace(const char *sock, uint64_t cookie, const struct xa_of_flow *flows,
              size_t n)
{
    struct replace_ctx r = {cookie, flows, n};
    return run(sock, build_replace, &r, NULL, NULL);
}

static size_t
build_stats(struct conn *c, uint8_t **out, void *ctx)
{
    XA_UNUSED(ctx);
    *out = xa_malloc(64);
    return encode_flow_stats_request(*out, 64, c->next_xid++, COOKIE_TAG,
                                     COOKIE_MASK);
}

struct cookies {
    uint64_t *v;
    size_t n;
};

static void
collect_cookies(const uint8_t *msg, void *ctx)
{
    struct cookies *cs = ctx;
    size_t len = get16(msg + 2);
    if (len < 16 || get16(msg + 8) != 1 /* OFPMP_FLOW */) {
        return;
    }
    for (size_t off = 16; off + 32 <= len;) {
        size_t elen = get16(msg + off);
        if (elen < 32 || off + elen > len) {
            break;
        }
        cs->v = xa_realloc(cs->v, (cs->n + 1) * sizeof *cs->v);
        cs->v[cs->n++] = get64(msg + off + 24);
        off += elen;
    }
}

static bool
kept(uint64_t c, const uint64_t *keep, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (keep[i] == c) {
            return true;
        }
    }
    return false;
}

struct xa_error *
xa_of_prune(const char *sock, const uint64_t *keep, size_t n_keep)
{
    struct cookies cs = {NULL, 0};
    struct xa_error *err = run(sock, build_stats, NULL, collect_cookies, &cs);
    for (size_t i = 0; i < cs.n && !err; i++) {
        if ((cs.v[i] & COOKIE_MASK) != COOKIE_TAG ||
            kept(cs.v[i], keep, n_keep) || kept(cs.v[i], cs.v, i)) {
            continue;
        }
        err = xa_of_replace(sock, cs.v[i], NULL, 0);
    }
    free(cs.v);
    return err;
}

void
xa_of_shutdown(void)
{
    pthread_mutex_lock(&conns_lock);
    xa_hmap_clear(&conns, conn_free);
    pthread_mutex_unlock(&conns_lock);
}
