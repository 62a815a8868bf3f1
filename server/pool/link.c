/* link.c - host-to-host calls: one kept-alive, pinned HTTPS connection
 * per (peer, purpose), logged in with the pool secret.
 *
 * The TLS check runs inside the handshake (client.c): a peer whose
 * certificate is neither a pool host's (Certificate rows) nor pinned at
 * join never sees a byte of the request, the pool secret included. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "db/db.h"
#include "log.h"
#include "pool/pool-internal.h"
#include "self.h"

#define LOG       "pool"
/* connections, hence threads, a master uses to run work on one member */
#define FWD_CONNS 4

struct link {
    char *key; /* "<kind> <addr>" */
    char *addr;
    struct xa_client *client;
    char *session;
    long timeout_s;
    pthread_mutex_t lock; /* one call at a time on the connection */
    /* set by xa_pool_links_reset without 'lock' (a call in flight may
     * hold it until a dead peer times out); the next call renews the
     * connection and session before it uses them */
    atomic_bool stale;
};

static pthread_mutex_t links_lock = PTHREAD_MUTEX_INITIALIZER;
static struct link **links;
static size_t n_links, cap_links;

char *
xa_pool_url(const char *addr)
{
    bool v6 = strchr(addr, ':') != NULL;
    return xa_asprintf(v6 ? "https://[%s]:%d" : "https://%s:%d", addr,
                       xa_pool_g.cfg.https_port);
}

bool
xa_pool_fingerprint_trusted(const char *fp)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    bool ok = false;
    for (size_t i = 0; i < xa_pool_g.n_pins && !ok; i++) {
        ok = strcmp(xa_pool_g.pins[i], fp) == 0;
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
    if (ok) {
        return true;
    }
    const struct xa_class_desc *C = xa_schema_class("Certificate");
    int ff = xa_schema_field_index(C, "fingerprint");
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *all = xa_db_get_all(t, C);
    for (size_t i = 0; all && i < all->u.arr.n && !ok; i++) {
        const struct xa_value *f =
            xa_db_peek_field(t, C, all->u.arr.items[i]->u.str.s, ff);
        ok = f && xa_value_str(f) && strcmp(xa_value_str(f), fp) == 0;
    }
    xa_value_unref(all);
    xa_db_end(t);
    return ok;
}

static bool
cert_check(void *ctx, const char *fp, bool ca_ok)
{
    XA_UNUSED(ca_ok);
    struct link *l = ctx;
    if (xa_pool_fingerprint_trusted(fp)) {
        return true;
    }
    xa_log_warn(LOG, "refusing %s: certificate %s is not pinned", l->addr, fp);
    return false;
}

static struct xa_client *
link_client(struct link *l)
{
    char *url = xa_pool_url(l->addr);
    struct xa_client_options o = {
        .protocol = XA_CLIENT_JSONRPC,
        .cert_check = cert_check,
        .cert_ctx = l,
        .timeout_s = l->timeout_s,
    };
    struct xa_client *c = xa_client_new(url, &o);
    free(url);
    return c;
}

/* A link lives until the pool stops (xa_pool_links_stop), so a thread
 * may keep using the one it got. */
static struct link *
link_get(const char *addr, const char *kind, long timeout_s)
{
    char *key = xa_asprintf("%s %s", kind, addr);
    pthread_mutex_lock(&links_lock);
    struct link *l = NULL;
    for (size_t i = 0; i < n_links && !l; i++) {
        if (strcmp(links[i]->key, key) == 0) {
            l = links[i];
        }
    }
    if (!l) {
        if (n_links == cap_links) {
            cap_links = cap_links ? 2 * cap_links : 16;
            links = xa_realloc(links, cap_links * sizeof *links);
        }
        l = xa_calloc(1, sizeof *l);
        l->key = key;
        key = NULL;
        l->addr = xa_strdup(addr);
        l->timeout_s = timeout_s;
        pthread_mutex_init(&l->lock, NULL);
        l->client = link_client(l);
        links[n_links++] = l;
    }
    pthread_mutex_unlock(&links_lock);
    free(key);
    return l;
}

/* New connections and sessions everywhere (the pins, the secret or the
 * roles changed).  Does not wait for calls in flight (one stuck on a
 * dead peer would hold the caller for its whole timeout): each link
 * renews itself before its next call. */
