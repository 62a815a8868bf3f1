/* vbd.c - virtual block devices: the rules around the VBD rows.
 *
 * A VBD connects a VM to a VDI (or to an empty CD drive).  Devices of a
 * halted VM are attached when it starts; on a running VM plug and unplug
 * hot-plug them through the hypervisor driver.  Device numbers
 * (userdevice) are unique per VM; "autodetect" picks the lowest free one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/implicit.h"
#include "api/vm.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "xa-impl.h"

#define NULL_REF        "OpaqueRef:NULL"
#define MAX_VBD_DEVICES 16 /* userdevices 0..15, as xapi offers for HVM */

/* "xvda" for device 0, ..., "xvdz", "xvdaa", ... */
static char *
device_name(const char *userdevice)
{
    int64_t n;
    if (!xa_parse_int64(userdevice, &n) || n < 0) {
        return xa_strdup("");
    }
    char letters[8];
    int len = 0;
    char tmp[8];
    do {
        tmp[len++] = (char)('a' + n % 26);
        n = n / 26 - 1;
    } while (n >= 0 && len < 6);
    for (int i = 0; i < len; i++) {
        letters[i] = tmp[len - 1 - i];
    }
    letters[len] = '\0';
    return xa_asprintf("xvd%s", letters);
}

static bool
is_unsigned(const char *s)
{
    if (!*s || strlen(s) > 9) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
    }
    return true;
}

/* Whether 'vm' has a device (of class 'cls', field 'field') numbered
 * 'dev', other than 'except'. */
static bool
device_taken(struct xa_txn *t, const struct xa_class_desc *cls, int vm_field,
             int dev_field, const char *vm, const char *dev, const char *except)
{
    struct xa_value *refs = xa_api_refs_where(t, cls, vm_field, vm);
    bool taken = false;
    for (size_t i = 0; i < refs->u.arr.n && !taken; i++) {
        const char *r = refs->u.arr.items[i]->u.str.s;
        taken = (!except || strcmp(r, except) != 0) &&
                strcmp(xa_api_str(t, cls, r, dev_field), dev) == 0;
    }
    xa_value_unref(refs);
    return taken;
}

struct xa_error *
xa_vbd_update_allowed(struct xa_txn *t, const char *vbd)
{
    const char *vm = xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "VM"));
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool attached = xa_api_bool(t, &xa_cls_VBD, vbd,
                                XA_F(xa_cls_VBD, "currently_attached"));
    bool cd = strcmp(xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "type")),
                     "CD") == 0;
    bool empty = xa_api_bool(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "empty"));
    struct xa_value *ops = xa_array();
    if (strcmp(ps, "Running") == 0) {
        if (attached) {
            xa_array_append(ops, xa_string("unplug"));
            xa_array_append(ops, xa_string("unplug_force"));
        } else {
            xa_array_append(ops, xa_string("plug"));
        }
    } else if (strcmp(ps, "Halted") == 0) {
        xa_array_append(ops, xa_string("attach"));
    }
    if (cd && strcmp(ps, "Suspended") != 0 && strcmp(ps, "Paused") != 0) {
        xa_array_append(ops, xa_string(empty ? "insert" : "eject"));
    }
    const struct xa_value *old = xa_db_peek_field(
        t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "allowed_operations"));
    if (old && xa_value_equal(old, ops)) {
        xa_value_unref(ops);
        return NULL;
    }
    return xa_api_set(t, &xa_cls_VBD, vbd,
                      XA_F(xa_cls_VBD, "allowed_operations"), ops);
}

struct xa_error *
xa_vm_devices_attached(struct xa_txn *t, const char *vm, bool attached)
{
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    struct xa_value *vifs =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs"));
    struct xa_error *err = NULL;
    for (size_t i = 0; vbds && i < vbds->u.arr.n && !err; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        if (xa_api_bool(t, &xa_cls_VBD, b,
                        XA_F(xa_cls_VBD, "currently_attached")) != attached) {
            err = xa_api_set(t, &xa_cls_VBD, b,
                             XA_F(xa_cls_VBD, "currently_attached"),
                             xa_bool(attached));
        }
        if (!err && attached) {
            char *name = device_name(
                xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "userdevice")));
            if (strcmp(name, xa_api_str(t, &xa_cls_VBD, b,
                                        XA_F(xa_cls_VBD, "device"))) != 0) {
                err = xa_api_set(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "device"),
                                 xa_string(name));
            }
            free(name);
        }
        if (!err) {
            err = xa_vbd_update_allowed(t, b);
        }
    }
    for (size_t i = 0; vifs && i < vifs->u.arr.n && !err; i++) {
        const char *v = vifs->u.arr.items[i]->u.str.s;
        if (xa_api_bool(t, &xa_cls_VIF, v,
                        XA_F(xa_cls_VIF, "currently_attached")) != attached) {
            err = xa_api_set(t, &xa_cls_VIF, v,
                             XA_F(xa_cls_VIF, "currently_attached"),
                             xa_bool(attached));
        }
        if (!err) {
            err = xa_vif_update_allowed(t, v);
        }
    }
    xa_value_unref(vbds);
    xa_value_unref(vifs);
    return err;
}

