/* http.c - see http.h.
 *
 * How a request moves through this file
 * -------------------------------------
 * libmicrohttpd (MHD) calls on_access() repeatedly for one request: first
 * with only the headers (we allocate the request state and may refuse an
 * oversize body right there), then once per piece of body, then once with
 * no data when the body is complete (we call the handler).  MHD only lets
 * a response be queued from the connection's own thread, inside
 * on_access(); a handler answering from another thread therefore stores
 * the response in the request and resumes the connection, and MHD calls
 * on_access() again, where the stored response is queued.
 *
 * The request state is shared by the MHD side (until on_completed()) and
 * the handler side (until xa_http_respond()), hence a reference count and
 * a per-request mutex guarding the state machine below.  Lock order is
 * server->mu before request->mu.  MHD_suspend_connection() and
 * MHD_resume_connection() are called with request->mu held so that a
 * response can never slip between "suspended" and "resumed"; MHD does not
 * call back into us from under the internal lock those two take, so this
 * cannot deadlock with on_completed(). */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define XA_HTTP_MODULE           "http"
#define XA_HTTP_DEFAULT_MAX_BODY (300 * 1024)
#define XA_HTTP_DEFAULT_TIMEOUT  300
#define XA_HTTP_MAX_CONNECTIONS  20000
#define XA_HTTP_LISTEN_BACKLOG   4096
/* How long xa_http_stop() waits for parked requests' final answers. */
#define XA_HTTP_DRAIN_SECS       1
/* Descriptors kept back from the connection limit for the database,
 * drivers, log files and outgoing connections. */
#define XA_HTTP_FD_RESERVE       256
/* Once a chunked body has passed max_body we keep reading (and dropping)
 * it for up to this many more bytes so that a modest overshoot still gets
 * a proper 413; a client that keeps going is disconnected.  MHD 0.9.75
 * cannot queue a response while a body is still arriving. */
#define XA_HTTP_DISCARD_MAX      (1024 * 1024)
/* Idle seconds before a streamed upload is given up (see stream_begin). */
#define XA_HTTP_STREAM_TIMEOUT   60
/* TLS 1.2 and 1.3 only; GnuTLS' NORMAL set otherwise. */
/* TLS 1.2 and 1.3 only, with forward-secret key exchange and AEAD
 * ciphers only (no CBC, no SHA-1 MACs). */
#define XA_HTTP_TLS_PRIORITIES                                             \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:" \
    "+AES-128-GCM:+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:" \
    "+ECDHE-RSA:%SERVER_PRECEDENCE"

enum xa_http_req_state {
    XA_REQ_RECEIVING,  /* headers seen, body arriving */
    XA_REQ_IN_HANDLER, /* the handler is running on the MHD thread */
    XA_REQ_SUSPENDED,  /* parked with MHD_suspend_connection() */
    XA_REQ_RESUMING,   /* response stored, connection resumed */
    XA_REQ_DONE,       /* response queued, or nothing more to send */
};

/* One name/value pair captured from the request. */
struct xa_http_kv {
    enum MHD_ValueKind kind;
    char *key; /* owned */
    char *val; /* owned, "" when the argument had no value */
};

/* A response header added with xa_http_add_header(). */
struct xa_http_out_header {
    char *name;  /* owned */
    char *value; /* owned */
};

struct xa_http_listener {
    struct xa_http_server *server;
    struct MHD_Daemon *daemon; /* NULL when this listener is off */
    bool tls;
    int port;
};

struct xa_http_server {
    xa_http_handler handler;
    void *handler_ctx;
    size_t max_body;
    struct xa_http_listener plain, secure;
    /* PEM text handed to MHD, kept for the daemon's lifetime because MHD
     * only stores the pointer. */
    char *cert_pem, *key_pem;
    /* Master key for TLS session tickets (GnuTLS derives rotating keys
     * from it); empty when there is no HTTPS listener. */
    gnutls_datum_t ticket_key;
    pthread_mutex_t mu;             /* guards 'parked' and 'stopping' */
    struct xa_http_request *parked; /* suspended requests, a DLL */
    bool stopping;
    /* Requests handed to the handler and not yet completed (running,
     * parked, or answer being sent): what xa_http_stop() waits for. */
    atomic_int active;
};

struct xa_http_request {
    /* Both valid while the MHD side holds its reference ('gone' false). */
    struct xa_http_listener *listener;
    struct MHD_Connection *conn;

    atomic_int refs; /* MHD side + handler side */
    pthread_mutex_t mu;
    /* Fields below up to 'status' are guarded by 'mu' once the handler
     * has been called. */
    enum xa_http_req_state state;
    bool suspend_requested;
    bool responded; /* xa_http_respond() was called */
    bool gone;      /* MHD is finished with the connection */
    bool abandoned; /* answered by xa_http_stop(); drop the handler's answer */
    bool hangup;    /* xa_http_hangup(): close without an answer */
    struct MHD_Response *resp; /* stored until queued */
    unsigned status;

