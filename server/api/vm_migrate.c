/* vm_migrate.c - live migration: VM.pool_migrate, VM.assert_can_migrate,
 * VM.assert_can_migrate_sender, VM.migrate_send (storage motion, inside
 * the pool and across pools), host.migrate_receive, host.evacuate,
 * host.assert_can_evacuate, host.get_vms_which_prevent_evacuation and the
 * hidden host.migrate_in.  See vm_migrate.h for the protocol between
 * source and destination.
 *
 * Storage motion (VM.migrate_send with a vdi_map) adds phases to
 * host.migrate_in: "sxm:VBD=SR,..." prepares as "prepare" does after
 * making the new VDIs (vm_migrate_disks.c) and answers one line per disk
 * after the url; "sxm_halted:..." the same for a halted VM (no domain);
 * "sxm_wait" once the source sent the copies.  Commit keeps the new
 * disks, abort destroys them; after a commit the source destroys the old
 * VDIs.  A halted VM's disks leave from a host that has their SRs.
 *
 * Across pools (dest from another pool's host.migrate_receive) the
 * source calls the destination's master with the session of the dest map
 * (its certificate pinned to the fingerprint the map carries): VM.create,
 * VDI.create in the vdi_map SRs, VBD.create, VIF.create on the vif_map
 * networks, then host.migrate_in with "VBD=" entries (the VDIs exist
 * already), which the destination allows to the sessions its
 * host.migrate_receive handed out (xapi makes a new session there; here
 * it is the caller's own).  Streams dial the destination host with the
 * fingerprint of the map.  On success the VM, its moved VDIs, VBDs and
 * VIFs go from this pool; on failure what was made there goes.
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
#include "client.h"
#include "hmap.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "network/net.h"
#include "pool/pool-internal.h"
#include "schema.h"
#include "self.h"
#include "session.h"
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
check_destination_maps(struct xa_txn *t, const char *vm, const char *host,
                       int64_t planned, const struct xa_value *vdi_map,
                       const struct xa_value *vif_map)
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
            vdi_map && xa_struct_get_str(vdi_map, vdi)
                ? xa_struct_get_str(vdi_map, vdi)
                : xa_api_str(t, &xa_cls_VDI, vdi, XA_F(xa_cls_VDI, "SR"));
        if (!xa_sr_attached_on(t, sr, host)) {
            err = xa_error_new("VM_REQUIRES_SR", 2, vm, sr);
        }
    }
    xa_value_unref(vbds);
    struct xa_value *vifs =
        err ? NULL
            : xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs"));
    for (size_t i = 0; vifs && i < vifs->u.arr.n && !err; i++) {
        const char *vif = vifs->u.arr.items[i]->u.str.s;
        const char *net =
            vif_map && xa_struct_get_str(vif_map, vif)
                ? xa_struct_get_str(vif_map, vif)
                : xa_api_str(t, &xa_cls_VIF, vif, XA_F(xa_cls_VIF, "network"));
        if (xa_db_exists(t, &xa_cls_network, net) &&
            !network_visible(t, net, host)) {
            err = xa_error_new("VM_REQUIRES_NETWORK", 2, vm, net);
        }
    }
    xa_value_unref(vifs);
    if (!err) {
        err = xa_vm_cpu_assert_compatible(t, vm, host);
    }
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

static struct xa_error *
check_destination(struct xa_txn *t, const char *vm, const char *host,
                  int64_t planned)
{
    return check_destination_maps(t, vm, host, planned, NULL, NULL);
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

/* What the operation's own transaction checks again. */
struct begin_ctx {
    const char *host;
    const struct xa_value *vdi_map, *vif_map;
};

static struct xa_error *
check_in_begin(struct xa_txn *t, const char *vm, void *ctx)
{
    const struct begin_ctx *c = ctx;
    return check_destination_maps(t, vm, c->host, 0, c->vdi_map, c->vif_map);
}

/* --- the destination: host.migrate_in ------------------------------------ */

/* Incoming domains between prepare and commit/abort, by VM ref. */
struct incoming {
    int64_t domid;
    bool local;  /* the source is this host: the domain is the old one */
    char *token; /* the stream this domain waits for (mig_stream.c) */
    bool halted; /* storage motion of a halted VM: disks only, no domain */
    struct xa_sxm_in *sxm; /* storage motion: the new disks */
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
    /* kvm: QEMU's stream; xen: libxl's (hypervisor/xen: proven by a
     * localhost migration in nested Xen, as CI has one Xen host) */
    return !local && (strcmp(xa_hv_name(), "kvm") == 0 ||
                      strcmp(xa_hv_name(), "xen") == 0);
}

/* Builds the incoming domain ('spec': storage motion of the disks it
 * names first, see vm_migrate_disks.c; 'halted': of a halted VM, no
 * domain) and answers the url the source sends to. */
static struct xa_error *
in_prepare(const char *vm, bool local, const char *spec, bool halted,
           char **url)
{
    int64_t domid = -1;
    int sv[2] = {-1, -1};
    struct xa_sxm_in *sxm = NULL;
    struct xa_error *err = NULL;
    if (spec) {
        err = xa_sxm_in_prepare(vm, spec, &sxm);
        if (err) {
            return err;
        }
    }
    if (!halted && driver_streams(local) &&
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        xa_error_free(xa_sxm_in_finish(sxm, false));
        return xa_error_internal("socketpair: %s", strerror(errno));
    }
    if (!halted) {
        err = xa_vm_migrate_build(vm, sv[0], &domid);
    }
    if (sv[0] >= 0) {
        close(sv[0]); /* the domain has its own copy */
    }
    struct xa_buf disks = {0};
    char *uuid = uuid_of(vm);
    if (!err && sxm) {
        /* a running kvm guest's disks are mirrored, the rest copied */
        err = xa_sxm_in_serve(sxm, uuid, !halted && driver_streams(local),
                              &disks);
        if (err && !halted) {
            xa_error_free(xa_hv_destroy("VM.migrate_send", uuid));
        }
    }
    free(uuid);
    if (err) {
        if (sv[1] >= 0) {
            close(sv[1]);
        }
        xa_error_free(xa_sxm_in_finish(sxm, false));
        xa_buf_free(&disks);
        return err;
    }
    struct incoming *in = xa_calloc(1, sizeof *in);
    in->domid = domid;
    in->local = local;
    in->halted = halted;
    in->sxm = sxm;
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
    if (stale) {
        xa_error_free(xa_sxm_in_finish(stale->sxm, false));
    }
    incoming_free(stale); /* a stale prepare of the same VM */
    xa_hmap_put(&incoming, vm, in);
    pthread_mutex_unlock(&incoming_lock);
    xa_vm_refresh_host_memory();
    /* "xapid-stream:TOKEN": dial this host and CONNECT /migrate with it;
     * otherwise what a sender would name (the simulator ignores it) */
    char *u = in->token ? xa_asprintf("%s%s", STREAM_URL, in->token)
                        : xa_asprintf("xapid-migrate:%s:%" PRId64,
                                      xa_self_host(), domid);
    *url = xa_asprintf("%s%s", u, disks.data ? disks.data : "");
    free(u);
    xa_buf_free(&disks);
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
    if ((in->token || in->sxm) &&
        xa_mig_fault_count("commit", &commit_faults)) {
        err = xa_error_internal("commit of %s refused (fault injection)", vm);
    }
    if (in->sxm) {
        /* the copies are complete, or the new disks go */
        struct xa_error *e = xa_sxm_in_finish(in->sxm, !err);
        in->sxm = NULL;
        if (!err) {
            err = e;
        } else {
            xa_error_free(e);
        }
    }
    if (in->halted) {
        incoming_free(in);
        return err;
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

/* Storage motion: the copied disks are all in (vm_migrate_disks.c). */
static struct xa_error *
in_sxm_wait(const char *vm)
{
    pthread_mutex_lock(&incoming_lock);
    struct incoming *in = incoming_init ? xa_hmap_get(&incoming, vm) : NULL;
    struct xa_sxm_in *sxm = in ? in->sxm : NULL;
    pthread_mutex_unlock(&incoming_lock);
    /* the source runs one migration of the VM at a time: 'in' stays */
    return sxm ? xa_sxm_in_wait(sxm)
               : xa_error_internal("no storage migration of %s here", vm);
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
    if (!in->local && !in->halted) {
        /* a localhost migration's domain is the running VM itself */
        char *uuid = uuid_of(vm);
        xa_error_free(xa_hv_destroy("VM.pool_migrate", uuid));
        free(uuid);
    }
    /* after the domain: it had the new disks open */
    xa_error_free(xa_sxm_in_finish(in->sxm, false));
    in->sxm = NULL;
    incoming_free(in);
    xa_vm_refresh_host_memory();
    return NULL;
}

/* Gives 'vm' (just made by a cross-pool migration, not yet running) the
 * uuid it has in its source pool, as xapi keeps it; a uuid already used
 * here leaves the new one (logged). */
static struct xa_error *
adopt_uuid(const char *vm, const char *uuid)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    char *taken = xa_db_ref_by_uuid(t, &xa_cls_VM, uuid);
    if (!xa_db_exists(t, &xa_cls_VM, vm)) {
        err = xa_error_handle_invalid("VM", vm);
    } else if (strcmp(xa_api_str(t, &xa_cls_VM, vm,
                                 XA_F(xa_cls_VM, "power_state")),
                      "Halted") != 0) {
        err = xa_error_new("VM_BAD_POWER_STATE", 3, vm, "halted",
                           "running"); /* only a VM not yet moved in */
    } else if (taken) {
        xa_log_warn(LOG, "uuid %s is in use here: %s keeps its own", uuid, vm);
    } else {
        err = xa_api_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid"),
                         xa_string(uuid));
    }
    free(taken);
    return xa_api_finish(t, err);
}

