/* vm.h - shared by the VM, VBD, VIF, console and minimal-storage modules
 * (vm_lifecycle.c, vm_copy.c, vm_config.c, vbd.c, vif.c, console.c,
 * sr_minimal.c) and the start-up reconciliation (hypervisor/reconcile.c).
 *
 * The VM state machine lives here: which operation is allowed in which
 * power state, the order of xapi's checks and their exact errors, and the
 * bookkeeping of current_operations / allowed_operations that makes
 * OTHER_OPERATION_IN_PROGRESS exact.  A long operation (one that calls a
 * driver) runs as:
 *   xa_vm_op_begin()  - write txn: checks, records the operation under its
 *                       task ref in current_operations, commits;
 *   driver call       - no transaction held;
 *   write txn         - records the outcome, xa_vm_op_finish(), commits
 *                       (or xa_vm_op_cancel() on failure). */
#ifndef XA_API_VM_H
#define XA_API_VM_H

#include <stdbool.h>
#include <stdint.h>

#include "call.h"
#include "db/db.h"
#include "error.h"
#include "value.h"

extern const struct xa_class_desc xa_cls_VM, xa_cls_VBD, xa_cls_VIF, xa_cls_VDI,
    xa_cls_SR, xa_cls_PBD, xa_cls_console, xa_cls_VM_metrics,
    xa_cls_VM_guest_metrics, xa_cls_host, xa_cls_host_metrics, xa_cls_pool,
    xa_cls_network, xa_cls_task;

/* The index of field 'name' of 'cls'; aborts when the schema lacks it (a
 * programming error found by the first call). */
int xa_api_field(const struct xa_class_desc *cls, const char *name);

/* The same, looked up once per call site. */
#ifdef __CPPCHECK__
/* cppcheck cannot parse statement expressions */
#    define XA_F(cls, name) xa_api_field(&(cls), (name))
#else
#    define XA_F(cls, name)                                              \
        __extension__({                                                  \
            static int xa_f_idx_ = -1;                                   \
            int xa_f_i_ = __atomic_load_n(&xa_f_idx_, __ATOMIC_RELAXED); \
            if (xa_f_i_ < 0) {                                           \
                xa_f_i_ = xa_api_field(&(cls), (name));                  \
                __atomic_store_n(&xa_f_idx_, xa_f_i_, __ATOMIC_RELAXED); \
            }                                                            \
            xa_f_i_;                                                     \
        })
#endif

/* The pool object's ref (caller frees), NULL when the database has none. */
char *xa_api_pool(struct xa_txn *t);
/* Borrowed reads of stored fields: "" / 0 / false when the row or value is
 * missing.  Valid until the transaction ends or the field is written. */
const char *xa_api_str(struct xa_txn *t, const struct xa_class_desc *cls,
                       const char *ref, int field);
int64_t xa_api_int(struct xa_txn *t, const struct xa_class_desc *cls,
                   const char *ref, int field);
bool xa_api_bool(struct xa_txn *t, const struct xa_class_desc *cls,
                 const char *ref, int field);
/* A borrowed map member, or NULL. */
const char *xa_api_map_get(struct xa_txn *t, const struct xa_class_desc *cls,
                           const char *ref, int field, const char *key);
/* Refs of 'cls' whose ref field 'field' equals 'ref' (VBDs of a VM...). */
struct xa_value *xa_api_refs_where(struct xa_txn *t,
                                   const struct xa_class_desc *cls, int field,
                                   const char *ref);
/* Writes one field ('v' taken). */
struct xa_error *xa_api_set(struct xa_txn *t, const struct xa_class_desc *cls,
                            const char *ref, int field, struct xa_value *v);
/* Sets or removes (v NULL) one key of a string map field. */
struct xa_error *xa_api_map_set(struct xa_txn *t,
                                const struct xa_class_desc *cls,
                                const char *ref, int field, const char *key,
                                struct xa_value *v);
