/* sr.c - SR and PBD messages, and the VDI messages that only touch the
 * database (introduce, forget, set_on_boot...).
 *
 * Life of an SR, as in xapi: SR.create makes the SR row, a PBD for the
 * host (for every host when shared), asks the backend to attach and
 * prepare the storage, and reports the local PBD attached; PBD.unplug /
 * plug detach and attach it on one host; SR.destroy (every PBD
 * unplugged, else SR_HAS_PBD) removes the storage and the rows;
 * SR.forget only the rows; SR.introduce + PBD.create + PBD.plug bring an
 * existing SR (another host's shared directory) into the database.
 *
 * PBDs of other hosts are created here but plugged by their own hosts
 * (pool work, forwarded by the pool layer); this module plugs the ones
 * of this host. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/implicit.h"
#include "api/sr_api.h"
#include "log.h"
#include "self.h"
#include "xa-impl.h"

static struct xa_value *
sr_allowed_ops(void)
{
    static const char *const ops[] = {
        "scan",        "vdi_create",   "vdi_destroy",   "vdi_resize",
        "vdi_clone",   "vdi_snapshot", "vdi_introduce", "vdi_set_on_boot",
        "update",      "plug",         "unplug",        "pbd_create",
        "pbd_destroy", "forget",       "destroy",       NULL};
    struct xa_value *a = xa_array();
    for (const char *const *o = ops; *o; o++) {
        xa_array_append(a, xa_string(*o));
    }
    return a;
}

static struct xa_value *
pbd_record(const char *host, const char *sr, const struct xa_value *dc,
           bool attached)
{
    struct xa_value *r = xa_struct();
    xa_struct_set(r, "host", xa_string(host));
    xa_struct_set(r, "SR", xa_string(sr));
    xa_struct_set(r, "device_config",
                  dc ? xa_value_ref((struct xa_value *)dc) : xa_struct());
    xa_struct_set(r, "currently_attached", xa_bool(attached));
    xa_struct_set(r, "other_config", xa_struct());
    return r;
}

static struct xa_error *
set_attached(const char *pbd, bool attached)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err =
        xa_db_exists(t, &xa_cls_PBD, pbd)
            ? xa_api_set(t, &xa_cls_PBD, pbd,
                         XA_F(xa_cls_PBD, "currently_attached"),
                         xa_bool(attached))
            : xa_error_handle_invalid("PBD", pbd);
    return xa_api_finish(t, err);
}

/* Re-reads an SR's sizes from the backend into its row. */
static struct xa_error *
refresh_sizes(const char *sr, const struct xa_sr_info *s)
{
    struct xa_sr_stat st;
    struct xa_error *err = xa_sr_stat(&s->ctx, &st);
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_write();
    return xa_api_finish(
        t, xa_db_exists(t, &xa_cls_SR, sr) ? xa_sr_sizes(t, sr, &st) : NULL);
}

/* ---- scanning ---------------------------------------------------------- */

/* Brings the VDI rows of 'sr' in line with what the backend lists: new
 * images get rows, known ones their sizes, vanished ones go (or are
 * marked missing while a VM uses them). */
