/* session.c - see session.h. */
#include "session.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "db/db.h"
#include "event.h"
#include "hmap.h"
#include "log.h"
#include "pool/pool.h"
#include "rbac.h"
#include "self.h"
#include "timer.h"
#include "xa-impl.h"

extern const struct xa_class_desc xa_cls_session;

struct session {
    char *ref;
    char *user; /* account name, "" for pool sessions */
    char *originator;
    unsigned roles;
    bool superuser;
    bool pool;
    bool local;         /* slave_local_login: served by a member itself */
    bool migrate_in;    /* handed out by host.migrate_receive */
    double last_active; /* monotonic */
    double created;     /* monotonic, for "oldest" */
};

/* Recent failed logins from one client address. */
struct failures {
    unsigned count;
    double last; /* monotonic */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct xa_hmap sessions; /* ref -> struct session */
static struct xa_hmap failed;   /* address -> struct failures */
static struct xa_session_config config;

static void
session_free(void *p)
{
    struct session *s = p;
    free(s->ref);
    free(s->user);
    free(s->originator);
    free(s);
}

void
xa_session_init(const struct xa_session_config *cfg)
{
    config = *cfg;
    config.pool_secret = cfg->pool_secret ? xa_strdup(cfg->pool_secret) : NULL;
    if (config.idle_timeout <= 0) {
        config.idle_timeout = 24 * 3600;
    }
    if (!config.max_per_user) {
        config.max_per_user = 500;
    }
    xa_hmap_init(&sessions);
    xa_hmap_init(&failed);
}

void
xa_session_shutdown(void)
{
    pthread_mutex_lock(&lock);
    xa_hmap_clear(&sessions, session_free);
    xa_hmap_clear(&failed, free);
    pthread_mutex_unlock(&lock);
    free((char *)config.pool_secret);
    config.pool_secret = NULL;
}

struct xa_error *
xa_session_check(const char *ref, struct xa_call *call)
{
    pthread_mutex_lock(&lock);
    struct session *s = xa_hmap_get(&sessions, ref);
    double now = xa_monotonic();
    if (s && now - s->last_active > config.idle_timeout) {
        s = NULL; /* expired: the sweep will remove it */
    }
    if (!s) {
        pthread_mutex_unlock(&lock);
        return xa_error_new("SESSION_INVALID", 1, ref);
    }
    s->last_active = now;
    call->roles = s->roles;
    call->is_superuser = s->superuser;
    call->is_pool_session = s->pool;
    pthread_mutex_unlock(&lock);
    free(call->session_ref);
    call->session_ref = xa_strdup(ref);
    return NULL;
}

static struct xa_error *
db_write_session(const struct session *s, bool create)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err;
    if (create) {
        char now[32];
        xa_datetime_now(now);
        struct xa_value *rec = xa_struct();
        xa_struct_add(rec, "this_host", xa_string(xa_self_host()));
        xa_struct_add(rec, "this_user", xa_string("OpaqueRef:NULL"));
        xa_struct_add(rec, "last_active", xa_datetime(now));
        xa_struct_add(rec, "validation_time", xa_datetime(now));
        xa_struct_add(rec, "pool", xa_bool(s->pool));
        xa_struct_add(rec, "is_local_superuser", xa_bool(s->superuser));
        xa_struct_add(rec, "auth_user_name", xa_string(s->user));
        xa_struct_add(rec, "originator", xa_string(s->originator));
        err = xa_db_create(t, &xa_cls_session, s->ref, rec);
    } else if (xa_db_exists(t, &xa_cls_session, s->ref)) {
        err = xa_db_destroy(t, &xa_cls_session, s->ref);
    } else {
        err = NULL;
    }
    if (err) {
        xa_db_abort(t);
        return err;
    }
    return xa_db_commit(t);
}

/* Removes a session everywhere; takes the struct. */
static void
drop(struct session *s)
{
    xa_error_free(db_write_session(s, false));
    xa_event_session_gone(s->ref);
    session_free(s);
}

/* The session of 'user' that must make room for a new one, removed from
 * the table (caller drops it), else NULL: one that expired but was not
 * swept yet, or else the oldest when the user is at the bound. */
static struct session *
evict_oldest_locked(const char *user)
{
    unsigned count = 0;
    struct session *oldest = NULL, *expired = NULL;
    double now = xa_monotonic();
    XA_HMAP_FOR_EACH (slot, &sessions) {
        struct session *s = slot->val;
        if (strcmp(s->user, user) != 0) {
            continue;
        }
        if (now - s->last_active > config.idle_timeout) {
            expired = s;
            continue;
        }
        count++;
        if (!oldest || s->created < oldest->created) {
            oldest = s;
        }
    }
    struct session *victim = expired                        ? expired
                             : count >= config.max_per_user ? oldest
                                                            : NULL;
    if (victim) {
        xa_hmap_remove(&sessions, victim->ref);
    }
    return victim;
}

