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
 * against its replica and writes back through the master.  An Async
 * call's task stays here (its outcome, task.cancel): the forwarded call
 * names it, and the member updates its progress and figures as it would
 * a task of its own. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/net-api.h"
#include "api/sr_api.h"
#include "api/vm.h"
#include "ha/ha.h"
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
        if (ok || xa_pool_g.stop ||
            pthread_cond_timedwait(&xa_pool_g.cond, &xa_pool_g.lock, &ts) !=
                0) {
            break;
        }
    }
    pthread_mutex_unlock(&xa_pool_g.lock);
    return ok;
}

bool
xa_pool_live_members_hold_locked(uint64_t gen)
{
    if (!members_init) {
        return true;
    }
    double limit = xa_pool_g.cfg.live_timeout;
    double now = xa_monotonic();
    XA_HMAP_FOR_EACH (slot, &members) {
        struct member *m = slot->val;
        if (m->last_heard && now - m->last_heard <= limit &&
            !(m->acked_valid && m->acked >= gen)) {
            return false;
        }
    }
    return true;
}

void
xa_pool_wait_live_members(uint64_t gen)
{
    struct timespec ts;
    xa_pool_abstime(&ts, xa_pool_g.cfg.live_timeout);
    pthread_mutex_lock(&xa_pool_g.lock);
    while (!xa_pool_live_members_hold_locked(gen) && !xa_pool_g.stop &&
           pthread_cond_timedwait(&xa_pool_g.cond, &xa_pool_g.lock, &ts) == 0) {
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
    if (now - last_check < 0.1 || xa_pool_role() != XA_POOL_MASTER) {
        return; /* a hand-over fences writes: none from here */
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

/* Memory promised to starts placed on a host but not yet running there
 * (its host_metrics do not show them yet), so that starts placed at the
 * same time spread instead of all picking the same emptiest host.
 * host ref -> int64_t bytes; pool lock. */
static struct xa_hmap reserved;
static bool reserved_init;

static int64_t
reserved_on_locked(const char *host)
{
    if (!reserved_init) {
        xa_hmap_init(&reserved);
        reserved_init = true;
    }
    int64_t *r = xa_hmap_get(&reserved, host);
    return r ? *r : 0;
}

static void
reserve(const char *host, int64_t bytes)
{
    pthread_mutex_lock(&xa_pool_g.lock);
    int64_t now = reserved_on_locked(host) + bytes;
    int64_t *r = xa_hmap_get(&reserved, host);
    if (!r) {
        r = xa_calloc(1, sizeof *r);
        xa_hmap_put(&reserved, host, r);
    }
    *r = now;
    pthread_mutex_unlock(&xa_pool_g.lock);
}

static int64_t
vm_memory(const char *vm)
{
    struct xa_txn *t = xa_db_begin_read();
    int64_t m =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_dynamic_max")) +
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_overhead"));
    xa_db_end(t);
    return m;
}

/* The affinity host when it can boot the VM, else the host with the most
 * free memory (less what starts in flight there will take) that can; the
 * first refusal when none can. */
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
        pthread_mutex_lock(&xa_pool_g.lock);
        fr -= reserved_on_locked(h);
        pthread_mutex_unlock(&xa_pool_g.lock);
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
    T_VM_RESIDENT, /* arg 0 is a VM: where it runs */
    T_VBD_VM,      /* arg 0 is a VBD: where its VM runs */
    T_VIF_VM,      /* arg 0 is a VIF: where its VM runs */
    T_PBD_HOST,    /* arg 0 is a PBD: its host */
    T_PIF_HOST,    /* arg 0 is a PIF: its host */
    T_ARG1_HOST,   /* arg 1 is the host (start_on, resume_on) */
    T_SR_HOST,     /* arg 0 is an SR: a host that has it attached */
    T_VDI_SR_HOST, /* arg 0 is a VDI: a host that has its SR */
    T_REC_SR_HOST, /* arg 0 is a record naming an SR (VDI.create) */
    T_VM_DISKS,    /* arg 0 is a VM: vm_disks_host (arg 2: an SR too) */
    T_VDI_COPY,    /* VDI.copy: a host that has both SRs */
    T_PLACE,       /* VM.start: placement decides */
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
    {"VM.migrate_send", T_VM_RESIDENT},
    {"VM.assert_can_migrate_sender", T_VM_RESIDENT},
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
    {"PIF.plug", T_PIF_HOST}, /* its bridge, address and DHCP client */
    {"PIF.unplug", T_PIF_HOST},
    {"PIF.reconfigure_ip", T_PIF_HOST},
    /* storage work runs where the SR is (a member's local SR there) */
    {"SR.scan", T_SR_HOST},
    {"SR.update", T_SR_HOST},
    {"VDI.update", T_VDI_SR_HOST},
    {"VDI.create", T_REC_SR_HOST},
    {"VDI.destroy", T_VDI_SR_HOST},
    {"VDI.resize", T_VDI_SR_HOST},
    {"VDI.clone", T_VDI_SR_HOST},
    {"VDI.snapshot", T_VDI_SR_HOST},
    {"VDI.copy", T_VDI_COPY},
    {"VM.clone", T_VM_DISKS},
    {"VM.snapshot", T_VM_DISKS},
    {"VM.copy", T_VM_DISKS},
    {"VM.revert", T_VM_DISKS},
};

static bool
is_pool(void)
{
    struct xa_txn *t = xa_db_begin_read();
    bool many = xa_db_count(t, &xa_cls_host) > 1;
    xa_db_end(t);
    return many;
}

/* Adds 'sr' to the set 'srs' unless it is no SR or there already. */
static void
add_sr(struct xa_txn *t, struct xa_value *srs, const char *sr)
{
    if (!sr || !xa_db_exists(t, &xa_cls_SR, sr)) {
        return;
    }
    for (size_t i = 0; i < srs->u.arr.n; i++) {
        if (strcmp(srs->u.arr.items[i]->u.str.s, sr) == 0) {
            return;
        }
    }
    xa_array_append(srs, xa_string(sr));
}

/* Where work on 'sr' runs (this host when 'sr' names no SR: the call
 * answers for itself). */
static char *
sr_host(struct xa_txn *t, const char *sr)
{
    struct xa_value *srs = xa_array();
    add_sr(t, srs, sr);
    char *host = xa_sr_host_for(t, srs);
    xa_value_unref(srs);
    return host;
}

/* The SRs of the VM's disks (its VBDs' VDIs), and 'extra' (may be NULL). */
static struct xa_value *
vm_srs(struct xa_txn *t, const char *vm, const char *extra)
{
    struct xa_value *srs = xa_array();
    struct xa_value *vbds =
        xa_api_refs_where(t, &xa_cls_VBD, XA_F(xa_cls_VBD, "VM"), vm);
    for (size_t i = 0; vbds && i < vbds->u.arr.n; i++) {
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, vbds->u.arr.items[i]->u.str.s,
                       XA_F(xa_cls_VBD, "VDI"));
        add_sr(t, srs, xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR")));
    }
    xa_value_unref(vbds);
    add_sr(t, srs, extra);
    return srs;
}

/* VM.clone/snapshot/copy/revert: a running VM's host does it (its
 * hypervisor holds the disks); a halted one's, a host that sees every SR
 * of its disks (and the copy's target SR). */
static char *
vm_disks_host(struct xa_txn *t, const char *vm, const char *extra_sr)
{
    const char *power =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    if (strcmp(power, "Running") == 0 || strcmp(power, "Paused") == 0) {
        return xa_strdup(
            xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on")));
    }
    struct xa_value *srs = vm_srs(t, vm, extra_sr);
    char *host = xa_sr_host_for(t, srs);
    xa_value_unref(srs);
    return host;
}

static char *
resident_of(struct xa_txn *t, const char *vm)
{
    return xa_strdup(
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on")));
}

/* A call forwarded to the member that owns the work. */
struct fwd_job {
    struct xa_pool_job job;
    struct xa_call *call; /* deferred; NULL when run in place */
    char *task;           /* the Async call's task, updated there; or NULL */
    char *host;
    char *method;
    struct xa_value *params;
    uint64_t gen; /* the member must hold it first */
    bool void_result;
    int64_t reserved; /* placement's promise on 'host', given back at the end */
};

static void
fwd_free(struct fwd_job *j)
{
    if (j->reserved) {
        reserve(j->host, -j->reserved);
    }
    free(j->task);
    free(j->host);
    free(j->method);
    xa_value_unref(j->params);
    free(j);
}

/* First waits until the member's replica shows what the caller saw (the
 * task's row included). */
static struct xa_error *
fwd_do(struct fwd_job *j, const char *addr, const char *kind,
       struct xa_value **ret)
{
    if (!xa_pool_wait_member(j->host, j->gen, 5)) {
        return xa_error_new("HOST_OFFLINE", 1, j->host);
    }
    struct xa_value *p = j->params;
    j->params = NULL;
    struct xa_error *err =
        xa_pool_link_forward(addr, kind, j->method, p, j->task, ret);
    if (err && strncmp(err->code, "CLIENT_", 7) == 0) {
        xa_log_warn(LOG, "%s on %s: %s", j->method, addr,
                    err->n_params > 1 ? err->params[1] : err->code);
        xa_error_free(err);
        err = xa_error_new("CANNOT_CONTACT_HOST", 1, j->host);
    }
    if (j->void_result && *ret) {
        xa_value_unref(*ret);
        *ret = NULL;
    }
    return err;
}

static void
fwd_run(struct xa_pool_job *job, const char *addr, const char *kind)
{
    struct fwd_job *j = (struct fwd_job *)job;
    struct xa_value *ret = NULL;
    struct xa_error *err = fwd_do(j, addr, kind, &ret);
    xa_call_finish(j->call, err, ret);
    fwd_free(j);
}

static void
fwd_cancel(struct xa_pool_job *job)
{
    struct fwd_job *j = (struct fwd_job *)job;
    xa_call_finish(j->call, xa_error_new("CANNOT_CONTACT_HOST", 1, j->host),
                   NULL);
    fwd_free(j);
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
    const char *method = m->wire;
    char *host = NULL;
    struct xa_error *err = NULL;
    struct xa_txn *t = xa_db_begin_read();
    const char *a0 = args[0]->kind == XA_STRING ? args[0]->u.str.s : "";
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
    case T_PIF_HOST:
        host =
            xa_strdup(xa_api_str(t, &xa_cls_PIF, a0, XA_F(xa_cls_PIF, "host")));
        break;
    case T_ARG1_HOST:
        host = xa_strdup(args[1]->u.str.s);
        break;
    case T_SR_HOST:
        host = sr_host(t, a0);
        break;
    case T_VDI_SR_HOST:
        host =
            sr_host(t, xa_api_str(t, &xa_cls_VDI, a0, XA_F(xa_cls_VDI, "SR")));
        break;
    case T_VM_DISKS:
        host = vm_disks_host(
            t, a0, strcmp(m->wire, "VM.copy") == 0 ? args[2]->u.str.s : NULL);
        break;
    case T_VDI_COPY: {
        struct xa_value *srs = xa_array();
        add_sr(t, srs, xa_api_str(t, &xa_cls_VDI, a0, XA_F(xa_cls_VDI, "SR")));
        add_sr(t, srs, args[1]->u.str.s);
        host = xa_sr_host_for(t, srs);
        xa_value_unref(srs);
        break;
    }
    case T_REC_SR_HOST: {
        const char *sr = xa_struct_get_str(args[0], "SR");
        host = sr ? sr_host(t, sr) : NULL;
        break;
    }
    default:
        break;
    }
    xa_db_end(t);
    int64_t promised = 0;
    if (tg == T_PLACE) {
        err = xa_pool_place(a0, &host);
        if (err) {
            *handled = true;
            return err;
        }
        method = "VM.start_on";
        promised = vm_memory(a0);
        reserve(host, promised);
    }
    if (host && (err = xa_ha_check_start(call, a0, host)) != NULL) {
        *handled = true; /* the HA failover plan refuses it */
        free(host);
        return err;
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
        if (promised) {
            reserve(host, -promised);
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
        if (promised) {
            reserve(host, -promised);
        }
        free(addr);
        free(host);
        return err;
    }
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
    struct fwd_job *j = xa_calloc(1, sizeof *j);
    j->job.run = fwd_run;
    j->job.cancel = fwd_cancel;
    j->task = call->task_ref ? xa_strdup(call->task_ref) : NULL;
    j->host = host;
    j->method = xa_strdup(method);
    j->params = p;
    j->gen = xa_db_generation();
    j->void_result = m->result && m->result->kind == XA_T_VOID;
    j->reserved = promised;
    xa_log_debug(LOG, "%s runs on %s", method, addr);
    if (xa_call_can_defer(call)) {
        /* the HTTP thread goes back to serving; a link thread answers */
        j->call = call;
        xa_call_defer(call);
        xa_pool_link_submit(addr, &j->job);
    } else {
        /* a task's worker thread: it may wait */
        err = fwd_do(j, addr, "calls", ret);
        fwd_free(j);
    }
    free(addr);
    return err;
}
