/* vm_config.c - VM settings with rules: memory limits, VCPU counts,
 * device numbers, and where a VM may run.
 *
 * Each setter is one write transaction: the operation check (the
 * changing_* operations have power-state rules like any other), the
 * constraint check, the write and the allowed_operations refresh happen
 * under the same lock, so no concurrent start can slip in between. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/sr_api.h"
#include "api/vm.h"
#include "hypervisor/hv.h"
#include "pool/pool.h"
#include "self.h"
#include "xa-impl.h"

#define NULL_REF        "OpaqueRef:NULL"
#define MAX_VBD_DEVICES 16
#define MAX_VIF_DEVICES 7

struct xa_error *
xa_vm_check_memory(int64_t smin, int64_t dmin, int64_t dmax, int64_t smax)
{
    if (smin <= dmin && dmin <= dmax && dmax <= smax && smin >= 0) {
        return NULL;
    }
    return xa_error_new("MEMORY_CONSTRAINT_VIOLATION", 1,
                        "Memory limits must satisfy: static_min \u2264 "
                        "dynamic_min \u2264 dynamic_max \u2264 static_max");
}

static struct xa_error *
invalid_int(const char *field, int64_t v)
{
    char *s = xa_api_i64(v);
    struct xa_error *e = xa_error_invalid_value(field, s);
    free(s);
    return e;
}

struct xa_error *
xa_vm_check_vcpus(int64_t max, int64_t at_startup)
{
    if (max < 1) {
        return invalid_int("VCPUs_max", max);
    }
    if (at_startup < 1 || at_startup > max) {
        return invalid_int("VCPUs_at_startup", at_startup);
    }
    return NULL;
}

/* The four memory fields, read or written together. */
struct mem {
    int64_t smin, dmin, dmax, smax;
};

static struct mem
mem_read(struct xa_txn *t, const char *vm)
{
    struct mem m;
    m.smin =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_static_min"));
    m.dmin =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_dynamic_min"));
    m.dmax =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_dynamic_max"));
    m.smax =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_static_max"));
    return m;
}

static struct xa_error *
mem_write(struct xa_txn *t, const char *vm, const struct mem *m)
{
    struct {
        int field;
        int64_t v;
    } w[] = {
        {XA_F(xa_cls_VM, "memory_static_min"), m->smin},
        {XA_F(xa_cls_VM, "memory_dynamic_min"), m->dmin},
        {XA_F(xa_cls_VM, "memory_dynamic_max"), m->dmax},
        {XA_F(xa_cls_VM, "memory_static_max"), m->smax},
    };
    struct xa_error *err = NULL;
    for (size_t i = 0; i < XA_ARRAY_SIZE(w) && !err; i++) {
        if (xa_api_int(t, &xa_cls_VM, vm, w[i].field) != w[i].v) {
            err = xa_api_set(t, &xa_cls_VM, vm, w[i].field, xa_int(w[i].v));
        }
    }
    return err;
}

/* Which fields a setter changes. */
enum mem_change {
    SET_LIMITS,       /* all four */
    SET_STATIC_RANGE, /* smin, smax */
    SET_STATIC_MIN,
    SET_STATIC_MAX,
    SET_DYNAMIC_RANGE, /* dmin, dmax */
    SET_DYNAMIC_MIN,
    SET_DYNAMIC_MAX,
    SET_MEMORY, /* smax = dmin = dmax = value */
};

static struct xa_error *
change_memory(const char *vm, enum mem_change what, const struct mem *in)
{
    static const char *const ops[] = {
        [SET_LIMITS] = "changing_memory_limits",
        [SET_STATIC_RANGE] = "changing_static_range",
        [SET_STATIC_MIN] = "changing_static_range",
        [SET_STATIC_MAX] = "changing_static_range",
        [SET_DYNAMIC_RANGE] = "changing_dynamic_range",
        [SET_DYNAMIC_MIN] = "changing_dynamic_range",
        [SET_DYNAMIC_MAX] = "changing_dynamic_range",
        [SET_MEMORY] = "changing_memory_limits",
    };
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_vm_check_op(t, vm, ops[what], false);
    if (err) {
        xa_db_abort(t);
        return err;
    }
    struct mem m = mem_read(t, vm);
    switch (what) {
    case SET_LIMITS:
        m = *in;
        break;
    case SET_STATIC_RANGE:
        m.smin = in->smin;
        m.smax = in->smax;
        break;
    case SET_STATIC_MIN:
        m.smin = in->smin;
        break;
    case SET_STATIC_MAX:
        m.smax = in->smax;
        break;
    case SET_DYNAMIC_RANGE:
        m.dmin = in->dmin;
        m.dmax = in->dmax;
        break;
    case SET_DYNAMIC_MIN:
        m.dmin = in->dmin;
        break;
    case SET_DYNAMIC_MAX:
        m.dmax = in->dmax;
        break;
    case SET_MEMORY:
        m.smax = m.dmin = m.dmax = in->smax;
        break;
    }
    err = xa_vm_check_memory(m.smin, m.dmin, m.dmax, m.smax);
    if (!err) {
        err = mem_write(t, vm, &m);
    }
    if (!err) {
        err = xa_vm_update_allowed(t, vm);
    }
    return xa_api_finish(t, err);
}