static struct xa_error *
sync_vdis(const char *sr, const struct xa_sr_info *s)
{
    struct xa_sr_vdi *found = NULL;
    size_t n = 0;
    struct xa_error *err = xa_sr_scan(&s->ctx, &found, &n);
    if (err) {
        return err;
    }
    struct xa_sr_stat st;
    bool have_st = xa_sr_stat(&s->ctx, &st) == NULL;
    bool *seen = xa_calloc(n + 1, sizeof *seen);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *vdis =
        xa_db_get_field(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "VDIs"));
    for (size_t i = 0; vdis && i < vdis->u.arr.n && !err; i++) {
        const char *vdi = vdis->u.arr.items[i]->u.str.s;
        const char *loc =
            xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "location"));
        size_t j = 0;
        while (j < n && strcmp(found[j].location, loc) != 0) {
            j++;
        }
        if (j < n) {
            seen[j] = true;
            err = xa_vdi_store_sizes(t, vdi, &found[j]);
            if (!err) {
                err = xa_api_set(t, &xa_cls_VDI, vdi,
                                 XA_F(xa_cls_VDI, "missing"), xa_bool(false));
            }
        } else if (xa_vdi_in_use(t, vdi)) {
            err = xa_api_set(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "missing"),
                             xa_bool(true));
        } else {
            err = xa_vdi_forget_row(t, vdi);
        }
    }
    xa_value_unref(vdis);
    for (size_t j = 0; j < n && !err; j++) {
        if (seen[j]) {
            continue;
        }
        /* A file named after a uuid keeps it, as on xapi's file SRs. */
        char uuid[37];
        char *taken = NULL;
        if (xa_uuid_valid(found[j].location)) {
            snprintf(uuid, sizeof uuid, "%s", found[j].location);
            taken = xa_db_ref_by_uuid(t, &xa_cls_VDI, uuid);
        }
        if (!xa_uuid_valid(found[j].location) || taken) {
            xa_uuid_generate(uuid);
        }
        free(taken);
        struct xa_value *f = xa_struct();
        xa_struct_set(f, "name_label", xa_string(found[j].location));
        xa_struct_set(f, "type", xa_string("user"));
        char *ref = xa_ref_new();
        err = xa_sr_record_vdi(t, ref, uuid, sr, &found[j], f);
        free(ref);
    }
    if (!err) {
        err = xa_sr_sizes(t, sr, have_st ? &st : NULL);
    }
    err = xa_api_finish(t, err);
    free(seen);
    xa_sr_vdi_free_array(found, n);
    return err;
}

/* Runs 'fn' on 'sr' as plugged on this host. */
static struct xa_error *
with_plugged(const char *sr,
             struct xa_error *(*fn)(const char *, const struct xa_sr_info *))
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    struct xa_error *err = xa_sr_info_plugged(t, sr, &s);
    xa_db_end(t);
    if (err) {
        return err;
    }
    struct xa_error *done = fn(sr, &s);
    xa_sr_info_free(&s);
    /* 'done' is fn's own allocation, not a pointer into 's' */
    // cppcheck-suppress returnDanglingLifetime
    return done;
}

struct xa_error *
xa_impl_SR_scan(struct xa_call *call, const char *sr)
{
    XA_UNUSED(call);
    return with_plugged(sr, sync_vdis);
}

struct xa_error *
xa_impl_SR_update(struct xa_call *call, const char *sr)
{
    XA_UNUSED(call);
    return with_plugged(sr, refresh_sizes);
}

/* ---- SR life cycle ----------------------------------------------------- */

static struct xa_value *
all_hosts(void)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *h = xa_db_get_all(t, &xa_cls_host);
    xa_db_end(t);
    return h;
}

