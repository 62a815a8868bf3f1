/* db.c - opening, transactions, commit and group commit, change tracking.
 *
 * Locking: one pthread rwlock, writer-preferring so a stream of readers
 * (get_all_records, event.from) cannot starve writers.  Reads share it; a
 * write transaction holds it exclusively.  There is only ever one write
 * transaction, so its undo log and touched list live in the global state
 * and keep their capacity from one transaction to the next.
 *
 * Group commit: xa_db_commit() stamps the touched rows with the new
 * generation and serialises them to JSON while it still holds the write
 * lock, queues that batch for the single persister thread, releases the
 * lock and only then waits for the batch to be durable.  The persister
 * takes everything queued at once and writes it in one driver transaction,
 * so committers that queue while a write is in flight share the next
 * fsync.  Batches are queued under the write lock, hence in generation
 * order, and the persister keeps that order. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db-internal.h"
#include "log.h"
#include "persist-pg.h"
#include "schema.h"
#include "value.h"

struct xa_db xa_db_g;

/* How long a failing batch is retried while its committers wait before
 * the store is declared down, and the pauses between tries. */
#define XA_DB_RETRY_WINDOW 10.0
#define XA_DB_BACKOFF_MIN  0.05
#define XA_DB_BACKOFF_MAX  2.0

/* Read transactions carry no state: every reader shares this one. */
static struct xa_txn read_txn = {.write = false};
/* A read begun by the thread that holds the write transaction: it must
 * not touch the lock (glibc would fail the rdlock with EDEADLK and the
 * matching unlock would drop the write lock). */
static struct xa_txn nested_read_txn = {.write = false};
static __thread bool in_write;
/* The replication applier's commits stay local on a member. */
static __thread bool commits_locally;

/* --- recency list and deletion log -------------------------------------*/

static void
recency_remove(struct xa_db_row *r)
{
    if (!r->in_recency) {
        return;
    }
    if (r->rprev) {
        r->rprev->rnext = r->rnext;
    } else {
        xa_db_g.rfirst = r->rnext;
    }
    if (r->rnext) {
        r->rnext->rprev = r->rprev;
    } else {
        xa_db_g.rlast = r->rprev;
    }
    r->rprev = r->rnext = NULL;
    r->in_recency = false;
}

static void
recency_append(struct xa_db_row *r)
{
    r->rprev = xa_db_g.rlast;
    r->rnext = NULL;
    if (xa_db_g.rlast) {
        xa_db_g.rlast->rnext = r;
    } else {
        xa_db_g.rfirst = r;
    }
    xa_db_g.rlast = r;
    r->in_recency = true;
}

static void
dellog_add(uint64_t gen, const struct xa_db_row *r)
{
    struct xa_db *d = &xa_db_g;
    if (d->del_n == d->del_cap) {
        if (d->del_cap < XA_DB_DELLOG_MAX) {
            /* still growing, so nothing was dropped and head is 0 */
            size_t cap = d->del_cap ? d->del_cap * 2 : 1024;
            if (cap > XA_DB_DELLOG_MAX) {
                cap = XA_DB_DELLOG_MAX;
            }
            d->dels = xa_realloc(d->dels, cap * sizeof *d->dels);
            d->del_cap = cap;
        } else {
            /* full: forget the oldest; 'since' before it cannot be served */
            struct xa_db_deletion *old = &d->dels[d->del_head];
            if (old->gen > d->del_floor) {
                d->del_floor = old->gen;
            }
            free(old->ref);
            d->del_head = (d->del_head + 1) % d->del_cap;
            d->del_n--;
        }
    }
    struct xa_db_deletion *e = &d->dels[(d->del_head + d->del_n) % d->del_cap];
    e->gen = gen;
    e->created = r->created;
    e->cls = r->tbl->cls;
    e->ref = xa_strdup(r->refv->u.str.s);
    d->del_n++;
}

static void
dellog_free(void)
{
    struct xa_db *d = &xa_db_g;
    for (size_t i = 0; i < d->del_n; i++) {
        free(d->dels[(d->del_head + i) % d->del_cap].ref);
    }
    free(d->dels);
    d->dels = NULL;
    d->del_head = d->del_n = d->del_cap = 0;
}

