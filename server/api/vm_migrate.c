/* vm_migrate.c - live migration inside a pool: VM.pool_migrate,
 * VM.assert_can_migrate, host.evacuate, host.assert_can_evacuate,
 * host.get_vms_which_prevent_evacuation and the hidden host.migrate_in.
 * See vm_migrate.h for the protocol between source and destination.
 *
 * The figures of the last migration of a VM go into its other_config
 * (last_migration_downtime_ms, last_migration_total_ms,
 * last_migration_bytes, last_migration_rounds, and
 * last_migration_switch_ms: from the end of the send to the guest
 * running on the destination, which the driver's downtime leaves out),
 * where they survive the task and can be read from any host of the pool.
 *
 * With the kvm driver the memory travels as a stream (mig_stream.c):
 * prepare answers "xapid-stream:TOKEN", the source dials the
 * destination's HTTPS port with it, QEMU sends into a unix socket the
 * source relays, and the source's QEMU is held stopped after the send
 * until commit says the destination runs the guest (else it goes on
 * here).  VM.pool_migrate's options tune it: "downtime_ms" (QEMU's
 * downtime-limit) and "bandwidth" (bytes/s, max-bandwidth); absent, the
 * pool's other_config "migration_downtime_ms" / "migration_bandwidth",
 * else QEMU's 300 ms and no bandwidth limit. */
#include "api/vm_migrate.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/net-api.h"
#include "api/sr_api.h"
#include "api/vm.h"
#include "hmap.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "network/net.h"
#include "self.h"
#include "task.h"
#include "xa-impl.h"

#define LOG "migrate"

/* Evacuation runs this many migrations at once unless told otherwise
 * (xapi's evacuation_batch_size default). */
#define DEFAULT_BATCH 10
#define MAX_BATCH     64

#define STREAM_URL "xapid-stream:"

/* --- checks -------------------------------------------------------------- */

static bool
opt_bool(const struct xa_value *options, const char *key, bool dflt)
{
    const char *v = options ? xa_struct_get_str(options, key) : NULL;
    if (!v) {
        return dflt;
    }
    return strcmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
           strcmp(v, "yes") == 0 || strcmp(v, "on") == 0;
}

/* A network with physical interfaces reaches a host only through one of
 * them; one without (host-internal) exists wherever it is used. */
static bool
network_visible(struct xa_txn *t, const char *net, const char *host)
{
    struct xa_value *pifs =
        xa_api_refs_where(t, &xa_cls_PIF, XA_F(xa_cls_PIF, "network"), net);
    bool ok = !pifs || pifs->u.arr.n == 0;
    for (size_t i = 0; pifs && i < pifs->u.arr.n && !ok; i++) {
        ok = strcmp(xa_api_str(t, &xa_cls_PIF, pifs->u.arr.items[i]->u.str.s,
                               XA_F(xa_cls_PIF, "host")),
                    host) == 0;
    }
    xa_value_unref(pifs);
    return ok;
}

static int64_t
vm_memory_need(struct xa_txn *t, const char *vm)
{
    return xa_api_int(t, &xa_cls_VM, vm,
                      XA_F(xa_cls_VM, "memory_dynamic_max")) +
           xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "memory_overhead"));
}

static int64_t
host_free(struct xa_txn *t, const char *host)
{
    const char *hm =
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "metrics"));
    return xa_api_int(t, &xa_cls_host_metrics, hm,
                      XA_F(xa_cls_host_metrics, "memory_free"));
}

/* The destination's part of xapi's checks (assert_can_boot_here with
 * the memory check): live, enabled, every disk's SR and every VIF's
 * network visible, memory for the VM unless it is already there.
 * 'planned' is memory already promised on that host by an evacuation
 * plan. */
