/* pool.c - pool.join / eject / master changes and the hidden
 * host-to-host messages of server/pool (see pool/pool.h).
 *
 * Join, on the joining host: pre-checks against its own database, a
 * login to the master over TLS (the master's certificate fingerprint is
 * seen in the handshake and pinned once the credentials are accepted),
 * version checks, then pool.join_merge hands the master this host's own
 * rows (host, metrics, CPUs, control domain, PIFs and their networks,
 * local SRs with their PBDs and VDIs) and this host's fingerprint; the
 * master answers the pool secret.  Nothing is written on either side
 * before join_merge succeeds.  The joiner then becomes a member in
 * process: its replica starts from a full copy of the master's database.
 *
 * Eject: the master asks the member to leave (it wipes its pool state
 * and database and re-executes itself as a fresh standalone host, same
 * pid and ports), then deletes the member's rows. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/vm.h"
#include "client.h"
#include "ha/ha.h"
#include "hmap.h"
#include "log.h"
#include "pool/pool-internal.h"
#include "self.h"
#include "xa-impl.h"

#define LOG "pool"

static const struct xa_class_desc *
cls(const char *name)
{
    return xa_schema_class(name);
}

static int
fld(const char *c, const char *f)
{
    return xa_schema_field_index(cls(c), f);
}

static const char *
str(struct xa_txn *t, const char *c, const char *ref, const char *f)
{
    const struct xa_value *v = xa_db_peek_field(t, cls(c), ref, fld(c, f));
    return v && xa_value_str(v) ? xa_value_str(v) : "";
}

static struct xa_value *
refs_where(struct xa_txn *t, const char *c, const char *f, const char *ref)
{
    return xa_api_refs_where(t, cls(c), fld(c, f), ref);
}

/* --- the rows a host owns ------------------------------------------------*/

static void
own_add(struct xa_hmap *set, const char *ref)
{
    if (ref && *ref && strcmp(ref, "OpaqueRef:NULL") != 0) {
        xa_hmap_put(set, ref, (void *)1);
    }
}

static void
own_add_all(struct xa_hmap *set, struct xa_value *refs)
{
    for (size_t i = 0; refs && i < refs->u.arr.n; i++) {
        own_add(set, refs->u.arr.items[i]->u.str.s);
    }
    xa_value_unref(refs);
}

/* The refs of every row that belongs to 'host' alone. */
static void
owned_rows(struct xa_txn *t, const char *host, struct xa_hmap *set)
{
    own_add(set, host);
    own_add(set, str(t, "host", host, "metrics"));
    own_add_all(set, refs_where(t, "host_cpu", "host", host));
    own_add_all(set, refs_where(t, "Certificate", "host", host));
    const char *dom0 = str(t, "host", host, "control_domain");
    if (xa_db_exists(t, cls("VM"), dom0)) {
        own_add(set, dom0);
        own_add(set, str(t, "VM", dom0, "metrics"));
    }
    struct xa_value *pifs = refs_where(t, "PIF", "host", host);
    for (size_t i = 0; pifs && i < pifs->u.arr.n; i++) {
        const char *p = pifs->u.arr.items[i]->u.str.s;
        own_add(set, p);
        own_add(set, str(t, "PIF", p, "metrics"));
    }
    xa_value_unref(pifs);
    struct xa_value *pbds = refs_where(t, "PBD", "host", host);
    for (size_t i = 0; pbds && i < pbds->u.arr.n; i++) {
        const char *p = pbds->u.arr.items[i]->u.str.s;
        own_add(set, p);
        const char *sr = str(t, "PBD", p, "SR");
        if (!xa_db_exists(t, cls("SR"), sr) ||
            xa_api_bool(t, cls("SR"), sr, fld("SR", "shared"))) {
            continue;
        }
        own_add(set, sr);
        own_add_all(set, refs_where(t, "VDI", "SR", sr));
    }
    xa_value_unref(pbds);
}

struct collect {
    struct xa_hmap *set;
    struct xa_buf b;
    bool first;
};

