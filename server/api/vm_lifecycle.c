/* vm_lifecycle.c - the VM state machine and the power operations.
 *
 * xapi decides whether an operation may run from the VM's power state,
 * the operations already in progress, whether it is a template, a
 * snapshot or the control domain, in a fixed order (xapi_vm_lifecycle.ml);
 * clients rely on the first error being the same one xapi raises, and on
 * allowed_operations listing exactly what would pass.  Both come from one
 * function here, xa_vm_check_op().
 *
 * Power operations call the hypervisor driver (hypervisor/hv.h) without
 * any transaction held: the operation is first recorded in
 * current_operations (which blocks conflicting operations), then the
 * driver runs, then the outcome is written; a driver failure puts the VM
 * back where it was and releases the memory it had reserved. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/implicit.h"
#include "api/vm.h"
#include "api/vm_migrate.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "network/net.h"
#include "self.h"
#include "timer.h"
#include "xa-impl.h"

#define NULL_REF "OpaqueRef:NULL"

/* Seconds a clean shutdown or reboot may take before it fails. */
#define CLEAN_TIMEOUT 1200.0

/* --- which power states each operation needs --------------------------- */

enum {
    S_HALTED = 1 << 0,
    S_PAUSED = 1 << 1,
    S_RUNNING = 1 << 2,
    S_SUSPENDED = 1 << 3,
};

struct op_states {
    const char *op;
    /* xapi's lists, in xapi's order (it matters: it is the "expected"
     * parameter of VM_BAD_POWER_STATE). */
    const char *order;
};

static const struct op_states op_table[] = {
    {"import", ""},
    {"changing_VCPUs", "H"},
    {"changing_static_range", "H"},
    {"changing_memory_limits", "H"},
    {"changing_shadow_memory", "H"},
    {"make_into_template", "H"},
    {"provision", "H"},
    {"start", "H"},
    {"start_on", "H"},
    {"create_vtpm", "H"},
    {"unpause", "P"},
    {"csvm", "S"},
    {"resume", "S"},
    {"resume_on", "S"},
    {"awaiting_memory_live", "R"},
    {"call_plugin", "R"},
    {"clean_reboot", "R"},
    {"clean_shutdown", "R"},
    {"changing_memory_live", "R"},
    {"changing_shadow_memory_live", "R"},
    {"changing_VCPUs_live", "R"},
    {"data_source_op", "R"},
    {"pause", "R"},
    {"pool_migrate", "R"},
    {"send_sysrq", "R"},
    {"send_trigger", "R"},
    {"suspend", "R"},
    {"changing_dynamic_range", "HR"},
    {"clone", "H"},
    {"copy", "H"},
    {"create_template", "HS"},
    {"destroy", "HS"},
    {"export", "HS"},
    {"hard_reboot", "PR"},
    {"checkpoint", "PSR"},
    {"get_boot_record", "PSR"},
    {"shutdown", "PSR"},
    {"hard_shutdown", "PSR"},
    {"migrate_send", "HSR"},
    {"assert_operation_valid", "HPSR"},
    {"metadata_export", "HPSR"},
    {"power_state_reset", "HPSR"},
    {"revert", "HPSR"},
    {"reverting", "HPSR"},
    /* snapshot_with_quiesce is a plain snapshot here: guests have no
     * quiescing agent (xapi removed VSS support too). */
    {"snapshot", "HPSR"},
    {"snapshot_with_quiesce", "HPSR"},
    {"update_allowed_operations", "HPSR"},
    {"query_services", "HPSR"},
};

static const char *
state_lower(char c)
{
    switch (c) {
    case 'H':
        return "halted";
    case 'P':
        return "paused";
    case 'R':
        return "running";
    default:
        return "suspended";
    }
}

static char
state_letter(const char *power_state)
{
    return power_state[0] == 'H'   ? 'H'
           : power_state[0] == 'P' ? 'P'
           : power_state[0] == 'R' ? 'R'
                                   : 'S';
}

/* The ordered state letters 'op' allows on this VM. */
static void
allowed_states(struct xa_txn *t, const char *vm, const char *op, char out[8])
{
    out[0] = '\0';
    for (size_t i = 0; i < XA_ARRAY_SIZE(op_table); i++) {
        if (strcmp(op_table[i].op, op) == 0) {
            snprintf(out, 8, "%s", op_table[i].order);
            break;
        }
    }
    bool ctrl =
        xa_api_bool(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "is_control_domain"));
    if (ctrl && (strcmp(op, "changing_VCPUs") == 0 ||
                 strcmp(op, "changing_static_range") == 0 ||
                 strcmp(op, "changing_memory_limits") == 0)) {
        snprintf(out, 8, "HR");
    }
    if ((strcmp(op, "clone") == 0 || strcmp(op, "copy") == 0) &&
        xa_api_bool(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "is_a_snapshot"))) {
        snprintf(out, 8, "HS");
    }
}

static bool
in_list(const char *op, const char *const *list)
{
    for (; *list; list++) {
        if (strcmp(*list, op) == 0) {
            return true;
        }
    }
    return false;
}

/* xapi's is_allowed_concurrently: a few families of operations may
 * overlap; everything else waits for the VM to be idle. */
static bool
allowed_concurrently(const char *op, const struct xa_value *current)
{
    static const char *const long_copies[] = {"clone", "copy", "export", NULL};
    static const char *const snapshots[] = {"snapshot", "checkpoint", NULL};
    static const char *const boot_record[] = {"get_boot_record", NULL};
    const char *const *families[] = {long_copies, snapshots, boot_record};
    for (size_t f = 0; f < XA_ARRAY_SIZE(families); f++) {
        if (!in_list(op, families[f])) {
            continue;
        }
        bool all = true;
        for (size_t i = 0; i < current->u.st.n; i++) {
            const char *c = xa_value_str(current->u.st.m[i].val);
            all = all && c && in_list(c, families[f]);
        }
        if (all) {
            return true;
        }
    }
    bool has_hard_shutdown = false, has_hard_reboot = false;
    for (size_t i = 0; i < current->u.st.n; i++) {
        const char *c = xa_value_str(current->u.st.m[i].val);
        has_hard_shutdown |= c && strcmp(c, "hard_shutdown") == 0;
        has_hard_reboot |= c && strcmp(c, "hard_reboot") == 0;
    }
    if (strcmp(op, "hard_shutdown") == 0) {
        return !has_hard_shutdown;
    }
    if (strcmp(op, "hard_reboot") == 0) {
        return !has_hard_shutdown && !has_hard_reboot;
    }
    if (current->u.st.n == 1) {
        const char *c = xa_value_str(current->u.st.m[0].val);
        static const char *const after_migrate[] = {
            "metadata_export", "clean_shutdown", "clean_reboot",
            "start",           "start_on",       NULL};
        if (c && strcmp(c, "snapshot_with_quiesce") == 0 &&
            strcmp(op, "snapshot") == 0) {
            return true;
        }
        if (c && strcmp(c, "migrate_send") == 0 && in_list(op, after_migrate)) {
            return true;
        }
    }
    return false;
}

static bool
is_default_template(struct xa_txn *t, const char *vm)
{
    if (xa_api_bool(t, &xa_cls_VM, vm,
                    XA_F(xa_cls_VM, "is_default_template"))) {
        return true;
    }
    const char *v = xa_api_map_get(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "other_config"), "default_template");
    return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* Whether the running guest can be asked for 'feature' (xapi's
 * check_op_for_feature): PV guests and guests with PV drivers can do
 * everything; other HVM guests only what their agent advertises. */
static bool
guest_has(struct xa_txn *t, const char *vm, const char *feature)
{
    const char *gm =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "guest_metrics"));
    if (!xa_db_exists(t, &xa_cls_VM_guest_metrics, gm)) {
        return false;
    }
    if (xa_api_bool(t, &xa_cls_VM_guest_metrics, gm,
                    XA_F(xa_cls_VM_guest_metrics, "PV_drivers_detected"))) {
        return true;
    }
    const char *v =
        xa_api_map_get(t, &xa_cls_VM_guest_metrics, gm,
                       XA_F(xa_cls_VM_guest_metrics, "other"), feature);
    return v && strcmp(v, "1") == 0;
}