static struct xa_error *
check_destination(struct xa_txn *t, const char *vm, const char *host,
                  int64_t planned)
{
    if (!xa_db_exists(t, &xa_cls_host, host)) {
        return xa_error_handle_invalid("host", host);
    }
    const char *hm =
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "metrics"));
    if (xa_db_exists(t, &xa_cls_host_metrics, hm) &&
        !xa_api_bool(t, &xa_cls_host_metrics, hm,
                     XA_F(xa_cls_host_metrics, "live"))) {
        return xa_error_new("HOST_NOT_LIVE", 0);
    }
    if (!xa_api_bool(t, &xa_cls_host, host, XA_F(xa_cls_host, "enabled"))) {
        return xa_error_new("HOST_DISABLED", 1, host);
    }
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    struct xa_error *err = NULL;
    for (size_t i = 0; vbds && i < vbds->u.arr.n && !err; i++) {
        const char *vbd = vbds->u.arr.items[i]->u.str.s;
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "VDI"));
        if (xa_api_bool(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "empty")) ||
            !xa_db_exists(t, &xa_cls_VDI, vdi)) {
            continue;
        }
        const char *sr =
            xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR"));
        if (!xa_sr_attached_on(t, sr, host)) {
            err = xa_error_new("VM_REQUIRES_SR", 2, vm, sr);
        }
    }
    xa_value_unref(vbds);
    struct xa_value *vifs =
        err ? NULL
            : xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs"));
    for (size_t i = 0; vifs && i < vifs->u.arr.n && !err; i++) {
        const char *net =
            xa_api_str(t, &xa_cls_VIF, vifs->u.arr.items[i]->u.str.s,
                       XA_F(xa_cls_VIF, "network"));
        if (xa_db_exists(t, &xa_cls_network, net) &&
            !network_visible(t, net, host)) {
            err = xa_error_new("VM_REQUIRES_NETWORK", 2, vm, net);
        }
    }
    xa_value_unref(vifs);
    if (err) {
        return err;
    }
    bool here =
        strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on")),
               host) == 0;
    int64_t needed = vm_memory_need(t, vm);
    int64_t avail = host_free(t, host) - planned;
    if (!here && needed > avail) {
        char n[32], a[32];
        snprintf(n, sizeof n, "%" PRId64, needed);
        snprintf(a, sizeof a, "%" PRId64, avail < 0 ? 0 : avail);
        return xa_error_new("HOST_NOT_ENOUGH_FREE_MEMORY", 2, n, a);
    }
    return NULL;
}

/* Every check of pool_migrate, in xapi's order: the VM's own state
 * machine (blocked, power state, concurrency, template, snapshot,
 * dom0), then the destination. */
static struct xa_error *
check_migrate(struct xa_txn *t, const char *vm, const char *host)
{
    struct xa_error *err = xa_vm_check_op(t, vm, "pool_migrate", false);
    return err ? err : check_destination(t, vm, host, 0);
}

static struct xa_error *
check_in_begin(struct xa_txn *t, const char *vm, void *ctx)
{
    return check_destination(t, vm, ctx, 0);
}

/* --- the destination: host.migrate_in ------------------------------------ */

/* Incoming domains between prepare and commit/abort, by VM ref. */
struct incoming {
    int64_t domid;
    bool local;  /* the source is this host: the domain is the old one */
    char *token; /* the stream this domain waits for (mig_stream.c) */
};

static void
incoming_free(struct incoming *in)
{
    if (in) {
        free(in->token);
        free(in);
    }
}

static pthread_mutex_t incoming_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xa_hmap incoming; /* VM ref -> struct incoming */
static bool incoming_init;

static struct incoming *
incoming_take(const char *vm)
{
    pthread_mutex_lock(&incoming_lock);
    struct incoming *in = incoming_init ? xa_hmap_get(&incoming, vm) : NULL;
    if (in) {
        xa_hmap_remove(&incoming, vm);
    }
    pthread_mutex_unlock(&incoming_lock);
    return in;
}

static char *
uuid_of(const char *vm)
{
    struct xa_txn *t = xa_db_begin_read();
    char *u = xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
    xa_db_end(t);
    return u;
}

/* Drivers that take the memory as a byte stream (the simulator needs
 * none; a localhost migration keeps its domain). */
static bool
driver_streams(bool local)
{
    return !local && strcmp(xa_hv_name(), "kvm") == 0;
}