/* Commits 't', or aborts it and passes 'err' on. */
struct xa_error *xa_api_finish(struct xa_txn *t, struct xa_error *err);
char *xa_api_i64(int64_t v); /* decimal text, caller frees */

/* --- the VM state machine (vm_lifecycle.c) ---------------------------- */

/* NULL when 'op' (a vm_operations value) may run on 'vm' now, else the
 * first error in xapi's order: OPERATION_BLOCKED, VM_BAD_POWER_STATE,
 * OTHER_OPERATION_IN_PROGRESS, VM_IS_TEMPLATE / VM_IS_SNAPSHOT /
 * ONLY_PROVISION_TEMPLATE / ONLY_REVERT_SNAPSHOT, OPERATION_NOT_ALLOWED
 * (control domain), VM_LACKS_FEATURE.  'strict' adds the advisory guest
 * feature checks used for allowed_operations. */
/* HANDLE_INVALID, HOST_OFFLINE, HOST_DISABLED, VM_REQUIRES_SR or
 * HOST_NOT_ENOUGH_FREE_MEMORY when 'vm' cannot start on 'host'. */
struct xa_error *xa_vm_can_boot_here(struct xa_txn *t, const char *vm,
                                     const char *host);
struct xa_error *xa_vm_check_op(struct xa_txn *t, const char *vm,
                                const char *op, bool strict);
/* Recomputes VM.allowed_operations (and those of its VBDs and VIFs). */
struct xa_error *xa_vm_update_allowed(struct xa_txn *t, const char *vm);

/* Checks 'op' and records it in current_operations under the call's task
 * (an Async call's task, else a made-up ref), then commits.  '*task'
 * receives that ref (caller frees).  'extra' (may be NULL) runs inside the
 * same transaction after the checks, for operation-specific admission
 * (memory); an error from it aborts. */
struct xa_error *xa_vm_op_begin(
    struct xa_call *call, const char *vm, const char *op,
    struct xa_error *(*extra)(struct xa_txn *t, const char *vm, void *ctx),
    void *ctx, char **task) XA_WARN_UNUSED;
/* Inside the outcome's write transaction: forgets the operation and
 * recomputes allowed_operations. */
struct xa_error *xa_vm_op_finish(struct xa_txn *t, const char *vm,
                                 const char *task);
/* Its own transaction: forgets the operation after a failure. */
void xa_vm_op_cancel(const char *vm, const char *task);

/* Puts a VM into Halted or Suspended without a domain: resident_on and
 * scheduled_to_be_resident_on cleared, domid -1, devices detached,
 * consoles and guest metrics removed, VM_metrics reset. */
struct xa_error *xa_vm_force_state(struct xa_txn *t, const char *vm,
                                   const char *power_state);

/* Records that the hypervisor rebuilt a VM's domain by itself (a reboot
 * the guest asked for): Running, 'domid', VM_metrics restarted. */
struct xa_error *xa_vm_record_rebooted(struct xa_txn *t, const char *vm,
                                       int64_t domid);

/* vm_cpu.c: CPU feature levelling.  At boot the VM records the pool's
 * vendor and featureset in last_boot_CPU_flags; a VM not Halted may only
 * go to 'host' if its CPU has that vendor and every one of those
 * features (VM_INCOMPATIBLE_WITH_THIS_HOST [vm, host, why]); the pool's
 * featureset is the intersection of its hosts' (recomputed on join). */
struct xa_error *xa_vm_cpu_flags_boot(struct xa_txn *t,
                                      const char *vm) XA_WARN_UNUSED;
struct xa_error *xa_vm_cpu_assert_compatible(struct xa_txn *t, const char *vm,
                                             const char *host) XA_WARN_UNUSED;
/* The same against 'cpu_info', a host's cpu_info map (another pool's
 * host, read over its API); 'host' names it in the error. */
struct xa_error *
xa_vm_cpu_assert_fits(struct xa_txn *t, const char *vm, const char *host,
                      const struct xa_value *cpu_info) XA_WARN_UNUSED;