static struct xa_error *
feature_check(struct xa_txn *t, const char *vm, const char *op, bool strict,
              const char *power)
{
    if (strcmp(power, "Running") != 0) {
        return NULL;
    }
    const char *metrics =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "metrics"));
    if (xa_db_exists(t, &xa_cls_VM_metrics, metrics) &&
        !xa_api_bool(t, &xa_cls_VM_metrics, metrics,
                     XA_F(xa_cls_VM_metrics, "hvm"))) {
        return NULL; /* PV guests support everything */
    }
    bool lacks = false;
    if (strict && strcmp(op, "clean_shutdown") == 0) {
        lacks = !guest_has(t, vm, "feature-shutdown") &&
                !guest_has(t, vm, "feature-poweroff");
    } else if (strict && strcmp(op, "clean_reboot") == 0) {
        lacks = !guest_has(t, vm, "feature-shutdown") &&
                !guest_has(t, vm, "feature-reboot");
    } else if (strcmp(op, "changing_VCPUs_live") == 0) {
        lacks = !guest_has(t, vm, "feature-vcpu-hotplug");
    } else if (strict &&
               (strcmp(op, "suspend") == 0 || strcmp(op, "checkpoint") == 0 ||
                strcmp(op, "pool_migrate") == 0 ||
                strcmp(op, "migrate_send") == 0)) {
        lacks = !guest_has(t, vm, "feature-suspend");
    }
    return lacks ? xa_error_new("VM_LACKS_FEATURE", 1, vm) : NULL;
}

struct xa_error *
xa_vm_check_op(struct xa_txn *t, const char *vm, const char *op, bool strict)
{
    if (!xa_db_exists(t, &xa_cls_VM, vm)) {
        return xa_error_handle_invalid("VM", vm);
    }
    /* 1. blocked by the user */
    const char *reason = xa_api_map_get(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "blocked_operations"), op);
    if (reason) {
        return xa_error_new("OPERATION_BLOCKED", 2, vm, reason);
    }
    /* 2. power state */
    const char *power =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    char states[8];
    allowed_states(t, vm, op, states);
    if (!strchr(states, state_letter(power)) || !*power) {
        struct xa_buf b = {0};
        for (const char *s = states; *s; s++) {
            xa_buf_printf(&b, "%s%s", s == states ? "" : ", ", state_lower(*s));
        }
        char *expected = xa_buf_steal(&b);
        struct xa_error *e = xa_error_new("VM_BAD_POWER_STATE", 3, vm, expected,
                                          state_lower(state_letter(power)));
        free(expected);
        return e;
    }
    /* 3. other operations in progress */
    const struct xa_value *cur = xa_db_peek_field(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "current_operations"));
    if (cur && cur->kind == XA_STRUCT && cur->u.st.n > 0 &&
        !allowed_concurrently(op, cur)) {
        return xa_error_new("OTHER_OPERATION_IN_PROGRESS", 4, "VM", vm,
                            xa_value_str(cur->u.st.m[0].val),
                            cur->u.st.m[0].key);
    }
    /* 4. templates and snapshots */
    bool tmpl =
        xa_api_bool(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "is_a_template"));
    bool snap =
        xa_api_bool(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "is_a_snapshot"));
    if (tmpl && !snap) {
        static const char *const ok[] = {"changing_dynamic_range",
                                         "changing_static_range",
                                         "changing_memory_limits",
                                         "changing_shadow_memory",
                                         "changing_VCPUs",
                                         "clone",
                                         "copy",
                                         "export",
                                         "metadata_export",
                                         "provision",
                                         NULL};
        bool allowed =
            in_list(op, ok) ||
            ((strcmp(op, "destroy") == 0 || strcmp(op, "migrate_send") == 0) &&
             !is_default_template(t, vm));
        if (!allowed) {
            return xa_error_new("VM_IS_TEMPLATE", 2, vm, op);
        }
    }
    if (snap) {
        static const char *const ok[] = {
            "revert",        "clone",           "copy", "export", "destroy",
            "hard_shutdown", "metadata_export", NULL};
        if (!in_list(op, ok)) {
            return xa_error_new("VM_IS_SNAPSHOT", 2, vm, op);
        }
    }
    if (strcmp(op, "provision") == 0 && !tmpl) {
        return xa_error_new("ONLY_PROVISION_TEMPLATE", 0);
    }
    if (strcmp(op, "revert") == 0 && !snap) {
        return xa_error_new("ONLY_REVERT_SNAPSHOT", 0);
    }
    /* 5. the control domain */
    if (xa_api_bool(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "is_control_domain"))) {
        bool dom0 =
            xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "domid")) == 0;
        static const char *const ok[] = {"data_source_op",
                                         "changing_memory_live",
                                         "awaiting_memory_live",
                                         "metadata_export",
                                         "changing_dynamic_range",
                                         "changing_memory_limits",
                                         "changing_static_range",
                                         "start",
                                         "start_on",
                                         "changing_VCPUs",
                                         "destroy",
                                         NULL};
        if (dom0 &&
            (strcmp(op, "changing_VCPUs") == 0 || strcmp(op, "destroy") == 0)) {
            return xa_error_new("OPERATION_NOT_ALLOWED", 1,
                                "This operation is not allowed on dom0");
        }
        if (!in_list(op, ok)) {
            return xa_error_new(
                "OPERATION_NOT_ALLOWED", 1,
                "This operation is not allowed on a control domain");
        }
    }
    /* 6. guest features */
    return feature_check(t, vm, op, strict, power);
}

struct xa_error *
xa_vm_update_allowed(struct xa_txn *t, const char *vm)
{
    /* xapi's candidate list; it builds the result by consing, so the set
     * comes out in the reverse order. */
    static const char *const candidates[] = {"snapshot",
                                             "copy",
                                             "clone",
                                             "revert",
                                             "checkpoint",
                                             "snapshot_with_quiesce",
                                             "start",
                                             "start_on",
                                             "pause",
                                             "unpause",
                                             "clean_shutdown",
                                             "clean_reboot",
                                             "hard_shutdown",
                                             "hard_reboot",
                                             "suspend",
                                             "resume",
                                             "resume_on",
                                             "export",
                                             "destroy",
                                             "provision",
                                             "changing_VCPUs_live",
                                             "pool_migrate",
                                             "migrate_send",
                                             "make_into_template",
                                             "changing_static_range",
                                             "changing_shadow_memory",
                                             "changing_dynamic_range"};
    struct xa_value *ops = xa_array();
    for (size_t i = XA_ARRAY_SIZE(candidates); i-- > 0;) {
        struct xa_error *e = xa_vm_check_op(t, vm, candidates[i], true);
        if (e) {
            xa_error_free(e);
        } else {
            xa_array_append(ops, xa_string(candidates[i]));
        }
    }
    const struct xa_value *old = xa_db_peek_field(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "allowed_operations"));
    if (old && xa_value_equal(old, ops)) {
        xa_value_unref(ops); /* no change, no event */
        return NULL;
    }
    return xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "allowed_operations"),
                      ops);
}

/* --- operation bookkeeping -------------------------------------------- */

