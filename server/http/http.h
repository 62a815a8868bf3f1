/* http.h - the HTTP(S) front end of xapid, on top of libmicrohttpd.
 *
 * One libmicrohttpd daemon serves each listener (plain HTTP and HTTPS);
 * both hand complete requests to the same handler.  Each daemon runs a
 * pool of polling threads (epoll), so a handler runs on one of those
 * threads and must not block for long: work that waits (event.from
 * long-polls, tasks) suspends the request and answers it later from any
 * thread, so a waiting request holds a socket but no thread.
 *
 * Request lifetime and ownership
 * ------------------------------
 * A 'struct xa_http_request' is created by this layer when a request's
 * body has been received and handed to the handler.  From then on the
 * handler side owns one reference to it, which xa_http_respond() gives
 * back; the request stays valid (all accessors keep working) until that
 * call even if the client disconnects or the server is stopped in the
 * meantime.  Every string returned by an accessor is borrowed from the
 * request and lives exactly as long as it.  The accessors copy nothing
 * from libmicrohttpd lazily (headers, cookies and query arguments are
 * captured before the handler runs), so they may be called from any
 * thread that holds the request.
 *
 * Every response carries "Access-Control-Allow-Origin: *" (XenAPI
 * clients in browsers rely on it). */
#ifndef XA_HTTP_H
#define XA_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct xa_http_request; /* opaque */
struct xa_http_server;  /* opaque */

/* Called once per complete request (body fully received), on one of the
 * server's threads.  The handler must eventually call xa_http_respond()
 * exactly once: either before returning, or later from any thread after
 * calling xa_http_suspend() before returning.  A handler that returns
 * without doing either gets a 500 sent on its behalf (and an error
 * logged); it must then not touch the request again. */
typedef void (*xa_http_handler)(struct xa_http_request *req, void *ctx);

struct xa_http_config {
    /* Address to listen on: an IPv4 or IPv6 literal.  "0.0.0.0" is every
     * IPv4 address; "::" is every IPv6 and IPv4 address (dual stack).
     * NULL means "0.0.0.0". */
    const char *bind_address;
    int http_port;  /* 0 = no plain HTTP listener; -1 = ephemeral port */
    int https_port; /* 0 = no HTTPS listener; -1 = ephemeral port */
    const char *cert_file, *key_file; /* PEM files, needed for HTTPS */
    unsigned threads; /* polling threads per listener; 0 = one per CPU */
    /* Largest request body accepted, in bytes; 0 means 300 KiB (xapi's
     * limit).  Larger bodies are refused with 413 and never buffered. */
    size_t max_body;
    /* Seconds a connection may stay idle before it is closed; 0 means
     * 300 (a kept-alive client between calls).  Suspended requests do
     * not time out. */
    unsigned connection_timeout;
    xa_http_handler handler; /* required */
    void *handler_ctx;       /* passed to the handler, not owned */
};

/* Starts the listeners.  On success '*ret' is the server, which the
 * caller owns and releases with xa_http_stop().  The config is copied;
 * the cert and key files are read once, here.  Also raises the soft
 * RLIMIT_NOFILE to the hard limit so that many idle kept-alive and
 * suspended connections fit. */
struct xa_error *xa_http_start(const struct xa_http_config *cfg,
                               struct xa_http_server **ret);

/* Port a listener is bound to (useful with ephemeral ports), or 0 when
 * that listener is not running. */
int xa_http_port(const struct xa_http_server *s, bool tls);

/* Stops accepting, answers every suspended request with 503 (their
 * handlers may still call xa_http_respond() later, which then just
 * releases the request), waits up to a second for answers already on
 * their way, then closes every connection and frees 's'.  Blocks until
 * no handler call for this server is running. */
void xa_http_stop(struct xa_http_server *s);

/* Request accessors.  Results are borrowed from 'r'. */
const char *xa_http_method(const struct xa_http_request *r); /* "POST" */
/* The path without the query string, e.g. "/jsonrpc". */
const char *xa_http_path(const struct xa_http_request *r);
/* First decoded query argument named 'key' (case-sensitive), "" when it
 * is present without a value ("?json"), NULL when absent. */
const char *xa_http_query(const struct xa_http_request *r, const char *key);
/* The n-th (from 0) occurrence of a repeatable query argument such as
 * rrd_updates' vm_uuid, or NULL past the last one. */
const char *xa_http_query_nth(const struct xa_http_request *r, const char *key,
                              size_t n);
/* Request header, name matched case-insensitively; NULL when absent. */
const char *xa_http_header(const struct xa_http_request *r, const char *name);
/* Cookie value by name (case-sensitive); NULL when absent. */
const char *xa_http_cookie(const struct xa_http_request *r, const char *name);
/* The body, NUL-terminated after '*len' bytes (which may include NULs);
 * never NULL ("" when empty).  'len' may be NULL. */
