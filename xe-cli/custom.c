/* custom.c - the hand-written commands: where xapi's xe does more than
 * call one message (vm-install clones and provisions; vm-uninstall
 * destroys the disks too), picks the message from a flag (vm-shutdown
 * --force), or streams data over the HTTP handlers (/import, /export,
 * /import_raw_vdi, /export_raw_vdi). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "xe.h"

static int
report(struct xe *xe, struct xa_error *err)
{
    xe_print_error(xe, err);
    xa_error_free(err);
    return 1;
}

/* Calls Class.msg with a ref and up to two more parameters (taken). */
static struct xa_error *
call_ref(struct xe *xe, const char *method, const char *ref, struct xa_value *a,
         struct xa_value *b, struct xa_value **ret)
{
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(ref));
    if (a) {
        xa_array_append(p, a);
    }
    if (b) {
        xa_array_append(p, b);
    }
    return xe_call(xe, method, p, ret);
}

typedef struct xa_error *(*per_object_fn)(struct xe *xe, const char *ref,
                                          const struct xa_value *rec,
                                          void *ctx);

/* Runs 'fn' on every object the selectors pick, with xapi's rules: none
 * is an error, several need --multiple. */
static int
for_each_selected(struct xe *xe, const struct xe_cmd *cmd, per_object_fn fn,
                  void *ctx)
{
    struct xa_value *recs = NULL;
    struct xa_error *err = xe_select(xe, cmd->xc, false, &recs);
    if (err) {
        return report(xe, err);
    }
    int rc = 0;
    if (recs->u.st.n == 0) {
        rc = xe_fail("No matching %ss found", cmd->xc->name);
    } else if (recs->u.st.n > 1 && !xe->multiple) {
        rc = xe_fail("Multiple matches for %s: use --multiple to act on all "
                     "of them",
                     cmd->xc->name);
    }
    for (size_t i = 0; !rc && i < recs->u.st.n; i++) {
        err = fn(xe, recs->u.st.m[i].key, recs->u.st.m[i].val, ctx);
        if (err) {
            rc = report(xe, err);
        }
    }
    xa_value_unref(recs);
    return rc;
}

/* ---- power ----------------------------------------------------------- */

static struct xa_error *
do_simple(struct xe *xe, const char *ref, const struct xa_value *rec, void *ctx)
{
    XA_UNUSED(rec);
    return xe_call_async(xe, ctx, xe_ref_array(ref), NULL);
}

static int
cmd_shutdown(struct xe *xe, const struct xe_cmd *cmd)
{
    bool force = xe_arg_bool(xe, "force", false);
    return for_each_selected(
        xe, cmd, do_simple,
        (void *)(force ? "VM.hard_shutdown" : "VM.clean_shutdown"));
}

static int
cmd_reboot(struct xe *xe, const struct xe_cmd *cmd)
{
    bool force = xe_arg_bool(xe, "force", false);
    return for_each_selected(
        xe, cmd, do_simple,
        (void *)(force ? "VM.hard_reboot" : "VM.clean_reboot"));
}

static int
cmd_snapshot_revert(struct xe *xe, const struct xe_cmd *cmd)
{
    const char *s = xe_arg(xe, "snapshot-uuid");
    if (s) {
        struct xa_error *err = NULL;
        char *ref = NULL;
        err = xe_resolve_ref(xe, cmd->xc->cls, s, &ref);
        if (!err) {
            err = xe_call_async(xe, "VM.revert", xe_ref_array(ref), NULL);
        }
        free(ref);
        return err ? report(xe, err) : 0;
    }
    return for_each_selected(xe, cmd, do_simple, (void *)"VM.revert");
}

struct migrate_ctx {
    char *host;
    struct xa_value *options;
    /* VM.migrate_send (disks, VIFs, another pool): what the destination's
     * host.migrate_receive answered, the maps, and where the VIFs and
     * disks left out of them go across pools */
    struct xa_value *dest;
    struct xa_value *vdi_map, *vif_map;
    char *network, *default_sr;
    bool live;
    struct xe_remote *remote;
};

/* The VDIs of the disks of 'vm' (CDs left out). */
static struct xa_value *
vm_disks(struct xe *xe, const struct xa_value *rec)
{
    struct xa_value *out = xa_array();
    const struct xa_value *vbds = xa_struct_get(rec, "VBDs");
    for (size_t i = 0; vbds && vbds->kind == XA_ARRAY && i < vbds->u.arr.n;
         i++) {
        struct xa_value *r = NULL;
        if (xe_call(xe, "VBD.get_record",
                    xe_ref_array(xa_value_str(vbds->u.arr.items[i])),
                    &r) == NULL) {
            const char *vdi = xa_struct_get_str(r, "VDI");
            const char *type = xa_struct_get_str(r, "type");
            if (vdi && strcmp(vdi, "OpaqueRef:NULL") != 0 && type &&
                strcmp(type, "CD") != 0) {
                xa_array_append(out, xa_string(vdi));
            }
        }
        xa_value_unref(r);
    }
    return out;
}

