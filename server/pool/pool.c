/* pool.c - the pool's state and role, its files, its thread, and the
 * member's refusal of client calls (see pool.h). */
#include "pool/pool-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "db/db.h"
#include "http/cert.h"
#include "log.h"
#include "self.h"
#include "session.h"
#include "task.h"
#include "util.h"

#define LOG "pool"

struct xa_pool xa_pool_g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

/* --- files ----------------------------------------------------------------*/

static char *
read_file(const char *name)
{
    char *path = xa_asprintf("%s/%s", xa_pool_g.state_dir, name);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f) {
        return NULL;
    }
    struct xa_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        xa_buf_append(&b, chunk, n);
    }
    fclose(f);
    xa_buf_putc(&b, '\0');
    return xa_buf_steal(&b);
}

/* Whole-file replace through a temporary name, so a crash leaves the old
 * or the new text, never a mix. */
struct xa_error *
xa_pool_write_file(const char *name, const char *text)
{
    char *path = xa_asprintf("%s/%s", xa_pool_g.state_dir, name);
    char *tmp = xa_asprintf("%s.tmp", path);
    struct xa_error *err = NULL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(text);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
        err = xa_error_internal("cannot write %s: %s", tmp, strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    if (!err && rename(tmp, path) != 0) {
        err = xa_error_internal("cannot install %s: %s", path, strerror(errno));
    }
    if (err) {
        unlink(tmp);
    }
    free(tmp);
    free(path);
    return err;
}

static void
save_pins_locked(void)
{
    struct xa_buf b = {0};
    for (size_t i = 0; i < xa_pool_g.n_pins; i++) {
        xa_buf_printf(&b, "%s\n", xa_pool_g.pins[i]);
    }
    xa_buf_putc(&b, '\0');
    xa_error_free(xa_pool_write_file("pool-pins", b.data));
    xa_buf_free(&b);
}

void
xa_pool_add_pin(const char *fp)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    bool have = false;
    for (size_t i = 0; i < xa_pool_g.n_pins && !have; i++) {
        have = strcmp(xa_pool_g.pins[i], fp) == 0;
    }
    if (!have) {
        xa_pool_g.pins = xa_realloc(xa_pool_g.pins, (xa_pool_g.n_pins + 1) *
                                                        sizeof *xa_pool_g.pins);
        xa_pool_g.pins[xa_pool_g.n_pins++] = xa_strdup(fp);
        save_pins_locked();
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
}

char *
xa_pool_own_fingerprint(void)
{
    char *path = xa_asprintf("%s/xapi-ssl.pem", xa_pool_g.state_dir);
    char *fp = xa_cert_fingerprint_sha256(path);
    free(path);
    return fp;
}

const char *
xa_pool_secret(void)
{
    return xa_pool_g.secret ? xa_pool_g.secret : "";
}

void
xa_pool_set_secret(const char *secret)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    free(xa_pool_g.secret);
    xa_pool_g.secret = xa_strdup(secret);
    pthread_mutex_unlock(&xa_pool_g.lock);
    xa_error_free(xa_pool_write_file("ptoken", secret));
    xa_session_set_pool_secret(secret);
}

/* --- role
 * -------------------------------------------------------------------*/

enum xa_pool_role
xa_pool_role(void)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    enum xa_pool_role r = xa_pool_g.role;
    pthread_mutex_unlock(&xa_pool_g.lock);
    return r;
}

bool
xa_pool_is_member(void)
{
    return xa_pool_role() == XA_POOL_MEMBER;
}

char *
xa_pool_master_address(void)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    char *a = xa_pool_g.role == XA_POOL_MEMBER && xa_pool_g.master_addr
                  ? xa_strdup(xa_pool_g.master_addr)
                  : NULL;
    pthread_mutex_unlock(&xa_pool_g.lock);
    return a;
}

static void
new_epoch(char out[33])
{
    unsigned char r[16];
    RAND_bytes(r, sizeof r);
    for (size_t i = 0; i < sizeof r; i++) {
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    }
}

