/* mig_stream.c - the byte stream of a live migration between two pool
 * hosts: a dedicated TLS connection to the destination's xapid,
 * negotiated over the pool link, never a plain TCP port opened to QEMU.
 *
 * The destination's prepare (vm_migrate.c) hands one end of a socketpair
 * to its driver's migrate_receive and gives the other here, under a
 * one-time token that it answers over the pinned pool link.  The source
 * dials the destination's HTTPS port itself (checking its certificate
 * against the pool's pins before a byte is sent), asks
 * "CONNECT /migrate?token=T", and once answered 200 relays what its own
 * driver writes into a socketpair; the destination relays what
 * arrives into the socketpair.  Either relay stops at the first error and
 * closes both of its ends, which fails the migration on the other side
 * too.
 *
 * Storage motion adds duplex streams: the destination registers a unix
 * socket (its QEMU's NBD server) under a token instead of a descriptor,
 * connects to it when the stream arrives and relays both ways; the
 * source's duplex dial relays both ways between the TLS connection and
 * its socketpair (one NBD connection per stream).  Across pools the
 * destination is not among the pool's pins: the caller names the
 * fingerprint the certificate must have (it came in the dest map, over
 * the destination's own API).
 *
 * Fault injection for the tests, XAPID_MIG_FAULTS (comma separated):
 *   refuse[:N]  the destination answers 403 to every stream (the first N)
 *   cut:BYTES   the source cuts its next stream after BYTES bytes (once)
 *   nbdcut:BYTES  the same for its first duplex (disk mirror) stream
 *   disks[:N]   the destination fails the disk copies of a storage
 *               motion once they came (vm_migrate_disks.c)
 *   commit[:N]  the destination fails commit after the stream's end
 *               (every time, or the first N; see vm_migrate.c) */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/vm_migrate.h"
#include "hmap.h"
#include "http/http.h"
#include "log.h"
#include "pool/pool-internal.h"
#include "rpc.h"

#define LOG                "migrate"
/* How long a prepared stream waits for its source, and a source for
 * its QEMU to connect: a migration that has not started by then failed. */
#define CONNECT_TIMEOUT_MS 60000
#define CHUNK              (1024 * 1024)
/* Socket buffers of the relays: fewer hand-overs between the four
 * processes of a stream on a busy host (root may exceed wmem_max). */
#define SOCKBUF            (8 * 1024 * 1024)

/* ---- fault injection ---------------------------------------------- */

static const char *
fault(const char *name)
{
    const char *f = getenv("XAPID_MIG_FAULTS");
    size_t n = strlen(name);
    for (const char *p = f; p && *p;) {
        if (strncmp(p, name, n) == 0 &&
            (p[n] == '\0' || p[n] == ',' || p[n] == ':')) {
            return p[n] == ':' ? p + n + 1 : "";
        }
        p = strchr(p, ',');
        p = p ? p + 1 : NULL;
    }
    return NULL;
}

bool
xa_mig_fault_count(const char *name, atomic_int *used)
{
    const char *f = fault(name);
    if (!f) {
        return false;
    }
    return !*f || atomic_fetch_add(used, 1) < atoi(f);
}

bool
xa_mig_write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        buf += w;
        n -= (size_t)w;
    }
    return true;
}

/* ---- the destination ---------------------------------------------- */

static pthread_mutex_t expect_lock = PTHREAD_MUTEX_INITIALIZER;
/* What a token stands for: a socketpair end (one-way stream) or a unix
 * socket to connect to when the stream arrives (duplex). */
struct expect {
    int fd;
    char *unix_path;
};
static struct xa_hmap expected; /* token -> struct expect */
static bool expected_init;

static void
big_buffers(int fd)
{
    int n = SOCKBUF;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &n, sizeof n) != 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof n);
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &n, sizeof n) != 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &n, sizeof n);
    }
}

