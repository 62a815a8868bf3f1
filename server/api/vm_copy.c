/* vm_copy.c - VMs made from VMs, and their end: create, provision,
 * clone, copy, snapshot, checkpoint, revert, destroy.
 *
 * A new VM made from another is a copy of its stored fields with a fresh
 * identity (uuid, mac_seed, metrics), no runtime state (Halted, no
 * domain, no operations) and its own disks: clone and snapshot use the
 * SR's fast copy, copy makes full copies (possibly into another SR).
 * CD drives keep pointing at the same medium.  VM.destroy removes the
 * VM's devices and metrics but keeps its disks, as in xapi. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/implicit.h"
#include "api/vm.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "self.h"
#include "xa-impl.h"

#define NULL_REF "OpaqueRef:NULL"

/* Fields a new VM never inherits: identity and runtime state. */
static bool
fresh_field(const char *name)
{
    static const char *const skip[] = {"uuid",
                                       "allowed_operations",
                                       "current_operations",
                                       "power_state",
                                       "resident_on",
                                       "scheduled_to_be_resident_on",
                                       "domid",
                                       "metrics",
                                       "guest_metrics",
                                       "is_control_domain",
                                       "suspend_VDI",
                                       "is_a_snapshot",
                                       "snapshot_of",
                                       "snapshot_time",
                                       "parent",
                                       "is_default_template",
                                       "transportable_snapshot_id",
                                       "snapshot_info",
                                       "snapshot_metadata",
                                       "blobs",
                                       "requires_reboot",
                                       "domarch",
                                       NULL};
    for (const char *const *s = skip; *s; s++) {
        if (strcmp(*s, name) == 0) {
            return true;
        }
    }
    return false;
}

/* Creates a VM row (with its VM_metrics) from 'rec' (taken): adds what
 * VM.create adds, forces a Halted runtime state, computes its
 * allowed_operations. */
static struct xa_error *
insert_vm(struct xa_txn *t, const char *ref, struct xa_value *rec)
{
    struct xa_value *oc = xa_struct_get(rec, "other_config");
    struct xa_value *noc = oc ? xa_value_copy(oc) : xa_struct();
    if (!xa_struct_get(noc, "mac_seed")) {
        char seed[37];
        xa_uuid_generate(seed);
        xa_struct_set(noc, "mac_seed", xa_string(seed));
    }
    xa_struct_set(rec, "other_config", noc);
    if (!xa_struct_get(rec, "power_state") ||
        strcmp(xa_struct_get_str(rec, "power_state"), "Suspended") != 0) {
        xa_struct_set(rec, "power_state", xa_string("Halted"));
    }
    xa_struct_set(rec, "domid", xa_int(-1));
    xa_struct_set(rec, "resident_on", xa_string(NULL_REF));
    xa_struct_set(rec, "current_operations", xa_struct());
    struct xa_error *err = xa_db_create(t, &xa_cls_VM, ref, rec);
    if (!err) {
        char *m = xa_vm_ensure_metrics(t, ref);
        free(m);
        err = xa_vm_update_allowed(t, ref);
    }
    return err;
}

/* VM.create: the generic create plus what xapi adds (mac_seed, metrics)
 * and xapi's checks of the memory and VCPU settings. */
static struct xa_error *
vm_create(struct xa_call *call, struct xa_value *const *args,
          struct xa_value **ret)
{
    XA_UNUSED(call);
    const struct xa_value *in = args[0];
    struct xa_value *rec = xa_struct();
    for (size_t i = 0; i < xa_cls_VM.n_fields; i++) {
        const struct xa_field_desc *f = &xa_cls_VM.fields[i];
        if (f->qual == XA_Q_RO_RUNTIME || f->is_inverse_set) {
            continue;
        }
        struct xa_value *v = xa_struct_get(in, f->name);
        if (!v && !f->dflt) {
            xa_value_unref(rec);
            return xa_error_internal("Field %s is required by VM.create",
                                     f->name);
        }
        if (v) {
            xa_struct_add(rec, f->name, xa_value_ref(v));
        }
    }
    struct xa_error *err =
        xa_vm_check_memory(xa_struct_get(rec, "memory_static_min")->u.i,
                           xa_struct_get(rec, "memory_dynamic_min")->u.i,
                           xa_struct_get(rec, "memory_dynamic_max")->u.i,
                           xa_struct_get(rec, "memory_static_max")->u.i);
    if (!err) {
        err = xa_vm_check_vcpus(xa_struct_get(rec, "VCPUs_max")->u.i,
                                xa_struct_get(rec, "VCPUs_at_startup")->u.i);
    }
    if (err) {
        xa_value_unref(rec);
        return err;
    }
    /* A VM made by a client is never a default template. */
    char *ref = xa_ref_new();
    struct xa_txn *t = xa_db_begin_write();
    err = xa_api_finish(t, insert_vm(t, ref, rec));
    if (err) {
        free(ref);
        return err;
    }
    *ret = xa_string_take(ref);
    return NULL;
}