static struct xa_error *
in_prepare(const char *vm, bool local, char **url)
{
    int64_t domid = -1;
    int sv[2] = {-1, -1};
    if (driver_streams(local) &&
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return xa_error_internal("socketpair: %s", strerror(errno));
    }
    struct xa_error *err = xa_vm_migrate_build(vm, sv[0], &domid);
    if (sv[0] >= 0) {
        close(sv[0]); /* the domain has its own copy */
    }
    if (err) {
        if (sv[1] >= 0) {
            close(sv[1]);
        }
        return err;
    }
    struct incoming *in = xa_calloc(1, sizeof *in);
    in->domid = domid;
    in->local = local;
    in->token = sv[1] >= 0 ? xa_mig_stream_expect(sv[1]) : NULL;
    pthread_mutex_lock(&incoming_lock);
    if (!incoming_init) {
        xa_hmap_init(&incoming);
        incoming_init = true;
    }
    struct incoming *stale = xa_hmap_get(&incoming, vm);
    if (stale && stale->token) {
        xa_mig_stream_forget(stale->token);
    }
    incoming_free(stale); /* a stale prepare of the same VM */
    xa_hmap_put(&incoming, vm, in);
    pthread_mutex_unlock(&incoming_lock);
    xa_vm_refresh_host_memory();
    /* "xapid-stream:TOKEN": dial this host and CONNECT /migrate with it;
     * otherwise what a sender would name (the simulator ignores it) */
    *url = in->token ? xa_asprintf("%s%s", STREAM_URL, in->token)
                     : xa_asprintf("xapid-migrate:%s:%" PRId64, xa_self_host(),
                                   domid);
    return NULL;
}

static struct xa_error *
in_commit(const char *vm)
{
    struct incoming *in = incoming_take(vm);
    if (!in) {
        return xa_error_internal("no incoming migration of %s here", vm);
    }
    struct xa_error *err = NULL;
    if (in->token) {
        xa_mig_stream_forget(in->token); /* unused if the source never came */
    }
    static atomic_int commit_faults;
    if (in->token && xa_mig_fault_count("commit", &commit_faults)) {
        err = xa_error_internal("commit of %s refused (fault injection)", vm);
    }
    if (!in->local) {
        /* waits for the stream's end first (kvm) */
        char *uuid = uuid_of(vm);
        if (!err) {
            err = xa_hv_unpause("VM.pool_migrate", uuid);
        }
        if (err) {
            xa_error_free(xa_hv_destroy("VM.pool_migrate", uuid));
        }
        free(uuid);
    }
    if (!err) {
        err = xa_vm_migrate_arrived(vm, in->domid);
    }
    incoming_free(in);
    return err;
}

static struct xa_error *
in_abort(const char *vm)
{
    struct incoming *in = incoming_take(vm);
    if (!in) {
        return NULL; /* nothing was built */
    }
    if (in->token) {
        xa_mig_stream_forget(in->token);
    }
    if (!in->local) {
        /* a localhost migration's domain is the running VM itself */
        char *uuid = uuid_of(vm);
        xa_error_free(xa_hv_destroy("VM.pool_migrate", uuid));
        free(uuid);
    }
    incoming_free(in);
    xa_vm_refresh_host_memory();
    return NULL;
}

struct xa_error *
xa_impl_host_migrate_in(struct xa_call *call, const char *host, const char *vm,
                        const char *phase, struct xa_value **ret)
{
    if (!call->is_pool_session) {
        return xa_error_new("RBAC_PERMISSION_DENIED", 2, "host.migrate_in",
                            "Only pool members may call this");
    }
    if (strcmp(host, xa_self_host()) != 0) {
        return xa_error_new("VM_NOT_RESIDENT_HERE", 2, vm, host);
    }
    char *url = NULL;
    struct xa_error *err = NULL;
    if (strcmp(phase, "prepare") == 0) {
        err = in_prepare(vm, false, &url);
    } else if (strcmp(phase, "commit") == 0) {
        err = in_commit(vm);
    } else if (strcmp(phase, "abort") == 0) {
        err = in_abort(vm);
    } else {
        err = xa_error_new("INVALID_VALUE", 2, "phase", phase);
    }
    if (!err) {
        *ret = xa_string(url ? url : "");
    }
    free(url);
    return err;
}

/* --- the source ---------------------------------------------------------- */