static void
collect_row(void *ctx, const char *c, const char *ref, const char *json)
{
    struct collect *k = ctx;
    if (!json || !xa_hmap_get(k->set, ref)) {
        return;
    }
    xa_buf_printf(&k->b, "%s[\"%s\",\"%s\",%s]", k->first ? "" : ",", c, ref,
                  json);
    k->first = false;
}

/* --- join (on the joining host) ------------------------------------------*/

static bool
capture_fp(void *ctx, const char *fp, bool ca_ok)
{
    XA_UNUSED(ca_ok);
    char **out = ctx;
    free(*out);
    *out = xa_strdup(fp);
    return true; /* trusted once the master accepts the credentials */
}

static struct xa_error *
join_prechecks(void)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = NULL;
    if (xa_db_count(t, cls("host")) > 1) {
        err = xa_error_new("JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS", 0);
    }
    struct xa_value *vms = xa_db_get_all(t, cls("VM"));
    for (size_t i = 0; !err && vms && i < vms->u.arr.n; i++) {
        const char *vm = vms->u.arr.items[i]->u.str.s;
        if (xa_api_bool(t, cls("VM"), vm, fld("VM", "is_control_domain"))) {
            continue;
        }
        const char *ps = str(t, "VM", vm, "power_state");
        if (strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0 ||
            strcmp(ps, "Suspended") == 0) {
            err = xa_error_new(
                "JOINING_HOST_CANNOT_HAVE_RUNNING_OR_SUSPENDED_VMS", 0);
        }
        const struct xa_value *ops =
            xa_db_peek_field(t, cls("VM"), vm, fld("VM", "current_operations"));
        if (!err && ops && ops->kind == XA_STRUCT && ops->u.st.n) {
            err = xa_error_new(
                "JOINING_HOST_CANNOT_HAVE_VMS_WITH_CURRENT_OPERATIONS", 0);
        }
    }
    xa_value_unref(vms);
    struct xa_value *srs = xa_db_get_all(t, cls("SR"));
    for (size_t i = 0; !err && srs && i < srs->u.arr.n; i++) {
        if (xa_api_bool(t, cls("SR"), srs->u.arr.items[i]->u.str.s,
                        fld("SR", "shared"))) {
            err = xa_error_new("JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS", 0);
        }
    }
    xa_value_unref(srs);
    xa_db_end(t);
    return err;
}

static char *
own_version(const char *key)
{
    struct xa_txn *t = xa_db_begin_read();
    const char *v = xa_api_map_get(t, cls("host"), xa_self_host(),
                                   fld("host", "software_version"), key);
    char *s = xa_strdup(v ? v : "");
    xa_db_end(t);
    return s;
}

static struct xa_error *
check_versions(struct xa_client *c)
{
    struct xa_value *v = NULL;
    struct xa_error *err = xa_client_call(c, "pool.get_all", true, NULL, &v);
    if (err) {
        return err;
    }
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_value_ref(v->u.arr.items[0]));
    xa_value_unref(v);
    v = NULL;
    err = xa_client_call(c, "pool.get_master", true, p, &v);
    if (err) {
        return err;
    }
    p = xa_array();
    xa_array_append(p, v);
    v = NULL;
    err = xa_client_call(c, "host.get_software_version", true, p, &v);
    if (err) {
        return err;
    }
    struct xa_value *pv = xa_struct_get(v, "product_version");
    char *mine = own_version("product_version");
    if (pv && xa_value_str(pv) && strcmp(xa_value_str(pv), mine) != 0) {
        err =
            xa_error_new("POOL_JOINING_HOST_MUST_HAVE_SAME_PRODUCT_VERSION", 0);
    }
    free(mine);
    xa_value_unref(v);
    return err;
}