struct xa_error *
xa_impl_host_migrate_in(struct xa_call *call, const char *host, const char *vm,
                        const char *phase, struct xa_value **ret)
{
    bool other_pool =
        !call->is_pool_session && xa_session_may_migrate_in(call->session_ref);
    if (!call->is_pool_session && !other_pool) {
        return xa_error_new("RBAC_PERMISSION_DENIED", 2, "host.migrate_in",
                            "Only pool members may call this");
    }
    if (other_pool && xa_str_has_prefix(phase, "uuid:")) {
        /* the VM made for the migration takes the source's uuid */
        struct xa_error *err = adopt_uuid(vm, phase + 5);
        if (!err) {
            *ret = xa_string("");
        }
        return err;
    }
    if (strcmp(host, xa_self_host()) != 0 && other_pool) {
        /* another pool talks to our master: the host itself does it */
        struct xa_value *p = xa_array();
        xa_array_append(p, xa_string(host));
        xa_array_append(p, xa_string(vm));
        xa_array_append(p, xa_string(phase));
        return xa_pool_call_host(host, "migrate", "host.migrate_in", p, NULL,
                                 ret);
    }
    if (strcmp(host, xa_self_host()) != 0) {
        return xa_error_new("VM_NOT_RESIDENT_HERE", 2, vm, host);
    }
    char *url = NULL;
    struct xa_error *err = NULL;
    if (strcmp(phase, "prepare") == 0) {
        err = in_prepare(vm, false, NULL, false, &url);
    } else if (xa_str_has_prefix(phase, "sxm:")) {
        err = in_prepare(vm, false, phase + 4, false, &url);
    } else if (xa_str_has_prefix(phase, "sxm_halted:")) {
        err = in_prepare(vm, false, phase + 11, true, &url);
    } else if (strcmp(phase, "sxm_wait") == 0) {
        err = in_sxm_wait(vm);
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
            return in_prepare(vm, true, NULL, false, url);
        }
        if (xa_str_has_prefix(phase, "sxm:")) {
            return in_prepare(vm, true, phase + 4, false, url);
        }
        if (xa_str_has_prefix(phase, "sxm_halted:")) {
            return in_prepare(vm, true, phase + 11, true, url);
        }
        if (strcmp(phase, "sxm_wait") == 0) {
            return in_sxm_wait(vm);
        }
        return strcmp(phase, "commit") == 0 ? in_commit(vm) : in_abort(vm);
    }
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(host));
    xa_array_append(p, xa_string(vm));
    xa_array_append(p, xa_string(phase));
    struct xa_value *r = NULL;
    struct xa_error *err =
        xa_pool_call_host(host, "migrate", "host.migrate_in", p, NULL, &r);
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

/* The figures of a migration, in record_stats' order. */
static const char *const stat_keys[] = {
    "migration_downtime_ms", "migration_total_ms", "migration_bytes",
    "migration_rounds", "migration_switch_ms"};

/* 'switch_ms': from the driver's end of the send to the destination
 * running the guest (commit), which the driver's downtime leaves out. */
static struct xa_error *
record_stats(struct xa_txn *t, struct xa_call *call, const char *vm,
             const struct xa_hv_migration_stats *st, int64_t switch_ms)
{
    /* on the VM as last_<key>, on the Async call's task (if any: 'call'
     * is NULL in an evacuation's own moves) as <key> */
    const char *const *keys = stat_keys;
    int64_t vals[] = {st->downtime_ms, st->total_ms, st->transferred,
                      st->rounds, switch_ms};
    struct xa_error *err = NULL;
    for (size_t i = 0; i < XA_ARRAY_SIZE(vals) && !err; i++) {
        char *v = xa_api_i64(vals[i]);
        char *k = xa_asprintf("last_%s", keys[i]);
        err = xa_api_map_set(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "other_config"),
                             k, xa_string(v));
        if (!err && call && call->task_ref) {
            err = xa_api_map_set(t, &xa_cls_task, call->task_ref,
                                 XA_F(xa_cls_task, "other_config"), keys[i],
                                 xa_string(v));
        }
        free(k);
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
    char *pool = xa_api_pool(t);
    const char *pv = xa_api_map_get(t, &xa_cls_pool, pool,
                                    XA_F(xa_cls_pool, "other_config"), pk);
    int64_t r = pv ? atoll(pv) : 0;
    free(pool);
    xa_db_end(t);
    free(pk);
    return r;
}

/* The driver's send through a stream to 'host' (mig_stream.c): dials the
 * destination with the token of 'url' and has the driver write into a
 * socketpair the relay forwards. */
