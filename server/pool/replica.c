/* replica.c - the database stream from the master to its members, and
 * members' writes to the master.
 *
 * Stream: a member long-polls pool.replicate with the position of its
 * replica (the master's epoch and generation).  The master answers at
 * once when it has newer commits, else parks the call (no thread) until
 * a commit or the heartbeat interval; the answer holds every replicated
 * row (persisted ones and tasks) changed since that position, as a state
 * (a row's latest version), in generation order, or the whole database
 * when the position means nothing to this master (another epoch, too
 * old).  The member applies the answer in one local transaction, which
 * persists it, and only then records the new position
 * (<state-dir>/replica-state): a crash in between re-applies the same
 * states, which changes nothing.  Tasks live in memory only, so a
 * restarted member lacks those it had before (until a full copy); a
 * call forwarded with such a task runs without it.  Each round is also
 * the member's heartbeat.
 *
 * Writes: a member's transaction is undone locally and sent to the
 * master as pool.db_write (rows and the fields set), numbered per member
 * so that a retry after a lost answer is not applied twice; the member
 * then waits until its replica holds the master's generation of it, so
 * it reads its own writes. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "hmap.h"
#include "log.h"
#include "pool/pool-internal.h"
#include "self.h"

#define LOG "pool"

struct waiter {
    struct xa_call *call;
    uint64_t since;
    bool full;
    double deadline; /* monotonic */
    struct waiter *next;
};

static struct waiter *waiters;    /* under xa_pool_g.lock */
static struct xa_hmap last_write; /* host ref -> struct dedupe */

struct dedupe {
    uint64_t seq;
    char *answer;
};

/* A call whose answer waits until every live member holds its writes
 * (the pool's thread answers it). */
struct ack_waiter {
    struct xa_call *call;
    struct xa_error *err;
    struct xa_value *ret;
    uint64_t gen;
    double deadline; /* monotonic */
    struct ack_waiter *next;
};

static struct ack_waiter *ack_waiters; /* under xa_pool_g.lock */

/* Set by xa_pool_call_begin() on an HTTP thread: commits there note
 * their generation instead of waiting, and xa_pool_call_end() parks
 * the answer until the members hold the last one. */
static _Thread_local bool defer_acks;
static _Thread_local uint64_t pending_gen;

/* After every commit, before the API answers: wakes the stream and, on
 * a master, makes the answer wait until every live member holds the
 * commit, so that an acknowledged write survives the master
 * (emergency_transition_to_master finds it on any member).  The pool's
 * own thread, which answers the stream, never waits for it. */
static void
on_commit(uint64_t gen, void *ctx)
{
    XA_UNUSED(ctx);
    pthread_mutex_lock(&xa_pool_g.lock);
    pthread_cond_broadcast(&xa_pool_g.cond);
    bool wait = xa_pool_g.role != XA_POOL_MEMBER && xa_pool_g.started &&
                !pthread_equal(pthread_self(), xa_pool_g.thread);
    pthread_mutex_unlock(&xa_pool_g.lock);
    if (wait && defer_acks) {
        if (gen > pending_gen) {
            pending_gen = gen;
        }
    } else if (wait) {
        xa_pool_wait_live_members(gen);
    }
}

void
xa_pool_call_begin(void)
{
    defer_acks = true;
    pending_gen = 0;
}

bool
xa_pool_call_end(struct xa_call *call, struct xa_error **err,
                 struct xa_value **ret)
{
    uint64_t gen = pending_gen;
    defer_acks = false;
    pending_gen = 0;
    if (!gen) {
        return false;
    }
    if (!call) {
        /* the implementation deferred the call itself: wait here */
        xa_pool_wait_live_members(gen);
        return false;
    }
    pthread_mutex_lock(&xa_pool_g.lock);
    bool held = xa_pool_g.role == XA_POOL_MEMBER ||
                xa_pool_live_members_hold_locked(gen);
    pthread_mutex_unlock(&xa_pool_g.lock);
    if (held) {
        return false;
    }
    struct ack_waiter *w = xa_calloc(1, sizeof *w);
    w->call = call;
    w->err = *err;
    w->ret = *ret;
    *err = NULL;
    *ret = NULL;
    w->gen = gen;
    w->deadline = xa_monotonic() + xa_pool_g.cfg.live_timeout;
    xa_call_defer(call);
    pthread_mutex_lock(&xa_pool_g.lock);
    w->next = ack_waiters;
    ack_waiters = w;
    pthread_cond_broadcast(&xa_pool_g.cond);
    pthread_mutex_unlock(&xa_pool_g.lock);
    return true;
}