    /* Touched only by the MHD thread of this connection. */
    bool parked;  /* on server->parked; changed under server->mu */
    bool counted; /* included in server->active */
    bool too_large;
    size_t discarded;
    struct xa_http_request *prev, *next; /* server->parked links */

    /* Immutable once the handler runs. */
    bool tls;
    char *method, *path;
    char remote[INET6_ADDRSTRLEN];
    struct xa_buf body;
    struct xa_http_kv *kv;
    size_t n_kv, cap_kv;

    /* Owned by the handler side until xa_http_respond(). */
    struct xa_http_out_header *out;
    size_t n_out, cap_out;

    /* A streamed request (xa_http_stream_route): its ops and state, both
     * touched only by the connection's thread. */
    const struct xa_http_stream_ops *stream_ops;
    void *stream;
    bool stream_failed; /* 'data' refused a piece: drop the rest */
};

/* Routes whose bodies are streamed; filled before the server starts. */
#define XA_HTTP_MAX_STREAM_ROUTES 16
static struct {
    const char *method;
    char *path;
    const struct xa_http_stream_ops *ops;
    void *ctx;
} stream_routes[XA_HTTP_MAX_STREAM_ROUTES];
static size_t n_stream_routes;

/* ---- request state ------------------------------------------------- */

static void
remote_addr_text(struct MHD_Connection *c, char out[INET6_ADDRSTRLEN])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    strcpy(out, "unknown");
    if (!sa) {
        return;
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, out, INET6_ADDRSTRLEN);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        /* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; show
         * them as plain IPv4 so that logs and audit records agree. */
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], out,
                      INET6_ADDRSTRLEN);
        } else {
            inet_ntop(AF_INET6, &in6->sin6_addr, out, INET6_ADDRSTRLEN);
        }
    }
}

static struct xa_http_request *
request_new(struct xa_http_listener *l, struct MHD_Connection *c,
            const char *url, const char *method)
{
    struct xa_http_request *r = xa_calloc(1, sizeof(*r));

    r->listener = l;
    r->conn = c;
    atomic_init(&r->refs, 1); /* the MHD side's */
    pthread_mutex_init(&r->mu, NULL);
    r->state = XA_REQ_RECEIVING;
    r->tls = l->tls;
    r->method = xa_strdup(method ? method : "");
    r->path = xa_strdup(url ? url : "/");
    remote_addr_text(c, r->remote);
    return r;
}

static void
request_unref(struct xa_http_request *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1) {
        return;
    }
    if (r->resp) {
        MHD_destroy_response(r->resp);
    }
    for (size_t i = 0; i < r->n_kv; i++) {
        free(r->kv[i].key);
        free(r->kv[i].val);
    }
    free(r->kv);
    for (size_t i = 0; i < r->n_out; i++) {
        free(r->out[i].name);
        free(r->out[i].value);
    }
    free(r->out);
    xa_buf_free(&r->body);
    free(r->method);
    free(r->path);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static enum MHD_Result
capture_value(void *cls, enum MHD_ValueKind kind, const char *key,
              const char *value)
{
    struct xa_http_request *r = cls;

    if (!key) {
        return MHD_YES;
    }
    if (r->n_kv == r->cap_kv) {
        r->cap_kv = r->cap_kv ? 2 * r->cap_kv : 16;
        r->kv = xa_realloc(r->kv, r->cap_kv * sizeof(*r->kv));
    }
    r->kv[r->n_kv].kind = kind;
    r->kv[r->n_kv].key = xa_strdup(key);
    r->kv[r->n_kv].val = xa_strdup(value ? value : "");
    r->n_kv++;
    return MHD_YES;
}

/* ---- responses ----------------------------------------------------- */

static void
add_header_or_die(struct MHD_Response *resp, const char *name,
                  const char *value)
{
    /* MHD refuses headers it manages itself (Content-Length) and values
     * with line breaks; log rather than fail the whole response. */
    if (MHD_add_response_header(resp, name, value) != MHD_YES) {
        xa_log_warn(XA_HTTP_MODULE, "response header %s refused", name);
    }
}