/* --- destroy ------------------------------------------------------------- */

static struct xa_error *
destroy_related(struct xa_txn *t, const char *vm, const char *set_field,
                const struct xa_class_desc *cls)
{
    struct xa_value *refs =
        xa_db_get_field(t, &xa_cls_VM, vm, xa_api_field(&xa_cls_VM, set_field));
    struct xa_error *err = NULL;
    for (size_t i = 0; refs && i < refs->u.arr.n && !err; i++) {
        err = xa_db_destroy(t, cls, refs->u.arr.items[i]->u.str.s);
    }
    xa_value_unref(refs);
    return err;
}

static struct xa_error *
destroy_row_of(struct xa_txn *t, const char *vm, const char *field,
               const struct xa_class_desc *cls)
{
    const char *r =
        xa_api_str(t, &xa_cls_VM, vm, xa_api_field(&xa_cls_VM, field));
    if (!xa_db_exists(t, cls, r)) {
        return NULL;
    }
    char *ref = xa_strdup(r);
    struct xa_error *err = xa_db_destroy(t, cls, ref);
    free(ref);
    return err;
}

/* Removes a VM and what belongs only to it (not its disks). */
static struct xa_error *
remove_vm(struct xa_txn *t, const char *vm)
{
    struct xa_error *err = destroy_related(t, vm, "VBDs", &xa_cls_VBD);
    if (!err) {
        err = destroy_related(t, vm, "VIFs", &xa_cls_VIF);
    }
    if (!err) {
        err = destroy_related(t, vm, "consoles", &xa_cls_console);
    }
    if (!err) {
        err = destroy_row_of(t, vm, "metrics", &xa_cls_VM_metrics);
    }
    if (!err) {
        err = destroy_row_of(t, vm, "guest_metrics", &xa_cls_VM_guest_metrics);
    }
    if (!err) {
        err = xa_db_destroy(t, &xa_cls_VM, vm);
    }
    return err;
}

static struct xa_error *
vm_destroy(struct xa_call *call, struct xa_value *const *args,
           struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = NULL;
    const char *vm = args[0]->u.str.s;
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_vm_check_op(t, vm, "destroy", false);
    if (!err) {
        err = remove_vm(t, vm);
    }
    return xa_api_finish(t, err);
}

/* --- copies ------------------------------------------------------------ */

struct dup_device {
    char *old_vbd;
    char *vdi;     /* source disk, NULL for empty drives */
    bool is_cd;    /* media are shared, not copied */
    char *new_vdi; /* filled by the storage step */
};

struct dup_plan {
    struct xa_value *rec; /* the new VM's fields */
    struct dup_device *devs;
    size_t n_devs;
    struct xa_value *vifs; /* source VIF refs */
};

static void
plan_free(struct dup_plan *p)
{
    xa_value_unref(p->rec);
    for (size_t i = 0; i < p->n_devs; i++) {
        free(p->devs[i].old_vbd);
        free(p->devs[i].vdi);
        free(p->devs[i].new_vdi);
    }
    free(p->devs);
    xa_value_unref(p->vifs);
    memset(p, 0, sizeof *p);
}

