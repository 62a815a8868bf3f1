/* forward.c - on the master: members' liveness, placement of VMs, and
 * running host-local work on the host that owns it.
 *
 * Liveness: every replication round of a member is a heartbeat; the
 * master keeps, per member, when it last heard from it (monotonic) and
 * the generation it acknowledged.  A member silent longer than the live
 * timeout gets host_metrics.live = false, and true again when it is
 * heard.  The last-heard times are what a fencing decision would read.
 *
 * Forwarding: a VM operation runs on the host where the VM resides (or,
 * for a start, the host placement picks), a device plug where its VM
 * resides, a PBD plug on its host.  The master first waits until that
 * member has acknowledged every write committed so far, so the member's
 * replica shows what the caller saw, then makes the same call there over
 * the pinned link with a pool session; the member's implementation runs
 * against its replica and writes back through the master. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/vm.h"
#include "hmap.h"
#include "log.h"
#include "pool/pool-internal.h"
#include "self.h"

#define LOG "pool"

struct member {
    double last_heard; /* monotonic; 0: not yet */
    uint64_t acked;    /* generation of this master's epoch it holds */
    bool acked_valid;
};

static struct xa_hmap members; /* host ref -> struct member; pool lock */
static bool members_init;
static double started_at;

static struct member *
member_get_locked(const char *host)
{
    if (!members_init) {
        xa_hmap_init(&members);
        members_init = true;
    }
    struct member *m = xa_hmap_get(&members, host);
    if (!m) {
        m = xa_calloc(1, sizeof *m);
        xa_hmap_put(&members, host, m);
    }
    return m;
}

void
xa_pool_heard_from(const char *host, const char *epoch, uint64_t since)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    struct member *m = member_get_locked(host);
    m->last_heard = xa_monotonic();
    m->acked_valid = strcmp(epoch, xa_pool_g.epoch) == 0;
    m->acked = since;
    pthread_cond_broadcast(&xa_pool_g.cond);
    pthread_mutex_unlock(&xa_pool_g.lock);
}

void
xa_pool_liveness_reset(void)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    if (members_init) {
        xa_hmap_clear(&members, free);
    }
    started_at = xa_monotonic();
    pthread_mutex_unlock(&xa_pool_g.lock);
}

bool
xa_pool_wait_member(const char *ref, uint64_t gen, double timeout)
{
    struct timespec ts;
    xa_pool_abstime(&ts, timeout);
    pthread_mutex_lock(&xa_pool_g.lock);
    bool ok = false;
    for (;;) {
        struct member *m = member_get_locked(ref);
        ok = m->acked_valid && m->acked >= gen;
        if (ok || pthread_cond_timedwait(&xa_pool_g.cond, &xa_pool_g.lock,
                                         &ts) != 0) {
            break;
        }
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
    return ok;
}

void
xa_pool_wait_live_members(uint64_t gen)
{
    double limit = xa_pool_g.cfg.live_timeout;
    struct timespec ts;
    xa_pool_abstime(&ts, limit);
    pthread_mutex_lock(&xa_pool_g.lock);
    for (;;) {
        double now = xa_monotonic();
        bool behind = false;
        if (members_init) {
            XA_HMAP_FOR_EACH (slot, &members) {
                struct member *m = slot->val;
                if (m->last_heard && now - m->last_heard <= limit &&
                    !(m->acked_valid && m->acked >= gen)) {
                    behind = true;
                    break;
                }
            }
        }
        if (!behind || xa_pool_g.stop ||
            pthread_cond_timedwait(&xa_pool_g.cond, &xa_pool_g.lock, &ts) !=
                0) {
            break;
        }
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
}

/* Whether 'host' answers: this host always; a member when heard within
 * the timeout (a member not heard since this master started gets the
 * timeout's grace). */
static bool
host_alive(const char *host)
{
    if (strcmp(host, xa_self_host()) == 0) {
        return true;
    }
    double now = xa_monotonic();
    pthread_mutex_lock(&xa_pool_g.lock);
    struct member *m = member_get_locked(host);
    double last = m->last_heard ? m->last_heard : started_at;
    bool alive = now - last <= xa_pool_g.cfg.live_timeout;
    pthread_mutex_unlock(&xa_pool_g.lock);
    return alive;
}

void
xa_pool_liveness_check(void)
{
    static double last_check;
    double now = xa_monotonic();
    if (now - last_check < 0.1) {
        return;
    }
    last_check = now;
    if (!started_at) {
        started_at = now;
    }
    const struct xa_class_desc *H = &xa_cls_host, *M = &xa_cls_host_metrics;
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *hosts = xa_db_get_all(t, H);
    xa_db_end(t);
    for (size_t i = 0; hosts && i < hosts->u.arr.n; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        bool alive = host_alive(h);
        t = xa_db_begin_read();
        char *hm = xa_strdup(xa_api_str(t, H, h, XA_F(xa_cls_host, "metrics")));
        bool recorded =
            xa_db_exists(t, M, hm) &&
            xa_api_bool(t, M, hm, XA_F(xa_cls_host_metrics, "live"));
        bool has_row = xa_db_exists(t, M, hm);
        xa_db_end(t);
        if (has_row && recorded != alive) {
            xa_log_info(LOG, "host %s is %s", h, alive ? "live" : "not live");
            t = xa_db_begin_write();
            struct xa_error *err = xa_api_set(
                t, M, hm, XA_F(xa_cls_host_metrics, "live"), xa_bool(alive));
            xa_error_free(xa_api_finish(t, err));
        }
        free(hm);
    }
    xa_value_unref(hosts);
}

/* --- placement -----------------------------------------------------------*/

bool
xa_pool_host_live(struct xa_txn *t, const char *host)
{
    if (!host_alive(host)) {
        return false;
    }
    const char *hm =
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "metrics"));
    return !xa_db_exists(t, &xa_cls_host_metrics, hm) ||
           xa_api_bool(t, &xa_cls_host_metrics, hm,
                       XA_F(xa_cls_host_metrics, "live"));
}