static struct xa_error *
send_to(const char *uuid, const struct xa_mig_dest *dest, const char *url,
        bool live, const struct xa_value *options, const char *mirror)
{
    const char *addr = dest->addr;
    struct xa_mig_out *o = NULL;
    int fd = -1;
    struct xa_error *err =
        xa_mig_stream_dial_to(dest, url + strlen(STREAM_URL), false, &o, &fd);
    if (!err) {
        char *uri = xa_asprintf(
            "xapid-fd:%d?downtime_ms=%" PRId64 "&bandwidth=%" PRId64
            "&hold=1%s%s",
            fd, tuning(options, "downtime_ms"), tuning(options, "bandwidth"),
            mirror && *mirror ? "&mirror=" : "", mirror ? mirror : "");
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
    return err;
}

static struct xa_error *
send_streamed(const char *uuid, const char *host, const char *url, bool live,
              const struct xa_value *options, const char *mirror)
{
    struct xa_txn *t = xa_db_begin_read();
    char *addr = xa_strdup(
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "address")));
    xa_db_end(t);
    struct xa_mig_dest d = {addr, 0, NULL};
    struct xa_error *err = send_to(uuid, &d, url, live, options, mirror);
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

static const char *
host_address(struct xa_txn *t, const char *host)
{
    return xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "address"));
}

/* Storage motion of a halted VM: only the disks move, through the
 * destination's phases as for a running one. */
static struct xa_error *
move_disks_halted(const char *vm, const char *host, struct xa_sxm_out *sxm)
{
    char *phase = xa_asprintf("sxm_halted:%s", sxm->spec);
    char *url = NULL;
    struct xa_error *err = dest_phase(host, vm, phase, &url);
    free(phase);
    if (!err) {
        err = xa_sxm_out_parse(sxm, vm, &url);
    }
    if (!err) {
        struct xa_txn *t = xa_db_begin_read();
        char *addr = xa_strdup(host_address(t, host));
        xa_db_end(t);
        struct xa_mig_dest d = {addr, 0, NULL};
        struct xa_buf unused = {0};
        err = xa_sxm_out_start(sxm, &d, &unused);
        xa_buf_free(&unused);
        free(addr);
        if (!err) {
            err = dest_phase(host, vm, "sxm_wait", NULL);
        }
        if (!err) {
            err = dest_phase(host, vm, "commit", NULL);
        }
        if (err) {
            err = migrate_failed(vm, host, err);
        }
    }
    free(url);
    if (!err) {
        xa_sxm_out_drop_old(sxm);
    }
    return err;
}

/* Ends a failed migration of 'vm' that leaves it on this host: cancels
 * the operation 'task' began, frees what migrate_run holds (any may be
 * NULL) and passes 'err' on. */
static struct xa_error *
run_abandon(const char *vm, char *task, char *uuid, char *url, char *addr,
            struct xa_error *err)
{
    xa_vm_op_cancel(vm, task);
    free(task);
    free(uuid);
    free(url);
    free(addr);
    return err;
}

/* Migrates 'vm', resident here, to 'host' (this host too: a localhost
 * migration).  'call' may be NULL (evacuation); 'options' too.  With
 * 'sxm' (VM.migrate_send) the disks it names move too: the destination
 * makes new VDIs, their content comes before (copies) or along with
 * (mirrors) the memory, and the old VDIs go after the commit. */
static struct xa_error *
migrate_run(struct xa_call *call, const char *vm, const char *host, bool live,
            const struct xa_value *options, const char *op,
            const struct begin_ctx *checks, struct xa_sxm_out *sxm)
{
    char *task = NULL;
    struct xa_error *err =
        xa_vm_op_begin(call, vm, op, check_in_begin, (void *)checks, &task);
    if (err) {
        return err;
    }
    struct xa_txn *t = xa_db_begin_read();
    const char *power =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool halted =
        sxm && strcmp(power, "Running") != 0 && strcmp(power, "Paused") != 0;
    bool resident = halted || strcmp(xa_api_str(t, &xa_cls_VM, vm,
                                                XA_F(xa_cls_VM, "resident_on")),
                                     xa_self_host()) == 0;
    char *addr = xa_strdup(host_address(t, host));
    xa_db_end(t);
    if (!resident) {
        return run_abandon(
            vm, task, NULL, NULL, addr,
            xa_error_new("VM_NOT_RESIDENT_HERE", 2, vm, xa_self_host()));
    }
    progress(call, 0.1);
    if (halted) {
        double t0 = xa_monotonic();
        err = move_disks_halted(vm, host, sxm);
        if (err) {
            xa_vm_op_cancel(vm, task);
        } else {
            t = xa_db_begin_write();
            err = xa_api_finish(t, xa_vm_op_finish(t, vm, task));
            xa_log_info(LOG, "%s: %zu disk(s) moved in %.0f ms", vm, sxm->n,
                        (xa_monotonic() - t0) * 1000.0);
        }
        free(task);
        free(addr);
        progress(call, 1.0);
        return err;
    }
    char *uuid = uuid_of(vm);
    char *url = NULL;
    bool streamed = false;
    double t0 = xa_monotonic();
    if (sxm) {
        char *phase = xa_asprintf("sxm:%s", sxm->spec);
        err = dest_phase(host, vm, phase, &url);
        free(phase);
        if (!err) {
            err = xa_sxm_out_parse(sxm, vm, &url);
            if (err) {
                err = migrate_failed(vm, host, err);
            }
        }
    } else {
        err = dest_phase(host, vm, "prepare", &url);
    }
    progress(call, 0.3);
    struct xa_buf mirror = {0};
    if (!err && sxm) {
        struct xa_mig_dest d = {addr, 0, NULL};
        err = xa_sxm_out_start(sxm, &d, &mirror);
        if (!err) {
            /* the copies (not the mirrors) are complete there */
            err = dest_phase(host, vm, "sxm_wait", NULL);
        }
        if (err) {
            xa_sxm_out_end_streams(sxm);
            err = migrate_failed(vm, host, err);
        }
    }
    if (!err) {
        streamed = xa_str_has_prefix(url, STREAM_URL);
        err = streamed
                  ? send_streamed(uuid, host, url, live, options, mirror.data)
                  : xa_hv_migrate_send("VM.pool_migrate", uuid, url, live);
        if (sxm) {
            xa_sxm_out_end_streams(sxm);
        }
        if (err) {
            /* the source domain is untouched: take the other one down */
            err = migrate_failed(vm, host, err);
        }
    }
    xa_buf_free(&mirror);
    if (err) {
        return run_abandon(vm, task, uuid, url, addr, err);
    }
    progress(call, 0.8);
    double t_sent = xa_monotonic();
    err = dest_phase(host, vm, "commit", NULL);
    int64_t switch_ms = (int64_t)((xa_monotonic() - t_sent) * 1000.0);
    if (streamed) {
        err = conclude_held(vm, uuid, host, err);
        if (err) {
            return run_abandon(vm, task, uuid, url, addr, err);
        }
    } else if (err && sxm) {
        /* the destination put the disks back and destroyed its domain;
         * the simulator's source domain was never touched */
        return run_abandon(vm, task, uuid, url, addr,
                           migrate_failed(vm, host, err));
    } else if (err) {
        /* The point of no return: the domain left this host. */
        xa_log_err(LOG, "%s reached %s but was not recorded there: %s", vm,
                   host, err->code);
    }
    if (sxm) {
        xa_sxm_out_drop_old(sxm);
    }
    struct xa_hv_migration_stats st;
    if (!xa_hv_last_migration(uuid, &st)) {
        st.total_ms = (int64_t)((xa_monotonic() - t0) * 1000.0);
    }
    t = xa_db_begin_write();
    struct xa_error *e2 = record_stats(t, call, vm, &st, switch_ms);
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
                " bytes in %" PRId64 " rounds; %zu disk(s), %.0f ms in all",
                vm, host, st.total_ms, st.downtime_ms, switch_ms,
                st.transferred, st.rounds, sxm ? sxm->n : 0,
                (xa_monotonic() - t0) * 1000.0);
    progress(call, 1.0);
    free(task);
    free(uuid);
    free(url);
    free(addr);
    return err;
}

