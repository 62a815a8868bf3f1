/* test-http.c - the HTTP(S) layer against a real libcurl client: keep-alive,
 * body limits, request accessors, suspended requests answered from other
 * threads or abandoned by their clients, shutdown with parked requests,
 * and HTTPS with a freshly generated certificate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http/cert.h"
#include "http/http.h"
#include "util.h"

#define MAX_BODY (64 * 1024)

static struct xa_http_server *g_server;
static char g_dir[] = "/tmp/xa-test-http-XXXXXX";
static char *g_cert, *g_key;

/* A request the /hang handler parked, for the test to answer. */
static pthread_mutex_t g_hang_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_hang_cond = PTHREAD_COND_INITIALIZER;
static struct xa_http_request *g_hang;
static atomic_int g_late_threads;

/* ---- the server side ----------------------------------------------- */

struct late {
    struct xa_http_request *req;
    unsigned delay_us;
};

static void *
late_answer(void *arg)
{
    struct late *l = arg;

    if (l->delay_us) {
        usleep(l->delay_us);
    }
    xa_http_respond(l->req, 200, "text/plain", xa_strdup("late"), 4);
    free(l);
    atomic_fetch_sub(&g_late_threads, 1);
    return NULL;
}

static void
answer_from_thread(struct xa_http_request *r, unsigned delay_us)
{
    struct late *l = xa_malloc(sizeof(*l));
    pthread_t t;

    l->req = r;
    l->delay_us = delay_us;
    atomic_fetch_add(&g_late_threads, 1);
    /* No cmocka asserts here: this runs on a server thread. */
    if (pthread_create(&t, NULL, late_answer, l) != 0) {
        abort();
    }
    pthread_detach(t);
}

static const char *
or_null(const char *s)
{
    return s ? s : "(null)";
}

static void
handler(struct xa_http_request *r, void *ctx)
{
    const char *path = xa_http_path(r);
    size_t len;
    const char *body = xa_http_body(r, &len);

    if (ctx != &g_server) {
        abort();
    }
    if (xa_str_eq(path, "/echo")) {
        char *copy = xa_malloc(len + 1);
        memcpy(copy, body, len);
        xa_http_respond(r, 200, "application/octet-stream", copy, len);
    } else if (xa_str_eq(path, "/info")) {
        char *text =
            xa_asprintf("method=%s\npath=%s\na=%s\nflag=%s\nv1=%s\nv2=%s\n"
                        "cookie=%s\nhdr=%s\ntls=%d\nremote=%s\nbody=%zu\n",
                        xa_http_method(r), path, or_null(xa_http_query(r, "a")),
                        or_null(xa_http_query(r, "flag")),
                        or_null(xa_http_query_nth(r, "v", 1)),
                        or_null(xa_http_query_nth(r, "v", 2)),
                        or_null(xa_http_cookie(r, "session_id")),
                        or_null(xa_http_header(r, "x-TEST")), xa_http_is_tls(r),
                        xa_http_remote_addr(r), len);
        xa_http_add_header(r, "X-Reply", "yes");
        xa_http_respond(r, 200, "text/plain", text, strlen(text));
    } else if (xa_str_eq(path, "/late")) {
        xa_http_suspend(r);
        answer_from_thread(r, 100 * 1000);
    } else if (xa_str_eq(path, "/race")) {
        /* Answered from another thread while this handler may still be
         * running: the response can arrive before the suspension. */
        xa_http_suspend(r);
        answer_from_thread(r, 0);
    } else if (xa_str_eq(path, "/inline")) {
        xa_http_suspend(r);
        xa_http_respond(r, 202, NULL, NULL, 0);
    } else if (xa_str_eq(path, "/hang")) {
        xa_http_suspend(r);
        pthread_mutex_lock(&g_hang_mu);
        g_hang = r;
        pthread_cond_broadcast(&g_hang_cond);
        pthread_mutex_unlock(&g_hang_mu);
    } else if (xa_str_eq(path, "/noanswer")) {
        /* A buggy handler: the layer must answer 500 on its behalf. */
    } else if (xa_str_eq(xa_http_method(r), "OPTIONS")) {
        xa_http_add_header(r, "Access-Control-Allow-Methods", "POST, GET");
        xa_http_respond(r, 204, NULL, NULL, 0);
    } else {
        xa_http_respond(r, 404, "text/plain", xa_strdup("no\n"), 3);
    }
}