static char *
expect_add(int fd, const char *unix_path)
{
    unsigned char rnd[16];
    size_t got = 0;
    while (got < sizeof rnd) {
        ssize_t n = getrandom(rnd + got, sizeof rnd - got, 0);
        if (n > 0) {
            got += (size_t)n;
        }
    }
    char *token = xa_calloc(1, 2 * sizeof rnd + 1);
    for (size_t i = 0; i < sizeof rnd; i++) {
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
    }
    struct expect *p = xa_calloc(1, sizeof *p);
    p->fd = fd;
    p->unix_path = unix_path ? xa_strdup(unix_path) : NULL;
    pthread_mutex_lock(&expect_lock);
    if (!expected_init) {
        xa_hmap_init(&expected);
        expected_init = true;
    }
    xa_hmap_put(&expected, token, p);
    pthread_mutex_unlock(&expect_lock);
    return token;
}

char *
xa_mig_stream_expect(int fd)
{
    big_buffers(fd);
    return expect_add(fd, NULL);
}

char *
xa_mig_stream_expect_unix(const char *path)
{
    return expect_add(-1, path);
}

/* What was prepared under 'token', which is used up; NULL when none. */
static struct expect *
expect_take(const char *token)
{
    pthread_mutex_lock(&expect_lock);
    struct expect *p =
        expected_init && token ? xa_hmap_get(&expected, token) : NULL;
    if (p) {
        xa_hmap_remove(&expected, token);
    }
    pthread_mutex_unlock(&expect_lock);
    return p;
}

static void
expect_free(struct expect *p)
{
    if (p) {
        if (p->fd >= 0) {
            close(p->fd);
        }
        free(p->unix_path);
        free(p);
    }
}

void
xa_mig_stream_forget(const char *token)
{
    expect_free(expect_take(token));
}

struct inbound {
    struct xa_http_request *req;
    gnutls_session_t tls;
    int sock;    /* MHD's, not ours */
    int out;     /* the socketpair end toward the driver */
    bool duplex; /* 'out' is a connection to a unix socket: both ways */
    int wake[2]; /* duplex: written when the way back ends */
    pthread_t back;
};

/* Sends all of 'buf' on the non-blocking TLS connection. */
static bool
tls_send_all(gnutls_session_t s, int sock, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = gnutls_record_send(s, buf, n);
        if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED) {
            struct pollfd p = {.fd = sock, .events = POLLOUT};
            if (poll(&p, 1, CONNECT_TIMEOUT_MS) <= 0) {
                return false;
            }
            continue;
        }
        if (w <= 0) {
            return false;
        }
        buf += w;
        n -= (size_t)w;
    }
    return true;
}

static void *
inbound_main(void *arg)
{
    struct inbound *in = arg;
    char *buf = xa_malloc(CHUNK);
    int64_t total = 0;
    const char *why = "end of stream";
    for (;;) {
        ssize_t n = gnutls_record_recv(in->tls, buf, CHUNK);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            /* a duplex stream (NBD) may stay idle as long as its source
             * likes: the way back ending wakes this one */
            struct pollfd p[2] = {{.fd = in->sock, .events = POLLIN},
                                  {.fd = in->wake[0], .events = POLLIN}};
            int r = poll(p, in->duplex ? 2 : 1,
                         in->duplex ? -1 : CONNECT_TIMEOUT_MS);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0 || (in->duplex && p[1].revents)) {
                why = in->duplex ? "the local end closed"
                                 : "the source went silent";
                break;
            }
            continue;
        }
        if (n == 0) {
            break;
        }
        if (n < 0) {
            why = gnutls_strerror((int)n);
            break;
        }
        if (!xa_mig_write_all(in->out, buf, (size_t)n)) {
            why = "the receiving domain went away";
            break;
        }
        total += n;
    }
    xa_log_info(LOG, "incoming %sstream: %lld bytes, %s",
                in->duplex ? "duplex " : "", (long long)total, why);
    free(buf);
    if (in->duplex) {
        /* wakes the way back, which owns nothing */
        shutdown(in->out, SHUT_RDWR);
        pthread_join(in->back, NULL);
        close(in->wake[0]);
        close(in->wake[1]);
    }
    close(in->out);
    xa_http_hangup(in->req);
    free(in);
    return NULL;
}