/* --- the persister thread ------------------------------------------------*/

static void
batch_free(struct xa_db_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free((char *)b->ops[i].ref);
        free((char *)b->ops[i].json);
    }
    free(b->ops);
    xa_error_free(b->err);
    free(b);
}

static struct xa_persist_op *
batch_add(struct xa_db_batch *b, const struct xa_db_row *r)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 8;
        b->ops = xa_realloc(b->ops, b->cap * sizeof *b->ops);
    }
    struct xa_persist_op *op = &b->ops[b->n++];
    op->cls = r->tbl->cls->name;
    op->ref = xa_strdup(r->refv->u.str.s);
    op->json = NULL;
    op->created = r->created;
    op->modified = r->modified;
    return op;
}

/* Writes every batch of 'list' as one driver transaction, at the
 * generation of the last. */
static struct xa_error *
write_list(struct xa_db *d, struct xa_db_batch *list)
{
    size_t n = 0;
    uint64_t gen = 0;
    for (struct xa_db_batch *b = list; b; b = b->next) {
        n += b->n;
        gen = b->gen;
    }
    struct xa_persist_op *ops = xa_malloc((n ? n : 1) * sizeof *ops);
    size_t i = 0;
    for (struct xa_db_batch *b = list; b; b = b->next) {
        memcpy(ops + i, b->ops, b->n * sizeof *ops);
        i += b->n;
    }
    struct xa_error *e = d->drv->write_batch(d->drv_state, ops, n, gen);
    free(ops);
    if (!e) {
        xa_log_debug("db", "persisted %zu rows up to generation %llu", n,
                     (unsigned long long)gen);
    }
    return e;
}

/* Waits 'secs' unless asked to stop; qlock held. */
static void
persister_pause(struct xa_db *d, double secs)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double end = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + secs;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    while (!d->stop &&
           pthread_cond_timedwait(&d->qcond, &d->qlock, &ts) != ETIMEDOUT) {
    }
}

/* Moves a failed batch's rows into one the persister keeps, so its
 * committer can be told (and free its batch) while the rows still get
 * written once the store is back. */
static struct xa_db_batch *
batch_hold(struct xa_db_batch *b)
{
    if (b->detached) {
        b->next = NULL;
        return b;
    }
    struct xa_db_batch *h = xa_calloc(1, sizeof *h);
    h->ops = b->ops;
    h->n = b->n;
    h->cap = b->cap;
    h->gen = b->gen;
    h->detached = true;
    b->ops = NULL;
    b->n = b->cap = 0;
    return h;
}

/* The store can go away (a PostgreSQL server restarts, a network
 * partition): a batch that fails is retried, with backoff, for up to
 * XA_DB_RETRY_WINDOW while its committers wait, so a short outage only
 * delays them.  After that they get "database write failed", the store
 * is marked down (commit() then refuses new persisting writes at once)
 * and the rows are kept and retried until the store takes them: the
 * in-memory state already has them, and the store must converge to it
 * rather than lose them silently.  Nothing unwritten was acknowledged;
 * what was refused may still become durable, as with any write whose
 * answer was lost. */