static struct xa_error *
migrate_here(struct xa_call *call, const char *vm, const char *host, bool live,
             const struct xa_value *options)
{
    struct begin_ctx c = {host, NULL, NULL};
    return migrate_run(call, vm, host, live, options, "pool_migrate", &c, NULL);
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

/* --- storage motion: VM.migrate_send and its checks --------------------- */

/* across pools: below */
static struct xa_error *check_cross(struct xa_txn *t, const char *vm,
                                    const struct xa_value *vdi_map,
                                    const struct xa_value *vif_map);
static struct xa_error *check_cross_cpu(const char *vm,
                                        const struct xa_value *dest);
static struct xa_error *migrate_cross(struct xa_call *call, const char *vm,
                                      const struct xa_value *dest, bool live,
                                      const struct xa_value *vdi_map,
                                      const struct xa_value *vif_map,
                                      const struct xa_value *options,
                                      char **ret_vm);

/* The maps' keys and values name rows of these classes. */
static struct xa_error *
check_map(struct xa_txn *t, const struct xa_value *map,
          const struct xa_class_desc *kc, const char *kname,
          const struct xa_class_desc *vc, const char *vname)
{
    for (size_t i = 0; map && map->kind == XA_STRUCT && i < map->u.st.n; i++) {
        const struct xa_member *m = &map->u.st.m[i];
        if (!xa_db_exists(t, kc, m->key)) {
            return xa_error_handle_invalid(kname, m->key);
        }
        const char *v = xa_value_str(m->val);
        if (!v || (vc && !xa_db_exists(t, vc, v))) {
            return xa_error_handle_invalid(vname, v ? v : "");
        }
    }
    return NULL;
}

/* xapi's checks of a migrate_send inside the pool: the VM's state (a
 * halted VM may move its disks; without a vdi_map only a running one may
 * move at all, as pool_migrate), the maps, then the destination with the
 * disks and networks the maps give. */
static struct xa_error *
check_send(struct xa_txn *t, const char *vm, const char *host,
           const struct xa_value *vdi_map, const struct xa_value *vif_map)
{
    bool disks = vdi_map && vdi_map->kind == XA_STRUCT && vdi_map->u.st.n > 0;
    struct xa_error *err =
        xa_vm_check_op(t, vm, disks ? "migrate_send" : "pool_migrate", false);
    if (!err) {
        err = check_map(t, vdi_map, &xa_cls_VDI, "VDI", &xa_cls_SR, "SR");
    }
    if (!err) {
        err = check_map(t, vif_map, &xa_cls_VIF, "VIF", &xa_cls_network,
                        "network");
    }
    for (size_t i = 0; !err && vdi_map && i < vdi_map->u.st.n; i++) {
        const char *vdi = vdi_map->u.st.m[i].key;
        const char *sr = xa_value_str(vdi_map->u.st.m[i].val);
        /* an ISO library's disks do not move; neither into one */
        if (strcmp(
                xa_api_str(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "content_type")),
                "iso") == 0 ||
            strcmp(xa_api_str(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "type")),
                   "iso") == 0) {
            err = xa_error_new("SR_DOES_NOT_SUPPORT_MIGRATION", 1, sr);
        } else if (xa_api_bool(t, &xa_cls_VDI, vdi,
                               XA_F(xa_cls_VDI, "cbt_enabled"))) {
            err = xa_error_new("VDI_CBT_ENABLED", 1, vdi);
        } else if (strcmp(xa_api_str(t, &xa_cls_VDI, vdi,
                                     XA_F(xa_cls_VDI, "on_boot")),
                          "reset") == 0) {
            err =
                xa_error_new("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION", 0);
        }
    }
    if (!err) {
        err = check_destination_maps(t, vm, host, 0, vdi_map, vif_map);
    }
    return err;
}

/* The disks of 'vm' that 'vdi_map' sends to another SR; NULL when none. */
static struct xa_sxm_out *
plan_disks(struct xa_txn *t, const char *vm, const struct xa_value *vdi_map)
{
    struct xa_sxm_out *o = xa_calloc(1, sizeof *o);
    struct xa_buf spec = {0};
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    for (size_t i = 0; vbds && i < vbds->u.arr.n; i++) {
        const char *vbd = vbds->u.arr.items[i]->u.str.s;
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "VDI"));
        const char *to = vdi_map ? xa_struct_get_str(vdi_map, vdi) : NULL;
        if (!to ||
            xa_api_bool(t, &xa_cls_VBD, vbd, XA_F(xa_cls_VBD, "empty")) ||
            !xa_db_exists(t, &xa_cls_VDI, vdi) ||
            strcmp(to, xa_api_str(t, &xa_cls_VDI, vdi,
                                  XA_F(xa_cls_VDI, "SR"))) == 0) {
            continue;
        }
        o->d = xa_realloc(o->d, (o->n + 1) * sizeof *o->d);
        struct xa_sxm_out_disk *d = &o->d[o->n++];
        memset(d, 0, sizeof *d);
        d->vbd = xa_strdup(vbd);
        d->old_vdi = xa_strdup(vdi);
        xa_buf_printf(&spec, "%s%s=%s", spec.len ? "," : "", vbd, to);
    }
    xa_value_unref(vbds);
    if (!o->n) {
        xa_buf_free(&spec);
        xa_sxm_out_free(o);
        return NULL;
    }
    o->spec = xa_buf_steal(&spec);
    return o;
}

/* A host that has every SR of the disks of 'o' plugged, this one first
 * (a halted VM's disks move from there); NULL when none has. */
static char *
disk_host(struct xa_txn *t, const struct xa_sxm_out *o)
{
    struct xa_value *srs = xa_array();
    for (size_t i = 0; i < o->n; i++) {
        xa_array_append(srs,
                        xa_string(xa_api_str(t, &xa_cls_VDI, o->d[i].old_vdi,
                                             XA_F(xa_cls_VDI, "SR"))));
    }
    char *host = xa_sr_host_for(t, srs);
    xa_value_unref(srs);
    return host;
}

static const char *
dest_host(const struct xa_value *dest)
{
    return dest && dest->kind == XA_STRUCT ? xa_struct_get_str(dest, "host")
                                           : NULL;
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
    XA_UNUSED(options);
    XA_UNUSED(vgpu_map);
    const char *host = dest_host(dest);
    struct xa_txn *t = xa_db_begin_read();
    bool in_pool = host && xa_db_exists(t, &xa_cls_host, host);
    struct xa_error *err = in_pool ? check_send(t, vm, host, vdi_map, vif_map)
                                   : check_cross(t, vm, vdi_map, vif_map);
    xa_db_end(t);
    if (!err && !in_pool) {
        err = check_cross_cpu(vm, dest);
    }
    return err;
}