/* A response with the headers every reply carries.  Takes 'body'. */
static struct MHD_Response *
response_new(const char *content_type, char *body, size_t len)
{
    struct MHD_Response *resp;

    if (body) {
        resp =
            MHD_create_response_from_buffer_with_free_callback(len, body, free);
    } else {
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    }
    if (!resp) {
        /* Only fails on allocation failure; like xa_malloc, give up. */
        fputs("xapid: out of memory (MHD response)\n", stderr);
        abort();
    }
    add_header_or_die(resp, "Access-Control-Allow-Origin", "*");
    if (content_type) {
        add_header_or_die(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    }
    return resp;
}

static struct MHD_Response *
response_text(const char *text, bool close)
{
    struct MHD_Response *resp =
        response_new("text/plain", xa_strdup(text), strlen(text));

    if (close) {
        add_header_or_die(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    return resp;
}

/* Queues and releases 'resp'; on the connection's thread only. */
static enum MHD_Result
queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *resp)
{
    enum MHD_Result ret = MHD_queue_response(c, status, resp);

    MHD_destroy_response(resp);
    return ret;
}

/* ---- the MHD callbacks --------------------------------------------- */

static enum MHD_Result
check_declared_length(struct xa_http_request *r)
{
    size_t max = r->listener->server->max_body;
    const char *cl = MHD_lookup_connection_value(
        r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t n;

    if (!cl || (xa_parse_int64(cl, &n) && n >= 0 && (uint64_t)n <= max)) {
        return MHD_YES;
    }
    /* Answering before the body is read makes MHD skip the body and,
     * since the rest of the stream is now unparseable, close after the
     * reply; say so explicitly for the client's sake. */
    r->state = XA_REQ_DONE;
    return queue(r->conn, MHD_HTTP_CONTENT_TOO_LARGE,
                 response_text("Request body too large\n", true));
}

static enum MHD_Result
take_body(struct xa_http_request *r, const char *data, size_t *size)
{
    size_t n = *size;
    size_t max = r->listener->server->max_body;

    *size = 0;
    if (r->too_large) {
        r->discarded += n;
        return r->discarded > XA_HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (n > max - r->body.len) {
        /* Only chunked bodies get here: a declared length was checked. */
        r->too_large = true;
        r->discarded = n;
        xa_buf_free(&r->body);
        return MHD_YES;
    }
    xa_buf_append(&r->body, data, n);
    return MHD_YES;
}

static void
park_unlink(struct xa_http_server *s, struct xa_http_request *r)
{
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        s->parked = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    }
    r->prev = r->next = NULL;
    r->parked = false;
}

/* Decides what happens once the handler returned: queue its answer,
 * park the connection, or fix up a handler that did neither. */
static enum MHD_Result
after_handler(struct xa_http_request *r)
{
    struct xa_http_server *s = r->listener->server;
    struct MHD_Connection *c = r->conn;
    struct MHD_Response *resp = NULL;
    unsigned status = 0;

    pthread_mutex_lock(&r->mu);
    if (r->hangup) {
        /* The handler took the socket over and is already done with it. */
        r->state = XA_REQ_DONE;
        pthread_mutex_unlock(&r->mu);
        return MHD_NO;
    }
    if (!r->resp && r->suspend_requested) {
        /* Re-take the locks in order: parking needs the server's list and
         * must not race with xa_http_stop() answering parked requests. */
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_lock(&s->mu);
        pthread_mutex_lock(&r->mu);
        if (!r->resp && s->stopping) {
            r->abandoned = true;
            r->state = XA_REQ_DONE;
            pthread_mutex_unlock(&r->mu);
            pthread_mutex_unlock(&s->mu);
            return queue(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                         response_text("Server shutting down\n", true));
        }
        if (!r->resp) {
            MHD_suspend_connection(c);
            r->state = XA_REQ_SUSPENDED;
            r->parked = true;
            r->prev = NULL;
            r->next = s->parked;
            if (s->parked) {
                s->parked->prev = r;
            }
            s->parked = r;
            pthread_mutex_unlock(&r->mu);
            pthread_mutex_unlock(&s->mu);
            return MHD_YES;
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (r->resp) {
        resp = r->resp;
        status = r->status;
        r->resp = NULL;
        r->state = XA_REQ_DONE;
        pthread_mutex_unlock(&r->mu);
        return queue(c, status, resp);
    }
    /* Neither answered nor suspended: a handler bug.  Answer for it and
     * take back the reference it was given. */
    r->responded = true;
    r->state = XA_REQ_DONE;
    pthread_mutex_unlock(&r->mu);
    xa_log_err(XA_HTTP_MODULE, "handler left %s %s unanswered", r->method,
               r->path);
    request_unref(r);
    return queue(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                 response_text("Internal error\n", false));
}

static enum MHD_Result
run_handler(struct xa_http_request *r)
{
    struct xa_http_server *s = r->listener->server;

    if (r->too_large) {
        r->state = XA_REQ_DONE;
        return queue(r->conn, MHD_HTTP_CONTENT_TOO_LARGE,
                     response_text("Request body too large\n", true));
    }
    MHD_get_connection_values(
        r->conn, MHD_HEADER_KIND | MHD_COOKIE_KIND | MHD_GET_ARGUMENT_KIND,
        capture_value, r);
    pthread_mutex_lock(&r->mu);
    r->state = XA_REQ_IN_HANDLER;
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_add(&r->refs, 1); /* the handler side's */
    r->counted = true;
    atomic_fetch_add(&s->active, 1);
    s->handler(r, s->handler_ctx);
    return after_handler(r);
}

static enum MHD_Result
queue_stored(struct xa_http_request *r)
{
    struct MHD_Response *resp;
    unsigned status;

    pthread_mutex_lock(&r->mu);
    resp = r->resp;
    status = r->status;
    r->resp = NULL;
    r->state = XA_REQ_DONE;
    pthread_mutex_unlock(&r->mu);
    if (!resp) {
        return MHD_NO;
    }
    return queue(r->conn, status, resp);
}

/* ---- streamed requests --------------------------------------------- */

/* The headers of a streamed request are in: let its route accept it (the
 * body then flows to stream_piece) or refuse it with an answer. */
static enum MHD_Result
stream_begin(struct xa_http_request *r, size_t route)
{
    struct xa_http_server *s = r->listener->server;
    const struct xa_http_stream_ops *ops = stream_routes[route].ops;

    MHD_get_connection_values(
        r->conn, MHD_HEADER_KIND | MHD_COOKIE_KIND | MHD_GET_ARGUMENT_KIND,
        capture_value, r);
    pthread_mutex_lock(&r->mu);
    r->state = XA_REQ_IN_HANDLER;
    pthread_mutex_unlock(&r->mu);
    /* The handler side's reference, held until its final answer, which
     * may come from 'end' long after 'begin'. */
    atomic_fetch_add(&r->refs, 1);
    r->counted = true;
    atomic_fetch_add(&s->active, 1);
    void *state = ops->begin(r, stream_routes[route].ctx);
    if (!state) {
        /* Refused: queue the answer now; MHD then skips the body. */
        return after_handler(r);
    }
    pthread_mutex_lock(&r->mu);
    r->state = XA_REQ_RECEIVING;
    pthread_mutex_unlock(&r->mu);
    r->stream_ops = ops;
    r->stream = state;
    /* libmicrohttpd 0.9.75 can miss a client that closes right after its
     * last bytes (data and FIN read together under epoll): the request
     * then only ends on the idle timeout.  Keep that short for uploads so
     * their tasks fail within a minute rather than five. */
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              XA_HTTP_STREAM_TIMEOUT);
    return MHD_YES;
}

static enum MHD_Result
stream_piece(struct xa_http_request *r, const char *data, size_t *size)
{
    if (*size) {
        if (!r->stream_failed && !r->stream_ops->data(r->stream, data, *size)) {
            r->stream_failed = true;
        }
        *size = 0;
        return MHD_YES;
    }
    const struct xa_http_stream_ops *ops = r->stream_ops;
    void *state = r->stream;
    r->stream_ops = NULL; /* 'end' runs once */
    r->stream = NULL;
    pthread_mutex_lock(&r->mu);
    r->state = XA_REQ_IN_HANDLER;
    pthread_mutex_unlock(&r->mu);
    ops->end(state, r, !r->stream_failed);
    return after_handler(r);
}

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *c, const char *url,
          const char *method, const char *version, const char *upload_data,
          size_t *upload_data_size, void **con_cls)
{
    struct xa_http_request *r = *con_cls;
    enum xa_http_req_state state;

    XA_UNUSED(version);
    if (!r) {
        r = request_new(cls, c, url, method);
        *con_cls = r;
        for (size_t i = 0; i < n_stream_routes; i++) {
            if (strcmp(stream_routes[i].method, r->method) == 0 &&
                strcmp(stream_routes[i].path, r->path) == 0) {
                return stream_begin(r, i);
            }
        }
        return check_declared_length(r);
    }
    pthread_mutex_lock(&r->mu);
    state = r->state;
    pthread_mutex_unlock(&r->mu);
    switch (state) {
    case XA_REQ_RECEIVING:
        if (r->stream_ops) {
            return stream_piece(r, upload_data, upload_data_size);
        }
        if (*upload_data_size) {
            return take_body(r, upload_data, upload_data_size);
        }
        return run_handler(r);
    case XA_REQ_RESUMING:
        return queue_stored(r);
    default:
        /* MHD calls again only until a response is queued; anything else
         * means our state went wrong, so drop the connection. */
        xa_log_err(XA_HTTP_MODULE, "unexpected callback in state %d",
                   (int)state);
        return MHD_NO;
    }
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct xa_http_listener *l = cls;
    struct xa_http_request *r = *con_cls;
    struct MHD_Response *resp;

    XA_UNUSED(c);
    if (!r) {
        return;
    }
    *con_cls = NULL;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        xa_log_debug(XA_HTTP_MODULE, "%s %s from %s ended early (%d)",
                     r->method, r->path, r->remote, (int)toe);
    }
    /* 'parked' is only written on this connection's thread, so reading it
     * unlocked is safe; the list itself needs the server lock. */
    if (r->parked) {
        struct xa_http_server *s = r->listener->server;
        pthread_mutex_lock(&s->mu);
        park_unlink(s, r);
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&r->mu);
    r->gone = true;
    r->conn = NULL;
    r->listener = NULL;
    resp = r->resp;
    r->resp = NULL;
    pthread_mutex_unlock(&r->mu);
    if (resp) {
        MHD_destroy_response(resp);
    }
    if (r->stream_ops) {
        /* The client left mid-body: the route still cleans up, and its
         * answer (to nobody) gives back the handler side's reference. */
        const struct xa_http_stream_ops *ops = r->stream_ops;
        r->stream_ops = NULL;
        ops->end(r->stream, r, false);
        r->stream = NULL;
    }
    if (r->counted) {
        atomic_fetch_sub(&l->server->active, 1);
    }
    request_unref(r);
}

/* libmicrohttpd 0.9.75 never enables GnuTLS session tickets, so without
 * this every reconnecting client pays a full handshake (a few hundred per
 * second per core with ECDSA, against tens of thousands of requests on a
 * kept-alive connection).  The GnuTLS session exists when MHD announces
 * the connection, and the handshake has not started yet, so tickets can
 * be switched on here; this covers TLS 1.3 resumption and TLS 1.2 session
 * tickets. */
static void
on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
              enum MHD_ConnectionNotificationCode code)
{
    struct xa_http_listener *l = cls;
    const union MHD_ConnectionInfo *ci;
    int rc;

    XA_UNUSED(socket_ctx);
    if (code != MHD_CONNECTION_NOTIFY_STARTED || !l->tls) {
        return;
    }
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session) {
        return;
    }
    rc = gnutls_session_ticket_enable_server(ci->tls_session,
                                             &l->server->ticket_key);
    if (rc < 0) {
        xa_log_debug(XA_HTTP_MODULE, "session tickets: %s",
                     gnutls_strerror(rc));
    }
}

