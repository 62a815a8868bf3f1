/* sr_minimal.c - just enough storage for VMs to have disks.
 *
 * The local SR every host starts with ("Local storage", type ext, backed
 * by a directory under the state directory), and the VDI messages that
 * provisioning, cloning and suspending need: create, destroy, clone,
 * snapshot, copy, resize.  Everything that touches image files goes
 * through the SR driver interface (storage/sr.h); the fuller storage work
 * (SR.create, PBD.plug, scans, other backends) builds on the same
 * interface. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/implicit.h"
#include "api/sr_api.h"
#include "api/vm.h"
#include "log.h"
#include "self.h"
#include "storage/sr.h"
#include "xa-impl.h"

#define NULL_REF XA_NULL_REF

void
xa_sr_info_free(struct xa_sr_info *s)
{
    free(s->uuid);
    free(s->type);
    free(s->path);
    free(s->pbd);
    xa_value_unref(s->dc);
    memset(s, 0, sizeof *s);
}

/* Where an SR's images are on this host (see struct xa_sr_ctx). */
static char *
sr_dir(const char *uuid, const struct xa_value *dc)
{
    const char *p = dc ? xa_struct_get_str(dc, "location") : NULL;
    if (!p || !*p) {
        p = dc ? xa_struct_get_str(dc, "path") : NULL;
    }
    return p && *p ? xa_strdup(p)
                   : xa_asprintf("%s/sr/%s", xa_self_state_dir(), uuid);
}

void
xa_sr_info_make(struct xa_sr_info *s, const char *uuid, const char *type,
                const struct xa_value *dc, bool shared)
{
    memset(s, 0, sizeof *s);
    s->uuid = xa_strdup(uuid);
    s->type = xa_strdup(type);
    s->dc = dc ? xa_value_ref((struct xa_value *)dc) : xa_struct();
    s->path = sr_dir(uuid, s->dc);
    s->ctx.uuid = s->uuid;
    s->ctx.type = s->type;
    s->ctx.path = s->path;
    s->ctx.device_config = s->dc;
    s->ctx.shared = shared;
}

struct pbd_find {
    struct xa_txn *t;
    const char *sr;
    char *pbd;
};

static bool
find_pbd(const char *ref, void *ctx)
{
    struct pbd_find *f = ctx;
    if (strcmp(xa_api_str(f->t, &xa_cls_PBD, ref, XA_F(xa_cls_PBD, "SR")),
               f->sr) != 0 ||
        strcmp(xa_api_str(f->t, &xa_cls_PBD, ref, XA_F(xa_cls_PBD, "host")),
               xa_self_host()) != 0) {
        return true;
    }
    f->pbd = xa_strdup(ref);
    return false;
}

struct xa_error *
xa_sr_info_read(struct xa_txn *t, const char *sr, struct xa_sr_info *s)
{
    memset(s, 0, sizeof *s);
    if (!xa_db_exists(t, &xa_cls_SR, sr)) {
        return xa_error_handle_invalid("SR", sr);
    }
    struct pbd_find f = {t, sr, NULL};
    xa_db_foreach(t, &xa_cls_PBD, find_pbd, &f);
    if (!f.pbd) {
        return xa_error_new("SR_HAS_NO_PBDS", 1, sr);
    }
    struct xa_value *dc = xa_db_get_field(t, &xa_cls_PBD, f.pbd,
                                          XA_F(xa_cls_PBD, "device_config"));
    xa_sr_info_make(s, xa_api_str(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "uuid")),
                    xa_api_str(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "type")), dc,
                    xa_api_bool(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "shared")));
    xa_value_unref(dc);
    s->pbd = f.pbd;
    s->attached = xa_api_bool(t, &xa_cls_PBD, f.pbd,
                              XA_F(xa_cls_PBD, "currently_attached"));
    return NULL;
}

