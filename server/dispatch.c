/* dispatch.c - see dispatch.h. */
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "db/db.h"
#include "log.h"
#include "pool/pool.h"
#include "rbac.h"
#include "session.h"
#include "task.h"

/* "Class_message": class names contain underscores themselves
 * (VM_metrics, host_cpu), so try each split point in turn. */
static const struct xa_message_desc *
resolve_alias(const char *name)
{
    size_t len = strlen(name);
    char buf[256];
    if (len >= sizeof buf) {
        return NULL;
    }
    for (size_t i = 1; i + 1 < len; i++) {
        if (name[i] != '_') {
            continue;
        }
        memcpy(buf, name, len + 1);
        buf[i] = '.';
        const struct xa_message_desc *m = xa_schema_message(buf);
        if (m) {
            return m;
        }
    }
    return NULL;
}

static struct xa_value *
list_methods(void)
{
    struct xa_value *a = xa_array();
    xa_array_append(a, xa_string("system.listMethods"));
    xa_array_append(a, xa_string("system.isAlive"));
    for (size_t i = 0; i < xa_schema_n_messages; i++) {
        const struct xa_message_desc *m = &xa_schema_messages[i];
        if (m->hidden) {
            continue;
        }
        xa_array_append(a, xa_string(m->wire));
        if (m->async) {
            char *s = xa_asprintf("Async.%s", m->wire);
            xa_array_append(a, xa_string_take(s));
        }
    }
    return a;
}

static struct xa_error *
type_error(const char *what, const struct xa_type *t)
{
    return xa_error_internal("Type error: %s should be of type %s", what,
                             t->text);
}

static bool
parse_bool_text(const char *s, bool *out)
{
    if (strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0) {
        *out = true;
        return true;
    }
    if (strcasecmp(s, "false") == 0 || strcmp(s, "0") == 0) {
        *out = false;
        return true;
    }
    return false;
}

static struct xa_error *
coerce_record(const struct xa_type *t, const struct xa_value *v,
              const char *what, struct xa_value **ret)
{
    if (v->kind != XA_STRUCT) {
        return type_error(what, t);
    }
    if (!t->cls) { /* a free-form record */
        *ret = xa_value_ref((struct xa_value *)v);
        return NULL;
    }
    struct xa_value *out = xa_struct();
    for (size_t i = 0; i < v->u.st.n; i++) {
        const char *key = v->u.st.m[i].key;
        int f = xa_schema_field_index(t->cls, key);
        if (f < 0) {
            continue; /* unknown members are ignored, as xapi does */
        }
        struct xa_value *c = NULL;
        char *w = xa_asprintf("%s.%s", what, key);
        struct xa_error *err =
            xa_dispatch_coerce(t->cls->fields[f].type, v->u.st.m[i].val, w, &c);
        free(w);
        if (err) {
            xa_value_unref(out);
            return err;
        }
        xa_struct_set(out, key, c);
    }
    *ret = out;
    return NULL;
}