struct xa_error *
xa_impl_SR_create(struct xa_call *call, const char *host,
                  const struct xa_value *device_config, int64_t physical_size,
                  const char *name_label, const char *name_description,
                  const char *type, const char *content_type, bool shared,
                  const struct xa_value *sm_config, struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(physical_size); /* the backend knows the real size */
    const struct xa_sr_driver *drv = xa_sr_driver_for(type);
    if (!drv) {
        return xa_error_new("SR_UNKNOWN_DRIVER", 1, type);
    }
    struct xa_txn *t = xa_db_begin_read();
    bool host_ok = xa_db_exists(t, &xa_cls_host, host);
    xa_db_end(t);
    if (!host_ok) {
        return xa_error_handle_invalid("host", host);
    }
    if (strcmp(host, xa_self_host()) != 0) {
        /* The backend has to run where the storage is; the pool layer
         * forwards such calls to the host that owns it. */
        return xa_error_new("OPERATION_NOT_ALLOWED", 1,
                            "SR.create must run on the SR's host");
    }
    char uuid[37];
    xa_uuid_generate(uuid);
    struct xa_sr_info s;
    xa_sr_info_make(&s, uuid, type, device_config, shared);
    struct xa_sr_stat st = {0, 0};
    struct xa_error *err = xa_sr_attach(&s.ctx);
    if (!err) {
        err = xa_sr_create(&s.ctx);
        if (!err) {
            err = xa_sr_stat(&s.ctx, &st);
            if (err) {
                xa_error_free(xa_sr_destroy(&s.ctx));
            }
        }
        if (err) {
            xa_error_free(xa_sr_detach(&s.ctx));
        }
    }
    if (err) {
        xa_sr_info_free(&s);
        return err;
    }
    char *sr = xa_ref_new();
    struct xa_value *rec = xa_struct();
    xa_struct_set(rec, "uuid", xa_string(uuid));
    xa_struct_set(rec, "name_label", xa_string(name_label));
    xa_struct_set(rec, "name_description", xa_string(name_description));
    xa_struct_set(rec, "type", xa_string(type));
    xa_struct_set(rec, "content_type",
                  xa_string(content_type && *content_type ? content_type
                            : drv->content_type           ? drv->content_type
                                                          : "user"));
    xa_struct_set(rec, "shared", xa_bool(shared));
    xa_struct_set(rec, "physical_size", xa_int(st.physical_size));
    xa_struct_set(rec, "physical_utilisation", xa_int(st.physical_utilisation));
    xa_struct_set(rec, "virtual_allocation", xa_int(0));
    xa_struct_set(rec, "sm_config",
                  sm_config ? xa_value_ref((struct xa_value *)sm_config)
                            : xa_struct());
    xa_struct_set(rec, "other_config", xa_struct());
    xa_struct_set(rec, "allowed_operations", sr_allowed_ops());
    struct xa_value *hosts = shared ? all_hosts() : NULL;
    t = xa_db_begin_write();
    err = xa_db_create(t, &xa_cls_SR, sr, rec);
    if (!err) {
        char *pbd = xa_ref_new();
        err = xa_db_create(t, &xa_cls_PBD, pbd,
                           pbd_record(host, sr, device_config, true));
        free(pbd);
    }
    for (size_t i = 0; hosts && i < hosts->u.arr.n && !err; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        if (strcmp(h, host) != 0) {
            char *pbd = xa_ref_new();
            err = xa_db_create(t, &xa_cls_PBD, pbd,
                               pbd_record(h, sr, device_config, false));
            free(pbd);
        }
    }
    err = xa_api_finish(t, err);
    xa_value_unref(hosts);
    if (err) {
        xa_error_free(xa_sr_destroy(&s.ctx));
        xa_error_free(xa_sr_detach(&s.ctx));
        xa_sr_info_free(&s);
        free(sr);
        return err;
    }
    /* What the storage already holds (an ISO library's files). */
    struct xa_error *e = sync_vdis(sr, &s);
    if (e) {
        xa_log_warn("storage", "first scan of SR %s: %s", uuid, e->code);
        xa_error_free(e);
    }
    xa_log_info("storage", "created %s SR %s at %s", type, uuid, s.path);
    xa_sr_info_free(&s);
    *ret = xa_string_take(sr);
    return NULL;
}

struct xa_error *
xa_impl_SR_introduce(struct xa_call *call, const char *uuid,
                     const char *name_label, const char *name_description,
                     const char *type, const char *content_type, bool shared,
                     const struct xa_value *sm_config, struct xa_value **ret)
{
    XA_UNUSED(call);
    char u[37];
    if (uuid && *uuid) {
        if (!xa_uuid_valid(uuid)) {
            return xa_error_new("UUID_INVALID", 2, "SR", uuid);
        }
        snprintf(u, sizeof u, "%s", uuid);
    } else {
        xa_uuid_generate(u);
    }
    struct xa_value *rec = xa_struct();
    xa_struct_set(rec, "uuid", xa_string(u));
    xa_struct_set(rec, "name_label", xa_string(name_label));
    xa_struct_set(rec, "name_description", xa_string(name_description));
    xa_struct_set(rec, "type", xa_string(type));
    xa_struct_set(rec, "content_type", xa_string(content_type));
    xa_struct_set(rec, "shared", xa_bool(shared));
    xa_struct_set(rec, "sm_config",
                  sm_config ? xa_value_ref((struct xa_value *)sm_config)
                            : xa_struct());
    xa_struct_set(rec, "allowed_operations", sr_allowed_ops());
    char *ref = xa_ref_new();
    struct xa_txn *t = xa_db_begin_write();
    char *taken = xa_db_ref_by_uuid(t, &xa_cls_SR, u);
    struct xa_error *err = NULL;
    if (taken) {
        err = xa_error_new("SR_UUID_EXISTS", 1, u);
        xa_value_unref(rec);
    } else {
        err = xa_db_create(t, &xa_cls_SR, ref, rec);
    }
    free(taken);
    err = xa_api_finish(t, err);
    if (err) {
        free(ref);
        return err;
    }
    *ret = xa_string_take(ref);
    return NULL;
}