struct xa_error *
xa_sr_info_plugged(struct xa_txn *t, const char *sr, struct xa_sr_info *s)
{
    struct xa_error *err = xa_sr_info_read(t, sr, s);
    if (!err && !s->attached) {
        xa_sr_info_free(s);
        err = xa_error_new("SR_NOT_ATTACHED", 1, sr);
    }
    return err;
}

struct first_sr {
    struct xa_txn *t;
    char *sr;
};

static bool
first_local_sr(const char *ref, void *ctx)
{
    struct first_sr *f = ctx;
    const char *sr = xa_api_str(f->t, &xa_cls_PBD, ref, XA_F(xa_cls_PBD, "SR"));
    const char *ct =
        xa_api_str(f->t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "content_type"));
    if (strcmp(xa_api_str(f->t, &xa_cls_PBD, ref, XA_F(xa_cls_PBD, "host")),
               xa_self_host()) == 0 &&
        strcmp(ct, "iso") != 0 && xa_db_exists(f->t, &xa_cls_SR, sr)) {
        f->sr = xa_strdup(sr);
        return false;
    }
    return true;
}

char *
xa_sr_default(struct xa_txn *t)
{
    char *pool = xa_api_pool(t);
    if (pool) {
        const char *sr =
            xa_api_str(t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "default_SR"));
        if (xa_db_exists(t, &xa_cls_SR, sr)) {
            char *r = xa_strdup(sr);
            free(pool);
            return r;
        }
        free(pool);
    }
    struct first_sr f = {t, NULL};
    xa_db_foreach(t, &xa_cls_PBD, first_local_sr, &f);
    return f.sr;
}

/* Sum of the virtual sizes of an SR's VDIs. */
static int64_t
virtual_allocation(struct xa_txn *t, const char *sr)
{
    struct xa_value *vdis =
        xa_db_get_field(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "VDIs"));
    int64_t sum = 0;
    for (size_t i = 0; vdis && i < vdis->u.arr.n; i++) {
        sum += xa_api_int(t, &xa_cls_VDI, vdis->u.arr.items[i]->u.str.s,
                          XA_F(xa_cls_VDI, "virtual_size"));
    }
    xa_value_unref(vdis);
    return sum;
}

struct xa_error *
xa_sr_sizes(struct xa_txn *t, const char *sr, const struct xa_sr_stat *st)
{
    struct xa_error *err = NULL;
    if (st) {
        err = xa_api_set(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "physical_size"),
                         xa_int(st->physical_size));
        if (!err) {
            err = xa_api_set(t, &xa_cls_SR, sr,
                             XA_F(xa_cls_SR, "physical_utilisation"),
                             xa_int(st->physical_utilisation));
        }
    }
    if (!err) {
        err =
            xa_api_set(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "virtual_allocation"),
                       xa_int(virtual_allocation(t, sr)));
    }
    return err;
}

bool
xa_sr_attached_on(struct xa_txn *t, const char *sr, const char *host)
{
    struct xa_value *pbds =
        xa_db_get_field(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "PBDs"));
    bool ok = false;
    for (size_t i = 0; pbds && i < pbds->u.arr.n && !ok; i++) {
        const char *p = pbds->u.arr.items[i]->u.str.s;
        ok = strcmp(xa_api_str(t, &xa_cls_PBD, p, XA_F(xa_cls_PBD, "host")),
                    host) == 0 &&
             xa_api_bool(t, &xa_cls_PBD, p,
                         XA_F(xa_cls_PBD, "currently_attached"));
    }
    xa_value_unref(pbds);
    return ok;
}

char *
xa_sr_host_for(struct xa_txn *t, const struct xa_value *srs)
{
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    char *found = NULL;
    for (size_t h = 0; !found && h <= (hosts ? hosts->u.arr.n : 0); h++) {
        const char *cand =
            h == 0 ? xa_self_host() : hosts->u.arr.items[h - 1]->u.str.s;
        bool all = true;
        for (size_t i = 0; i < srs->u.arr.n && all; i++) {
            all = xa_sr_attached_on(t, srs->u.arr.items[i]->u.str.s, cand);
        }
        if (all) {
            found = xa_strdup(cand);
        }
    }
    xa_value_unref(hosts);
    return found;
}