void
xa_pool_replica_init(void)
{
    xa_hmap_init(&last_write);
    char *path = xa_asprintf("%s/replica-state", xa_pool_g.state_dir);
    FILE *f = fopen(path, "r");
    free(path);
    char epoch[64] = "";
    unsigned long long gen = 0;
    if (f) {
        if (fscanf(f, "%63s %llu", epoch, &gen) != 2) {
            epoch[0] = '\0';
            gen = 0;
        }
        fclose(f);
    }
    xa_pool_g.replica_epoch = xa_strdup(epoch);
    xa_pool_g.replica_gen = gen;
    xa_db_set_replication_hook(on_commit, NULL);
}

void
xa_pool_replica_reset(void)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    free(xa_pool_g.replica_epoch);
    xa_pool_g.replica_epoch = xa_strdup("");
    xa_pool_g.replica_gen = 0;
    pthread_mutex_unlock(&xa_pool_g.lock);
    xa_pool_replica_save();
}

void
xa_pool_replica_save(void)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    char *text = xa_asprintf(
        "%s %llu\n", *xa_pool_g.replica_epoch ? xa_pool_g.replica_epoch : "-",
        (unsigned long long)xa_pool_g.replica_gen);
    pthread_mutex_unlock(&xa_pool_g.lock);
    xa_error_free(xa_pool_write_file("replica-state", text));
    free(text);
}

/* --- master: answering the stream -------------------------------------*/

struct answer {
    struct xa_buf b;
    bool first;
};

static void
add_row(void *ctx, const char *cls, const char *ref, const char *json)
{
    struct answer *a = ctx;
    xa_buf_puts(&a->b, a->first ? "[\"" : ",[\"");
    a->first = false;
    /* class names and refs carry no character JSON must escape */
    xa_buf_printf(&a->b, "%s\",\"%s\",", cls, ref);
    xa_buf_puts(&a->b, json ? json : "null");
    xa_buf_putc(&a->b, ']');
}

static char *
build_answer(uint64_t since, bool full)
{
    struct answer a = {.first = true};
    uint64_t gen = 0;
    xa_buf_puts(&a.b, "{\"rows\":[");
    if (full || !xa_db_export_since(since, add_row, &a, &gen)) {
        full = true;
        a.b.len = 0;
        a.first = true;
        xa_buf_puts(&a.b, "{\"rows\":[");
        xa_db_export_since(0, add_row, &a, &gen);
    }
    xa_buf_printf(&a.b, "],\"epoch\":\"%s\",\"gen\":%llu,\"full\":%s}",
                  xa_pool_g.epoch, (unsigned long long)gen,
                  full ? "true" : "false");
    return xa_buf_steal(&a.b);
}

struct xa_error *
xa_pool_serve_replicate(struct xa_call *call, const char *request,
                        struct xa_value **ret)
{
    if (xa_pool_role() == XA_POOL_MEMBER) {
        char *m = xa_pool_master_address();
        struct xa_error *e = xa_error_new("HOST_IS_SLAVE", 1, m ? m : "");
        free(m);
        return e;
    }
    struct json_object *j = json_tokener_parse(request);
    struct json_object *o;
    const char *host = j && json_object_object_get_ex(j, "host", &o)
                           ? json_object_get_string(o)
                           : "";
    const char *epoch = j && json_object_object_get_ex(j, "epoch", &o)
                            ? json_object_get_string(o)
                            : "";
    uint64_t since = j && json_object_object_get_ex(j, "since", &o)
                         ? (uint64_t)json_object_get_int64(o)
                         : 0;
    double timeout = j && json_object_object_get_ex(j, "timeout", &o)
                         ? json_object_get_double(o)
                         : 1;
    bool full = strcmp(epoch, xa_pool_g.epoch) != 0 || since == 0;
    xa_pool_heard_from(host, epoch, since);
    json_object_put(j);
    if (full || xa_db_generation() > since) {
        *ret = xa_string_take(build_answer(since, full));
        return NULL;
    }
    if (timeout > xa_pool_g.cfg.heartbeat) {
        timeout = xa_pool_g.cfg.heartbeat;
    }
    struct waiter *w = xa_calloc(1, sizeof *w);
    w->call = call;
    w->since = since;
    w->deadline = xa_monotonic() + timeout;
    xa_call_defer(call);
    pthread_mutex_lock(&xa_pool_g.lock);
    w->next = waiters;
    waiters = w;
    pthread_cond_broadcast(&xa_pool_g.cond);
    pthread_mutex_unlock(&xa_pool_g.lock);
    return NULL;
}