static void XA_PRINTF(2, 0) on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char *msg = xa_vasprintf(fmt, ap);
    size_t n = strlen(msg);

    XA_UNUSED(cls);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) {
        msg[--n] = '\0';
    }
    xa_log_warn(XA_HTTP_MODULE, "libmicrohttpd: %s", msg);
    free(msg);
}

/* ---- public request API -------------------------------------------- */

static const char *
lookup(const struct xa_http_request *r, enum MHD_ValueKind kind,
       const char *key, bool nocase, size_t nth)
{
    for (size_t i = 0; i < r->n_kv; i++) {
        const struct xa_http_kv *kv = &r->kv[i];
        if (kv->kind != kind) {
            continue;
        }
        if (nocase ? strcasecmp(kv->key, key) : strcmp(kv->key, key)) {
            continue;
        }
        if (nth-- == 0) {
            return kv->val;
        }
    }
    return NULL;
}

const char *
xa_http_method(const struct xa_http_request *r)
{
    return r->method;
}

const char *
xa_http_path(const struct xa_http_request *r)
{
    return r->path;
}

const char *
xa_http_query(const struct xa_http_request *r, const char *key)
{
    return lookup(r, MHD_GET_ARGUMENT_KIND, key, false, 0);
}

const char *
xa_http_query_nth(const struct xa_http_request *r, const char *key, size_t n)
{
    return lookup(r, MHD_GET_ARGUMENT_KIND, key, false, n);
}

