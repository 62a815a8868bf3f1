/* xmlrpc.h - XML-RPC codec: parsing calls and responses into xa_value
 * trees, and writing them the way xapi does.
 *
 * Parsing uses a small strict parser of our own rather than xmlrpc-c:
 * xmlrpc-c (1.33) normalises dateTime text (we must keep it as sent),
 * rejects a whole document for one non-UTF-8 string (xapi answers
 * INVALID_VALUE for that parameter instead) and expands DOCTYPE entities
 * without limit.  Our parser refuses any DOCTYPE, expands only the five
 * predefined entities and character references, caps value nesting at
 * XA_XMLRPC_MAX_DEPTH and never recurses deeper than that.
 *
 * Errors: a malformed document gives XMLRPC_PARSE_ERROR [description];
 * a string (or struct member name) that is not UTF-8 gives
 * INVALID_VALUE ["Invalid UTF-8 string in parameter", string].
 *
 * Writers append to 'out' (which the caller owns) and never fail. */
#ifndef XA_RPC_XMLRPC_H
#define XA_RPC_XMLRPC_H

#include <stddef.h>

#include "error.h"
#include "util.h"
#include "value.h"

/* Deepest <value> nesting accepted (a top-level parameter is depth 1). */
#define XA_XMLRPC_MAX_DEPTH 64

/* Parses a methodCall of 'len' bytes (need not be NUL-terminated).  On
 * success the caller owns '*ret_method' (free()) and '*ret_params' (an
 * XA_ARRAY, xa_value_unref()).  On failure both are set to NULL.
 * Member names are kept in document order; a repeated name is kept twice
 * (xa_struct_get finds the first), as xapi's association lists do. */
struct xa_error *xa_xmlrpc_parse_call(const char *body, size_t len,
                                      char **ret_method,
                                      struct xa_value **ret_params);

/* Compact value writer (no whitespace between elements): strings and
 * XA_INT as bare <value>text</value>, XA_INT32 as <i4>, booleans 1|0,
 * doubles %.16g.  A NULL 'v' is written as an empty string. */
void xa_xmlrpc_write_value(struct xa_buf *out, const struct xa_value *v);

/* A whole methodResponse with the XenAPI envelope {Status: Success,
 * Value: v}; v == NULL means void and is sent as Value "". */
void xa_xmlrpc_write_success(struct xa_buf *out, const struct xa_value *v);

/* A whole methodResponse {Status: Failure, ErrorDescription: [code,
 * params...]}.  xapi never uses <fault>. */
void xa_xmlrpc_write_failure(struct xa_buf *out, const struct xa_error *e);

/* A methodResponse whose single param is 'v' itself, without the
 * envelope (system.listMethods). */
void xa_xmlrpc_write_bare(struct xa_buf *out, const struct xa_value *v);

/* Client side: a methodCall of 'method' with the items of 'params' (an
 * XA_ARRAY; NULL means no parameters). */
void xa_xmlrpc_write_call(struct xa_buf *out, const char *method,
                          const struct xa_value *params);

/* Client side: parses a methodResponse.  A XenAPI envelope with
 * Status=Success yields its Value ("" when absent); Status=Failure yields
 * an error built from ErrorDescription; anything else (a bare value, as
 * from system.listMethods) is returned as is.  A <fault> becomes
 * XMLRPC_FAULT [faultCode, faultString].  On success the caller owns
 * '*ret_value'; on failure it is set to NULL. */
struct xa_error *xa_xmlrpc_parse_response(const char *body, size_t len,
                                          struct xa_value **ret_value);

#endif