/* Pool lock held: whether some parked call can be answered now. */
static bool
any_ready_locked(uint64_t gen)
{
    for (struct waiter *w = waiters; w; w = w->next) {
        if (gen > w->since) {
            return true;
        }
    }
    for (struct ack_waiter *w = ack_waiters; w; w = w->next) {
        if (xa_pool_live_members_hold_locked(w->gen)) {
            return true;
        }
    }
    return false;
}

void
xa_pool_answer_due(void)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    uint64_t gen = xa_db_generation();
    double now = xa_monotonic();
    bool stopping = xa_pool_g.stop || xa_pool_g.role == XA_POOL_MEMBER;
    struct waiter *due = NULL, **pp = &waiters;
    while (*pp) {
        struct waiter *w = *pp;
        if (stopping || gen > w->since || now >= w->deadline) {
            *pp = w->next;
            w->next = due;
            due = w;
        } else {
            pp = &w->next;
        }
    }
    /* a member missing past the live timeout no longer holds answers
     * back (it is about to be declared not live) */
    struct ack_waiter *acked = NULL, **ap = &ack_waiters;
    while (*ap) {
        struct ack_waiter *w = *ap;
        if (stopping || now >= w->deadline ||
            xa_pool_live_members_hold_locked(w->gen)) {
            *ap = w->next;
            w->next = acked;
            acked = w;
        } else {
            ap = &w->next;
        }
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
    while (due) {
        struct waiter *w = due;
        due = w->next;
        xa_call_finish(w->call, NULL,
                       xa_string_take(build_answer(w->since, false)));
        free(w);
    }
    while (acked) {
        struct ack_waiter *w = acked;
        acked = w->next;
        xa_call_finish(w->call, w->err, w->ret);
        free(w);
    }
}

