/* data.c - see data.h. */
#include "data/data.h"

#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "pool/pool.h"
#include "rbac.h"
#include "rpc/xmlrpc.h"
#include "session.h"
#include "task.h"

extern const struct xa_class_desc xa_cls_task;

bool
xa_data_auth(struct xa_http_request *r, const char *as)
{
    const char *s = xa_http_query(r, "session_id");
    if (!s) {
        s = xa_http_cookie(r, "session_id");
    }
    if (!s) {
        const char *text = "A session_id is required\n";
        xa_http_respond(r, 401, "text/plain", xa_strdup(text), strlen(text));
        return false;
    }
    struct xa_call *call = xa_call_new(as, xa_http_remote_addr(r));
    struct xa_error *err = xa_session_check(s, call);
    const struct xa_message_desc *m = xa_schema_message(as);
    if (!err && m) {
        err = xa_rbac_check(call, m);
    } else if (err && strcmp(err->code, "SESSION_INVALID") == 0) {
        xa_error_free(err); /* a session of the master's, on a member? */
        err = xa_pool_check_session(s, as);
    }
    xa_call_free(call);
    if (err) {
        xa_data_fail(r, strcmp(err->code, "SESSION_INVALID") == 0 ? 401 : 403,
                     err);
        xa_error_free(err);
        return false;
    }
    return true;
}

char *
xa_data_resolve(const struct xa_class_desc *cls, const char *key)
{
    if (!key || !*key) {
        return NULL;
    }
    struct xa_txn *t = xa_db_begin_read();
    char *ref = NULL;
    if (xa_db_exists(t, cls, key)) {
        ref = xa_strdup(key);
    } else {
        ref = xa_db_ref_by_uuid(t, cls, key);
    }
    xa_db_end(t);
    return ref;
}

static int
task_field(const char *name)
{
    return xa_schema_field_index(&xa_cls_task, name);
}

char *
xa_data_task(struct xa_http_request *r, const char *label)
{
    const char *given = xa_http_query(r, "task_id");
    if (given && *given) {
        struct xa_txn *t = xa_db_begin_read();
        bool ok = xa_db_exists(t, &xa_cls_task, given);
        xa_db_end(t);
        if (ok) {
            return xa_strdup(given);
        }
    }
    char *ref = NULL;
    struct xa_error *err = xa_task_create(label, "", &ref);
    if (err) {
        xa_error_free(err);
        return NULL;
    }
    return ref;
}

static void
set_fields(const char *task, const char *const *names,
           struct xa_value *const *vals, size_t n)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_task, task)) {
        xa_db_abort(t);
        for (size_t i = 0; i < n; i++) {
            xa_value_unref(vals[i]);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!err) {
            err = xa_db_set_field(t, &xa_cls_task, task, task_field(names[i]),
                                  vals[i]);
        } else {
            xa_value_unref(vals[i]);
        }
    }
    if (err) {
        xa_db_abort(t);
    } else {
        err = xa_db_commit(t);
    }
    xa_error_free(err);
}

void
xa_data_task_progress(const char *task, double progress)
{
    if (!task) {
        return;
    }
    const char *names[] = {"progress"};
    struct xa_value *vals[] = {xa_double(progress)};
    set_fields(task, names, vals, 1);
}

bool
xa_data_task_cancelling(const char *task)
{
    if (!task) {
        return false;
    }
    struct xa_txn *t = xa_db_begin_read();
    const struct xa_value *v =
        xa_db_peek_field(t, &xa_cls_task, task, task_field("status"));
    bool c = v && v->u.str.s && strcmp(v->u.str.s, "cancelling") == 0;
    xa_db_end(t);
    return c;
}

void
xa_data_task_finish(const char *task, struct xa_error *err,
                    struct xa_value *result)
{
    if (!task) {
        xa_error_free(err);
        xa_value_unref(result);
        return;
    }
    char now[32];
    xa_datetime_now(now);
    if (err) {
        struct xa_value *info = xa_array();
        xa_array_append(info, xa_string(err->code));
        for (size_t i = 0; i < err->n_params; i++) {
            xa_array_append(info, xa_string(err->params[i]));
        }
        bool cancelled = strcmp(err->code, "TASK_CANCELLED") == 0;
        const char *names[] = {"status", "error_info", "progress", "finished",
                               "allowed_operations"};
        struct xa_value *vals[] = {
            xa_string(cancelled ? "cancelled" : "failure"), info,
            xa_double(1.0), xa_datetime(now), xa_array()};
        set_fields(task, names, vals, 5);
    } else {
        struct xa_buf b = {0};
        if (result) {
            xa_xmlrpc_write_value(&b, result);
        }
        const char *names[] = {"status", "result", "progress", "finished",
                               "allowed_operations"};
        struct xa_value *vals[] = {
            xa_string("success"), xa_string_take(xa_buf_steal(&b)),
            xa_double(1.0), xa_datetime(now), xa_array()};
        set_fields(task, names, vals, 5);
        xa_buf_free(&b);
    }
    xa_error_free(err);
    xa_value_unref(result);
}

void
xa_data_fail(struct xa_http_request *r, int status, const struct xa_error *err)
{
    struct xa_buf b = {0};
    xa_buf_puts(&b, err->code);
    for (size_t i = 0; i < err->n_params; i++) {
        xa_buf_printf(&b, " %s", err->params[i]);
    }
    xa_buf_putc(&b, '\n');
    size_t len = b.len;
    xa_http_respond(r, status, "text/plain", xa_buf_steal(&b), len);
}
