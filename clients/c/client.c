/* client.c - see client.h.
 *
 * TLS: libcurl is built on OpenSSL here, so the fingerprint check runs
 * inside the handshake through CURLOPT_SSL_CTX_FUNCTION: our verify
 * callback sees the server's leaf certificate before curl writes the
 * request, which is what keeps a password from reaching an impostor. */
#include "client.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc/jsonrpc.h"
#include "rpc/xmlrpc.h"

struct xa_client {
    char *url;                    /* "https://host:port", owned */
    struct xa_client_options opt; /* copied; ca_file duplicated */
    char *ca_file;                /* owned copy of opt.ca_file */
    CURL *curl;                   /* kept alive between calls */
    pthread_mutex_t lock;         /* serialises use of 'curl' and 'session' */
    char *session;                /* OpaqueRef of our session, or NULL */
    char *user, *pw;              /* for re-login after SESSION_INVALID */
    int64_t next_id;              /* JSON-RPC request ids */
    /* Set by the verify callback during a handshake the cert_check
     * refused, so the curl error can be reported as what it is. */
    char rejected_fp[3 * 64 + 1];
    bool rejected;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int ssl_ex_index = -1;

static void
curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ssl_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

struct xa_client *
xa_client_new(const char *url, const struct xa_client_options *opt)
{
    pthread_once(&curl_once, curl_init_once);
    struct xa_client *c = xa_calloc(1, sizeof *c);
    c->url = xa_strdup(url);
    size_t n = strlen(c->url);
    while (n > 0 && c->url[n - 1] == '/') {
        c->url[--n] = '\0';
    }
    if (opt) {
        c->opt = *opt;
    }
    c->ca_file = c->opt.ca_file ? xa_strdup(c->opt.ca_file) : NULL;
    c->opt.ca_file = c->ca_file;
    pthread_mutex_init(&c->lock, NULL);
    c->next_id = 1;
    return c;
}

void
xa_client_free(struct xa_client *c)
{
    if (!c) {
        return;
    }
    if (c->curl) {
        curl_easy_cleanup(c->curl);
    }
    pthread_mutex_destroy(&c->lock);
    free(c->url);
    free(c->ca_file);
    free(c->session);
    free(c->user);
    if (c->pw) {
        explicit_bzero(c->pw, strlen(c->pw));
    }
    free(c->pw);
    free(c);
}

const char *
xa_client_session(const struct xa_client *c)
{
    return c->session;
}

const char *
xa_client_url(const struct xa_client *c)
{
    return c->url;
}

/* ---- TLS ----------------------------------------------------------- */

static int
verify_cb(int preverify_ok, X509_STORE_CTX *store)
{
    SSL *ssl =
        X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    SSL_CTX *ctx = ssl ? SSL_get_SSL_CTX(ssl) : NULL;
    struct xa_client *c = ctx ? SSL_CTX_get_ex_data(ctx, ssl_ex_index) : NULL;
    if (!c) {
        return preverify_ok;
    }
    /* Chain errors of intermediate certificates are the leaf's business:
     * the decision is taken once, on the server's own certificate. */
    if (X509_STORE_CTX_get_error_depth(store) != 0) {
        return 1;
    }
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!cert || !X509_digest(cert, EVP_sha256(), md, &len)) {
        return 0;
    }
    static const char hex[] = "0123456789ABCDEF";
    char fp[3 * EVP_MAX_MD_SIZE + 1];
    size_t o = 0;
    for (unsigned int i = 0; i < len; i++) {
        fp[o++] = hex[md[i] >> 4];
        fp[o++] = hex[md[i] & 15];
        if (i + 1 < len) {
            fp[o++] = ':';
        }
    }
    fp[o] = '\0';
    bool ca_ok = preverify_ok != 0;
    if (c->opt.cert_check(c->opt.cert_ctx, fp, ca_ok)) {
        return 1;
    }
    c->rejected = true;
    snprintf(c->rejected_fp, sizeof c->rejected_fp, "%s", fp);
    return 0;
}

static CURLcode
ssl_ctx_cb(CURL *curl, void *sslctx, void *parm)
{
    XA_UNUSED(curl);
    SSL_CTX *ctx = sslctx;
    SSL_CTX_set_ex_data(ctx, ssl_ex_index, parm);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    return CURLE_OK;
}

/* ---- transfers ----------------------------------------------------- */

static size_t
write_buf_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xa_buf_append(ud, ptr, size * nmemb);
    return size * nmemb;
}

/* Resets the kept handle for one request (keeping its connection) and
 * applies the URL and TLS policy.  Called with the lock held. */
