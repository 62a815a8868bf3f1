/* task.c - see task.h. */
#include "task.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "dispatch.h"
#include "log.h"
#include "pool/pool.h"
#include "rpc/xmlrpc.h"
#include "self.h"
#include "xa-impl.h"

#define TASK_KEEP_FINISHED (65 * 60) /* seconds, as xapi */
#define TASK_KEEP_PENDING  (24 * 3600)

extern const struct xa_class_desc xa_cls_task;

struct job {
    struct job *next;
    struct xa_call *call;   /* owned */
    struct xa_value **args; /* owned references */
    size_t n_args;
};

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct job *queue_head, *queue_tail;
static bool stopping;
static pthread_t *workers;
static unsigned n_workers;

static int
field(const char *name)
{
    return xa_schema_field_index(&xa_cls_task, name);
}

static struct xa_error *
set_task_field(struct xa_txn *t, const char *ref, const char *name,
               struct xa_value *v)
{
    return xa_db_set_field(t, &xa_cls_task, ref, field(name), v);
}

struct xa_error *
xa_task_create(const char *label, const char *description, char **ret_ref)
{
    char now[32];
    xa_datetime_now(now);
    struct xa_value *rec = xa_struct();
    xa_struct_add(rec, "name_label", xa_string(label));
    xa_struct_add(rec, "name_description", xa_string(description));
    xa_struct_add(rec, "status", xa_string("pending"));
    xa_struct_add(rec, "progress", xa_double(0.0));
    xa_struct_add(rec, "created", xa_datetime(now));
    xa_struct_add(rec, "resident_on", xa_string(xa_self_host()));
    struct xa_value *ops = xa_array();
    xa_array_append(ops, xa_string("cancel"));
    xa_struct_add(rec, "allowed_operations", ops);
    char *ref = xa_ref_new();
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_db_create(t, &xa_cls_task, ref, rec);
    if (err) {
        xa_db_abort(t);
        free(ref);
        return err;
    }
    err = xa_db_commit(t);
    if (err) {
        free(ref);
        return err;
    }
    *ret_ref = ref;
    return NULL;
}

bool
xa_task_exists(const char *ref)
{
    struct xa_txn *t = xa_db_begin_read();
    bool found = xa_db_exists(t, &xa_cls_task, ref);
    xa_db_end(t);
    return found;
}

static char *
task_status(const char *ref)
{
    struct xa_txn *t = xa_db_begin_read();
    const struct xa_value *v =
        xa_db_peek_field(t, &xa_cls_task, ref, field("status"));
    char *s = v ? xa_strdup(v->u.str.s) : NULL;
    xa_db_end(t);
    return s;
}

/* Records the outcome of a task's work; takes 'err' and 'ret'. */
static void
complete_task(const char *ref, struct xa_error *err, struct xa_value *ret)
{
    char *status = task_status(ref);
    bool cancelling = status && strcmp(status, "cancelling") == 0;
    free(status);
    if (cancelling && !err) {
        err = xa_error_new("TASK_CANCELLED", 1, ref);
    }
    char now[32];
    xa_datetime_now(now);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *e2 = NULL;
    if (!xa_db_exists(t, &xa_cls_task, ref)) {
        xa_db_abort(t); /* destroyed meanwhile: nothing to record */
        xa_error_free(err);
        xa_value_unref(ret);
        return;
    }
    if (err) {
        struct xa_value *info = xa_array();
        xa_array_append(info, xa_string(err->code));
        for (size_t i = 0; i < err->n_params; i++) {
            xa_array_append(info, xa_string(err->params[i]));
        }
        bool cancelled = strcmp(err->code, "TASK_CANCELLED") == 0;
        e2 = set_task_field(t, ref, "status",
                            xa_string(cancelled ? "cancelled" : "failure"));
        if (!e2) {
            e2 = set_task_field(t, ref, "error_info", info);
        } else {
            xa_value_unref(info);
        }
    } else {
        struct xa_buf b = {0};
        if (ret) {
            xa_xmlrpc_write_value(&b, ret);
        }
        e2 = set_task_field(t, ref, "status", xa_string("success"));
        if (!e2) {
            e2 = set_task_field(t, ref, "result",
                                xa_string_take(xa_buf_steal(&b)));
        }
        xa_buf_free(&b);
    }
    if (!e2) {
        e2 = set_task_field(t, ref, "progress", xa_double(1.0));
    }
    if (!e2) {
        e2 = set_task_field(t, ref, "finished", xa_datetime(now));
    }
    if (!e2) {
        e2 = set_task_field(t, ref, "allowed_operations", xa_array());
    }
    if (e2) {
        xa_db_abort(t);
    } else {
        e2 = xa_db_commit(t);
    }
    if (e2) {
        xa_log_err("task", "cannot record the outcome of %s: %s", ref,
                   e2->code);
        xa_error_free(e2);
    }
    xa_error_free(err);
    xa_value_unref(ret);
}