static void *
persister_main(void *arg)
{
    struct xa_db *d = arg;
    struct xa_db_batch *held = NULL, *held_last = NULL;
    double backoff = XA_DB_BACKOFF_MIN;
    pthread_mutex_lock(&d->qlock);
    for (;;) {
        if (held && !d->qfirst && !d->stop) {
            persister_pause(d, backoff);
            backoff = backoff * 2 < XA_DB_BACKOFF_MAX ? backoff * 2
                                                      : XA_DB_BACKOFF_MAX;
        }
        while (!d->qfirst && !held && !d->stop) {
            pthread_cond_wait(&d->qcond, &d->qlock);
        }
        if (!d->qfirst && !held) {
            break; /* stopping, and everything queued is written */
        }
        /* held rows are older than anything queued: they go first */
        struct xa_db_batch *list = d->qfirst;
        if (held) {
            held_last->next = d->qfirst;
            list = held;
        }
        held = held_last = NULL;
        d->qfirst = d->qlast = NULL;
        bool down = __atomic_load_n(&d->store_down, __ATOMIC_RELAXED);
        bool stopping = d->stop;
        pthread_mutex_unlock(&d->qlock);

        struct xa_error *e = write_list(d, list);
        if (e && !down && !stopping &&
            strcmp(e->code, XA_PERSIST_REFUSED) != 0) {
            xa_log_warn("db", "writing to the database failed, retrying: %s",
                        e->n_params ? e->params[0] : e->code);
            double deadline = xa_monotonic() + XA_DB_RETRY_WINDOW;
            double delay = XA_DB_BACKOFF_MIN;
            while (e && !stopping && xa_monotonic() + delay < deadline) {
                pthread_mutex_lock(&d->qlock);
                persister_pause(d, delay);
                stopping = d->stop;
                pthread_mutex_unlock(&d->qlock);
                xa_error_free(e);
                e = write_list(d, list);
                delay = delay * 2 < XA_DB_BACKOFF_MAX ? delay * 2
                                                      : XA_DB_BACKOFF_MAX;
            }
        }
        const char *why = e ? (e->n_params ? e->params[0] : e->code) : NULL;

        pthread_mutex_lock(&d->qlock);
        if (!e && down) {
            xa_log_info("db", "the database is back: writes resume");
            __atomic_store_n(&d->store_down, false, __ATOMIC_RELEASE);
        }
        if (e) {
            if (!down) {
                xa_log_err("db",
                           "the database is unavailable, refusing "
                           "writes until it is back: %s",
                           why);
            }
            snprintf(d->store_err, sizeof d->store_err, "%s", why);
            __atomic_store_n(&d->store_down, true, __ATOMIC_RELEASE);
        } else {
            backoff = XA_DB_BACKOFF_MIN;
        }
        for (struct xa_db_batch *b = list, *next; b; b = next) {
            next = b->next;
            if (e) {
                struct xa_db_batch *h = batch_hold(b);
                if (held_last) {
                    held_last->next = h;
                } else {
                    held = h;
                }
                held_last = h;
            }
            if (b->detached) {
                if (!e) {
                    batch_free(b);
                }
                continue;
            }
            if (e) {
                b->err = xa_error_internal("database write failed: %s", why);
            }
            /* the committer frees 'b' as soon as it sees 'done' */
            b->done = true;
        }
        if (e && d->stop) {
            size_t n = 0;
            for (struct xa_db_batch *h = held, *next; h; h = next) {
                next = h->next;
                n += h->n;
                batch_free(h);
            }
            held = held_last = NULL;
            xa_log_err("db",
                       "stopping with %zu unacknowledged rows the "
                       "database did not take",
                       n);
        }
        pthread_cond_broadcast(&d->donecond);
        xa_error_free(e);
    }
    pthread_mutex_unlock(&d->qlock);
    return NULL;
}

/* --- open and close ------------------------------------------------------*/

static struct xa_error *
load_row(void *ctx, const char *cls_name, const char *ref, const char *json,
         uint64_t created, uint64_t modified)
{
    XA_UNUSED(ctx);
    const struct xa_class_desc *cls = xa_schema_class(cls_name);
    struct xa_db_table *tbl = xa_db_table_of(cls);
    if (!tbl || !cls->persist) {
        xa_log_warn("db", "ignoring stored row %s of class %s", ref, cls_name);
        return NULL;
    }
    struct xa_value **vals = xa_malloc((cls->n_fields + 1) * sizeof *vals);
    struct xa_error *e =
        xa_db_json_decode_row(cls, &tbl->field_index, json, vals);
    if (!e) {
        e = xa_db_row_insert_loaded(tbl, ref, vals, created, modified);
    }
    free(vals);
    return e;
}