static CURL *
prepare(struct xa_client *c, const char *path)
{
    if (!c->curl) {
        c->curl = curl_easy_init();
        if (!c->curl) {
            abort(); /* only fails when out of memory */
        }
    } else {
        curl_easy_reset(c->curl);
    }
    CURL *h = c->curl;
    char *url = xa_asprintf("%s%s", c->url, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    free(url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "xapid-xe/0.1");
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    if (c->opt.timeout_s > 0) {
        curl_easy_setopt(h, CURLOPT_TIMEOUT, c->opt.timeout_s);
    }
    c->rejected = false;
    if (c->opt.cert_check) {
        /* curl must not fail the handshake on a self-signed certificate;
         * our callback, installed on the context, decides instead. */
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, c);
        /* A resumed TLS session skips certificate verification. */
        curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
    } else if (c->opt.insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (c->ca_file) {
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    }
    return h;
}

static struct xa_error *
curl_failure(struct xa_client *c, const char *path, CURLcode rc,
             const char *errbuf)
{
    char *url = xa_asprintf("%s%s", c->url, path);
    struct xa_error *e;
    if (c->rejected) {
        e = xa_error_new(XA_CLIENT_CERTIFICATE_REJECTED, 2, url,
                         c->rejected_fp);
    } else {
        e = xa_error_new(XA_CLIENT_TRANSPORT_ERROR, 2, url,
                         errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    free(url);
    return e;
}

static struct xa_error *
http_status_error(struct xa_client *c, const char *path, long status)
{
    char *url = xa_asprintf("%s%s", c->url, path);
    char num[32];
    snprintf(num, sizeof num, "%ld", status);
    struct xa_error *e = xa_error_new(XA_CLIENT_HTTP_ERROR, 2, url, num);
    free(url);
    return e;
}

/* One RPC round trip, with the extra request 'headers' (NULL or a
 * NULL-terminated list); the lock is held by the caller. */
static struct xa_error *
rpc_locked(struct xa_client *c, const char *method, const char *session,
           const struct xa_value *params, const char *const *headers,
           struct xa_value **ret)
{
    struct xa_value *args = xa_array();
    if (session) {
        xa_array_append(args, xa_string(session));
    }
    for (size_t i = 0; params && i < params->u.arr.n; i++) {
        xa_array_append(args, xa_value_ref(params->u.arr.items[i]));
    }
    bool json = c->opt.protocol == XA_CLIENT_JSONRPC;
    const char *path = json ? "/jsonrpc" : "/";
    struct xa_buf body = {0};
    if (json) {
        xa_jsonrpc_write_call(&body, method, args, c->next_id++);
    } else {
        xa_xmlrpc_write_call(&body, method, args);
    }
    xa_value_unref(args);

    CURL *h = prepare(c, path);
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, json ? "Content-Type: application/json"
                                        : "Content-Type: text/xml");
    hdrs = curl_slist_append(hdrs, "Expect:");
    for (size_t i = 0; headers && headers[i]; i++) {
        hdrs = curl_slist_append(hdrs, headers[i]);
    }
    struct xa_buf reply = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body.len);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_buf_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    if (body.data) {
        /* The body may hold a password (login). */
        explicit_bzero(body.data, body.len);
    }
    xa_buf_free(&body);

    struct xa_error *err = NULL;
    struct xa_value *v = NULL;
    long status = 0;
    if (rc != CURLE_OK) {
        err = curl_failure(c, path, rc, errbuf);
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        err = http_status_error(c, path, status);
        goto out;
    }
    err = json ? xa_jsonrpc_parse_response(reply.data ? reply.data : "",
                                           reply.len, &v)
               : xa_xmlrpc_parse_response(reply.data ? reply.data : "",
                                          reply.len, &v);
out:
    xa_buf_free(&reply);
    if (err) {
        xa_value_unref(v);
        return err;
    }
    if (ret) {
        *ret = v;
    } else {
        xa_value_unref(v);
    }
    return NULL;
}

static struct xa_error *
login_locked(struct xa_client *c)
{
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(c->user));
    xa_array_append(p, xa_string(c->pw));
    xa_array_append(p, xa_string("2.23"));
    xa_array_append(p, xa_string("xe"));
    struct xa_value *v = NULL;
    struct xa_error *err =
        rpc_locked(c, "session.login_with_password", NULL, p, NULL, &v);
    xa_value_unref(p);
    if (err) {
        return err;
    }
    const char *ref = xa_value_str(v);
    if (!ref) {
        xa_value_unref(v);
        return xa_error_internal("session.login_with_password returned "
                                 "no session reference");
    }
    free(c->session);
    c->session = xa_strdup(ref);
    xa_value_unref(v);
    return NULL;
}