void
xa_pool_become_member(const char *master_addr)
{
    char *conf = xa_asprintf("slave:%s\n", master_addr);
    xa_error_free(xa_pool_write_file("pool.conf", conf));
    free(conf);
    /* links first: writes a hand-over fenced go out as soon as the role
     * changes, over fresh links */
    xa_pool_links_reset();
    pthread_mutex_lock(&xa_pool_g.lock);
    free(xa_pool_g.master_addr);
    xa_pool_g.master_addr = xa_strdup(master_addr);
    xa_pool_g.role = XA_POOL_MEMBER;
    pthread_cond_broadcast(&xa_pool_g.cond);
    pthread_mutex_unlock(&xa_pool_g.lock);
    xa_db_set_remote_commit(xa_pool_remote_commit, NULL);
    xa_log_info(LOG, "member of the pool of %s", master_addr);
}

static void
ensure_own_certificate(void)
{
    const struct xa_class_desc *C = xa_schema_class("Certificate");
    char *fp = xa_pool_own_fingerprint();
    if (!C || !fp) {
        free(fp);
        return;
    }
    int fh = xa_schema_field_index(C, "host");
    int ff = xa_schema_field_index(C, "fingerprint");
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *all = xa_db_get_all(t, C);
    bool have = false;
    for (size_t i = 0; all && i < all->u.arr.n && !have; i++) {
        const char *r = all->u.arr.items[i]->u.str.s;
        const struct xa_value *h = xa_db_peek_field(t, C, r, fh);
        const struct xa_value *f = xa_db_peek_field(t, C, r, ff);
        have = h && f && strcmp(xa_value_str(h), xa_self_host()) == 0 &&
               strcmp(xa_value_str(f), fp) == 0;
    }
    xa_value_unref(all);
    struct xa_error *err = NULL;
    if (!have) {
        struct xa_value *rec = xa_struct();
        xa_struct_add(rec, "name", xa_string("xapi-ssl"));
        xa_struct_add(rec, "type", xa_string("host"));
        xa_struct_add(rec, "host", xa_string(xa_self_host()));
        xa_struct_add(rec, "fingerprint", xa_string(fp));
        char *ref = xa_ref_new();
        err = xa_db_create(t, C, ref, rec);
        free(ref);
    }
    if (err) {
        xa_db_abort(t);
    } else {
        err = xa_db_commit(t);
    }
    if (err) {
        xa_log_warn(LOG, "cannot record this host's certificate: %s",
                    err->code);
        xa_error_free(err);
    }
    free(fp);
}

/* Makes this host the master of the pool its replica describes. */
void
xa_pool_become_master(void)
{
    xa_db_set_remote_commit(NULL, NULL);
    xa_error_free(xa_pool_write_file("pool.conf", "master\n"));
    pthread_mutex_lock(&xa_pool_g.lock);
    new_epoch(xa_pool_g.epoch);
    xa_pool_g.role = XA_POOL_MASTER;
    free(xa_pool_g.master_addr);
    xa_pool_g.master_addr = NULL;
    pthread_cond_broadcast(&xa_pool_g.cond);
    pthread_mutex_unlock(&xa_pool_g.lock);
    xa_pool_links_reset();
    xa_pool_liveness_reset();
    /* pool.master names us from now on */
    const struct xa_class_desc *P = xa_schema_class("pool");
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *pools = xa_db_get_all(t, P);
    struct xa_error *err = NULL;
    for (size_t i = 0; pools && i < pools->u.arr.n && !err; i++) {
        err = xa_db_set_field(t, P, pools->u.arr.items[i]->u.str.s,
                              xa_schema_field_index(P, "master"),
                              xa_string(xa_self_host()));
    }
    xa_value_unref(pools);
    err = err ? (xa_db_abort(t), err) : xa_db_commit(t);
    if (err) {
        xa_log_err(LOG, "cannot record the new master: %s", err->code);
        xa_error_free(err);
    }
    ensure_own_certificate();
    xa_log_info(LOG, "master of the pool (epoch %s)", xa_pool_g.epoch);
}