static int
cmp_modified(const void *a, const void *b)
{
    const struct xa_db_row *ra = *(struct xa_db_row *const *)a;
    const struct xa_db_row *rb = *(struct xa_db_row *const *)b;
    if (ra->modified != rb->modified) {
        return ra->modified < rb->modified ? -1 : 1;
    }
    return 0;
}

/* Threads every loaded row onto the recency list, oldest change first;
 * returns the newest generation seen. */
static uint64_t
build_recency(void)
{
    size_t n = 0;
    for (size_t c = 0; c < xa_schema_n_classes; c++) {
        n += xa_db_g.tables[c].cls ? xa_db_g.tables[c].n : 0;
    }
    struct xa_db_row **all = xa_malloc((n ? n : 1) * sizeof *all);
    size_t i = 0;
    for (size_t c = 0; c < xa_schema_n_classes; c++) {
        if (!xa_db_g.tables[c].cls) {
            continue;
        }
        for (struct xa_db_row *r = xa_db_g.tables[c].first; r; r = r->next) {
            all[i++] = r;
        }
    }
    qsort(all, n, sizeof *all, cmp_modified);
    for (i = 0; i < n; i++) {
        recency_append(all[i]);
    }
    uint64_t newest = n ? all[n - 1]->modified : 0;
    free(all);
    return newest;
}

static void
state_free(void)
{
    struct xa_db *d = &xa_db_g;
    if (d->drv && d->drv_state) {
        d->drv->close(d->drv_state);
    }
    xa_db_tables_free();
    dellog_free();
    xa_value_unref(d->empty_array);
    free(d->wtxn.undo);
    free(d->wtxn.touched);
    pthread_rwlock_destroy(&d->lock);
    pthread_mutex_destroy(&d->qlock);
    pthread_cond_destroy(&d->qcond);
    pthread_cond_destroy(&d->donecond);
    memset(d, 0, sizeof *d);
}

struct xa_error *
xa_db_open(const char *uri)
{
    struct xa_db *d = &xa_db_g;
    if (d->open) {
        return xa_error_internal("database: already open");
    }
    const struct xa_persist_driver *drv = NULL;
    if (!uri || strcmp(uri, ":memory:") != 0) {
        if (uri && xa_str_has_prefix(uri, xa_persist_sqlite.scheme)) {
            drv = &xa_persist_sqlite;
        } else if (uri && xa_str_has_prefix(uri, xa_persist_pg.scheme)) {
            drv = &xa_persist_pg;
        } else {
            return xa_error_internal("database: unsupported uri %s",
                                     uri ? uri : "(null)");
        }
    }
    memset(d, 0, sizeof *d);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&d->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&d->qlock, NULL);
    /* the persister's retry pauses are timed waits on qcond */
    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->qcond, &cattr);
    pthread_condattr_destroy(&cattr);
    pthread_cond_init(&d->donecond, NULL);
    d->wtxn.write = true;
    d->empty_array = xa_array();
    xa_db_tables_init();

    if (drv) {
        d->drv = drv;
        struct xa_error *e = drv->open(uri, &d->drv_state);
        if (!e) {
            d->quiet = true; /* loading rows is not a change */
            e = drv->load(d->drv_state, &d->generation, load_row, NULL);
            d->quiet = false;
        }
        if (e) {
            state_free();
            return e;
        }
    }
    uint64_t newest = build_recency();
    if (newest > d->generation) {
        d->generation = newest;
    }
    /* deletions before this run are not in the log */
    d->del_floor = d->generation;
    if (drv && pthread_create(&d->persister, NULL, persister_main, d) != 0) {
        state_free();
        return xa_error_internal("database: cannot start the persister");
    }
    d->open = true;
    xa_log_info("db", "opened %s at generation %llu",
                drv ? uri : ":memory:", (unsigned long long)d->generation);
    return NULL;
}

void
xa_db_close(void)
{
    struct xa_db *d = &xa_db_g;
    if (!d->open) {
        return;
    }
    if (d->drv) {
        pthread_mutex_lock(&d->qlock);
        d->stop = true;
        pthread_cond_signal(&d->qcond);
        pthread_mutex_unlock(&d->qlock);
        pthread_join(d->persister, NULL);
    }
    state_free();
}

