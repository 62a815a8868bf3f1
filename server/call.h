/* call.h - one API call in flight.
 *
 * The RPC layer builds a call for every request; dispatch fills in the
 * message and the caller's session; implementations read what they need
 * from it.  An implementation that cannot answer at once (event.from
 * waiting for changes, a throttled login) marks the call deferred and
 * later hands the answer to xa_call_finish() from any thread. */
#ifndef XA_CALL_H
#define XA_CALL_H

#include <stdbool.h>

#include "error.h"
#include "schema.h"
#include "value.h"

/* The request header that carries a forwarded call's task (pool link). */
#define XA_CALL_TASK_HEADER "X-Xapid-Forwarded-Task"

struct xa_call {
    const struct xa_message_desc *msg; /* NULL until resolved */
    char *method;                      /* as the client spelt it; owned */
    char *session_ref;    /* caller's session, NULL for logins; owned */
    unsigned roles;       /* the session's roles (1 << enum xa_role) */
    bool is_superuser;    /* local root or pool session */
    bool is_pool_session; /* host-to-host */
    char *task_ref;       /* when running as an Async task; owned */
    /* The request's XA_CALL_TASK_HEADER, owned: the master's Async task
     * a call it forwarded runs for.  Dispatch moves it to 'task_ref' for
     * a host-to-host session, and drops it for any other. */
    char *forwarded_task;
    char *remote_addr; /* owned; "" when unknown */
    bool async;        /* called as Async.<class>.<message> */
    bool deferred;     /* the answer will come via xa_call_finish */
    /* Where xa_call_defer() also records the deferral, so the code that
     * invoked the implementation learns of it without touching a call
     * another thread may already have finished and freed. */
    bool *deferred_out;
    /* Set by whoever started the call; invoked exactly once with the
     * outcome (takes ownership of 'err' and 'ret'). */
    void (*on_finish)(struct xa_call *call, struct xa_error *err,
                      struct xa_value *ret);
    void *owner; /* for on_finish */
    /* Set by whoever started the call: makes the transport ready for a
     * late answer (suspends the HTTP connection).  May be NULL. */
    void (*on_defer)(struct xa_call *call);
};

struct xa_call *xa_call_new(const char *method, const char *remote_addr);
void xa_call_free(struct xa_call *call);
/* Marks the call as answered later.  An implementation must call this
 * before it lets any other thread see the call (a waiter list, a timer),
 * then return NULL with no result; the answer goes to xa_call_finish(). */
void xa_call_defer(struct xa_call *call);
/* Whether the code that invoked the implementation can take a deferred
 * answer (dispatch on an HTTP thread can; a task's worker cannot). */
bool xa_call_can_defer(const struct xa_call *call);
/* Delivers the outcome of a deferred call (takes 'err' and 'ret'). */
void xa_call_finish(struct xa_call *call, struct xa_error *err,
                    struct xa_value *ret);

#endif
