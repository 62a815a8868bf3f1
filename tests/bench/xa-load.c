/* xa-load: a small HTTP/1.1 load generator for xapid benchmarks.
 *
 * Opens N kept-alive plain-TCP connections to HOST:PORT and sends one
 * fixed POST request on each, back to back, for D seconds (or until K
 * requests in all have been answered).  Every response must be HTTP 200
 * and contain a success marker; responses are framed by Content-Length
 * or chunked transfer coding.  Prints requests/s and latency percentiles
 * (text, or one JSON object with --json).
 *
 * The connections are spread over T threads, each running an epoll loop
 * over its share, so 16 connections do not need 16 threads competing with
 * the server for the CPUs.  Nothing is allocated per request: the request
 * is built once, each connection owns a receive buffer that only grows,
 * and latencies go to a fixed-size log-linear histogram (under 1% error).
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- latency histogram --------------------------------------------- */

/* Values (nanoseconds) below 2^SUB_BITS are exact; above, each power of
 * two is cut into 2^SUB_BITS buckets, so a bucket is < 1/128 wide. */
#define SUB_BITS 7
#define SUB_N    (1u << SUB_BITS)
#define MAX_EXP  44 /* up to ~2^51 ns, far beyond any run */
#define HIST_N   ((MAX_EXP + 2) * SUB_N)

struct hist {
    uint64_t b[HIST_N];
    uint64_t n;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
};

static unsigned
hist_index(uint64_t v)
{
    unsigned msb, shift;

    if (v < SUB_N) {
        return (unsigned)v;
    }
    msb = 63u - (unsigned)__builtin_clzll(v);
    shift = msb - SUB_BITS;
    if (shift > MAX_EXP) {
        return HIST_N - 1;
    }
    /* (v >> shift) is in [SUB_N, 2 * SUB_N). */
    return shift * SUB_N + (unsigned)(v >> shift);
}

/* The middle of bucket i. */
static uint64_t
hist_value(unsigned i)
{
    unsigned shift;
    uint64_t lo;

    if (i < 2 * SUB_N) {
        return i;
    }
    shift = i / SUB_N - 1;
    lo = (uint64_t)(i - shift * SUB_N) << shift;
    return lo + ((1ull << shift) >> 1);
}

static void
hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    if (h->n == 0 || v < h->min) {
        h->min = v;
    }
    if (v > h->max) {
        h->max = v;
    }
    h->n++;
    h->sum += v;
}

static void
hist_merge(struct hist *into, const struct hist *h)
{
    if (h->n == 0) {
        return;
    }
    for (unsigned i = 0; i < HIST_N; i++) {
        into->b[i] += h->b[i];
    }
    if (into->n == 0 || h->min < into->min) {
        into->min = h->min;
    }
    if (h->max > into->max) {
        into->max = h->max;
    }
    into->n += h->n;
    into->sum += h->sum;
}

/* The q-quantile (0..1), clamped to the exact min and max. */
static uint64_t
hist_quantile(const struct hist *h, double q)
{
    uint64_t rank, seen = 0;

    if (h->n == 0) {
        return 0;
    }
    rank = (uint64_t)(q * (double)(h->n - 1)) + 1;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            if (v < h->min) {
                v = h->min;
            }
            if (v > h->max) {
                v = h->max;
            }
            return v;
        }
    }
    return h->max;
}

/* ---- configuration and shared state -------------------------------- */

struct config {
    const char *host;
    const char *port;
    const char *path;
    const char *content_type;
    const char *marker;
    double duration;
    bool duration_set;
    double warmup;
    long long count;
    unsigned conns;
    unsigned threads;
    bool json;
    bool quiet;
};

enum phase { PHASE_WARMUP, PHASE_MEASURE, PHASE_STOP };