/* Reads the source VM: its fields and which disks need copying. */
static void
plan_read(struct xa_txn *t, const char *vm, struct dup_plan *p)
{
    memset(p, 0, sizeof *p);
    p->rec = xa_struct();
    for (size_t i = 0; i < xa_cls_VM.n_fields; i++) {
        const struct xa_field_desc *f = &xa_cls_VM.fields[i];
        if (f->is_inverse_set || fresh_field(f->name)) {
            continue;
        }
        struct xa_value *v = xa_db_get_field(t, &xa_cls_VM, vm, (int)i);
        if (v) {
            xa_struct_add(p->rec, f->name, v);
        }
    }
    struct xa_value *oc = xa_struct_get(p->rec, "other_config");
    if (oc) {
        struct xa_value *noc = xa_value_copy(oc);
        xa_struct_remove(noc, "mac_seed"); /* a new VM gets new MACs */
        xa_struct_remove(noc, "default_template");
        xa_struct_set(p->rec, "other_config", noc);
    }
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    p->devs = xa_calloc(vbds ? vbds->u.arr.n + 1 : 1, sizeof *p->devs);
    for (size_t i = 0; vbds && i < vbds->u.arr.n; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        struct dup_device *d = &p->devs[p->n_devs++];
        d->old_vbd = xa_strdup(b);
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "VDI"));
        d->is_cd =
            strcmp(xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "type")),
                   "Disk") != 0;
        if (xa_db_exists(t, &xa_cls_VDI, vdi) &&
            !xa_api_bool(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "empty"))) {
            d->vdi = xa_strdup(vdi);
        }
    }
    xa_value_unref(vbds);
    p->vifs = xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs"));
}

/* Copies the disks (no transaction held).  On failure removes what it
 * made. */
static struct xa_error *
plan_copy_disks(struct dup_plan *p, const char *dest_sr, bool snapshot,
                const char *what)
{
    struct xa_error *err = NULL;
    for (size_t i = 0; i < p->n_devs && !err; i++) {
        struct dup_device *d = &p->devs[i];
        if (!d->vdi || d->is_cd) {
            continue;
        }
        err = xa_vdi_duplicate(d->vdi, dest_sr, snapshot, what, &d->new_vdi);
    }
    if (err) {
        for (size_t i = 0; i < p->n_devs; i++) {
            if (p->devs[i].new_vdi) {
                xa_error_free(xa_vdi_remove(p->devs[i].new_vdi));
                free(p->devs[i].new_vdi);
                p->devs[i].new_vdi = NULL;
            }
        }
    }
    return err;
}

/* Copies one row's stored fields except those named in 'skip'. */
static struct xa_value *
row_copy(struct xa_txn *t, const struct xa_class_desc *cls, const char *ref,
         const char *const *skip)
{
    struct xa_value *rec = xa_struct();
    for (size_t i = 0; i < cls->n_fields; i++) {
        const struct xa_field_desc *f = &cls->fields[i];
        bool skipped = f->is_inverse_set;
        for (const char *const *s = skip; *s && !skipped; s++) {
            skipped = strcmp(*s, f->name) == 0;
        }
        if (!skipped) {
            struct xa_value *v = xa_db_get_field(t, cls, ref, (int)i);
            if (v) {
                xa_struct_add(rec, f->name, v);
            }
        }
    }
    return rec;
}