static struct xa_error *
do_join(struct xa_call *call, const char *master, const char *user,
        const char *pw, bool force)
{
    XA_UNUSED(call);
    if (xa_pool_role() != XA_POOL_MASTER) {
        return xa_error_new("JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS", 0);
    }
    if (xa_pool_g.cfg.https_port <= 0) {
        return xa_error_new("JOINING_HOST_SERVICE_FAILED", 0);
    }
    struct xa_error *err = join_prechecks();
    if (err) {
        return err;
    }
    char *seen_fp = NULL;
    char *url = xa_pool_url(master);
    struct xa_client_options o = {
        .protocol = XA_CLIENT_JSONRPC,
        .cert_check = capture_fp,
        .cert_ctx = &seen_fp,
        .timeout_s = 60,
    };
    struct xa_client *c = xa_client_new(url, &o);
    free(url);
    err = xa_client_login(c, user, pw);
    if (err && strncmp(err->code, "CLIENT_", 7) == 0) {
        xa_log_warn(LOG, "join: cannot reach %s: %s", master,
                    err->n_params > 1 ? err->params[1] : err->code);
        xa_error_free(err);
        err = xa_error_new("JOINING_HOST_CONNECTION_FAILED", 0);
    }
    if (!err && !force) {
        err = check_versions(c);
    }
    char *own_fp = xa_pool_own_fingerprint();
    struct xa_value *v = NULL;
    if (!err) {
        struct xa_hmap set;
        xa_hmap_init(&set);
        struct xa_txn *t = xa_db_begin_read();
        owned_rows(t, xa_self_host(), &set);
        /* the networks of its PIFs too: the master maps them onto its
         * own by bridge (they are not this host's alone: eject keeps
         * them) */
        struct xa_value *pifs = refs_where(t, "PIF", "host", xa_self_host());
        for (size_t i = 0; pifs && i < pifs->u.arr.n; i++) {
            own_add(&set,
                    str(t, "PIF", pifs->u.arr.items[i]->u.str.s, "network"));
        }
        xa_value_unref(pifs);
        xa_db_end(t);
        struct collect k = {.set = &set, .first = true};
        uint64_t gen;
        xa_buf_printf(&k.b,
                      "{\"host\":\"%s\",\"fingerprint\":\"%s\",\"rows\":[",
                      xa_self_host(), own_fp ? own_fp : "");
        xa_db_export_since(0, collect_row, &k, &gen);
        xa_buf_puts(&k.b, "]}");
        xa_hmap_clear(&set, NULL);
        struct xa_value *p = xa_array();
        xa_array_append(p, xa_string_take(xa_buf_steal(&k.b)));
        err = xa_client_call(c, "pool.join_merge", true, p, &v);
    }
    xa_error_free(xa_client_logout(c));
    xa_client_free(c);
    struct json_object *j =
        !err && xa_value_str(v) ? json_tokener_parse(xa_value_str(v)) : NULL;
    struct json_object *secret = NULL, *addr = NULL;
    if (!err && (!j || !json_object_object_get_ex(j, "secret", &secret) ||
                 !json_object_object_get_ex(j, "address", &addr))) {
        err = xa_error_new("JOINING_HOST_SERVICE_FAILED", 0);
    }
    if (!err) {
        /* from here on this host belongs to the pool */
        xa_pool_add_pin(seen_fp);
        xa_pool_set_secret(json_object_get_string(secret));
        xa_pool_replica_reset();
        xa_pool_become_member(json_object_get_string(addr));
        xa_log_info(LOG, "joined the pool of %s", master);
    }
    json_object_put(j);
    xa_value_unref(v);
    free(own_fp);
    free(seen_fp);
    return err;
}

struct xa_error *
xa_impl_pool_join(struct xa_call *call, const char *master_address,
                  const char *master_username, const char *master_password)
{
    return do_join(call, master_address, master_username, master_password,
                   false);
}

struct xa_error *
xa_impl_pool_join_force(struct xa_call *call, const char *master_address,
                        const char *master_username,
                        const char *master_password)
{
    return do_join(call, master_address, master_username, master_password,
                   true);
}

/* --- join (on the master) -------------------------------------------------*/