static struct xa_http_request *
wait_hang(void)
{
    struct xa_http_request *r;
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&g_hang_mu);
    while (!g_hang) {
        if (pthread_cond_timedwait(&g_hang_cond, &g_hang_mu, &until) ==
            ETIMEDOUT) {
            break;
        }
    }
    r = g_hang;
    g_hang = NULL;
    pthread_mutex_unlock(&g_hang_mu);
    return r;
}

static struct xa_error *
start(const char *address, bool https, struct xa_http_server **ret)
{
    struct xa_http_config cfg = {
        .bind_address = address,
        .http_port = -1,
        .https_port = https ? -1 : 0,
        .cert_file = g_cert,
        .key_file = g_key,
        .threads = 4,
        .max_body = MAX_BODY,
        .connection_timeout = 30,
        .handler = handler,
        .handler_ctx = &g_server,
    };
    return xa_http_start(&cfg, ret);
}

/* ---- the client side ----------------------------------------------- */

struct reply {
    long status;
    struct xa_buf body;
    struct xa_buf headers;
};

static size_t
collect(char *p, size_t size, size_t n, void *ud)
{
    xa_buf_append(ud, p, size * n);
    return size * n;
}

static void
reply_free(struct reply *rep)
{
    xa_buf_free(&rep->body);
    xa_buf_free(&rep->headers);
}

/* Performs one request on 'h' (reused for keep-alive); returns the curl
 * result.  'body' NULL means GET unless 'method' says otherwise. */
static CURLcode
perform(CURL *h, const char *url, const char *method, const char *body,
        size_t len, struct reply *rep)
{
    CURLcode rc;

    memset(rep, 0, sizeof(*rep));
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &rep->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &rep->headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rep->status);
    return rc;
}

static char *
url(const char *path, bool tls)
{
    return xa_asprintf("%s://127.0.0.1:%d%s", tls ? "https" : "http",
                       xa_http_port(g_server, tls), path);
}

static bool
has_header(const struct reply *rep, const char *line)
{
    return rep->headers.data && strcasestr(rep->headers.data, line);
}

/* Raw socket to the plain listener, with a receive timeout. */
static int
raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 5};

    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static bool
raw_send(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads until the peer closes or 'until' appears; NUL-terminated. */
static char *
raw_read(int fd, const char *until)
{
    struct xa_buf b = {0};
    char chunk[4096];
    ssize_t n;

    while ((n = recv(fd, chunk, sizeof(chunk), 0)) > 0) {
        xa_buf_append(&b, chunk, (size_t)n);
        if (until && strstr(b.data, until)) {
            break;
        }
    }
    return xa_buf_steal(&b);
}

/* ---- tests ---------------------------------------------------------- */

static void
test_keepalive_echo(void **state)
{
    CURL *h = curl_easy_init();
    char *u = url("/echo", false);

    XA_UNUSED(state);
    for (int i = 0; i < 100; i++) {
        struct reply rep;
        char *msg = xa_asprintf("hello %d %s", i, i % 7 ? "" : "\x01\x02");
        long connects = -1;

        assert_int_equal(perform(h, u, NULL, msg, strlen(msg), &rep), CURLE_OK);
        assert_int_equal(rep.status, 200);
        assert_int_equal(rep.body.len, strlen(msg));
        assert_memory_equal(rep.body.data, msg, strlen(msg));
        assert_true(has_header(&rep, "Access-Control-Allow-Origin: *"));
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
        assert_int_equal(connects, i == 0 ? 1 : 0);
        reply_free(&rep);
        free(msg);
    }
    free(u);
    curl_easy_cleanup(h);
}

static void
test_accessors(void **state)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "X-Test: hello there");
    char *u = url("/info?a=1%202&flag&v=x&v=y&v=z", false);
    struct reply rep;

    XA_UNUSED(state);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_COOKIE, "other=1; session_id=OpaqueRef:abc");
    assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
    assert_int_equal(rep.status, 200);
    assert_non_null(strstr(rep.body.data, "method=GET\n"));
    assert_non_null(strstr(rep.body.data, "path=/info\n"));
    assert_non_null(strstr(rep.body.data, "a=1 2\n"));
    assert_non_null(strstr(rep.body.data, "flag=\n"));
    assert_non_null(strstr(rep.body.data, "v1=y\nv2=z\n"));
    assert_non_null(strstr(rep.body.data, "cookie=OpaqueRef:abc\n"));
    assert_non_null(strstr(rep.body.data, "hdr=hello there\n"));
    assert_non_null(strstr(rep.body.data, "tls=0\n"));
    assert_non_null(strstr(rep.body.data, "remote=127.0.0.1\n"));
    assert_true(has_header(&rep, "X-Reply: yes"));
    assert_true(has_header(&rep, "Access-Control-Allow-Origin: *"));
    assert_true(has_header(&rep, "Content-Type: text/plain"));
    reply_free(&rep);
    free(u);

    /* OPTIONS reaches the handler like any other method. */
    u = url("/jsonrpc", false);
    assert_int_equal(perform(h, u, "OPTIONS", NULL, 0, &rep), CURLE_OK);
    assert_int_equal(rep.status, 204);
    assert_true(has_header(&rep, "Access-Control-Allow-Methods: POST, GET"));
    assert_true(has_header(&rep, "Access-Control-Allow-Origin: *"));
    reply_free(&rep);
    free(u);

    /* Unknown paths are the handler's business too. */
    u = url("/nowhere", false);
    assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
    assert_int_equal(rep.status, 404);
    reply_free(&rep);
    free(u);

    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
}