struct xa_error *
xa_vm_op_begin(struct xa_call *call, const char *vm, const char *op,
               struct xa_error *(*extra)(struct xa_txn *t, const char *vm,
                                         void *ctx),
               void *ctx, char **task)
{
    char *ref =
        call && call->task_ref ? xa_strdup(call->task_ref) : xa_ref_new();
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_vm_check_op(t, vm, op, false);
    if (!err && extra) {
        err = extra(t, vm, ctx);
    }
    if (!err) {
        err = xa_api_map_set(t, &xa_cls_VM, vm,
                             XA_F(xa_cls_VM, "current_operations"), ref,
                             xa_string(op));
    }
    if (!err) {
        err = xa_vm_update_allowed(t, vm);
    }
    if (err) {
        xa_db_abort(t);
        free(ref);
        return err;
    }
    /* The marker need not reach the disk before the work starts: start-up
     * clears stale operations, and the outcome's commit (which waits)
     * makes it durable along with itself. */
    xa_db_commit_nowait(t);
    *task = ref;
    return NULL;
}

struct xa_error *
xa_vm_op_finish(struct xa_txn *t, const char *vm, const char *task)
{
    if (!xa_db_exists(t, &xa_cls_VM, vm)) {
        return NULL; /* destroyed meanwhile: nothing to forget */
    }
    struct xa_error *err = xa_api_map_set(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "current_operations"), task, NULL);
    return err ? err : xa_vm_update_allowed(t, vm);
}

void
xa_vm_op_cancel(const char *vm, const char *task)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_api_finish(t, xa_vm_op_finish(t, vm, task));
    if (err) {
        xa_log_err("vm", "cannot clear operation %s of %s: %s", task, vm,
                   err->code);
        xa_error_free(err);
    }
}

/* --- memory ------------------------------------------------------------ */

/* Memory promised to starts and resumes whose domains the driver has not
 * built yet; admission subtracts it so two concurrent starts cannot both
 * take the last free gigabyte. */
static int64_t reserved;

static const char *
self_metrics(struct xa_txn *t)
{
    return xa_api_str(t, &xa_cls_host, xa_self_host(),
                      XA_F(xa_cls_host, "metrics"));
}

struct host_mem {
    bool ok;
    int64_t total, free_bytes;
};

static struct host_mem
host_mem_read(void)
{
    struct host_mem m = {false, 0, 0};
    struct xa_error *err = xa_hv_host_memory(&m.total, &m.free_bytes);
    if (err) {
        xa_error_free(err);
    } else {
        m.ok = true;
    }
    return m;
}

static struct xa_error *
host_mem_apply(struct xa_txn *t, const struct host_mem *m)
{
    const char *hm = self_metrics(t);
    if (!m->ok || !xa_db_exists(t, &xa_cls_host_metrics, hm)) {
        return NULL;
    }
    char *ref = xa_strdup(hm);
    struct xa_error *err = NULL;
    if (xa_api_int(t, &xa_cls_host_metrics, ref,
                   XA_F(xa_cls_host_metrics, "memory_total")) != m->total) {
        err = xa_api_set(t, &xa_cls_host_metrics, ref,
                         XA_F(xa_cls_host_metrics, "memory_total"),
                         xa_int(m->total));
    }
    if (!err &&
        xa_api_int(t, &xa_cls_host_metrics, ref,
                   XA_F(xa_cls_host_metrics, "memory_free")) != m->free_bytes) {
        err = xa_api_set(t, &xa_cls_host_metrics, ref,
                         XA_F(xa_cls_host_metrics, "memory_free"),
                         xa_int(m->free_bytes));
    }
    free(ref);
    return err;
}

void
xa_vm_refresh_host_memory(void)
{
    struct host_mem m = host_mem_read();
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_api_finish(t, host_mem_apply(t, &m));
    xa_error_free(err);
}

/* What a domain of this VM needs: its target (dynamic_max) plus the
 * virtualisation overhead. */
static int64_t
vm_needed_memory(struct xa_txn *t, const char *vm)
{
    return xa_api_int(t, &xa_cls_VM, vm,
                      XA_F(xa_cls_VM, "memory_dynamic_max")) +
           xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_overhead"));
}

struct admit {
    const char *host; /* where it will run */
    int64_t needed;   /* set by admit_memory */
};

/* Runs in xa_vm_op_begin's transaction: the host check and the memory
 * admission of start / resume. */
static struct xa_error *
admit_memory(struct xa_txn *t, const char *vm, void *ctx)
{
    struct admit *a = ctx;
    if (strcmp(a->host, xa_self_host()) != 0) {
        /* Only this host runs domains until pools arrive. */
        return xa_error_new("HOST_OFFLINE", 1, a->host);
    }
    if (!xa_api_bool(t, &xa_cls_host, a->host, XA_F(xa_cls_host, "enabled"))) {
        return xa_error_new("HOST_DISABLED", 1, a->host);
    }
    const char *hm = self_metrics(t);
    int64_t free_bytes = xa_api_int(t, &xa_cls_host_metrics, hm,
                                    XA_F(xa_cls_host_metrics, "memory_free"));
    int64_t avail = free_bytes - __atomic_load_n(&reserved, __ATOMIC_SEQ_CST);
    int64_t needed = vm_needed_memory(t, vm);
    if (needed > avail) {
        char n[32], v[32];
        snprintf(n, sizeof n, "%" PRId64, needed);
        snprintf(v, sizeof v, "%" PRId64, avail < 0 ? 0 : avail);
        return xa_error_new("HOST_NOT_ENOUGH_FREE_MEMORY", 2, n, v);
    }
    __atomic_add_fetch(&reserved, needed, __ATOMIC_SEQ_CST);
    a->needed = needed;
    return xa_api_set(t, &xa_cls_VM, vm,
                      XA_F(xa_cls_VM, "scheduled_to_be_resident_on"),
                      xa_string(a->host));
}

static void
release_memory(struct admit *a)
{
    __atomic_sub_fetch(&reserved, a->needed, __ATOMIC_SEQ_CST);
    a->needed = 0;
}

/* --- domain configuration --------------------------------------------- */

/* A domain configuration with the storage it owns. */
struct dom_cfg {
    struct xa_hv_domain_config c;
    char *uuid, *name, *kernel, *ramdisk, *cmdline, *order;
    struct xa_hv_disk *disks;
    struct xa_hv_nic *nics;
    char **owned; /* strings the disks and nics point into */
    size_t n_owned;
    const char **platform; /* pairs pointing into 'owned' */
};

static const char *
keep(struct dom_cfg *d, char *s)
{
    d->owned = xa_realloc(d->owned, (d->n_owned + 1) * sizeof *d->owned);
    d->owned[d->n_owned++] = s;
    return s;
}

static void
dom_cfg_free(struct dom_cfg *d)
{
    free(d->uuid);
    free(d->name);
    free(d->kernel);
    free(d->ramdisk);
    free(d->cmdline);
    free(d->order);
    free(d->disks);
    free(d->nics);
    free(d->platform);
    for (size_t i = 0; i < d->n_owned; i++) {
        free(d->owned[i]);
    }
    free(d->owned);
    memset(d, 0, sizeof *d);
}

/* Reads what the driver needs to build the VM's domain.  Opens its own
 * read transactions and attaches each VDI through its SR's backend. */
