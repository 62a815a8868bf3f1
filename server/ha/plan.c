/* plan.c - the HA failover planner: can the protected VMs of any n failed
 * hosts be restarted in the memory the surviving hosts have free?
 *
 * A host's room is its host_metrics.memory_free; a VM needs its
 * memory_static_max.  For a set of failed hosts the VMs they ran are
 * packed first-fit, largest first, into the survivors' room (a heuristic,
 * as xapi's binpacker is).  n failures are tolerated when every set of n
 * hosts can fail; pools of more than 16 hosts check only the n hosts
 * carrying the most protected memory. */
#include <stdlib.h>
#include <string.h>

#include "api/vm.h"
#include "ha/ha.h"
#include "util.h"

#define MAX_ENUM_HOSTS 16

int
xa_ha_priority_rank(const char *priority)
{
    if (strcmp(priority, "restart") == 0) {
        return 0;
    }
    return strcmp(priority, "best-effort") == 0 ? 1 : 2;
}

int
xa_ha_plan_host_index(const struct xa_ha_plan *p, const char *ref)
{
    for (size_t i = 0; i < p->n_hosts; i++) {
        if (strcmp(p->hosts[i].ref, ref) == 0) {
            return (int)i;
        }
    }
    return -1;
}

int
xa_ha_plan_vm_index(const struct xa_ha_plan *p, const char *ref)
{
    for (size_t i = 0; i < p->n_vms; i++) {
        if (strcmp(p->vms[i].ref, ref) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static void
read_hosts(struct xa_txn *t, struct xa_ha_plan *p)
{
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    size_t n = hosts ? hosts->u.arr.n : 0;
    p->hosts = xa_calloc(n ? n : 1, sizeof *p->hosts);
    for (size_t i = 0; i < n; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        const char *hm =
            xa_api_str(t, &xa_cls_host, h, XA_F(xa_cls_host, "metrics"));
        p->hosts[i].ref = xa_strdup(h);
        p->hosts[i].free = xa_api_int(t, &xa_cls_host_metrics, hm,
                                      XA_F(xa_cls_host_metrics, "memory_free"));
    }
    p->n_hosts = n;
    xa_value_unref(hosts);
}

static int
vm_priority(struct xa_txn *t, const char *vm, const struct xa_value *prios)
{
    if (prios) {
        const char *s = xa_struct_get_str(prios, vm);
        return s ? xa_ha_priority_rank(s) : 2;
    }
    return xa_ha_priority_rank(
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "ha_restart_priority")));
}

void
xa_ha_plan_read(struct xa_txn *t, const struct xa_value *priorities,
                struct xa_ha_plan *p)
{
    memset(p, 0, sizeof *p);
    read_hosts(t, p);
    struct xa_value *vms = xa_db_get_all(t, &xa_cls_VM);
    size_t n = vms ? vms->u.arr.n : 0;
    p->vms = xa_calloc(n ? n : 1, sizeof *p->vms);
    for (size_t i = 0; i < n; i++) {
        const char *vm = vms->u.arr.items[i]->u.str.s;
        if (xa_api_bool(t, &xa_cls_VM, vm,
                        XA_F(xa_cls_VM, "is_control_domain")) ||
            xa_api_bool(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "is_a_template"))) {
            continue;
        }
        struct xa_ha_plan_vm *v = &p->vms[p->n_vms++];
        v->ref = xa_strdup(vm);
        v->memory =
            xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_static_max"));
        v->priority = vm_priority(t, vm, priorities);
        v->order = xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "order"));
        const char *ps =
            xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
        bool up = strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0;
        v->host = up ? xa_ha_plan_host_index(
                           p, xa_api_str(t, &xa_cls_VM, vm,
                                         XA_F(xa_cls_VM, "resident_on")))
                     : -1;
    }
    xa_value_unref(vms);
}

void
xa_ha_plan_free(struct xa_ha_plan *p)
{
    for (size_t i = 0; i < p->n_hosts; i++) {
        free(p->hosts[i].ref);
    }
    for (size_t i = 0; i < p->n_vms; i++) {
        free(p->vms[i].ref);
    }
    free(p->hosts);
    free(p->vms);
    memset(p, 0, sizeof *p);
}

static int
by_memory_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static bool
failed_bit(uint64_t failed, size_t i)
{
    return i < 64 && (failed >> i) & 1;
}

bool
xa_ha_plan_fits(const struct xa_ha_plan *p, uint64_t failed)
{
    int64_t *need = xa_calloc(p->n_vms + 1, sizeof *need);
    size_t n_need = 0;
    for (size_t i = 0; i < p->n_vms; i++) {
        const struct xa_ha_plan_vm *v = &p->vms[i];
        if (v->priority == 0 && v->host >= 0 &&
            failed_bit(failed, (size_t)v->host)) {
            need[n_need++] = v->memory;
        }
    }
    qsort(need, n_need, sizeof *need, by_memory_desc);
    int64_t *room = xa_calloc(p->n_hosts + 1, sizeof *room);
    for (size_t h = 0; h < p->n_hosts; h++) {
        room[h] = failed_bit(failed, h) ? -1 : p->hosts[h].free;
    }
    bool ok = true;
    for (size_t i = 0; i < n_need && ok; i++) {
        ok = false;
        for (size_t h = 0; h < p->n_hosts && !ok; h++) {
            if (room[h] >= need[i]) {
                room[h] -= need[i];
                ok = true;
            }
        }
    }
    free(need);
    free(room);
    return ok;
}