static size_t
zeros(char *buf, size_t size, size_t n, void *ud)
{
    size_t *sent = ud;

    memset(buf, 0, size * n);
    *sent += size * n;
    return size * n;
}

static void
test_too_large_declared(void **state)
{
    int fd = raw_connect(xa_http_port(g_server, false));
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: 67108864\r\n\r\n";
    char *resp;
    CURL *h;
    char *u;
    struct reply rep;
    size_t sent = 0;

    XA_UNUSED(state);
    /* Headers only: the answer must come without the body being sent,
     * and the connection must then be closed. */
    assert_true(raw_send(fd, req, strlen(req)));
    resp = raw_read(fd, NULL);
    assert_true(xa_str_has_prefix(resp, "HTTP/1.1 413"));
    assert_non_null(strcasestr(resp, "Connection: close"));
    assert_non_null(strcasestr(resp, "Access-Control-Allow-Origin: *"));
    free(resp);
    close(fd);

    /* The same through curl, which streams the body if allowed. */
    h = curl_easy_init();
    u = url("/echo", false);
    memset(&rep, 0, sizeof(rep));
    curl_easy_setopt(h, CURLOPT_URL, u);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)64 * 1024 * 1024);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, zeros);
    curl_easy_setopt(h, CURLOPT_READDATA, &sent);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &rep.body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rep.status);
    assert_int_equal(rep.status, 413);
    assert_true(sent < 64 * 1024 * 1024);
    reply_free(&rep);
    free(u);
    curl_easy_cleanup(h);
}

static void
send_chunks(int fd, size_t total, size_t chunk)
{
    char *data = xa_malloc(chunk);
    char head[32];

    memset(data, 'x', chunk);
    for (size_t done = 0; done < total; done += chunk) {
        snprintf(head, sizeof(head), "%zx\r\n", chunk);
        if (!raw_send(fd, head, strlen(head)) || !raw_send(fd, data, chunk) ||
            !raw_send(fd, "\r\n", 2)) {
            break; /* the server may hang up on a runaway body */
        }
    }
    raw_send(fd, "0\r\n\r\n", 5);
    free(data);
}