/* The master the replica names (caller frees), or NULL. */
static char *
replica_master(void)
{
    const struct xa_class_desc *P = xa_schema_class("pool");
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *pools = xa_db_get_all(t, P);
    const struct xa_value *m =
        pools && pools->u.arr.n
            ? xa_db_peek_field(t, P, pools->u.arr.items[0]->u.str.s,
                               xa_schema_field_index(P, "master"))
            : NULL;
    char *ref = m && xa_value_str(m) ? xa_strdup(xa_value_str(m)) : NULL;
    xa_value_unref(pools);
    xa_db_end(t);
    return ref;
}

void
xa_pool_take_over(void)
{
    char *old = replica_master();
    xa_pool_become_master();
    if (old && strcmp(old, xa_self_host()) != 0) {
        xa_task_forget_host(old);
    }
    free(old);
}

/* --- start and the thread ----------------------------------------------*/

struct xa_error *
xa_pool_init(const struct xa_pool_config *cfg)
{
    struct xa_pool *p = &xa_pool_g;
    p->cfg = *cfg;
    p->state_dir = xa_strdup(cfg->state_dir);
    if (p->cfg.heartbeat <= 0) {
        p->cfg.heartbeat = 5;
    }
    if (p->cfg.live_timeout <= 0) {
        p->cfg.live_timeout = 30;
    }
    p->secret = read_file("ptoken");
    if (p->secret) {
        p->secret[strcspn(p->secret, "\r\n")] = '\0';
    }
    char *pins = read_file("pool-pins");
    for (char *save = NULL, *l = pins ? strtok_r(pins, "\n", &save) : NULL; l;
         l = strtok_r(NULL, "\n", &save)) {
        p->pins = xa_realloc(p->pins, (p->n_pins + 1) * sizeof *p->pins);
        p->pins[p->n_pins++] = xa_strdup(l);
    }
    free(pins);
    char *conf = read_file("pool.conf");
    if (conf && strncmp(conf, "slave:", 6) == 0) {
        char *addr = conf + 6;
        addr[strcspn(addr, " \r\n")] = '\0';
        p->role = XA_POOL_MEMBER;
        p->master_addr = xa_strdup(addr);
    } else {
        p->role = XA_POOL_MASTER;
    }
    free(conf);
    p->seq = (uint64_t)(xa_now() * 1e6); /* grows across restarts too */
    new_epoch(p->epoch);
    xa_pool_replica_init();
    if (p->role == XA_POOL_MEMBER) {
        xa_db_set_remote_commit(xa_pool_remote_commit, NULL);
        xa_log_info(LOG, "member of the pool of %s", p->master_addr);
    }
    return NULL;
}

struct xa_error *
xa_pool_member_self(char **ret_host_ref)
{
    *ret_host_ref = NULL;
    char *uuid = read_file("host-uuid");
    if (!uuid) {
        return xa_error_internal("pool member without %s/host-uuid",
                                 xa_pool_g.state_dir);
    }
    uuid[strcspn(uuid, " \r\n")] = '\0';
    struct xa_txn *t = xa_db_begin_read();
    *ret_host_ref = xa_db_ref_by_uuid(t, xa_schema_class("host"), uuid);
    xa_db_end(t);
    struct xa_error *err =
        *ret_host_ref
            ? NULL
            : xa_error_internal("host %s is not in the replica", uuid);
    free(uuid);
    return err;
}