struct xa_error *
xa_impl_VM_set_memory_limits(struct xa_call *call, const char *self,
                             int64_t static_min, int64_t static_max,
                             int64_t dynamic_min, int64_t dynamic_max)
{
    XA_UNUSED(call);
    struct mem m = {static_min, dynamic_min, dynamic_max, static_max};
    return change_memory(self, SET_LIMITS, &m);
}

struct xa_error *
xa_impl_VM_set_memory(struct xa_call *call, const char *self, int64_t value)
{
    XA_UNUSED(call);
    struct mem m = {0, 0, 0, value};
    return change_memory(self, SET_MEMORY, &m);
}

struct xa_error *
xa_impl_VM_set_memory_static_range(struct xa_call *call, const char *self,
                                   int64_t min, int64_t max)
{
    XA_UNUSED(call);
    struct mem m = {min, 0, 0, max};
    return change_memory(self, SET_STATIC_RANGE, &m);
}

struct xa_error *
xa_impl_VM_set_memory_static_min(struct xa_call *call, const char *self,
                                 int64_t value)
{
    XA_UNUSED(call);
    struct mem m = {value, 0, 0, 0};
    return change_memory(self, SET_STATIC_MIN, &m);
}

struct xa_error *
xa_impl_VM_set_memory_static_max(struct xa_call *call, const char *self,
                                 int64_t value)
{
    XA_UNUSED(call);
    struct mem m = {0, 0, 0, value};
    return change_memory(self, SET_STATIC_MAX, &m);
}

struct xa_error *
xa_impl_VM_set_memory_dynamic_range(struct xa_call *call, const char *self,
                                    int64_t min, int64_t max)
{
    XA_UNUSED(call);
    struct mem m = {0, min, max, 0};
    return change_memory(self, SET_DYNAMIC_RANGE, &m);
}

struct xa_error *
xa_impl_VM_set_memory_dynamic_min(struct xa_call *call, const char *self,
                                  int64_t value)
{
    XA_UNUSED(call);
    struct mem m = {0, value, 0, 0};
    return change_memory(self, SET_DYNAMIC_MIN, &m);
}

struct xa_error *
xa_impl_VM_set_memory_dynamic_max(struct xa_call *call, const char *self,
                                  int64_t value)
{
    XA_UNUSED(call);
    struct mem m = {0, 0, value, 0};
    return change_memory(self, SET_DYNAMIC_MAX, &m);
}

static struct xa_error *
change_vcpus(const char *vm, bool set_max, int64_t value)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_vm_check_op(t, vm, "changing_VCPUs", false);
    if (!err) {
        int64_t max =
            xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VCPUs_max"));
        int64_t at =
            xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VCPUs_at_startup"));
        if (set_max) {
            err = value < 1 || value < at ? invalid_int("VCPUs_max", value)
                                          : NULL;
            if (!err) {
                err = xa_api_set(t, &xa_cls_VM, vm,
                                 XA_F(xa_cls_VM, "VCPUs_max"), xa_int(value));
            }
        } else {
            err = xa_vm_check_vcpus(max, value);
            if (!err) {
                err = xa_api_set(t, &xa_cls_VM, vm,
                                 XA_F(xa_cls_VM, "VCPUs_at_startup"),
                                 xa_int(value));
            }
        }
    }
    if (!err) {
        err = xa_vm_update_allowed(t, vm);
    }
    return xa_api_finish(t, err);
}

struct xa_error *
xa_impl_VM_set_VCPUs_max(struct xa_call *call, const char *self, int64_t value)
{
    XA_UNUSED(call);
    return change_vcpus(self, true, value);
}

struct xa_error *
xa_impl_VM_set_VCPUs_at_startup(struct xa_call *call, const char *self,
                                int64_t value)
{
    XA_UNUSED(call);
    return change_vcpus(self, false, value);
}

struct xa_error *
xa_impl_VM_set_VCPUs_number_live(struct xa_call *call, const char *self,
                                 int64_t nvcpu)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err =
        xa_vm_check_op(t, self, "changing_VCPUs_live", false);
    if (!err) {
        int64_t max =
            xa_api_int(t, &xa_cls_VM, self, XA_F(xa_cls_VM, "VCPUs_max"));
        err = nvcpu < 1 || nvcpu > max ? invalid_int("nvcpu", nvcpu) : NULL;
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_VM, self,
                         XA_F(xa_cls_VM, "VCPUs_at_startup"), xa_int(nvcpu));
    }
    const char *m =
        err ? "" : xa_api_str(t, &xa_cls_VM, self, XA_F(xa_cls_VM, "metrics"));
    if (!err && xa_db_exists(t, &xa_cls_VM_metrics, m)) {
        char *mref = xa_strdup(m);
        err =
            xa_api_set(t, &xa_cls_VM_metrics, mref,
                       XA_F(xa_cls_VM_metrics, "VCPUs_number"), xa_int(nvcpu));
        free(mref);
    }
    return xa_api_finish(t, err);
}