static struct xa_error *
dom_cfg_read(const char *vm, struct dom_cfg *d)
{
    memset(d, 0, sizeof *d);
    struct xa_txn *t = xa_db_begin_read();
    const struct xa_class_desc *V = &xa_cls_VM;
    d->uuid = xa_strdup(xa_api_str(t, V, vm, XA_F(xa_cls_VM, "uuid")));
    d->name = xa_strdup(xa_api_str(t, V, vm, XA_F(xa_cls_VM, "name_label")));
    d->kernel = xa_strdup(xa_api_str(t, V, vm, XA_F(xa_cls_VM, "PV_kernel")));
    d->ramdisk = xa_strdup(xa_api_str(t, V, vm, XA_F(xa_cls_VM, "PV_ramdisk")));
    d->cmdline = xa_strdup(xa_api_str(t, V, vm, XA_F(xa_cls_VM, "PV_args")));
    const char *order =
        xa_api_map_get(t, V, vm, XA_F(xa_cls_VM, "HVM_boot_params"), "order");
    d->order = xa_strdup(order ? order : "cd");
    d->c.uuid = d->uuid;
    d->c.name_label = d->name;
    d->c.hvm = *xa_api_str(t, V, vm, XA_F(xa_cls_VM, "HVM_boot_policy")) != 0;
    d->c.memory_static_max =
        xa_api_int(t, V, vm, XA_F(xa_cls_VM, "memory_static_max"));
    d->c.memory_target = vm_needed_memory(t, vm);
    d->c.vcpus_max = xa_api_int(t, V, vm, XA_F(xa_cls_VM, "VCPUs_max"));
    d->c.vcpus_at_startup =
        xa_api_int(t, V, vm, XA_F(xa_cls_VM, "VCPUs_at_startup"));
    d->c.kernel = d->kernel;
    d->c.ramdisk = d->ramdisk;
    d->c.cmdline = d->cmdline;
    d->c.boot_order = d->order;

    struct xa_value *vbds = xa_db_get_field(t, V, vm, XA_F(xa_cls_VM, "VBDs"));
    struct xa_value *vifs = xa_db_get_field(t, V, vm, XA_F(xa_cls_VM, "VIFs"));
    size_t nv = vbds ? vbds->u.arr.n : 0, nn = vifs ? vifs->u.arr.n : 0;
    d->disks = xa_calloc(nv + 1, sizeof *d->disks);
    d->nics = xa_calloc(nn + 1, sizeof *d->nics);
    char **vdis = xa_calloc(nv + 1, sizeof *vdis);
    bool *ro = xa_calloc(nv + 1, sizeof *ro);
    for (size_t i = 0; i < nv; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        const struct xa_class_desc *B = &xa_cls_VBD;
        struct xa_hv_disk *k = &d->disks[d->c.n_disks++];
        k->device = keep(
            d, xa_strdup(xa_api_str(t, B, b, XA_F(xa_cls_VBD, "userdevice"))));
        k->cdrom =
            strcmp(xa_api_str(t, B, b, XA_F(xa_cls_VBD, "type")), "CD") == 0;
        k->read_only =
            strcmp(xa_api_str(t, B, b, XA_F(xa_cls_VBD, "mode")), "RO") == 0;
        k->bootable = xa_api_bool(t, B, b, XA_F(xa_cls_VBD, "bootable"));
        const char *vdi = xa_api_str(t, B, b, XA_F(xa_cls_VBD, "VDI"));
        if (!xa_api_bool(t, B, b, XA_F(xa_cls_VBD, "empty")) &&
            xa_db_exists(t, &xa_cls_VDI, vdi)) {
            vdis[i] = xa_strdup(vdi);
            ro[i] = k->read_only;
        }
    }
    for (size_t i = 0; i < nn; i++) {
        const char *v = vifs->u.arr.items[i]->u.str.s;
        const struct xa_class_desc *F = &xa_cls_VIF;
        struct xa_hv_nic *n = &d->nics[d->c.n_nics++];
        n->device =
            keep(d, xa_strdup(xa_api_str(t, F, v, XA_F(xa_cls_VIF, "device"))));
        n->mac =
            keep(d, xa_strdup(xa_api_str(t, F, v, XA_F(xa_cls_VIF, "MAC"))));
        n->mtu = xa_api_int(t, F, v, XA_F(xa_cls_VIF, "MTU"));
        const char *net = xa_api_str(t, F, v, XA_F(xa_cls_VIF, "network"));
        n->bridge =
            keep(d, xa_strdup(xa_api_str(t, &xa_cls_network, net,
                                         XA_F(xa_cls_network, "bridge"))));
    }
    /* Backend knobs (platform:accel, platform:machine for kvm). */
    const struct xa_value *plat =
        xa_db_peek_field(t, V, vm, XA_F(xa_cls_VM, "platform"));
    if (plat && plat->kind == XA_STRUCT && plat->u.st.n > 0) {
        d->platform = xa_calloc(2 * plat->u.st.n + 1, sizeof *d->platform);
        size_t k = 0;
        for (size_t i = 0; i < plat->u.st.n; i++) {
            const char *val = xa_value_str(plat->u.st.m[i].val);
            if (val) {
                d->platform[k++] = keep(d, xa_strdup(plat->u.st.m[i].key));
                d->platform[k++] = keep(d, xa_strdup(val));
            }
        }
        d->c.platform = d->platform;
    }
    xa_db_end(t);
    xa_value_unref(vbds);
    xa_value_unref(vifs);
    d->c.disks = d->disks;
    d->c.nics = d->nics;
    struct xa_error *err = NULL;
    for (size_t i = 0; i < nv; i++) {
        if (vdis[i] && !err) {
            char *path = NULL, *format = NULL;
            err = xa_vdi_attach_path(vdis[i], ro[i], &path, &format);
            if (!err) {
                d->disks[i].path = keep(d, path);
                d->disks[i].format = keep(d, format);
            }
        }
        free(vdis[i]);
    }
    free(vdis);
    free(ro);
    return err;
}

/* --- recording outcomes ----------------------------------------------- */

char *
xa_vm_ensure_metrics(struct xa_txn *t, const char *vm)
{
    const char *m = xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "metrics"));
    if (xa_db_exists(t, &xa_cls_VM_metrics, m)) {
        return xa_strdup(m);
    }
    char now[32];
    xa_datetime_now(now);
    char *ref = xa_ref_new();
    struct xa_value *rec = xa_struct();
    xa_struct_add(rec, "memory_actual", xa_int(0));
    xa_struct_add(rec, "VCPUs_number", xa_int(0));
    xa_struct_add(rec, "VCPUs_CPU", xa_struct());
    xa_struct_add(rec, "VCPUs_params", xa_struct());
    xa_struct_add(rec, "VCPUs_flags", xa_struct());
    xa_struct_add(rec, "state", xa_array());
    xa_struct_add(rec, "start_time", xa_datetime("19700101T00:00:00Z"));
    xa_struct_add(rec, "install_time", xa_datetime(now));
    xa_struct_add(rec, "last_updated", xa_datetime(now));
    struct xa_error *err = xa_db_create(t, &xa_cls_VM_metrics, ref, rec);
    if (!err) {
        err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "metrics"),
                         xa_string(ref));
    }
    if (err) {
        xa_log_err("vm", "cannot create VM_metrics for %s: %s", vm, err->code);
        xa_error_free(err);
        free(ref);
        return NULL;
    }
    return ref;
}

/* VM_metrics of a domain that just started or rebooted. */
static struct xa_error *
metrics_running(struct xa_txn *t, const char *vm, bool rebooted)
{
    char *m = xa_vm_ensure_metrics(t, vm);
    if (!m) {
        return NULL;
    }
    char now[32];
    xa_datetime_now(now);
    bool hvm =
        *xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "HVM_boot_policy")) != 0;
    int64_t vcpus =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VCPUs_at_startup"));
    struct xa_value *cpu = xa_struct(), *util = xa_struct();
    for (int64_t i = 0; i < vcpus && i < 64; i++) {
        char k[24];
        snprintf(k, sizeof k, "%" PRId64, i);
        xa_struct_add(cpu, k, xa_int(i));
        xa_struct_add(util, k, xa_double(0.0));
    }
    const struct xa_class_desc *M = &xa_cls_VM_metrics;
    struct xa_error *err =
        xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "memory_actual"),
                   xa_int(xa_api_int(t, &xa_cls_VM, vm,
                                     XA_F(xa_cls_VM, "memory_dynamic_max"))));
    if (!err) {
        err = xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "VCPUs_number"),
                         xa_int(vcpus));
    }
    if (!err) {
        err = xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "VCPUs_CPU"), cpu);
        cpu = NULL;
    }
    if (!err) {
        err = xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "VCPUs_utilisation"),
                         util);
        util = NULL;
    }
    if (!err) {
        err = xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "VCPUs_params"),
                         xa_db_get_field(t, &xa_cls_VM, vm,
                                         XA_F(xa_cls_VM, "VCPUs_params")));
    }
    if (!err && !rebooted) {
        err = xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "hvm"), xa_bool(hvm));
    }
    if (!err) {
        err =
            xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "current_domain_type"),
                       xa_string(hvm ? "hvm" : "pv"));
    }
    if (!err) {
        err = xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "start_time"),
                         xa_datetime(now));
    }
    if (!err) {
        err = xa_api_set(t, M, m, XA_F(xa_cls_VM_metrics, "last_updated"),
                         xa_datetime(now));
    }
    xa_value_unref(cpu);
    xa_value_unref(util);
    free(m);
    return err;
}