const char *
xa_http_header(const struct xa_http_request *r, const char *name)
{
    return lookup(r, MHD_HEADER_KIND, name, true, 0);
}

const char *
xa_http_cookie(const struct xa_http_request *r, const char *name)
{
    return lookup(r, MHD_COOKIE_KIND, name, false, 0);
}

const char *
xa_http_body(const struct xa_http_request *r, size_t *len)
{
    if (len) {
        *len = r->body.len;
    }
    return r->body.data ? r->body.data : "";
}

const char *
xa_http_remote_addr(const struct xa_http_request *r)
{
    return r->remote;
}

bool
xa_http_is_tls(const struct xa_http_request *r)
{
    return r->tls;
}

void
xa_http_suspend(struct xa_http_request *r)
{
    pthread_mutex_lock(&r->mu);
    r->suspend_requested = true;
    pthread_mutex_unlock(&r->mu);
}

void
xa_http_add_header(struct xa_http_request *r, const char *name,
                   const char *value)
{
    if (r->n_out == r->cap_out) {
        r->cap_out = r->cap_out ? 2 * r->cap_out : 4;
        r->out = xa_realloc(r->out, r->cap_out * sizeof(*r->out));
    }
    r->out[r->n_out].name = xa_strdup(name);
    r->out[r->n_out].value = xa_strdup(value);
    r->n_out++;
}