/* SR_HAS_PBD while any PBD of 'sr' is plugged; '*pbds' gets them all. */
static struct xa_error *
check_unplugged(struct xa_txn *t, const char *sr, struct xa_value **pbds)
{
    if (!xa_db_exists(t, &xa_cls_SR, sr)) {
        return xa_error_handle_invalid("SR", sr);
    }
    *pbds = xa_db_get_field(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "PBDs"));
    for (size_t i = 0; *pbds && i < (*pbds)->u.arr.n; i++) {
        if (xa_api_bool(t, &xa_cls_PBD, (*pbds)->u.arr.items[i]->u.str.s,
                        XA_F(xa_cls_PBD, "currently_attached"))) {
            return xa_error_new("SR_HAS_PBD", 1, sr);
        }
    }
    return NULL;
}

/* Removes the rows of an SR, its VDIs and its PBDs. */
static struct xa_error *
forget_rows(const char *sr)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *pbds = NULL;
    struct xa_error *err = check_unplugged(t, sr, &pbds);
    struct xa_value *vdis =
        err ? NULL
            : xa_db_get_field(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "VDIs"));
    for (size_t i = 0; vdis && i < vdis->u.arr.n && !err; i++) {
        err = xa_vdi_forget_row(t, vdis->u.arr.items[i]->u.str.s);
    }
    for (size_t i = 0; pbds && i < pbds->u.arr.n && !err; i++) {
        err = xa_db_destroy(t, &xa_cls_PBD, pbds->u.arr.items[i]->u.str.s);
    }
    if (!err) {
        err = xa_db_destroy(t, &xa_cls_SR, sr);
    }
    xa_value_unref(vdis);
    xa_value_unref(pbds);
    return xa_api_finish(t, err);
}

struct xa_error *
xa_impl_SR_forget(struct xa_call *call, const char *sr)
{
    XA_UNUSED(call);
    return forget_rows(sr);
}

struct xa_error *
xa_impl_SR_destroy(struct xa_call *call, const char *sr)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *pbds = NULL;
    struct xa_error *err = check_unplugged(t, sr, &pbds);
    xa_value_unref(pbds);
    struct xa_sr_info s;
    if (!err) {
        err = xa_sr_info_read(t, sr, &s);
    }
    bool in_use = false;
    struct xa_value *vdis =
        err ? NULL
            : xa_db_get_field(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "VDIs"));
    for (size_t i = 0; vdis && i < vdis->u.arr.n && !in_use; i++) {
        in_use = xa_vdi_in_use(t, vdis->u.arr.items[i]->u.str.s);
    }
    xa_value_unref(vdis);
    xa_db_end(t);
    if (err) {
        return err;
    }
    if (in_use) {
        xa_sr_info_free(&s);
        return xa_error_new("SR_NOT_EMPTY", 0);
    }
    /* The storage is reachable only while attached: attach for the
     * removal, then let go. */
    err = xa_sr_attach(&s.ctx);
    if (!err) {
        err = xa_sr_destroy(&s.ctx);
        xa_error_free(xa_sr_detach(&s.ctx));
    }
    if (!err) {
        err = forget_rows(sr);
    }
    xa_sr_info_free(&s);
    return err;
}