/* --- transactions --------------------------------------------------------*/

struct xa_txn *
xa_db_begin_read(void)
{
    if (in_write) {
        return &nested_read_txn;
    }
    pthread_rwlock_rdlock(&xa_db_g.lock);
    return &read_txn;
}

struct xa_txn *
xa_db_begin_write(void)
{
    if (in_write) {
        /* would deadlock: a programming error, caught loudly */
        xa_log_err("db", "nested write transaction");
        abort();
    }
    pthread_rwlock_wrlock(&xa_db_g.lock);
    in_write = true;
    return &xa_db_g.wtxn;
}

static void
write_unlock(void)
{
    in_write = false;
    pthread_rwlock_unlock(&xa_db_g.lock);
}

void
xa_db_end(struct xa_txn *t)
{
    if (t == &nested_read_txn) {
        return;
    }
    if (t && t->write) {
        xa_db_abort(t); /* a write transaction ended without commit */
        return;
    }
    pthread_rwlock_unlock(&xa_db_g.lock);
}

void
xa_db_abort(struct xa_txn *t)
{
    if (!t || !t->write) {
        xa_db_end(t);
        return;
    }
    /* clear the marks first: undoing a create frees its row */
    for (size_t i = 0; i < t->n_touched; i++) {
        t->touched[i]->touched = false;
    }
    t->n_touched = 0;
    xa_db_undo_all(t);
    write_unlock();
}

/* True when committing 't' gives the persister something to write. */
static bool
persists_any(const struct xa_txn *t)
{
    for (size_t i = 0; i < t->n_touched; i++) {
        const struct xa_db_row *r = t->touched[i];
        if (r->tbl->cls->persist && !(r->dead && r->is_new)) {
            return true;
        }
    }
    return false;
}

/* --- remote commit (pool members) ----------------------------------------*/

static bool
touches_replicated(const struct xa_txn *t)
{
    for (size_t i = 0; i < t->n_touched; i++) {
        const struct xa_db_row *r = t->touched[i];
        if (r->tbl->cls->replicate && !(r->dead && r->is_new)) {
            return true;
        }
    }
    return false;
}

static void
changes_free(struct xa_db_change *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)c[i].ref);
        free((char *)c[i].json);
        free(c[i].fields); /* the names are the schema's */
    }
    free(c);
}

/* A member's write: describe it, undo it, hand it to the remote commit.
 * The rows come back through replication once the master has them. */
static struct xa_error *
commit_remote(struct xa_txn *t)
{
    struct xa_db *d = &xa_db_g;
    struct xa_db_change *ch = xa_calloc(t->n_touched + 1, sizeof *ch);
    size_t n = 0;
    struct xa_buf json = {0};
    for (size_t i = 0; i < t->n_touched; i++) {
        struct xa_db_row *r = t->touched[i];
        if (r->dead && r->is_new) {
            continue;
        }
        struct xa_db_change *c = &ch[n];
        c->cls = r->tbl->cls->name;
        c->ref = xa_strdup(r->refv->u.str.s);
        c->created = r->is_new;
        if (!r->dead) {
            xa_db_json_encode_row(&json, r->tbl->cls, r->vals);
            c->json = xa_buf_steal(&json);
        }
        if (!r->dead && !r->is_new) {
            /* which fields this transaction set: the undo log knows */
            for (size_t u = 0; u < t->n_undo; u++) {
                const struct xa_db_undo *e = &t->undo[u];
                if (e->op != XA_UNDO_SET || e->row != r) {
                    continue;
                }
                const char *name = r->tbl->cls->fields[e->field].name;
                bool dup = false;
                for (size_t k = 0; k < c->n_fields && !dup; k++) {
                    dup = c->fields[k] == name;
                }
                if (!dup) {
                    c->fields = xa_realloc(c->fields, (c->n_fields + 1) *
                                                          sizeof *c->fields);
                    c->fields[c->n_fields++] = name;
                }
            }
            if (!c->n_fields) {
                /* only a relation set of it changed: nothing to send */
                free((char *)c->ref);
                free((char *)c->json);
                memset(c, 0, sizeof *c);
                continue;
            }
        }
        n++;
    }
    xa_buf_free(&json);
    for (size_t i = 0; i < t->n_touched; i++) {
        t->touched[i]->touched = false;
    }
    t->n_touched = 0;
    xa_db_undo_all(t);
    write_unlock();
    xa_db_remote_commit_fn fn = d->remote;
    struct xa_error *e = n && fn ? fn(d->remote_ctx, ch, n) : NULL;
    changes_free(ch, n);
    return e;
}