struct xa_error *
xa_impl_VM_assert_can_migrate_sender(struct xa_call *call, const char *vm,
                                     const struct xa_value *dest, bool live,
                                     const struct xa_value *vdi_map,
                                     const struct xa_value *vif_map,
                                     const struct xa_value *vgpu_map,
                                     const struct xa_value *options)
{
    XA_UNUSED(call);
    XA_UNUSED(live);
    XA_UNUSED(vif_map);
    XA_UNUSED(vgpu_map);
    XA_UNUSED(options);
    XA_UNUSED(dest);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_VM, vm)) {
        err = xa_error_handle_invalid("VM", vm);
    }
    const char *power =
        err ? ""
            : xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool running = strcmp(power, "Running") == 0;
    struct xa_sxm_out *o = err ? NULL : plan_disks(t, vm, vdi_map);
    /* this host must be able to read every disk that moves */
    for (size_t i = 0; o && i < o->n && !err; i++) {
        const char *sr =
            xa_api_str(t, &xa_cls_VDI, o->d[i].old_vdi, XA_F(xa_cls_VDI, "SR"));
        if (!xa_sr_attached_on(t, sr, xa_self_host()) && running) {
            err = xa_error_new("VM_REQUIRES_SR", 2, vm, sr);
        }
    }
    xa_db_end(t);
    /* a running guest's disks move only where its hypervisor mirrors */
    if (!err && o && running && strcmp(xa_hv_name(), "sim") != 0 &&
        strcmp(xa_hv_name(), "kvm") != 0) {
        err = xa_error_new("VM_MIGRATE_FAILED", 4, vm, xa_self_host(), "",
                           "this hypervisor cannot move the disks of a "
                           "running VM");
    }
    xa_sxm_out_free(o);
    return err;
}

/* VM.migrate_send run by pool host 'from' instead, for the caller's task
 * (the host moves its progress and current_operations). */
static struct xa_error *
forward_send(struct xa_call *call, const char *from, const char *vm,
             const struct xa_value *dest, bool live,
             const struct xa_value *vdi_map, const struct xa_value *vif_map,
             const struct xa_value *options, struct xa_value **ret)
{
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(vm));
    xa_array_append(p, xa_value_ref((struct xa_value *)dest));
    xa_array_append(p, xa_bool(live));
    xa_array_append(p, xa_value_ref((struct xa_value *)vdi_map));
    xa_array_append(p, xa_value_ref((struct xa_value *)vif_map));
    xa_array_append(p, xa_value_ref((struct xa_value *)options));
    xa_array_append(p, xa_struct());
    struct xa_value *r = NULL;
    struct xa_error *err =
        xa_pool_call_host(from, "migrate", "VM.migrate_send", p,
                          call ? call->task_ref : NULL, &r);
    if (!err) {
        *ret = r ? r : xa_string(vm);
    } else {
        xa_value_unref(r);
    }
    return err;
}

struct xa_error *
xa_impl_VM_migrate_send(struct xa_call *call, const char *vm,
                        const struct xa_value *dest, bool live,
                        const struct xa_value *vdi_map,
                        const struct xa_value *vif_map,
                        const struct xa_value *options,
                        const struct xa_value *vgpu_map, struct xa_value **ret)
{
    XA_UNUSED(vgpu_map);
    const char *host = dest_host(dest);
    if (!host) {
        return xa_error_new("INVALID_VALUE", 2, "dest",
                            "no host (use host.migrate_receive)");
    }
    struct xa_txn *t = xa_db_begin_read();
    bool in_pool = xa_db_exists(t, &xa_cls_host, host);
    struct xa_error *err = in_pool ? check_send(t, vm, host, vdi_map, vif_map)
                                   : check_cross(t, vm, vdi_map, vif_map);
    if (!in_pool) {
        /* a halted VM's disks leave from a host that reads them */
        const char *pw =
            xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
        struct xa_sxm_out *disks =
            !err && strcmp(pw, "Running") != 0 && strcmp(pw, "Paused") != 0
                ? plan_disks(t, vm, vdi_map)
                : NULL;
        char *from = disks ? disk_host(t, disks) : NULL;
        xa_sxm_out_free(disks);
        xa_db_end(t);
        if (from && strcmp(from, xa_self_host()) != 0) {
            err = forward_send(call, from, vm, dest, live, vdi_map, vif_map,
                               options, ret);
            free(from);
            return err;
        }
        free(from);
        char *moved = NULL;
        if (!err) {
            err = migrate_cross(call, vm, dest, live, vdi_map, vif_map, options,
                                &moved);
        }
        if (!err) {
            *ret = xa_string_take(moved);
        }
        return err;
    }
    struct xa_sxm_out *sxm = err ? NULL : plan_disks(t, vm, vdi_map);
    const char *power =
        err ? ""
            : xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool halted = strcmp(power, "Running") != 0 && strcmp(power, "Paused") != 0;
    char *from = halted && sxm ? disk_host(t, sxm) : NULL;
    xa_db_end(t);
    if (err) {
        return err;
    }
    if (halted && !sxm) {
        *ret = xa_string(vm); /* nothing to move */
        return NULL;
    }
    if (halted && !from) {
        xa_sxm_out_free(sxm);
        return xa_error_new("VM_REQUIRES_SR", 2, vm, "");
    }
    if (halted && strcmp(from, xa_self_host()) != 0) {
        xa_sxm_out_free(sxm);
        err = forward_send(call, from, vm, dest, live, vdi_map, vif_map,
                           options, ret);
        free(from);
        return err;
    }
    free(from);
    if (!halted && sxm && strcmp(xa_hv_name(), "sim") != 0 &&
        strcmp(xa_hv_name(), "kvm") != 0) {
        /* a byte copy of a disk in use would not be a copy */
        xa_sxm_out_free(sxm);
        return xa_error_new("VM_MIGRATE_FAILED", 4, vm, xa_self_host(), host,
                            "this hypervisor cannot move the disks of a "
                            "running VM");
    }
    struct begin_ctx c = {host, vdi_map, vif_map};
    err = migrate_run(call, vm, host, live, options, "migrate_send", &c, sxm);
    xa_sxm_out_free(sxm);
    if (!err) {
        *ret = xa_string(vm);
    }
    return err;
}

/* The certificate fingerprint of 'host' (Certificate rows), or NULL. */
static char *
host_fingerprint(struct xa_txn *t, const char *host)
{
    const struct xa_class_desc *C = xa_schema_class("Certificate");
    if (!C) {
        return NULL;
    }
    int fh = xa_schema_field_index(C, "host");
    int ff = xa_schema_field_index(C, "fingerprint");
    struct xa_value *all = xa_db_get_all(t, C);
    char *fp = NULL;
    for (size_t i = 0; all && i < all->u.arr.n && !fp; i++) {
        const char *r = all->u.arr.items[i]->u.str.s;
        const struct xa_value *h = xa_db_peek_field(t, C, r, fh);
        const struct xa_value *f = xa_db_peek_field(t, C, r, ff);
        if (h && f && strcmp(xa_value_str(h), host) == 0 && *xa_value_str(f)) {
            fp = xa_strdup(xa_value_str(f));
        }
    }
    xa_value_unref(all);
    if (!fp && strcmp(host, xa_self_host()) == 0) {
        fp = xa_pool_own_fingerprint(); /* a host alone has no row */
    }
    return fp;
}