struct xa_error *
xa_impl_SR_probe(struct xa_call *call, const char *host,
                 const struct xa_value *device_config, const char *type,
                 const struct xa_value *sm_config, struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(host);
    XA_UNUSED(sm_config);
    char *xml = NULL;
    struct xa_error *err = xa_sr_probe(type, device_config, &xml);
    if (!err) {
        *ret = xa_string_take(xml);
    }
    return err;
}

struct xa_error *
xa_impl_SR_get_supported_types(struct xa_call *call, struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = xa_sr_types();
    return NULL;
}

static struct xa_error *
set_one(const struct xa_class_desc *cls, const char *ref, const char *field,
        struct xa_value *v)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err =
        xa_db_exists(t, cls, ref)
            ? xa_api_set(t, cls, ref, xa_api_field(cls, field), v)
            : (xa_value_unref(v), xa_error_handle_invalid(cls->name, ref));
    return xa_api_finish(t, err);
}

/* ---- PBDs -------------------------------------------------------------- */

/* Reads what plugging 'pbd' needs; only this host's PBDs are served. */
static struct xa_error *
pbd_info(const char *pbd, struct xa_sr_info *s, char **sr)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_PBD, pbd)) {
        err = xa_error_handle_invalid("PBD", pbd);
    } else if (strcmp(xa_api_str(t, &xa_cls_PBD, pbd, XA_F(xa_cls_PBD, "host")),
                      xa_self_host()) != 0) {
        err = xa_error_new("OPERATION_NOT_ALLOWED", 1,
                           "the PBD belongs to another host");
    } else {
        *sr =
            xa_strdup(xa_api_str(t, &xa_cls_PBD, pbd, XA_F(xa_cls_PBD, "SR")));
        struct xa_value *dc = xa_db_get_field(
            t, &xa_cls_PBD, pbd, XA_F(xa_cls_PBD, "device_config"));
        xa_sr_info_make(
            s, xa_api_str(t, &xa_cls_SR, *sr, XA_F(xa_cls_SR, "uuid")),
            xa_api_str(t, &xa_cls_SR, *sr, XA_F(xa_cls_SR, "type")), dc,
            xa_api_bool(t, &xa_cls_SR, *sr, XA_F(xa_cls_SR, "shared")));
        xa_value_unref(dc);
        s->attached = xa_api_bool(t, &xa_cls_PBD, pbd,
                                  XA_F(xa_cls_PBD, "currently_attached"));
    }
    xa_db_end(t);
    return err;
}

struct xa_error *
xa_impl_PBD_plug(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_sr_info s;
    char *sr = NULL;
    struct xa_error *err = pbd_info(self, &s, &sr);
    if (err) {
        return err;
    }
    err = xa_sr_attach(&s.ctx);
    if (!err) {
        err = set_attached(self, true);
    }
    if (!err) {
        xa_error_free(refresh_sizes(sr, &s));
    }
    xa_sr_info_free(&s);
    free(sr);
    return err;
}

struct xa_error *
xa_impl_PBD_unplug(struct xa_call *call, const char *self)
{
    XA_UNUSED(call);
    struct xa_sr_info s;
    char *sr = NULL;
    struct xa_error *err = pbd_info(self, &s, &sr);
    if (err) {
        return err;
    }
    /* xapi's check: no VDI of the SR may be in use by a running VM on
     * this host; the error lists them. */
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *vdis =
        xa_db_get_field(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "VDIs"));
    struct xa_value *busy = xa_array();
    for (size_t i = 0; vdis && i < vdis->u.arr.n; i++) {
        const char *v = vdis->u.arr.items[i]->u.str.s;
        if (xa_vdi_in_use(t, v)) {
            xa_array_append(busy, xa_string(v));
        }
    }
    xa_value_unref(vdis);
    xa_db_end(t);
    if (busy->u.arr.n) {
        err = xa_error_new("VDI_IN_USE", 1, busy->u.arr.items[0]->u.str.s);
        for (size_t i = 1; i < busy->u.arr.n; i++) {
            xa_error_add_param(err, busy->u.arr.items[i]->u.str.s);
        }
    }
    xa_value_unref(busy);
    if (!err) {
        err = xa_sr_detach(&s.ctx);
    }
    if (!err) {
        err = set_attached(self, false);
    }
    xa_sr_info_free(&s);
    free(sr);
    return err;
}