static struct xa_error *
do_migrate(struct xe *xe, const char *ref, const struct xa_value *rec,
           void *ctx)
{
    struct migrate_ctx *m = ctx;
    struct xa_value *p = xe_ref_array(ref);
    if (!m->dest) {
        xa_array_append(p, xa_string(m->host));
        xa_array_append(p, xa_value_ref(m->options));
        return xe_call_async(xe, "VM.pool_migrate", p, NULL);
    }
    struct xa_value *vdis = xa_struct(), *vifs = xa_struct();
    for (size_t i = 0; i < m->vdi_map->u.st.n; i++) {
        xa_struct_set(vdis, m->vdi_map->u.st.m[i].key,
                      xa_value_ref(m->vdi_map->u.st.m[i].val));
    }
    for (size_t i = 0; i < m->vif_map->u.st.n; i++) {
        xa_struct_set(vifs, m->vif_map->u.st.m[i].key,
                      xa_value_ref(m->vif_map->u.st.m[i].val));
    }
    if (m->remote) {
        /* across pools every disk and VIF needs a place: the pool's
         * default SR and the chosen network unless named */
        struct xa_value *disks = vm_disks(xe, rec);
        for (size_t i = 0; m->default_sr && i < disks->u.arr.n; i++) {
            const char *vdi = xa_value_str(disks->u.arr.items[i]);
            if (!xa_struct_get(vdis, vdi)) {
                xa_struct_set(vdis, vdi, xa_string(m->default_sr));
            }
        }
        xa_value_unref(disks);
        const struct xa_value *vl = xa_struct_get(rec, "VIFs");
        for (size_t i = 0; vl && vl->kind == XA_ARRAY && i < vl->u.arr.n; i++) {
            const char *vif = xa_value_str(vl->u.arr.items[i]);
            if (!xa_struct_get(vifs, vif)) {
                xa_struct_set(vifs, vif, xa_string(m->network));
            }
        }
    }
    xa_array_append(p, xa_value_ref(m->dest));
    xa_array_append(p, xa_bool(m->live));
    xa_array_append(p, vdis);
    xa_array_append(p, vifs);
    xa_array_append(p, xa_value_ref(m->options));
    xa_array_append(p, xa_struct());
    return xe_call_async(xe, "VM.migrate_send", p, NULL);
}

/* The destination's host (named, else its pool's master) and network
 * (remote-network=, else that host's management network), then its
 * host.migrate_receive; on the connection xe->c is now. */
static struct xa_error *
migrate_dest(struct xe *xe, struct migrate_ctx *m)
{
    const char *h = xe_arg(xe, "host-uuid");
    if (!h) {
        h = xe_arg(xe, "host");
    }
    struct xa_error *err = NULL;
    struct xa_value *r = NULL;
    if (h) {
        err = xe_resolve_ref(xe, xa_schema_class("host"), h, &m->host);
    } else {
        err = xe_call(xe, "pool.get_all", NULL, &r);
        if (!err && r && r->u.arr.n) {
            struct xa_value *master = NULL;
            err =
                xe_call(xe, "pool.get_master",
                        xe_ref_array(xa_value_str(r->u.arr.items[0])), &master);
            if (!err) {
                m->host = xa_strdup(xa_value_str(master));
            }
            xa_value_unref(master);
        }
        xa_value_unref(r);
        r = NULL;
    }
    const char *net = xe_arg(xe, "remote-network");
    if (!err && net) {
        err = xe_resolve_ref(xe, xa_schema_class("network"), net, &m->network);
    }
    if (!err && !m->network) {
        err = xe_call(xe, "PIF.get_all_records", NULL, &r);
        for (size_t i = 0; !err && r && i < r->u.st.n && !m->network; i++) {
            const struct xa_value *pif = r->u.st.m[i].val;
            const struct xa_value *mg = xa_struct_get(pif, "management");
            const char *ph = xa_struct_get_str(pif, "host");
            if (mg && mg->kind == XA_BOOL && mg->u.b && ph && m->host &&
                strcmp(ph, m->host) == 0) {
                m->network = xa_strdup(xa_struct_get_str(pif, "network"));
            }
        }
        xa_value_unref(r);
        r = NULL;
    }
    if (!err && !m->network) {
        err = xe_call(xe, "network.get_all", NULL, &r);
        if (!err && r && r->u.arr.n) {
            m->network = xa_strdup(xa_value_str(r->u.arr.items[0]));
        }
        xa_value_unref(r);
        r = NULL;
    }
    if (!err && !m->network) {
        err = xa_error_new("INVALID_VALUE", 2, "remote-network", "");
    }
    if (!err) {
        struct xa_value *p = xe_ref_array(m->host);
        xa_array_append(p, xa_string(m->network));
        xa_array_append(p, xa_struct());
        err = xe_call(xe, "host.migrate_receive", p, &m->dest);
    }
    if (!err && m->remote) {
        struct xa_value *pools = NULL;
        if (!xe_call(xe, "pool.get_all", NULL, &pools) && pools &&
            pools->u.arr.n) {
            struct xa_value *sr = NULL;
            if (!xe_call(xe, "pool.get_default_SR",
                         xe_ref_array(xa_value_str(pools->u.arr.items[0])),
                         &sr) &&
                xa_value_str(sr) &&
                strcmp(xa_value_str(sr), "OpaqueRef:NULL") != 0) {
                m->default_sr = xa_strdup(xa_value_str(sr));
            }
            xa_value_unref(sr);
        }
        xa_value_unref(pools);
    }
    return err;
}

/* "vdi:<vdi-uuid>=<sr-uuid>" or "vif:<vif-uuid>=<network-uuid>": the
 * keys are this pool's, the values the destination's. */