struct xa_error *
xa_pool_can_boot_here(const char *vm, const char *host)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = xa_vm_can_boot_here(t, vm, host);
    xa_db_end(t);
    return err;
}

/* The affinity host when it can boot the VM, else the host with the most
 * free memory that can; the first refusal when none can. */
struct xa_error *
xa_pool_place(const char *vm, char **ret_host)
{
    *ret_host = NULL;
    struct xa_txn *t = xa_db_begin_read();
    const char *aff =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "affinity"));
    struct xa_error *first = NULL;
    if (xa_db_exists(t, &xa_cls_host, aff)) {
        first = xa_vm_can_boot_here(t, vm, aff);
        if (!first) {
            *ret_host = xa_strdup(aff);
            xa_db_end(t);
            return NULL;
        }
    }
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    int64_t best_free = -1;
    for (size_t i = 0; hosts && i < hosts->u.arr.n; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        struct xa_error *e = xa_vm_can_boot_here(t, vm, h);
        if (e) {
            if (!first) {
                first = e;
            } else {
                xa_error_free(e);
            }
            continue;
        }
        const char *hm =
            xa_api_str(t, &xa_cls_host, h, XA_F(xa_cls_host, "metrics"));
        int64_t fr = xa_api_int(t, &xa_cls_host_metrics, hm,
                                XA_F(xa_cls_host_metrics, "memory_free"));
        if (fr > best_free) {
            best_free = fr;
            free(*ret_host);
            *ret_host = xa_strdup(h);
        }
    }
    xa_value_unref(hosts);
    xa_db_end(t);
    if (*ret_host) {
        xa_error_free(first);
        return NULL;
    }
    return first ? first : xa_error_new("NO_HOSTS_AVAILABLE", 0);
}

/* --- forwarding ----------------------------------------------------------*/

enum target {
    T_NONE,
    T_VM_RESIDENT,  /* arg 0 is a VM: where it runs */
    T_VBD_VM,       /* arg 0 is a VBD: where its VM runs */
    T_VIF_VM,       /* arg 0 is a VIF: where its VM runs */
    T_PBD_HOST,     /* arg 0 is a PBD: its host */
    T_ARG1_HOST,    /* arg 1 is the host (start_on, resume_on) */
    T_PLACE,        /* VM.start: placement decides */
    T_LOCAL_ANSWER, /* answered by the master's pool-wide view */
};

static const struct {
    const char *wire;
    enum target t;
} routes[] = {
    {"VM.start", T_PLACE},
    {"VM.start_on", T_ARG1_HOST},
    {"VM.resume_on", T_ARG1_HOST},
    {"VM.clean_shutdown", T_VM_RESIDENT},
    {"VM.hard_shutdown", T_VM_RESIDENT},
    {"VM.shutdown", T_VM_RESIDENT},
    {"VM.clean_reboot", T_VM_RESIDENT},
    {"VM.hard_reboot", T_VM_RESIDENT},
    {"VM.pause", T_VM_RESIDENT},
    {"VM.unpause", T_VM_RESIDENT},
    {"VM.suspend", T_VM_RESIDENT},
    {"VM.pool_migrate", T_VM_RESIDENT}, /* the source runs the migration */
    {"VBD.plug", T_VBD_VM},
    {"VBD.unplug", T_VBD_VM},
    {"VBD.unplug_force", T_VBD_VM},
    {"VBD.insert", T_VBD_VM},
    {"VBD.eject", T_VBD_VM},
    {"VIF.plug", T_VIF_VM},
    {"VIF.unplug", T_VIF_VM},
    {"VIF.unplug_force", T_VIF_VM},
    {"PBD.plug", T_PBD_HOST},
    {"PBD.unplug", T_PBD_HOST},
    {"VM.get_possible_hosts", T_LOCAL_ANSWER},
    {"VM.assert_can_boot_here", T_LOCAL_ANSWER},
};

static bool
is_pool(void)
{
    struct xa_txn *t = xa_db_begin_read();
    bool many = xa_db_count(t, &xa_cls_host) > 1;
    xa_db_end(t);
    return many;
}

