/* dispatch.h - from a decoded request to an implementation.
 *
 * Resolves the method (Class.message, Class_message, Async.Class.message,
 * system.*), checks arity, types and references against the schema,
 * validates the session and its roles, then runs the implementation
 * directly or as a task. */
#ifndef XA_DISPATCH_H
#define XA_DISPATCH_H

#include "call.h"

/* Runs 'call' (whose 'method' is set) with 'params' (an XA_ARRAY,
 * borrowed).  The outcome reaches call->on_finish, at once or later.
 * '*bare' is set when the result must be sent without the XenAPI
 * Status/Value envelope (system.listMethods). */
void xa_dispatch(struct xa_call *call, const struct xa_value *params,
                 bool *bare);

/* Checks and normalises one value against a schema type; on success
 * '*ret' is a new reference to a value of the right kind. */
struct xa_error *xa_dispatch_coerce(const struct xa_type *t,
                                    const struct xa_value *v, const char *what,
                                    struct xa_value **ret) XA_WARN_UNUSED;

/* Runs the implementation of an already-checked call: used by dispatch
 * and by the task workers.  'args' holds one value per declared
 * parameter. */
struct xa_error *xa_dispatch_invoke(struct xa_call *call,
                                    struct xa_value *const *args,
                                    struct xa_value **ret);

#endif