struct xa_error *
xa_impl_host_migrate_receive(struct xa_call *call, const char *host,
                             const char *network,
                             const struct xa_value *options,
                             struct xa_value **ret)
{
    XA_UNUSED(options);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_host, host)) {
        err = xa_error_handle_invalid("host", host);
    } else if (!xa_db_exists(t, &xa_cls_network, network)) {
        err = xa_error_handle_invalid("network", network);
    }
    if (err) {
        xa_db_end(t);
        return err;
    }
    char *addr = xa_strdup(host_address(t, host));
    char *pool = xa_api_pool(t);
    const char *master =
        pool ? xa_api_str(t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "master"))
             : host;
    char *master_addr = xa_strdup(host_address(t, master));
    char *fp = host_fingerprint(t, host);
    char *mfp = host_fingerprint(t, master);
    free(pool);
    xa_db_end(t);
    const char *session = call->session_ref ? call->session_ref : "";
    if (*session) {
        xa_session_allow_migrate_in(session);
    }
    bool v6 = strchr(addr, ':') != NULL;
    const char *lb = v6 ? "[" : "", *rb = v6 ? "]" : "";
    struct xa_value *m = xa_struct();
    xa_struct_set(m, "SM",
                  xa_string_take(xa_asprintf("http://%s%s%s/services/SM?"
                                             "session_id=%s",
                                             lb, addr, rb, session)));
    xa_struct_set(m, "xenops",
                  xa_string_take(xa_asprintf("http://%s%s%s/services/xenops?"
                                             "session_id=%s",
                                             lb, addr, rb, session)));
    xa_struct_set(m, "host", xa_string(host));
    xa_struct_set(m, "session_id", xa_string(session));
    /* the master's API over HTTPS (xapid serves no plain port by
     * default): the port is the pool's */
    char *murl = xa_pool_url(master_addr);
    xa_struct_set(m, "master", xa_string_take(xa_asprintf("%s/", murl)));
    free(murl);
    /* xapid's own: where the streams go and the certificates to pin */
    xa_struct_set(m, "xapid_address", xa_string(addr));
    xa_struct_set(m, "xapid_port",
                  xa_string_take(xa_api_i64(xa_pool_g.cfg.https_port)));
    if (fp) {
        xa_struct_set(m, "xapid_fingerprint", xa_string_take(fp));
    }
    if (mfp) {
        xa_struct_set(m, "xapid_master_fingerprint", xa_string_take(mfp));
    }
    free(addr);
    free(master_addr);
    *ret = m;
    return NULL;
}

/* --- across pools -------------------------------------------------------- */

/* The destination pool as the source sees it: its master's API with
 * the session of the dest map (the master's certificate pinned to the
 * fingerprint the map carries), the host, and where its streams go. */
struct remote {
    struct xa_client *c;
    char *session, *host, *master_fp;
    char *addr, *fp;
    int port;
};

static bool
remote_cert(void *ctx, const char *fp, bool ca_ok)
{
    const struct remote *r = ctx;
    return ca_ok || (r->master_fp && strcasecmp(fp, r->master_fp) == 0);
}

static void
remote_close(struct remote *r)
{
    xa_client_free(r->c);
    free(r->session);
    free(r->host);
    free(r->master_fp);
    free(r->addr);
    free(r->fp);
}

static struct xa_error *
remote_open(const struct xa_value *dest, struct remote *r)
{
    memset(r, 0, sizeof *r);
    const char *master = xa_struct_get_str(dest, "master");
    const char *session = xa_struct_get_str(dest, "session_id");
    const char *host = xa_struct_get_str(dest, "host");
    const char *addr = xa_struct_get_str(dest, "xapid_address");
    if (!master || !session || !host || !addr) {
        return xa_error_new("INVALID_VALUE", 2, "dest",
                            "not from host.migrate_receive");
    }
    r->session = xa_strdup(session);
    r->host = xa_strdup(host);
    r->addr = xa_strdup(addr);
    const char *v = xa_struct_get_str(dest, "xapid_fingerprint");
    r->fp = v ? xa_strdup(v) : NULL;
    v = xa_struct_get_str(dest, "xapid_master_fingerprint");
    r->master_fp = v ? xa_strdup(v) : NULL;
    v = xa_struct_get_str(dest, "xapid_port");
    r->port = v ? atoi(v) : 0;
    struct xa_client_options o = {
        .protocol = XA_CLIENT_JSONRPC,
        .cert_check = remote_cert,
        .cert_ctx = r,
        .timeout_s = 600,
    };
    r->c = xa_client_new(master, &o);
    return NULL;
}

/* 'method' on the destination pool; takes 'params' (after the session). */
static struct xa_error *
rcall(struct remote *r, const char *method, struct xa_value *params,
      struct xa_value **ret)
{
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(r->session));
    for (size_t i = 0; params && i < params->u.arr.n; i++) {
        xa_array_append(p, xa_value_ref(params->u.arr.items[i]));
    }
    xa_value_unref(params);
    struct xa_value *v = NULL;
    struct xa_error *err = xa_client_call(r->c, method, false, p, &v);
    if (err && strncmp(err->code, "CLIENT_", 7) == 0) {
        xa_log_warn(LOG, "%s on the destination pool: %s %s", method, err->code,
                    err->n_params ? err->params[0] : "");
        xa_error_free(err);
        err = xa_error_new("VM_MIGRATE_CONTACT_REMOTE_SERVICE_FAILED", 0);
    }
    if (ret) {
        *ret = v;
    } else {
        xa_value_unref(v);
    }
    return err;
}

static struct xa_value *
args1(const char *a)
{
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(a));
    return p;
}

/* The VM's CPU against the other pool's host, as xapi checks it: that
 * host's cpu_info read with the dest map's session. */
static struct xa_error *
remote_cpu_fits(struct remote *r, const char *vm)
{
    struct xa_value *info = NULL;
    struct xa_error *err = rcall(r, "host.get_cpu_info", args1(r->host), &info);
    if (!err) {
        struct xa_txn *t = xa_db_begin_read();
        err = xa_vm_cpu_assert_fits(t, vm, r->host, info);
        xa_db_end(t);
    }
    xa_value_unref(info);
    return err;
}

static struct xa_error *
check_cross_cpu(const char *vm, const struct xa_value *dest)
{
    struct remote r;
    struct xa_error *err = remote_open(dest, &r);
    if (!err) {
        err = remote_cpu_fits(&r, vm);
        remote_close(&r);
    }
    return err;
}

static struct xa_error *
rphase(struct remote *r, const char *vm, const char *phase, char **url)
{
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(r->host));
    xa_array_append(p, xa_string(vm));
    xa_array_append(p, xa_string(phase));
    struct xa_value *v = NULL;
    struct xa_error *err = rcall(r, "host.migrate_in", p, &v);
    if (!err && url) {
        *url = xa_strdup(v && xa_value_str(v) ? xa_value_str(v) : "");
    }
    xa_value_unref(v);
    return err;
}

/* What the destination pool got for one VM: its VM, the VDIs made for
 * it (to destroy on failure). */
struct made {
    char *vm;
    char **vdis;
    size_t n_vdis;
};

static void
made_undo(struct remote *r, struct made *m)
{
    if (m->vm) {
        xa_error_free(rcall(r, "VM.destroy", args1(m->vm), NULL));
    }
    for (size_t i = 0; i < m->n_vdis; i++) {
        xa_error_free(rcall(r, "VDI.destroy", args1(m->vdis[i]), NULL));
        free(m->vdis[i]);
    }
    free(m->vdis);
    free(m->vm);
    memset(m, 0, sizeof *m);
}

/* Every value that names a row of this pool becomes a null ref. */
static void
strip_refs(struct xa_value *rec)
{
    for (size_t i = 0; rec && i < rec->u.st.n; i++) {
        struct xa_member *f = &rec->u.st.m[i];
        const char *v = xa_value_str(f->val);
        if (v && xa_str_has_prefix(v, "OpaqueRef:")) {
            xa_value_unref(f->val);
            f->val = xa_string(XA_NULL_REF);
        }
    }
}