static struct xa_error *
vbd_create(struct xa_call *call, struct xa_value *const *args,
           struct xa_value **ret)
{
    XA_UNUSED(call);
    const struct xa_value *in = args[0];
    static const char *const required[] = {"VM",
                                           "VDI",
                                           "userdevice",
                                           "bootable",
                                           "mode",
                                           "type",
                                           "empty",
                                           "other_config",
                                           "qos_algorithm_type",
                                           "qos_algorithm_params",
                                           NULL};
    for (const char *const *r = required; *r; r++) {
        if (!xa_struct_get(in, *r)) {
            return xa_error_internal("Field %s is required by VBD.create", *r);
        }
    }
    const char *vm = xa_struct_get_str(in, "VM");
    const char *vdi = xa_struct_get_str(in, "VDI");
    const char *userdevice = xa_struct_get_str(in, "userdevice");
    const char *type = xa_struct_get_str(in, "type");
    bool empty = xa_struct_get(in, "empty")->u.b;
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    char *dev = NULL;
    if (!xa_db_exists(t, &xa_cls_VM, vm)) {
        err = xa_error_handle_invalid("VM", vm);
    } else if (!empty && !xa_db_exists(t, &xa_cls_VDI, vdi)) {
        err = xa_error_handle_invalid("VDI", vdi);
    } else if (empty && strcmp(type, "CD") != 0 &&
               strcmp(type, "Floppy") != 0) {
        err = xa_error_new("VBD_NOT_REMOVABLE_MEDIA", 1, NULL_REF);
    } else if (strcmp(userdevice, "autodetect") == 0) {
        char buf[16];
        for (int i = 0; i < MAX_VBD_DEVICES && !dev; i++) {
            snprintf(buf, sizeof buf, "%d", i);
            if (!device_taken(t, &xa_cls_VBD, XA_F(xa_cls_VBD, "VM"),
                              XA_F(xa_cls_VBD, "userdevice"), vm, buf, NULL)) {
                dev = xa_strdup(buf);
            }
        }
        if (!dev) {
            err = xa_error_new("DEVICE_ALREADY_EXISTS", 1, "autodetect");
        }
    } else if (!is_unsigned(userdevice)) {
        err = xa_error_new("INVALID_DEVICE", 1, userdevice);
    } else if (device_taken(t, &xa_cls_VBD, XA_F(xa_cls_VBD, "VM"),
                            XA_F(xa_cls_VBD, "userdevice"), vm, userdevice,
                            NULL)) {
        err = xa_error_new("DEVICE_ALREADY_EXISTS", 1, userdevice);
    } else {
        dev = xa_strdup(userdevice);
    }
    char *ref = NULL;
    if (!err) {
        struct xa_value *rec = xa_struct();
        for (size_t i = 0; i < in->u.st.n; i++) {
            int f = xa_schema_field_index(&xa_cls_VBD, in->u.st.m[i].key);
            if (f >= 0 && xa_cls_VBD.fields[f].qual != XA_Q_RO_RUNTIME &&
                !xa_cls_VBD.fields[f].is_inverse_set) {
                xa_struct_set(rec, in->u.st.m[i].key,
                              xa_value_ref(in->u.st.m[i].val));
            }
        }
        xa_struct_set(rec, "userdevice", xa_string(dev));
        xa_struct_set(rec, "VDI", xa_string(empty ? NULL_REF : vdi));
        xa_struct_set(rec, "device", xa_string(""));
        xa_struct_set(rec, "currently_attached", xa_bool(false));
        xa_struct_set(rec, "storage_lock", xa_bool(false));
        xa_struct_set(rec, "status_code", xa_int(0));
        xa_struct_set(rec, "status_detail", xa_string(""));
        xa_struct_set(rec, "runtime_properties", xa_struct());
        xa_struct_set(rec, "qos_supported_algorithms", xa_array());
        ref = xa_ref_new();
        err = xa_db_create(t, &xa_cls_VBD, ref, rec);
        if (!err) {
            err = xa_vbd_update_allowed(t, ref);
        }
    }
    free(dev);
    err = xa_api_finish(t, err);
    if (err) {
        free(ref);
        return err;
    }
    *ret = xa_string_take(ref);
    return NULL;
}

static struct xa_error *
vbd_destroy(struct xa_call *call, struct xa_value *const *args,
            struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = NULL;
    const char *vbd = args[0]->u.str.s;
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_VBD, vbd)) {
        err = xa_error_handle_invalid("VBD", vbd);
    } else if (xa_api_bool(t, &xa_cls_VBD, vbd,
                           XA_F(xa_cls_VBD, "currently_attached"))) {
        err = xa_error_new("DEVICE_ALREADY_ATTACHED", 1, vbd);
    } else {
        err = xa_db_destroy(t, &xa_cls_VBD, vbd);
    }
    return xa_api_finish(t, err);
}

/* Checks for plug (attach true) and unplug; on success fills what the
 * driver needs. */