/* Duplex streams: what the local end (QEMU's NBD server) answers goes
 * back to the source; the session sends here while inbound_main()
 * receives (GnuTLS allows one sender and one receiver at once). */
static void *
inbound_back(void *arg)
{
    struct inbound *in = arg;
    char *buf = xa_malloc(CHUNK);
    for (;;) {
        ssize_t n = read(in->out, buf, CHUNK);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || !tls_send_all(in->tls, in->sock, buf, (size_t)n)) {
            break;
        }
    }
    free(buf);
    if (write(in->wake[1], "x", 1) != 1) {
        xa_log_warn(LOG, "cannot wake a duplex stream");
    }
    return NULL;
}

static int
unix_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static bool
refuse_now(void)
{
    static atomic_int refused;
    return xa_mig_fault_count("refuse", &refused);
}

static void
refuse(struct xa_http_request *r, int status, const char *text)
{
    xa_http_respond(r, status, "text/plain", xa_strdup(text), strlen(text));
}

static void
stream_handler(struct xa_http_request *r, void *ctx)
{
    XA_UNUSED(ctx);
    if (refuse_now()) {
        xa_mig_stream_forget(xa_http_query(r, "token"));
        refuse(r, 403, "Migration refused (fault injection)\n");
        return;
    }
    void *tls = NULL;
    int sock = xa_http_take_tls(r, &tls);
    if (sock < 0) {
        refuse(r, 400, "Migration streams need HTTPS\n");
        return;
    }
    struct expect *e = expect_take(xa_http_query(r, "token"));
    if (!e) {
        refuse(r, 403, "No migration expects this token\n");
        return;
    }
    int out = e->fd;
    bool duplex = e->unix_path != NULL;
    if (duplex) {
        out = unix_connect(e->unix_path);
        if (out < 0) {
            xa_log_warn(LOG, "%s: %s", e->unix_path, strerror(errno));
        }
    }
    e->fd = -1;
    expect_free(e);
    if (out < 0) {
        refuse(r, 503, "The destination of the stream is gone\n");
        return;
    }
    struct inbound *in = xa_calloc(1, sizeof *in);
    in->req = r;
    in->tls = tls;
    in->sock = sock;
    in->out = out;
    in->duplex = duplex;
    in->wake[0] = in->wake[1] = -1;
    if (duplex && pipe2(in->wake, O_CLOEXEC) != 0) {
        close(out);
        free(in);
        refuse(r, 503, "No pipe for the stream\n");
        return;
    }
    big_buffers(sock);
    /* Parked before the relay can finish and hang up. */
    xa_http_suspend(r);
    static const char ok[] = "HTTP/1.1 200 OK\r\n\r\n";
    pthread_t th;
    bool back = false;
    bool ok_sent = tls_send_all(in->tls, sock, ok, sizeof ok - 1);
    if (ok_sent && duplex) {
        back = pthread_create(&in->back, NULL, inbound_back, in) == 0;
    }
    if (!ok_sent || (duplex && !back) ||
        pthread_create(&th, NULL, inbound_main, in) != 0) {
        if (back) {
            shutdown(out, SHUT_RDWR);
            pthread_join(in->back, NULL);
        }
        if (duplex) {
            close(in->wake[0]);
            close(in->wake[1]);
        }
        close(out);
        xa_http_hangup(r);
        free(in);
        return;
    }
    pthread_detach(th);
}

void
xa_mig_stream_init(void)
{
    xa_rpc_add_route("CONNECT", "/migrate", stream_handler, NULL);
}

/* ---- the source --------------------------------------------------- */