static void
test_chunked(void **state)
{
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n";
    int port = xa_http_port(g_server, false);
    int fd;
    char *resp;

    XA_UNUSED(state);
    /* Under the limit: echoed back. */
    fd = raw_connect(port);
    assert_true(raw_send(fd, req, strlen(req)));
    send_chunks(fd, 32 * 1024, 8 * 1024);
    resp = raw_read(fd, "xxxxxxxx");
    assert_true(xa_str_has_prefix(resp, "HTTP/1.1 200"));
    assert_non_null(strstr(resp, "Content-Length: 32768"));
    free(resp);
    close(fd);

    /* Over the limit: refused, nothing buffered past max_body. */
    fd = raw_connect(port);
    assert_true(raw_send(fd, req, strlen(req)));
    send_chunks(fd, 2 * MAX_BODY, 16 * 1024);
    resp = raw_read(fd, NULL);
    assert_true(xa_str_has_prefix(resp, "HTTP/1.1 413"));
    assert_non_null(strcasestr(resp, "Connection: close"));
    free(resp);
    close(fd);

    /* A body that keeps coming is cut off rather than read forever. */
    fd = raw_connect(port);
    assert_true(raw_send(fd, req, strlen(req)));
    send_chunks(fd, 8 * 1024 * 1024, 64 * 1024);
    resp = raw_read(fd, NULL);
    assert_false(xa_str_has_prefix(resp, "HTTP/1.1 200"));
    free(resp);
    close(fd);
}

static void
test_suspended(void **state)
{
    CURL *h = curl_easy_init();
    char *u = url("/late", false);
    struct reply rep;
    double t0 = xa_monotonic(), dt;
    long connects = -1;

    XA_UNUSED(state);
    assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
    dt = xa_monotonic() - t0;
    assert_int_equal(rep.status, 200);
    assert_string_equal(rep.body.data, "late");
    assert_true(has_header(&rep, "Access-Control-Allow-Origin: *"));
    assert_true(dt >= 0.09);
    reply_free(&rep);
    free(u);

    /* Suspend racing with an immediate answer, on one kept-alive
     * connection, and the suspend-then-answer-inline case. */
    u = url("/race", false);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
        assert_int_equal(rep.status, 200);
        assert_string_equal(rep.body.data, "late");
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
        assert_int_equal(connects, 0);
        reply_free(&rep);
    }
    free(u);
    u = url("/inline", false);
    assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
    assert_int_equal(rep.status, 202);
    assert_int_equal(rep.body.len, 0);
    reply_free(&rep);
    free(u);

    /* A handler that forgets to answer gets a 500 from the layer. */
    u = url("/noanswer", false);
    assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
    assert_int_equal(rep.status, 500);
    reply_free(&rep);
    free(u);
    curl_easy_cleanup(h);
}

static void
test_client_gone(void **state)
{
    CURL *h = curl_easy_init();
    char *u = url("/hang", false);
    struct reply rep;
    struct xa_http_request *r;

    XA_UNUSED(state);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 300L);
    assert_int_equal(perform(h, u, NULL, NULL, 0, &rep),
                     CURLE_OPERATION_TIMEDOUT);
    reply_free(&rep);
    curl_easy_cleanup(h); /* closes the socket */
    free(u);

    r = wait_hang();
    assert_non_null(r);
    /* The request is still usable after the client left... */
    assert_string_equal(xa_http_path(r), "/hang");
    usleep(50 * 1000);
    /* ...and answering it is harmless. */
    xa_http_respond(r, 200, "text/plain", xa_strdup("too late"), 8);

    /* The server carries on. */
    h = curl_easy_init();
    u = url("/echo", false);
    assert_int_equal(perform(h, u, NULL, "ok", 2, &rep), CURLE_OK);
    assert_int_equal(rep.status, 200);
    reply_free(&rep);
    free(u);
    curl_easy_cleanup(h);
}