static struct xa_error *
resolve_map(struct xe *xe, struct xa_client *dest_c, const char *prefix,
            const char *kc, const char *vc, struct xa_value **ret)
{
    struct xa_value *in = xe_arg_map(xe, prefix);
    struct xa_value *out = xa_struct();
    struct xa_error *err = NULL;
    struct xa_client *local = xe->c;
    for (size_t i = 0; i < in->u.st.n && !err; i++) {
        char *k = NULL, *v = NULL;
        err = xe_resolve_ref(xe, xa_schema_class(kc), in->u.st.m[i].key, &k);
        if (!err) {
            xe->c = dest_c;
            err = xe_resolve_ref(xe, xa_schema_class(vc),
                                 xa_value_str(in->u.st.m[i].val), &v);
            xe->c = local;
        }
        if (!err) {
            xa_struct_set(out, k, xa_string(v));
        }
        free(k);
        free(v);
    }
    xa_value_unref(in);
    if (err) {
        xa_value_unref(out);
        return err;
    }
    *ret = out;
    return NULL;
}

static void
migrate_ctx_free(struct migrate_ctx *m)
{
    free(m->host);
    free(m->network);
    free(m->default_sr);
    xa_value_unref(m->options);
    xa_value_unref(m->dest);
    xa_value_unref(m->vdi_map);
    xa_value_unref(m->vif_map);
    xe_remote_close(m->remote);
}

static int
cmd_migrate(struct xe *xe, const struct xe_cmd *cmd)
{
    struct migrate_ctx m = {0};
    m.live = xe_arg_bool(xe, "live", false);
    m.options = xa_struct();
    xa_struct_set(m.options, "live", xa_string(m.live ? "true" : "false"));
    const char *rm = xe_arg(xe, "remote-master");
    bool maps = false;
    for (size_t i = 0; i < xe->n_args && !maps; i++) {
        maps = xa_str_has_prefix(xe->args[i].key, "vdi:") ||
               xa_str_has_prefix(xe->args[i].key, "vif:");
    }
    struct xa_error *err = NULL;
    if (!rm && !maps) {
        /* inside the pool, memory only: VM.pool_migrate */
        const char *h = xe_arg(xe, "host-uuid");
        if (!h) {
            h = xe_arg(xe, "host");
        }
        if (!h) {
            migrate_ctx_free(&m);
            return xe_param_error("Required parameter not found", "host");
        }
        err = xe_resolve_ref(xe, xa_schema_class("host"), h, &m.host);
        if (err) {
            migrate_ctx_free(&m);
            return report(xe, err);
        }
        int rc = for_each_selected(xe, cmd, do_migrate, &m);
        migrate_ctx_free(&m);
        return rc;
    }
    struct xa_client *local = xe->c, *dest_c = local;
    if (rm) {
        m.remote = xe_remote_open(rm);
        dest_c = xe_remote_client(m.remote);
        const char *u = xe_arg(xe, "remote-username");
        const char *pw = xe_arg(xe, "remote-password");
        err = xa_client_login(dest_c, u ? u : "root", pw ? pw : "");
    }
    if (!err) {
        xe->c = dest_c;
        err = migrate_dest(xe, &m);
        xe->c = local;
    }
    if (!err) {
        err = resolve_map(xe, dest_c, "vdi", "VDI", "SR", &m.vdi_map);
    }
    if (!err) {
        err = resolve_map(xe, dest_c, "vif", "VIF", "network", &m.vif_map);
    }
    int rc = err ? report(xe, err) : for_each_selected(xe, cmd, do_migrate, &m);
    migrate_ctx_free(&m);
    return rc;
}

/* ---- vm-install ------------------------------------------------------ */

/* Points every disk of the provisioning XML at 'sr_uuid'. */
static char *
rewrite_disks_sr(const char *xml, const char *sr_uuid)
{
    struct xa_buf b = {0};
    const char *p = xml;
    for (;;) {
        const char *q = strstr(p, " sr=\"");
        if (!q) {
            break;
        }
        q += strlen(" sr=\"");
        const char *end = strchr(q, '"');
        if (!end) {
            break;
        }
        xa_buf_append(&b, p, (size_t)(q - p));
        xa_buf_puts(&b, sr_uuid);
        p = end;
    }
    xa_buf_puts(&b, p);
    return xa_buf_steal(&b);
}

static struct xa_error *
find_template(struct xe *xe, const char *t, char **ret)
{
    if (xa_uuid_valid(t) || xa_str_has_prefix(t, "OpaqueRef:")) {
        return xe_resolve_ref(xe, xa_schema_class("VM"), t, ret);
    }
    struct xa_value *p = xa_array(), *refs = NULL;
    xa_array_append(p, xa_string(t));
    struct xa_error *err = xe_call(xe, "VM.get_by_name_label", p, &refs);
    if (err) {
        return err;
    }
    *ret = NULL;
    size_t found = 0;
    for (size_t i = 0; refs->kind == XA_ARRAY && i < refs->u.arr.n; i++) {
        const char *r = xa_value_str(refs->u.arr.items[i]);
        struct xa_value *v = NULL;
        err = call_ref(xe, "VM.get_is_a_template", r, NULL, NULL, &v);
        bool tmpl = !err && v &&
                    ((v->kind == XA_BOOL && v->u.b) ||
                     (v->kind == XA_STRING && strcmp(v->u.str.s, "1") == 0));
        xa_error_free(err);
        err = NULL;
        xa_value_unref(v);
        if (tmpl && found++ == 0) {
            *ret = xa_strdup(r);
        }
    }
    xa_value_unref(refs);
    if (found == 1) {
        return NULL;
    }
    free(*ret);
    *ret = NULL;
    return xa_error_new("UUID_INVALID", 2, "VM", t);
}