struct xa_error *
xa_client_login(struct xa_client *c, const char *user, const char *pw)
{
    pthread_mutex_lock(&c->lock);
    free(c->user);
    if (c->pw) {
        explicit_bzero(c->pw, strlen(c->pw));
    }
    free(c->pw);
    c->user = xa_strdup(user ? user : "");
    c->pw = xa_strdup(pw ? pw : "");
    struct xa_error *err = login_locked(c);
    pthread_mutex_unlock(&c->lock);
    return err;
}

struct xa_error *
xa_client_logout(struct xa_client *c)
{
    pthread_mutex_lock(&c->lock);
    struct xa_error *err = NULL;
    if (c->session) {
        err = rpc_locked(c, "session.logout", c->session, NULL, NULL, NULL);
        free(c->session);
        c->session = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    return err;
}

struct xa_error *
xa_client_call(struct xa_client *c, const char *method, bool with_session,
               struct xa_value *params, struct xa_value **ret)
{
    return xa_client_call_with_headers(c, method, with_session, params, NULL,
                                       ret);
}

struct xa_error *
xa_client_call_with_headers(struct xa_client *c, const char *method,
                            bool with_session, struct xa_value *params,
                            const char *const *headers, struct xa_value **ret)
{
    pthread_mutex_lock(&c->lock);
    struct xa_error *err = rpc_locked(
        c, method, with_session ? (c->session ? c->session : "") : NULL, params,
        headers, ret);
    /* An expired session (or a restarted server) is not the caller's
     * problem when we hold the credentials: log in again, retry once. */
    if (err && with_session && c->user &&
        strcmp(err->code, "SESSION_INVALID") == 0) {
        struct xa_error *lerr = login_locked(c);
        if (!lerr) {
            xa_error_free(err);
            err = rpc_locked(c, method, c->session, params, headers, ret);
        } else {
            xa_error_free(lerr);
        }
    }
    pthread_mutex_unlock(&c->lock);
    xa_value_unref(params);
    return err;
}

/* ---- streaming HTTP ------------------------------------------------ */

struct xfer {
    int fd;
    uint64_t done, total;
    xa_client_progress cb;
    void *cb_ctx;
    bool io_error;
    long status; /* of the response, once headers are in */
    CURL *h;
};

static size_t
read_fd_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    ssize_t n;
    do {
        n = read(x->fd, ptr, size * nmemb);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        x->io_error = true;
        return CURL_READFUNC_ABORT;
    }
    x->done += (uint64_t)n;
    if (x->cb) {
        x->cb(x->cb_ctx, x->done, x->total);
    }
    return (size_t)n;
}

static size_t
write_fd_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    /* An error page must not end up in the user's output file. */
    if (x->status == 0) {
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
    }
    if (x->status != 200) {
        return size * nmemb;
    }
    size_t left = size * nmemb;
    while (left > 0) {
        ssize_t n = write(x->fd, ptr, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            x->io_error = true;
            return 0;
        }
        ptr += n;
        left -= (size_t)n;
    }
    x->done += size * nmemb;
    if (x->cb) {
        x->cb(x->cb_ctx, x->done, x->total);
    }
    return size * nmemb;
}

static struct xa_error *
http_transfer(struct xa_client *c, const char *path, bool put, int fd,
              uint64_t size, xa_client_progress cb, void *cb_ctx,
              long *ret_status)
{
    pthread_mutex_lock(&c->lock);
    CURL *h = prepare(c, path);
    struct xfer x = {
        .fd = fd, .total = size, .cb = cb, .cb_ctx = cb_ctx, .h = h};
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    struct xa_buf sink = {0};
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (put) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, read_fd_cb);
        curl_easy_setopt(h, CURLOPT_READDATA, &x);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)size);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_buf_cb);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    } else {
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_fd_cb);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    }
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    xa_buf_free(&sink);
    long status = 0;
    struct xa_error *err = NULL;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    if (x.io_error) {
        err = xa_error_new(XA_CLIENT_TRANSPORT_ERROR, 2, path, strerror(errno));
    } else if (rc != CURLE_OK) {
        err = curl_failure(c, path, rc, errbuf);
    } else if (status != 200) {
        err = http_status_error(c, path, status);
    }
    pthread_mutex_unlock(&c->lock);
    if (ret_status) {
        *ret_status = status;
    }
    return err;
}

struct xa_error *
xa_client_http_put(struct xa_client *c, const char *path_and_query, int fd,
                   uint64_t size, xa_client_progress cb, void *cb_ctx,
                   long *ret_status)
{
    return http_transfer(c, path_and_query, true, fd, size, cb, cb_ctx,
                         ret_status);
}

struct xa_error *
xa_client_http_get(struct xa_client *c, const char *path_and_query, int fd,
                   xa_client_progress cb, void *cb_ctx, long *ret_status)
{
    return http_transfer(c, path_and_query, false, fd, 0, cb, cb_ctx,
                         ret_status);
}