struct xa_error *
xa_vdi_store_sizes(struct xa_txn *t, const char *vdi, const struct xa_sr_vdi *v)
{
    struct xa_error *err =
        xa_api_set(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "virtual_size"),
                   xa_int(v->virtual_size));
    if (!err) {
        err = xa_api_set(t, &xa_cls_VDI, vdi,
                         XA_F(xa_cls_VDI, "physical_utilisation"),
                         xa_int(v->physical_utilisation));
    }
    return err;
}

/* The SRs are thin, so it is the physically free space that counts,
 * not the sum of virtual sizes. */
struct xa_error *
xa_sr_check_space(const struct xa_sr_stat *st, int64_t size)
{
    int64_t free_bytes = st->physical_size - st->physical_utilisation;
    if (size > free_bytes) {
        char r[32], m[32];
        snprintf(r, sizeof r, "%" PRId64, size);
        snprintf(m, sizeof m, "%" PRId64, free_bytes);
        return xa_error_new("SR_FULL", 2, r, m);
    }
    return NULL;
}

/* The VDI operations that are possible given how the VDI is used. */
static struct xa_value *
vdi_allowed_ops(bool in_use)
{
    static const char *const idle[] = {
        "clone",  "copy",   "resize",          "snapshot",    "destroy",
        "forget", "update", "generate_config", "set_on_boot", NULL};
    static const char *const busy[] = {"clone",           "copy",   "snapshot",
                                       "generate_config", "update", NULL};
    struct xa_value *a = xa_array();
    for (const char *const *p = in_use ? busy : idle; *p; p++) {
        xa_array_append(a, xa_string(*p));
    }
    return a;
}

struct xa_error *
xa_sr_record_vdi(struct xa_txn *t, const char *ref, const char *uuid,
                 const char *sr, const struct xa_sr_vdi *v,
                 struct xa_value *extra)
{
    struct xa_value *rec = xa_struct();
    xa_struct_set(rec, "uuid", xa_string(uuid));
    xa_struct_set(rec, "SR", xa_string(sr));
    xa_struct_set(rec, "virtual_size", xa_int(v->virtual_size));
    xa_struct_set(rec, "physical_utilisation", xa_int(v->physical_utilisation));
    xa_struct_set(rec, "location", xa_string(v->location));
    xa_struct_set(rec, "managed", xa_bool(true));
    xa_struct_set(rec, "missing", xa_bool(false));
    xa_struct_set(rec, "storage_lock", xa_bool(false));
    xa_struct_set(rec, "parent", xa_string(NULL_REF));
    xa_struct_set(rec, "allowed_operations", vdi_allowed_ops(false));
    if (v->read_only) {
        xa_struct_set(rec, "read_only", xa_bool(true));
    }
    for (size_t i = 0; extra && i < extra->u.st.n; i++) {
        xa_struct_set(rec, extra->u.st.m[i].key,
                      xa_value_ref(extra->u.st.m[i].val));
    }
    xa_value_unref(extra);
    struct xa_error *err = xa_db_create(t, &xa_cls_VDI, ref, rec);
    return err ? err : xa_sr_sizes(t, sr, NULL);
}

static struct xa_error *
make_vdi(const char *sr, int64_t size, struct xa_value *fields, char **ret)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    struct xa_error *err = xa_sr_info_plugged(t, sr, &s);
    xa_db_end(t);
    if (err) {
        xa_value_unref(fields);
        return err;
    }
    struct xa_sr_stat st;
    err = xa_sr_stat(&s.ctx, &st);
    if (!err) {
        err = xa_sr_check_space(&st, size);
    }
    char uuid[37];
    xa_uuid_generate(uuid);
    struct xa_sr_vdi v = {0};
    if (!err) {
        err = xa_sr_vdi_create(&s.ctx, uuid, size, &v);
    }
    if (err) {
        xa_sr_info_free(&s);
        xa_value_unref(fields);
        return err;
    }
    char *ref = xa_ref_new();
    t = xa_db_begin_write();
    err = xa_sr_record_vdi(t, ref, uuid, sr, &v, fields);
    if (!err) {
        err = xa_sr_sizes(t, sr, &st);
    }
    err = xa_api_finish(t, err);
    if (err) {
        xa_error_free(xa_sr_vdi_destroy(&s.ctx, v.location));
        free(ref);
    } else {
        *ret = ref;
    }
    free(v.location);
    xa_sr_info_free(&s);
    return err;
}