/* One phase on the destination: a direct call when it is this host. */
static struct xa_error *
dest_phase(const char *host, const char *vm, const char *phase, char **url)
{
    if (strcmp(host, xa_self_host()) == 0) {
        if (strcmp(phase, "prepare") == 0) {
            return in_prepare(vm, true, url);
        }
        return strcmp(phase, "commit") == 0 ? in_commit(vm) : in_abort(vm);
    }
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(host));
    xa_array_append(p, xa_string(vm));
    xa_array_append(p, xa_string(phase));
    struct xa_value *r = NULL;
    struct xa_error *err =
        xa_pool_call_host(host, "migrate", "host.migrate_in", p, &r);
    if (!err && url) {
        *url = xa_strdup(r && xa_value_str(r) ? xa_value_str(r) : "");
    }
    xa_value_unref(r);
    return err;
}

static void
progress(struct xa_call *call, double p)
{
    if (call && call->task_ref) {
        xa_task_set_progress(call, p);
    }
}

/* 'switch_ms': from the driver's end of the send to the destination
 * running the guest (commit), which the driver's downtime leaves out. */
static struct xa_error *
record_stats(struct xa_txn *t, const char *vm,
             const struct xa_hv_migration_stats *st, int64_t switch_ms)
{
    const char *keys[] = {"last_migration_downtime_ms",
                          "last_migration_total_ms", "last_migration_bytes",
                          "last_migration_rounds", "last_migration_switch_ms"};
    int64_t vals[] = {st->downtime_ms, st->total_ms, st->transferred,
                      st->rounds, switch_ms};
    struct xa_error *err = NULL;
    for (size_t i = 0; i < XA_ARRAY_SIZE(keys) && !err; i++) {
        char *v = xa_api_i64(vals[i]);
        err = xa_api_map_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "other_config"),
                             keys[i], xa_string(v));
        free(v);
    }
    return err;
}

/* A tuning figure of the stream: VM.pool_migrate's option 'key', else
 * pool.other_config's "migration_<key>", else 0 (the driver's default). */
static int64_t
tuning(const struct xa_value *options, const char *key)
{
    const char *v = options ? xa_struct_get_str(options, key) : NULL;
    if (v) {
        return atoll(v);
    }
    char *pk = xa_asprintf("migration_%s", key);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *pools = xa_db_get_all(t, &xa_cls_pool);
    int64_t r = 0;
    if (pools && pools->u.arr.n > 0) {
        const struct xa_value *oc =
            xa_db_peek_field(t, &xa_cls_pool, pools->u.arr.items[0]->u.str.s,
                             XA_F(xa_cls_pool, "other_config"));
        const char *pv = oc ? xa_struct_get_str(oc, pk) : NULL;
        r = pv ? atoll(pv) : 0;
    }
    xa_value_unref(pools);
    xa_db_end(t);
    free(pk);
    return r;
}

/* The driver's send through a stream to 'host' (mig_stream.c): dials the
 * destination with the token of 'url' and has the driver write into a
 * socketpair the relay forwards. */
static struct xa_error *
send_streamed(const char *uuid, const char *host, const char *url, bool live,
              const struct xa_value *options)
{
    struct xa_txn *t = xa_db_begin_read();
    char *addr = xa_strdup(
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "address")));
    xa_db_end(t);
    struct xa_mig_out *o = NULL;
    int fd = -1;
    struct xa_error *err =
        xa_mig_stream_dial(addr, url + strlen(STREAM_URL), &o, &fd);
    if (!err) {
        char *uri = xa_asprintf(
            "xapid-fd:%d?downtime_ms=%" PRId64 "&bandwidth=%" PRId64 "&hold=1",
            fd, tuning(options, "downtime_ms"), tuning(options, "bandwidth"));
        err = xa_hv_migrate_send("VM.pool_migrate", uuid, uri, live);
        free(uri);
    }
    int64_t bytes = 0;
    struct xa_error *e = xa_mig_stream_finish(o, err != NULL, &bytes);
    if (e && !err) {
        err = e; /* the driver saw the end, the destination did not */
    } else {
        xa_error_free(e);
    }
    xa_log_debug(LOG, "stream to %s: %" PRId64 " bytes", addr, bytes);
    free(addr);
    return err;
}

/* A failed send: the destination's domain goes, the error becomes
 * VM_MIGRATE_FAILED [vm, source, destination, why]. */