struct xa_error *
xa_dispatch_coerce(const struct xa_type *t, const struct xa_value *v,
                   const char *what, struct xa_value **ret)
{
    int64_t i;
    bool b;
    switch (t->kind) {
    case XA_T_STRING:
    case XA_T_REF:
        if (v->kind == XA_STRING) {
            *ret = xa_value_ref((struct xa_value *)v);
            return NULL;
        }
        return type_error(what, t);
    case XA_T_DATETIME:
        if (v->kind == XA_DATETIME) {
            *ret = xa_value_ref((struct xa_value *)v);
            return NULL;
        }
        if (v->kind == XA_STRING) {
            *ret = xa_datetime(v->u.str.s);
            return NULL;
        }
        return type_error(what, t);
    case XA_T_ENUM:
        if (v->kind == XA_STRING) {
            for (size_t k = 0; k < t->enm->n_values; k++) {
                if (strcasecmp(t->enm->values[k], v->u.str.s) == 0) {
                    *ret = strcmp(t->enm->values[k], v->u.str.s) == 0
                               ? xa_value_ref((struct xa_value *)v)
                               : xa_string(t->enm->values[k]);
                    return NULL;
                }
            }
            return xa_error_new("INVALID_VALUE", 2, what, v->u.str.s);
        }
        return type_error(what, t);
    case XA_T_INT:
        if (v->kind == XA_INT) {
            *ret = xa_value_ref((struct xa_value *)v);
            return NULL;
        }
        if (v->kind == XA_INT32) {
            *ret = xa_int(v->u.i);
            return NULL;
        }
        if (v->kind == XA_STRING && xa_parse_int64(v->u.str.s, &i)) {
            *ret = xa_int(i);
            return NULL;
        }
        return type_error(what, t);
    case XA_T_FLOAT:
        if (v->kind == XA_DOUBLE) {
            *ret = xa_value_ref((struct xa_value *)v);
            return NULL;
        }
        if (v->kind == XA_INT || v->kind == XA_INT32) {
            *ret = xa_double((double)v->u.i);
            return NULL;
        }
        if (v->kind == XA_STRING) {
            char *end;
            double d = strtod(v->u.str.s, &end);
            if (end != v->u.str.s && !*end) {
                *ret = xa_double(d);
                return NULL;
            }
        }
        return type_error(what, t);
    case XA_T_BOOL:
        if (v->kind == XA_BOOL) {
            *ret = xa_value_ref((struct xa_value *)v);
            return NULL;
        }
        if (v->kind == XA_STRING && parse_bool_text(v->u.str.s, &b)) {
            *ret = xa_bool(b);
            return NULL;
        }
        return type_error(what, t);
    case XA_T_SET: {
        if (v->kind != XA_ARRAY) {
            return type_error(what, t);
        }
        struct xa_value *out = xa_array();
        for (size_t k = 0; k < v->u.arr.n; k++) {
            struct xa_value *c = NULL;
            struct xa_error *err =
                xa_dispatch_coerce(t->elem, v->u.arr.items[k], what, &c);
            if (err) {
                xa_value_unref(out);
                return err;
            }
            xa_array_append(out, c);
        }
        *ret = out;
        return NULL;
    }
    case XA_T_MAP: {
        if (v->kind != XA_STRUCT) {
            return type_error(what, t);
        }
        struct xa_value *out = xa_struct();
        for (size_t k = 0; k < v->u.st.n; k++) {
            /* Keys travel as text whatever their type: check them as
             * that type (an enum name, a number), keep the canonical
             * text. */
            struct xa_value *key = xa_string(v->u.st.m[k].key);
            struct xa_value *ck = NULL, *c = NULL;
            struct xa_error *err = xa_dispatch_coerce(t->key, key, what, &ck);
            xa_value_unref(key);
            if (!err) {
                err = xa_dispatch_coerce(t->elem, v->u.st.m[k].val, what, &c);
            }
            if (err) {
                xa_value_unref(ck);
                xa_value_unref(out);
                return err;
            }
            char *text = ck->kind == XA_INT
                             ? xa_asprintf("%lld", (long long)ck->u.i)
                             : xa_strdup(xa_value_str(ck) ? xa_value_str(ck)
                                                          : v->u.st.m[k].key);
            xa_struct_add(out, text, c);
            free(text);
            xa_value_unref(ck);
        }
        *ret = out;
        return NULL;
    }
    case XA_T_RECORD:
        return coerce_record(t, v, what, ret);
    case XA_T_OPTION:
        if (v->kind == XA_NIL) {
            *ret = xa_value_ref((struct xa_value *)v);
            return NULL;
        }
        return xa_dispatch_coerce(t->elem, v, what, ret);
    case XA_T_VOID:
        break;
    }
    return type_error(what, t);
}

/* A reference argument must name an existing object of its class (the
 * null reference is left for the implementation to judge). */
static struct xa_error *
check_refs(const struct xa_message_desc *m, struct xa_value *const *args)
{
    struct xa_txn *t = NULL;
    struct xa_error *err = NULL;
    for (size_t i = 0; i < m->n_params && !err; i++) {
        const struct xa_type *ty = m->params[i].type;
        if (ty->kind != XA_T_REF || !ty->cls->in_db) {
            continue;
        }
        const char *ref = args[i]->u.str.s;
        if (strcmp(ref, "OpaqueRef:NULL") == 0) {
            continue;
        }
        if (!t) {
            t = xa_db_begin_read();
        }
        if (!xa_db_exists(t, ty->cls, ref)) {
            err = xa_error_handle_invalid(ty->cls->name, ref);
        }
    }
    if (t) {
        xa_db_end(t);
    }
    return err;
}

/* A call the master forwarded for one of its Async tasks updates that
 * task, as the call would run here for a task of its own: the header
 * counts from a host-to-host session only (anyone else's is dropped).
 * The master waited until this host's replica held the task's row; a
 * host restarted since lacks it (tasks live in memory), and then runs
 * the call without it. */
static void
adopt_forwarded_task(struct xa_call *call)
{
    char *task = call->forwarded_task;
    call->forwarded_task = NULL;
    if (!task || !call->is_pool_session || call->async || call->task_ref) {
        free(task);
        return;
    }
    if (!xa_task_exists(task)) {
        xa_log_info("dispatch", "%s: forwarded task %s unknown here",
                    call->msg->wire, task);
        free(task);
        return;
    }
    call->task_ref = task;
}