/* The uuid of the SR named by sr-uuid= or sr-name-label=, else of the
 * pool's default SR, else NULL. */
static struct xa_error *
install_sr(struct xe *xe, char **ret_uuid)
{
    *ret_uuid = NULL;
    const struct xa_class_desc *sr = xa_schema_class("SR");
    const char *u = xe_arg(xe, "sr-uuid");
    const char *n = xe_arg(xe, "sr-name-label");
    char *ref = NULL;
    struct xa_error *err = NULL;
    if (u || n) {
        err = xe_resolve_ref(xe, sr, u ? u : n, &ref);
        if (err) {
            return err;
        }
    } else {
        struct xa_value *pools = NULL, *d = NULL;
        err = xe_call(xe, "pool.get_all", xa_array(), &pools);
        if (!err && pools->kind == XA_ARRAY && pools->u.arr.n > 0) {
            err = call_ref(xe, "pool.get_default_SR",
                           xa_value_str(pools->u.arr.items[0]), NULL, NULL, &d);
        }
        xa_value_unref(pools);
        if (err) {
            xa_error_free(err);
            return NULL;
        }
        if (d && xa_value_str(d)) {
            ref = xa_strdup(xa_value_str(d));
        }
        xa_value_unref(d);
        if (!ref || strcmp(ref, "OpaqueRef:NULL") == 0) {
            free(ref);
            return NULL;
        }
    }
    char *uuid = xe_ref_uuid(xe, sr, ref);
    free(ref);
    if (strcmp(uuid, "<not in database>") == 0) {
        free(uuid);
        return NULL;
    }
    *ret_uuid = uuid;
    return NULL;
}

static int
cmd_install(struct xe *xe, const struct xe_cmd *cmd)
{
    XA_UNUSED(cmd);
    const char *t = xe_arg(xe, "template");
    if (!t) {
        t = xe_arg(xe, "template-uuid");
    }
    if (!t) {
        t = xe_arg(xe, "template-name-label");
    }
    if (!t) {
        return xe_param_error("Required parameter not found", "template");
    }
    const char *name = xe_arg_req(xe, "new-name-label");
    if (!name) {
        return 1;
    }
    char *tmpl = NULL, *vm = NULL, *sr = NULL;
    struct xa_value *v = NULL;
    struct xa_error *err = find_template(xe, t, &tmpl);
    if (!err) {
        err = install_sr(xe, &sr);
    }
    if (!err) {
        struct xa_value *p = xe_ref_array(tmpl);
        xa_array_append(p, xa_string(name));
        err = xe_call_async(xe, "VM.clone", p, &v);
        if (!err) {
            vm = xa_strdup(xa_value_str(v) ? xa_value_str(v) : "");
        }
        xa_value_unref(v);
        v = NULL;
    }
    if (!err && sr) {
        err = call_ref(xe, "VM.get_other_config", vm, NULL, NULL, &v);
        const char *disks = err ? NULL : xa_struct_get_str(v, "disks");
        if (disks) {
            char *nd = rewrite_disks_sr(disks, sr);
            err = call_ref(xe, "VM.remove_from_other_config", vm,
                           xa_string("disks"), NULL, NULL);
            if (!err) {
                err = call_ref(xe, "VM.add_to_other_config", vm,
                               xa_string("disks"), xa_string_take(nd), NULL);
            } else {
                free(nd);
            }
        }
        xa_value_unref(v);
    }
    if (!err) {
        err = xe_call_async(xe, "VM.provision", xe_ref_array(vm), NULL);
    }
    if (!err) {
        err = call_ref(xe, "VM.set_is_a_template", vm, xa_bool(false), NULL,
                       NULL);
    }
    int rc = 0;
    if (err) {
        rc = report(xe, err);
        if (vm) {
            /* Leave nothing half-installed behind. */
            xa_error_free(call_ref(xe, "VM.destroy", vm, NULL, NULL, NULL));
        }
    } else {
        char *uuid = xe_ref_uuid(xe, xa_schema_class("VM"), vm);
        xe_print_line(xe, uuid);
        free(uuid);
    }
    free(tmpl);
    free(vm);
    free(sr);
    return rc;
}

/* ---- vm-uninstall ----------------------------------------------------- */

static struct xa_error *
do_uninstall(struct xe *xe, const char *ref, const struct xa_value *rec,
             void *ctx)
{
    XA_UNUSED(ctx);
    struct xa_value *vdis = xa_array();
    const struct xa_value *vbds = xa_struct_get(rec, "VBDs");
    struct xa_error *err = NULL;
    for (size_t i = 0; vbds && vbds->kind == XA_ARRAY && i < vbds->u.arr.n;
         i++) {
        struct xa_value *vbd = NULL, *users = NULL;
        err = call_ref(xe, "VBD.get_record", xa_value_str(vbds->u.arr.items[i]),
                       NULL, NULL, &vbd);
        if (err) {
            break;
        }
        const char *type = xa_struct_get_str(vbd, "type");
        const char *vdi = xa_struct_get_str(vbd, "VDI");
        if (type && strcmp(type, "Disk") == 0 && vdi &&
            strcmp(vdi, "OpaqueRef:NULL") != 0) {
            /* A disk other VMs also use stays. */
            err = call_ref(xe, "VDI.get_VBDs", vdi, NULL, NULL, &users);
            if (!err && users->kind == XA_ARRAY && users->u.arr.n <= 1) {
                xa_array_append(vdis, xa_string(vdi));
            }
            xa_value_unref(users);
        }
        xa_value_unref(vbd);
        if (err) {
            break;
        }
    }
    if (!err) {
        err = xe_call_async(xe, "VM.destroy", xe_ref_array(ref), NULL);
    }
    for (size_t i = 0; !err && i < vdis->u.arr.n; i++) {
        err = xe_call_async(xe, "VDI.destroy",
                            xe_ref_array(xa_value_str(vdis->u.arr.items[i])),
                            NULL);
    }
    xa_value_unref(vdis);
    return err;
}

