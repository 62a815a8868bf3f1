/* event.c - see event.h. */
#include "event.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "call.h"
#include "db/db.h"
#include "hmap.h"
#include "log.h"
#include "rpc.h"
#include "session.h"
#include "xa-impl.h"

/* One entry of a subscription: a class (NULL: every class) and
 * optionally a single object. */
struct sub {
    const struct xa_class_desc *cls;
    char *ref;
};

struct subs {
    struct sub *v;
    size_t n;
};

enum waiter_kind { WAIT_FROM, WAIT_NEXT };

struct waiter {
    struct waiter *next;
    enum waiter_kind kind;
    struct xa_call *call;
    struct subs subs; /* owned (a copy for WAIT_NEXT) */
    uint64_t since;
    /* The generation at which this waiter was last found to have nothing
     * to report: until the database moves past it, looking again is
     * pointless (so a pass over thousands of idle waiters is cheap). */
    uint64_t checked;
    double deadline; /* monotonic seconds; 0 = never */
};

/* Legacy event.register state, per session. */
struct registration {
    struct registration *next;
    char *session_ref;
    struct subs subs;
    uint64_t last;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct waiter *waiters;
static struct registration *registrations;
static bool dirty, stopping, started;
/* The earliest deadline among the parked waiters (0: none), or earlier:
 * a waiter answered or dropped meanwhile only costs one idle pass.  Kept
 * up to date by park() so that parking a waiter is O(1) and the event
 * thread walks the list only after a commit or at a deadline. */
static double next_deadline;
static pthread_t thread;

static void
subs_free(struct subs *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].ref);
    }
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static void
subs_add(struct subs *s, const struct xa_class_desc *cls, const char *ref)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i].cls == cls &&
            ((!ref && !s->v[i].ref) || (ref && xa_str_eq(ref, s->v[i].ref)))) {
            return;
        }
    }
    s->v = xa_realloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n].cls = cls;
    s->v[s->n].ref = ref ? xa_strdup(ref) : NULL;
    s->n++;
}

/* Parses ["*", "vm", "vm/OpaqueRef:..."] into 'out'. */
static struct xa_error *
subs_parse(const struct xa_value *classes, struct subs *out)
{
    for (size_t i = 0; i < classes->u.arr.n; i++) {
        const char *s = classes->u.arr.items[i]->u.str.s;
        if (strcmp(s, "*") == 0) {
            subs_add(out, NULL, NULL);
            continue;
        }
        const char *slash = strchr(s, '/');
        char *name = slash ? xa_strndup(s, (size_t)(slash - s)) : xa_strdup(s);
        const struct xa_class_desc *cls = xa_schema_class_ci(name);
        free(name);
        /* "message" is valid though messages live outside the database
         * (XO subscribes to it); such a subscription matches no row. */
        if (!cls || (!cls->in_db && strcmp(cls->name, "message") != 0)) {
            subs_free(out);
            return xa_error_new("EVENT_SUBSCRIPTION_PARSE_FAILURE", 1, s);
        }
        subs_add(out, cls, slash ? slash + 1 : NULL);
    }
    return NULL;
}

static bool
subs_match(const struct subs *s, const struct xa_class_desc *cls,
           const char *ref)
{
    for (size_t i = 0; i < s->n; i++) {
        if (!s->v[i].cls) {
            /* "*": sessions are internal bookkeeping, not watched */
            if (strcmp(cls->name, "session") != 0) {
                return true;
            }
        } else if (s->v[i].cls == cls &&
                   (!s->v[i].ref || strcmp(s->v[i].ref, ref) == 0)) {
            return true;
        }
    }
    return false;
}

struct collect {
    struct xa_txn *t;
    const struct subs *subs;
    struct xa_value *events;
};

static const char *const op_names[] = {"add", "mod", "del"};