static struct xa_error *
plug_check(struct xa_txn *t, const char *vbd, bool attach, char **vm_uuid,
           char **userdevice, char **vdi, bool *ro, bool *cd)
{
    const char *vm = xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "VM"));
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    if (strcmp(ps, "Running") != 0) {
        char actual[16];
        snprintf(actual, sizeof actual, "%s", ps);
        actual[0] = (char)(actual[0] | 0x20);
        return xa_error_new("VM_BAD_POWER_STATE", 3, vm, "running", actual);
    }
    bool attached = xa_api_bool(t, &xa_cls_VBD, vbd,
                                XA_F(xa_cls_VBD, "currently_attached"));
    if (attach && attached) {
        return xa_error_new("DEVICE_ALREADY_ATTACHED", 1, vbd);
    }
    if (!attach && !attached) {
        return xa_error_new("DEVICE_ALREADY_DETACHED", 1, vbd);
    }
    if (!attach &&
        !xa_api_bool(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "unpluggable"))) {
        return xa_error_new("VBD_NOT_UNPLUGGABLE", 1, vbd);
    }
    *vm_uuid =
        xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
    *userdevice = xa_strdup(
        xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "userdevice")));
    const char *v = xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "VDI"));
    *vdi = xa_db_exists(t, &xa_cls_VDI, v) ? xa_strdup(v) : NULL;
    *ro = strcmp(xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "mode")),
                 "RO") == 0;
    *cd = strcmp(xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "type")),
                 "CD") == 0;
    return NULL;
}

static struct xa_error *
vbd_plug_unplug(struct xa_call *call, const char *vbd, bool attach)
{
    char *uuid = NULL, *dev = NULL, *vdi = NULL, *path = NULL, *format = NULL;
    bool ro = false, cd = false;
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err =
        plug_check(t, vbd, attach, &uuid, &dev, &vdi, &ro, &cd);
    xa_db_end(t);
    if (!err && attach && vdi) {
        err = xa_vdi_attach_path(vdi, ro, &path, &format);
    }
    if (!err) {
        if (attach) {
            struct xa_hv_disk disk = {dev, path, format, ro, cd, false};
            err = xa_hv_plug_disk(call->msg->wire, uuid, &disk);
        } else {
            err = xa_hv_name_detach(
                xa_hv_unplug_disk(call->msg->wire, uuid, dev), "VBD", vbd);
        }
    }
    if (!err) {
        t = xa_db_begin_write();
        err =
            xa_api_set(t, &xa_cls_VBD, vbd,
                       XA_F(xa_cls_VBD, "currently_attached"), xa_bool(attach));
        if (!err && attach) {
            err = xa_api_set(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "device"),
                             xa_string_take(device_name(dev)));
        }
        if (!err) {
            err = xa_vbd_update_allowed(t, vbd);
        }
        err = xa_api_finish(t, err);
    }
    free(uuid);
    free(dev);
    free(vdi);
    free(path);
    free(format);
    return err;
}

struct xa_error *
xa_impl_VBD_plug(struct xa_call *call, const char *self)
{
    return vbd_plug_unplug(call, self, true);
}

struct xa_error *
xa_impl_VBD_unplug(struct xa_call *call, const char *self)
{
    return vbd_plug_unplug(call, self, false);
}

struct xa_error *
xa_impl_VBD_unplug_force(struct xa_call *call, const char *self)
{
    return vbd_plug_unplug(call, self, false);
}

/* insert / eject: removable media only; a halted VM's drive changes in
 * the database alone, a running VM's drive sees the new medium at once
 * (the simulated and emulated drives need no driver call for it). */
static struct xa_error *
media_change(const char *vbd, const char *vdi)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    const char *type =
        xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "type"));
    bool empty = xa_api_bool(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "empty"));
    if (strcmp(type, "CD") != 0 && strcmp(type, "Floppy") != 0) {
        err = xa_error_new("VBD_NOT_REMOVABLE_MEDIA", 1, vbd);
    } else if (vdi && !empty) {
        err = xa_error_new("VBD_NOT_EMPTY", 1, vbd);
    } else if (!vdi && empty) {
        err = xa_error_new("VBD_IS_EMPTY", 1, vbd);
    } else {
        err = xa_api_set(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "VDI"),
                         xa_string(vdi ? vdi : NULL_REF));
        if (!err) {
            err = xa_api_set(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "empty"),
                             xa_bool(vdi == NULL));
        }
        if (!err) {
            err = xa_vbd_update_allowed(t, vbd);
        }
    }
    return xa_api_finish(t, err);
}

struct xa_error *
xa_impl_VBD_insert(struct xa_call *call, const char *vbd, const char *vdi)
{
    XA_UNUSED(call);
    if (strcmp(vdi, NULL_REF) == 0) {
        return xa_error_handle_invalid("VDI", vdi);
    }
    return media_change(vbd, vdi);
}

struct xa_error *
xa_impl_VBD_eject(struct xa_call *call, const char *vbd)
{
    XA_UNUSED(call);
    return media_change(vbd, NULL);
}

void
xa_vbd_init(void)
{
    xa_implicit_override("VBD.create", vbd_create);
    xa_implicit_override("VBD.destroy", vbd_destroy);
}