struct xa_error *
xa_dispatch_invoke(struct xa_call *call, struct xa_value *const *args,
                   struct xa_value **ret)
{
    *ret = NULL;
    /* In a pool, work that belongs to another host runs there. */
    bool handled = false;
    struct xa_error *err = xa_pool_forward(call, args, ret, &handled);
    if (handled) {
        return err;
    }
    return call->msg->fn(call, args, ret);
}

static void
finish_now(struct xa_call *call, struct xa_error *err, struct xa_value *ret)
{
    call->on_finish(call, err, ret);
}

static struct xa_error *
arity_error(const struct xa_message_desc *m, size_t received)
{
    char expected[32], got[32];
    snprintf(expected, sizeof expected, "%zu", m->n_required);
    snprintf(got, sizeof got, "%zu", received);
    return xa_error_new("MESSAGE_PARAMETER_COUNT_MISMATCH", 3, m->wire,
                        expected, got);
}

void
xa_dispatch(struct xa_call *call, const struct xa_value *params, bool *bare)
{
    const char *name = call->method;
    *bare = false;
    if (strcmp(name, "system.listMethods") == 0) {
        *bare = true;
        finish_now(call, NULL, list_methods());
        return;
    }
    if (strncmp(name, "system.isAlive", 14) == 0) {
        *bare = true;
        finish_now(call, NULL,
                   params->u.arr.n ? xa_value_ref(params->u.arr.items[0])
                                   : xa_string("OK"));
        return;
    }
    if (strncmp(name, "Async.", 6) == 0) {
        call->async = true;
        name += 6;
    }
    const struct xa_message_desc *m = xa_schema_message(name);
    if (!m && !call->async) {
        m = resolve_alias(name);
    }
    if (!m) {
        finish_now(call,
                   xa_error_new("MESSAGE_METHOD_UNKNOWN", 1, call->method),
                   NULL);
        return;
    }
    call->msg = m;
    if (call->async && !m->async) {
        char *msg = xa_asprintf("No async mode for this operation (rpc: %s)",
                                call->method);
        struct xa_error *e = xa_error_new("Fault", 1, msg);
        free(msg);
        finish_now(call, e, NULL);
        return;
    }
    size_t n = params->u.arr.n;
    size_t skip = m->session ? 1 : 0;
    if (n < skip) {
        finish_now(call, arity_error(m, 0), NULL);
        return;
    }
    size_t given = n - skip;
    if (given < m->n_required || given > m->n_params) {
        finish_now(call, arity_error(m, given), NULL);
        return;
    }
    struct xa_error *err = NULL;
    if (m->session) {
        const struct xa_value *s = params->u.arr.items[0];
        if (s->kind != XA_STRING) {
            finish_now(call, xa_error_new("SESSION_INVALID", 1, ""), NULL);
            return;
        }
        err = xa_session_check(s->u.str.s, call);
        if (!err) {
            err = xa_rbac_check(call, m);
        }
        if (!err) {
            err = xa_pool_check_call(call, m);
        }
        if (err) {
            finish_now(call, err, NULL);
            return;
        }
    }
    adopt_forwarded_task(call);
    struct xa_value **args = xa_calloc(m->n_params + 1, sizeof *args);
    for (size_t i = 0; i < m->n_params && !err; i++) {
        const struct xa_param_desc *p = &m->params[i];
        if (i < given) {
            err = xa_dispatch_coerce(p->type, params->u.arr.items[skip + i],
                                     p->name, &args[i]);
        } else {
            args[i] = xa_schema_param_default(m, i);
        }
    }
    if (!err) {
        err = check_refs(m, args);
    }
    if (err) {
        finish_now(call, err, NULL);
    } else if (call->async) {
        struct xa_value *task = NULL;
        err = xa_task_submit(call, args, &task);
        finish_now(call, err, task);
        /* the task took its own copy of the call and arguments */
    } else {
        struct xa_value *ret = NULL;
        bool deferred = false;
        /* xa_call_defer() writes it and clears the pointer; if not
         * deferred, it is cleared below before this frame ends */
        // cppcheck-suppress autoVariables
        call->deferred_out = &deferred;
        /* a master's commits here do not hold this thread while the
         * members catch up: the answer waits for them instead */
        xa_pool_call_begin();
        err = xa_dispatch_invoke(call, args, &ret);
        /* once deferred, 'call' may already be answered and freed */
        if (!deferred) {
            call->deferred_out = NULL;
            if (!xa_pool_call_end(call, &err, &ret)) {
                finish_now(call, err, ret);
            }
        } else if (xa_pool_call_end(NULL, NULL, NULL) || err || ret) {
            xa_log_err("dispatch", "%s deferred but also answered", m->wire);
            xa_error_free(err);
            xa_value_unref(ret);
        }
    }
    for (size_t i = 0; i < m->n_params; i++) {
        xa_value_unref(args[i]);
    }
    free(args);
}