struct xa_error *
xa_vdi_make(const char *sr, const char *name_label,
            const char *name_description, int64_t size, const char *type,
            bool sharable, bool read_only, struct xa_value *other_config,
            char **ret)
{
    struct xa_value *f = xa_struct();
    xa_struct_set(f, "name_label", xa_string(name_label));
    xa_struct_set(f, "name_description", xa_string(name_description));
    xa_struct_set(f, "type", xa_string(type));
    xa_struct_set(f, "sharable", xa_bool(sharable));
    xa_struct_set(f, "read_only", xa_bool(read_only));
    xa_struct_set(f, "other_config", other_config);
    return make_vdi(sr, size, f, ret);
}

/* VDI.create: the generic create would make a row with no image behind
 * it; this one makes the file first. */
static struct xa_error *
vdi_create(struct xa_call *call, struct xa_value *const *args,
           struct xa_value **ret)
{
    XA_UNUSED(call);
    const struct xa_value *rec = args[0];
    static const char *const required[] = {
        "SR",        "virtual_size", "type", "sharable",
        "read_only", "other_config", NULL};
    for (const char *const *r = required; *r; r++) {
        if (!xa_struct_get(rec, *r)) {
            return xa_error_internal("Field %s is required by VDI.create", *r);
        }
    }
    const char *sr = xa_struct_get_str(rec, "SR");
    int64_t size = xa_struct_get(rec, "virtual_size")->u.i;
    if (size < 0) {
        char *s = xa_api_i64(size);
        struct xa_error *e = xa_error_invalid_value("virtual_size", s);
        free(s);
        return e;
    }
    struct xa_value *f = xa_struct();
    static const char *const copied[] = {"name_label",    "name_description",
                                         "type",          "sharable",
                                         "read_only",     "other_config",
                                         "xenstore_data", "sm_config",
                                         "tags",          NULL};
    for (const char *const *c = copied; *c; c++) {
        struct xa_value *v = xa_struct_get(rec, *c);
        if (v) {
            xa_struct_set(f, *c, xa_value_ref(v));
        }
    }
    char *ref = NULL;
    struct xa_error *err = make_vdi(sr ? sr : "", size, f, &ref);
    if (!err) {
        *ret = xa_string_take(ref);
    }
    return err;
}

bool
xa_vdi_in_use(struct xa_txn *t, const char *vdi)
{
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "VBDs"));
    bool busy = false;
    for (size_t i = 0; vbds && i < vbds->u.arr.n && !busy; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        const char *vm = xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "VM"));
        const char *ps =
            xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
        busy = xa_api_bool(t, &xa_cls_VBD, b,
                           XA_F(xa_cls_VBD, "currently_attached")) ||
               strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0;
    }
    xa_value_unref(vbds);
    return busy;
}

/* Removes the row of 'vdi' and the VBDs that pointed at it (their VMs
 * are halted: a disk that no longer exists cannot stay attached). */
struct xa_error *
xa_vdi_forget_row(struct xa_txn *t, const char *vdi)
{
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "VBDs"));
    struct xa_error *err = NULL;
    for (size_t i = 0; vbds && i < vbds->u.arr.n && !err; i++) {
        err = xa_db_destroy(t, &xa_cls_VBD, vbds->u.arr.items[i]->u.str.s);
    }
    xa_value_unref(vbds);
    if (!err) {
        char *sr =
            xa_strdup(xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR")));
        err = xa_db_destroy(t, &xa_cls_VDI, vdi);
        if (!err && xa_db_exists(t, &xa_cls_SR, sr)) {
            err = xa_sr_sizes(t, sr, NULL);
        }
        free(sr);
    }
    return err;
}