/* PBD.create: one PBD per host and SR, as xapi insists. */
static struct xa_error *
pbd_create(struct xa_call *call, struct xa_value *const *args,
           struct xa_value **ret)
{
    const char *sr = xa_struct_get_str(args[0], "SR");
    const char *host = xa_struct_get_str(args[0], "host");
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = NULL;
    if (!sr || !xa_db_exists(t, &xa_cls_SR, sr)) {
        err = xa_error_handle_invalid("SR", sr ? sr : "");
    } else if (!host || !xa_db_exists(t, &xa_cls_host, host)) {
        err = xa_error_handle_invalid("host", host ? host : "");
    } else {
        struct xa_value *pbds =
            xa_db_get_field(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "PBDs"));
        for (size_t i = 0; pbds && i < pbds->u.arr.n && !err; i++) {
            const char *p = pbds->u.arr.items[i]->u.str.s;
            if (strcmp(xa_api_str(t, &xa_cls_PBD, p, XA_F(xa_cls_PBD, "host")),
                       host) == 0) {
                err = xa_error_new("PBD_EXISTS", 3, sr, host, p);
            }
        }
        xa_value_unref(pbds);
    }
    xa_db_end(t);
    return err ? err : xa_implicit_generic(call, args, ret);
}

static struct xa_error *
pbd_destroy(struct xa_call *call, struct xa_value *const *args,
            struct xa_value **ret)
{
    const char *pbd = args[0]->u.str.s;
    struct xa_txn *t = xa_db_begin_read();
    bool attached = xa_api_bool(t, &xa_cls_PBD, pbd,
                                XA_F(xa_cls_PBD, "currently_attached"));
    xa_db_end(t);
    if (attached) {
        return xa_error_new("OPERATION_NOT_ALLOWED", 1,
                            "PBD is currently attached");
    }
    return xa_implicit_generic(call, args, ret);
}

/* ---- VDIs: database only ----------------------------------------------- */

struct loc_find {
    struct xa_txn *t;
    const char *sr, *location;
    bool found;
};

static bool
find_location(const char *ref, void *ctx)
{
    struct loc_find *f = ctx;
    if (strcmp(xa_api_str(f->t, &xa_cls_VDI, ref, XA_F(xa_cls_VDI, "SR")),
               f->sr) == 0 &&
        strcmp(xa_api_str(f->t, &xa_cls_VDI, ref, XA_F(xa_cls_VDI, "location")),
               f->location) == 0) {
        f->found = true;
        return false;
    }
    return true;
}