/* The device numbers from 0 to 'max'-1 that 'vm' does not use yet. */
static struct xa_value *
free_devices(const char *vm, const struct xa_class_desc *cls,
             const char *set_field, int dev_field, int max)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *used =
        xa_db_get_field(t, &xa_cls_VM, vm, xa_api_field(&xa_cls_VM, set_field));
    struct xa_value *out = xa_array();
    for (int i = 0; i < max; i++) {
        char d[16];
        snprintf(d, sizeof d, "%d", i);
        bool taken = false;
        for (size_t k = 0; used && k < used->u.arr.n && !taken; k++) {
            taken = strcmp(xa_api_str(t, cls, used->u.arr.items[k]->u.str.s,
                                      dev_field),
                           d) == 0;
        }
        if (!taken) {
            xa_array_append(out, xa_string(d));
        }
    }
    xa_value_unref(used);
    xa_db_end(t);
    return out;
}

struct xa_error *
xa_impl_VM_get_allowed_VBD_devices(struct xa_call *call, const char *vm,
                                   struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = free_devices(vm, &xa_cls_VBD, "VBDs", XA_F(xa_cls_VBD, "userdevice"),
                        MAX_VBD_DEVICES);
    return NULL;
}

struct xa_error *
xa_impl_VM_get_allowed_VIF_devices(struct xa_call *call, const char *vm,
                                   struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = free_devices(vm, &xa_cls_VIF, "VIFs", XA_F(xa_cls_VIF, "device"),
                        MAX_VIF_DEVICES);
    return NULL;
}

/* xapi's assert_can_boot_here for a single host: the host is up and
 * enabled, sees the VM's storage, and has the memory.  The one place
 * placement asks this, standalone or in a pool. */
struct xa_error *
xa_vm_can_boot_here(struct xa_txn *t, const char *vm, const char *host)
{
    if (!xa_db_exists(t, &xa_cls_host, host)) {
        return xa_error_handle_invalid("host", host);
    }
    if (!xa_pool_host_live(t, host)) {
        return xa_error_new("HOST_OFFLINE", 1, host);
    }
    if (!xa_api_bool(t, &xa_cls_host, host, XA_F(xa_cls_host, "enabled"))) {
        return xa_error_new("HOST_DISABLED", 1, host);
    }
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    struct xa_error *err = NULL;
    for (size_t i = 0; vbds && i < vbds->u.arr.n && !err; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "VDI"));
        if (!xa_db_exists(t, &xa_cls_VDI, vdi)) {
            continue;
        }
        const char *sr =
            xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR"));
        if (!xa_sr_attached_on(t, sr, host)) {
            err = xa_error_new("VM_REQUIRES_SR", 2, vm, sr);
        }
    }
    xa_value_unref(vbds);
    if (err) {
        return err;
    }
    const char *hm =
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "metrics"));
    int64_t avail = xa_api_int(t, &xa_cls_host_metrics, hm,
                               XA_F(xa_cls_host_metrics, "memory_free"));
    int64_t needed =
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_dynamic_max")) +
        xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_overhead"));
    bool live =
        strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on")),
               host) == 0;
    if (!live && needed > avail) {
        char n[32], a[32];
        snprintf(n, sizeof n, "%" PRId64, needed);
        snprintf(a, sizeof a, "%" PRId64, avail);
        return xa_error_new("HOST_NOT_ENOUGH_FREE_MEMORY", 2, n, a);
    }
    return NULL;
}

struct xa_error *
xa_impl_VM_assert_can_boot_here(struct xa_call *call, const char *self,
                                const char *host)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = xa_vm_can_boot_here(t, self, host);
    xa_db_end(t);
    return err;
}

struct xa_error *
xa_impl_VM_get_possible_hosts(struct xa_call *call, const char *vm,
                              struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    struct xa_value *out = xa_array();
    for (size_t i = 0; hosts && i < hosts->u.arr.n; i++) {
        struct xa_error *e =
            xa_vm_can_boot_here(t, vm, hosts->u.arr.items[i]->u.str.s);
        if (e) {
            xa_error_free(e);
        } else {
            xa_array_append(out, xa_value_ref(hosts->u.arr.items[i]));
        }
    }
    xa_value_unref(hosts);
    xa_db_end(t);
    *ret = out;
    return NULL;
}

void
xa_vm_config_init(void)
{
    /* Nothing to override: every message here is explicit. */
}