static bool
confirm(struct xe *xe)
{
    if (xe_arg_bool(xe, "force", false)) {
        return true;
    }
    printf("Type 'yes' to continue\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) {
        line[0] = '\0';
    }
    line[strcspn(line, "\r\n")] = '\0';
    if (strcasecmp(line, "yes") == 0) {
        return true;
    }
    printf("Aborted (you typed: '%s')\n", line);
    return false;
}

static int
cmd_uninstall(struct xe *xe, const struct xe_cmd *cmd)
{
    if (!confirm(xe)) {
        return 1;
    }
    return for_each_selected(xe, cmd, do_uninstall, NULL);
}

/* ---- disks and CDs ---------------------------------------------------- */

/* The lowest userdevice number no VBD of the VM uses. */
static char *
free_userdevice(struct xe *xe, const struct xa_value *vmrec)
{
    bool used[256] = {false};
    const struct xa_value *vbds = xa_struct_get(vmrec, "VBDs");
    for (size_t i = 0; vbds && vbds->kind == XA_ARRAY && i < vbds->u.arr.n;
         i++) {
        struct xa_value *d = NULL;
        struct xa_error *err =
            call_ref(xe, "VBD.get_userdevice",
                     xa_value_str(vbds->u.arr.items[i]), NULL, NULL, &d);
        int64_t n;
        if (!err && xa_value_str(d) && xa_parse_int64(xa_value_str(d), &n) &&
            n >= 0 && n < 256) {
            used[n] = true;
        }
        xa_error_free(err);
        xa_value_unref(d);
    }
    int n = 0;
    while (n < 255 && used[n]) {
        n++;
    }
    return xa_asprintf("%d", n);
}

struct disk_ctx {
    int64_t size;
    char *sr;
    const char *device;
};

static struct xa_error *
do_disk_add(struct xe *xe, const char *ref, const struct xa_value *rec,
            void *ctx)
{
    struct disk_ctx *d = ctx;
    struct xa_value *vdi_rec = xa_struct();
    const char *vmname = xa_struct_get_str(rec, "name_label");
    xa_struct_set(
        vdi_rec, "name_label",
        xa_string_take(xa_asprintf("%s disk", vmname ? vmname : "VM")));
    xa_struct_set(vdi_rec, "name_description", xa_string(""));
    xa_struct_set(vdi_rec, "SR", xa_string(d->sr));
    xa_struct_set(vdi_rec, "virtual_size", xa_int(d->size));
    xa_struct_set(vdi_rec, "type", xa_string("user"));
    xa_struct_set(vdi_rec, "sharable", xa_bool(false));
    xa_struct_set(vdi_rec, "read_only", xa_bool(false));
    xa_struct_set(vdi_rec, "other_config", xa_struct());
    struct xa_value *p = xa_array(), *vdi = NULL;
    xa_array_append(p, vdi_rec);
    struct xa_error *err = xe_call_async(xe, "VDI.create", p, &vdi);
    if (err) {
        return err;
    }
    char *dev = d->device ? xa_strdup(d->device) : free_userdevice(xe, rec);
    struct xa_value *vbd_rec = xa_struct();
    xa_struct_set(vbd_rec, "VM", xa_string(ref));
    xa_struct_set(vbd_rec, "VDI", xa_value_ref(vdi));
    xa_struct_set(vbd_rec, "userdevice", xa_string_take(dev));
    xa_struct_set(vbd_rec, "bootable", xa_bool(false));
    xa_struct_set(vbd_rec, "mode", xa_string("RW"));
    xa_struct_set(vbd_rec, "type", xa_string("Disk"));
    xa_struct_set(vbd_rec, "empty", xa_bool(false));
    xa_struct_set(vbd_rec, "other_config", xa_struct());
    xa_struct_set(vbd_rec, "qos_algorithm_type", xa_string(""));
    xa_struct_set(vbd_rec, "qos_algorithm_params", xa_struct());
    p = xa_array();
    xa_array_append(p, vbd_rec);
    err = xe_call_async(xe, "VBD.create", p, NULL);
    if (err) {
        xa_error_free(
            call_ref(xe, "VDI.destroy", xa_value_str(vdi), NULL, NULL, NULL));
    }
    xa_value_unref(vdi);
    return err;
}

static int
cmd_disk_add(struct xe *xe, const struct xe_cmd *cmd)
{
    struct disk_ctx d = {0};
    const char *size = xe_arg_req(xe, "disk-size");
    if (!size) {
        return 1;
    }
    if (!xe_parse_size(size, &d.size)) {
        return xe_fail("Invalid disk-size '%s'", size);
    }
    d.device = xe_arg(xe, "device");
    char *sr_uuid = NULL;
    struct xa_error *err = install_sr(xe, &sr_uuid);
    if (!err && !sr_uuid) {
        return xe_fail("No SR specified and the pool has no default SR");
    }
    if (!err) {
        err = xe_resolve_ref(xe, xa_schema_class("SR"), sr_uuid, &d.sr);
    }
    free(sr_uuid);
    if (err) {
        return report(xe, err);
    }
    int rc = for_each_selected(xe, cmd, do_disk_add, &d);
    free(d.sr);
    return rc;
}