void
xa_pool_links_reset(void)
{
    pthread_mutex_lock(&links_lock);
    for (size_t i = 0; i < n_links; i++) {
        atomic_store(&links[i]->stale, true);
    }
    pthread_mutex_unlock(&links_lock);
}

/* Renews 'l's connection and session if a reset asked for it; with
 * 'l->lock' held. */
static void
renew_if_stale_locked(struct link *l)
{
    if (atomic_exchange(&l->stale, false)) {
        xa_client_free(l->client);
        l->client = link_client(l);
        free(l->session);
        l->session = NULL;
    }
}

static void
links_free(void)
{
    pthread_mutex_lock(&links_lock);
    for (size_t i = 0; i < n_links; i++) {
        struct link *l = links[i];
        pthread_mutex_lock(&l->lock); /* a call in flight finishes first */
        pthread_mutex_unlock(&l->lock);
        pthread_mutex_destroy(&l->lock);
        xa_client_free(l->client);
        free(l->key);
        free(l->addr);
        free(l->session);
        free(l);
    }
    n_links = 0;
    free(links);
    links = NULL;
    cap_links = 0;
    pthread_mutex_unlock(&links_lock);
}

static struct xa_error *
login_locked(struct link *l)
{
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(xa_self_host()));
    xa_array_append(p, xa_string(xa_pool_secret()));
    struct xa_value *v = NULL;
    struct xa_error *err =
        xa_client_call(l->client, "session.slave_login", false, p, &v);
    if (!err) {
        free(l->session);
        l->session = xa_strdup(xa_value_str(v) ? xa_value_str(v) : "");
    }
    xa_value_unref(v);
    return err;
}

static bool
is_transport(const struct xa_error *e)
{
    return strcmp(e->code, XA_CLIENT_TRANSPORT_ERROR) == 0 ||
           strcmp(e->code, XA_CLIENT_HTTP_ERROR) == 0;
}

/* xa_pool_link_call, plus the task the peer's work updates (NULL:
 * none), which travels in a header of the request. */
static struct xa_error *
link_call(const char *addr, const char *kind, const char *method,
          struct xa_value *params, const char *task, struct xa_value **ret,
          bool idempotent, long timeout_s)
{
    struct link *l = link_get(addr, kind, timeout_s);
    if (!params) {
        params = xa_array();
    }
    char *task_header =
        task ? xa_asprintf("%s: %s", XA_CALL_TASK_HEADER, task) : NULL;
    const char *headers[] = {task_header, NULL};
    pthread_mutex_lock(&l->lock);
    renew_if_stale_locked(l);
    struct xa_error *err = NULL;
    for (int attempt = 0;; attempt++) {
        if (!l->session) {
            err = login_locked(l);
        }
        if (!err) {
            struct xa_value *p = xa_array();
            xa_array_append(p, xa_string(l->session));
            for (size_t i = 0; i < params->u.arr.n; i++) {
                xa_array_append(p, xa_value_ref(params->u.arr.items[i]));
            }
            err = xa_client_call_with_headers(l->client, method, false, p,
                                              headers, ret);
            if (err && strcmp(err->code, "SESSION_INVALID") == 0) {
                /* the peer restarted: a new session, the same call */
                free(l->session);
                l->session = NULL;
                if (attempt < 3) {
                    xa_error_free(err);
                    err = NULL;
                    continue;
                }
            }
        }
        if (err && is_transport(err)) {
            free(l->session);
            l->session = NULL;
            if (idempotent && attempt < 3) {
                xa_error_free(err);
                err = NULL;
                usleep((useconds_t)(100000 << attempt));
                continue;
            }
        }
        break;
    }
    pthread_mutex_unlock(&l->lock);
    xa_value_unref(params);
    free(task_header);
    return err;
}

struct xa_error *
xa_pool_link_call(const char *addr, const char *kind, const char *method,
                  struct xa_value *params, struct xa_value **ret,
                  bool idempotent, long timeout_s)
{
    return link_call(addr, kind, method, params, NULL, ret, idempotent,
                     timeout_s);
}

struct xa_error *
xa_pool_link_forward(const char *addr, const char *kind, const char *method,
                     struct xa_value *params, const char *task,
                     struct xa_value **ret)
{
    return link_call(addr, kind, method, params, task, ret, false, 0);
}