/* Creates the new VM, its VBDs (on the copied disks) and VIFs. */
static struct xa_error *
plan_commit(struct xa_txn *t, struct dup_plan *p, const char *new_ref)
{
    struct xa_error *err = insert_vm(t, new_ref, xa_value_ref(p->rec));
    for (size_t i = 0; i < p->n_devs && !err; i++) {
        struct dup_device *d = &p->devs[i];
        if (!xa_db_exists(t, &xa_cls_VBD, d->old_vbd)) {
            continue;
        }
        static const char *const skip[] = {"uuid",
                                           "VM",
                                           "VDI",
                                           "device",
                                           "currently_attached",
                                           "allowed_operations",
                                           "current_operations",
                                           "metrics",
                                           NULL};
        struct xa_value *rec = row_copy(t, &xa_cls_VBD, d->old_vbd, skip);
        xa_struct_set(rec, "VM", xa_string(new_ref));
        const char *vdi = d->new_vdi ? d->new_vdi : d->vdi;
        xa_struct_set(rec, "VDI", xa_string(vdi ? vdi : NULL_REF));
        xa_struct_set(rec, "device", xa_string(""));
        xa_struct_set(rec, "currently_attached", xa_bool(false));
        char *ref = xa_ref_new();
        err = xa_db_create(t, &xa_cls_VBD, ref, rec);
        if (!err) {
            err = xa_vbd_update_allowed(t, ref);
        }
        free(ref);
    }
    const char *seed = NULL;
    if (!err) {
        seed = xa_api_map_get(t, &xa_cls_VM, new_ref,
                              XA_F(xa_cls_VM, "other_config"), "mac_seed");
    }
    for (size_t i = 0; !err && p->vifs && i < p->vifs->u.arr.n; i++) {
        const char *v = p->vifs->u.arr.items[i]->u.str.s;
        static const char *const skip[] = {"uuid",
                                           "VM",
                                           "currently_attached",
                                           "allowed_operations",
                                           "current_operations",
                                           "metrics",
                                           NULL};
        struct xa_value *rec = row_copy(t, &xa_cls_VIF, v, skip);
        xa_struct_set(rec, "VM", xa_string(new_ref));
        xa_struct_set(rec, "currently_attached", xa_bool(false));
        if (xa_api_bool(t, &xa_cls_VIF, v,
                        XA_F(xa_cls_VIF, "MAC_autogenerated"))) {
            xa_struct_set(
                rec, "MAC",
                xa_string_take(xa_vif_mac_from_seed(
                    seed ? seed : "", xa_api_str(t, &xa_cls_VIF, v,
                                                 XA_F(xa_cls_VIF, "device")))));
        }
        char *ref = xa_ref_new();
        err = xa_db_create(t, &xa_cls_VIF, ref, rec);
        if (!err) {
            err = xa_vif_update_allowed(t, ref);
        }
        free(ref);
    }
    return err;
}

enum dup_kind { DUP_CLONE, DUP_COPY, DUP_SNAPSHOT, DUP_CHECKPOINT };

static struct xa_error *
duplicate(struct xa_call *call, const char *vm, const char *new_name,
          const char *dest_sr, enum dup_kind kind, const char *op,
          struct xa_value **ret)
{
    char *task = NULL;
    struct xa_error *err = xa_vm_op_begin(call, vm, op, NULL, NULL, &task);
    if (err) {
        return err;
    }
    struct dup_plan p;
    struct xa_txn *t = xa_db_begin_read();
    plan_read(t, vm, &p);
    const char *power =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool live = strcmp(power, "Running") == 0 || strcmp(power, "Paused") == 0;
    char *old_suspend = xa_strdup(
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "suspend_VDI")));
    bool has_suspend = xa_db_exists(t, &xa_cls_VDI, old_suspend);
    char *old_parent =
        xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "parent")));
    int64_t mem =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_static_max"));
    char *sr = xa_sr_default(t);
    xa_db_end(t);

    bool snap = kind == DUP_SNAPSHOT || kind == DUP_CHECKPOINT;
    xa_struct_set(p.rec, "name_label", xa_string(new_name));
    if (kind == DUP_CLONE || kind == DUP_COPY) {
        xa_struct_set(p.rec, "parent", xa_string(vm));
    }
    char *image = NULL;
    err = plan_copy_disks(&p, kind == DUP_COPY ? dest_sr : NULL, snap,
                          call->msg->wire);
    if (!err && kind == DUP_CHECKPOINT && (live || has_suspend)) {
        /* The memory image: a copy of the suspend image, or for a live VM
         * a fresh one (the simulated domain's memory has no content). */
        if (has_suspend) {
            err = xa_vdi_duplicate(old_suspend, NULL, false, call->msg->wire,
                                   &image);
        } else if (sr) {
            err = xa_vdi_make(sr, "Suspend image", "", mem + (1 << 20),
                              "suspend", false, false, xa_struct(), &image);
        }
    }
    char *new_ref = NULL;
    if (!err) {
        char now[32];
        xa_datetime_now(now);
        if (snap) {
            xa_struct_set(p.rec, "is_a_snapshot", xa_bool(true));
            xa_struct_set(p.rec, "snapshot_of", xa_string(vm));
            xa_struct_set(p.rec, "snapshot_time", xa_datetime(now));
            xa_struct_set(p.rec, "is_a_template", xa_bool(true));
            xa_struct_set(p.rec, "parent", xa_string(old_parent));
        }
        if (image) {
            xa_struct_set(p.rec, "power_state", xa_string("Suspended"));
            xa_struct_set(p.rec, "suspend_VDI", xa_string(image));
        }
        new_ref = xa_ref_new();
        t = xa_db_begin_write();
        err = plan_commit(t, &p, new_ref);
        if (!err && snap && xa_db_exists(t, &xa_cls_VM, vm)) {
            /* The VM now descends from its newest snapshot. */
            err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "parent"),
                             xa_string(new_ref));
        }
        if (!err) {
            err = xa_vm_update_allowed(t, new_ref);
        }
        if (!err) {
            err = xa_vm_op_finish(t, vm, task);
        }
        err = xa_api_finish(t, err);
    }
    if (err) {
        for (size_t i = 0; i < p.n_devs; i++) {
            if (p.devs[i].new_vdi) {
                xa_error_free(xa_vdi_remove(p.devs[i].new_vdi));
            }
        }
        if (image) {
            xa_error_free(xa_vdi_remove(image));
        }
        xa_vm_op_cancel(vm, task);
        free(new_ref);
    } else {
        *ret = xa_string_take(new_ref);
    }
    plan_free(&p);
    free(image);
    free(old_suspend);
    free(old_parent);
    free(sr);
    free(task);
    return err;
}