static struct xa_error *
open_session(const char *user, const char *originator, unsigned roles,
             bool superuser, bool pool, struct xa_value **ret)
{
    struct session *s = xa_calloc(1, sizeof *s);
    s->local = strcmp(originator, "local") == 0;
    s->ref = xa_ref_new();
    s->user = xa_strdup(user);
    s->originator = xa_strdup(originator);
    s->roles = roles;
    s->superuser = superuser;
    s->pool = pool;
    s->created = s->last_active = xa_monotonic();
    struct xa_error *err = db_write_session(s, true);
    if (err) {
        session_free(s);
        return err;
    }
    pthread_mutex_lock(&lock);
    struct session *old = evict_oldest_locked(user);
    xa_hmap_put(&sessions, s->ref, s);
    pthread_mutex_unlock(&lock);
    if (old) {
        drop(old);
    }
    *ret = xa_string(s->ref);
    return NULL;
}

/* ---- failed-login throttling -------------------------------------- */

/* A client that keeps failing waits longer and longer for its answer
 * (100 ms doubling to 5 s), while every other client - and this one's
 * correct logins - go through at full speed.  The wait costs no thread:
 * the call is deferred and answered by a timer. */
static double
failure_delay(const char *addr)
{
    pthread_mutex_lock(&lock);
    struct failures *f = xa_hmap_get(&failed, addr);
    double now = xa_monotonic();
    if (!f) {
        f = xa_calloc(1, sizeof *f);
        xa_hmap_put(&failed, addr, f);
    } else if (now - f->last > 60) {
        f->count = 0;
    }
    f->count++;
    f->last = now;
    unsigned n = f->count;
    pthread_mutex_unlock(&lock);
    double d = 0.1 * pow(2.0, (double)(n > 7 ? 6 : n - 1));
    return d > 5.0 ? 5.0 : d;
}

static void
forget_failures(const char *addr)
{
    pthread_mutex_lock(&lock);
    free(xa_hmap_remove(&failed, addr));
    pthread_mutex_unlock(&lock);
}

struct late_failure {
    struct xa_call *call;
    struct xa_error *err;
};

static void
answer_late(void *ctx)
{
    struct late_failure *l = ctx;
    xa_call_finish(l->call, l->err, NULL);
    free(l);
}

static struct xa_error *
auth_failed(struct xa_call *call, const char *user, const char *why)
{
    struct late_failure *l = xa_calloc(1, sizeof *l);
    l->call = call;
    l->err = xa_error_new("SESSION_AUTHENTICATION_FAILED", 2, user, why);
    double delay = failure_delay(call->remote_addr);
    xa_call_defer(call);
    xa_timer_after(delay, answer_late, l);
    return NULL;
}

static struct xa_error *
login(struct xa_call *call, const char *uname, const char *pwd,
      const char *originator, struct xa_value **ret)
{
    if (xa_pool_is_member() && strcmp(originator, "local") != 0) {
        /* Clients talk to the master: tell them where it is. */
        char *master = xa_pool_master_address();
        struct xa_error *e =
            xa_error_new("HOST_IS_SLAVE", 1, master ? master : "");
        free(master);
        return e;
    }
    const char *role = NULL;
    if (!xa_accounts_verify(uname, pwd, &role)) {
        return auth_failed(call, uname,
                           "Authentication failure: wrong user name or "
                           "password");
    }
    forget_failures(call->remote_addr);
    bool root = strcmp(uname, "root") == 0;
    unsigned roles = root ? (1u << XA_ROLE__MAX) - 1 : xa_rbac_role_bit(role);
    return open_session(uname, originator, roles, root, false, ret);
}

/* ---- session.* messages ------------------------------------------- */

struct xa_error *
xa_impl_session_login_with_password(struct xa_call *call, const char *uname,
                                    const char *pwd, const char *version,
                                    const char *originator,
                                    struct xa_value **ret)
{
    XA_UNUSED(version);
    return login(call, uname, pwd, originator, ret);
}

struct xa_error *
xa_impl_session_slave_local_login_with_password(struct xa_call *call,
                                                const char *uname,
                                                const char *pwd,
                                                struct xa_value **ret)
{
    return login(call, uname, pwd, "local", ret);
}

struct xa_error *
xa_impl_session_slave_login(struct xa_call *call, const char *host,
                            const char *psecret, struct xa_value **ret)
{
    pthread_mutex_lock(&lock);
    bool ok = config.pool_secret && strcmp(psecret, config.pool_secret) == 0;
    pthread_mutex_unlock(&lock);
    if (!ok) {
        return auth_failed(call, host, "Pool credentials invalid");
    }
    forget_failures(call->remote_addr);
    return open_session("", "pool", (1u << XA_ROLE__MAX) - 1, true, true, ret);
}