static struct config cfg;
static char *request;  /* the whole request, headers and body */
static size_t req_len; /* its length */
static size_t marker_len;
static struct addrinfo *target;
static _Atomic int phase;
static _Atomic long long remaining; /* requests left to start, in -n mode */
static _Atomic int error_reported;

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
die(const char *what)
{
    fprintf(stderr, "xa-load: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* ---- one connection ------------------------------------------------ */

enum conn_state { CS_IDLE, CS_SENDING, CS_HEAD, CS_BODY, CS_CHUNKED };

struct conn {
    int fd;
    enum conn_state state;
    size_t sent;     /* bytes of 'request' written */
    char *buf;       /* receive buffer */
    size_t cap;      /* its size */
    size_t len;      /* bytes in it */
    size_t head_len; /* end of the response head */
    size_t need;     /* CS_BODY: total bytes the response takes */
    /* CS_CHUNKED: body decoded in place; 'src' scans the raw bytes and
     * 'dst' is the end of the decoded body (dst <= src). */
    size_t src;
    size_t dst;
    size_t chunk_left; /* data bytes left in the current chunk */
    int chunk_phase;   /* 0 size line, 1 data, 2 CRLF after data, 3 trailer */
    int status;
    bool close_after; /* the server said Connection: close */
    uint64_t started; /* when the request's first byte was written */
};

struct worker {
    pthread_t tid;
    unsigned first; /* index of the first connection it drives */
    unsigned n;     /* how many */
    struct conn *conns;
    int ep;
    struct hist lat;
    uint64_t ok;
    uint64_t errors;
    uint64_t reconnects;
    uint64_t bytes_in;
};

static int
conn_open(struct conn *c)
{
    int one = 1;
    int fd = socket(target->ai_family, SOCK_STREAM | SOCK_CLOEXEC,
                    target->ai_protocol);

    if (fd < 0) {
        return -1;
    }
    if (connect(fd, target->ai_addr, target->ai_addrlen) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->state = CS_IDLE;
    c->len = 0;
    return 0;
}

static void
conn_grow(struct conn *c, size_t want)
{
    if (want <= c->cap) {
        return;
    }
    while (c->cap < want) {
        c->cap *= 2;
    }
    c->buf = realloc(c->buf, c->cap);
    if (!c->buf) {
        fputs("xa-load: out of memory\n", stderr);
        exit(2);
    }
}

static void
report_error(const struct conn *c, const char *why, const char *body,
             size_t len)
{
    int expected = 0;

    if (cfg.quiet ||
        !atomic_compare_exchange_strong(&error_reported, &expected, 1)) {
        return;
    }
    fprintf(stderr, "xa-load: bad response (%s, HTTP %d): %.*s\n", why,
            c->status, (int)(len > 400 ? 400 : len), body);
}

/* Finds 'name: ' in the head (case-insensitively); returns its value. */
static const char *
header_value(const char *head, size_t len, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = memchr(head, '\n', len);
    const char *end = head + len;

    while (p && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) {
            eol = end;
        }
        if ((size_t)(eol - line) > nlen && line[nlen] == ':' &&
            strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1;
            const char *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) {
                ve--;
            }
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

/* Parses the head once "\r\n\r\n" is in; -1 on a malformed one. */
static int
parse_head(struct conn *c)
{
    const char *v;
    size_t vlen;
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);

    if (!end) {
        return 0;
    }
    c->head_len = (size_t)(end - c->buf) + 4;
    if (c->head_len < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0) {
        return -1;
    }
    c->status = atoi(c->buf + 9);
    c->close_after = false;
    v = header_value(c->buf, c->head_len, "Connection", &vlen);
    if (v && vlen == 5 && strncasecmp(v, "close", 5) == 0) {
        c->close_after = true;
    }
    if (memcmp(c->buf, "HTTP/1.0", 8) == 0 &&
        !(v && vlen == 10 && strncasecmp(v, "keep-alive", 10) == 0)) {
        c->close_after = true;
    }
    v = header_value(c->buf, c->head_len, "Transfer-Encoding", &vlen);
    if (v && vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0) {
        c->state = CS_CHUNKED;
        c->src = c->dst = c->head_len;
        c->chunk_phase = 0;
        c->chunk_left = 0;
        return 1;
    }
    v = header_value(c->buf, c->head_len, "Content-Length", &vlen);
    if (!v) {
        /* No framing: the body runs to the end of the connection, which
         * a keep-alive benchmark cannot use. */
        return -1;
    }
    c->need = c->head_len + (size_t)strtoull(v, NULL, 10);
    c->state = CS_BODY;
    return 1;
}

/* Decodes what has arrived of a chunked body; 1 when it is complete. */
static int
parse_chunked(struct conn *c)
{
    for (;;) {
        switch (c->chunk_phase) {
        case 0: { /* "<hex>[;ext]\r\n" */
            char *eol = memmem(c->buf + c->src, c->len - c->src, "\r\n", 2);
            if (!eol) {
                return 0;
            }
            c->chunk_left = (size_t)strtoull(c->buf + c->src, NULL, 16);
            c->src = (size_t)(eol - c->buf) + 2;
            c->chunk_phase = c->chunk_left ? 1 : 3;
            break;
        }
        case 1: {
            size_t have = c->len - c->src;
            size_t take = have < c->chunk_left ? have : c->chunk_left;
            if (take == 0) {
                return 0;
            }
            memmove(c->buf + c->dst, c->buf + c->src, take);
            c->dst += take;
            c->src += take;
            c->chunk_left -= take;
            if (c->chunk_left == 0) {
                c->chunk_phase = 2;
            }
            break;
        }
        case 2:
            if (c->len - c->src < 2) {
                return 0;
            }
            c->src += 2;
            c->chunk_phase = 0;
            break;
        default: { /* trailer lines, up to an empty one */
            char *eol = memmem(c->buf + c->src, c->len - c->src, "\r\n", 2);
            if (!eol) {
                return 0;
            }
            if (eol == c->buf + c->src) {
                c->src += 2;
                return 1;
            }
            c->src = (size_t)(eol - c->buf) + 2;
            break;
        }
        }
    }
}

static void
worker_count_done(struct worker *w, struct conn *c, bool good)
{
    uint64_t t = now_ns();

    if (atomic_load_explicit(&phase, memory_order_relaxed) != PHASE_MEASURE) {
        return;
    }
    if (good) {
        w->ok++;
        hist_add(&w->lat, t - c->started);
    } else {
        w->errors++;
    }
}

static bool
may_start(void)
{
    if (atomic_load_explicit(&phase, memory_order_relaxed) == PHASE_STOP) {
        return false;
    }
    if (cfg.count > 0) {
        return atomic_fetch_sub(&remaining, 1) > 0;
    }
    return true;
}

static void
conn_close(struct worker *w, struct conn *c)
{
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void conn_start(struct worker *w, struct conn *c);

/* A whole response is in: check it, keep what follows, send the next. */
static void
conn_finish(struct worker *w, struct conn *c, size_t body_off, size_t body_len,
            size_t consumed)
{
    bool good = true;

    if (c->status != 200) {
        good = false;
        report_error(c, "status", c->buf + body_off, body_len);
    } else if (!memmem(c->buf + body_off, body_len, cfg.marker, marker_len)) {
        good = false;
        report_error(c, "no success marker", c->buf + body_off, body_len);
    }
    w->bytes_in += consumed;
    worker_count_done(w, c, good);
    /* Nothing is pipelined, so extra bytes would be a server bug; keep
     * them anyway so the next parse sees them. */
    memmove(c->buf, c->buf + consumed, c->len - consumed);
    c->len -= consumed;
    c->state = CS_IDLE;
    if (c->close_after) {
        conn_close(w, c);
        w->reconnects++;
    }
    conn_start(w, c);
}

/* Writes as much of the request as the socket takes. */
static int
conn_send(struct worker *w, struct conn *c)
{
    while (c->sent < req_len) {
        ssize_t n =
            send(c->fd, request + c->sent, req_len - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
                                         .data.ptr = c};
                epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
                return 0;
            }
            return -1;
        }
        c->sent += (size_t)n;
    }
    if (c->state == CS_SENDING) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        c->state = CS_HEAD;
        /* Only switch the interest set back if it was widened. */
        epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return 0;
}

static void
conn_start(struct worker *w, struct conn *c)
{
    if (!may_start()) {
        if (c->fd >= 0) {
            conn_close(w, c);
        }
        return;
    }
    if (c->fd < 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (conn_open(c) != 0) {
            die("connect");
        }
        epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    c->sent = 0;
    c->started = now_ns();
    /* Usually the whole request goes out in one send; then the interest
     * set stays EPOLLIN and no epoll_ctl is needed. */
    {
        ssize_t n = send(c->fd, request, req_len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            w->errors++;
            conn_close(w, c);
            w->reconnects++;
            conn_start(w, c);
            return;
        }
        c->sent = n > 0 ? (size_t)n : 0;
    }
    if (c->sent == req_len) {
        c->state = CS_HEAD;
        return;
    }
    c->state = CS_SENDING;
    if (conn_send(w, c) != 0) {
        w->errors++;
        conn_close(w, c);
        w->reconnects++;
        conn_start(w, c);
    }
}

/* Reads what the socket has and advances the response parser. */
static void
conn_readable(struct worker *w, struct conn *c)
{
    for (;;) {
        ssize_t n;
        int r;

        if (c->cap - c->len < 4096) {
            conn_grow(c, c->cap * 2);
        }
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            /* The server closed (or reset) mid-response. */
            if (c->state != CS_IDLE) {
                c->status = 0;
                report_error(c, "connection closed", c->buf, c->len);
                worker_count_done(w, c, false);
            }
            conn_close(w, c);
            w->reconnects++;
            c->len = 0;
            conn_start(w, c);
            return;
        }
        if (n < 0) {
            return;
        }
        c->len += (size_t)n;
        /* A server may answer before it has read the whole request (an
         * early 413, say): parse that too. */
        if (c->state == CS_HEAD || c->state == CS_SENDING) {
            r = parse_head(c);
            if (r < 0) {
                c->status = 0;
                report_error(c, "malformed head", c->buf, c->len);
                worker_count_done(w, c, false);
                conn_close(w, c);
                w->reconnects++;
                c->len = 0;
                conn_start(w, c);
                return;
            }
            if (r == 0) {
                continue;
            }
        }
        if (c->state == CS_BODY) {
            if (c->len < c->need) {
                conn_grow(c, c->need + 1);
                continue;
            }
            conn_finish(w, c, c->head_len, c->need - c->head_len, c->need);
            return;
        }
        if (c->state == CS_CHUNKED) {
            if (parse_chunked(c) == 0) {
                continue;
            }
            /* The decoded body is [head_len, dst); raw bytes end at src.
             * Move any leftover down to just after the decoded body. */
            {
                size_t extra = c->len - c->src;
                memmove(c->buf + c->dst, c->buf + c->src, extra);
                c->len = c->dst + extra;
                conn_finish(w, c, c->head_len, c->dst - c->head_len, c->dst);
            }
            return;
        }
    }
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[64];
    unsigned live;

    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) {
        die("epoll_create1");
    }
    for (unsigned i = 0; i < w->n; i++) {
        struct conn *c = &w->conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (conn_open(c) != 0) {
            die("connect");
        }
        epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    for (unsigned i = 0; i < w->n; i++) {
        conn_start(w, &w->conns[i]);
    }
    for (;;) {
        int n;

        live = 0;
        for (unsigned i = 0; i < w->n; i++) {
            live += w->conns[i].fd >= 0;
        }
        if (live == 0) {
            break;
        }
        n = epoll_wait(w->ep, evs, 64, 100);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0) {
                continue;
            }
            if (c->state == CS_SENDING && (evs[i].events & EPOLLOUT)) {
                if (conn_send(w, c) != 0) {
                    w->errors++;
                    conn_close(w, c);
                    w->reconnects++;
                    conn_start(w, c);
                    continue;
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                conn_readable(w, c);
            }
        }
        if (atomic_load_explicit(&phase, memory_order_relaxed) == PHASE_STOP) {
            /* Stop at once: whatever is in flight is not counted. */
            for (unsigned i = 0; i < w->n; i++) {
                if (w->conns[i].fd >= 0) {
                    conn_close(w, &w->conns[i]);
                }
            }
        }
    }
    close(w->ep);
    return NULL;
}

/* ---- main ---------------------------------------------------------- */

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 4096, n = 0, r;
    char *b;

    if (!f) {
        die(path);
    }
    b = malloc(cap);
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap);
        }
    }
    if (!b) {
        fputs("xa-load: out of memory\n", stderr);
        exit(2);
    }
    if (f != stdin) {
        fclose(f);
    }
    *len = n;
    return b;
}