static char *
resident_of(struct xa_txn *t, const char *vm)
{
    return xa_strdup(
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on")));
}

static struct xa_error *
answer_locally(const char *wire, struct xa_value *const *args,
               struct xa_value **ret)
{
    const char *vm = args[0]->u.str.s;
    if (strcmp(wire, "VM.assert_can_boot_here") == 0) {
        return xa_pool_can_boot_here(vm, args[1]->u.str.s);
    }
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    struct xa_value *out = xa_array();
    for (size_t i = 0; hosts && i < hosts->u.arr.n; i++) {
        struct xa_error *e =
            xa_vm_can_boot_here(t, vm, hosts->u.arr.items[i]->u.str.s);
        if (!e) {
            xa_array_append(out, xa_value_ref(hosts->u.arr.items[i]));
        }
        xa_error_free(e);
    }
    xa_value_unref(hosts);
    xa_db_end(t);
    *ret = out;
    return NULL;
}

struct xa_error *
xa_pool_forward(struct xa_call *call, struct xa_value *const *args,
                struct xa_value **ret, bool *handled)
{
    *handled = false;
    const struct xa_message_desc *m = call->msg;
    enum target tg = T_NONE;
    for (size_t i = 0; i < XA_ARRAY_SIZE(routes) && tg == T_NONE; i++) {
        if (strcmp(routes[i].wire, m->wire) == 0) {
            tg = routes[i].t;
        }
    }
    if (tg == T_NONE || xa_pool_role() != XA_POOL_MASTER || !is_pool()) {
        return NULL;
    }
    if (tg == T_LOCAL_ANSWER) {
        *handled = true;
        return answer_locally(m->wire, args, ret);
    }
    const char *method = m->wire;
    char *host = NULL;
    struct xa_error *err = NULL;
    struct xa_txn *t = xa_db_begin_read();
    const char *a0 = args[0]->u.str.s;
    switch (tg) {
    case T_VM_RESIDENT:
        host = resident_of(t, a0);
        break;
    case T_VBD_VM:
        host = resident_of(
            t, xa_api_str(t, &xa_cls_VBD, a0, XA_F(xa_cls_VBD, "VM")));
        break;
    case T_VIF_VM:
        host = resident_of(
            t, xa_api_str(t, &xa_cls_VIF, a0, XA_F(xa_cls_VIF, "VM")));
        break;
    case T_PBD_HOST:
        host =
            xa_strdup(xa_api_str(t, &xa_cls_PBD, a0, XA_F(xa_cls_PBD, "host")));
        break;
    case T_ARG1_HOST:
        host = xa_strdup(args[1]->u.str.s);
        break;
    default:
        break;
    }
    xa_db_end(t);
    if (tg == T_PLACE) {
        err = xa_pool_place(a0, &host);
        if (err) {
            *handled = true;
            return err;
        }
        method = "VM.start_on";
    }
    if (!host || strcmp(host, xa_self_host()) == 0 ||
        strcmp(host, "OpaqueRef:NULL") == 0) {
        if (host && tg == T_PLACE) {
            /* placed here: the local start_on does the rest */
            *handled = true;
            const struct xa_message_desc *so = xa_schema_message("VM.start_on");
            struct xa_value *a[4] = {args[0], xa_string(host), args[1],
                                     args[2]};
            const struct xa_message_desc *saved = call->msg;
            call->msg = so;
            err = so->fn(call, a, ret);
            call->msg = saved;
            xa_value_unref(a[1]);
        }
        free(host);
        return err;
    }
    *handled = true;
    t = xa_db_begin_read();
    char *addr = xa_strdup(
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "address")));
    xa_db_end(t);
    if (!host_alive(host)) {
        err = xa_error_new("HOST_OFFLINE", 1, host);
    } else if (!xa_pool_wait_member(host, xa_db_generation(), 5)) {
        err = xa_error_new("HOST_OFFLINE", 1, host);
    }
    if (!err) {
        struct xa_value *p = xa_array();
        if (tg == T_PLACE) {
            xa_array_append(p, xa_value_ref(args[0]));
            xa_array_append(p, xa_string(host));
            xa_array_append(p, xa_value_ref(args[1]));
            xa_array_append(p, xa_value_ref(args[2]));
        } else {
            for (size_t i = 0; i < m->n_params; i++) {
                xa_array_append(p, xa_value_ref(args[i]));
            }
        }
        xa_log_debug(LOG, "%s runs on %s", method, addr);
        err = xa_pool_link_call(addr, "calls", method, p, ret, false, 0);
        if (err && strncmp(err->code, "CLIENT_", 7) == 0) {
            xa_error_free(err);
            err = xa_error_new("CANNOT_CONTACT_HOST", 1, host);
        }
    }
    if (ret && *ret && m->result && m->result->kind == XA_T_VOID) {
        xa_value_unref(*ret);
        *ret = NULL;
    }
    free(addr);
    free(host);
    return err;
}
