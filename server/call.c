/* call.c - see call.h. */
#include "call.h"

#include <stdlib.h>

struct xa_call *
xa_call_new(const char *method, const char *remote_addr)
{
    struct xa_call *c = xa_calloc(1, sizeof *c);
    c->method = xa_strdup(method);
    c->remote_addr = xa_strdup(remote_addr ? remote_addr : "");
    return c;
}

void
xa_call_free(struct xa_call *call)
{
    if (!call) {
        return;
    }
    free(call->method);
    free(call->session_ref);
    free(call->task_ref);
    free(call->forwarded_task);
    free(call->remote_addr);
    free(call);
}

void
xa_call_finish(struct xa_call *call, struct xa_error *err, struct xa_value *ret)
{
    call->on_finish(call, err, ret);
}

void
xa_call_defer(struct xa_call *call)
{
    call->deferred = true;
    if (call->deferred_out) {
        *call->deferred_out = true;
        call->deferred_out = NULL; /* it points into the invoker's frame */
    }
    if (call->on_defer) {
        call->on_defer(call);
    }
}

bool
xa_call_can_defer(const struct xa_call *call)
{
    return call->deferred_out != NULL && call->on_defer != NULL;
}