/* The VM's CD drive, or an error naming the VM. */
static struct xa_error *
find_cd_vbd(struct xe *xe, const char *vm, const struct xa_value *rec,
            char **ret)
{
    const struct xa_value *vbds = xa_struct_get(rec, "VBDs");
    *ret = NULL;
    for (size_t i = 0; vbds && vbds->kind == XA_ARRAY && i < vbds->u.arr.n;
         i++) {
        const char *r = xa_value_str(vbds->u.arr.items[i]);
        struct xa_value *t = NULL;
        struct xa_error *err = call_ref(xe, "VBD.get_type", r, NULL, NULL, &t);
        bool cd = !err && xa_value_str(t) && strcmp(xa_value_str(t), "CD") == 0;
        xa_error_free(err);
        xa_value_unref(t);
        if (cd) {
            *ret = xa_strdup(r);
            return NULL;
        }
    }
    return xa_error_new("VM_NO_EMPTY_CD_VBD", 1, vm);
}

static struct xa_error *
do_cd_insert(struct xe *xe, const char *ref, const struct xa_value *rec,
             void *ctx)
{
    char *vbd = NULL;
    struct xa_error *err = find_cd_vbd(xe, ref, rec, &vbd);
    if (!err) {
        err = call_ref(xe, "VBD.insert", vbd, xa_string(ctx), NULL, NULL);
    }
    free(vbd);
    return err;
}

static struct xa_error *
do_cd_eject(struct xe *xe, const char *ref, const struct xa_value *rec,
            void *ctx)
{
    XA_UNUSED(ctx);
    char *vbd = NULL;
    struct xa_error *err = find_cd_vbd(xe, ref, rec, &vbd);
    if (!err) {
        err = call_ref(xe, "VBD.eject", vbd, NULL, NULL, NULL);
    }
    free(vbd);
    return err;
}

static int
cmd_cd_insert(struct xe *xe, const struct xe_cmd *cmd)
{
    const char *name = xe_arg_req(xe, "cd-name");
    if (!name) {
        return 1;
    }
    char *vdi = NULL;
    struct xa_error *err =
        xe_resolve_ref(xe, xa_schema_class("VDI"), name, &vdi);
    if (err) {
        return report(xe, err);
    }
    int rc = for_each_selected(xe, cmd, do_cd_insert, vdi);
    free(vdi);
    return rc;
}

static int
cmd_cd_eject(struct xe *xe, const struct xe_cmd *cmd)
{
    return for_each_selected(xe, cmd, do_cd_eject, NULL);
}

/* ---- streaming ------------------------------------------------------- */

static char *
url_escape(const char *s)
{
    struct xa_buf b = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("-_.~", *p)) {
            xa_buf_putc(&b, (char)*p);
        } else {
            xa_buf_printf(&b, "%%%02X", *p);
        }
    }
    return xa_buf_steal(&b);
}

static void
xfer_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct xe *xe = ctx;
    if (!xe->progress) {
        return;
    }
    if (total > 0) {
        fprintf(stderr, "\r%3d%% (%llu of %llu bytes)",
                (int)(done * 100 / total), (unsigned long long)done,
                (unsigned long long)total);
    } else {
        fprintf(stderr, "\r%llu bytes", (unsigned long long)done);
    }
}

/* Waits for a task the server drives through an HTTP handler. */
static struct xa_error *
wait_task(struct xe *xe, const char *task, struct xa_value **ret_result)
{
    for (int i = 0; i < 36000; i++) {
        struct xa_value *rec = NULL;
        struct xa_error *err =
            call_ref(xe, "task.get_record", task, NULL, NULL, &rec);
        if (err) {
            return err;
        }
        const char *st = xa_struct_get_str(rec, "status");
        if (st && strcmp(st, "pending") != 0) {
            if (strcmp(st, "success") != 0) {
                const struct xa_value *ei = xa_struct_get(rec, "error_info");
                if (ei && ei->kind == XA_ARRAY && ei->u.arr.n > 0 &&
                    xa_value_str(ei->u.arr.items[0])) {
                    err = xa_error_new(xa_value_str(ei->u.arr.items[0]), 0);
                    for (size_t k = 1; k < ei->u.arr.n; k++) {
                        const char *s = xa_value_str(ei->u.arr.items[k]);
                        xa_error_add_param(err, s ? s : "");
                    }
                } else {
                    err = xa_error_new("TASK_CANCELLED", 1, task);
                }
            } else if (ret_result) {
                const char *r = xa_struct_get_str(rec, "result");
                *ret_result = xa_string(r ? r : "");
            }
            xa_value_unref(rec);
            return err;
        }
        xa_value_unref(rec);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return xa_error_new("TASK_CANCELLED", 1, task);
}

/* One transfer through handler 'path' with a task of our own: 'query'
 * holds the handler's own arguments. */
static int
transfer(struct xe *xe, bool put, const char *path, const char *query,
         const char *filename, const char *what, struct xa_value **ret_result)
{
    int fd =
        put ? open(filename, O_RDONLY | O_CLOEXEC)
            : open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return xe_fail("Cannot open '%s': %s", filename, strerror(errno));
    }
    struct stat st;
    uint64_t size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    struct xa_value *p = xa_array(), *task = NULL;
    xa_array_append(p, xa_string(what));
    xa_array_append(p, xa_string(""));
    struct xa_error *err = xe_call(xe, "task.create", p, &task);
    if (err) {
        close(fd);
        return report(xe, err);
    }
    const char *tref = xa_value_str(task);
    char *s = url_escape(xa_client_session(xe->c));
    char *t = url_escape(tref ? tref : "");
    char *url = xa_asprintf("%s?session_id=%s&task_id=%s%s%s", path, s, t,
                            query[0] ? "&" : "", query);
    free(s);
    free(t);
    long status = 0;
    err = put ? xa_client_http_put(xe->c, url, fd, size, xfer_progress, xe,
                                   &status)
              : xa_client_http_get(xe->c, url, fd, xfer_progress, xe, &status);
    free(url);
    close(fd);
    if (xe->progress) {
        fputc('\n', stderr);
    }
    int rc = 0;
    if (status == 404 || status == 405 || status == 501) {
        xa_error_free(err);
        err = NULL;
        rc = xe_fail("The server does not support %s (HTTP %ld on %s)", what,
                     status, path);
    } else if (!err) {
        err = wait_task(xe, tref, ret_result);
    }
    if (err) {
        rc = report(xe, err);
    }
    if (rc && !put) {
        unlink(filename);
    }
    xa_error_free(call_ref(xe, "task.destroy", tref, NULL, NULL, NULL));
    xa_value_unref(task);
    return rc;
}