static void
usage(FILE *to)
{
    fputs("Usage: xa-load [OPTION]... -p PORT -b BODY-FILE\n"
          "Sends one POST request over and over on kept-alive connections.\n"
          "\n"
          "  -H, --host HOST          server address (127.0.0.1)\n"
          "  -p, --port PORT          server port\n"
          "  -P, --path PATH          request path (/)\n"
          "  -b, --body FILE          request body ('-': stdin)\n"
          "  -T, --content-type TYPE  (text/xml; application/json when the\n"
          "                           path ends in jsonrpc)\n"
          "  -m, --marker TEXT        success marker every response must\n"
          "                           contain (XML-RPC Status Success, or\n"
          "                           \"result\" for JSON-RPC paths)\n"
          "  -c, --connections N      connections (1)\n"
          "  -t, --threads N          threads driving them (min(N, CPUs/2))\n"
          "  -d, --duration SECONDS   measured time (5)\n"
          "  -w, --warmup SECONDS     unmeasured time before it (0)\n"
          "  -n, --requests K         stop after K requests instead\n"
          "  -j, --json               print one JSON object\n"
          "  -q, --quiet              do not print the first bad response\n"
          "\n"
          "Exit status: 0 when every measured response was good, 1 when\n"
          "some were not, 2 on a usage or connection error.\n",
          to);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"path", required_argument, NULL, 'P'},
        {"body", required_argument, NULL, 'b'},
        {"content-type", required_argument, NULL, 'T'},
        {"marker", required_argument, NULL, 'm'},
        {"connections", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"requests", required_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *body_path = NULL;
    char *body;
    size_t body_len, path_len;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct worker *ws;
    struct conn *conns;
    struct hist *all;
    uint64_t t0, t1, ok = 0, errors = 0, reconnects = 0, bytes_in = 0;
    double secs, ncpu;
    int opt, rc;

    cfg.host = "127.0.0.1";
    cfg.path = "/";
    cfg.duration = 5;
    cfg.conns = 1;
    while ((opt = getopt_long(argc, argv, "H:p:P:b:T:m:c:t:d:w:n:jqh", opts,
                              NULL)) != -1) {
        switch (opt) {
        case 'H':
            cfg.host = optarg;
            break;
        case 'p':
            cfg.port = optarg;
            break;
        case 'P':
            cfg.path = optarg;
            break;
        case 'b':
            body_path = optarg;
            break;
        case 'T':
            cfg.content_type = optarg;
            break;
        case 'm':
            cfg.marker = optarg;
            break;
        case 'c':
            cfg.conns = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 't':
            cfg.threads = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            cfg.duration = strtod(optarg, NULL);
            cfg.duration_set = true;
            break;
        case 'w':
            cfg.warmup = strtod(optarg, NULL);
            break;
        case 'n':
            cfg.count = strtoll(optarg, NULL, 10);
            break;
        case 'j':
            cfg.json = true;
            break;
        case 'q':
            cfg.quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!cfg.port || !body_path || cfg.conns == 0 || optind != argc) {
        usage(stderr);
        return 2;
    }
    path_len = strlen(cfg.path);
    bool json_path =
        path_len >= 7 && strcmp(cfg.path + path_len - 7, "jsonrpc") == 0;
    if (!cfg.content_type) {
        cfg.content_type = json_path ? "application/json" : "text/xml";
    }
    if (!cfg.marker) {
        cfg.marker = json_path ? "\"result\""
                               : "<name>Status</name><value>Success</value>";
    }
    marker_len = strlen(cfg.marker);
    ncpu = (double)sysconf(_SC_NPROCESSORS_ONLN);
    if (cfg.threads == 0) {
        cfg.threads = ncpu >= 4 ? (unsigned)(ncpu / 2) : 1;
    }
    if (cfg.threads > cfg.conns) {
        cfg.threads = cfg.conns;
    }

    body = read_file(body_path, &body_len);
    request = malloc(body_len + 512 + path_len + strlen(cfg.host) +
                     strlen(cfg.content_type));
    if (!request) {
        fputs("xa-load: out of memory\n", stderr);
        return 2;
    }
    req_len = (size_t)sprintf(request,
                              "POST %s HTTP/1.1\r\n"
                              "Host: %s:%s\r\n"
                              "User-Agent: xa-load\r\n"
                              "Content-Type: %s\r\n"
                              "Content-Length: %zu\r\n"
                              "\r\n",
                              cfg.path, cfg.host, cfg.port, cfg.content_type,
                              body_len);
    memcpy(request + req_len, body, body_len);
    req_len += body_len;
    free(body);

    rc = getaddrinfo(cfg.host, cfg.port, &hints, &target);
    if (rc != 0) {
        fprintf(stderr, "xa-load: %s: %s\n", cfg.host, gai_strerror(rc));
        return 2;
    }

    ws = calloc(cfg.threads, sizeof(*ws));
    conns = calloc(cfg.conns, sizeof(*conns));
    all = calloc(1, sizeof(*all));
    if (!ws || !conns || !all) {
        fputs("xa-load: out of memory\n", stderr);
        return 2;
    }
    for (unsigned i = 0; i < cfg.conns; i++) {
        conns[i].fd = -1;
        conns[i].cap = 64 * 1024;
        conns[i].buf = malloc(conns[i].cap);
        if (!conns[i].buf) {
            fputs("xa-load: out of memory\n", stderr);
            return 2;
        }
    }
    atomic_store(&remaining, cfg.count);
    atomic_store(&phase, cfg.warmup > 0 && cfg.count <= 0 ? PHASE_WARMUP
                                                          : PHASE_MEASURE);
    for (unsigned i = 0, first = 0; i < cfg.threads; i++) {
        unsigned n = cfg.conns / cfg.threads + (i < cfg.conns % cfg.threads);
        ws[i].first = first;
        ws[i].n = n;
        ws[i].conns = conns + first;
        first += n;
    }
    t0 = now_ns();
    for (unsigned i = 0; i < cfg.threads; i++) {
        if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            fputs("xa-load: cannot start a thread\n", stderr);
            return 2;
        }
    }
    if (cfg.count > 0) {
        /* -n mode: the workers stop by themselves; -d still bounds it. */
        uint64_t limit = cfg.duration_set && cfg.duration > 0
                             ? (uint64_t)(cfg.duration * 1e9)
                             : UINT64_MAX;
        for (;;) {
            struct timespec ts = {0, 2000000};
            bool busy = false;
            for (unsigned i = 0; i < cfg.conns; i++) {
                /* Reading another thread's fd is a benign race here: it
                 * only decides when to look again. */
                busy |= __atomic_load_n(&conns[i].fd, __ATOMIC_RELAXED) >= 0;
            }
            if (!busy && atomic_load(&remaining) <= 0) {
                break;
            }
            if (now_ns() - t0 >= limit) {
                atomic_store(&phase, PHASE_STOP);
                break;
            }
            nanosleep(&ts, NULL);
        }
    } else {
        struct timespec ts;
        if (cfg.warmup > 0) {
            ts.tv_sec = (time_t)cfg.warmup;
            ts.tv_nsec = (long)((cfg.warmup - (double)ts.tv_sec) * 1e9);
            nanosleep(&ts, NULL);
            t0 = now_ns();
            atomic_store(&phase, PHASE_MEASURE);
        }
        ts.tv_sec = (time_t)cfg.duration;
        ts.tv_nsec = (long)((cfg.duration - (double)ts.tv_sec) * 1e9);
        nanosleep(&ts, NULL);
        atomic_store(&phase, PHASE_STOP);
    }
    for (unsigned i = 0; i < cfg.threads; i++) {
        pthread_join(ws[i].tid, NULL);
    }
    t1 = now_ns();
    for (unsigned i = 0; i < cfg.threads; i++) {
        hist_merge(all, &ws[i].lat);
        ok += ws[i].ok;
        errors += ws[i].errors;
        reconnects += ws[i].reconnects;
        bytes_in += ws[i].bytes_in;
    }
    secs = (double)(t1 - t0) / 1e9;
    if (cfg.count <= 0) {
        /* Count only the measured window, not the join. */
        secs = cfg.duration;
    }

    {
        double rps = secs > 0 ? (double)ok / secs : 0;
        double p50 = (double)hist_quantile(all, 0.50) / 1e6;
        double p90 = (double)hist_quantile(all, 0.90) / 1e6;
        double p99 = (double)hist_quantile(all, 0.99) / 1e6;
        double mean = all->n ? (double)all->sum / (double)all->n / 1e6 : 0;
        double mn = (double)all->min / 1e6, mx = (double)all->max / 1e6;
        double avg_resp = ok + errors ? (double)bytes_in / (ok + errors) : 0;

        if (cfg.json) {
            printf("{\"requests\": %" PRIu64 ", \"errors\": %" PRIu64
                   ", \"reconnects\": %" PRIu64 ", \"seconds\": %.6f"
                   ", \"rps\": %.1f, \"connections\": %u, \"threads\": %u"
                   ", \"lat_ms\": {\"min\": %.4f, \"mean\": %.4f"
                   ", \"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f"
                   ", \"max\": %.4f}, \"response_bytes\": %.0f}\n",
                   ok, errors, reconnects, secs, rps, cfg.conns, cfg.threads,
                   mn, mean, p50, p90, p99, mx, avg_resp);
        } else {
            printf("%" PRIu64 " requests in %.2f s, %u connections, "
                   "%u threads: %.0f requests/s\n",
                   ok, secs, cfg.conns, cfg.threads, rps);
            printf("latency ms: min %.3f  p50 %.3f  p90 %.3f  p99 %.3f  "
                   "max %.3f  mean %.3f\n",
                   mn, p50, p90, p99, mx, mean);
            printf("errors %" PRIu64 ", reconnects %" PRIu64
                   ", response %.0f bytes\n",
                   errors, reconnects, avg_resp);
        }
    }
    freeaddrinfo(target);
    for (unsigned i = 0; i < cfg.conns; i++) {
        free(conns[i].buf);
    }
    free(conns);
    free(ws);
    free(all);
    free(request);
    return errors ? 1 : 0;
}