void
xa_pool_pump(void)
{
    struct timespec ts;
    xa_pool_abstime(&ts, 0.1);
    pthread_mutex_lock(&xa_pool_g.lock);
    if (!any_ready_locked(xa_db_generation()) && !xa_pool_g.stop) {
        pthread_cond_timedwait(&xa_pool_g.cond, &xa_pool_g.lock, &ts);
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
    xa_pool_answer_due();
}

/* --- member: following the stream -------------------------------------*/

static bool
is_replicated(const struct xa_class_desc *c)
{
    return c->in_db && c->replicate;
}

static struct xa_error *
apply_answer(struct json_object *j, bool full)
{
    struct json_object *rows = NULL;
    if (!json_object_object_get_ex(j, "rows", &rows) ||
        !json_object_is_type(rows, json_type_array)) {
        return xa_error_internal("replication: malformed answer");
    }
    size_t n = json_object_array_length(rows);
    xa_db_thread_commits_locally(true);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (full) {
        /* whatever the copy lacks goes, except this host's own rows
         * (sessions) */
        struct xa_hmap keep;
        xa_hmap_init(&keep);
        for (size_t i = 0; i < n; i++) {
            struct json_object *r = json_object_array_get_idx(rows, i);
            xa_hmap_put(&keep,
                        json_object_get_string(json_object_array_get_idx(r, 1)),
                        (void *)1);
        }
        for (size_t c = 0; c < xa_schema_n_classes && !err; c++) {
            const struct xa_class_desc *cls = xa_schema_classes[c];
            if (!is_replicated(cls)) {
                continue;
            }
            struct xa_value *all = xa_db_get_all(t, cls);
            for (size_t i = 0; all && i < all->u.arr.n && !err; i++) {
                const char *ref = all->u.arr.items[i]->u.str.s;
                if (!xa_hmap_get(&keep, ref) && xa_db_exists(t, cls, ref)) {
                    err = xa_db_destroy(t, cls, ref);
                }
            }
            xa_value_unref(all);
        }
        xa_hmap_clear(&keep, NULL);
    }
    for (size_t i = 0; i < n && !err; i++) {
        struct json_object *r = json_object_array_get_idx(rows, i);
        struct json_object *row = json_object_array_get_idx(r, 2);
        err = xa_db_apply_row(
            t, json_object_get_string(json_object_array_get_idx(r, 0)),
            json_object_get_string(json_object_array_get_idx(r, 1)),
            row ? json_object_to_json_string_ext(row, JSON_C_TO_STRING_PLAIN)
                : NULL,
            NULL, 0);
    }
    if (err) {
        xa_db_abort(t);
    } else {
        err = xa_db_commit(t);
    }
    xa_db_thread_commits_locally(false);
    return err;
}

bool
xa_pool_replicate_once(void)
{
    char *master = xa_pool_master_address();
    if (!master) {
        return false;
    }
    pthread_mutex_lock(&xa_pool_g.lock);
    char *req = xa_asprintf(
        "{\"host\":\"%s\",\"epoch\":\"%s\",\"since\":%llu,\"timeout\":%g}",
        xa_self_host(), xa_pool_g.replica_epoch,
        (unsigned long long)xa_pool_g.replica_gen, xa_pool_g.cfg.heartbeat);
    pthread_mutex_unlock(&xa_pool_g.lock);
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string_take(req));
    struct xa_value *v = NULL;
    struct xa_error *err =
        xa_pool_link_call(master, "stream", "pool.replicate", p, &v, true,
                          (long)xa_pool_g.cfg.heartbeat + 10);
    bool ok = false;
    if (err) {
        xa_log_warn(LOG, "replication from %s: %s %s", master, err->code,
                    err->n_params > 1 ? err->params[1] : "");
        xa_error_free(err);
        free(master);
        return false;
    }
    struct json_object *j =
        xa_value_str(v) ? json_tokener_parse(xa_value_str(v)) : NULL;
    struct json_object *o;
    if (j && json_object_object_get_ex(j, "epoch", &o)) {
        char *epoch = xa_strdup(json_object_get_string(o));
        uint64_t gen = json_object_object_get_ex(j, "gen", &o)
                           ? (uint64_t)json_object_get_int64(o)
                           : 0;
        bool full = json_object_object_get_ex(j, "full", &o) &&
                    json_object_get_boolean(o);
        struct xa_error *e = apply_answer(j, full);
        if (e) {
            xa_log_err(LOG, "applying replicated rows: %s %s", e->code,
                       e->n_params ? e->params[0] : "");
            xa_error_free(e);
            free(epoch);
        } else {
            pthread_mutex_lock(&xa_pool_g.lock);
            free(xa_pool_g.replica_epoch);
            xa_pool_g.replica_epoch = epoch;
            xa_pool_g.replica_gen = gen;
            pthread_cond_broadcast(&xa_pool_g.cond);
            pthread_mutex_unlock(&xa_pool_g.lock);
            xa_pool_replica_save();
            ok = true;
        }
    }
    json_object_put(j);
    xa_value_unref(v);
    free(master);
    return ok;
}

/* --- member: writes go to the master -----------------------------------*/

static bool
is_transport_code(const char *code)
{
    return strcmp(code, "CLIENT_TRANSPORT_ERROR") == 0 ||
           strcmp(code, "CLIENT_HTTP_ERROR") == 0 ||
           strcmp(code, "CLIENT_CERTIFICATE_REJECTED") == 0;
}

