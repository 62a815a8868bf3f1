/* daemon.c - the HA daemon of one host: liveness from two channels,
 * the pool's agreement on who is alive, fencing and failover.
 *
 * Armed while pool.ha_enabled is true in this host's copy of the database.
 * Every interval (a tenth of configuration:timeout, T) a host
 *   - sends every other host a UDP heartbeat on the HTTPS port number:
 *     "XAHA1 <host uuid> <seq> <view>" and an HMAC-SHA256 of that text
 *     keyed by the pool secret; a receiver drops packets that fail the
 *     HMAC or whose seq is not above the last one it took from that host
 *     (replays);
 *   - writes its slot of the statefile (block 1 + its index, hosts ordered
 *     by uuid) and reads every slot and the decision (block 0).
 * <view> is a bitmap of the hosts it heard over the network within T (at
 * arming all are presumed heard); a slot also carries the hosts really
 * heard since arming, which pool.enable_ha checks while it holds
 * decisions back.
 *
 * Agreement: one host decides - the master (the last decision's, not a
 * host's own database's) while anyone can see it alive, else the
 * lowest-uuid host alive.  It takes the largest group of hosts
 * that hear each other (ties: the one with the master, then the lowest
 * index) as the live set and writes it with a new master (the old one if
 * live, else the lowest-uuid live host) into the decision block.  A host
 * left out of a decision made after it armed fences; a host that can reach
 * neither the statefile nor a majority over the network for T/2 fences on
 * its own.  The survivors act only on hosts excluded AND either silent on
 * the statefile for T or showing their fence acknowledgement, so a VM never
 * runs on two hosts.
 *
 * Fencing destroys every domain, acknowledges in the statefile when it
 * can, and ends the process (xapi's HA reboots the host); restarted, the
 * host rejoins as a member of whichever master the decision names.
 *
 * Failover, on the master: VMs of failed hosts become Halted, then the
 * protected ones ("restart" first, then "best-effort", each by VM.order)
 * start again on live hosts with room, through the master's own API so
 * that placement and forwarding apply. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/message.h"
#include "api/vm.h"
#include "ha/ha.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "pool/pool-internal.h"
#include "self.h"
#include "util.h"

#define LOG       "ha"
#define BLOCK     4096
#define MAX_HOSTS 63

struct peer {
    char *ref, *uuid, *address;
    double net_last; /* monotonic time of the last good heartbeat */
    uint64_t net_seq;
    uint64_t net_view;
    uint64_t sf_seq; /* last seq seen in its slot */
    double sf_last;  /* when that seq last changed */
    uint64_t sf_view;
    uint64_t sf_heard;  /* hosts it has heard over the network since it armed */
    uint64_t sf_fenced; /* decision generation it fenced for, 0: none */
    bool sf_seen;       /* its slot changed since we armed */
};

struct restart {
    char *vm;
    int rank;
    int64_t order;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool started, stop;
    char *bind;
    int port;
    bool disabled;  /* host.emergency_ha_disable */
    bool switching; /* a role change runs on its helper thread */
    bool hold;      /* pool.enable_ha checks the hosts: decide nothing */
    uint64_t sees[MAX_HOSTS]; /* per host, whom it has heard (lock) */
    bool restarting;          /* restarts run on their helper thread */
    double prevent_until;
    /* armed state: the thread's own */
    bool armed;
    double timeout, interval;
    size_t n;
    int self;
    struct peer *peers;
    char *statefile;
    char *path;
    void *buf;
    int sock;
    uint64_t seq;
    double armed_at, sf_ok_at;
    bool sf_warned;
    uint64_t dec_gen, dec_live, armed_gen;
    int dec_master;
    uint64_t failed_over;
    struct restart *pending;
    size_t n_pending;
    double next_plan;
} ha = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .sock = -1,
    .dec_master = -1,
};

static bool
bit(uint64_t set, int i)
{
    return i >= 0 && i < 64 && (set >> i) & 1;
}

static uint64_t
one(int i)
{
    return (uint64_t)1 << i;
}

/* --- what the database says ------------------------------------------------*/

struct ha_conf {
    bool enabled;
    double timeout;
    char *statefile;
    char *master;
};

static void
read_conf(struct ha_conf *c)
{
    memset(c, 0, sizeof *c);
    struct xa_txn *t = xa_db_begin_read();
    char *p = xa_api_pool(t);
    if (p) {
        c->enabled =
            xa_api_bool(t, &xa_cls_pool, p, XA_F(xa_cls_pool, "ha_enabled"));
        const char *to =
            xa_api_map_get(t, &xa_cls_pool, p,
                           XA_F(xa_cls_pool, "ha_configuration"), "timeout");
        c->timeout = to ? strtod(to, NULL) : 0;
        if (c->timeout <= 0) {
            c->timeout = XA_HA_DEFAULT_TIMEOUT;
        }
        const struct xa_value *sf = xa_db_peek_field(
            t, &xa_cls_pool, p, XA_F(xa_cls_pool, "ha_statefiles"));
        if (sf && sf->kind == XA_ARRAY && sf->u.arr.n) {
            c->statefile = xa_strdup(xa_value_str(sf->u.arr.items[0]));
        }
        c->master = xa_strdup(
            xa_api_str(t, &xa_cls_pool, p, XA_F(xa_cls_pool, "master")));
    }
    free(p);
    xa_db_end(t);
}