static struct xa_error *
commit(struct xa_txn *t, bool wait)
{
    struct xa_db *d = &xa_db_g;
    if (!t || !t->write) {
        xa_db_end(t);
        return NULL;
    }
    if (d->remote && !commits_locally && touches_replicated(t)) {
        return commit_remote(t);
    }
    /* While the store is away a write it would have to take is refused at
     * once, and undone (the lock is still held, nothing has seen it), so
     * the in-memory state does not run ahead of the store.  A nowait
     * commit is kept: it is queued behind the rows the persister holds. */
    if (wait && d->drv && __atomic_load_n(&d->store_down, __ATOMIC_ACQUIRE) &&
        persists_any(t)) {
        pthread_mutex_lock(&d->qlock);
        char *why = xa_strdup(d->store_err);
        pthread_mutex_unlock(&d->qlock);
        xa_db_abort(t);
        struct xa_error *e = xa_error_internal("database unavailable: %s", why);
        free(why);
        return e;
    }
    bool any = false;
    for (size_t i = 0; i < t->n_touched && !any; i++) {
        struct xa_db_row *r = t->touched[i];
        any = !(r->dead && r->is_new);
    }
    uint64_t gen = d->generation + (any ? 1 : 0);
    struct xa_db_batch *b = any && d->drv ? xa_calloc(1, sizeof *b) : NULL;
    struct xa_buf json = {0};
    for (size_t i = 0; i < t->n_touched; i++) {
        struct xa_db_row *r = t->touched[i];
        r->touched = false;
        if (r->dead) {
            if (!r->is_new) {
                dellog_add(gen, r);
                recency_remove(r);
                if (b && r->tbl->cls->persist) {
                    batch_add(b, r);
                }
            }
            continue;
        }
        if (r->is_new) {
            r->created = gen;
            r->is_new = false;
        }
        recency_remove(r);
        r->modified = gen;
        recency_append(r);
        if (b && r->tbl->cls->persist) {
            xa_db_json_encode_row(&json, r->tbl->cls, r->vals);
            batch_add(b, r)->json = xa_buf_steal(&json);
        }
    }
    xa_buf_free(&json);
    xa_db_undo_release(t);
    /* dead rows are off every list and index now: free them */
    for (size_t i = 0; i < t->n_touched; i++) {
        if (t->touched[i]->dead) {
            xa_db_row_free(t->touched[i]);
        }
    }
    t->n_touched = 0;
    __atomic_store_n(&d->generation, gen, __ATOMIC_RELEASE);
    if (b && !b->n) {
        /* only classes that do not persist (sessions, tasks) changed */
        batch_free(b);
        b = NULL;
    }
    if (b) {
        b->gen = gen;
        b->detached = !wait;
        pthread_mutex_lock(&d->qlock);
        if (d->qlast) {
            d->qlast->next = b;
        } else {
            d->qfirst = b;
        }
        d->qlast = b;
        pthread_cond_signal(&d->qcond);
        pthread_mutex_unlock(&d->qlock);
    }
    write_unlock();

    struct xa_error *e = NULL;
    if (b && wait) {
        pthread_mutex_lock(&d->qlock);
        while (!b->done) {
            pthread_cond_wait(&d->donecond, &d->qlock);
        }
        pthread_mutex_unlock(&d->qlock);
        e = b->err;
        b->err = NULL;
        batch_free(b);
    }
    void (*hook)(uint64_t, void *) = d->hook;
    if (any && hook) {
        hook(gen, d->hook_ctx);
    }
    void (*rhook)(uint64_t, void *) = d->repl_hook;
    if (any && rhook) {
        rhook(gen, d->repl_hook_ctx);
    }
    return e;
}