struct xa_error *
xa_impl_VDI_introduce(struct xa_call *call, const char *uuid,
                      const char *name_label, const char *name_description,
                      const char *SR, const char *type, bool sharable,
                      bool read_only, const struct xa_value *other_config,
                      const char *location,
                      const struct xa_value *xenstore_data,
                      const struct xa_value *sm_config, bool managed,
                      int64_t virtual_size, int64_t physical_utilisation,
                      const char *metadata_of_pool, bool is_a_snapshot,
                      const char *snapshot_time, const char *snapshot_of,
                      struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(virtual_size); /* the image says */
    XA_UNUSED(physical_utilisation);
    XA_UNUSED(metadata_of_pool);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    struct xa_error *err = xa_sr_info_plugged(t, SR, &s);
    xa_db_end(t);
    if (err) {
        return err;
    }
    struct xa_sr_vdi v = {0};
    err = xa_sr_vdi_stat(&s.ctx, location, &v);
    xa_sr_info_free(&s);
    if (err) {
        return err;
    }
    char u[37];
    if (uuid && *uuid) {
        snprintf(u, sizeof u, "%s", uuid);
    } else {
        xa_uuid_generate(u);
    }
    struct xa_value *f = xa_struct();
    xa_struct_set(f, "name_label", xa_string(name_label));
    xa_struct_set(f, "name_description", xa_string(name_description));
    xa_struct_set(f, "type", xa_string(type));
    xa_struct_set(f, "sharable", xa_bool(sharable));
    xa_struct_set(f, "read_only", xa_bool(read_only || v.read_only));
    xa_struct_set(f, "managed", xa_bool(managed));
    xa_struct_set(f, "is_a_snapshot", xa_bool(is_a_snapshot));
    if (snapshot_of && strncmp(snapshot_of, "OpaqueRef:", 10) == 0) {
        xa_struct_set(f, "snapshot_of", xa_string(snapshot_of));
    }
    if (snapshot_time && *snapshot_time) {
        xa_struct_set(f, "snapshot_time", xa_datetime(snapshot_time));
    }
    const char *const map_names[] = {"other_config", "xenstore_data",
                                     "sm_config"};
    const struct xa_value *const map_vals[] = {other_config, xenstore_data,
                                               sm_config};
    for (size_t i = 0; i < XA_ARRAY_SIZE(map_names); i++) {
        if (map_vals[i]) {
            xa_struct_set(f, map_names[i],
                          xa_value_ref((struct xa_value *)map_vals[i]));
        }
    }
    char *ref = xa_ref_new();
    t = xa_db_begin_write();
    struct loc_find lf = {t, SR, location, false};
    xa_db_foreach(t, &xa_cls_VDI, find_location, &lf);
    char *taken = xa_db_ref_by_uuid(t, &xa_cls_VDI, u);
    if (lf.found) {
        err = xa_error_new("LOCATION_NOT_UNIQUE", 2, SR, location);
    } else if (taken || !xa_uuid_valid(u)) {
        err = xa_error_invalid_value("uuid", u);
    }
    free(taken);
    if (!err) {
        err = xa_sr_record_vdi(t, ref, u, SR, &v, f);
        f = NULL;
    }
    xa_value_unref(f);
    err = xa_api_finish(t, err);
    free(v.location);
    if (err) {
        free(ref);
        return err;
    }
    *ret = xa_string_take(ref);
    return NULL;
}

struct xa_error *
xa_impl_VDI_forget(struct xa_call *call, const char *vdi)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_VDI, vdi)) {
        err = xa_error_handle_invalid("VDI", vdi);
    } else if (xa_vdi_in_use(t, vdi)) {
        err = xa_error_new("VDI_IN_USE", 2, vdi, "forget");
    } else {
        err = xa_vdi_forget_row(t, vdi);
    }
    return xa_api_finish(t, err);
}

struct xa_error *
xa_impl_VDI_set_on_boot(struct xa_call *call, const char *self,
                        const char *value)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    bool busy = xa_db_exists(t, &xa_cls_VDI, self) && xa_vdi_in_use(t, self);
    xa_db_end(t);
    if (busy) {
        return xa_error_new("VDI_IN_USE", 2, self, "set_on_boot");
    }
    return set_one(&xa_cls_VDI, self, "on_boot", xa_string(value));
}

struct xa_error *
xa_impl_VDI_update(struct xa_call *call, const char *vdi)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, vdi, &s, &loc);
    xa_db_end(t);
    if (err) {
        return err;
    }
    struct xa_sr_vdi v = {0};
    err = xa_sr_vdi_stat(&s.ctx, loc, &v);
    if (!err) {
        t = xa_db_begin_write();
        err = xa_api_finish(t, xa_vdi_store_sizes(t, vdi, &v));
    }
    free(v.location);
    free(loc);
    xa_sr_info_free(&s);
    return err;
}

void
xa_sr_api_init(void)
{
    xa_implicit_override("PBD.create", pbd_create);
    xa_implicit_override("PBD.destroy", pbd_destroy);
}