static struct xa_error *
logout_ref(const char *ref)
{
    pthread_mutex_lock(&lock);
    struct session *s = xa_hmap_remove(&sessions, ref);
    pthread_mutex_unlock(&lock);
    if (s) {
        drop(s);
    }
    return NULL;
}

struct xa_error *
xa_impl_session_logout(struct xa_call *call)
{
    return logout_ref(call->session_ref);
}

struct xa_error *
xa_impl_session_local_logout(struct xa_call *call)
{
    return logout_ref(call->session_ref);
}

struct xa_error *
xa_impl_session_change_password(struct xa_call *call, const char *old_pwd,
                                const char *new_pwd)
{
    pthread_mutex_lock(&lock);
    struct session *s = xa_hmap_get(&sessions, call->session_ref);
    char *user = s ? xa_strdup(s->user) : NULL;
    pthread_mutex_unlock(&lock);
    if (!user || !*user) {
        free(user);
        return xa_error_new("SESSION_INVALID", 1, call->session_ref);
    }
    const char *role = NULL;
    struct xa_error *err = NULL;
    if (!xa_accounts_verify(user, old_pwd, &role)) {
        err = xa_error_new("CHANGE_PASSWORD_REJECTED", 1,
                           "The old password is wrong");
    } else {
        err = xa_accounts_set(user, role, new_pwd);
    }
    free(user);
    return err;
}

struct xa_error *
xa_impl_session_get_all_subject_identifiers(struct xa_call *call,
                                            struct xa_value **ret)
{
    XA_UNUSED(call);
    /* Only local accounts exist: no external subjects are logged in. */
    *ret = xa_array();
    return NULL;
}

struct xa_error *
xa_impl_session_logout_subject_identifier(struct xa_call *call,
                                          const char *subject_identifier)
{
    XA_UNUSED(call);
    XA_UNUSED(subject_identifier);
    return NULL;
}

bool
xa_session_alive(const char *ref)
{
    pthread_mutex_lock(&lock);
    bool alive = ref && xa_hmap_get(&sessions, ref) != NULL;
    pthread_mutex_unlock(&lock);
    return alive;
}

void
xa_session_expire(void)
{
    double now = xa_monotonic();
    pthread_mutex_lock(&lock);
    /* Collect first: removing while iterating would move slots. */
    size_t n = 0;
    char **refs = xa_calloc(xa_hmap_count(&sessions) + 1, sizeof *refs);
    XA_HMAP_FOR_EACH (slot, &sessions) {
        struct session *s = slot->val;
        if (now - s->last_active > config.idle_timeout) {
            refs[n++] = xa_strdup(s->ref);
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct session *s = xa_hmap_remove(&sessions, refs[i]);
        free(refs[i]);
        if (s) {
            pthread_mutex_unlock(&lock);
            drop(s);
            pthread_mutex_lock(&lock);
        }
    }
    /* Failure counts reset after a minute of quiet anyway (see
     * failure_delay): forget such addresses so the table stays bounded. */
    size_t m = 0;
    char **addrs = xa_calloc(xa_hmap_count(&failed) + 1, sizeof *addrs);
    XA_HMAP_FOR_EACH (slot, &failed) {
        const struct failures *f = slot->val;
        if (now - f->last > 60) {
            addrs[m++] = xa_strdup(slot->key);
        }
    }
    for (size_t i = 0; i < m; i++) {
        free(xa_hmap_remove(&failed, addrs[i]));
        free(addrs[i]);
    }
    pthread_mutex_unlock(&lock);
    free(addrs);
    free(refs);
}

void
xa_session_set_pool_secret(const char *secret)
{
    pthread_mutex_lock(&lock);
    free((char *)config.pool_secret);
    config.pool_secret = secret ? xa_strdup(secret) : NULL;
    pthread_mutex_unlock(&lock);
}

bool
xa_session_is_local(const char *ref)
{
    pthread_mutex_lock(&lock);
    struct session *s = ref ? xa_hmap_get(&sessions, ref) : NULL;
    bool local = s && s->local;
    pthread_mutex_unlock(&lock);
    return local;
}

void
xa_session_allow_migrate_in(const char *ref)
{
    pthread_mutex_lock(&lock);
    struct session *s = ref ? xa_hmap_get(&sessions, ref) : NULL;
    if (s) {
        s->migrate_in = true;
    }
    pthread_mutex_unlock(&lock);
}

bool
xa_session_may_migrate_in(const char *ref)
{
    pthread_mutex_lock(&lock);
    struct session *s = ref ? xa_hmap_get(&sessions, ref) : NULL;
    bool ok = s && s->migrate_in;
    pthread_mutex_unlock(&lock);
    return ok;
}