static struct xa_error *
metrics_halted(struct xa_txn *t, const char *vm)
{
    const char *m = xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "metrics"));
    if (!xa_db_exists(t, &xa_cls_VM_metrics, m)) {
        return NULL;
    }
    char *ref = xa_strdup(m);
    char now[32];
    xa_datetime_now(now);
    const struct xa_class_desc *M = &xa_cls_VM_metrics;
    struct xa_error *err = xa_api_set(
        t, M, ref, XA_F(xa_cls_VM_metrics, "memory_actual"), xa_int(0));
    if (!err) {
        err = xa_api_set(t, M, ref, XA_F(xa_cls_VM_metrics, "VCPUs_number"),
                         xa_int(0));
    }
    if (!err) {
        err = xa_api_set(t, M, ref, XA_F(xa_cls_VM_metrics, "VCPUs_CPU"),
                         xa_struct());
    }
    if (!err) {
        err =
            xa_api_set(t, M, ref, XA_F(xa_cls_VM_metrics, "VCPUs_utilisation"),
                       xa_struct());
    }
    if (!err) {
        err = xa_api_set(t, M, ref,
                         XA_F(xa_cls_VM_metrics, "current_domain_type"),
                         xa_string("unspecified"));
    }
    if (!err) {
        err = xa_api_set(t, M, ref, XA_F(xa_cls_VM_metrics, "last_updated"),
                         xa_datetime(now));
    }
    free(ref);
    return err;
}

static struct xa_value *
map_of(char **kv)
{
    struct xa_value *m = xa_struct();
    for (char **p = kv; p && p[0] && p[1]; p += 2) {
        xa_struct_set(m, p[0], xa_string(p[1]));
    }
    return m;
}

/* Writes the guest agent's report into the VM's VM_guest_metrics. */
static struct xa_error *
guest_metrics_write(struct xa_txn *t, const char *vm,
                    const struct xa_hv_guest_info *g)
{
    char now[32];
    xa_datetime_now(now);
    const char *cur =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "guest_metrics"));
    const struct xa_class_desc *G = &xa_cls_VM_guest_metrics;
    if (!xa_db_exists(t, G, cur)) {
        char *ref = xa_ref_new();
        struct xa_value *rec = xa_struct();
        xa_struct_add(rec, "os_version", map_of(g->os_version));
        xa_struct_add(rec, "PV_drivers_version", map_of(g->pv_drivers_version));
        xa_struct_add(rec, "PV_drivers_up_to_date", xa_bool(true));
        xa_struct_add(rec, "PV_drivers_detected", xa_bool(true));
        xa_struct_add(rec, "networks", map_of(g->networks));
        xa_struct_add(rec, "other", map_of(g->other));
        xa_struct_add(rec, "live", xa_bool(true));
        xa_struct_add(rec, "can_use_hotplug_vbd", xa_string("yes"));
        xa_struct_add(rec, "can_use_hotplug_vif", xa_string("yes"));
        xa_struct_add(rec, "last_updated", xa_datetime(now));
        struct xa_error *err = xa_db_create(t, G, ref, rec);
        if (!err) {
            err = xa_api_set(t, &xa_cls_VM, vm,
                             XA_F(xa_cls_VM, "guest_metrics"), xa_string(ref));
        }
        free(ref);
        return err;
    }
    char *ref = xa_strdup(cur);
    struct xa_error *err =
        xa_api_set(t, G, ref, XA_F(xa_cls_VM_guest_metrics, "networks"),
                   map_of(g->networks));
    if (!err) {
        err = xa_api_set(t, G, ref, XA_F(xa_cls_VM_guest_metrics, "os_version"),
                         map_of(g->os_version));
    }
    if (!err) {
        err = xa_api_set(t, G, ref, XA_F(xa_cls_VM_guest_metrics, "live"),
                         xa_bool(true));
    }
    if (!err) {
        err =
            xa_api_set(t, G, ref, XA_F(xa_cls_VM_guest_metrics, "last_updated"),
                       xa_datetime(now));
    }
    free(ref);
    return err;
}

static struct xa_error *
guest_metrics_remove(struct xa_txn *t, const char *vm)
{
    const char *gm =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "guest_metrics"));
    if (!xa_db_exists(t, &xa_cls_VM_guest_metrics, gm)) {
        return NULL;
    }
    char *ref = xa_strdup(gm);
    struct xa_error *err = xa_db_destroy(t, &xa_cls_VM_guest_metrics, ref);
    free(ref);
    if (!err) {
        err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "guest_metrics"),
                         xa_string(NULL_REF));
    }
    return err;
}

struct guest_retry {
    char *vm;
    int attempts;
};

static void
guest_retry_fire(void *ctx)
{
    struct guest_retry *r = ctx;
    xa_vm_refresh_guest_metrics(r->vm, r->attempts);
    free(r->vm);
    free(r);
}

void
xa_vm_refresh_guest_metrics(const char *vm, int attempts)
{
    char *uuid = NULL;
    struct xa_txn *t = xa_db_begin_read();
    const char *power =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    if (strcmp(power, "Running") == 0) {
        uuid =
            xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
    }
    xa_db_end(t);
    if (!uuid) {
        return;
    }
    struct xa_hv_guest_info g;
    struct xa_error *err = xa_hv_guest_info(uuid, &g);
    free(uuid);
    if (err) {
        xa_error_free(err);
        return;
    }
    if (!g.present) {
        if (attempts > 0) {
            struct guest_retry *r = xa_malloc(sizeof *r);
            r->vm = xa_strdup(vm);
            r->attempts = attempts - 1;
            xa_timer_after(0.2, guest_retry_fire, r);
        }
        return;
    }
    t = xa_db_begin_write();
    err = NULL;
    if (xa_db_exists(t, &xa_cls_VM, vm) &&
        strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state")),
               "Running") == 0) {
        err = guest_metrics_write(t, vm, &g);
        if (!err) {
            err = xa_vm_update_allowed(t, vm);
        }
    }
    err = xa_api_finish(t, err);
    xa_error_free(err);
    xa_hv_guest_info_free(&g);
}

struct xa_error *
xa_vm_force_state(struct xa_txn *t, const char *vm, const char *power_state)
{
    const struct xa_class_desc *V = &xa_cls_VM;
    struct xa_error *err = xa_api_set(t, V, vm, XA_F(xa_cls_VM, "power_state"),
                                      xa_string(power_state));
    if (!err) {
        err = xa_api_set(t, V, vm, XA_F(xa_cls_VM, "resident_on"),
                         xa_string(NULL_REF));
    }
    if (!err) {
        err =
            xa_api_set(t, V, vm, XA_F(xa_cls_VM, "scheduled_to_be_resident_on"),
                       xa_string(NULL_REF));
    }
    if (!err) {
        err = xa_api_set(t, V, vm, XA_F(xa_cls_VM, "domid"), xa_int(-1));
    }
    if (!err) {
        err = xa_vm_devices_attached(t, vm, false);
    }
    if (!err) {
        err = xa_console_destroy_for(t, vm);
    }
    if (!err) {
        err = guest_metrics_remove(t, vm);
    }
    if (!err) {
        err = metrics_halted(t, vm);
    }
    if (!err && strcmp(power_state, "Halted") == 0) {
        err = xa_api_set(t, V, vm, XA_F(xa_cls_VM, "requires_reboot"),
                         xa_bool(false));
    }
    return err;
}