static struct xa_value *
pick(struct xa_value *rec, const char *const *keep)
{
    struct xa_value *out = xa_struct();
    for (const char *const *k = keep; *k; k++) {
        struct xa_value *v = xa_struct_get(rec, *k);
        if (v) {
            xa_struct_set(out, *k, xa_value_ref(v));
        }
    }
    return out;
}

/* The VM, its disks (new VDIs in the vdi_map SRs, their VBDs) and VIFs
 * (on the vif_map networks) on the destination pool; 'spec' receives
 * the destination's VBD list for host.migrate_in ("VBD=,..."), 'sxm' the
 * disks whose content moves. */
static struct xa_error *
make_remote(struct remote *r, const char *vm, const struct xa_value *vdi_map,
            const struct xa_value *vif_map, struct made *m,
            struct xa_sxm_out *sxm, struct xa_buf *spec)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *rec = xa_db_get_record(t, &xa_cls_VM, vm);
    char *uuid =
        xa_strdup(xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
    struct xa_value *vbds =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    struct xa_value *vifs =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs"));
    size_t nb = vbds ? vbds->u.arr.n : 0, nv = vifs ? vifs->u.arr.n : 0;
    struct xa_value **brec = xa_calloc(nb + 1, sizeof *brec);
    struct xa_value **drec = xa_calloc(nb + 1, sizeof *drec);
    struct xa_value **vrec = xa_calloc(nv + 1, sizeof *vrec);
    for (size_t i = 0; i < nb; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        brec[i] = xa_db_get_record(t, &xa_cls_VBD, b);
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "VDI"));
        if (!xa_api_bool(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "empty")) &&
            xa_db_exists(t, &xa_cls_VDI, vdi)) {
            drec[i] = xa_db_get_record(t, &xa_cls_VDI, vdi);
        }
    }
    for (size_t i = 0; i < nv; i++) {
        vrec[i] =
            xa_db_get_record(t, &xa_cls_VIF, vifs->u.arr.items[i]->u.str.s);
    }
    xa_db_end(t);
    strip_refs(rec);
    xa_struct_set(rec, "is_a_template", xa_bool(false));
    struct xa_value *ret = NULL;
    struct xa_value *p = xa_array();
    xa_array_append(p, rec);
    struct xa_error *err = rcall(r, "VM.create", p, &ret);
    if (!err) {
        m->vm = xa_strdup(xa_value_str(ret));
    }
    xa_value_unref(ret);
    if (!err) {
        /* it keeps its uuid, as xapi's cross-pool migration does */
        char *ph = xa_asprintf("uuid:%s", uuid);
        err = rphase(r, m->vm, ph, NULL);
        free(ph);
    }
    static const char *const vbd_keys[] = {"userdevice",
                                           "bootable",
                                           "mode",
                                           "type",
                                           "unpluggable",
                                           "empty",
                                           "other_config",
                                           "qos_algorithm_type",
                                           "qos_algorithm_params",
                                           NULL};
    static const char *const vdi_keys[] = {
        "name_label", "name_description", "virtual_size", "type",
        "sharable",   "read_only",        "other_config", NULL};
    for (size_t i = 0; i < nb && !err; i++) {
        const char *vdi =
            drec[i] ? xa_value_str(xa_struct_get(brec[i], "VDI")) : NULL;
        const char *sr =
            vdi && vdi_map ? xa_struct_get_str(vdi_map, vdi) : NULL;
        struct xa_value *b = pick(brec[i], vbd_keys);
        xa_struct_set(b, "VM", xa_string(m->vm));
        xa_struct_set(b, "VDI", xa_string(XA_NULL_REF));
        if (vdi && !sr) {
            /* a CD from a library: it stays here, the drive goes empty */
            bool cd = strcmp(xa_struct_get_str(brec[i], "type"), "CD") == 0;
            if (!cd) {
                err = xa_error_new("VDI_NOT_IN_MAP", 1, vdi);
                xa_value_unref(b);
                break;
            }
            xa_struct_set(b, "empty", xa_bool(true));
        }
        char *newvdi = NULL;
        if (vdi && sr) {
            struct xa_value *d = pick(drec[i], vdi_keys);
            xa_struct_set(d, "SR", xa_string(sr));
            struct xa_value *dp = xa_array();
            xa_array_append(dp, d);
            err = rcall(r, "VDI.create", dp, &ret);
            if (!err) {
                newvdi = xa_strdup(xa_value_str(ret));
                m->vdis =
                    xa_realloc(m->vdis, (m->n_vdis + 1) * sizeof *m->vdis);
                m->vdis[m->n_vdis++] = xa_strdup(newvdi);
                xa_struct_set(b, "VDI", xa_string(newvdi));
            }
            xa_value_unref(ret);
        }
        if (err) {
            xa_value_unref(b);
            free(newvdi);
            break;
        }
        struct xa_value *bp = xa_array();
        xa_array_append(bp, b);
        err = rcall(r, "VBD.create", bp, &ret);
        if (!err && newvdi) {
            xa_buf_printf(spec, "%s%s=", spec->len ? "," : "",
                          xa_value_str(ret));
            sxm->d = xa_realloc(sxm->d, (sxm->n + 1) * sizeof *sxm->d);
            struct xa_sxm_out_disk *sd = &sxm->d[sxm->n++];
            memset(sd, 0, sizeof *sd);
            sd->vbd = xa_strdup(vbds->u.arr.items[i]->u.str.s);
            sd->old_vdi = xa_strdup(vdi);
        }
        xa_value_unref(ret);
        free(newvdi);
    }
    static const char *const vif_keys[] = {"device",
                                           "MAC",
                                           "MTU",
                                           "other_config",
                                           "qos_algorithm_type",
                                           "qos_algorithm_params",
                                           NULL};
    for (size_t i = 0; i < nv && !err; i++) {
        const char *vif = vifs->u.arr.items[i]->u.str.s;
        const char *net = vif_map ? xa_struct_get_str(vif_map, vif) : NULL;
        if (!net) {
            err = xa_error_new("VIF_NOT_IN_MAP", 1, vif);
            break;
        }
        struct xa_value *v = pick(vrec[i], vif_keys);
        xa_struct_set(v, "VM", xa_string(m->vm));
        xa_struct_set(v, "network", xa_string(net));
        struct xa_value *vp = xa_array();
        xa_array_append(vp, v);
        err = rcall(r, "VIF.create", vp, NULL);
    }
    for (size_t i = 0; i < nb; i++) {
        xa_value_unref(brec[i]);
        xa_value_unref(drec[i]);
    }
    for (size_t i = 0; i < nv; i++) {
        xa_value_unref(vrec[i]);
    }
    free(brec);
    free(drec);
    free(vrec);
    xa_value_unref(vbds);
    xa_value_unref(vifs);
    free(uuid);
    return err;
}

/* xapi's checks of a cross-pool migrate_send on this side: the VM's
 * state, then every disk and VIF mapped. */