static void
collect_one(const struct xa_class_desc *cls, const char *ref, enum xa_db_op op,
            uint64_t gen, void *ctx)
{
    struct collect *c = ctx;
    if (!subs_match(c->subs, cls, ref)) {
        return;
    }
    struct xa_value *ev = xa_struct();
    char id[32];
    snprintf(id, sizeof id, "%" PRIu64, gen);
    xa_struct_add(ev, "id", xa_string(id));
    char ts[32];
    snprintf(ts, sizeof ts, "%.6f", xa_now());
    xa_struct_add(ev, "timestamp", xa_string(ts));
    xa_struct_add(ev, "class", xa_string(cls->lname));
    xa_struct_add(ev, "operation", xa_string(op_names[op]));
    xa_struct_add(ev, "ref", xa_string(ref));
    if (op != XA_DB_DEL) {
        struct xa_value *rec = xa_db_get_record(c->t, cls, ref);
        if (rec) {
            if (cls->uuid_field >= 0) {
                struct xa_value *u = xa_struct_get(rec, "uuid");
                if (u) {
                    xa_struct_add(ev, "obj_uuid", xa_value_ref(u));
                }
            }
            xa_struct_add(ev, "snapshot", rec);
        }
    }
    xa_array_append(c->events, ev);
}

/* Events matching 'subs' since generation 'since'; '*ret_gen' is the
 * generation they bring the caller to. */
static struct xa_value *
collect_events(struct xa_txn *t, const struct subs *subs, uint64_t since,
               uint64_t *ret_gen)
{
    struct collect c = {t, subs, xa_array()};
    const struct xa_class_desc *only = NULL;
    if (subs->n == 1 && subs->v[0].cls) {
        only = subs->v[0].cls;
    }
    *ret_gen = xa_db_generation();
    if (!xa_db_changes_since(t, only, since, collect_one, &c)) {
        /* The caller's token predates what we remember: resynchronise
         * by sending every object again. */
        xa_db_changes_since(t, only, 0, collect_one, &c);
    }
    return c.events;
}

static char *
make_token(uint64_t gen)
{
    return xa_asprintf("%020" PRIu64 ",%020d", gen, 0);
}

static struct xa_value *
from_result(struct xa_txn *t, struct xa_value *events, uint64_t gen)
{
    struct xa_value *r = xa_struct();
    xa_struct_add(r, "events", events);
    struct xa_value *counts = xa_struct();
    for (size_t i = 0; i < xa_schema_n_classes; i++) {
        const struct xa_class_desc *cls = xa_schema_classes[i];
        if (cls->in_db) {
            xa_struct_add(counts, cls->lname,
                          xa_int32((int32_t)xa_db_count(t, cls)));
        }
    }
    xa_struct_add(r, "valid_ref_counts", counts);
    xa_struct_add(r, "token", xa_string_take(make_token(gen)));
    return r;
}

static struct xa_error *
parse_token(const char *token, uint64_t *out)
{
    if (!*token) {
        *out = 0;
        return NULL;
    }
    unsigned long long a, b;
    int used = 0;
    if (sscanf(token, "%llu,%llu%n", &a, &b, &used) == 2 &&
        token[used] == '\0') {
        *out = a;
        return NULL;
    }
    return xa_error_new("EVENT_FROM_TOKEN_PARSE_FAILURE", 1, token);
}

/* Answers computed during one pass of the event thread, shared by the
 * waiters that asked the same question (same subscription, same token):
 * thousands of clients watching "*" from one token cost one collection,
 * not thousands. */
struct answer {
    struct xa_value *result; /* NULL: nothing to report yet */
};

struct answer_cache {
    struct xa_hmap map; /* question key -> struct answer */
};

static char *
question_key(const struct waiter *w)
{
    struct xa_buf b = {0};
    xa_buf_printf(&b, "%" PRIu64, w->since);
    for (size_t i = 0; i < w->subs.n; i++) {
        xa_buf_printf(&b, ";%s/%s",
                      w->subs.v[i].cls ? w->subs.v[i].cls->name : "*",
                      w->subs.v[i].ref ? w->subs.v[i].ref : "");
    }
    return xa_buf_steal(&b);
}

static void
answer_free(void *p)
{
    struct answer *a = p;
    xa_value_unref(a->result);
    free(a);
}

static void
cache_clear(struct answer_cache *c)
{
    xa_hmap_clear(&c->map, answer_free);
}

/* The event.from answer for 'w' now, or NULL when there is nothing to
 * report yet; a new reference.  An empty answer (a timeout) is never
 * shared: other waiters of the same question may still be waiting. */