/* Records a domain that now runs (or is paused) on this host. */
static struct xa_error *
record_live(struct xa_txn *t, const char *vm, int64_t domid, bool paused,
            const struct xa_hv_guest_info *g, bool rebooted)
{
    const struct xa_class_desc *V = &xa_cls_VM;
    struct xa_error *err = xa_api_set(t, V, vm, XA_F(xa_cls_VM, "power_state"),
                                      xa_string(paused ? "Paused" : "Running"));
    if (!err) {
        err = xa_api_set(t, V, vm, XA_F(xa_cls_VM, "domid"), xa_int(domid));
    }
    if (!err) {
        err = xa_api_set(t, V, vm, XA_F(xa_cls_VM, "resident_on"),
                         xa_string(xa_self_host()));
    }
    if (!err) {
        err =
            xa_api_set(t, V, vm, XA_F(xa_cls_VM, "scheduled_to_be_resident_on"),
                       xa_string(NULL_REF));
    }
    if (!err && !rebooted) {
        err = xa_vm_devices_attached(t, vm, true);
    }
    if (!err && !rebooted) {
        err = xa_console_create_for(t, vm);
    }
    if (!err) {
        err = metrics_running(t, vm, rebooted);
    }
    if (!err && g && g->present) {
        err = guest_metrics_write(t, vm, g);
    }
    return err;
}

/* A domain that its hypervisor rebuilt on its own (the guest rebooted
 * itself, actions_after_reboot=restart): running as 'domid' now. */
struct xa_error *
xa_vm_record_rebooted(struct xa_txn *t, const char *vm, int64_t domid)
{
    return record_live(t, vm, domid, false, NULL, true);
}

/* --- the operations ----------------------------------------------------- */

static char *
vm_uuid(const char *vm)
{
    struct xa_txn *t = xa_db_begin_read();
    char *u = xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
    xa_db_end(t);
    return u;
}

static bool
agent_report(const char *uuid, struct xa_hv_guest_info *g)
{
    struct xa_error *err = xa_hv_guest_info(uuid, g);
    if (err) {
        xa_error_free(err);
        return false;
    }
    return g->present;
}

/* Finishes an operation: writes the outcome through 'fn' (NULL: none),
 * forgets the operation, refreshes the host's free memory. */
static struct xa_error *
conclude(const char *vm, const char *task,
         struct xa_error *(*fn)(struct xa_txn *t, const char *vm, void *ctx),
         void *ctx)
{
    struct host_mem m = host_mem_read();
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (fn && xa_db_exists(t, &xa_cls_VM, vm)) {
        err = fn(t, vm, ctx);
    }
    if (!err) {
        err = xa_vm_op_finish(t, vm, task);
    }
    if (!err) {
        err = host_mem_apply(t, &m);
    }
    err = xa_api_finish(t, err);
    xa_net_vm_sync(vm); /* ports follow the new state */
    return err;
}

/* Cleans up after a failure: the operation is forgotten and the VM put
 * back in 'state' (NULL: leave it). */
static struct xa_error *
fail_back(const char *vm, const char *task, const char *state,
          struct xa_error *cause)
{
    struct host_mem m = host_mem_read();
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (state && xa_db_exists(t, &xa_cls_VM, vm)) {
        err = xa_vm_force_state(t, vm, state);
    }
    if (!err) {
        err = xa_vm_op_finish(t, vm, task);
    }
    if (!err) {
        err = host_mem_apply(t, &m);
    }
    err = xa_api_finish(t, err);
    if (err) {
        xa_log_err("vm", "rollback of %s failed: %s", vm, err->code);
        xa_error_free(err);
    }
    xa_net_vm_sync(vm);
    return cause;
}

struct live_outcome {
    int64_t domid;
    bool paused;
    bool rebooted;
    bool booted; /* a fresh boot: the CPU flags are recorded */
    struct xa_hv_guest_info g;
};

static struct xa_error *
outcome_live(struct xa_txn *t, const char *vm, void *ctx)
{
    struct live_outcome *o = ctx;
    struct xa_error *err =
        record_live(t, vm, o->domid, o->paused, &o->g, o->rebooted);
    return err || !o->booted ? err : xa_vm_cpu_flags_boot(t, vm);
}

static struct xa_error *
outcome_halted(struct xa_txn *t, const char *vm, void *ctx)
{
    XA_UNUSED(ctx);
    return xa_vm_force_state(t, vm, "Halted");
}

/* Whether to poll for the guest agent after a start: only when it has
 * not reported yet. */
static void
watch_agent(const char *vm, const struct live_outcome *o)
{
    if (!o->paused && !o->g.present) {
        xa_vm_refresh_guest_metrics(vm, 50);
    }
}

static struct xa_error *
do_start(struct xa_call *call, const char *vm, const char *host,
         bool start_paused, const char *op)
{
    struct admit a = {host, 0};
    char *task = NULL;
    struct xa_error *err =
        xa_vm_op_begin(call, vm, op, admit_memory, &a, &task);
    if (err) {
        return err;
    }
    struct dom_cfg d;
    struct live_outcome o = {0};
    o.paused = start_paused;
    o.booted = true;
    bool built = false;
    err = dom_cfg_read(vm, &d);
    if (!err) {
        err = xa_hv_create(call->msg->wire, &d.c, &o.domid);
        built = !err;
    }
    if (!err) {
        err = xa_net_vm_plug(vm, o.domid);
    }
    if (!err && !start_paused) {
        err = xa_hv_unpause(call->msg->wire, d.uuid);
    }
    if (err) {
        if (built) {
            xa_error_free(xa_hv_destroy(call->msg->wire, d.uuid));
        }
        dom_cfg_free(&d);
        release_memory(&a);
        err = fail_back(vm, task, "Halted", err);
        free(task);
        return err;
    }
    if (!start_paused) {
        agent_report(d.uuid, &o.g);
    }
    err = conclude(vm, task, outcome_live, &o);
    release_memory(&a);
    if (!err) {
        watch_agent(vm, &o);
    }
    xa_hv_guest_info_free(&o.g);
    dom_cfg_free(&d);
    free(task);
    return err;
}

struct xa_error *
xa_impl_VM_start(struct xa_call *call, const char *vm, bool start_paused,
                 bool force)
{
    XA_UNUSED(force);
    return do_start(call, vm, xa_self_host(), start_paused, "start");
}

struct xa_error *
xa_impl_VM_start_on(struct xa_call *call, const char *vm, const char *host,
                    bool start_paused, bool force)
{
    XA_UNUSED(force);
    return do_start(call, vm, host, start_paused, "start_on");
}

/* The shape shared by operations that only need the domain's uuid: begin,
 * run 'drv', record 'outcome' (or roll back to 'fail_state'). */
static struct xa_error *
simple_op(struct xa_call *call, const char *vm, const char *op,
          struct xa_error *(*drv)(const char *what, const char *uuid,
                                  void *ctx),
          void *drv_ctx,
          struct xa_error *(*outcome)(struct xa_txn *t, const char *vm,
                                      void *ctx),
          void *out_ctx)
{
    char *task = NULL;
    struct xa_error *err = xa_vm_op_begin(call, vm, op, NULL, NULL, &task);
    if (err) {
        return err;
    }
    char *uuid = vm_uuid(vm);
    err = drv(call->msg->wire, uuid, drv_ctx);
    free(uuid);
    if (err) {
        /* The domain is as it was: only forget the operation. */
        err = fail_back(vm, task, NULL, err);
    } else {
        err = conclude(vm, task, outcome, out_ctx);
    }
    free(task);
    return err;
}

static struct xa_error *
drv_clean_shutdown(const char *what, const char *uuid, void *ctx)
{
    XA_UNUSED(ctx);
    return xa_hv_shutdown(what, uuid, XA_HV_POWEROFF, CLEAN_TIMEOUT, NULL);
}