struct xa_error *
xa_impl_pool_join_merge(struct xa_call *call, const char *payload,
                        struct xa_value **ret)
{
    XA_UNUSED(call);
    if (xa_pool_role() != XA_POOL_MASTER) {
        return xa_error_new("HOST_IS_SLAVE", 1, "");
    }
    struct json_object *j = json_tokener_parse(payload);
    struct json_object *rows = NULL, *o;
    if (!j || !json_object_object_get_ex(j, "rows", &rows)) {
        json_object_put(j);
        return xa_error_internal("pool.join_merge: malformed payload");
    }
    const char *host = json_object_object_get_ex(j, "host", &o)
                           ? json_object_get_string(o)
                           : "";
    const char *fp = json_object_object_get_ex(j, "fingerprint", &o)
                         ? json_object_get_string(o)
                         : "";
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (xa_db_exists(t, cls("host"), host)) {
        err = xa_error_new("HOSTS_NOT_COMPATIBLE", 0);
    }
    /* a network whose bridge the pool has already is the pool's: the
     * joiner's PIFs move onto it */
    struct xa_hmap remap;
    xa_hmap_init(&remap);
    size_t n = json_object_array_length(rows);
    for (size_t i = 0; i < n && !err; i++) {
        struct json_object *r = json_object_array_get_idx(rows, i);
        const char *c = json_object_get_string(json_object_array_get_idx(r, 0));
        const char *ref =
            json_object_get_string(json_object_array_get_idx(r, 1));
        struct json_object *row = json_object_array_get_idx(r, 2), *b;
        if (strcmp(c, "network") != 0 ||
            !json_object_object_get_ex(row, "bridge", &b)) {
            continue;
        }
        struct xa_value *nets = xa_db_get_all(t, cls("network"));
        for (size_t k = 0; nets && k < nets->u.arr.n; k++) {
            const char *nref = nets->u.arr.items[k]->u.str.s;
            if (strcmp(str(t, "network", nref, "bridge"),
                       json_object_get_string(b)) == 0) {
                xa_hmap_put(&remap, ref, xa_strdup(nref));
                break;
            }
        }
        xa_value_unref(nets);
    }
    for (size_t i = 0; i < n && !err; i++) {
        struct json_object *r = json_object_array_get_idx(rows, i);
        const char *c = json_object_get_string(json_object_array_get_idx(r, 0));
        const char *ref =
            json_object_get_string(json_object_array_get_idx(r, 1));
        if (xa_hmap_get(&remap, ref)) {
            continue;
        }
        err = xa_db_apply_row(
            t, c, ref,
            json_object_to_json_string_ext(json_object_array_get_idx(r, 2),
                                           JSON_C_TO_STRING_PLAIN),
            NULL, 0);
        if (!err && strcmp(c, "PIF") == 0) {
            char *net = xa_strdup(str(t, "PIF", ref, "network"));
            char *to = xa_hmap_get(&remap, net);
            if (to) {
                err = xa_db_set_field(t, cls("PIF"), ref, fld("PIF", "network"),
                                      xa_string(to));
            }
            free(net);
        }
    }
    xa_hmap_clear(&remap, free);
    if (!err) {
        err = xa_pool_cpu_level(t); /* the pool's features: what all have */
    }
    if (!err && *fp) {
        struct xa_value *rec = xa_struct();
        xa_struct_add(rec, "name", xa_string("xapi-ssl"));
        xa_struct_add(rec, "type", xa_string("host"));
        xa_struct_add(rec, "host", xa_string(host));
        xa_struct_add(rec, "fingerprint", xa_string(fp));
        char *cref = xa_ref_new();
        err = xa_db_create(t, cls("Certificate"), cref, rec);
        free(cref);
    }
    if (!err) {
        /* the joiner's own pool is gone: it is ours now */
        const char *addr = str(t, "host", xa_self_host(), "address");
        char *a = xa_strdup(addr);
        err = xa_db_commit(t);
        t = NULL;
        if (!err) {
            struct json_object *out = json_object_new_object();
            json_object_object_add(out, "secret",
                                   json_object_new_string(xa_pool_secret()));
            json_object_object_add(out, "address", json_object_new_string(a));
            *ret = xa_string(
                json_object_to_json_string_ext(out, JSON_C_TO_STRING_PLAIN));
            json_object_put(out);
            xa_log_info(LOG, "host %s joined the pool", host);
        }
        free(a);
    } else {
        xa_db_abort(t);
    }
    json_object_put(j);
    return err;
}

/* --- the stream and members' writes ---------------------------------------*/

static struct xa_error *
pool_only(const struct xa_call *call)
{
    return call->is_pool_session
               ? NULL
               : xa_error_new("RBAC_PERMISSION_DENIED", 2, "pool",
                              "Only pool members may call this");
}