/* --- work run on a peer from the link's own threads -----------------------
 *
 * Per peer address: a queue of jobs and up to FWD_CONNS threads, each
 * with its own kept-alive connection (kind "fwd<i>"), started as the
 * queue needs them and kept until the pool stops.  The caller's thread
 * (an HTTP thread) only queues; the job answers its call from here. */

struct runner {
    char *addr;
    struct xa_pool_job *head, *tail;
    pthread_t threads[FWD_CONNS];
    unsigned n_threads, n_idle;
};

struct runner_arg {
    struct runner *r;
    unsigned index;
};

static pthread_mutex_t runners_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t runners_cond = PTHREAD_COND_INITIALIZER;
static struct runner **runners;
static size_t n_runners;
static bool runners_stopping;

static void *
runner_main(void *arg)
{
    struct runner_arg *a = arg;
    struct runner *r = a->r;
    char kind[16];
    snprintf(kind, sizeof kind, "fwd%u", a->index);
    free(a);
    pthread_mutex_lock(&runners_lock);
    for (;;) {
        while (!r->head && !runners_stopping) {
            r->n_idle++;
            pthread_cond_wait(&runners_cond, &runners_lock);
            r->n_idle--;
        }
        if (!r->head) {
            break;
        }
        struct xa_pool_job *j = r->head;
        r->head = j->next;
        if (!r->head) {
            r->tail = NULL;
        }
        pthread_mutex_unlock(&runners_lock);
        j->run(j, r->addr, kind); /* answers and frees the job */
        pthread_mutex_lock(&runners_lock);
    }
    pthread_mutex_unlock(&runners_lock);
    return NULL;
}

void
xa_pool_link_submit(const char *addr, struct xa_pool_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&runners_lock);
    if (runners_stopping) {
        pthread_mutex_unlock(&runners_lock);
        job->cancel(job);
        return;
    }
    struct runner *r = NULL;
    for (size_t i = 0; i < n_runners && !r; i++) {
        if (strcmp(runners[i]->addr, addr) == 0) {
            r = runners[i];
        }
    }
    if (!r) {
        r = xa_calloc(1, sizeof *r);
        r->addr = xa_strdup(addr);
        runners = xa_realloc(runners, (n_runners + 1) * sizeof *runners);
        runners[n_runners++] = r;
    }
    if (r->tail) {
        r->tail->next = job;
    } else {
        r->head = job;
    }
    r->tail = job;
    size_t queued = 0;
    for (struct xa_pool_job *j = r->head; j; j = j->next) {
        queued++;
    }
    if (queued > r->n_idle && r->n_threads < FWD_CONNS) {
        struct runner_arg *a = xa_calloc(1, sizeof *a);
        a->r = r;
        a->index = r->n_threads;
        if (pthread_create(&r->threads[r->n_threads], NULL, runner_main, a) ==
            0) {
            r->n_threads++;
        } else {
            free(a);
        }
    }
    if (r->n_threads == 0) {
        /* no thread to run it: refuse rather than strand the call */
        r->head = r->tail = NULL;
        pthread_mutex_unlock(&runners_lock);
        job->cancel(job);
        return;
    }
    pthread_cond_broadcast(&runners_cond);
    pthread_mutex_unlock(&runners_lock);
}

void
xa_pool_links_stop(void)
{
    pthread_mutex_lock(&runners_lock);
    runners_stopping = true;
    /* queued work is refused; work in flight completes */
    struct xa_pool_job *refused = NULL;
    for (size_t i = 0; i < n_runners; i++) {
        struct runner *r = runners[i];
        if (r->tail) {
            r->tail->next = refused;
            refused = r->head;
        }
        r->head = r->tail = NULL;
    }
    pthread_cond_broadcast(&runners_cond);
    pthread_mutex_unlock(&runners_lock);
    while (refused) {
        struct xa_pool_job *j = refused;
        refused = j->next;
        j->cancel(j);
    }
    for (size_t i = 0; i < n_runners; i++) {
        struct runner *r = runners[i];
        for (unsigned k = 0; k < r->n_threads; k++) {
            pthread_join(r->threads[k], NULL);
        }
        free(r->addr);
        free(r);
    }
    free(runners);
    runners = NULL;
    n_runners = 0;
    links_free();
}