static void
json_str(struct xa_buf *b, const char *s)
{
    struct json_object *o = json_object_new_string(s);
    xa_buf_puts(b, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
}

static pthread_mutex_t write_order = PTHREAD_MUTEX_INITIALIZER;

struct xa_error *
xa_pool_remote_commit(void *ctx, const struct xa_db_change *ch, size_t n)
{
    XA_UNUSED(ctx);
    char *master = xa_pool_master_address();
    if (!master) {
        return xa_error_internal("pool: no master to write to");
    }
    /* One write in flight at a time, sent in the order of its number:
     * the master takes a number at or below the last it applied for a
     * retry, so numbers must reach it in order. */
    pthread_mutex_lock(&write_order);
    pthread_mutex_lock(&xa_pool_g.lock);
    uint64_t seq = ++xa_pool_g.seq;
    pthread_mutex_unlock(&xa_pool_g.lock);
    struct xa_buf b = {0};
    xa_buf_printf(&b, "{\"host\":\"%s\",\"seq\":%llu,\"ops\":[", xa_self_host(),
                  (unsigned long long)seq);
    for (size_t i = 0; i < n; i++) {
        xa_buf_printf(&b, "%s{\"c\":\"%s\",\"r\":\"%s\",\"j\":", i ? "," : "",
                      ch[i].cls, ch[i].ref);
        xa_buf_puts(&b, ch[i].json ? ch[i].json : "null");
        xa_buf_puts(&b, ",\"f\":");
        if (ch[i].created || !ch[i].json) {
            xa_buf_puts(&b, "null");
        } else {
            xa_buf_putc(&b, '[');
            for (size_t k = 0; k < ch[i].n_fields; k++) {
                if (k) {
                    xa_buf_putc(&b, ',');
                }
                json_str(&b, ch[i].fields[k]);
            }
            xa_buf_putc(&b, ']');
        }
        xa_buf_putc(&b, '}');
    }
    xa_buf_puts(&b, "]}");
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string_take(xa_buf_steal(&b)));
    struct xa_value *v = NULL;
    struct xa_error *err =
        xa_pool_link_call(master, "calls", "pool.db_write", p, &v, true, 30);
    pthread_mutex_unlock(&write_order);
    if (err && is_transport_code(err->code)) {
        xa_log_warn(LOG, "write to the master %s failed: %s", master,
                    err->n_params > 1 ? err->params[1] : err->code);
        xa_error_free(err);
        err = xa_error_new("CANNOT_CONTACT_HOST", 1, master);
    }
    free(master);
    if (err) {
        xa_value_unref(v);
        return err;
    }
    char epoch[64] = "";
    unsigned long long gen = 0;
    if (!xa_value_str(v) ||
        sscanf(xa_value_str(v), "%63s %llu", epoch, &gen) != 2) {
        xa_value_unref(v);
        return xa_error_internal("pool.db_write: malformed answer");
    }
    xa_value_unref(v);
    /* read-your-writes: wait for the stream to bring it back */
    struct timespec ts;
    xa_pool_abstime(&ts, 10);
    pthread_mutex_lock(&xa_pool_g.lock);
    while (!xa_pool_g.stop && xa_pool_g.role == XA_POOL_MEMBER &&
           !(strcmp(xa_pool_g.replica_epoch, epoch) == 0 &&
             xa_pool_g.replica_gen >= gen)) {
        if (pthread_cond_timedwait(&xa_pool_g.cond, &xa_pool_g.lock, &ts) !=
            0) {
            xa_log_warn(LOG, "replica still behind generation %llu", gen);
            break;
        }
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
    return NULL;
}

/* --- the hand-over fence ---------------------------------------------------*/

/* Applies changes a fenced commit undid, in a local transaction. */
static struct xa_error *
apply_changes_locally(const struct xa_db_change *ch, size_t n)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    for (size_t i = 0; i < n && !err; i++) {
        bool whole = ch[i].created || !ch[i].json;
        err = xa_db_apply_row(t, ch[i].cls, ch[i].ref, ch[i].json,
                              whole ? NULL : ch[i].fields,
                              whole ? 0 : ch[i].n_fields);
    }
    return err ? (xa_db_abort(t), err) : xa_db_commit(t);
}

/* In place of a local commit while a hand-over is under way: the write
 * waits for its outcome, then goes to the new master (as a member's
 * write), or is committed here after all when the hand-over failed. */
static struct xa_error *
fenced_commit(void *ctx, const struct xa_db_change *ch, size_t n)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    while (xa_pool_g.role == XA_POOL_HANDOVER && !xa_pool_g.stop) {
        pthread_cond_wait(&xa_pool_g.cond, &xa_pool_g.lock);
    }
    enum xa_pool_role role = xa_pool_g.role;
    pthread_mutex_unlock(&xa_pool_g.lock);
    if (role == XA_POOL_MEMBER) {
        return xa_pool_remote_commit(ctx, ch, n);
    }
    return apply_changes_locally(ch, n);
}

uint64_t
xa_pool_fence_writes(void)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    xa_pool_g.role = XA_POOL_HANDOVER;
    pthread_cond_broadcast(&xa_pool_g.cond);
    pthread_mutex_unlock(&xa_pool_g.lock);
    xa_db_set_remote_commit(fenced_commit, NULL);
    /* A commit that looked before the fence was up holds the write
     * lock until it is done: once we have had the lock, every write
     * from now on meets the fence. */
    xa_db_abort(xa_db_begin_write());
    return xa_db_generation();
}