static struct xa_error *
check_cross(struct xa_txn *t, const char *vm, const struct xa_value *vdi_map,
            const struct xa_value *vif_map)
{
    struct xa_error *err = xa_vm_check_op(t, vm, "migrate_send", false);
    if (!err) {
        /* the SRs and networks are the other pool's */
        err = check_map(t, vdi_map, &xa_cls_VDI, "VDI", NULL, "SR");
    }
    if (!err) {
        err = check_map(t, vif_map, &xa_cls_VIF, "VIF", NULL, "network");
    }
    struct xa_value *vbds =
        err ? NULL
            : xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VBDs"));
    for (size_t i = 0; vbds && i < vbds->u.arr.n && !err; i++) {
        const char *b = vbds->u.arr.items[i]->u.str.s;
        const char *vdi =
            xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "VDI"));
        bool cd =
            strcmp(xa_api_str(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "type")),
                   "CD") == 0;
        if (!cd && !xa_api_bool(t, &xa_cls_VBD, b, XA_F(xa_cls_VBD, "empty")) &&
            xa_db_exists(t, &xa_cls_VDI, vdi) &&
            !(vdi_map && xa_struct_get_str(vdi_map, vdi))) {
            err = xa_error_new("VDI_NOT_IN_MAP", 1, vdi);
        }
    }
    xa_value_unref(vbds);
    struct xa_value *vifs =
        err ? NULL
            : xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "VIFs"));
    for (size_t i = 0; vifs && i < vifs->u.arr.n && !err; i++) {
        const char *vif = vifs->u.arr.items[i]->u.str.s;
        if (!(vif_map && xa_struct_get_str(vif_map, vif))) {
            err = xa_error_new("VIF_NOT_IN_MAP", 1, vif);
        }
    }
    xa_value_unref(vifs);
    return err;
}

/* This pool's VM after it moved away: no domain, then gone with the
 * disks that moved (xapi destroys the source VM). */
static void
forget_here(struct xa_call *call, const char *vm, struct xa_sxm_out *sxm)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = xa_api_finish(t, xa_vm_force_state(t, vm, "Halted"));
    if (!err) {
        xa_sxm_out_drop_old(sxm);
        const struct xa_message_desc *d = xa_schema_message("VM.destroy");
        struct xa_value *a[1] = {xa_string(vm)};
        struct xa_value *r = NULL;
        const struct xa_message_desc *saved = call ? call->msg : NULL;
        if (call && d) {
            call->msg = d;
        }
        err = d && call ? d->fn(call, a, &r) : NULL;
        if (call) {
            call->msg = saved;
        }
        xa_value_unref(a[0]);
        xa_value_unref(r);
    }
    if (err) {
        xa_log_err(LOG, "%s left for another pool but stays here: %s", vm,
                   err->code);
        xa_error_free(err);
    }
    xa_vm_refresh_host_memory();
}

static struct xa_error *
no_check(struct xa_txn *t, const char *vm, void *ctx)
{
    XA_UNUSED(t);
    XA_UNUSED(vm);
    XA_UNUSED(ctx);
    return NULL;
}

static struct xa_error *
migrate_cross(struct xa_call *call, const char *vm, const struct xa_value *dest,
              bool live, const struct xa_value *vdi_map,
              const struct xa_value *vif_map, const struct xa_value *options,
              char **ret_vm)
{
    struct remote r;
    struct xa_error *err = remote_open(dest, &r);
    if (!err) {
        err = remote_cpu_fits(&r, vm);
        if (err) {
            remote_close(&r);
        }
    }
    if (err) {
        return err;
    }
    char *task = NULL;
    err = xa_vm_op_begin(call, vm, "migrate_send", no_check, NULL, &task);
    if (err) {
        remote_close(&r);
        return err;
    }
    struct xa_txn *t = xa_db_begin_read();
    const char *power =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool running = strcmp(power, "Running") == 0;
    xa_db_end(t);
    if (running && strcmp(xa_hv_name(), "sim") != 0 &&
        strcmp(xa_hv_name(), "kvm") != 0) {
        xa_vm_op_cancel(vm, task);
        free(task);
        remote_close(&r);
        return xa_error_new("VM_MIGRATE_FAILED", 4, vm, xa_self_host(),
                            xa_struct_get_str(dest, "host"),
                            "this hypervisor cannot move the disks of a "
                            "running VM");
    }
    double t0 = xa_monotonic();
    progress(call, 0.1);
    struct made m = {0};
    struct xa_sxm_out *sxm = xa_calloc(1, sizeof *sxm);
    struct xa_buf spec = {0};
    err = make_remote(&r, vm, vdi_map, vif_map, &m, sxm, &spec);
    sxm->spec = xa_buf_steal(&spec);
    char *url = NULL, *uuid = uuid_of(vm);
    bool prepared = false, streamed = false;
    struct xa_mig_dest d = {r.addr, r.port, r.fp};
    if (!err) {
        char *phase =
            xa_asprintf("%s:%s", running ? "sxm" : "sxm_halted", sxm->spec);
        err = rphase(&r, m.vm, phase, &url);
        free(phase);
        prepared = !err;
    }
    if (!err) {
        err = xa_sxm_out_parse(sxm, vm, &url);
    }
    progress(call, 0.3);
    struct xa_buf mirror = {0};
    if (!err) {
        err = xa_sxm_out_start(sxm, &d, &mirror);
    }
    if (!err) {
        err = rphase(&r, m.vm, "sxm_wait", NULL);
    }
    if (!err && running) {
        streamed = xa_str_has_prefix(url, STREAM_URL);
        err = streamed ? send_to(uuid, &d, url, live, options, mirror.data)
                       : xa_hv_migrate_send("VM.migrate_send", uuid, url, live);
    }
    xa_sxm_out_end_streams(sxm);
    xa_buf_free(&mirror);
    progress(call, 0.8);
    if (!err) {
        err = rphase(&r, m.vm, "commit", NULL);
        if (err && streamed) {
            /* the held source goes on */
            for (int i = 0; i < 20; i++) {
                struct xa_error *e = xa_hv_unpause("VM.migrate_send", uuid);
                if (!e) {
                    break;
                }
                xa_error_free(e);
                usleep(100 * 1000);
            }
        }
    }
    if (err) {
        if (prepared) {
            xa_error_free(rphase(&r, m.vm, "abort", NULL));
        }
        made_undo(&r, &m);
        xa_vm_op_cancel(vm, task);
        char *msg = xa_asprintf("%s%s%s", err->code, err->n_params ? " " : "",
                                err->n_params ? err->params[0] : "");
        bool mine = strcmp(err->code, "VDI_NOT_IN_MAP") == 0 ||
                    strcmp(err->code, "VIF_NOT_IN_MAP") == 0 ||
                    strcmp(err->code, "VM_MIGRATE_CONTACT_REMOTE_SERVICE_"
                                      "FAILED") == 0;
        if (!mine) {
            xa_error_free(err);
            err = xa_error_new("VM_MIGRATE_FAILED", 4, vm, xa_self_host(),
                               r.host, msg);
        }
        free(msg);
    } else {
        if (streamed) {
            xa_error_free(xa_hv_destroy("VM.migrate_send", uuid));
        }
        t = xa_db_begin_write();
        xa_error_free(xa_api_finish(t, xa_vm_op_finish(t, vm, task)));
        forget_here(call, vm, sxm);
        *ret_vm = xa_strdup(m.vm);
        xa_log_info(LOG,
                    "%s moved to another pool as %s: %zu disk(s), "
                    "%.0f ms",
                    vm, m.vm, sxm->n, (xa_monotonic() - t0) * 1000.0);
        for (size_t i = 0; i < m.n_vdis; i++) {
            free(m.vdis[i]);
        }
        free(m.vdis);
        free(m.vm);
    }
    progress(call, 1.0);
    xa_sxm_out_free(sxm);
    free(url);
    free(uuid);
    free(task);
    remote_close(&r);
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
    m->err =
        xa_pool_call_host(m->source, m->kind, "VM.pool_migrate", p, NULL, NULL);
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