struct xa_mig_out {
    SSL_CTX *ctx;
    SSL *ssl;
    int tcp;
    int in;      /* the relay reads the driver's stream here */
    int driver;  /* the driver writes here (closed once it was handed on) */
    int wake[2]; /* written to stop the relay */
    pthread_t th;
    bool started;
    int64_t cut_after; /* fault injection; -1: never */
    int64_t bytes;
    char *error; /* why the relay stopped early, or NULL */
    /* duplex: a second thread takes what the destination sends back;
     * the two share 'ssl' (non-blocking then) under 'ssl_lock' */
    bool duplex;
    pthread_mutex_t ssl_lock;
    pthread_t back;
    bool back_started;
};

static char *
peer_fingerprint(SSL *ssl)
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!cert || !X509_digest(cert, EVP_sha256(), md, &len)) {
        X509_free(cert);
        return NULL;
    }
    X509_free(cert);
    char *fp = xa_calloc(1, 3 * (size_t)len + 1);
    for (unsigned int i = 0; i < len; i++) {
        snprintf(fp + 3 * i, 4, i + 1 < len ? "%02X:" : "%02X", md[i]);
    }
    return fp;
}

static int
tcp_connect(const char *addr, int port)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(addr, ps, &hints, &ai) != 0) {
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    return fd;
}

/* TLS to 'addr' with a pinned certificate (the pool's pins, or exactly
 * 'fingerprint' when given), then CONNECT /migrate. */
static struct xa_error *
dial(struct xa_mig_out *o, const char *addr, int port, const char *fingerprint,
     const char *token)
{
    o->tcp = tcp_connect(addr, port > 0 ? port : xa_pool_g.cfg.https_port);
    if (o->tcp < 0) {
        return xa_error_internal("cannot reach %s: %s", addr, strerror(errno));
    }
    big_buffers(o->tcp);
    o->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(o->ctx, TLS1_2_VERSION);
    o->ssl = SSL_new(o->ctx);
    SSL_set_fd(o->ssl, o->tcp);
    if (SSL_connect(o->ssl) != 1) {
        return xa_error_internal("TLS handshake with %s failed", addr);
    }
    /* Checked before the token goes out: a stranger never sees it. */
    char *fp = peer_fingerprint(o->ssl);
    bool ok =
        fp && (fingerprint && *fingerprint ? strcasecmp(fp, fingerprint) == 0
                                           : xa_pool_fingerprint_trusted(fp));
    if (!ok) {
        xa_log_warn(LOG, "refusing %s: certificate %s is not pinned", addr,
                    fp ? fp : "?");
        free(fp);
        return xa_error_internal("%s's certificate is not pinned", addr);
    }
    free(fp);
    char *req = xa_asprintf("CONNECT /migrate?token=%s HTTP/1.1\r\n"
                            "Host: %s\r\n\r\n",
                            token, addr);
    int len = (int)strlen(req);
    int w = SSL_write(o->ssl, req, len);
    free(req);
    if (w != len) {
        return xa_error_internal("%s closed the migration stream", addr);
    }
    /* The answer's head, byte by byte: nothing after it is ours to read. */
    char head[1024];
    size_t n = 0;
    while (n + 1 < sizeof head) {
        if (SSL_read(o->ssl, head + n, 1) != 1) {
            break;
        }
        n++;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0) {
            break;
        }
    }
    head[n] = '\0';
    if (strncmp(head, "HTTP/1.", 7) != 0 || strncmp(head + 8, " 200", 4) != 0) {
        char *eol = strchr(head, '\r');
        if (eol) {
            *eol = '\0';
        }
        return xa_error_internal("%s refused the stream: %s", addr,
                                 *head ? head : "no answer");
    }
    return NULL;
}

/* The driver's end of the stream: a socketpair whose big buffer lets
 * the sender run ahead of the relay on a busy host. */
static struct xa_error *
make_pair(struct xa_mig_out *o)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return xa_error_internal("socketpair: %s", strerror(errno));
    }
    big_buffers(sv[0]);
    big_buffers(sv[1]);
    o->in = sv[0];
    o->driver = sv[1];
    return NULL;
}