void
xa_pool_unfence_writes(void)
{
    xa_db_set_remote_commit(NULL, NULL);
    pthread_mutex_lock(&xa_pool_g.lock);
    xa_pool_g.role = XA_POOL_MASTER;
    pthread_cond_broadcast(&xa_pool_g.cond);
    pthread_mutex_unlock(&xa_pool_g.lock);
}

/* --- master: members' writes ---------------------------------------------*/

/* A member's write that arrives during a hand-over waits for its
 * outcome (bounded), as this host's own writes do. */
static enum xa_pool_role
role_after_handover(void)
{
    struct timespec ts;
    xa_pool_abstime(&ts, 15);
    pthread_mutex_lock(&xa_pool_g.lock);
    while (xa_pool_g.role == XA_POOL_HANDOVER && !xa_pool_g.stop &&
           pthread_cond_timedwait(&xa_pool_g.cond, &xa_pool_g.lock, &ts) == 0) {
    }
    enum xa_pool_role r = xa_pool_g.role;
    pthread_mutex_unlock(&xa_pool_g.lock);
    return r;
}

struct xa_error *
xa_pool_serve_db_write(const char *payload, struct xa_value **ret)
{
    if (role_after_handover() != XA_POOL_MASTER) {
        char *m = xa_pool_master_address();
        struct xa_error *e = xa_error_new("HOST_IS_SLAVE", 1, m ? m : "");
        free(m);
        return e;
    }
    struct json_object *j = json_tokener_parse(payload);
    struct json_object *o, *ops;
    if (!j || !json_object_object_get_ex(j, "ops", &ops) ||
        !json_object_is_type(ops, json_type_array)) {
        json_object_put(j);
        return xa_error_internal("pool.db_write: malformed payload");
    }
    const char *host = json_object_object_get_ex(j, "host", &o)
                           ? json_object_get_string(o)
                           : "";
    uint64_t seq = json_object_object_get_ex(j, "seq", &o)
                       ? (uint64_t)json_object_get_int64(o)
                       : 0;
    pthread_mutex_lock(&xa_pool_g.lock);
    struct dedupe *d = xa_hmap_get(&last_write, host);
    if (d && seq <= d->seq) {
        /* a retry of a write already applied */
        *ret = xa_string(d->answer);
        pthread_mutex_unlock(&xa_pool_g.lock);
        json_object_put(j);
        return NULL;
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    size_t n = json_object_array_length(ops);
    for (size_t i = 0; i < n && !err; i++) {
        struct json_object *op = json_object_array_get_idx(ops, i);
        struct json_object *c, *r, *row = NULL, *f = NULL;
        json_object_object_get_ex(op, "c", &c);
        json_object_object_get_ex(op, "r", &r);
        json_object_object_get_ex(op, "j", &row);
        json_object_object_get_ex(op, "f", &f);
        size_t nf = f ? json_object_array_length(f) : 0;
        const char **names = xa_calloc(nf + 1, sizeof *names);
        for (size_t k = 0; k < nf; k++) {
            names[k] = json_object_get_string(json_object_array_get_idx(f, k));
        }
        err = xa_db_apply_row(
            t, json_object_get_string(c), json_object_get_string(r),
            row ? json_object_to_json_string_ext(row, JSON_C_TO_STRING_PLAIN)
                : NULL,
            f ? names : NULL, nf);
        free(names);
    }
    err = err ? (xa_db_abort(t), err) : xa_db_commit(t);
    if (!err) {
        char *answer = xa_asprintf("%s %llu", xa_pool_g.epoch,
                                   (unsigned long long)xa_db_generation());
        pthread_mutex_lock(&xa_pool_g.lock);
        d = xa_hmap_get(&last_write, host);
        if (!d) {
            d = xa_calloc(1, sizeof *d);
            xa_hmap_put(&last_write, host, d);
        }
        free(d->answer);
        d->answer = xa_strdup(answer);
        d->seq = seq;
        pthread_mutex_unlock(&xa_pool_g.lock);
        *ret = xa_string_take(answer);
    }
    json_object_put(j);
    return err;
}