static struct xa_value *
from_answer(struct waiter *w, bool timed_out, struct answer_cache *cache)
{
    if (!timed_out && w->checked == xa_db_generation()) {
        return NULL;
    }
    char *key = cache ? question_key(w) : NULL;
    struct answer *known = key ? xa_hmap_get(&cache->map, key) : NULL;
    if (known) {
        free(key);
        key = NULL;
        if (known->result) {
            return xa_value_ref(known->result);
        }
        if (!timed_out) {
            w->checked = xa_db_generation();
            return NULL;
        }
    }
    struct xa_txn *t = xa_db_begin_read();
    uint64_t gen;
    struct xa_value *events = collect_events(t, &w->subs, w->since, &gen);
    bool empty = events->u.arr.n == 0;
    if (empty) {
        w->checked = gen;
    }
    struct xa_value *result = NULL;
    if (!empty || timed_out) {
        result = from_result(t, events, gen); /* takes 'events' */
    } else {
        xa_value_unref(events);
    }
    xa_db_end(t);
    if (key) {
        struct answer *a = xa_calloc(1, sizeof *a);
        a->result = empty ? NULL : xa_value_ref(result);
        xa_hmap_put(&cache->map, key, a);
        free(key);
    }
    return result;
}

/* Tries to answer a waiter now.  Returns true when it was answered. */
static bool
try_answer(struct waiter *w, bool timed_out, struct answer_cache *cache)
{
    const char *session = w->call->session_ref;
    if (session && !xa_session_alive(session)) {
        /* Logged out while this sweep held the waiter off the list,
         * where xa_event_session_gone() could not find it. */
        xa_call_finish(w->call, xa_error_new("SESSION_INVALID", 1, session),
                       NULL);
        return true;
    }
    if (w->kind == WAIT_FROM) {
        struct xa_value *result = from_answer(w, timed_out, cache);
        if (!result) {
            return false;
        }
        xa_call_finish(w->call, NULL, result);
        return true;
    }
    if (!timed_out && w->checked == xa_db_generation()) {
        return false;
    }
    struct xa_txn *t = xa_db_begin_read();
    uint64_t gen;
    struct xa_value *events = collect_events(t, &w->subs, w->since, &gen);
    xa_db_end(t);
    if (events->u.arr.n == 0 && !timed_out) {
        w->checked = gen;
        xa_value_unref(events);
        return false;
    }
    pthread_mutex_lock(&lock);
    for (struct registration *r = registrations; r; r = r->next) {
        if (xa_str_eq(r->session_ref, w->call->session_ref)) {
            r->last = gen;
        }
    }
    pthread_mutex_unlock(&lock);
    xa_call_finish(w->call, NULL, events);
    return true;
}

static void
waiter_free(struct waiter *w)
{
    subs_free(&w->subs);
    free(w);
}

static void *
event_main(void *arg)
{
    XA_UNUSED(arg);
    pthread_mutex_lock(&lock);
    while (!stopping) {
        if (!dirty) {
            /* Nothing committed: sleep until the earliest deadline or a
             * signal, then look again at what woke us. */
            double earliest = next_deadline;
            double now = xa_monotonic();
            if (!earliest) {
                pthread_cond_wait(&wake, &lock);
                continue;
            }
            if (earliest > now) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                double wait = earliest - now;
                ts.tv_sec += (time_t)wait;
                ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&wake, &lock, &ts);
                continue;
            }
        }
        dirty = false;
        next_deadline = 0;
        struct waiter *list = waiters;
        waiters = NULL;
        pthread_mutex_unlock(&lock);
        double now = xa_monotonic();
        struct waiter *keep = NULL;
        struct answer_cache cache;
        xa_hmap_init(&cache.map);
        double earliest = 0;
        while (list) {
            struct waiter *w = list;
            list = w->next;
            bool timed_out = w->deadline && w->deadline <= now;
            if (try_answer(w, timed_out, &cache)) {
                waiter_free(w);
            } else {
                w->next = keep;
                keep = w;
                if (w->deadline && (!earliest || w->deadline < earliest)) {
                    earliest = w->deadline;
                }
            }
        }
        cache_clear(&cache);
        xa_rpc_forget_memo();
        pthread_mutex_lock(&lock);
        /* park() may have lowered next_deadline meanwhile */
        if (earliest && (!next_deadline || earliest < next_deadline)) {
            next_deadline = earliest;
        }
        while (keep) {
            struct waiter *w = keep;
            keep = w->next;
            w->next = waiters;
            waiters = w;
        }
    }
    /* Shutting down: answer everyone so no connection stays suspended. */
    struct waiter *list = waiters;
    waiters = NULL;
    pthread_mutex_unlock(&lock);
    while (list) {
        struct waiter *w = list;
        list = w->next;
        try_answer(w, true, NULL);
        waiter_free(w);
    }
    return NULL;
}