const char *xa_http_body(const struct xa_http_request *r, size_t *len);
/* Client IP as text, e.g. "127.0.0.1" or "::1" (IPv4 clients of a dual
 * stack listener show as IPv4). */
const char *xa_http_remote_addr(const struct xa_http_request *r);
bool xa_http_is_tls(const struct xa_http_request *r);

/* Marks the request as answered later; call from the handler, before it
 * returns.  The connection is parked (no thread, no timeout) until
 * xa_http_respond().  While parked, a client that goes away is not
 * noticed; answering it later is harmless. */
void xa_http_suspend(struct xa_http_request *r);

/* Adds a response header; call before xa_http_respond(), from the thread
 * that holds the request.  Name and value are copied. */
void xa_http_add_header(struct xa_http_request *r, const char *name,
                        const char *value);

/* Sends the response and releases the caller's reference to 'r' (do not
 * use 'r' afterwards).  Takes ownership of 'body', a malloc'd buffer of
 * 'len' bytes, or NULL for an empty body.  'content_type' (copied) may be
 * NULL for none.  Safe from any thread, including after the client went
 * away or the server was stopped (then the response is dropped). */
void xa_http_respond(struct xa_http_request *r, int status,
                     const char *content_type, char *body, size_t len);

/* ---- streamed requests and responses --------------------------------
 *
 * Disk images do not fit the buffered model above (a 300 KiB body cap, a
 * body kept in memory), so a route can instead take its body piece by
 * piece and answer with a body produced on demand.  RPC requests never
 * take these paths. */

struct xa_http_stream_ops {
    /* Called on the connection's thread as soon as the headers are in,
     * before any body; the accessors work (the body accessor gives "").
     * Returns the request's stream state, or NULL after answering with
     * xa_http_respond() (a refusal: the body is then never read and the
     * connection is closed after the answer). */
    void *(*begin)(struct xa_http_request *r, void *ctx);
    /* One piece of body, on the connection's thread (so it may block the
     * other connections that thread serves for as long as it takes: keep
     * it to writing a file).  Returning false makes the rest of the body
     * be read and dropped; 'end' then sees complete = false. */
    bool (*data)(void *state, const char *data, size_t len);
    /* Called exactly once per accepted request: when the body is complete
     * (complete = true unless 'data' refused some), or when the client
     * went away before that (complete = false; answers are then dropped).
     * Must answer like a handler: xa_http_respond() now, or
     * xa_http_suspend() and answer later from any thread.  It also ends
     * the state 'begin' returned. */
    void (*end)(void *state, struct xa_http_request *r, bool complete);
};

/* Routes requests for 'method' + exact 'path' (the query string aside) to
 * 'ops' instead of the server's handler.  Process-wide; call before
 * xa_http_start().  'ops' and 'ctx' are borrowed for good. */
void xa_http_stream_route(const char *method, const char *path,
                          const struct xa_http_stream_ops *ops, void *ctx);

/* Produces the next bytes of a streamed response at offset 'pos' into
 * 'buf' (at most 'max'): the count, 0 at the end, or -1 on an error
 * (the connection is then cut, which is all HTTP allows once a status
 * was sent).  Runs on the connection's thread. */
typedef long (*xa_http_read_fn)(void *ctx, uint64_t pos, char *buf, size_t max);

/* Like xa_http_respond() with a body that 'fn' produces while it is sent:
 * 'size' bytes, or -1 when unknown (chunked for HTTP/1.1 clients, closed
 * at the end for HTTP/1.0 ones).  'free_fn' (may be NULL) releases 'ctx'
 * once the response is finished with, whether it was sent or not. */
void xa_http_respond_stream(struct xa_http_request *r, int status,
                            const char *content_type, int64_t size,
                            xa_http_read_fn fn, void *ctx,
                            void (*free_fn)(void *ctx));

/* ---- taking a connection over ----------------------------------------
 *
 * For CONNECT /console, which answers "200 OK" and then carries a raw
 * console stream both ways: libmicrohttpd's own upgrade support insists
 * on "101 Switching Protocols" and HTTP/1.1, which xapi's clients do not
 * send.  A handler that calls xa_http_take_socket() gets a duplicate of
 * the client's socket (plain HTTP only: -1 over TLS), must call
 * xa_http_suspend() before returning (the connection is then left alone
 * by libmicrohttpd) and, once finished with the socket, xa_http_hangup()
 * instead of xa_http_respond(): the connection is closed with nothing
 * more sent. */
int xa_http_take_socket(struct xa_http_request *r);
/* The same over HTTPS (CONNECT /migrate): the connection's own socket
 * (non-blocking, not a duplicate: do not close it) and its GnuTLS session
 * in '*tls_session', both usable from xa_http_suspend() until
 * xa_http_hangup(); -1 over plain HTTP. */
int xa_http_take_tls(struct xa_http_request *r, void **tls_session);
void xa_http_hangup(struct xa_http_request *r);

#endif
