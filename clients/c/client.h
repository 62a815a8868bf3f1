/* client.h - a connection to a XenAPI server, over HTTP(S) with libcurl.
 *
 * One 'struct xa_client' holds a server URL, the TLS policy, the session
 * once logged in, and one CURL easy handle that is kept alive between
 * calls (xapi and xapid both keep connections open), guarded by a mutex
 * so that several threads may share a client; calls are then serialised.
 *
 * Calls speak XML-RPC (POST /) by default or JSON-RPC (POST /jsonrpc),
 * using the same codecs as the server (server/rpc).  A XenAPI failure
 * comes back as the xa_error [code, params...] the server sent.  Failures
 * of the transport itself use codes of our own, never sent by a server:
 *
 *   CLIENT_TRANSPORT_ERROR [url, libcurl's message]
 *   CLIENT_HTTP_ERROR      [url, HTTP status]
 *   CLIENT_CERTIFICATE_REJECTED [url, SHA-256 fingerprint seen]
 *
 * The generated typed calls (xa-client.h) build their parameters and go
 * through xa_client_call(). */
#ifndef XA_CLIENT_H
#define XA_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "value.h"

#define XA_CLIENT_TRANSPORT_ERROR      "CLIENT_TRANSPORT_ERROR"
#define XA_CLIENT_HTTP_ERROR           "CLIENT_HTTP_ERROR"
#define XA_CLIENT_CERTIFICATE_REJECTED "CLIENT_CERTIFICATE_REJECTED"

struct xa_client;

enum xa_client_protocol {
    XA_CLIENT_XMLRPC,  /* POST / */
    XA_CLIENT_JSONRPC, /* POST /jsonrpc, version 2 */
};

/* Decides, during the TLS handshake and before any byte of a request is
 * sent, whether to talk to a server whose certificate has SHA-256
 * fingerprint 'fingerprint' (upper-case hex pairs joined by ':').
 * 'ca_ok' tells whether the certificate also chains to a trusted CA. */
typedef bool (*xa_client_cert_check)(void *ctx, const char *fingerprint,
                                     bool ca_ok);

struct xa_client_options {
    enum xa_client_protocol protocol;
    /* Without a cert_check, HTTPS requires a certificate chaining to a
     * CA in 'ca_file' (or the system store when NULL) unless 'insecure'.
     * With one, the callback alone decides (xapi hosts use self-signed
     * certificates, so xe pins fingerprints instead). */
    xa_client_cert_check cert_check;
    void *cert_ctx; /* passed to cert_check, not owned */
    const char *ca_file;
    bool insecure;
    long timeout_s; /* per request; 0 means none (long polls) */
};

/* 'url' is "http[s]://host[:port]" with no path.  'opt' may be NULL for
 * XML-RPC with CA verification.  Never fails: connecting happens on the
 * first call. */
struct xa_client *xa_client_new(const char *url,
                                const struct xa_client_options *opt);
/* Accepts NULL.  Does not log out (see xa_client_logout). */
void xa_client_free(struct xa_client *c);

/* session.login_with_password(user, pw, "2.23", "xe"); remembers the
 * credentials so that a call answered SESSION_INVALID (session expired or
 * the server restarted) logs in again and is retried once. */
struct xa_error *xa_client_login(struct xa_client *c, const char *user,
                                 const char *pw);
/* session.logout, then forgets the session.  No-op when not logged in. */
struct xa_error *xa_client_logout(struct xa_client *c);

/* The session ref, or NULL (borrowed, valid until the next call). */
const char *xa_client_session(const struct xa_client *c);
const char *xa_client_url(const struct xa_client *c);

/* Calls 'method'.  Takes 'params' (an XA_ARRAY of the arguments after the
 * session; NULL means none); when 'with_session' the session ref is sent
 * first.  On success '*ret' (if 'ret' is not NULL) receives the result,
 * which the caller owns. */
struct xa_error *xa_client_call(struct xa_client *c, const char *method,
                                bool with_session, struct xa_value *params,
                                struct xa_value **ret);
/* The same with extra request headers: 'headers' is NULL or a
 * NULL-terminated list of "Name: value" lines (borrowed). */
struct xa_error *
xa_client_call_with_headers(struct xa_client *c, const char *method,
                            bool with_session, struct xa_value *params,
                            const char *const *headers, struct xa_value **ret);

/* Progress of a transfer: bytes done so far and the total (0 when not
 * known).  Called from the calling thread. */
typedef void (*xa_client_progress)(void *ctx, uint64_t done, uint64_t total);

/* Streams 'size' bytes read from 'fd' to "PUT <path_and_query>" on the
 * same server (HTTP handlers such as /import).  The session is not added
 * by this function: put session_id= in the query.  '*ret_status' receives
 * the HTTP status; a status other than 200 is CLIENT_HTTP_ERROR. */
struct xa_error *xa_client_http_put(struct xa_client *c,
                                    const char *path_and_query, int fd,
                                    uint64_t size, xa_client_progress cb,
                                    void *cb_ctx, long *ret_status);
/* "GET <path_and_query>", writing the body to 'fd'. */
struct xa_error *xa_client_http_get(struct xa_client *c,
                                    const char *path_and_query, int fd,
                                    xa_client_progress cb, void *cb_ctx,
                                    long *ret_status);

#endif