struct xa_error *
xa_impl_VM_clone(struct xa_call *call, const char *vm, const char *new_name,
                 struct xa_value **ret)
{
    return duplicate(call, vm, new_name, NULL, DUP_CLONE, "clone", ret);
}

struct xa_error *
xa_impl_VM_copy(struct xa_call *call, const char *vm, const char *new_name,
                const char *sr, struct xa_value **ret)
{
    return duplicate(call, vm, new_name, strcmp(sr, NULL_REF) == 0 ? NULL : sr,
                     DUP_COPY, "copy", ret);
}

struct xa_error *
xa_impl_VM_snapshot(struct xa_call *call, const char *vm, const char *new_name,
                    const struct xa_value *ignore_vdis, struct xa_value **ret)
{
    XA_UNUSED(ignore_vdis);
    return duplicate(call, vm, new_name, NULL, DUP_SNAPSHOT, "snapshot", ret);
}

struct xa_error *
xa_impl_VM_snapshot_with_quiesce(struct xa_call *call, const char *vm,
                                 const char *new_name, struct xa_value **ret)
{
    return duplicate(call, vm, new_name, NULL, DUP_SNAPSHOT,
                     "snapshot_with_quiesce", ret);
}

struct xa_error *
xa_impl_VM_checkpoint(struct xa_call *call, const char *vm,
                      const char *new_name, struct xa_value **ret)
{
    return duplicate(call, vm, new_name, NULL, DUP_CHECKPOINT, "checkpoint",
                     ret);
}

/* --- revert -------------------------------------------------------------- */

/* The VM's own disks (not CDs), which a revert replaces. */
static struct xa_value *
own_disks(struct xa_txn *t, const char *vm)
{
    struct xa_value *out = xa_array();
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    for (size_t i = 0; vbds && i < vbds->u.arr.n; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "VDI"));
        if (strcmp(xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "type")),
                   "Disk") == 0 &&
            xa_db_exists(t, &xa_cls_VDI, vdi)) {
            xa_array_append(out, xa_string(vdi));
        }
    }
    xa_value_unref(vbds);
    return out;
}