struct xa_error *
xa_vdi_locate(struct xa_txn *t, const char *vdi, struct xa_sr_info *s,
              char **location)
{
    if (!xa_db_exists(t, &xa_cls_VDI, vdi)) {
        return xa_error_handle_invalid("VDI", vdi);
    }
    const char *sr = xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR"));
    struct xa_error *err = xa_sr_info_plugged(t, sr, s);
    if (!err) {
        *location = xa_strdup(
            xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "location")));
    }
    return err;
}

struct xa_error *
xa_vdi_remove(const char *vdi)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, vdi, &s, &loc);
    xa_db_end(t);
    if (err) {
        return err;
    }
    err = xa_sr_vdi_destroy(&s.ctx, loc);
    if (!err) {
        t = xa_db_begin_write();
        err = xa_api_finish(t, xa_db_exists(t, &xa_cls_VDI, vdi)
                                   ? xa_vdi_forget_row(t, vdi)
                                   : NULL);
    }
    free(loc);
    xa_sr_info_free(&s);
    return err;
}

static struct xa_error *
vdi_destroy(struct xa_call *call, struct xa_value *const *args,
            struct xa_value **ret)
{
    XA_UNUSED(call);
    *ret = NULL;
    const char *vdi = args[0]->u.str.s;
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_VDI, vdi)) {
        err = xa_error_handle_invalid("VDI", vdi);
    } else if (xa_vdi_in_use(t, vdi)) {
        err = xa_error_new("VDI_IN_USE", 2, vdi, "destroy");
    }
    xa_db_end(t);
    return err ? err : xa_vdi_remove(vdi);
}

struct xa_error *
xa_vdi_attach_path(const char *vdi, bool read_only, char **path, char **format)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, vdi, &s, &loc);
    xa_db_end(t);
    if (err) {
        return err;
    }
    err = xa_sr_vdi_attach(&s.ctx, loc, read_only, path, format);
    free(loc);
    xa_sr_info_free(&s);
    return err;
}

struct xa_error *
xa_vdi_duplicate(const char *vdi, const char *dest_sr, bool snapshot,
                 const char *what, char **ret)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info src, dst;
    memset(&dst, 0, sizeof dst);
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, vdi, &src, &loc);
    const char *src_sr =
        xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR"));
    char *target =
        xa_strdup(dest_sr && strcmp(dest_sr, NULL_REF) != 0 ? dest_sr : src_sr);
    bool same = strcmp(target, src_sr) == 0;
    if (!err && !same) {
        err = xa_sr_info_plugged(t, target, &dst);
    }
    /* The new disk looks like the old one: names, type, configuration. */
    struct xa_value *f = xa_struct();
    static const char *const copied[] = {"name_label",
                                         "name_description",
                                         "type",
                                         "sharable",
                                         "read_only",
                                         "other_config",
                                         "xenstore_data",
                                         "sm_config",
                                         "tags",
                                         "on_boot",
                                         NULL};
    for (const char *const *c = copied; *c && !err; c++) {
        struct xa_value *v =
            xa_db_get_field(t, &xa_cls_VDI, vdi, xa_api_field(&xa_cls_VDI, *c));
        if (v) {
            xa_struct_set(f, *c, v);
        }
    }
    int64_t size = xa_api_int(t, &xa_cls_VDI, vdi,
                              XA_F(xa_cls_VDI, "physical_utilisation"));
    xa_db_end(t);
    const struct xa_sr_ctx *into = same ? &src.ctx : &dst.ctx;
    struct xa_sr_stat st = {0, 0};
    if (!err) {
        err = xa_sr_stat(into, &st);
    }
    if (!err) {
        err = xa_sr_check_space(&st, size);
    }
    char uuid[37];
    xa_uuid_generate(uuid);
    struct xa_sr_vdi v = {0};
    if (!err) {
        err = same ? xa_sr_vdi_clone(what, &src.ctx, loc, uuid, snapshot, &v)
                   : xa_sr_vdi_copy(&src.ctx, loc, &dst.ctx, uuid, &v);
    }
    char *ref = NULL;
    if (!err) {
        if (snapshot) {
            char now[32];
            xa_datetime_now(now);
            xa_struct_set(f, "is_a_snapshot", xa_bool(true));
            xa_struct_set(f, "snapshot_of", xa_string(vdi));
            xa_struct_set(f, "snapshot_time", xa_datetime(now));
        }
        ref = xa_ref_new();
        t = xa_db_begin_write();
        err = xa_sr_record_vdi(t, ref, uuid, target, &v, xa_value_ref(f));
        if (!err) {
            err = xa_sr_sizes(t, target, &st);
        }
        err = xa_api_finish(t, err);
        if (err) {
            xa_error_free(xa_sr_vdi_destroy(into, v.location));
            free(ref);
            ref = NULL;
        }
    }
    xa_value_unref(f);
    free(v.location);
    free(loc);
    free(target);
    xa_sr_info_free(&src);
    xa_sr_info_free(&dst);
    if (!err) {
        *ret = ref;
    }
    return err;
}