/* Hands a built response to the connection (see xa_http_respond). */
static void
respond_with(struct xa_http_request *r, int status, struct MHD_Response *resp)
{
    for (size_t i = 0; i < r->n_out; i++) {
        add_header_or_die(resp, r->out[i].name, r->out[i].value);
    }
    pthread_mutex_lock(&r->mu);
    if (r->responded) {
        /* A second answer: a handler bug.  The reference was already given
         * back by the first, so leave 'r' alone. */
        pthread_mutex_unlock(&r->mu);
        xa_log_err(XA_HTTP_MODULE, "request answered twice");
        MHD_destroy_response(resp);
        return;
    }
    r->responded = true;
    if (r->gone || r->abandoned || r->state == XA_REQ_DONE) {
        /* The client went away or xa_http_stop() answered already. */
        pthread_mutex_unlock(&r->mu);
        MHD_destroy_response(resp);
        request_unref(r);
        return;
    }
    r->resp = resp;
    r->status = status > 0 ? (unsigned)status : 500;
    if (r->state == XA_REQ_SUSPENDED) {
        r->state = XA_REQ_RESUMING;
        MHD_resume_connection(r->conn);
    }
    /* Otherwise the handler has not returned yet (it may be this very
     * call); after_handler() queues the stored response. */
    pthread_mutex_unlock(&r->mu);
    request_unref(r);
}

void
xa_http_respond(struct xa_http_request *r, int status, const char *content_type,
                char *body, size_t len)
{
    /* Built before locking: the extra headers belong to this caller. */
    respond_with(r, status, response_new(content_type, body, len));
}

void
xa_http_stream_route(const char *method, const char *path,
                     const struct xa_http_stream_ops *ops, void *ctx)
{
    if (n_stream_routes == XA_HTTP_MAX_STREAM_ROUTES) {
        xa_log_err(XA_HTTP_MODULE, "stream route table full: %s %s", method,
                   path);
        return;
    }
    stream_routes[n_stream_routes].method = method;
    stream_routes[n_stream_routes].path = xa_strdup(path);
    stream_routes[n_stream_routes].ops = ops;
    stream_routes[n_stream_routes].ctx = ctx;
    n_stream_routes++;
}

struct stream_reader {
    xa_http_read_fn fn;
    void *ctx;
    void (*free_fn)(void *ctx);
};

static ssize_t
stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_reader *sr = cls;
    long n = sr->fn(sr->ctx, pos, buf, max);

    if (n > 0) {
        return n;
    }
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM
                  : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void
stream_free(void *cls)
{
    struct stream_reader *sr = cls;

    if (sr->free_fn) {
        sr->free_fn(sr->ctx);
    }
    free(sr);
}

void
xa_http_respond_stream(struct xa_http_request *r, int status,
                       const char *content_type, int64_t size,
                       xa_http_read_fn fn, void *ctx,
                       void (*free_fn)(void *ctx))
{
    struct stream_reader *sr = xa_calloc(1, sizeof(*sr));
    struct MHD_Response *resp;

    sr->fn = fn;
    sr->ctx = ctx;
    sr->free_fn = free_fn;
    /* 256 KiB per read: MHD caps it to what the connection's buffer
     * holds, and large reads keep the per-call overhead low. */
    resp = MHD_create_response_from_callback(
        size < 0 ? MHD_SIZE_UNKNOWN : (uint64_t)size, 256 * 1024, stream_read,
        sr, stream_free);
    if (!resp) {
        fputs("xapid: out of memory (MHD response)\n", stderr);
        abort();
    }
    add_header_or_die(resp, "Access-Control-Allow-Origin", "*");
    if (content_type) {
        add_header_or_die(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    }
    respond_with(r, status, resp);
}

/* ---- server -------------------------------------------------------- */

static char *
read_pem(const char *path, struct xa_error **err)
{
    FILE *f = fopen(path, "r");
    struct xa_buf b = {0};
    char chunk[4096];
    size_t n;

    if (!f) {
        *err = xa_error_internal("cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        xa_buf_append(&b, chunk, n);
        if (b.len > 1024 * 1024) {
            break; /* no PEM key or certificate chain is this big */
        }
    }
    if (ferror(f) || b.len == 0 || b.len > 1024 * 1024) {
        *err = xa_error_internal("cannot read %s", path);
        fclose(f);
        xa_buf_free(&b);
        return NULL;
    }
    fclose(f);
    return xa_buf_steal(&b);
}

/* Lifts the soft descriptor limit to the hard one; returns the result. */
static rlim_t
raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return 1024;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            xa_log_warn(XA_HTTP_MODULE, "cannot raise RLIMIT_NOFILE: %s",
                        strerror(errno));
            getrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    return rl.rlim_cur;
}

static struct xa_error *
listener_start(struct xa_http_server *s, struct xa_http_listener *l,
               const char *address, int port, unsigned threads,
               unsigned timeout, unsigned conn_limit)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem opts[16];
    size_t n = 0;
    const union MHD_DaemonInfo *info;
    uint16_t bind_port = port < 0 ? 0 : (uint16_t)port;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, address, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(bind_port);
    } else if (inet_pton(AF_INET6, address, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(bind_port);
        /* The IPv6 wildcard serves IPv4 clients too, like xapi. */
        flags |= IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? MHD_USE_DUAL_STACK
                                                          : MHD_USE_IPv6;
    } else {
        return xa_error_invalid_value("bind_address", address);
    }
    if (l->tls) {
        flags |= MHD_USE_TLS;
    }

#define XA_OPT(o, v, p) \
    (opts[n++] = (struct MHD_OptionItem){(o), (intptr_t)(v), (void *)(p)})
    /* MHD wants the logger first, or it logs its own way until then. */
    XA_OPT(MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL);
    XA_OPT(MHD_OPTION_SOCK_ADDR, 0, &ss);
    XA_OPT(MHD_OPTION_NOTIFY_COMPLETED, on_completed, l);
    XA_OPT(MHD_OPTION_CONNECTION_TIMEOUT, timeout, NULL);
    XA_OPT(MHD_OPTION_CONNECTION_LIMIT, conn_limit, NULL);
    XA_OPT(MHD_OPTION_LISTEN_BACKLOG_SIZE, XA_HTTP_LISTEN_BACKLOG, NULL);
    if (threads > 1) {
        XA_OPT(MHD_OPTION_THREAD_POOL_SIZE, threads, NULL);
    }
    if (l->tls) {
        XA_OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem);
        XA_OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem);
        XA_OPT(MHD_OPTION_HTTPS_PRIORITIES, 0, XA_HTTP_TLS_PRIORITIES);
        XA_OPT(MHD_OPTION_NOTIFY_CONNECTION, on_connection, l);
    }
    XA_OPT(MHD_OPTION_END, 0, NULL);