struct xa_error *
xa_impl_VM_revert(struct xa_call *call, const char *snapshot)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_vm_check_op(t, snapshot, "revert", false);
    char *vm = NULL;
    if (!err) {
        vm = xa_strdup(xa_api_str(t, &xa_cls_VM, snapshot,
                                  XA_F(xa_cls_VM, "snapshot_of")));
        if (!xa_db_exists(t, &xa_cls_VM, vm)) {
            err = xa_error_new("VM_REVERT_FAILED", 2, vm, snapshot);
        }
    }
    xa_db_abort(t);
    if (err) {
        free(vm);
        return err;
    }
    /* A live VM is stopped first: its disks are about to be replaced. */
    t = xa_db_begin_read();
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool stop = strcmp(ps, "Halted") != 0;
    xa_db_end(t);
    if (stop) {
        err = xa_impl_VM_hard_shutdown(call, vm);
        if (err) {
            free(vm);
            return err;
        }
    }
    char *task = NULL;
    err = xa_vm_op_begin(call, vm, "revert", NULL, NULL, &task);
    if (err) {
        /* "revert" is checked on the snapshot; on the VM itself the
         * operation in progress is "reverting". */
        xa_error_free(err);
        err = xa_vm_op_begin(call, vm, "reverting", NULL, NULL, &task);
    }
    if (err) {
        free(vm);
        return err;
    }
    struct dup_plan p;
    t = xa_db_begin_read();
    plan_read(t, snapshot, &p);
    struct xa_value *old_disks = own_disks(t, vm);
    char *image = xa_strdup(
        xa_api_str(t, &xa_cls_VM, snapshot, XA_F(xa_cls_VM, "suspend_VDI")));
    bool has_image = xa_db_exists(t, &xa_cls_VDI, image);
    char *name =
        xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "name_label")));
    xa_db_end(t);
    err = plan_copy_disks(&p, NULL, false, call->msg->wire);
    char *new_image = NULL;
    if (!err && has_image) {
        err = xa_vdi_duplicate(image, NULL, false, call->msg->wire, &new_image);
    }
    if (!err) {
        t = xa_db_begin_write();
        /* Replace the VM's devices and settings with the snapshot's,
         * keeping its identity (uuid, name, snapshots, mac_seed). */
        err = destroy_related(t, vm, "VBDs", &xa_cls_VBD);
        if (!err) {
            err = destroy_related(t, vm, "VIFs", &xa_cls_VIF);
        }
        static const char *const keep[] = {
            "name_label",    "is_a_template", "is_a_snapshot", "snapshot_of",
            "snapshot_time", "parent",        "other_config",  NULL};
        for (size_t i = 0; !err && i < p.rec->u.st.n; i++) {
            const char *k = p.rec->u.st.m[i].key;
            bool kept = false;
            for (const char *const *s = keep; *s && !kept; s++) {
                kept = strcmp(*s, k) == 0;
            }
            int f = xa_schema_field_index(&xa_cls_VM, k);
            if (!kept && f >= 0) {
                err = xa_api_set(t, &xa_cls_VM, vm, f,
                                 xa_value_ref(p.rec->u.st.m[i].val));
            }
        }
        if (!err) {
            err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "parent"),
                             xa_string(snapshot));
        }
        /* Devices: reuse plan_commit's device part through a throw-away
         * VM id would change refs; create them directly instead. */
        for (size_t i = 0; !err && i < p.n_devs; i++) {
            struct dup_device *d = &p.devs[i];
            static const char *const skip[] = {"uuid",
                                               "VM",
                                               "VDI",
                                               "device",
                                               "currently_attached",
                                               "allowed_operations",
                                               "current_operations",
                                               "metrics",
                                               NULL};
            struct xa_value *rec = row_copy(t, &xa_cls_VBD, d->old_vbd, skip);
            const char *vdi = d->new_vdi ? d->new_vdi : d->vdi;
            xa_struct_set(rec, "VM", xa_string(vm));
            xa_struct_set(rec, "VDI", xa_string(vdi ? vdi : NULL_REF));
            xa_struct_set(rec, "device", xa_string(""));
            xa_struct_set(rec, "currently_attached", xa_bool(false));
            char *ref = xa_ref_new();
            err = xa_db_create(t, &xa_cls_VBD, ref, rec);
            free(ref);
        }
        for (size_t i = 0; !err && p.vifs && i < p.vifs->u.arr.n; i++) {
            static const char *const skip[] = {"uuid",
                                               "VM",
                                               "currently_attached",
                                               "allowed_operations",
                                               "current_operations",
                                               "metrics",
                                               NULL};
            struct xa_value *rec =
                row_copy(t, &xa_cls_VIF, p.vifs->u.arr.items[i]->u.str.s, skip);
            xa_struct_set(rec, "VM", xa_string(vm));
            xa_struct_set(rec, "currently_attached", xa_bool(false));
            char *ref = xa_ref_new();
            err = xa_db_create(t, &xa_cls_VIF, ref, rec);
            free(ref);
        }
        if (!err) {
            err = xa_vm_force_state(t, vm, new_image ? "Suspended" : "Halted");
        }
        if (!err) {
            err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "suspend_VDI"),
                             xa_string(new_image ? new_image : NULL_REF));
        }
        if (!err) {
            err = xa_vm_op_finish(t, vm, task);
        }
        err = xa_api_finish(t, err);
    }
    if (err) {
        for (size_t i = 0; i < p.n_devs; i++) {
            if (p.devs[i].new_vdi) {
                xa_error_free(xa_vdi_remove(p.devs[i].new_vdi));
            }
        }
        if (new_image) {
            xa_error_free(xa_vdi_remove(new_image));
        }
        xa_vm_op_cancel(vm, task);
    } else {
        /* The disks the VM had before are no longer anyone's. */
        for (size_t i = 0; i < old_disks->u.arr.n; i++) {
            xa_error_free(xa_vdi_remove(old_disks->u.arr.items[i]->u.str.s));
        }
        t = xa_db_begin_write();
        xa_error_free(xa_api_finish(t, xa_vm_update_allowed(t, vm)));
    }
    xa_value_unref(old_disks);
    plan_free(&p);
    free(image);
    free(new_image);
    free(name);
    free(task);
    free(vm);
    return err;
}