static void *
pool_main(void *arg)
{
    XA_UNUSED(arg);
    double backoff = 0.1;
    for (;;) {
        pthread_mutex_lock(&xa_pool_g.lock);
        bool stop = xa_pool_g.stop;
        enum xa_pool_role role = xa_pool_g.role;
        pthread_mutex_unlock(&xa_pool_g.lock);
        if (stop) {
            break;
        }
        if (role == XA_POOL_MEMBER) {
            xa_pool_answer_due(); /* what was parked while master */
            if (xa_pool_replicate_once()) {
                backoff = 0.1;
                continue;
            }
            /* the master is away: try again, a little later each time */
            struct timespec ts;
            xa_pool_abstime(&ts, backoff);
            backoff = backoff * 2 > 2 ? 2 : backoff * 2;
            pthread_mutex_lock(&xa_pool_g.lock);
            if (!xa_pool_g.stop && xa_pool_g.role == XA_POOL_MEMBER) {
                pthread_cond_timedwait(&xa_pool_g.cond, &xa_pool_g.lock, &ts);
            }
            pthread_mutex_unlock(&xa_pool_g.lock);
            continue;
        }
        xa_pool_pump();
        xa_pool_liveness_check();
    }
    return NULL;
}

void
xa_pool_start(void)
{
    if (xa_pool_g.role == XA_POOL_MASTER) {
        ensure_own_certificate();
    }
    if (pthread_create(&xa_pool_g.thread, NULL, pool_main, NULL) == 0) {
        xa_pool_g.started = true;
    }
}

void
xa_pool_stop(void)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    xa_pool_g.stop = true;
    pthread_cond_broadcast(&xa_pool_g.cond);
    pthread_mutex_unlock(&xa_pool_g.lock);
    if (xa_pool_g.started) {
        pthread_join(xa_pool_g.thread, NULL);
        xa_pool_g.started = false;
    }
    xa_pool_answer_due(); /* every parked call, now */
    xa_pool_links_stop();
}

/* --- a fresh start after an eject ----------------------------------------*/

static void *
restart_main(void *arg)
{
    XA_UNUSED(arg);
    usleep(300 * 1000); /* let the answer to pool.leave go out */
    static const char *const files[] = {
        "xapi.db",   "xapi.db-wal",   "xapi.db-shm", "pool.conf",
        "pool-pins", "replica-state", "ptoken",      "host-uuid",
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(files); i++) {
        char *path = xa_asprintf("%s/%s", xa_pool_g.state_dir, files[i]);
        unlink(path);
        free(path);
    }
    xa_log_info(LOG, "ejected: restarting as a fresh host");
    /* Same pid, so a supervisor (or a test) keeps its handle; every
     * descriptor but stdio goes, listening sockets included. */
    syscall(SYS_close_range, 3U, ~0U, 0U);
    execv("/proc/self/exe", xa_pool_g.cfg.argv);
    _exit(1);
}

void
xa_pool_restart_fresh(void)
{
    pthread_t th;
    if (pthread_create(&th, NULL, restart_main, NULL) == 0) {
        pthread_detach(th);
    }
}

/* --- the member's refusal ----------------------------------------------*/

static bool
emergency_call(const struct xa_message_desc *m)
{
    static const char *const ok[] = {
        "pool.emergency_transition_to_master",
        "pool.emergency_reset_master",
        "host.emergency_ha_disable",
        "session.logout",
        "session.local_logout",
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(ok); i++) {
        if (strcmp(m->wire, ok[i]) == 0) {
            return true;
        }
    }
    return false;
}

struct xa_error *
xa_pool_check_call(const struct xa_call *call, const struct xa_message_desc *m)
{
    if (!xa_pool_is_member() || call->is_pool_session) {
        return NULL;
    }
    if (xa_session_is_local(call->session_ref) &&
        (emergency_call(m) || (m->roles & (1u << XA_ROLE_READ_ONLY)))) {
        return NULL; /* reads of the replica, and the emergency calls */
    }
    char *master = xa_pool_master_address();
    struct xa_error *e = xa_error_new("HOST_IS_SLAVE", 1, master ? master : "");
    free(master);
    return e;
}

void
xa_pool_abstime(struct timespec *ts, double secs)
{
    clock_gettime(CLOCK_REALTIME, ts);
    double ns = (double)ts->tv_nsec + secs * 1e9;
    ts->tv_sec += (time_t)(ns / 1e9);
    ts->tv_nsec = (long)(ns - (double)(time_t)(ns / 1e9) * 1e9);
}