static void
set_error(struct xa_mig_out *o, const char *why)
{
    if (!o->error) {
        o->error = xa_strdup(why);
    }
}

/* Waits for 'fd' to be readable; false when told to stop or timed out. */
static bool
wait_readable(struct xa_mig_out *o, int fd, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
                          {.fd = o->wake[0], .events = POLLIN}};
    for (;;) {
        int n = poll(p, 2, timeout_ms);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n > 0 && !(p[1].revents & POLLIN);
    }
}

/* Duplex: waits for 'events' on the TCP socket (or a stop). */
static bool
wait_tcp(struct xa_mig_out *o, short events)
{
    struct pollfd p[2] = {{.fd = o->tcp, .events = events},
                          {.fd = o->wake[0], .events = POLLIN}};
    for (;;) {
        int n = poll(p, 2, 1000);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        /* a timeout retries: the other thread may have moved the session */
        return n >= 0 && !(p[1].revents & POLLIN);
    }
}

/* Duplex: all of 'buf' through the shared, non-blocking session. */
static bool
ssl_write_shared(struct xa_mig_out *o, const char *buf, size_t n)
{
    while (n > 0) {
        pthread_mutex_lock(&o->ssl_lock);
        int w = SSL_write(o->ssl, buf, (int)n);
        int e = w > 0 ? SSL_ERROR_NONE : SSL_get_error(o->ssl, w);
        pthread_mutex_unlock(&o->ssl_lock);
        if (w > 0) {
            buf += w;
            n -= (size_t)w;
            continue;
        }
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
            return false;
        }
        if (!wait_tcp(o, e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN)) {
            return false;
        }
    }
    return true;
}

/* Duplex: what the destination sends back goes to the driver. */
static void *
outbound_back(void *arg)
{
    struct xa_mig_out *o = arg;
    char *buf = xa_malloc(CHUNK);
    for (;;) {
        pthread_mutex_lock(&o->ssl_lock);
        int n = SSL_read(o->ssl, buf, CHUNK);
        int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(o->ssl, n);
        pthread_mutex_unlock(&o->ssl_lock);
        if (n > 0) {
            if (!xa_mig_write_all(o->in, buf, (size_t)n)) {
                break;
            }
            continue;
        }
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
            !wait_tcp(o, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT)) {
            break;
        }
    }
    free(buf);
    /* the driver sees the end; the way out stops on its own */
    shutdown(o->in, SHUT_RDWR);
    return NULL;
}

static void *
outbound_main(void *arg)
{
    struct xa_mig_out *o = arg;
    int in = o->in;
    char *buf = xa_malloc(CHUNK);
    for (;;) {
        /* no timeout: the driver bounds the migration's length */
        if (!wait_readable(o, in, -1)) {
            set_error(o, "stopped");
            break;
        }
        ssize_t n = read(in, buf, CHUNK);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0) {
            break;
        }
        if (n < 0) {
            set_error(o, strerror(errno));
            break;
        }
        if (o->cut_after >= 0 && o->bytes + n > o->cut_after) {
            xa_log_warn(LOG, "cutting the stream after %lld bytes (fault)",
                        (long long)o->bytes);
            set_error(o, "cut (fault injection)");
            break;
        }
        if (!(o->duplex ? ssl_write_shared(o, buf, (size_t)n)
                        : SSL_write(o->ssl, buf, (int)n) == (int)n)) {
            set_error(o, "the destination closed the stream");
            break;
        }
        o->bytes += n;
    }
    free(buf);
    if (!o->error) {
        /* the end, not a cut (a duplex session is shared: locked) */
        pthread_mutex_lock(&o->ssl_lock);
        SSL_shutdown(o->ssl);
        pthread_mutex_unlock(&o->ssl_lock);
    }
    /* Closing both ends fails the migration on either side at once. */
    shutdown(o->tcp, SHUT_RDWR);
    shutdown(in, SHUT_RDWR);
    return NULL;
}