static struct xa_error *
migrate_failed(const char *vm, const char *host, struct xa_error *err)
{
    struct xa_error *e = dest_phase(host, vm, "abort", NULL);
    if (e) {
        xa_log_err(LOG, "abort of %s on %s: %s", vm, host, e->code);
        xa_error_free(e);
    }
    char *msg = xa_asprintf("%s%s%s", err->code, err->n_params ? " " : "",
                            err->n_params ? err->params[0] : "");
    xa_error_free(err);
    err = xa_error_new("VM_MIGRATE_FAILED", 4, vm, xa_self_host(), host, msg);
    free(msg);
    return err;
}

/* After a streamed send the source domain waits, stopped ("hold"): gone
 * once the destination runs the guest, running again here if the
 * destination could not ('commit_err', taken). */
static struct xa_error *
conclude_held(const char *vm, const char *uuid, const char *host,
              struct xa_error *commit_err)
{
    if (!commit_err) {
        struct xa_error *e = xa_hv_destroy("VM.pool_migrate", uuid);
        if (e) {
            xa_log_warn(LOG, "%s: the source domain stays: %s", vm, e->code);
            xa_error_free(e);
        }
        return NULL;
    }
    xa_log_warn(LOG, "%s: %s could not run it (%s): it goes on here", vm, host,
                commit_err->code);
    struct xa_error *e = NULL;
    for (int i = 0; i < 20; i++) { /* QEMU may still be finishing */
        xa_error_free(e);
        e = xa_hv_unpause("VM.pool_migrate", uuid);
        if (!e) {
            break;
        }
        usleep(100 * 1000);
    }
    if (e) {
        xa_log_err(LOG, "%s: cannot restart the source domain: %s", vm,
                   e->code);
        xa_error_free(e);
    }
    return migrate_failed(vm, host, commit_err);
}

/* Migrates 'vm', resident here, to 'host' (this host too: a localhost
 * migration).  'call' may be NULL (evacuation); 'options' too. */
static struct xa_error *
migrate_here(struct xa_call *call, const char *vm, const char *host, bool live,
             const struct xa_value *options)
{
    char *task = NULL;
    struct xa_error *err = xa_vm_op_begin(call, vm, "pool_migrate",
                                          check_in_begin, (void *)host, &task);
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_read();
    bool resident =
        strcmp(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "resident_on")),
               xa_self_host()) == 0;
    xa_db_end(t);
    if (!resident) {
        xa_vm_op_cancel(vm, task);
        free(task);
        return xa_error_new("VM_NOT_RESIDENT_HERE", 2, vm, xa_self_host());
    }
    progress(call, 0.1);
    char *uuid = uuid_of(vm);
    char *url = NULL;
    bool streamed = false;
    double t0 = xa_monotonic();
    err = dest_phase(host, vm, "prepare", &url);
    progress(call, 0.3);
    if (!err) {
        streamed = xa_str_has_prefix(url, STREAM_URL);
        err = streamed ? send_streamed(uuid, host, url, live, options)
                       : xa_hv_migrate_send("VM.pool_migrate", uuid, url, live);
        if (err) {
            /* the source domain is untouched: take the other one down */
            err = migrate_failed(vm, host, err);
        }
    }
    if (err) {
        xa_vm_op_cancel(vm, task);
        free(task);
        free(uuid);
        free(url);
        return err;
    }
    progress(call, 0.8);
    double t_sent = xa_monotonic();
    err = dest_phase(host, vm, "commit", NULL);
    int64_t switch_ms = (int64_t)((xa_monotonic() - t_sent) * 1000.0);
    if (streamed) {
        err = conclude_held(vm, uuid, host, err);
        if (err) {
            xa_vm_op_cancel(vm, task);
            free(task);
            free(uuid);
            free(url);
            return err;
        }
    } else if (err) {
        /* The point of no return: the domain left this host. */
        xa_log_err(LOG, "%s reached %s but was not recorded there: %s", vm,
                   host, err->code);
    }
    struct xa_hv_migration_stats st;
    if (!xa_hv_last_migration(uuid, &st)) {
        st.total_ms = (int64_t)((xa_monotonic() - t0) * 1000.0);
    }
    t = xa_db_begin_write();
    struct xa_error *e2 = record_stats(t, vm, &st, switch_ms);
    if (!e2) {
        e2 = xa_vm_op_finish(t, vm, task);
    }
    e2 = xa_api_finish(t, e2);
    if (e2) {
        xa_log_err(LOG, "cannot conclude migration of %s: %s", vm, e2->code);
        xa_error_free(e2);
    }
    xa_vm_refresh_host_memory();
    xa_net_vm_sync(vm);
    xa_log_info(LOG,
                "%s migrated to %s: %" PRId64 " ms, downtime %" PRId64
                " ms (+%" PRId64 " ms to run there), %" PRId64
                " bytes in %" PRId64 " rounds",
                vm, host, st.total_ms, st.downtime_ms, switch_ms,
                st.transferred, st.rounds);
    progress(call, 1.0);
    free(task);
    free(uuid);
    free(url);
    return err;
}

