/* jsonrpc.h - JSON-RPC codec (versions 1 and 2, as xapi speaks them).
 *
 * Parsing goes through json-c with its nesting limit set to
 * XA_JSONRPC_MAX_DEPTH (json-c's tokenizer does not recurse, and our
 * conversion recurses at most that deep).  Writing is our own: compact,
 * straight into an xa_buf, with no per-value allocation.
 *
 * Errors: malformed requests give JSONRPC_PARSE_ERROR [description] (the
 * HTTP layer answers those with HTTP 500, as xapi does); a string or
 * object key that is not UTF-8 gives INVALID_VALUE ["Invalid UTF-8
 * string in parameter", string]. */
#ifndef XA_RPC_JSONRPC_H
#define XA_RPC_JSONRPC_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "util.h"
#include "value.h"

/* json-c counts the request object itself as one level. */
#define XA_JSONRPC_MAX_DEPTH 64

/* Parses a request of 'len' bytes (need not be NUL-terminated).  On
 * success the caller owns '*ret_method' (free()), '*ret_params' (always an
 * XA_ARRAY: a JSON array as is, an object as the one struct parameter,
 * none as empty) and '*ret_id' (the id to echo, any non-null JSON value),
 * and '*ret_version' is 2 when "jsonrpc":"2.0" is present, else 1.  A
 * missing method, or a missing or null id (xapi has no notifications),
 * is a JSONRPC_PARSE_ERROR.  On failure the method and params are NULL; the id
 * and version are set only when the request was well formed but a parameter was
 * bad (so the error answer can echo the id), else NULL and 0. */
struct xa_error *xa_jsonrpc_parse_call(const char *body, size_t len,
                                       char **ret_method,
                                       struct xa_value **ret_params,
                                       struct xa_value **ret_id,
                                       int *ret_version);

/* Compact JSON for 'v': both integer kinds as numbers, doubles %.16g
 * (always with a '.' or exponent so they read back as doubles; NaN and
 * infinities, which JSON lacks, as null), datetimes as strings, XA_NIL and
 * a NULL 'v' as null. */
void xa_jsonrpc_write_value(struct xa_buf *out, const struct xa_value *v);

/* v1: {"result":R,"error":null,"id":ID}
 * v2: {"jsonrpc":"2.0","result":R,"id":ID}
 * result NULL means void and is sent as ""; id NULL is sent as null. */
void xa_jsonrpc_write_success(struct xa_buf *out, int version,
                              const struct xa_value *id,
                              const struct xa_value *result);

/* v1: {"result":null,"error":["CODE","p1",...],"id":ID}
 * v2: {"jsonrpc":"2.0","error":{"code":1,"message":"CODE",
 *      "data":["p1",...]},"id":ID} */
void xa_jsonrpc_write_failure(struct xa_buf *out, int version,
                              const struct xa_value *id,
                              const struct xa_error *e);

/* Client side: a version 2 request; 'params' is an XA_ARRAY (NULL means
 * none). */
void xa_jsonrpc_write_call(struct xa_buf *out, const char *method,
                           const struct xa_value *params, int64_t id);

/* Client side: parses a v1 or v2 reply.  An error member (v1 array, v2
 * object, or the v2-with-array shape xapi uses before dispatch) becomes
 * the returned error; otherwise '*ret_value' gets the result, which the
 * caller owns.  On failure '*ret_value' is NULL. */
struct xa_error *xa_jsonrpc_parse_response(const char *body, size_t len,
                                           struct xa_value **ret_value);

#endif