struct xa_error *
xa_impl_VDI_clone(struct xa_call *call, const char *vdi,
                  const struct xa_value *driver_params, struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(driver_params);
    char *ref = NULL;
    struct xa_error *err =
        xa_vdi_duplicate(vdi, NULL, false, "VDI.clone", &ref);
    if (!err) {
        *ret = xa_string_take(ref);
    }
    return err;
}

struct xa_error *
xa_impl_VDI_snapshot(struct xa_call *call, const char *vdi,
                     const struct xa_value *driver_params,
                     struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(driver_params);
    char *ref = NULL;
    struct xa_error *err =
        xa_vdi_duplicate(vdi, NULL, true, "VDI.snapshot", &ref);
    if (!err) {
        *ret = xa_string_take(ref);
    }
    return err;
}

struct xa_error *
xa_impl_VDI_copy(struct xa_call *call, const char *vdi, const char *sr,
                 const char *base_vdi, const char *into_vdi,
                 struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(base_vdi); /* a full copy needs no base */
    if (strcmp(into_vdi, NULL_REF) != 0) {
        return xa_error_new("VALUE_NOT_SUPPORTED", 3, "into_vdi", into_vdi,
                            "copying into an existing VDI is not supported");
    }
    char *ref = NULL;
    struct xa_error *err = xa_vdi_duplicate(
        vdi, strcmp(sr, NULL_REF) == 0 ? NULL : sr, false, "VDI.copy", &ref);
    if (!err && strcmp(sr, NULL_REF) != 0) {
        /* A copy is never a snapshot, even into the same SR. */
    }
    if (!err) {
        *ret = xa_string_take(ref);
    }
    return err;
}

struct xa_error *
xa_impl_VDI_resize(struct xa_call *call, const char *vdi, int64_t size)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, vdi, &s, &loc);
    int64_t cur =
        xa_api_int(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "virtual_size"));
    char *sr =
        xa_strdup(xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR")));
    if (!err && xa_vdi_in_use(t, vdi)) {
        err = xa_error_new("VDI_IN_USE", 2, vdi, "resize");
    }
    xa_db_end(t);
    if (!err && size < cur) {
        char *m = xa_api_i64(cur);
        err = xa_error_new("VDI_TOO_SMALL", 2, vdi, m);
        free(m);
    }
    struct xa_sr_stat st;
    if (!err) {
        err = xa_sr_stat(&s.ctx, &st);
    }
    if (!err) {
        err = xa_sr_check_space(&st, size - cur);
    }
    struct xa_sr_vdi v = {0};
    if (!err) {
        err = xa_sr_vdi_resize(&s.ctx, loc, size, &v);
    }
    if (!err) {
        t = xa_db_begin_write();
        err = xa_vdi_store_sizes(t, vdi, &v);
        if (!err) {
            err = xa_sr_sizes(t, sr, &st);
        }
        err = xa_api_finish(t, err);
    }
    free(v.location);
    free(loc);
    free(sr);
    xa_sr_info_free(&s);
    return err;
}