static struct xa_error *
do_export(struct xe *xe, const char *ref, const struct xa_value *rec, void *ctx)
{
    XA_UNUSED(ref);
    const char *uuid = xa_struct_get_str(rec, "uuid");
    char *u = url_escape(uuid ? uuid : "");
    char *q = xa_asprintf("uuid=%s", u);
    free(u);
    int rc = transfer(xe, false, "/export", q, ctx, "VM export", NULL);
    free(q);
    return rc ? xa_error_new("XE_REPORTED", 0) : NULL;
}

static int
cmd_vm_export(struct xe *xe, const struct xe_cmd *cmd)
{
    const char *file = xe_arg_req(xe, "filename");
    if (!file) {
        return 1;
    }
    return for_each_selected(xe, cmd, do_export, (void *)file);
}

static int
cmd_vm_import(struct xe *xe, const struct xe_cmd *cmd)
{
    XA_UNUSED(cmd);
    const char *file = xe_arg_req(xe, "filename");
    if (!file) {
        return 1;
    }
    struct xa_buf q = {0};
    const char *sr = xe_arg(xe, "sr-uuid");
    if (sr) {
        char *ref = NULL;
        struct xa_error *err =
            xe_resolve_ref(xe, xa_schema_class("SR"), sr, &ref);
        if (err) {
            return report(xe, err);
        }
        char *e = url_escape(ref);
        xa_buf_printf(&q, "sr_id=%s&", e);
        free(e);
        free(ref);
    }
    xa_buf_printf(&q, "restore=%s&force=%s",
                  xe_arg_bool(xe, "preserve", false) ? "true" : "false",
                  xe_arg_bool(xe, "force", false) ? "true" : "false");
    struct xa_value *result = NULL;
    int rc = transfer(xe, true, "/import", q.data, file, "VM import", &result);
    xa_buf_free(&q);
    if (!rc && result) {
        /* The result names the new VMs: print their uuids. */
        const char *r = xa_value_str(result);
        const char *p = r;
        while (p && (p = strstr(p, "OpaqueRef:")) != NULL) {
            size_t n = strcspn(p, "<\"', ");
            char *ref = xa_strndup(p, n);
            char *uuid = xe_ref_uuid(xe, xa_schema_class("VM"), ref);
            xe_print_line(xe, uuid);
            free(uuid);
            free(ref);
            p += n;
        }
    }
    xa_value_unref(result);
    return rc;
}

static int
vdi_transfer(struct xe *xe, bool put)
{
    const char *uuid = xe_arg_req(xe, "uuid");
    const char *file = uuid ? xe_arg_req(xe, "filename") : NULL;
    if (!file) {
        return 1;
    }
    const char *format = xe_arg(xe, "format");
    char *u = url_escape(uuid);
    char *f = url_escape(format ? format : "raw");
    char *q = xa_asprintf("vdi=%s&format=%s", u, f);
    free(u);
    free(f);
    int rc = transfer(xe, put, put ? "/import_raw_vdi" : "/export_raw_vdi", q,
                      file, put ? "VDI import" : "VDI export", NULL);
    free(q);
    return rc;
}

static int
cmd_vdi_import(struct xe *xe, const struct xe_cmd *cmd)
{
    XA_UNUSED(cmd);
    return vdi_transfer(xe, true);
}

static int
cmd_vdi_export(struct xe *xe, const struct xe_cmd *cmd)
{
    XA_UNUSED(cmd);
    return vdi_transfer(xe, false);
}

/* ---- event-wait -------------------------------------------------------- */

/* Whether some object of the class meets every condition left in the
 * arguments ("field=value", or "field=/=value" for "differs"). */