struct xa_error *
xa_impl_VM_clean_shutdown(struct xa_call *call, const char *vm)
{
    return simple_op(call, vm, "clean_shutdown", drv_clean_shutdown, NULL,
                     outcome_halted, NULL);
}

/* Removes the suspend image of a VM that is leaving Suspended. */
static char *
take_suspend_vdi(struct xa_txn *t, const char *vm)
{
    const char *s =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "suspend_VDI"));
    if (!xa_db_exists(t, &xa_cls_VDI, s)) {
        return NULL;
    }
    char *ref = xa_strdup(s);
    struct xa_error *err = xa_api_set(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "suspend_VDI"), xa_string(NULL_REF));
    xa_error_free(err);
    return ref;
}

struct halt_ctx {
    char *suspend_vdi; /* image to remove after the commit */
};

static struct xa_error *
outcome_halted_drop_image(struct xa_txn *t, const char *vm, void *ctx)
{
    struct halt_ctx *h = ctx;
    h->suspend_vdi = take_suspend_vdi(t, vm);
    return xa_vm_force_state(t, vm, "Halted");
}

/* hard_shutdown and shutdown: a Suspended VM just loses its image; a
 * live one is destroyed ('try_clean' first asks the guest). */
static struct xa_error *
do_hard_shutdown(struct xa_call *call, const char *vm, const char *op,
                 bool try_clean)
{
    char *task = NULL;
    struct xa_error *err = xa_vm_op_begin(call, vm, op, NULL, NULL, &task);
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_read();
    bool live =
        strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state")),
               "Suspended") != 0;
    bool running =
        strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state")),
               "Running") == 0;
    xa_db_end(t);
    char *uuid = vm_uuid(vm);
    if (live && try_clean && running) {
        err = xa_hv_shutdown(call->msg->wire, uuid, XA_HV_POWEROFF,
                             CLEAN_TIMEOUT, NULL);
        if (err) {
            xa_log_info("vm",
                        "%s: clean shutdown of %s failed (%s), "
                        "destroying",
                        op, vm, err->code);
            xa_error_free(err);
            err = NULL;
            live = true;
        } else {
            live = false;
        }
    }
    if (live) {
        err = xa_hv_destroy(call->msg->wire, uuid);
    }
    free(uuid);
    struct halt_ctx h = {NULL};
    if (err) {
        err = fail_back(vm, task, NULL, err);
    } else {
        err = conclude(vm, task, outcome_halted_drop_image, &h);
    }
    if (h.suspend_vdi) {
        xa_error_free(xa_vdi_remove(h.suspend_vdi));
        free(h.suspend_vdi);
    }
    free(task);
    return err;
}

struct xa_error *
xa_impl_VM_hard_shutdown(struct xa_call *call, const char *vm)
{
    return do_hard_shutdown(call, vm, "hard_shutdown", false);
}

struct xa_error *
xa_impl_VM_shutdown(struct xa_call *call, const char *vm)
{
    return do_hard_shutdown(call, vm, "shutdown", true);
}

static struct xa_error *
drv_clean_reboot(const char *what, const char *uuid, void *ctx)
{
    return xa_hv_shutdown(what, uuid, XA_HV_REBOOT, CLEAN_TIMEOUT,
                          &((struct live_outcome *)ctx)->domid);
}

struct xa_error *
xa_impl_VM_clean_reboot(struct xa_call *call, const char *vm)
{
    struct live_outcome o = {0};
    o.rebooted = true;
    struct xa_error *err = simple_op(call, vm, "clean_reboot", drv_clean_reboot,
                                     &o, outcome_live, &o);
    if (!err) {
        xa_vm_refresh_guest_metrics(vm, 50);
    }
    return err;
}

struct xa_error *
xa_impl_VM_hard_reboot(struct xa_call *call, const char *vm)
{
    char *task = NULL;
    struct xa_error *err =
        xa_vm_op_begin(call, vm, "hard_reboot", NULL, NULL, &task);
    if (err) {
        return err;
    }
    struct dom_cfg d;
    struct live_outcome o = {0};
    o.rebooted = true;
    err = dom_cfg_read(vm, &d);
    if (!err) {
        err = xa_hv_hard_reboot(call->msg->wire, &d.c, &o.domid);
    }
    if (err) {
        /* The old domain may be gone: trust the driver's word. */
        struct xa_hv_domain_info info;
        struct xa_error *gone = xa_hv_get_info(d.uuid ? d.uuid : "", &info);
        err = fail_back(vm, task, gone ? "Halted" : NULL, err);
        xa_error_free(gone);
    } else {
        agent_report(d.uuid, &o.g);
        err = conclude(vm, task, outcome_live, &o);
        xa_hv_guest_info_free(&o.g);
    }
    dom_cfg_free(&d);
    free(task);
    return err;
}

static struct xa_error *
drv_pause(const char *what, const char *uuid, void *ctx)
{
    XA_UNUSED(ctx);
    return xa_hv_pause(what, uuid);
}

static struct xa_error *
drv_unpause(const char *what, const char *uuid, void *ctx)
{
    XA_UNUSED(ctx);
    return xa_hv_unpause(what, uuid);
}

static struct xa_error *
outcome_power(struct xa_txn *t, const char *vm, void *ctx)
{
    return xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"),
                      xa_string(ctx));
}

struct xa_error *
xa_impl_VM_pause(struct xa_call *call, const char *vm)
{
    return simple_op(call, vm, "pause", drv_pause, NULL, outcome_power,
                     "Paused");
}

struct xa_error *
xa_impl_VM_unpause(struct xa_call *call, const char *vm)
{
    struct xa_error *err = simple_op(call, vm, "unpause", drv_unpause, NULL,
                                     outcome_power, "Running");
    if (!err) {
        xa_vm_refresh_guest_metrics(vm, 50);
    }
    return err;
}

/* Where suspend images go: pool.suspend_image_SR, else the default SR. */
static char *
suspend_sr(struct xa_txn *t)
{
    char *pool = xa_api_pool(t);
    const char *s = xa_api_str(t, &xa_cls_pool, pool,
                               XA_F(xa_cls_pool, "suspend_image_SR"));
    char *sr = xa_db_exists(t, &xa_cls_SR, s) ? xa_strdup(s) : NULL;
    free(pool);
    return sr ? sr : xa_sr_default(t);
}

struct suspend_ctx {
    const char *vdi;
};

static struct xa_error *
outcome_suspended(struct xa_txn *t, const char *vm, void *ctx)
{
    struct suspend_ctx *s = ctx;
    struct xa_error *err = xa_vm_force_state(t, vm, "Suspended");
    if (!err) {
        err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "suspend_VDI"),
                         xa_string(s->vdi));
    }
    return err;
}

struct xa_error *
xa_impl_VM_suspend(struct xa_call *call, const char *vm)
{
    char *task = NULL;
    struct xa_error *err =
        xa_vm_op_begin(call, vm, "suspend", NULL, NULL, &task);
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_read();
    char *sr = suspend_sr(t);
    int64_t size =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_static_max")) +
        (1 << 20);
    char *label = xa_asprintf(
        "Suspend image for %s",
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "name_label")));
    xa_db_end(t);
    char *vdi = NULL, *path = NULL, *format = NULL, *uuid = vm_uuid(vm);
    if (!sr) {
        err = xa_error_new("VM_NO_SUSPEND_SR", 1, vm);
    } else {
        err = xa_vdi_make(sr, label, "", size, "suspend", false, false,
                          xa_struct(), &vdi);
    }
    if (!err) {
        err = xa_vdi_attach_path(vdi, false, &path, &format);
    }
    if (!err) {
        err = xa_hv_suspend(call->msg->wire, uuid, path);
    }
    if (err) {
        if (vdi) {
            xa_error_free(xa_vdi_remove(vdi));
        }
        err = fail_back(vm, task, NULL, err);
    } else {
        struct suspend_ctx s = {vdi};
        err = conclude(vm, task, outcome_suspended, &s);
    }
    free(sr);
    free(label);
    free(vdi);
    free(path);
    free(format);
    free(uuid);
    free(task);
    return err;
}