/* --- the local SR --------------------------------------------------------- */

struct attach_ctx {
    struct xa_txn *t;
    char **srs;
    size_t n;
};

static bool
collect_local(const char *ref, void *ctx)
{
    struct attach_ctx *a = ctx;
    if (strcmp(xa_api_str(a->t, &xa_cls_PBD, ref, XA_F(xa_cls_PBD, "host")),
               xa_self_host()) == 0) {
        a->srs = xa_realloc(a->srs, (a->n + 1) * sizeof *a->srs);
        a->srs[a->n++] = xa_strdup(
            xa_api_str(a->t, &xa_cls_PBD, ref, XA_F(xa_cls_PBD, "SR")));
    }
    return true;
}

/* Attaches every SR this host has a PBD for and a backend can serve
 * (recreating the directory of a local SR if it went missing). */
static void
attach_local_srs(void)
{
    struct xa_txn *t = xa_db_begin_read();
    struct attach_ctx a = {t, NULL, 0};
    xa_db_foreach(t, &xa_cls_PBD, collect_local, &a);
    struct xa_sr_info *infos = xa_calloc(a.n + 1, sizeof *infos);
    bool *ok = xa_calloc(a.n + 1, sizeof *ok);
    for (size_t i = 0; i < a.n; i++) {
        struct xa_error *e = xa_sr_info_read(t, a.srs[i], &infos[i]);
        /* Only what was plugged when we stopped: an unplugged PBD stays
         * so until PBD.plug. */
        ok[i] =
            !e && infos[i].attached && xa_sr_driver_for(infos[i].type) != NULL;
        xa_error_free(e);
    }
    xa_db_end(t);
    for (size_t i = 0; i < a.n; i++) {
        if (ok[i]) {
            struct xa_error *e = xa_sr_attach(&infos[i].ctx);
            struct xa_sr_stat st;
            if (!e) {
                e = xa_sr_stat(&infos[i].ctx, &st);
            }
            if (!e) {
                struct xa_txn *w = xa_db_begin_write();
                e = xa_api_finish(w, xa_sr_sizes(w, a.srs[i], &st));
            }
            if (e) {
                xa_log_warn("storage", "cannot attach SR %s: %s", infos[i].uuid,
                            e->code);
                xa_error_free(e);
                struct xa_txn *w = xa_db_begin_write();
                e = xa_api_finish(
                    w, xa_db_exists(w, &xa_cls_PBD, infos[i].pbd)
                           ? xa_api_set(w, &xa_cls_PBD, infos[i].pbd,
                                        XA_F(xa_cls_PBD, "currently_attached"),
                                        xa_bool(false))
                           : NULL);
                xa_error_free(e);
            }
        }
        xa_sr_info_free(&infos[i]);
        free(a.srs[i]);
    }
    free(infos);
    free(ok);
    free(a.srs);
}