struct xa_error *
xa_impl_pool_db_write(struct xa_call *call, const char *payload,
                      struct xa_value **ret)
{
    struct xa_error *err = pool_only(call);
    return err ? err : xa_pool_serve_db_write(payload, ret);
}

struct xa_error *
xa_impl_pool_check_session(struct xa_call *call, const char *session,
                           const char *message)
{
    struct xa_error *err = pool_only(call);
    return err ? err : xa_pool_serve_check_session(call, session, message);
}

struct xa_error *
xa_impl_pool_replicate(struct xa_call *call, const char *request,
                       struct xa_value **ret)
{
    struct xa_error *err = pool_only(call);
    return err ? err : xa_pool_serve_replicate(call, request, ret);
}

/* --- eject
 * ------------------------------------------------------------------*/

struct xa_error *
xa_impl_pool_leave(struct xa_call *call)
{
    struct xa_error *err = pool_only(call);
    if (!err) {
        xa_pool_restart_fresh();
    }
    return err;
}

struct xa_error *
xa_impl_pool_eject(struct xa_call *call, const char *host)
{
    XA_UNUSED(call);
    if (strcmp(host, xa_self_host()) == 0) {
        return xa_error_new("HOST_CANNOT_DESTROY_SELF", 1, host);
    }
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *vms = refs_where(t, "VM", "resident_on", host);
    bool busy = false;
    for (size_t i = 0; vms && i < vms->u.arr.n && !busy; i++) {
        busy = !xa_api_bool(t, cls("VM"), vms->u.arr.items[i]->u.str.s,
                            fld("VM", "is_control_domain"));
    }
    xa_value_unref(vms);
    char *addr = xa_strdup(str(t, "host", host, "address"));
    xa_db_end(t);
    if (busy) {
        free(addr);
        return xa_error_new("HOST_HAS_RESIDENT_VMS", 1, host);
    }
    struct xa_error *err =
        xa_pool_link_call(addr, "calls", "pool.leave", NULL, NULL, false, 10);
    if (err) {
        xa_log_warn(LOG, "eject: %s did not answer (%s); forgetting it anyway",
                    addr, err->code);
        xa_error_free(err);
    }
    free(addr);
    struct xa_hmap set;
    xa_hmap_init(&set);
    t = xa_db_begin_write();
    owned_rows(t, host, &set);
    err = NULL;
    for (size_t c = 0; c < xa_schema_n_classes && !err; c++) {
        const struct xa_class_desc *k = xa_schema_classes[c];
        if (!k->in_db || !k->persist) {
            continue;
        }
        struct xa_value *all = xa_db_get_all(t, k);
        for (size_t i = 0; all && i < all->u.arr.n && !err; i++) {
            const char *r = all->u.arr.items[i]->u.str.s;
            if (xa_hmap_get(&set, r) && xa_db_exists(t, k, r)) {
                err = xa_db_destroy(t, k, r);
            }
        }
        xa_value_unref(all);
    }
    xa_hmap_clear(&set, NULL);
    if (!err) {
        err = xa_pool_cpu_level(t);
    }
    return xa_api_finish(t, err);
}

/* --- master changes --------------------------------------------------------*/

struct xa_error *
xa_impl_pool_become_master(struct xa_call *call)
{
    struct xa_error *err = pool_only(call);
    if (!err && xa_pool_role() == XA_POOL_MEMBER) {
        xa_pool_become_master();
    }
    return err;
}

struct xa_error *
xa_impl_pool_emergency_transition_to_master(struct xa_call *call)
{
    XA_UNUSED(call);
    if (xa_pool_role() == XA_POOL_MEMBER) {
        xa_pool_take_over();
    }
    return NULL;
}

struct xa_error *
xa_impl_pool_emergency_reset_master(struct xa_call *call,
                                    const char *master_address)
{
    XA_UNUSED(call);
    char *mine = NULL;
    struct xa_txn *t = xa_db_begin_read();
    mine = xa_strdup(str(t, "host", xa_self_host(), "address"));
    xa_db_end(t);
    if (strcmp(mine, master_address) != 0) {
        xa_pool_become_member(master_address);
    }
    free(mine);
    return NULL;
}