struct xa_error *
xa_db_commit(struct xa_txn *t)
{
    return commit(t, true);
}

void
xa_db_commit_nowait(struct xa_txn *t)
{
    xa_error_free(commit(t, false));
}

uint64_t
xa_db_generation(void)
{
    return __atomic_load_n(&xa_db_g.generation, __ATOMIC_ACQUIRE);
}

struct xa_error *
xa_db_store_ahead(bool *ahead, uint64_t *stored)
{
    struct xa_db *d = &xa_db_g;
    *ahead = false;
    *stored = xa_db_generation();
    if (!d->open || !d->drv || !d->drv->stored_generation) {
        return NULL;
    }
    struct xa_error *e = d->drv->stored_generation(d->drv_state, stored);
    /* read after the store: this process's own writes in flight are
     * already counted in memory, so they never look like someone else's */
    if (!e) {
        *ahead = *stored > xa_db_generation();
    }
    return e;
}

bool
xa_db_store_available(void)
{
    return !__atomic_load_n(&xa_db_g.store_down, __ATOMIC_ACQUIRE);
}

void
xa_db_set_commit_hook(void (*hook)(uint64_t generation, void *ctx), void *ctx)
{
    xa_db_g.hook_ctx = ctx;
    xa_db_g.hook = hook;
}

/* --- changes since a generation ------------------------------------------*/

bool
xa_db_changes_since(struct xa_txn *t, const struct xa_class_desc *cls,
                    uint64_t since,
                    void (*fn)(const struct xa_class_desc *cls, const char *ref,
                               enum xa_db_op op, uint64_t gen, void *ctx),
                    void *ctx)
{
    XA_UNUSED(t);
    struct xa_db *d = &xa_db_g;
    /* Nothing existed at generation 0, so no forgotten deletion can
     * matter to it: a deletion is reported only for rows created by
     * 'since'. */
    if (since != 0 && since < d->del_floor) {
        return false;
    }
    /* A token from the future was issued before a restart, by a run whose
     * last commits touched only rows that do not persist: we cannot know
     * what it saw. */
    if (since > d->generation) {
        return false;
    }
    struct xa_db_row *r = d->rlast;
    while (r && r->modified > since) {
        r = r->rprev;
    }
    r = r ? r->rnext : d->rfirst;
    size_t di = d->del_n; /* index (from the oldest) of the first newer */
    while (di > 0 && d->dels[(d->del_head + di - 1) % d->del_cap].gen > since) {
        di--;
    }
    /* merge the two generation-ordered streams */
    for (;;) {
        /* inside a write transaction: rows it destroyed are not there */
        while (r && r->dead) {
            r = r->rnext;
        }
        const struct xa_db_deletion *del =
            di < d->del_n ? &d->dels[(d->del_head + di) % d->del_cap] : NULL;
        if (!r && !del) {
            break;
        }
        if (r && (!del || r->modified <= del->gen)) {
            if (!cls || r->tbl->cls == cls) {
                fn(r->tbl->cls, r->refv->u.str.s,
                   r->created > since ? XA_DB_ADD : XA_DB_MOD, r->modified,
                   ctx);
            }
            r = r->rnext;
        } else {
            if ((!cls || del->cls == cls) && del->created <= since) {
                fn(del->cls, del->ref, XA_DB_DEL, del->gen, ctx);
            }
            di++;
        }
    }
    return true;
}

/* --- replication ---------------------------------------------------------*/

void
xa_db_set_replication_hook(void (*hook)(uint64_t generation, void *ctx),
                           void *ctx)
{
    xa_db_g.repl_hook_ctx = ctx;
    xa_db_g.repl_hook = hook;
}

void
xa_db_set_remote_commit(xa_db_remote_commit_fn fn, void *ctx)
{
    pthread_rwlock_wrlock(&xa_db_g.lock);
    xa_db_g.remote_ctx = ctx;
    xa_db_g.remote = fn;
    pthread_rwlock_unlock(&xa_db_g.lock);
}