struct xa_error *
xa_sr_ensure_local(void)
{
    struct xa_txn *t = xa_db_begin_read();
    size_t n = xa_db_count(t, &xa_cls_SR);
    xa_db_end(t);
    if (n > 0) {
        attach_local_srs();
        return NULL;
    }
    char uuid[37];
    xa_uuid_generate(uuid);
    char *path = xa_asprintf("%s/sr/%s", xa_self_state_dir(), uuid);
    struct xa_sr_ctx ctx = {uuid, "ext", path, NULL, false};
    struct xa_sr_stat st = {0, 0};
    struct xa_error *err = xa_sr_attach(&ctx);
    if (!err) {
        err = xa_sr_create(&ctx);
    }
    if (!err) {
        err = xa_sr_stat(&ctx, &st);
    }
    if (err) {
        free(path);
        return err;
    }
    char *sr = xa_ref_new(), *pbd = xa_ref_new();
    struct xa_value *rec = xa_struct();
    struct xa_value *oc = xa_struct();
    xa_struct_set(oc, "i18n-key", xa_string("local-storage"));
    xa_struct_set(oc, "i18n-original-value-name_label",
                  xa_string("Local storage"));
    xa_struct_set(rec, "uuid", xa_string(uuid));
    xa_struct_set(rec, "name_label", xa_string("Local storage"));
    xa_struct_set(rec, "name_description", xa_string(""));
    xa_struct_set(rec, "type", xa_string("ext"));
    xa_struct_set(rec, "content_type", xa_string("user"));
    xa_struct_set(rec, "shared", xa_bool(false));
    xa_struct_set(rec, "physical_size", xa_int(st.physical_size));
    xa_struct_set(rec, "physical_utilisation", xa_int(st.physical_utilisation));
    xa_struct_set(rec, "virtual_allocation", xa_int(0));
    xa_struct_set(rec, "other_config", oc);
    xa_struct_set(rec, "sm_config", xa_struct());
    struct xa_value *ops = xa_array();
    static const char *const sr_ops[] = {"scan",
                                         "vdi_create",
                                         "vdi_destroy",
                                         "vdi_resize",
                                         "vdi_clone",
                                         "vdi_snapshot",
                                         "update",
                                         "plug",
                                         "unplug",
                                         "pbd_create",
                                         "pbd_destroy",
                                         "vdi_introduce",
                                         "vdi_set_on_boot",
                                         NULL};
    for (const char *const *o = sr_ops; *o; o++) {
        xa_array_append(ops, xa_string(*o));
    }
    xa_struct_set(rec, "allowed_operations", ops);
    struct xa_value *prec = xa_struct();
    struct xa_value *dc = xa_struct();
    xa_struct_set(dc, "path", xa_string(path));
    xa_struct_set(prec, "host", xa_string(xa_self_host()));
    xa_struct_set(prec, "SR", xa_string(sr));
    xa_struct_set(prec, "device_config", dc);
    xa_struct_set(prec, "currently_attached", xa_bool(true));

    t = xa_db_begin_write();
    err = xa_db_create(t, &xa_cls_SR, sr, rec);
    if (!err) {
        err = xa_db_create(t, &xa_cls_PBD, pbd, prec);
    } else {
        xa_value_unref(prec);
    }
    char *pool = err ? NULL : xa_api_pool(t);
    if (!err && pool) {
        static const char *const pool_fields[] = {
            "default_SR", "suspend_image_SR", "crash_dump_SR"};
        for (size_t i = 0; i < XA_ARRAY_SIZE(pool_fields) && !err; i++) {
            err = xa_api_set(t, &xa_cls_pool, pool,
                             xa_api_field(&xa_cls_pool, pool_fields[i]),
                             xa_string(sr));
        }
    }
    if (!err && xa_db_exists(t, &xa_cls_host, xa_self_host())) {
        err = xa_api_set(t, &xa_cls_host, xa_self_host(),
                         XA_F(xa_cls_host, "suspend_image_sr"), xa_string(sr));
        if (!err) {
            err = xa_api_set(t, &xa_cls_host, xa_self_host(),
                             XA_F(xa_cls_host, "crash_dump_sr"), xa_string(sr));
        }
    }
    err = xa_api_finish(t, err);
    if (!err) {
        xa_log_info("storage", "created Local storage SR %s at %s", uuid, path);
    }
    free(pool);
    free(sr);
    free(pbd);
    free(path);
    return err;
}

void
xa_sr_minimal_init(void)
{
    xa_implicit_override("VDI.create", vdi_create);
    xa_implicit_override("VDI.destroy", vdi_destroy);
    xa_sr_api_init();
    xa_vdi_io_init();
    xa_xva_init();
}