static void
run_job(struct job *j)
{
    struct xa_value *ret = NULL;
    struct xa_error *err = xa_dispatch_invoke(j->call, j->args, &ret);
    if (j->call->deferred) {
        xa_log_err("task", "%s cannot be deferred in a task",
                   j->call->msg->wire);
    }
    complete_task(j->call->task_ref, err, ret);
    for (size_t i = 0; i < j->n_args; i++) {
        xa_value_unref(j->args[i]);
    }
    free(j->args);
    xa_call_free(j->call);
    free(j);
}

static void *
worker_main(void *arg)
{
    XA_UNUSED(arg);
    for (;;) {
        pthread_mutex_lock(&queue_lock);
        while (!queue_head && !stopping) {
            pthread_cond_wait(&queue_cond, &queue_lock);
        }
        if (!queue_head) {
            pthread_mutex_unlock(&queue_lock);
            return NULL;
        }
        struct job *j = queue_head;
        queue_head = j->next;
        if (!queue_head) {
            queue_tail = NULL;
        }
        pthread_mutex_unlock(&queue_lock);
        run_job(j);
    }
}

void
xa_task_start_workers(unsigned n)
{
    stopping = false;
    n_workers = n ? n : 8;
    workers = xa_calloc(n_workers, sizeof *workers);
    for (unsigned i = 0; i < n_workers; i++) {
        pthread_create(&workers[i], NULL, worker_main, NULL);
    }
}

void
xa_task_stop_workers(void)
{
    pthread_mutex_lock(&queue_lock);
    stopping = true;
    pthread_cond_broadcast(&queue_cond);
    pthread_mutex_unlock(&queue_lock);
    for (unsigned i = 0; i < n_workers; i++) {
        pthread_join(workers[i], NULL);
    }
    free(workers);
    workers = NULL;
    n_workers = 0;
}

struct xa_error *
xa_task_submit(struct xa_call *call, struct xa_value *const *args,
               struct xa_value **ret)
{
    char *label = xa_asprintf("Async.%s", call->msg->wire);
    char *ref = NULL;
    struct xa_error *err = xa_task_create(label, "", &ref);
    free(label);
    if (err) {
        return err;
    }
    struct job *j = xa_calloc(1, sizeof *j);
    struct xa_call *c = xa_call_new(call->method, call->remote_addr);
    c->msg = call->msg;
    c->session_ref = call->session_ref ? xa_strdup(call->session_ref) : NULL;
    c->roles = call->roles;
    c->is_superuser = call->is_superuser;
    c->is_pool_session = call->is_pool_session;
    c->task_ref = xa_strdup(ref);
    j->call = c;
    j->n_args = call->msg->n_params;
    j->args = xa_calloc(j->n_args + 1, sizeof *j->args);
    for (size_t i = 0; i < j->n_args; i++) {
        j->args[i] = xa_value_ref(args[i]);
    }
    pthread_mutex_lock(&queue_lock);
    if (queue_tail) {
        queue_tail->next = j;
    } else {
        queue_head = j;
    }
    queue_tail = j;
    pthread_cond_signal(&queue_cond);
    pthread_mutex_unlock(&queue_lock);
    *ret = xa_string_take(ref);
    return NULL;
}

void
xa_task_set_progress(struct xa_call *call, double progress)
{
    if (!call->task_ref) {
        return;
    }
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err =
        set_task_field(t, call->task_ref, "progress", xa_double(progress));
    if (err) {
        xa_db_abort(t);
    } else {
        err = xa_db_commit(t);
    }
    xa_error_free(err);
}

bool
xa_task_cancelling(struct xa_call *call)
{
    if (!call->task_ref) {
        return false;
    }
    char *s = task_status(call->task_ref);
    bool c = s && strcmp(s, "cancelling") == 0;
    free(s);
    return c;
}

struct gc_ctx {
    struct xa_txn *t;
    int64_t now;
    struct xa_value *doomed;
};

static int64_t
datetime_to_time(const char *s)
{
    struct tm tm = {0};
    if (!s || !strptime(s, "%Y%m%dT%H:%M:%SZ", &tm)) {
        return 0;
    }
    return (int64_t)timegm(&tm);
}