static struct xa_error *
condition_met(struct xe *xe, const struct xe_class *xc, bool *met)
{
    *met = false;
    char *m = xa_asprintf("%s.get_all_records", xc->cls->name);
    struct xa_value *all = NULL;
    struct xa_error *err = xe_call(xe, m, xa_array(), &all);
    free(m);
    if (err) {
        return err;
    }
    for (size_t r = 0; !*met && r < all->u.st.n; r++) {
        bool ok = true;
        for (size_t i = 0; ok && i < xe->n_args; i++) {
            struct xe_arg *a = &xe->args[i];
            if (a->used || !a->val) {
                continue;
            }
            bool negate = xa_str_has_prefix(a->val, "/=");
            int hit = xe_record_matches(xe, xc, all->u.st.m[r].val, a->key,
                                        negate ? a->val + 2 : a->val);
            if (hit < 0) {
                xa_value_unref(all);
                return xa_error_new("Missing parameter", 1, a->key);
            }
            ok = negate ? hit == 0 : hit == 1;
        }
        *met = ok;
    }
    xa_value_unref(all);
    return NULL;
}

static int
cmd_event_wait(struct xe *xe, const struct xe_cmd *cmd)
{
    XA_UNUSED(cmd);
    const char *cls = xe_arg_req(xe, "class");
    if (!cls) {
        return 1;
    }
    const struct xe_class *xc = xe_class_find(cls);
    if (!xc) {
        return xe_fail("Unknown class '%s'", cls);
    }
    const char *tmo = xe_arg(xe, "timeout");
    double deadline = tmo ? xa_monotonic() + atof(tmo) : 0;
    char *token = xa_strdup("");
    int rc = 0;
    for (;;) {
        bool met = false;
        struct xa_error *err = condition_met(xe, xc, &met);
        if (err) {
            rc = report(xe, err);
            break;
        }
        if (met) {
            break;
        }
        if (deadline && xa_monotonic() > deadline) {
            rc = xe_fail("Timed out waiting for the event");
            break;
        }
        /* Block in event.from until the class changes; a server without
         * events is polled instead. */
        struct xa_value *p = xa_array(), *classes = xa_array(), *ev = NULL;
        xa_array_append(classes, xa_string(xc->cls->lname));
        xa_array_append(p, classes);
        xa_array_append(p, xa_string(token));
        xa_array_append(p, xa_double(5.0));
        err = xe_call(xe, "event.from", p, &ev);
        const char *nt = err ? NULL : xa_struct_get_str(ev, "token");
        if (nt) {
            free(token);
            token = xa_strdup(nt);
        } else {
            struct timespec ts = {0, 500 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        xa_error_free(err);
        xa_value_unref(ev);
    }
    free(token);
    return rc;
}

/* ---- the table ----------------------------------------------------- */

const struct xe_custom xe_custom_cmds[] = {
    {"vm-install", cmd_install, NULL, "new-name-label, template",
     "sr-uuid, sr-name-label",
     "Installs a new VM from a template: clones it, points its disks at the "
     "chosen (or the default) SR, and provisions them."},
    {"vm-uninstall", cmd_uninstall, "vm", "", "--force, <vm-selectors>",
     "Destroys the selected VMs and the disks no other VM uses."},
    {"vm-shutdown", cmd_shutdown, "vm", "", "--force, <vm-selectors>",
     "Shuts the selected VMs down, cleanly or (--force) at once."},
    {"vm-reboot", cmd_reboot, "vm", "", "--force, <vm-selectors>",
     "Reboots the selected VMs, cleanly or (--force) at once."},
    {"vm-migrate", cmd_migrate, "vm", "",
     "host, host-uuid, live, remote-master, remote-username, "
     "remote-password, remote-network, vdi:<vdi-uuid>=<sr-uuid>, "
     "vif:<vif-uuid>=<network-uuid>, <vm-selectors>",
     "Migrates the selected VMs to another host of the pool or, with "
     "remote-master, of another pool; vdi: and vif: move disks to other "
     "SRs and VIFs to other networks (storage motion)."},
    {"vm-disk-add", cmd_disk_add, "vm", "disk-size",
     "device, sr-uuid, <vm-selectors>", "Adds a new disk to the selected VMs."},
    {"vm-cd-insert", cmd_cd_insert, "vm", "cd-name", "<vm-selectors>",
     "Inserts a CD image into the CD drive of the selected VMs."},
    {"vm-cd-eject", cmd_cd_eject, "vm", "", "<vm-selectors>",
     "Ejects the CD from the CD drive of the selected VMs."},
    {"vm-export", cmd_vm_export, "vm", "filename", "<vm-selectors>",
     "Exports the selected VM to a file (XVA) through /export."},
    {"vm-import", cmd_vm_import, NULL, "filename", "sr-uuid, preserve, --force",
     "Imports a VM from an XVA file through /import."},
    {"vdi-import", cmd_vdi_import, NULL, "uuid, filename", "format",
     "Writes a disk image file into a VDI through /import_raw_vdi."},
    {"vdi-export", cmd_vdi_export, NULL, "uuid, filename", "format",
     "Reads a VDI into a file through /export_raw_vdi."},
    {"snapshot-revert", cmd_snapshot_revert, "snapshot", "",
     "snapshot-uuid, <snapshot-selectors>",
     "Reverts the VM of a snapshot to the state the snapshot recorded."},
    {"event-wait", cmd_event_wait, NULL, "class",
     "timeout, <field>=<value>, <field>=/=<value>",
     "Waits until an object of the class has the given field values."},
};
const size_t xe_n_custom_cmds = XA_ARRAY_SIZE(xe_custom_cmds);