static void
free_conf(struct ha_conf *c)
{
    free(c->statefile);
    free(c->master);
}

static int
by_uuid(const void *a, const void *b)
{
    return strcmp(((const struct peer *)a)->uuid,
                  ((const struct peer *)b)->uuid);
}

static void
read_hosts(void)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    size_t n = hosts ? hosts->u.arr.n : 0;
    if (n > MAX_HOSTS) {
        n = MAX_HOSTS;
    }
    ha.peers = xa_calloc(n ? n : 1, sizeof *ha.peers);
    for (size_t i = 0; i < n; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        ha.peers[i].ref = xa_strdup(h);
        ha.peers[i].uuid = xa_strdup(
            xa_api_str(t, &xa_cls_host, h, XA_F(xa_cls_host, "uuid")));
        ha.peers[i].address = xa_strdup(
            xa_api_str(t, &xa_cls_host, h, XA_F(xa_cls_host, "address")));
    }
    xa_value_unref(hosts);
    xa_db_end(t);
    qsort(ha.peers, n, sizeof *ha.peers, by_uuid);
    ha.n = n;
    ha.self = -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ha.peers[i].ref, xa_self_host()) == 0) {
            ha.self = (int)i;
        }
    }
}

static int
index_of_ref(const char *ref)
{
    for (size_t i = 0; ref && i < ha.n; i++) {
        if (strcmp(ha.peers[i].ref, ref) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static int
index_of_uuid(const char *uuid)
{
    for (size_t i = 0; i < ha.n; i++) {
        if (strcmp(ha.peers[i].uuid, uuid) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* --- the statefile ---------------------------------------------------------*/

static uint64_t my_heard(double now);

/* Opened for every round, so that losing the storage (an unmounted or
 * covered directory) shows at once. */
static int
sf_open(void)
{
    int fd = open(ha.path, O_RDWR | O_DIRECT | O_DSYNC | O_CLOEXEC);
    if (fd < 0 && errno == EINVAL) {
        /* tmpfs and some others refuse O_DIRECT */
        fd = open(ha.path, O_RDWR | O_DSYNC | O_CLOEXEC);
    }
    return fd;
}

static bool
sf_write_block(int fd, size_t block, const char *text)
{
    char *b = ha.buf;
    memset(b, 0, BLOCK);
    snprintf(b, BLOCK, "%s", text);
    return pwrite(fd, b, BLOCK, (off_t)(block * BLOCK)) == BLOCK;
}

static bool
sf_write_slot(int fd, uint64_t view, uint64_t fenced, uint64_t heard)
{
    char text[256];
    snprintf(text, sizeof text,
             "XAHA-SLOT %s %" PRIu64 " %" PRIx64 " %" PRIu64 " %" PRIx64 "\n",
             ha.peers[ha.self].uuid, ha.seq, view, fenced, heard);
    return sf_write_block(fd, 1 + (size_t)ha.self, text);
}

static void
sf_parse_slot(size_t i, const char *b, double now)
{
    char uuid[64];
    uint64_t seq, view, fenced, heard;
    if (sscanf(b, "XAHA-SLOT %63s %" SCNu64 " %" SCNx64 " %" SCNu64 " %" SCNx64,
               uuid, &seq, &view, &fenced, &heard) != 5 ||
        strcmp(uuid, ha.peers[i].uuid) != 0) {
        return;
    }
    struct peer *p = &ha.peers[i];
    if (seq != p->sf_seq) {
        p->sf_seq = seq;
        p->sf_last = now;
        p->sf_seen = true;
    }
    p->sf_view = view;
    p->sf_heard = heard;
    p->sf_fenced = fenced;
}

static void
sf_parse_decision(const char *b)
{
    uint64_t gen, live;
    char master[64];
    if (sscanf(b, "XAHA-DEC %" SCNu64 " %" SCNx64 " %63s", &gen, &live,
               master) != 3 ||
        gen < ha.dec_gen) {
        return;
    }
    /* two deciders may both have written this generation: the file's
     * version is the one everybody reads */
    ha.dec_gen = gen;
    ha.dec_live = live;
    ha.dec_master = index_of_uuid(master);
}

/* Writes our slot and reads the others' and the decision; true when both
 * worked. */
static bool
sf_round(uint64_t view, uint64_t fenced, double now)
{
    int fd = sf_open();
    if (fd < 0) {
        return false;
    }
    bool ok = sf_write_slot(fd, view, fenced, my_heard(now));
    size_t len = (1 + ha.n) * BLOCK;
    char *all = NULL;
    if (ok && posix_memalign((void **)&all, BLOCK, len) == 0) {
        ok = pread(fd, all, len, 0) == (ssize_t)len;
        for (size_t i = 0; ok && i < ha.n; i++) {
            all[(1 + i) * BLOCK + BLOCK - 1] = '\0';
            if ((int)i != ha.self) {
                sf_parse_slot(i, all + (1 + i) * BLOCK, now);
            }
        }
        if (ok) {
            all[BLOCK - 1] = '\0';
            sf_parse_decision(all);
        }
    } else {
        ok = false;
    }
    free(all);
    close(fd);
    return ok;
}

static bool
sf_write_decision(void)
{
    int fd = sf_open();
    if (fd < 0) {
        return false;
    }
    char text[256];
    snprintf(text, sizeof text, "XAHA-DEC %" PRIu64 " %" PRIx64 " %s\n",
             ha.dec_gen, ha.dec_live, ha.peers[ha.dec_master].uuid);
    bool ok = sf_write_block(fd, 0, text);
    close(fd);
    return ok;
}

/* --- heartbeats over the network ----------------------------------------*/

static void
hmac_hex(const char *text, char out[65])
{
    const char *key = xa_pool_secret();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)text,
         strlen(text), md, &len);
    for (unsigned i = 0; i < len && i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
    out[64] = '\0';
}

static bool
addr_of(const char *host, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)ha.port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1;
}

static bool
net_open(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    const char *bind_to = ha.bind && *ha.bind ? ha.bind : "0.0.0.0";
    int on = 1;
    if (s < 0 || !addr_of(bind_to, &sa) ||
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        bind(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        xa_log_err(LOG, "cannot listen for heartbeats on %s:%d: %s", bind_to,
                   ha.port, strerror(errno));
        if (s >= 0) {
            close(s);
        }
        return false;
    }
    ha.sock = s;
    return true;
}

static void
net_send(uint64_t view)
{
    char text[160], mac[65], pkt[256];
    snprintf(text, sizeof text, "XAHA1 %s %" PRIu64 " %" PRIx64,
             ha.peers[ha.self].uuid, ha.seq, view);
    hmac_hex(text, mac);
    int len = snprintf(pkt, sizeof pkt, "%s %s", text, mac);
    for (size_t i = 0; i < ha.n; i++) {
        struct sockaddr_in sa;
        if ((int)i != ha.self && addr_of(ha.peers[i].address, &sa)) {
            /* a lost heartbeat is what the timeout is for */
            (void)sendto(ha.sock, pkt, (size_t)len, MSG_DONTWAIT,
                         (struct sockaddr *)&sa, sizeof sa);
        }
    }
}

static void
net_take(const char *pkt, double now)
{
    char uuid[64], mac[80], text[160], want[65];
    uint64_t seq, view;
    if (sscanf(pkt, "XAHA1 %63s %" SCNu64 " %" SCNx64 " %79s", uuid, &seq,
               &view, mac) != 4) {
        return;
    }
    snprintf(text, sizeof text, "XAHA1 %s %" PRIu64 " %" PRIx64, uuid, seq,
             view);
    hmac_hex(text, want);
    int i = index_of_uuid(uuid);
    if (i < 0 || i == ha.self || CRYPTO_memcmp(mac, want, 64) != 0 ||
        strlen(mac) != 64) {
        return;
    }
    struct peer *p = &ha.peers[i];
    if (seq <= p->net_seq) {
        return; /* a replay, or reordered */
    }
    p->net_seq = seq;
    p->net_last = now;
    p->net_view = view;
}

/* Takes heartbeats until 'deadline' (monotonic). */
static void
net_receive_until(double deadline)
{
    for (;;) {
        double left = deadline - xa_monotonic();
        if (left <= 0) {
            return;
        }
        struct pollfd pfd = {.fd = ha.sock, .events = POLLIN};
        if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0) {
            continue;
        }
        char pkt[300];
        ssize_t n;
        while ((n = recv(ha.sock, pkt, sizeof pkt - 1, 0)) > 0) {
            pkt[n] = '\0';
            net_take(pkt, xa_monotonic());
        }
    }
}

/* --- liveness --------------------------------------------------------------*/

static bool
net_live(int i, double now, double window)
{
    return i == ha.self || now - ha.peers[i].net_last < window;
}

static bool
sf_live(int i, double now)
{
    return i == ha.self || now - ha.peers[i].sf_last < ha.timeout;
}

/* The hosts heard over the network since we armed (ourselves
 * included), not those merely presumed alive at arming: what
 * pool.enable_ha checks. */
static uint64_t
my_heard(double now)
{
    uint64_t v = one(ha.self);
    for (size_t i = 0; i < ha.n; i++) {
        if (ha.peers[i].net_seq != 0 && net_live((int)i, now, ha.timeout)) {
            v |= one((int)i);
        }
    }
    return v;
}

static uint64_t
my_view(double now, double window)
{
    uint64_t v = 0;
    for (size_t i = 0; i < ha.n; i++) {
        if (net_live((int)i, now, window)) {
            v |= one((int)i);
        }
    }
    return v;
}

/* --- fencing ---------------------------------------------------------------*/

static void
fence(const char *why)
{
    xa_log_err(LOG, "fencing this host: %s", why);
    struct xa_hv_domain_info *doms = NULL;
    size_t n = 0;
    struct xa_error *err = xa_hv_list(&doms, &n);
    xa_error_free(err);
    for (size_t i = 0; i < n; i++) {
        if (doms[i].domid != 0) {
            xa_error_free(xa_hv_destroy("HA fence", doms[i].uuid));
        }
    }
    free(doms);
    ha.seq++;
    if (!sf_round(0, ha.dec_gen ? ha.dec_gen : 1, xa_monotonic())) {
        xa_log_warn(LOG, "cannot acknowledge the fence in the statefile");
    }
    /* come back as a member of the master the pool chose */
    if (ha.dec_master >= 0 && ha.dec_master != ha.self) {
        char *conf = xa_asprintf("slave:%s\n", ha.peers[ha.dec_master].address);
        xa_error_free(xa_pool_write_file("pool.conf", conf));
        free(conf);
    }
    xa_log_err(LOG, "fenced: %zu domains destroyed; stopping", n);
    _exit(0);
}

/* --- agreement -------------------------------------------------------------*/

/* The master the agreement starts from: the one the statefile's last
 * decision names, once there is one.  pool.master only counts before the
 * first decision: a host restarted after the pool replaced it still reads
 * itself there (its database is stale until the new master's copy comes),
 * and deciding from that would hand the pool back to it. */
static int
current_master(void)
{
    if (ha.dec_gen && ha.dec_master >= 0) {
        return ha.dec_master;
    }
    struct ha_conf c;
    read_conf(&c);
    int m = index_of_ref(c.master);
    free_conf(&c);
    return m;
}

static bool
alive_to_me(int i, double now)
{
    return net_live(i, now, ha.timeout) || sf_live(i, now);
}

static int
decider(int master, double now)
{
    if (master >= 0 && alive_to_me(master, now)) {
        return master;
    }
    for (size_t i = 0; i < ha.n; i++) {
        if (alive_to_me((int)i, now)) {
            return (int)i;
        }
    }
    return ha.self;
}

static uint64_t
view_of(int i, double now)
{
    if (i == ha.self) {
        return my_view(now, ha.timeout);
    }
    return sf_live(i, now) ? ha.peers[i].sf_view : ha.peers[i].net_view;
}

/* Whether group 'a' is better than 'b'. */
static bool
better(uint64_t a, uint64_t b, int master)
{
    int ca = __builtin_popcountll(a), cb = __builtin_popcountll(b);
    if (ca != cb) {
        return ca > cb;
    }
    if (bit(a, master) != bit(b, master)) {
        return bit(a, master);
    }
    return a && (!b || __builtin_ctzll(a) < __builtin_ctzll(b));
}

static uint64_t
live_set(int master, double now)
{
    uint64_t alive = 0;
    uint64_t views[64] = {0};
    for (size_t i = 0; i < ha.n; i++) {
        if (alive_to_me((int)i, now)) {
            alive |= one((int)i);
        }
    }
    for (size_t i = 0; i < ha.n; i++) {
        views[i] = (view_of((int)i, now) | one((int)i)) & alive;
    }
    uint64_t best = 0;
    for (size_t i = 0; i < ha.n; i++) {
        if (!bit(alive, (int)i)) {
            continue;
        }
        uint64_t g = one((int)i);
        for (size_t k = 0; k < ha.n; k++) {
            if (bit(views[i], (int)k) && bit(views[k], (int)i)) {
                g |= one((int)k);
            }
        }
        if (better(g, best, master)) {
            best = g;
        }
    }
    return best;
}

static void
decide(int master, double now)
{
    uint64_t live = live_set(master, now);
    if (!live || (ha.dec_gen && live == ha.dec_live)) {
        return;
    }
    int m = bit(live, master) ? master : __builtin_ctzll(live);
    ha.dec_gen++;
    ha.dec_live = live;
    ha.dec_master = m;
    if (!sf_write_decision()) {
        xa_log_warn(LOG, "cannot write the decision to the statefile");
        return;
    }
    xa_log_info(LOG, "decision %" PRIu64 ": live hosts %" PRIx64 ", master %s",
                ha.dec_gen, live, ha.peers[m].address);
}

/* Role changes and restarts run on helper threads: they wait for the
 * pool's links, which may be stuck on a host that went away, and the
 * heartbeats must go on meanwhile. */
static void
helper_done(bool *flag)
{
    pthread_mutex_lock(&ha.lock);
    *flag = false;
    pthread_cond_broadcast(&ha.cond);
    pthread_mutex_unlock(&ha.lock);
}

static bool
helper_start(bool *flag, void *(*fn)(void *), void *arg)
{
    pthread_mutex_lock(&ha.lock);
    bool busy = *flag;
    *flag = true;
    pthread_mutex_unlock(&ha.lock);
    pthread_t th;
    if (busy) {
        return false;
    }
    if (pthread_create(&th, NULL, fn, arg) != 0) {
        helper_done(flag);
        return false;
    }
    pthread_detach(th);
    return true;
}

static void *
become_master_main(void *arg)
{
    XA_UNUSED(arg);
    xa_pool_take_over();
    helper_done(&ha.switching);
    return NULL;
}

static void *
become_member_main(void *arg)
{
    char *addr = arg;
    if (xa_pool_role() == XA_POOL_MASTER) {
        xa_pool_replica_reset();
    }
    xa_pool_become_member(addr);
    free(addr);
    helper_done(&ha.switching);
    return NULL;
}

/* Follows the decision's master. */
static void
follow_master(void)
{
    if (ha.dec_gen == 0 || ha.dec_master < 0) {
        return;
    }
    enum xa_pool_role role = xa_pool_role();
    if (ha.dec_master == ha.self) {
        if (role == XA_POOL_MEMBER && bit(ha.dec_live, ha.self) &&
            helper_start(&ha.switching, become_master_main, NULL)) {
            xa_log_info(LOG, "taking over as master");
        }
        return;
    }
    const char *addr = ha.peers[ha.dec_master].address;
    char *cur = xa_pool_master_address();
    if (role == XA_POOL_MASTER || (cur && strcmp(cur, addr) != 0)) {
        char *a = xa_strdup(addr);
        if (helper_start(&ha.switching, become_member_main, a)) {
            xa_log_info(LOG, "following the new master %s", addr);
        } else {
            free(a);
        }
    }
    free(cur);
}

/* --- failover (master) -----------------------------------------------------*/

static int
by_rank_order(const void *a, const void *b)
{
    const struct restart *x = a, *y = b;
    if (x->rank != y->rank) {
        return x->rank - y->rank;
    }
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Records a message for clients (message.get_all_records, events);
 * failing to is only logged. */
static void
emit_message(const char *name, int64_t priority, const char *cls,
             const char *obj_uuid, const char *body)
{
    struct xa_error *err =
        xa_message_emit(name, priority, cls, obj_uuid, body, NULL);
    if (err) {
        xa_log_warn(LOG, "cannot record message %s: %s", name, err->code);
        xa_error_free(err);
    }
}

static void
vm_restart_failed(const char *vm)
{
    struct xa_txn *t = xa_db_begin_read();
    char *uuid =
        xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
    xa_db_end(t);
    emit_message("HA_PROTECTED_VM_RESTART_FAILED", 2, "VM", uuid,
                 "HA could not restart the protected VM: no live host has "
                 "room for it");
    free(uuid);
}

/* Marks the VMs of host 'h' Halted; queues the protected ones. */
static void
halt_vms_of(int h)
{
    const char *ref = ha.peers[h].ref;
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *vms =
        xa_api_refs_where(t, &xa_cls_VM, XA_F(xa_cls_VM, "resident_on"), ref);
    struct xa_error *err = NULL;
    size_t halted = 0;
    for (size_t i = 0; vms && i < vms->u.arr.n && !err; i++) {
        const char *vm = vms->u.arr.items[i]->u.str.s;
        if (xa_api_bool(t, &xa_cls_VM, vm,
                        XA_F(xa_cls_VM, "is_control_domain"))) {
            continue;
        }
        int rank = xa_ha_priority_rank(xa_api_str(
            t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "ha_restart_priority")));
        if (rank < 2) {
            ha.pending =
                xa_realloc(ha.pending, (ha.n_pending + 1) * sizeof *ha.pending);
            ha.pending[ha.n_pending++] = (struct restart){
                xa_strdup(vm), rank,
                xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "order"))};
        }
        err = xa_vm_force_state(t, vm, "Halted");
        halted++;
    }
    xa_value_unref(vms);
    const char *hm =
        xa_api_str(t, &xa_cls_host, ref, XA_F(xa_cls_host, "metrics"));
    if (!err && xa_db_exists(t, &xa_cls_host_metrics, hm)) {
        err = xa_api_set(t, &xa_cls_host_metrics, hm,
                         XA_F(xa_cls_host_metrics, "live"), xa_bool(false));
    }
    err = xa_api_finish(t, err);
    if (err) {
        xa_log_err(LOG, "cannot reset the VMs of %s: %s", ha.peers[h].address,
                   err->code);
        xa_error_free(err);
    }
    xa_log_warn(LOG, "HA_HOST_FAILED: host %s (%s); %zu VMs reset to Halted",
                ha.peers[h].uuid, ha.peers[h].address, halted);
    char *body = xa_asprintf("Server '%s' has failed", ha.peers[h].address);
    emit_message("HA_HOST_FAILED", 3, "Host", ha.peers[h].uuid, body);
    free(body);
}

/* What the restart helper works on: its own copies. */
struct restart_job {
    struct restart *items;
    size_t n;
    char *hosts[64]; /* live hosts */
    size_t n_hosts;
};

/* The job's hosts ordered by free memory, most first, into 'out'. */
static size_t
hosts_by_room(const struct restart_job *j, int *out)
{
    int64_t room[64];
    size_t n = 0;
    struct xa_txn *t = xa_db_begin_read();
    for (size_t i = 0; i < j->n_hosts; i++) {
        const char *hm = xa_api_str(t, &xa_cls_host, j->hosts[i],
                                    XA_F(xa_cls_host, "metrics"));
        int64_t r = xa_api_int(t, &xa_cls_host_metrics, hm,
                               XA_F(xa_cls_host_metrics, "memory_free"));
        size_t k = n++;
        while (k > 0 && room[k - 1] < r) {
            room[k] = room[k - 1];
            out[k] = out[k - 1];
            k--;
        }
        room[k] = r;
        out[k] = (int)i;
    }
    xa_db_end(t);
    return n;
}

static bool
restart_one(const struct restart_job *j, const struct restart *r)
{
    struct xa_txn *t = xa_db_begin_read();
    bool halted =
        xa_db_exists(t, &xa_cls_VM, r->vm) &&
        strcmp(xa_api_str(t, &xa_cls_VM, r->vm, XA_F(xa_cls_VM, "power_state")),
               "Halted") == 0;
    char *me = xa_strdup(xa_api_str(t, &xa_cls_host, xa_self_host(),
                                    XA_F(xa_cls_host, "address")));
    xa_db_end(t);
    if (!halted) {
        free(me);
        return true; /* someone started it, or it is gone */
    }
    int order[64];
    size_t n = hosts_by_room(j, order);
    bool ok = false;
    for (size_t i = 0; i < n && !ok; i++) {
        const char *host = j->hosts[order[i]];
        struct xa_value *p = xa_array();
        xa_array_append(p, xa_string(r->vm));
        xa_array_append(p, xa_string(host));
        xa_array_append(p, xa_bool(false));
        xa_array_append(p, xa_bool(false));
        struct xa_error *err =
            xa_pool_link_call(me, "ha", "VM.start_on", p, NULL, false, 60);
        if (err) {
            xa_log_warn(LOG, "restart of %s on %s: %s", r->vm, host, err->code);
            xa_error_free(err);
        } else {
            xa_log_info(LOG, "restarted %s on %s", r->vm, host);
            ok = true;
        }
    }
    free(me);
    return ok;
}

static void *
restart_main(void *arg)
{
    struct restart_job *j = arg;
    qsort(j->items, j->n, sizeof *j->items, by_rank_order);
    size_t failed = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (!restart_one(j, &j->items[i])) {
            failed++;
            xa_log_warn(LOG, "HA_POOL_OVERCOMMITTED: cannot restart %s",
                        j->items[i].vm);
            vm_restart_failed(j->items[i].vm);
        }
        free(j->items[i].vm);
    }
    if (failed) {
        xa_log_warn(LOG, "%zu protected VMs could not be restarted", failed);
    }
    for (size_t i = 0; i < j->n_hosts; i++) {
        free(j->hosts[i]);
    }
    free(j->items);
    free(j);
    helper_done(&ha.restarting);
    return NULL;
}

/* Hands the queued restarts to the helper (unless one runs). */
static void
run_restarts(void)
{
    if (!ha.n_pending || xa_monotonic() < ha.prevent_until) {
        return;
    }
    struct restart_job *j = xa_calloc(1, sizeof *j);
    for (size_t i = 0; i < ha.n; i++) {
        if (bit(ha.dec_live, (int)i)) {
            j->hosts[j->n_hosts++] = xa_strdup(ha.peers[i].ref);
        }
    }
    j->items = ha.pending;
    j->n = ha.n_pending;
    if (helper_start(&ha.restarting, restart_main, j)) {
        ha.pending = NULL;
        ha.n_pending = 0;
        return;
    }
    for (size_t i = 0; i < j->n_hosts; i++) {
        free(j->hosts[i]);
    }
    free(j);
}

static void
failover(double now)
{
    /* what we read of the others is news only while we reach the
     * statefile ourselves */
    if (xa_pool_role() != XA_POOL_MASTER || ha.dec_gen == 0 ||
        now - ha.sf_ok_at > 2 * ha.interval) {
        return;
    }
    for (size_t i = 0; i < ha.n; i++) {
        struct peer *p = &ha.peers[i];
        if (bit(ha.dec_live, (int)i)) {
            ha.failed_over &= ~one((int)i);
            continue;
        }
        if (bit(ha.failed_over, (int)i)) {
            continue;
        }
        /* safe once it is silent on the statefile for T or has fenced;
         * a host never heard since we armed is left alone (it may not
         * have armed yet) */
        bool heard = p->sf_seen || p->net_seq != 0;
        bool safe =
            heard && (now - p->sf_last >= ha.timeout || p->sf_fenced != 0);
        if (safe) {
            halt_vms_of((int)i);
            ha.failed_over |= one((int)i);
        }
    }
    run_restarts();
}

/* --- arming ----------------------------------------------------------------*/

static void
disarm(void)
{
    pthread_mutex_lock(&ha.lock);
    ha.armed = false;
    if (ha.sock >= 0) {
        close(ha.sock);
        ha.sock = -1;
    }
    for (size_t i = 0; i < ha.n; i++) {
        free(ha.peers[i].ref);
        free(ha.peers[i].uuid);
        free(ha.peers[i].address);
    }
    free(ha.peers);
    ha.peers = NULL;
    ha.n = 0;
    free(ha.statefile);
    free(ha.path);
    free(ha.buf);
    ha.statefile = ha.path = NULL;
    ha.buf = NULL;
    for (size_t i = 0; i < ha.n_pending; i++) {
        free(ha.pending[i].vm);
    }
    free(ha.pending);
    ha.pending = NULL;
    ha.n_pending = 0;
    pthread_cond_broadcast(&ha.cond);
    pthread_mutex_unlock(&ha.lock);
}

static bool
arm(const struct ha_conf *c)
{
    char *path = NULL, *format = NULL;
    struct xa_error *err =
        xa_vdi_attach_path(c->statefile, false, &path, &format);
    if (err || strcmp(format, "raw") != 0) {
        if (!ha.sf_warned) {
            xa_log_err(LOG, "cannot open the statefile %s: %s", c->statefile,
                       err ? err->code : format);
        }
        ha.sf_warned = true;
        xa_error_free(err);
        free(path);
        free(format);
        return false;
    }
    free(format);
    read_hosts();
    ha.statefile = xa_strdup(c->statefile);
    ha.path = path;
    if (ha.self < 0 || posix_memalign(&ha.buf, BLOCK, BLOCK) != 0 ||
        !net_open()) {
        disarm();
        return false;
    }
    /* restarts go through our own API over the pool's link: trust our
     * own certificate (a first start records it only after the pool
     * starts) */
    char *fp = xa_pool_own_fingerprint();
    if (fp) {
        xa_pool_add_pin(fp);
        free(fp);
    }
    ha.timeout = c->timeout;
    ha.interval = c->timeout / 10 > 1 ? 1 : c->timeout / 10;
    ha.seq = (uint64_t)(xa_now() * 1e6);
    double now = xa_monotonic();
    ha.armed_at = ha.sf_ok_at = now;
    for (size_t i = 0; i < ha.n; i++) {
        ha.peers[i].net_last = now;
        ha.peers[i].sf_last = now;
    }
    ha.dec_gen = ha.dec_live = 0;
    ha.dec_master = -1;
    ha.failed_over = 0;
    ha.sf_warned = false;
    /* what was decided before we armed does not fence us, but names the
     * master to follow */
    sf_round(my_view(now, ha.timeout), 0, now);
    ha.armed_gen = ha.dec_gen;
    if (ha.dec_gen) {
        follow_master();
    }
    pthread_mutex_lock(&ha.lock);
    ha.armed = true;
    memset(ha.sees, 0, sizeof ha.sees); /* nobody heard yet */
    pthread_cond_broadcast(&ha.cond);
    pthread_mutex_unlock(&ha.lock);
    xa_log_info(LOG, "armed: %zu hosts, timeout %.1f s, statefile %s", ha.n,
                ha.timeout, ha.path);
    return true;
}

/* --- the round -------------------------------------------------------------*/

static void
round_once(void)
{
    double now = xa_monotonic();
    double window = ha.timeout / 2; /* fence before the others act */
    ha.seq++;
    uint64_t view = my_view(now, ha.timeout);
    net_send(view);
    bool sf_ok = sf_round(view, 0, now);
    if (sf_ok != !ha.sf_warned) {
        xa_log_warn(LOG, "statefile %s: %s", ha.path,
                    sf_ok ? "reachable again" : "cannot read or write it");
        ha.sf_warned = !sf_ok;
    }
    if (sf_ok) {
        ha.sf_ok_at = now;
    }
    pthread_mutex_lock(&ha.lock);
    for (size_t i = 0; i < ha.n; i++) {
        ha.sees[i] = (int)i == ha.self ? my_heard(now) : ha.peers[i].sf_heard;
    }
    bool hold = ha.hold;
    pthread_mutex_unlock(&ha.lock);
    if (ha.dec_gen > ha.armed_gen && !bit(ha.dec_live, ha.self)) {
        fence("the pool declared this host dead");
    }
    if (now - ha.sf_ok_at > window) {
        int heard = __builtin_popcountll(my_view(now, window));
        if (heard * 2 <= (int)ha.n) {
            fence("neither the statefile nor a majority of hosts answer");
        }
    }
    int master = current_master();
    if (!hold && decider(master, now) == ha.self &&
        now - ha.sf_ok_at <= window) {
        decide(master, now);
    }
    follow_master();
    failover(now);
    if (xa_pool_role() == XA_POOL_MASTER && now >= ha.next_plan) {
        ha.next_plan = now + 1;
        xa_ha_update_plan_fields();
    }
}

static void *
ha_main(void *arg)
{
    XA_UNUSED(arg);
    for (;;) {
        pthread_mutex_lock(&ha.lock);
        bool stop = ha.stop, disabled = ha.disabled;
        pthread_mutex_unlock(&ha.lock);
        if (stop) {
            break;
        }
        struct ha_conf c;
        read_conf(&c);
        if (!c.enabled && disabled) {
            pthread_mutex_lock(&ha.lock);
            ha.disabled = false; /* until HA is enabled again */
            pthread_mutex_unlock(&ha.lock);
        }
        bool want = c.enabled && c.statefile && !disabled;
        if (ha.armed && (!want || strcmp(c.statefile, ha.statefile) != 0)) {
            xa_log_info(LOG, "disarmed");
            disarm();
        }
        if (want && !ha.armed) {
            arm(&c);
        }
        free_conf(&c);
        if (ha.armed) {
            double start = xa_monotonic();
            round_once();
            net_receive_until(start + ha.interval);
            continue;
        }
        struct timespec ts;
        xa_pool_abstime(&ts, 0.2);
        pthread_mutex_lock(&ha.lock);
        if (!ha.stop) {
            pthread_cond_timedwait(&ha.cond, &ha.lock, &ts);
        }
        pthread_mutex_unlock(&ha.lock);
    }
    if (ha.armed) {
        disarm();
    }
    return NULL;
}

void
xa_ha_start(const char *bind, int port)
{
    ha.bind = xa_strdup(bind ? bind : "");
    ha.port = port;
    if (port <= 0) {
        xa_log_warn(LOG, "no HTTPS port: HA heartbeats disabled");
        return;
    }
    /* armed at once when HA is on: a host coming back learns from the
     * statefile whom to follow before it serves anything */
    struct ha_conf c;
    read_conf(&c);
    if (c.enabled && c.statefile) {
        arm(&c);
    }
    free_conf(&c);
    struct timespec ts;
    xa_pool_abstime(&ts, 10);
    pthread_mutex_lock(&ha.lock);
    while (ha.switching &&
           pthread_cond_timedwait(&ha.cond, &ha.lock, &ts) == 0) {
    }
    pthread_mutex_unlock(&ha.lock);
    if (pthread_create(&ha.thread, NULL, ha_main, NULL) == 0) {
        ha.started = true;
    }
}

void
xa_ha_stop(void)
{
    pthread_mutex_lock(&ha.lock);
    ha.stop = true;
    pthread_cond_broadcast(&ha.cond);
    pthread_mutex_unlock(&ha.lock);
    if (ha.started) {
        pthread_join(ha.thread, NULL);
        ha.started = false;
    }
    /* helpers finish what they started (bounded by their calls' own
     * timeouts) */
    pthread_mutex_lock(&ha.lock);
    while (ha.switching || ha.restarting) {
        pthread_cond_wait(&ha.cond, &ha.lock);
    }
    pthread_mutex_unlock(&ha.lock);
    free(ha.bind);
    ha.bind = NULL;
}

void
xa_ha_emergency_disable(void)
{
    pthread_mutex_lock(&ha.lock);
    ha.disabled = true;
    pthread_cond_broadcast(&ha.cond);
    pthread_mutex_unlock(&ha.lock);
    xa_log_warn(LOG, "emergency HA disable: this host no longer heartbeats "
                     "or fences");
}

void
xa_ha_prevent_restarts_for(double seconds)
{
    pthread_mutex_lock(&ha.lock);
    ha.prevent_until = xa_monotonic() + seconds;
    pthread_mutex_unlock(&ha.lock);
}

bool
xa_ha_wait_armed(double timeout)
{
    double until = xa_monotonic() + timeout;
    while (xa_monotonic() < until) {
        pthread_mutex_lock(&ha.lock);
        bool all = ha.armed;
        for (size_t i = 0; all && i < ha.n; i++) {
            all = (int)i == ha.self || ha.peers[i].sf_seen;
        }
        pthread_mutex_unlock(&ha.lock);
        if (all) {
            return true;
        }
        usleep(50 * 1000);
    }
    return false;
}

void
xa_ha_hold_decisions(bool hold)
{
    pthread_mutex_lock(&ha.lock);
    ha.hold = hold;
    pthread_mutex_unlock(&ha.lock);
}

/* The host that hears the fewest others (lowest index on a tie), or -1
 * when every host hears every other.  Called with ha.lock held while
 * armed (ha.peers is stable then). */
static int
deafest(void)
{
    uint64_t all = ha.n >= 64 ? ~0ULL : (one((int)ha.n) - 1);
    int worst = -1, fewest = 65;
    for (size_t i = 0; i < ha.n; i++) {
        uint64_t s = ha.sees[i] & all;
        if (s != all && __builtin_popcountll(s) < fewest) {
            worst = (int)i;
            fewest = __builtin_popcountll(s);
        }
    }
    return worst;
}

/* "uuid,uuid,..." of the hosts in 'set'; the caller frees it. */
static char *
uuids_of(uint64_t set)
{
    size_t len = 1;
    for (size_t i = 0; i < ha.n; i++) {
        len += strlen(ha.peers[i].uuid) + 1;
    }
    char *out = xa_calloc(1, len);
    for (size_t i = 0; i < ha.n; i++) {
        if (bit(set, (int)i)) {
            if (*out) {
                strcat(out, ",");
            }
            strcat(out, ha.peers[i].uuid);
        }
    }
    return out;
}

bool
xa_ha_wait_disarmed(double timeout)
{
    struct timespec ts;
    xa_pool_abstime(&ts, timeout);
    pthread_mutex_lock(&ha.lock);
    while (ha.armed && pthread_cond_timedwait(&ha.cond, &ha.lock, &ts) == 0) {
    }
    bool done = !ha.armed;
    pthread_mutex_unlock(&ha.lock);
    return done;
}

struct xa_error *
xa_ha_wait_peers(double timeout)
{
    double until = xa_monotonic() + timeout;
    for (;;) {
        pthread_mutex_lock(&ha.lock);
        int worst = ha.armed ? deafest() : -2;
        struct xa_error *err = NULL;
        if (worst >= 0 && xa_monotonic() >= until) {
            uint64_t all = ha.n >= 64 ? ~0ULL : (one((int)ha.n) - 1);
            char *everyone = uuids_of(all);
            char *seen = uuids_of(ha.sees[worst] | one(worst));
            err = xa_error_new("HA_HOST_CANNOT_SEE_PEERS", 3,
                               ha.peers[worst].ref, everyone, seen);
            xa_log_warn(LOG, "host %s hears only %s of %s",
                        ha.peers[worst].address, seen, everyone);
            free(everyone);
            free(seen);
        }
        pthread_mutex_unlock(&ha.lock);
        if (worst == -2) {
            return xa_error_new("HA_HEARTBEAT_DAEMON_STARTUP_FAILED", 0);
        }
        if (worst == -1 || err) {
            return err;
        }
        usleep(50 * 1000);
    }
}