/* --- provision --------------------------------------------------------- */

/* One <disk .../> of other_config:disks. */
struct disk_spec {
    char device[16];
    int64_t size;
    char sr[64];
    bool bootable;
    char type[32];
};

/* Reads attribute 'name' of the element text [p, end) into 'out'. */
static bool
xml_attr(const char *p, const char *end, const char *name, char *out,
         size_t out_len)
{
    size_t nl = strlen(name);
    for (const char *s = p; s + nl + 2 < end; s++) {
        if ((s == p || s[-1] == ' ' || s[-1] == '\t' || s[-1] == '\n') &&
            strncmp(s, name, nl) == 0 && s[nl] == '=' &&
            (s[nl + 1] == '"' || s[nl + 1] == '\'')) {
            char q = s[nl + 1];
            const char *v = s + nl + 2;
            const char *ve = memchr(v, q, (size_t)(end - v));
            if (!ve) {
                return false;
            }
            size_t n = (size_t)(ve - v);
            if (n >= out_len) {
                n = out_len - 1;
            }
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
    }
    return false;
}

/* Parses the provision XML.  Returns the number of disks, -1 if bad. */
static int
parse_disks(const char *xml, struct disk_spec *out, int max)
{
    int n = 0;
    for (const char *p = strstr(xml, "<disk"); p; p = strstr(p + 1, "<disk")) {
        const char *end = strchr(p, '>');
        if (!end || n == max) {
            return -1;
        }
        struct disk_spec *d = &out[n];
        memset(d, 0, sizeof *d);
        char size[32] = "", boot[16] = "";
        if (!xml_attr(p, end, "device", d->device, sizeof d->device) ||
            !xml_attr(p, end, "size", size, sizeof size) ||
            !xa_parse_int64(size, &d->size) || d->size < 0) {
            return -1;
        }
        xml_attr(p, end, "sr", d->sr, sizeof d->sr);
        xml_attr(p, end, "bootable", boot, sizeof boot);
        d->bootable = strcmp(boot, "true") == 0;
        if (!xml_attr(p, end, "type", d->type, sizeof d->type)) {
            snprintf(d->type, sizeof d->type, "system");
        }
        n++;
    }
    return n;
}

#define MAX_PROVISION_DISKS 16

struct xa_error *
xa_impl_VM_provision(struct xa_call *call, const char *vm)
{
    char *task = NULL;
    struct xa_error *err =
        xa_vm_op_begin(call, vm, "provision", NULL, NULL, &task);
    if (err) {
        return err;
    }
    struct disk_spec specs[MAX_PROVISION_DISKS];
    char *srs[MAX_PROVISION_DISKS] = {0};
    char *vdis[MAX_PROVISION_DISKS] = {0};
    struct xa_txn *t = xa_db_begin_read();
    const char *xml = xa_api_map_get(t, &xa_cls_VM, vm,
                                     XA_F(xa_cls_VM, "other_config"), "disks");
    int n = xml ? parse_disks(xml, specs, MAX_PROVISION_DISKS) : 0;
    char *name =
        xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "name_label")));
    if (n < 0) {
        err = xa_error_new("INVALID_VALUE", 2, "other_config:disks", xml);
    }
    for (int i = 0; i < n && !err; i++) {
        char *r = specs[i].sr[0] ? xa_db_ref_by_uuid(t, &xa_cls_SR, specs[i].sr)
                                 : NULL;
        srs[i] = r ? r : xa_sr_default(t);
        if (!srs[i]) {
            err = xa_error_new("VM_REQUIRES_SR", 2, vm, NULL_REF);
        }
    }
    xa_db_end(t);
    for (int i = 0; i < n && !err; i++) {
        char *label = xa_asprintf("%s %s", name, specs[i].device);
        err = xa_vdi_make(srs[i], label, "Created by template provisioner",
                          specs[i].size, specs[i].type, false, false,
                          xa_struct(), &vdis[i]);
        free(label);
    }
    if (!err) {
        t = xa_db_begin_write();
        for (int i = 0; i < n && !err; i++) {
            struct xa_value *rec = xa_struct();
            xa_struct_set(rec, "VM", xa_string(vm));
            xa_struct_set(rec, "VDI", xa_string(vdis[i]));
            xa_struct_set(rec, "userdevice", xa_string(specs[i].device));
            xa_struct_set(rec, "bootable", xa_bool(specs[i].bootable));
            xa_struct_set(rec, "mode", xa_string("RW"));
            xa_struct_set(rec, "type", xa_string("Disk"));
            xa_struct_set(rec, "unpluggable", xa_bool(true));
            xa_struct_set(rec, "empty", xa_bool(false));
            xa_struct_set(rec, "other_config", xa_struct());
            xa_struct_set(rec, "qos_algorithm_type", xa_string(""));
            xa_struct_set(rec, "qos_algorithm_params", xa_struct());
            char *ref = xa_ref_new();
            err = xa_db_create(t, &xa_cls_VBD, ref, rec);
            if (!err) {
                err = xa_vbd_update_allowed(t, ref);
            }
            free(ref);
        }
        /* The disks now exist: the VM is an installed VM, no longer a
         * template to provision from. */
        if (!err) {
            err =
                xa_api_map_set(t, &xa_cls_VM, vm,
                               XA_F(xa_cls_VM, "other_config"), "disks", NULL);
        }
        if (!err) {
            err = xa_api_set(t, &xa_cls_VM, vm,
                             XA_F(xa_cls_VM, "is_a_template"), xa_bool(false));
        }
        if (!err) {
            err = xa_api_set(t, &xa_cls_VM, vm,
                             XA_F(xa_cls_VM, "is_default_template"),
                             xa_bool(false));
        }
        if (!err) {
            err = xa_vm_op_finish(t, vm, task);
        }
        err = xa_api_finish(t, err);
    }
    if (err) {
        for (int i = 0; i < n; i++) {
            if (vdis[i]) {
                xa_error_free(xa_vdi_remove(vdis[i]));
            }
        }
        xa_vm_op_cancel(vm, task);
    }
    for (int i = 0; i < MAX_PROVISION_DISKS; i++) {
        free(srs[i]);
        free(vdis[i]);
    }
    free(name);
    free(task);
    return err;
}

void
xa_vm_copy_init(void)
{
    xa_implicit_override("VM.create", vm_create);
    xa_implicit_override("VM.destroy", vm_destroy);
}