static void
test_https(void **state)
{
    CURL *h = curl_easy_init();
    char *u = url("/info", true);
    struct reply rep;
    long connects = -1;
    char *fp;
    struct stat st;
    FILE *f;
    char line[64] = "";

    XA_UNUSED(state);
    curl_easy_setopt(h, CURLOPT_CAINFO, g_cert);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
        assert_int_equal(rep.status, 200);
        assert_non_null(strstr(rep.body.data, "tls=1\n"));
        assert_true(has_header(&rep, "Access-Control-Allow-Origin: *"));
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
        assert_int_equal(connects, i == 0 ? 1 : 0);
        reply_free(&rep);
    }
    free(u);

    /* Suspension works the same over TLS. */
    u = url("/late", true);
    assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
    assert_int_equal(rep.status, 200);
    assert_string_equal(rep.body.data, "late");
    reply_free(&rep);
    free(u);
    curl_easy_cleanup(h);

    /* Without the certificate as trust anchor, verification fails. */
    h = curl_easy_init();
    u = url("/info", true);
    curl_easy_setopt(h, CURLOPT_CAINFO, "/dev/null");
    assert_int_not_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
    reply_free(&rep);
    free(u);
    curl_easy_cleanup(h);

    /* Key file private and PKCS#8. */
    assert_int_equal(stat(g_key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    f = fopen(g_key, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_string_equal(line, "-----BEGIN PRIVATE KEY-----\n");

    /* Fingerprint: 32 uppercase hex pairs, stable across reuse. */
    fp = xa_cert_fingerprint_sha256(g_cert);
    assert_non_null(fp);
    assert_int_equal(strlen(fp), 95);
    for (size_t i = 0; i < 95; i++) {
        if (i % 3 == 2) {
            assert_int_equal(fp[i], ':');
        } else {
            assert_true(strchr("0123456789ABCDEF", fp[i]) != NULL);
        }
    }
    {
        char *c2 = NULL, *k2 = NULL, *fp2;
        struct xa_error *err =
            xa_cert_ensure(g_dir, "server.pem", "server.key", &c2, &k2);
        assert_null(err);
        fp2 = xa_cert_fingerprint_sha256(c2);
        assert_string_equal(fp, fp2);
        free(fp2);
        free(c2);
        free(k2);
    }
    assert_null(xa_cert_fingerprint_sha256("/nonexistent/cert.pem"));
    free(fp);
}

/* One HTTPS request over a new connection, offering 'sess' for
 * resumption; returns whether the server resumed it and the session to
 * offer next time (caller frees). */
static bool
tls_request(SSL_CTX *ctx, SSL_SESSION *sess, SSL_SESSION **next)
{
    int fd = raw_connect(xa_http_port(g_server, true));
    SSL *ssl = SSL_new(ctx);
    const char *req = "GET /echo HTTP/1.1\r\nHost: x\r\n"
                      "Connection: close\r\n\r\n";
    char buf[4096];
    bool reused;

    assert_non_null(ssl);
    SSL_set_fd(ssl, fd);
    SSL_set1_host(ssl, "127.0.0.1");
    if (sess) {
        SSL_set_session(ssl, sess);
    }
    assert_int_equal(SSL_connect(ssl), 1);
    assert_int_equal(SSL_get_verify_result(ssl), X509_V_OK);
    assert_int_equal(SSL_write(ssl, req, (int)strlen(req)), (int)strlen(req));
    /* Reading to the end also collects TLS 1.3 tickets, which arrive
     * after the handshake. */
    while (SSL_read(ssl, buf, sizeof(buf)) > 0) {
    }
    reused = SSL_session_reused(ssl);
    *next = SSL_get1_session(ssl);
    /* Without a clean shutdown OpenSSL marks the session unresumable. */
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    return reused;
}

static void
test_tls_resumption(void **state)
{
    static const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};

    XA_UNUSED(state);
    for (size_t i = 0; i < XA_ARRAY_SIZE(versions); i++) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        SSL_SESSION *s1 = NULL, *s2 = NULL;

        assert_non_null(ctx);
        SSL_CTX_set_min_proto_version(ctx, versions[i]);
        SSL_CTX_set_max_proto_version(ctx, versions[i]);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        assert_int_equal(SSL_CTX_load_verify_locations(ctx, g_cert, NULL), 1);
        assert_false(tls_request(ctx, NULL, &s1));
        assert_non_null(s1);
        assert_true(tls_request(ctx, s1, &s2));
        SSL_SESSION_free(s1);
        SSL_SESSION_free(s2);
        SSL_CTX_free(ctx);
    }

    /* TLS 1.1 is refused. */
    {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        int fd = raw_connect(xa_http_port(g_server, true));
        SSL *ssl;

        SSL_CTX_set_security_level(ctx, 0);
        SSL_CTX_set_min_proto_version(ctx, TLS1_1_VERSION);
        SSL_CTX_set_max_proto_version(ctx, TLS1_1_VERSION);
        ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        assert_int_not_equal(SSL_connect(ssl), 1);
        SSL_free(ssl);
        SSL_CTX_free(ctx);
        close(fd);
    }
}

struct bg_get {
    int port;
    long status;
    CURLcode rc;
    double seconds;
};