struct xa_error *
xa_mig_stream_dial(const char *addr, const char *token, struct xa_mig_out **out,
                   int *driver_fd)
{
    struct xa_mig_dest d = {addr, 0, NULL};
    return xa_mig_stream_dial_to(&d, token, false, out, driver_fd);
}

struct xa_error *
xa_mig_stream_dial_to(const struct xa_mig_dest *dest, const char *token,
                      bool duplex, struct xa_mig_out **out, int *driver_fd)
{
    struct xa_mig_out *o = xa_calloc(1, sizeof *o);
    o->tcp = o->in = o->driver = o->wake[0] = o->wake[1] = -1;
    o->cut_after = -1;
    o->duplex = duplex;
    pthread_mutex_init(&o->ssl_lock, NULL);
    *out = o;
    struct xa_error *err =
        dial(o, dest->addr, dest->port, dest->fingerprint, token);
    static atomic_int cuts, nbd_cuts;
    const char *cut = err ? NULL : fault(duplex ? "nbdcut" : "cut");
    if (cut && atomic_fetch_add(duplex ? &nbd_cuts : &cuts, 1) == 0) {
        o->cut_after = atoll(cut); /* the first stream that flows */
    }
    if (!err) {
        err = make_pair(o);
    }
    if (!err && pipe2(o->wake, O_CLOEXEC) != 0) {
        err = xa_error_internal("pipe: %s", strerror(errno));
    }
    if (!err && duplex) {
        SSL_set_mode(o->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        int fl = fcntl(o->tcp, F_GETFL);
        if (fl < 0 || fcntl(o->tcp, F_SETFL, fl | O_NONBLOCK) != 0) {
            err = xa_error_internal("fcntl: %s", strerror(errno));
        }
    }
    if (!err && duplex) {
        o->back_started = pthread_create(&o->back, NULL, outbound_back, o) == 0;
        if (!o->back_started) {
            err = xa_error_internal("cannot start the stream relay");
        }
    }
    if (!err) {
        o->started = pthread_create(&o->th, NULL, outbound_main, o) == 0;
        if (!o->started) {
            err = xa_error_internal("cannot start the stream relay");
        }
    }
    if (!err) {
        *driver_fd = o->driver;
    }
    return err;
}

struct xa_error *
xa_mig_stream_finish(struct xa_mig_out *o, bool stop, int64_t *bytes)
{
    if (!o) {
        return NULL;
    }
    if (o->driver >= 0) {
        /* the driver's copy alone keeps the stream open now */
        close(o->driver);
        o->driver = -1;
    }
    if (o->duplex && o->back_started && o->wake[1] >= 0) {
        /* a duplex stream ends when its owner says so: a close_notify
         * first (best effort, the socket does not block) tells the
         * destination it is the end, not a cut */
        pthread_mutex_lock(&o->ssl_lock);
        if (!o->error && !(SSL_get_shutdown(o->ssl) & SSL_SENT_SHUTDOWN)) {
            SSL_shutdown(o->ssl);
        }
        pthread_mutex_unlock(&o->ssl_lock);
        stop = true;
    }
    if ((o->started || o->back_started) && stop &&
        write(o->wake[1], "x", 1) != 1) {
        xa_log_warn(LOG, "cannot stop the stream relay");
    }
    if (o->started) {
        pthread_join(o->th, NULL);
    }
    if (o->back_started) {
        pthread_join(o->back, NULL);
    }
    pthread_mutex_destroy(&o->ssl_lock);
    struct xa_error *err =
        o->error && !stop ? xa_error_internal("migration stream: %s", o->error)
                          : NULL;
    if (bytes) {
        *bytes = o->bytes;
    }
    if (o->ssl) {
        SSL_free(o->ssl);
    }
    if (o->ctx) {
        SSL_CTX_free(o->ctx);
    }
    int fds[] = {o->tcp, o->in, o->wake[0], o->wake[1]};
    for (size_t i = 0; i < XA_ARRAY_SIZE(fds); i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    free(o->error);
    free(o);
    return err;
}