static void
on_commit(uint64_t gen, void *ctx)
{
    XA_UNUSED(gen);
    XA_UNUSED(ctx);
    pthread_mutex_lock(&lock);
    dirty = true;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
}

void
xa_event_start(void)
{
    stopping = false;
    xa_db_set_commit_hook(on_commit, NULL);
    pthread_create(&thread, NULL, event_main, NULL);
    started = true;
}

void
xa_event_stop(void)
{
    if (!started) {
        return;
    }
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    pthread_join(thread, NULL);
    xa_db_set_commit_hook(NULL, NULL);
    started = false;
}

void
xa_event_session_gone(const char *session_ref)
{
    pthread_mutex_lock(&lock);
    struct waiter **pp = &waiters;
    struct waiter *gone = NULL;
    while (*pp) {
        struct waiter *w = *pp;
        if (xa_str_eq(w->call->session_ref, session_ref)) {
            *pp = w->next;
            w->next = gone;
            gone = w;
        } else {
            pp = &w->next;
        }
    }
    struct registration **rp = &registrations;
    while (*rp) {
        struct registration *r = *rp;
        if (xa_str_eq(r->session_ref, session_ref)) {
            *rp = r->next;
            subs_free(&r->subs);
            free(r->session_ref);
            free(r);
        } else {
            rp = &r->next;
        }
    }
    /* A sweep in progress may hold more of this session's waiters: have
     * the event thread look again once it puts them back. */
    dirty = true;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    while (gone) {
        struct waiter *w = gone;
        gone = w->next;
        xa_call_finish(w->call, xa_error_new("SESSION_INVALID", 1, session_ref),
                       NULL);
        waiter_free(w);
    }
}

static void
park(struct waiter *w)
{
    /* Once on the list, 'w' may be answered and freed at any moment by
     * the event thread: keep what we need after that. */
    char *session =
        w->call->session_ref ? xa_strdup(w->call->session_ref) : NULL;
    xa_call_defer(w->call);
    pthread_mutex_lock(&lock);
    w->next = waiters;
    waiters = w;
    bool kick = false;
    if (xa_db_generation() != w->checked) {
        /* a commit slipped in after the caller looked: look again now */
        dirty = true;
        kick = true;
    }
    if (w->deadline && (!next_deadline || w->deadline < next_deadline)) {
        /* the thread may be asleep without a deadline, or past this one */
        next_deadline = w->deadline;
        kick = true;
    }
    /* Otherwise the thread will look at this waiter at the next commit
     * or the earlier deadline it already waits for: no need to wake it
     * (waking it for each of 10,000 waiters made parking quadratic). */
    if (kick) {
        pthread_cond_signal(&wake);
    }
    pthread_mutex_unlock(&lock);
    /* A logout between the call's session check and this park found no
     * waiter to wake: look again now that the waiter is visible (a
     * waiter already answered is simply not found). */
    if (session && !xa_session_alive(session)) {
        xa_event_session_gone(session);
    }
    free(session);
}

/* ---- event.* messages --------------------------------------------- */

struct xa_error *
xa_impl_event_from(struct xa_call *call, const struct xa_value *classes,
                   const char *token, double timeout, struct xa_value **ret)
{
    struct waiter *w = xa_calloc(1, sizeof *w);
    w->kind = WAIT_FROM;
    w->call = call;
    struct xa_error *err = subs_parse(classes, &w->subs);
    if (!err) {
        err = parse_token(token, &w->since);
    }
    if (err) {
        waiter_free(w);
        return err;
    }
    struct xa_txn *t = xa_db_begin_read();
    uint64_t gen;
    struct xa_value *events = collect_events(t, &w->subs, w->since, &gen);
    if (events->u.arr.n || timeout <= 0) {
        *ret = from_result(t, events, gen);
        xa_db_end(t);
        waiter_free(w);
        return NULL;
    }
    xa_db_end(t);
    xa_value_unref(events);
    w->checked = gen;
    w->deadline = xa_monotonic() + (timeout > 86400 ? 86400 : timeout);
    park(w);
    return NULL;
}

