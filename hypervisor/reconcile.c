/* reconcile.c - xa_hv_reconcile(): the database meets reality at start-up.
 *
 * After a restart (or a crash) the database may remember domains that no
 * longer exist (the simulator forgets everything; a real host may have
 * rebooted) and operations that were in flight.  The backend's list of
 * running domains is the truth for what runs; the database is the truth
 * for what VMs exist.  See hv.h for the rules. */
#include <stdlib.h>
#include <string.h>

#include "api/vm.h"
#include "hmap.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "pool/pool.h"
#include "self.h"

struct vm_list {
    struct xa_txn *t;
    char **refs;
    size_t n, cap;
};

static bool
collect(const char *ref, void *ctx)
{
    struct vm_list *l = ctx;
    if (xa_api_bool(l->t, &xa_cls_VM, ref,
                    XA_F(xa_cls_VM, "is_control_domain"))) {
        return true;
    }
    const char *on =
        xa_api_str(l->t, &xa_cls_VM, ref, XA_F(xa_cls_VM, "resident_on"));
    if (xa_db_exists(l->t, &xa_cls_host, on) &&
        strcmp(on, xa_self_host()) != 0) {
        return true; /* another host's VM: that host reconciles it */
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->refs = xa_realloc(l->refs, l->cap * sizeof *l->refs);
    }
    l->refs[l->n++] = xa_strdup(ref);
    return true;
}

/* Brings one VM in line with what the backend reports for it ('d' NULL:
 * no domain). */
static struct xa_error *
reconcile_vm(struct xa_txn *t, const char *vm,
             const struct xa_hv_domain_info *d, unsigned *halted,
             unsigned *adopted)
{
    struct xa_error *err = NULL;
    const struct xa_value *ops = xa_db_peek_field(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "current_operations"));
    if (ops && ops->kind == XA_STRUCT && ops->u.st.n > 0) {
        /* Whoever ran these died with the old process. */
        err = xa_api_set(t, &xa_cls_VM, vm,
                         XA_F(xa_cls_VM, "current_operations"), xa_struct());
    }
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool live = strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0;
    /* A member's replica may be older than the master's view (HA may
     * have restarted the VM elsewhere): the master resets those. */
    if (!err && !d && live && !xa_pool_is_member()) {
        err = xa_vm_force_state(t, vm, "Halted");
        (*halted)++;
    } else if (!err && d) {
        const char *want = d->state == XA_HV_PAUSED ? "Paused" : "Running";
        if (strcmp(ps, want) != 0) {
            err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"),
                             xa_string(want));
            (*adopted)++;
        }
        if (!err && xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "domid")) !=
                        d->domid) {
            err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "domid"),
                             xa_int(d->domid));
        }
        if (!err && strcmp(xa_api_str(t, &xa_cls_VM, vm,
                                      XA_F(xa_cls_VM, "resident_on")),
                           xa_self_host()) != 0) {
            err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on"),
                             xa_string(xa_self_host()));
        }
    }
    if (!err) {
        err = xa_vm_update_allowed(t, vm);
    }
    return err;
}

struct xa_error *
xa_hv_reconcile(void)
{
    struct xa_hv_domain_info *doms = NULL;
    size_t n_doms = 0;
    struct xa_error *err = xa_hv_list(&doms, &n_doms);
    if (err) {
        /* A backend that cannot list domains cannot be trusted to say
         * they are gone: leave power states alone. */
        xa_log_warn("hv", "cannot list domains (%s): not reconciling",
                    err->code);
        xa_error_free(err);
        doms = NULL;
        n_doms = 0;
    }
    bool listed = err == NULL;
    struct xa_hmap by_uuid = {0};
    for (size_t i = 0; i < n_doms; i++) {
        xa_hmap_put(&by_uuid, doms[i].uuid, &doms[i]);
    }
    struct xa_txn *t = xa_db_begin_write();
    struct vm_list l = {t, NULL, 0, 0};
    xa_db_foreach(t, &xa_cls_VM, collect, &l);
    unsigned halted = 0, adopted = 0;
    err = NULL;
    for (size_t i = 0; i < l.n && !err; i++) {
        const char *uuid =
            xa_api_str(t, &xa_cls_VM, l.refs[i], XA_F(xa_cls_VM, "uuid"));
        struct xa_hv_domain_info *d = xa_hmap_remove(&by_uuid, uuid);
        if (!listed) {
            err = xa_vm_update_allowed(t, l.refs[i]);
        } else {
            err = reconcile_vm(t, l.refs[i], d, &halted, &adopted);
        }
    }
    /* dom0's allowed operations too (they are all refused, but the field
     * must say so). */
    struct xa_value *all = err ? NULL : xa_db_get_all(t, &xa_cls_VM);
    for (size_t i = 0; all && i < all->u.arr.n && !err; i++) {
        const char *r = all->u.arr.items[i]->u.str.s;
        if (xa_api_bool(t, &xa_cls_VM, r,
                        XA_F(xa_cls_VM, "is_control_domain"))) {
            err = xa_vm_update_allowed(t, r);
        }
    }
    xa_value_unref(all);
    err = xa_api_finish(t, err);
    XA_HMAP_FOR_EACH (s, &by_uuid) {
        xa_log_warn("hv",
                    "domain %s (domid %lld) belongs to no VM; left "
                    "running",
                    s->key,
                    (long long)((struct xa_hv_domain_info *)s->val)->domid);
    }
    if (halted || adopted) {
        xa_log_info("hv",
                    "reconciled: %u VMs halted (domain gone), %u "
                    "updated from running domains",
                    halted, adopted);
    }
    xa_hmap_clear(&by_uuid, NULL);
    for (size_t i = 0; i < l.n; i++) {
        free(l.refs[i]);
    }
    free(l.refs);
    free(doms);
    if (!err) {
        xa_vm_refresh_host_memory();
    }
    return err;
}