static struct xa_error *
do_resume(struct xa_call *call, const char *vm, const char *host,
          bool start_paused, const char *op)
{
    struct admit a = {host, 0};
    char *task = NULL;
    struct xa_error *err =
        xa_vm_op_begin(call, vm, op, admit_memory, &a, &task);
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_read();
    char *image = xa_strdup(
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "suspend_VDI")));
    bool have_image = xa_db_exists(t, &xa_cls_VDI, image);
    xa_db_end(t);
    struct dom_cfg d;
    struct live_outcome o = {0};
    o.paused = start_paused;
    char *path = NULL, *format = NULL;
    bool built = false;
    err = dom_cfg_read(vm, &d);
    if (!err && have_image) {
        err = xa_vdi_attach_path(image, true, &path, &format);
    }
    if (!err) {
        err = xa_hv_resume(call->msg->wire, &d.c, path ? path : "", &o.domid);
        built = !err;
    }
    if (!err) {
        err = xa_net_vm_plug(vm, o.domid);
    }
    if (!err && !start_paused) {
        err = xa_hv_unpause(call->msg->wire, d.uuid);
    }
    if (err) {
        if (built) {
            xa_error_free(xa_hv_destroy(call->msg->wire, d.uuid));
        }
        release_memory(&a);
        /* Still Suspended, image kept: the resume can be retried. */
        err = fail_back(vm, task, NULL, err);
        struct xa_txn *w = xa_db_begin_write();
        xa_error_free(xa_api_finish(
            w, xa_api_set(w, &xa_cls_VM, vm,
                          XA_F(xa_cls_VM, "scheduled_to_be_resident_on"),
                          xa_string(NULL_REF))));
    } else {
        if (!start_paused) {
            agent_report(d.uuid, &o.g);
        }
        struct halt_ctx h = {NULL};
        err = conclude(vm, task, outcome_live, &o);
        release_memory(&a);
        if (!err) {
            t = xa_db_begin_write();
            h.suspend_vdi = take_suspend_vdi(t, vm);
            xa_error_free(xa_api_finish(t, NULL));
            if (h.suspend_vdi) {
                xa_error_free(xa_vdi_remove(h.suspend_vdi));
                free(h.suspend_vdi);
            }
            watch_agent(vm, &o);
        }
        xa_hv_guest_info_free(&o.g);
    }
    dom_cfg_free(&d);
    free(image);
    free(path);
    free(format);
    free(task);
    return err;
}

struct xa_error *
xa_impl_VM_resume(struct xa_call *call, const char *vm, bool start_paused,
                  bool force)
{
    XA_UNUSED(force);
    return do_resume(call, vm, xa_self_host(), start_paused, "resume");
}

struct xa_error *
xa_impl_VM_resume_on(struct xa_call *call, const char *vm, const char *host,
                     bool start_paused, bool force)
{
    XA_UNUSED(force);
    return do_resume(call, vm, host, start_paused, "resume_on");
}

struct xa_error *
xa_impl_VM_power_state_reset(struct xa_call *call, const char *vm)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = xa_vm_check_op(t, vm, "power_state_reset", false);
    const char *power =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool live = strcmp(power, "Running") == 0 || strcmp(power, "Paused") == 0;
    bool here =
        strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on")),
               xa_self_host()) == 0;
    char *uuid =
        xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
    xa_db_end(t);
    if (!err && live && here) {
        /* Forgetting a domain that still runs here would leak it. */
        struct xa_hv_domain_info info;
        struct xa_error *gone = xa_hv_get_info(uuid, &info);
        if (!gone) {
            err =
                xa_error_new("VM_BAD_POWER_STATE", 3, vm, "halted", "running");
        }
        xa_error_free(gone);
    }
    free(uuid);
    if (err) {
        return err;
    }
    struct host_mem m = host_mem_read();
    t = xa_db_begin_write();
    err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "current_operations"),
                     xa_struct());
    if (!err) {
        err = xa_vm_force_state(t, vm, "Halted");
    }
    if (!err) {
        err = xa_vm_update_allowed(t, vm);
    }
    if (!err) {
        err = host_mem_apply(t, &m);
    }
    return xa_api_finish(t, err);
}

struct xa_error *
xa_impl_VM_assert_operation_valid(struct xa_call *call, const char *self,
                                  const char *op)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = xa_vm_check_op(t, self, op, false);
    xa_db_end(t);
    return err;
}

struct xa_error *
xa_impl_VM_update_allowed_operations(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    return xa_api_finish(t, xa_vm_update_allowed(t, self));
}

/* is_a_template is a plain field, but turning a VM into a template is the
 * make_into_template operation (Halted only) and changes what may be done
 * with it. */
static struct xa_error *
set_is_a_template(struct xa_call *call, struct xa_value *const *args,
                  struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = NULL;
    const char *vm = args[0]->u.str.s;
    bool value = args[1]->u.b;
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_VM, vm)) {
        err = xa_error_handle_invalid("VM", vm);
    } else if (value && !xa_api_bool(t, &xa_cls_VM, vm,
                                     XA_F(xa_cls_VM, "is_a_template"))) {
        err = xa_vm_check_op(t, vm, "make_into_template", false);
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "is_a_template"),
                         xa_bool(value));
    }
    if (!err && !value) {
        /* A template turned back into a VM is no longer a default one. */
        err =
            xa_api_set(t, &xa_cls_VM, vm,
                       XA_F(xa_cls_VM, "is_default_template"), xa_bool(false));
    }
    if (!err) {
        err = xa_vm_update_allowed(t, vm);
    }
    return xa_api_finish(t, err);
}

/* Setting blocked_operations changes allowed_operations. */
static struct xa_error *
blocked_ops_changed(struct xa_call *call, struct xa_value *const *args,
                    struct xa_value **ret)
{
    struct xa_error *err = xa_implicit_generic(call, args, ret);
    if (!err) {
        struct xa_txn *t = xa_db_begin_write();
        err = xa_api_finish(t, xa_vm_update_allowed(t, args[0]->u.str.s));
    }
    return err;
}

void
xa_vm_lifecycle_init(void)
{
    xa_implicit_override("VM.set_is_a_template", set_is_a_template);
    xa_implicit_override("VM.set_blocked_operations", blocked_ops_changed);
    xa_implicit_override("VM.add_to_blocked_operations", blocked_ops_changed);
    xa_implicit_override("VM.remove_from_blocked_operations",
                         blocked_ops_changed);
}

/* --- migration (vm_migrate.c) -------------------------------------------- */

struct xa_error *
xa_vm_migrate_build(const char *vm, int fd, int64_t *domid)
{
    struct dom_cfg d;
    struct xa_error *err = dom_cfg_read(vm, &d);
    if (!err) {
        err = xa_hv_migrate_receive("VM.pool_migrate", &d.c, fd, domid);
    }
    dom_cfg_free(&d);
    return err;
}

struct xa_error *
xa_vm_migrate_arrived(const char *vm, int64_t domid)
{
    char *uuid = vm_uuid(vm);
    struct xa_hv_guest_info g = {0};
    agent_report(uuid, &g);
    free(uuid);
    struct host_mem m = host_mem_read();
    struct xa_txn *t = xa_db_begin_write();
    /* the consoles name where the domain runs: made anew here */
    struct xa_error *err = xa_console_destroy_for(t, vm);
    if (!err) {
        err = record_live(t, vm, domid, false, &g, false);
    }
    if (!err) {
        err = host_mem_apply(t, &m);
    }
    err = xa_api_finish(t, err);
    xa_hv_guest_info_free(&g);
    if (!err) {
        err = xa_net_vm_plug(vm, domid);
    }
    return err;
}