void
xa_db_thread_commits_locally(bool local)
{
    commits_locally = local;
}

static void
export_row(const struct xa_db_row *r, struct xa_buf *json, xa_db_export_fn fn,
           void *ctx)
{
    xa_db_json_encode_row(json, r->tbl->cls, r->vals);
    char *text = xa_buf_steal(json);
    fn(ctx, r->tbl->cls->name, r->refv->u.str.s, text);
    free(text);
}

bool
xa_db_export_since(uint64_t since, xa_db_export_fn fn, void *ctx,
                   uint64_t *ret_gen)
{
    struct xa_db *d = &xa_db_g;
    struct xa_txn *t = xa_db_begin_read();
    uint64_t gen = d->generation;
    *ret_gen = gen;
    if ((since != 0 && since < d->del_floor) || since > gen) {
        xa_db_end(t);
        return false;
    }
    struct xa_buf json = {0};
    struct xa_db_row *r = d->rlast;
    while (r && r->modified > since) {
        r = r->rprev;
    }
    r = r ? r->rnext : d->rfirst;
    size_t di = d->del_n;
    while (di > 0 && d->dels[(d->del_head + di - 1) % d->del_cap].gen > since) {
        di--;
    }
    /* the two generation-ordered streams, merged as changes_since does */
    for (;;) {
        const struct xa_db_deletion *del =
            since && di < d->del_n ? &d->dels[(d->del_head + di) % d->del_cap]
                                   : NULL;
        if (!r && !del) {
            break;
        }
        if (r && (!del || r->modified <= del->gen)) {
            if (r->tbl->cls->replicate) {
                export_row(r, &json, fn, ctx);
            }
            r = r->rnext;
        } else {
            if (del->cls->replicate && del->created <= since) {
                fn(ctx, del->cls->name, del->ref, NULL);
            }
            di++;
        }
    }
    xa_buf_free(&json);
    xa_db_end(t);
    return true;
}

struct xa_error *
xa_db_apply_row(struct xa_txn *t, const char *cls_name, const char *ref,
                const char *json, const char *const *fields, size_t n_fields)
{
    const struct xa_class_desc *cls = xa_schema_class(cls_name);
    struct xa_db_table *tbl = cls ? xa_db_table_of(cls) : NULL;
    if (!tbl || !tbl->cls) {
        return xa_error_internal("replication: unknown class %s", cls_name);
    }
    bool exists = xa_db_exists(t, cls, ref);
    if (!json) {
        return exists ? xa_db_destroy(t, cls, ref) : NULL;
    }
    struct xa_value **vals = xa_calloc(cls->n_fields + 1, sizeof *vals);
    struct xa_error *err =
        xa_db_json_decode_row(cls, &tbl->field_index, json, vals);
    if (err) {
        free(vals);
        return err;
    }
    if (!exists) {
        struct xa_value *rec = xa_struct();
        for (size_t f = 0; f < cls->n_fields; f++) {
            if (vals[f]) {
                xa_struct_add(rec, cls->fields[f].name, vals[f]);
                vals[f] = NULL;
            }
        }
        err = xa_db_create(t, cls, ref, rec);
    }
    for (size_t f = 0; exists && !err && f < cls->n_fields; f++) {
        if (!vals[f]) {
            continue;
        }
        bool wanted = !fields;
        for (size_t k = 0; k < n_fields && !wanted; k++) {
            wanted = strcmp(fields[k], cls->fields[f].name) == 0;
        }
        const struct xa_value *cur =
            wanted ? xa_db_peek_field(t, cls, ref, (int)f) : NULL;
        if (wanted && !(cur && xa_value_equal(cur, vals[f]))) {
            err = xa_db_set_field(t, cls, ref, (int)f, vals[f]);
            vals[f] = NULL;
        }
    }
    for (size_t f = 0; f < cls->n_fields; f++) {
        xa_value_unref(vals[f]);
    }
    free(vals);
    return err;
}