#undef XA_OPT

    l->daemon = MHD_start_daemon(flags, bind_port, NULL, NULL, on_access, l,
                                 MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!l->daemon) {
        return xa_error_internal("cannot start %s listener on %s port %d",
                                 l->tls ? "HTTPS" : "HTTP", address, port);
    }
    info = MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_BIND_PORT);
    l->port = info ? info->port : bind_port;
    xa_log_info(XA_HTTP_MODULE, "%s listening on %s port %d (%u threads)",
                l->tls ? "HTTPS" : "HTTP", address, l->port,
                threads > 1 ? threads : 1);
    return NULL;
}

struct xa_error *
xa_http_start(const struct xa_http_config *cfg, struct xa_http_server **ret)
{
    struct xa_http_server *s;
    struct xa_error *err = NULL;
    const char *address = cfg->bind_address ? cfg->bind_address : "0.0.0.0";
    unsigned threads = cfg->threads;
    unsigned timeout = cfg->connection_timeout ? cfg->connection_timeout
                                               : XA_HTTP_DEFAULT_TIMEOUT;
    rlim_t nofile;
    unsigned conn_limit = XA_HTTP_MAX_CONNECTIONS;

    *ret = NULL;
    if (!cfg->handler) {
        return xa_error_internal("xa_http_start: no handler");
    }
    if (cfg->http_port == 0 && cfg->https_port == 0) {
        return xa_error_internal("xa_http_start: no listener configured");
    }
    if (threads == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        threads = ncpu > 0 ? (unsigned)ncpu : 1;
    }
    /* Each connection costs a descriptor; keep the limit below what the
     * process may open so that MHD refuses cleanly rather than accept()
     * failing with EMFILE in a loop. */
    nofile = raise_nofile();
    if (nofile < XA_HTTP_FD_RESERVE + 64) {
        conn_limit = 64;
    } else if (nofile - XA_HTTP_FD_RESERVE < conn_limit) {
        conn_limit = (unsigned)(nofile - XA_HTTP_FD_RESERVE);
    }
    if (cfg->http_port != 0 && cfg->https_port != 0) {
        conn_limit /= 2;
    }
    /* A client vanishing mid-write must not kill the process. */
    if (MHD_is_feature_supported(MHD_FEATURE_AUTOSUPPRESS_SIGPIPE) != MHD_YES) {
        signal(SIGPIPE, SIG_IGN);
    }

    s = xa_calloc(1, sizeof(*s));
    s->handler = cfg->handler;
    s->handler_ctx = cfg->handler_ctx;
    s->max_body = cfg->max_body ? cfg->max_body : XA_HTTP_DEFAULT_MAX_BODY;
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->active, 0);
    s->plain.server = s;
    s->secure.server = s;
    s->secure.tls = true;

    if (cfg->https_port != 0) {
        if (!cfg->cert_file || !cfg->key_file) {
            err = xa_error_internal("HTTPS needs a certificate and a key");
            goto fail;
        }
        s->cert_pem = read_pem(cfg->cert_file, &err);
        if (!s->cert_pem) {
            goto fail;
        }
        s->key_pem = read_pem(cfg->key_file, &err);
        if (!s->key_pem) {
            goto fail;
        }
        if (gnutls_session_ticket_key_generate(&s->ticket_key) < 0) {
            err = xa_error_internal("cannot make a TLS session ticket key");
            goto fail;
        }
        err = listener_start(s, &s->secure, address, cfg->https_port, threads,
                             timeout, conn_limit);
        if (err) {
            goto fail;
        }
    }
    if (cfg->http_port != 0) {
        err = listener_start(s, &s->plain, address, cfg->http_port, threads,
                             timeout, conn_limit);
        if (err) {
            goto fail;
        }
    }
    *ret = s;
    return NULL;