struct xa_error *
xa_impl_event_register(struct xa_call *call, const struct xa_value *classes)
{
    struct subs s = {0};
    struct xa_error *err = subs_parse(classes, &s);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct registration *r = registrations;
    while (r && !xa_str_eq(r->session_ref, call->session_ref)) {
        r = r->next;
    }
    if (!r) {
        r = xa_calloc(1, sizeof *r);
        r->session_ref = xa_strdup(call->session_ref);
        r->last = xa_db_generation();
        r->next = registrations;
        registrations = r;
    }
    for (size_t i = 0; i < s.n; i++) {
        subs_add(&r->subs, s.v[i].cls, s.v[i].ref);
    }
    pthread_mutex_unlock(&lock);
    subs_free(&s);
    return NULL;
}

struct xa_error *
xa_impl_event_unregister(struct xa_call *call, const struct xa_value *classes)
{
    struct subs s = {0};
    struct xa_error *err = subs_parse(classes, &s);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    for (struct registration *r = registrations; r; r = r->next) {
        if (!xa_str_eq(r->session_ref, call->session_ref)) {
            continue;
        }
        for (size_t i = 0; i < s.n; i++) {
            for (size_t k = 0; k < r->subs.n; k++) {
                if (r->subs.v[k].cls == s.v[i].cls &&
                    !r->subs.v[k].ref == !s.v[i].ref &&
                    (!s.v[i].ref ||
                     strcmp(s.v[i].ref, r->subs.v[k].ref) == 0)) {
                    free(r->subs.v[k].ref);
                    r->subs.v[k] = r->subs.v[--r->subs.n];
                    break;
                }
            }
        }
    }
    pthread_mutex_unlock(&lock);
    subs_free(&s);
    return NULL;
}

struct xa_error *
xa_impl_event_next(struct xa_call *call, struct xa_value **ret)
{
    struct waiter *w = xa_calloc(1, sizeof *w);
    w->kind = WAIT_NEXT;
    w->call = call;
    bool found = false;
    pthread_mutex_lock(&lock);
    for (struct registration *r = registrations; r; r = r->next) {
        if (xa_str_eq(r->session_ref, call->session_ref)) {
            for (size_t i = 0; i < r->subs.n; i++) {
                subs_add(&w->subs, r->subs.v[i].cls, r->subs.v[i].ref);
            }
            w->since = r->last;
            found = true;
        }
    }
    pthread_mutex_unlock(&lock);
    if (!found) {
        waiter_free(w);
        return xa_error_new("SESSION_NOT_REGISTERED", 1, call->session_ref);
    }
    struct xa_txn *t = xa_db_begin_read();
    uint64_t gen;
    struct xa_value *events = collect_events(t, &w->subs, w->since, &gen);
    xa_db_end(t);
    if (events->u.arr.n) {
        pthread_mutex_lock(&lock);
        for (struct registration *r = registrations; r; r = r->next) {
            if (xa_str_eq(r->session_ref, call->session_ref)) {
                r->last = gen;
            }
        }
        pthread_mutex_unlock(&lock);
        *ret = events;
        waiter_free(w);
        return NULL;
    }
    xa_value_unref(events);
    w->checked = gen;
    park(w);
    return NULL;
}

struct xa_error *
xa_impl_event_get_current_id(struct xa_call *call, struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = xa_int((int64_t)xa_db_generation());
    return NULL;
}

struct xa_error *
xa_impl_event_inject(struct xa_call *call, const char *class_, const char *ref,
                     struct xa_value **ret)
{
    XA_UNUSED(call);
    const struct xa_class_desc *cls = xa_schema_class_ci(class_);
    if (!cls || !cls->in_db) {
        return xa_error_new("EVENT_SUBSCRIPTION_PARSE_FAILURE", 1, class_);
    }
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *uuid = cls->uuid_field >= 0
                                ? xa_db_get_field(t, cls, ref, cls->uuid_field)
                                : NULL;
    if (!uuid) {
        xa_db_abort(t);
        return xa_error_handle_invalid(cls->name, ref);
    }
    /* The database drops writes of an unchanged value, so blank the uuid
     * and write it back within the transaction: the row counts as
     * touched, its generation moves and watchers see a "mod". */
    struct xa_error *err =
        xa_db_set_field(t, cls, ref, cls->uuid_field, xa_string(""));
    if (!err) {
        err = xa_db_set_field(t, cls, ref, cls->uuid_field, uuid);
    } else {
        xa_value_unref(uuid);
    }
    if (err) {
        xa_db_abort(t);
        return err;
    }
    err = xa_db_commit(t);
    if (!err) {
        *ret = xa_string_take(make_token(xa_db_generation()));
    }
    return err;
}