/* Protected memory per host, for the heaviest-n shortcut. */
static uint64_t
heaviest(const struct xa_ha_plan *p, int64_t n)
{
    int64_t *load = xa_calloc(p->n_hosts + 1, sizeof *load);
    for (size_t i = 0; i < p->n_vms; i++) {
        if (p->vms[i].priority == 0 && p->vms[i].host >= 0) {
            load[p->vms[i].host] += p->vms[i].memory;
        }
    }
    uint64_t set = 0;
    for (int64_t k = 0; k < n; k++) {
        size_t best = 0;
        int64_t best_load = -1;
        for (size_t h = 0; h < p->n_hosts && h < 64; h++) {
            if (!failed_bit(set, h) && load[h] > best_load) {
                best_load = load[h];
                best = h;
            }
        }
        set |= (uint64_t)1 << best;
    }
    free(load);
    return set;
}

bool
xa_ha_plan_exists(const struct xa_ha_plan *p, int64_t n)
{
    if (n <= 0) {
        return true;
    }
    if (n >= (int64_t)p->n_hosts) {
        return false;
    }
    if (p->n_hosts > MAX_ENUM_HOSTS) {
        return xa_ha_plan_fits(p, heaviest(p, n));
    }
    for (uint64_t set = 0; set < ((uint64_t)1 << p->n_hosts); set++) {
        if (__builtin_popcountll(set) == n && !xa_ha_plan_fits(p, set)) {
            return false;
        }
    }
    return true;
}

int64_t
xa_ha_plan_max_failures(const struct xa_ha_plan *p)
{
    int64_t n = 0;
    while (n + 1 < (int64_t)p->n_hosts && xa_ha_plan_exists(p, n + 1)) {
        n++;
    }
    return n;
}

/* --- checks and the pool's fields ----------------------------------------*/

struct xa_error *
xa_ha_check_plan(struct xa_txn *t, const char *vm, const char *host,
                 const char *priority)
{
    char *pool = xa_api_pool(t);
    if (!xa_api_bool(t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "ha_enabled")) ||
        xa_api_bool(t, &xa_cls_pool, pool,
                    XA_F(xa_cls_pool, "ha_allow_overcommit"))) {
        free(pool);
        return NULL;
    }
    int64_t ntol =
        xa_api_int(t, &xa_cls_pool, pool,
                   XA_F(xa_cls_pool, "ha_host_failures_to_tolerate"));
    free(pool);
    struct xa_ha_plan p;
    xa_ha_plan_read(t, NULL, &p);
    int i = xa_ha_plan_vm_index(&p, vm);
    bool before = xa_ha_plan_exists(&p, ntol);
    if (i >= 0) {
        struct xa_ha_plan_vm *v = &p.vms[i];
        if (priority) {
            v->priority = xa_ha_priority_rank(priority);
        }
        if (host) {
            v->host = xa_ha_plan_host_index(&p, host);
            if (v->host >= 0) {
                p.hosts[v->host].free -= v->memory;
            }
        }
    }
    /* an operation may not break a plan; one that was already broken
     * (overcommitted pool) is not made worse by it being refused */
    bool after = xa_ha_plan_exists(&p, ntol);
    xa_ha_plan_free(&p);
    return before && !after
               ? xa_error_new("HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN", 0)
               : NULL;
}

void
xa_ha_update_plan_fields(void)
{
    struct xa_txn *t = xa_db_begin_read();
    char *pref = xa_api_pool(t);
    if (!xa_api_bool(t, &xa_cls_pool, pref, XA_F(xa_cls_pool, "ha_enabled"))) {
        free(pref);
        xa_db_end(t);
        return;
    }
    int64_t ntol =
        xa_api_int(t, &xa_cls_pool, pref,
                   XA_F(xa_cls_pool, "ha_host_failures_to_tolerate"));
    int64_t had = xa_api_int(t, &xa_cls_pool, pref,
                             XA_F(xa_cls_pool, "ha_plan_exists_for"));
    bool was_over = xa_api_bool(t, &xa_cls_pool, pref,
                                XA_F(xa_cls_pool, "ha_overcommitted"));
    struct xa_ha_plan p;
    xa_ha_plan_read(t, NULL, &p);
    xa_db_end(t);
    int64_t max = xa_ha_plan_max_failures(&p);
    xa_ha_plan_free(&p);
    int64_t exists_for = max < ntol ? max : ntol;
    bool over = max < ntol;
    if (exists_for != had || over != was_over) {
        t = xa_db_begin_write();
        struct xa_error *err = xa_api_set(
            t, &xa_cls_pool, pref, XA_F(xa_cls_pool, "ha_plan_exists_for"),
            xa_int(exists_for));
        if (!err) {
            err = xa_api_set(t, &xa_cls_pool, pref,
                             XA_F(xa_cls_pool, "ha_overcommitted"),
                             xa_bool(over));
        }
        xa_error_free(xa_api_finish(t, err));
    }
    free(pref);
}

struct xa_error *
xa_ha_check_start(const struct xa_call *call, const char *vm, const char *host)
{
    const char *w = call->msg ? call->msg->wire : "";
    if (call->is_pool_session ||
        (strcmp(w, "VM.start") != 0 && strcmp(w, "VM.start_on") != 0 &&
         strcmp(w, "VM.resume_on") != 0)) {
        return NULL;
    }
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = xa_ha_check_plan(t, vm, host, NULL);
    xa_db_end(t);
    return err;
}