struct xa_error *
xa_impl_pool_recover_slaves(struct xa_call *call, struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *hosts = xa_db_get_all(t, cls("host"));
    char *mine = xa_strdup(str(t, "host", xa_self_host(), "address"));
    xa_db_end(t);
    struct xa_value *out = xa_array();
    for (size_t i = 0; hosts && i < hosts->u.arr.n; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        if (strcmp(h, xa_self_host()) == 0) {
            continue;
        }
        t = xa_db_begin_read();
        char *addr = xa_strdup(str(t, "host", h, "address"));
        xa_db_end(t);
        struct xa_value *p = xa_array();
        xa_array_append(p, xa_string(mine));
        struct xa_error *err = xa_pool_link_call(
            addr, "calls", "pool.emergency_reset_master", p, NULL, true, 10);
        if (err) {
            xa_log_warn(LOG, "recover_slaves: %s: %s", addr, err->code);
            xa_error_free(err);
        } else {
            xa_array_append(out, xa_string(h));
        }
        free(addr);
    }
    xa_value_unref(hosts);
    free(mine);
    *ret = out;
    return NULL;
}

struct xa_error *
xa_impl_pool_designate_new_master(struct xa_call *call, const char *host)
{
    XA_UNUSED(call);
    if (strcmp(host, xa_self_host()) == 0) {
        return NULL;
    }
    if (xa_pool_role() != XA_POOL_MASTER) {
        return xa_error_new("HOST_IS_SLAVE", 1, "");
    }
    struct xa_txn *t = xa_db_begin_read();
    /* as in xapi: HA names the master itself (its statefile decision) */
    if (xa_ha_enabled(t)) {
        xa_db_end(t);
        return xa_error_new("HA_IS_ENABLED", 0);
    }
    char *addr = xa_strdup(str(t, "host", host, "address"));
    struct xa_value *hosts = xa_db_get_all(t, cls("host"));
    xa_db_end(t);
    /* Phase 1: the new master has every write so far. */
    struct xa_error *err = NULL;
    if (!xa_pool_wait_member(host, xa_db_generation(), 10)) {
        err = xa_error_new("HOST_OFFLINE", 1, host);
    }
    /* Phase 2: writes are fenced (each waits, then goes to the new
     * master), the new master holds exactly the last generation
     * committed here, then it takes over. */
    if (!err) {
        uint64_t last = xa_pool_fence_writes();
        if (!xa_pool_wait_member(host, last, 10)) {
            err = xa_error_new("HOST_OFFLINE", 1, host);
        } else {
            err = xa_pool_link_call(addr, "calls", "pool.become_master", NULL,
                                    NULL, false, 30);
        }
        if (err) {
            xa_pool_unfence_writes();
        }
    }
    if (!err) {
        /* the others follow the new master */
        for (size_t i = 0; hosts && i < hosts->u.arr.n; i++) {
            const char *h = hosts->u.arr.items[i]->u.str.s;
            if (strcmp(h, host) == 0 || strcmp(h, xa_self_host()) == 0) {
                continue;
            }
            t = xa_db_begin_read();
            char *a = xa_strdup(str(t, "host", h, "address"));
            xa_db_end(t);
            struct xa_value *p = xa_array();
            xa_array_append(p, xa_string(addr));
            xa_error_free(xa_pool_link_call(
                a, "calls", "pool.emergency_reset_master", p, NULL, true, 10));
            free(a);
        }
        xa_pool_replica_reset();
        xa_pool_become_member(addr);
    }
    xa_value_unref(hosts);
    free(addr);
    return err;
}

struct xa_error *
xa_impl_pool_sync_database(struct xa_call *call)
{
    XA_UNUSED(call);
    /* Members follow the stream continuously: wait until each live one
     * holds everything committed so far. */
    uint64_t gen = xa_db_generation();
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *hosts = xa_db_get_all(t, cls("host"));
    xa_db_end(t);
    for (size_t i = 0; hosts && i < hosts->u.arr.n; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        if (strcmp(h, xa_self_host()) != 0) {
            xa_pool_wait_member(h, gen, 5);
        }
    }
    xa_value_unref(hosts);
    return NULL;
}