fail:
    xa_http_stop(s);
    return err;
}

int
xa_http_port(const struct xa_http_server *s, bool tls)
{
    const struct xa_http_listener *l = tls ? &s->secure : &s->plain;

    return l->daemon ? l->port : 0;
}

/* Stops accepting; returns the listening socket, which must stay open
 * until MHD_stop_daemon() (MHD's threads may still look at it). */
static MHD_socket
quiesce(struct xa_http_listener *l)
{
    return l->daemon ? MHD_quiesce_daemon(l->daemon) : MHD_INVALID_SOCKET;
}

static void
listener_stop(struct xa_http_listener *l, MHD_socket listen_fd)
{
    if (l->daemon) {
        MHD_stop_daemon(l->daemon);
        l->daemon = NULL;
    }
    if (listen_fd != MHD_INVALID_SOCKET) {
        close(listen_fd);
    }
}

void
xa_http_stop(struct xa_http_server *s)
{
    MHD_socket plain_fd, secure_fd;
    double deadline;

    if (!s) {
        return;
    }
    plain_fd = quiesce(&s->plain);
    secure_fd = quiesce(&s->secure);

    /* MHD_stop_daemon() aborts the process if any connection is still
     * suspended, and only the handler would ever resume it.  So answer
     * every parked request here (flagging it so the handler's own answer
     * is dropped) and refuse to park new ones. */
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (struct xa_http_request *r = s->parked; r; r = r->next) {
        pthread_mutex_lock(&r->mu);
        if (r->state == XA_REQ_SUSPENDED) {
            r->abandoned = true;
            r->resp = response_text("Server shutting down\n", true);
            r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
            r->state = XA_REQ_RESUMING;
            MHD_resume_connection(r->conn);
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&s->mu);

    /* Give those answers, and any other request already with the handler,
     * a moment to reach the clients: MHD_stop_daemon() would cut them
     * off.  A shutdown path, so polling is good enough. */
    deadline = xa_monotonic() + XA_HTTP_DRAIN_SECS;
    while (atomic_load(&s->active) > 0 && xa_monotonic() < deadline) {
        usleep(2000);
    }

    /* MHD_stop_daemon() joins the polling threads and completes every
     * remaining request through on_completed(), which needs s->mu. */
    listener_stop(&s->plain, plain_fd);
    listener_stop(&s->secure, secure_fd);
    pthread_mutex_destroy(&s->mu);
    if (s->key_pem) {
        /* Do not leave the private key lying around in freed memory. */
        explicit_bzero(s->key_pem, strlen(s->key_pem));
    }
    free(s->key_pem);
    free(s->cert_pem);
    if (s->ticket_key.data) {
        gnutls_memset(s->ticket_key.data, 0, s->ticket_key.size);
        gnutls_free(s->ticket_key.data);
    }
    free(s);
}

/* ---- taking a connection over (CONNECT /console) ------------------------ */

int
xa_http_take_socket(struct xa_http_request *r)
{
    if (r->tls) {
        return -1; /* the bytes on the wire are GnuTLS records */
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) {
        return -1;
    }
    return fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0);
}

int
xa_http_take_tls(struct xa_http_request *r, void **tls_session)
{
    *tls_session = NULL;
    if (!r->tls) {
        return -1;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    const union MHD_ConnectionInfo *fi =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || !fi || !ci->tls_session) {
        return -1;
    }
    *tls_session = ci->tls_session;
    return fi->connect_fd;
}

void
xa_http_hangup(struct xa_http_request *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->responded) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    r->responded = true;
    r->hangup = true;
    if (!r->gone && !r->abandoned && r->state == XA_REQ_SUSPENDED) {
        /* queue_stored() finds no response and makes MHD close. */
        r->state = XA_REQ_RESUMING;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
    request_unref(r);
}