struct xa_error *
xa_impl_VM_pool_migrate(struct xa_call *call, const char *vm, const char *host,
                        const struct xa_value *options)
{
    /* Checked here first so that the errors come in xapi's order even
     * when the VM does not run here (forwarding reaches this host only
     * for a VM resident on it). */
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = check_migrate(t, vm, host);
    xa_db_end(t);
    if (err) {
        return err;
    }
    return migrate_here(call, vm, host, opt_bool(options, "live", true),
                        options);
}

struct xa_error *
xa_impl_VM_assert_can_migrate(struct xa_call *call, const char *vm,
                              const struct xa_value *dest, bool live,
                              const struct xa_value *vdi_map,
                              const struct xa_value *vif_map,
                              const struct xa_value *options,
                              const struct xa_value *vgpu_map)
{
    XA_UNUSED(call);
    XA_UNUSED(live);
    XA_UNUSED(vdi_map);
    XA_UNUSED(vif_map);
    XA_UNUSED(options);
    XA_UNUSED(vgpu_map);
    const char *host = dest ? xa_struct_get_str(dest, "host") : NULL;
    struct xa_txn *t = xa_db_begin_read();
    bool in_pool = host && xa_db_exists(t, &xa_cls_host, host);
    struct xa_error *err =
        in_pool ? check_migrate(t, vm, host)
                : xa_error_not_implemented("VM.assert_can_migrate to another "
                                           "pool");
    xa_db_end(t);
    return err;
}

/* --- evacuation ---------------------------------------------------------- */

struct move {
    char *vm, *dest, *source;
    struct xa_error *err;
    char kind[32]; /* "evac<slot>": room for any size_t */
};

struct plan {
    struct move *moves;
    size_t n;
    struct xa_value *refusals; /* VM ref -> [code, params...] */
    struct xa_error *first;    /* the first refusal as an error */
};

static void
plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->moves[i].vm);
        free(p->moves[i].dest);
        free(p->moves[i].source);
        xa_error_free(p->moves[i].err);
    }
    free(p->moves);
    xa_value_unref(p->refusals);
    xa_error_free(p->first);
    memset(p, 0, sizeof *p);
}

static void
refuse(struct plan *p, const char *vm, struct xa_error *err)
{
    struct xa_value *why = xa_array();
    xa_array_append(why, xa_string(err->code));
    for (size_t i = 0; i < err->n_params; i++) {
        xa_array_append(why, xa_string(err->params[i]));
    }
    xa_struct_add(p->refusals, vm, why);
    if (!p->first) {
        p->first = err;
    } else {
        xa_error_free(err);
    }
}

/* Where each VM on 'host' goes: the live host with the most memory left
 * after what the plan already sends there; the VMs no host can take (or
 * that cannot move at all) become refusals. */