static bool
gc_visit(const char *ref, void *ctx)
{
    struct gc_ctx *g = ctx;
    const struct xa_value *st =
        xa_db_peek_field(g->t, &xa_cls_task, ref, field("status"));
    bool pending = st && (strcmp(st->u.str.s, "pending") == 0 ||
                          strcmp(st->u.str.s, "cancelling") == 0);
    const struct xa_value *when = xa_db_peek_field(
        g->t, &xa_cls_task, ref, field(pending ? "created" : "finished"));
    int64_t age = g->now - datetime_to_time(when ? when->u.str.s : NULL);
    if (age > (pending ? TASK_KEEP_PENDING : TASK_KEEP_FINISHED)) {
        xa_array_append(g->doomed, xa_string(ref));
    }
    return true;
}

void
xa_task_gc(void)
{
    if (xa_pool_is_member()) {
        return; /* the master's rows: the master removes them */
    }
    struct gc_ctx g = {xa_db_begin_read(), (int64_t)time(NULL), xa_array()};
    xa_db_foreach(g.t, &xa_cls_task, gc_visit, &g);
    xa_db_end(g.t);
    if (g.doomed->u.arr.n) {
        struct xa_txn *t = xa_db_begin_write();
        for (size_t i = 0; i < g.doomed->u.arr.n; i++) {
            const char *ref = g.doomed->u.arr.items[i]->u.str.s;
            if (xa_db_exists(t, &xa_cls_task, ref)) {
                xa_error_free(xa_db_destroy(t, &xa_cls_task, ref));
            }
        }
        xa_error_free(xa_db_commit(t));
    }
    xa_value_unref(g.doomed);
}

void
xa_task_forget_host(const char *host)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *all = xa_db_get_all(t, &xa_cls_task);
    struct xa_error *err = NULL;
    size_t n = 0;
    for (size_t i = 0; all && i < all->u.arr.n && !err; i++) {
        const char *ref = all->u.arr.items[i]->u.str.s;
        const struct xa_value *on =
            xa_db_peek_field(t, &xa_cls_task, ref, field("resident_on"));
        if (on && xa_value_str(on) && strcmp(xa_value_str(on), host) == 0) {
            err = xa_db_destroy(t, &xa_cls_task, ref);
            n++;
        }
    }
    xa_value_unref(all);
    err = err ? (xa_db_abort(t), err) : xa_db_commit(t);
    if (err) {
        xa_log_err("task", "cannot forget the tasks of %s: %s", host,
                   err->code);
        xa_error_free(err);
    } else if (n) {
        xa_log_info("task", "forgot %zu task(s) of %s", n, host);
    }
}

/* ---- task.* messages ---------------------------------------------- */

struct xa_error *
xa_impl_task_create(struct xa_call *call, const char *label,
                    const char *description, struct xa_value **ret)
{
    XA_UNUSED(call);
    char *ref = NULL;
    struct xa_error *err = xa_task_create(label, description, &ref);
    if (!err) {
        *ret = xa_string_take(ref);
    }
    return err;
}

struct xa_error *
xa_impl_task_destroy(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_db_destroy(t, &xa_cls_task, self);
    if (err) {
        xa_db_abort(t);
        return err;
    }
    return xa_db_commit(t);
}

struct xa_error *
xa_impl_task_cancel(struct xa_call *call, const char *task)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    const struct xa_value *st =
        xa_db_peek_field(t, &xa_cls_task, task, field("status"));
    if (!st || strcmp(st->u.str.s, "pending") != 0) {
        xa_db_abort(t);
        return xa_error_new("OPERATION_NOT_ALLOWED", 1,
                            "The task is not pending and cannot be "
                            "cancelled");
    }
    struct xa_error *err =
        set_task_field(t, task, "status", xa_string("cancelling"));
    if (err) {
        xa_db_abort(t);
        return err;
    }
    return xa_db_commit(t);
}

/* The setters of task.* take any value of the field's type. */
static struct xa_error *
set_one(const char *ref, const char *name, struct xa_value *v)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = set_task_field(t, ref, name, v);
    if (err) {
        xa_db_abort(t);
        return err;
    }
    return xa_db_commit(t);
}

struct xa_error *
xa_impl_task_set_status(struct xa_call *call, const char *self,
                        const char *value)
{
    XA_UNUSED(call);
    return set_one(self, "status", xa_string(value));
}

struct xa_error *
xa_impl_task_set_progress(struct xa_call *call, const char *self, double value)
{
    XA_UNUSED(call);
    return set_one(self, "progress", xa_double(value));
}

struct xa_error *
xa_impl_task_set_result(struct xa_call *call, const char *self,
                        const char *value)
{
    XA_UNUSED(call);
    return set_one(self, "result", xa_string(value));
}

struct xa_error *
xa_impl_task_set_error_info(struct xa_call *call, const char *self,
                            const struct xa_value *value)
{
    XA_UNUSED(call);
    return set_one(self, "error_info", xa_value_ref((struct xa_value *)value));
}