struct xa_error *xa_pool_cpu_level(struct xa_txn *t) XA_WARN_UNUSED;

/* Rewrites host_metrics.memory_free (and memory_total) from the driver's
 * view, minus the memory of operations still in flight. */
void xa_vm_refresh_host_memory(void);

/* Writes VM_guest_metrics from what the guest agent reports; retries on a
 * timer while the agent has not reported (the simulated agent may lag). */
void xa_vm_refresh_guest_metrics(const char *vm, int attempts);

/* The VM_metrics row of a VM, creating it when missing (caller frees). */
char *xa_vm_ensure_metrics(struct xa_txn *t, const char *vm);

/* --- settings (vm_config.c) ------------------------------------------ */

/* MEMORY_CONSTRAINT_VIOLATION unless smin <= dmin <= dmax <= smax. */
struct xa_error *xa_vm_check_memory(int64_t smin, int64_t dmin, int64_t dmax,
                                    int64_t smax);
/* INVALID_VALUE unless 1 <= at_startup <= max. */
struct xa_error *xa_vm_check_vcpus(int64_t max, int64_t at_startup);

/* --- devices (vbd.c, vif.c, console.c) -------------------------------- */

/* Marks every VBD and VIF of 'vm' attached or detached; attaching gives
 * each VBD its device name (xvda...). */
struct xa_error *xa_vm_devices_attached(struct xa_txn *t, const char *vm,
                                        bool attached);
/* Creates the console rows of a just-started VM / removes them. */
struct xa_error *xa_console_create_for(struct xa_txn *t, const char *vm);
struct xa_error *xa_console_destroy_for(struct xa_txn *t, const char *vm);
/* A MAC derived from the VM's mac_seed and the device number. */
char *xa_vif_mac_from_seed(const char *seed, const char *device);
bool xa_vif_mac_valid(const char *mac);
struct xa_error *xa_vbd_update_allowed(struct xa_txn *t, const char *vbd);
struct xa_error *xa_vif_update_allowed(struct xa_txn *t, const char *vif);

/* --- storage (sr_minimal.c) ------------------------------------------ */

/* The SR new VDIs go to when none is named: pool.default_SR, else the
 * first SR with a PBD on this host.  Caller frees; NULL when none. */
char *xa_sr_default(struct xa_txn *t);
/* Creates the "Local storage" SR at the first start when no SR exists. */
struct xa_error *xa_sr_ensure_local(void) XA_WARN_UNUSED;
/* Makes a new VDI in 'sr' through the backend and records it.  Runs its
 * own transactions (never call with one open).  '*ret' gets the ref. */
struct xa_error *xa_vdi_make(const char *sr, const char *name_label,
                             const char *name_description, int64_t size,
                             const char *type, bool sharable, bool read_only,
                             struct xa_value *other_config, /* taken */
                             char **ret) XA_WARN_UNUSED;
/* Clones (or snapshots) a VDI within its SR, or copies it into 'dest_sr'
 * (NULL: clone).  New row; caller frees '*ret'. */
struct xa_error *xa_vdi_duplicate(const char *vdi, const char *dest_sr,
                                  bool snapshot, const char *what,
                                  char **ret) XA_WARN_UNUSED;
/* Removes a VDI's file and row (no in-use check). */
struct xa_error *xa_vdi_remove(const char *vdi) XA_WARN_UNUSED;
/* Path and format for a domain's use; caller frees both. */
struct xa_error *xa_vdi_attach_path(const char *vdi, bool read_only,
                                    char **path, char **format) XA_WARN_UNUSED;

/* Everything below, plus backend selection, the local SR and the
 * reconciliation with running domains (vm_startup.c). */
void xa_vm_startup(void);

/* Module start-up (each registers its overrides). */
void xa_vm_lifecycle_init(void);
void xa_vm_copy_init(void);
void xa_vm_config_init(void);
void xa_vbd_init(void);
void xa_vif_init(void);
void xa_console_init(void);
void xa_sr_minimal_init(void);

#endif