static void
plan_evacuation(const char *host, struct plan *p)
{
    memset(p, 0, sizeof *p);
    p->refusals = xa_struct();
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    size_t nh = hosts ? hosts->u.arr.n : 0;
    int64_t *planned = xa_calloc(nh ? nh : 1, sizeof *planned);
    struct xa_value *vms =
        xa_api_refs_where(t, &xa_cls_VM, XA_F(xa_cls_VM, "resident_on"), host);
    for (size_t i = 0; vms && i < vms->u.arr.n; i++) {
        const char *vm = vms->u.arr.items[i]->u.str.s;
        if (xa_api_bool(t, &xa_cls_VM, vm,
                        XA_F(xa_cls_VM, "is_control_domain"))) {
            continue;
        }
        struct xa_error *err = xa_vm_check_op(t, vm, "pool_migrate", false);
        if (err) {
            refuse(p, vm, err);
            continue;
        }
        size_t best = nh;
        int64_t best_free = 0;
        struct xa_error *why = NULL;
        for (size_t h = 0; h < nh; h++) {
            const char *cand = hosts->u.arr.items[h]->u.str.s;
            if (strcmp(cand, host) == 0) {
                continue;
            }
            struct xa_error *e = check_destination(t, vm, cand, planned[h]);
            if (e) {
                if (!why) {
                    why = e;
                } else {
                    xa_error_free(e);
                }
                continue;
            }
            int64_t fr = host_free(t, cand) - planned[h];
            if (best == nh || fr > best_free) {
                best = h;
                best_free = fr;
            }
        }
        if (best == nh) {
            refuse(p, vm, why ? why : xa_error_new("NO_HOSTS_AVAILABLE", 0));
            continue;
        }
        xa_error_free(why);
        planned[best] += vm_memory_need(t, vm);
        p->moves = xa_realloc(p->moves, (p->n + 1) * sizeof *p->moves);
        struct move *m = &p->moves[p->n++];
        memset(m, 0, sizeof *m);
        m->vm = xa_strdup(vm);
        m->dest = xa_strdup(hosts->u.arr.items[best]->u.str.s);
        m->source = xa_strdup(host);
    }
    xa_value_unref(vms);
    xa_value_unref(hosts);
    free(planned);
    xa_db_end(t);
}

/* One VM of an evacuation: here directly, elsewhere through its host. */
static void *
move_run(void *arg)
{
    struct move *m = arg;
    if (strcmp(m->source, xa_self_host()) == 0) {
        m->err = migrate_here(NULL, m->vm, m->dest, true, NULL);
        return NULL;
    }
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(m->vm));
    xa_array_append(p, xa_string(m->dest));
    xa_array_append(p, xa_struct());
    m->err = xa_pool_call_host(m->source, m->kind, "VM.pool_migrate", p, NULL);
    return NULL;
}

struct xa_error *
xa_impl_host_get_vms_which_prevent_evacuation(struct xa_call *call,
                                              const char *self,
                                              struct xa_value **ret)
{
    XA_UNUSED(call);
    struct plan p;
    plan_evacuation(self, &p);
    *ret = xa_value_ref(p.refusals);
    plan_free(&p);
    return NULL;
}

struct xa_error *
xa_impl_host_assert_can_evacuate(struct xa_call *call, const char *host)
{
    XA_UNUSED(call);
    struct plan p;
    plan_evacuation(host, &p);
    struct xa_error *err = p.first;
    p.first = NULL;
    plan_free(&p);
    return err;
}

struct xa_error *
xa_impl_host_evacuate(struct xa_call *call, const char *host,
                      const char *network, int64_t evacuate_batch_size)
{
    XA_UNUSED(network); /* one management network carries migrations */
    struct plan p;
    plan_evacuation(host, &p);
    if (p.first) {
        struct xa_error *err = p.first;
        p.first = NULL;
        plan_free(&p);
        return err;
    }
    size_t batch =
        evacuate_batch_size > 0 ? (size_t)evacuate_batch_size : DEFAULT_BATCH;
    if (batch > MAX_BATCH) {
        batch = MAX_BATCH;
    }
    xa_log_info(LOG, "evacuating %zu VMs off %s, %zu at a time", p.n, host,
                batch);
    struct xa_error *err = NULL;
    pthread_t th[MAX_BATCH];
    for (size_t i = 0; i < p.n; i += batch) {
        size_t n = p.n - i < batch ? p.n - i : batch;
        bool started[MAX_BATCH] = {false};
        for (size_t k = 0; k < n; k++) {
            struct move *m = &p.moves[i + k];
            /* a connection per slot: the batch runs in parallel */
            snprintf(m->kind, sizeof m->kind, "evac%zu", k);
            started[k] = pthread_create(&th[k], NULL, move_run, m) == 0;
            if (!started[k]) {
                move_run(m);
            }
        }
        for (size_t k = 0; k < n; k++) {
            if (started[k]) {
                pthread_join(th[k], NULL);
            }
            struct move *m = &p.moves[i + k];
            if (m->err && !err) {
                err = m->err;
                m->err = NULL;
            }
        }
        progress(call, (double)(i + n) / (double)p.n);
        if (err) {
            break; /* as xapi: stop at the first failed batch */
        }
    }
    plan_free(&p);
    return err;
}