static void *
bg_get(void *arg)
{
    struct bg_get *g = arg;
    CURL *h = curl_easy_init();
    char *u = xa_asprintf("http://127.0.0.1:%d/hang", g->port);
    struct reply rep;
    double t0 = xa_monotonic();

    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    g->rc = perform(h, u, NULL, NULL, 0, &rep);
    g->status = rep.status;
    g->seconds = xa_monotonic() - t0;
    reply_free(&rep);
    free(u);
    curl_easy_cleanup(h);
    return NULL;
}

static void
test_stop_with_parked(void **state)
{
    struct xa_http_server *s = NULL;
    struct bg_get g = {0};
    pthread_t t;
    struct xa_http_request *r;

    XA_UNUSED(state);
    assert_null(start("127.0.0.1", false, &s));
    g.port = xa_http_port(s, false);
    assert_int_not_equal(pthread_create(&t, NULL, bg_get, &g), -1);
    r = wait_hang();
    assert_non_null(r);
    /* Stopping with a parked request must neither hang nor abort... */
    xa_http_stop(s);
    pthread_join(t, NULL);
    assert_true(g.seconds < 5);
    assert_int_equal(g.rc, CURLE_OK);
    assert_int_equal(g.status, 503);
    /* ...and its handler may still answer afterwards. */
    assert_string_equal(xa_http_path(r), "/hang");
    xa_http_respond(r, 200, NULL, xa_strdup("x"), 1);
}

static void
test_ipv6_and_dual_stack(void **state)
{
    struct xa_http_server *s = NULL;
    struct xa_error *err;
    CURL *h;
    char *u;
    struct reply rep;

    XA_UNUSED(state);
    /* A bad address is an error, not a crash or a half-started server. */
    err = xa_http_start(&(struct xa_http_config){.bind_address = "nowhere",
                                                 .http_port = -1,
                                                 .handler = handler},
                        &s);
    assert_non_null(err);
    assert_string_equal(err->code, "INVALID_VALUE");
    xa_error_free(err);
    assert_null(s);

    err = start("::", false, &s);
    if (err) {
        xa_error_free(err);
        skip(); /* no IPv6 in this environment */
    }
    h = curl_easy_init();
    u = xa_asprintf("http://127.0.0.1:%d/info", xa_http_port(s, false));
    assert_int_equal(perform(h, u, NULL, NULL, 0, &rep), CURLE_OK);
    assert_int_equal(rep.status, 200);
    assert_non_null(strstr(rep.body.data, "remote=127.0.0.1\n"));
    reply_free(&rep);
    free(u);
    u = xa_asprintf("http://[::1]:%d/info", xa_http_port(s, false));
    if (perform(h, u, NULL, NULL, 0, &rep) == CURLE_OK) {
        assert_non_null(strstr(rep.body.data, "remote=::1\n"));
    }
    reply_free(&rep);
    free(u);
    curl_easy_cleanup(h);
    xa_http_stop(s);
}

static int
setup(void **state)
{
    struct xa_error *err;

    XA_UNUSED(state);
    curl_global_init(CURL_GLOBAL_ALL);
    assert_non_null(mkdtemp(g_dir));
    err = xa_cert_ensure(g_dir, "server.pem", "server.key", &g_cert, &g_key);
    if (err) {
        fprintf(stderr, "xa_cert_ensure: %s\n", err->params[0]);
        return -1;
    }
    err = start("127.0.0.1", true, &g_server);
    if (err) {
        fprintf(stderr, "xa_http_start: %s\n", err->params[0]);
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    XA_UNUSED(state);
    xa_http_stop(g_server);
    /* Let the detached answering threads finish before the leak check. */
    while (atomic_load(&g_late_threads) > 0) {
        usleep(1000);
    }
    usleep(10 * 1000);
    unlink(g_cert);
    unlink(g_key);
    rmdir(g_dir);
    free(g_cert);
    free(g_key);
    curl_global_cleanup();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keepalive_echo),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_too_large_declared),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_suspended),
        cmocka_unit_test(test_client_gone),
        cmocka_unit_test(test_https),
        cmocka_unit_test(test_tls_resumption),
        cmocka_unit_test(test_stop_with_parked),
        cmocka_unit_test(test_ipv6_and_dual_stack),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
