/* ha.c - the HA messages: pool.enable_ha / disable_ha, the planner's
 * questions, the HA settings of the pool and of VMs,
 * SR.assert_can_host_ha_statefile and host.emergency_ha_disable.
 *
 * Enabling writes the database (statefile VDI, pool.ha_* fields); every
 * host's daemon (server/ha/daemon.c) sees pool.ha_enabled in its copy of
 * the database and arms itself; enable_ha returns once all have and all
 * hear each other, or turns HA off again and says which host did not. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/sr_api.h"
#include "api/vm.h"
#include "ha/ha.h"
#include "log.h"
#include "pool/pool.h"
#include "self.h"
#include "util.h"
#include "xa-impl.h"

#define LOG            "ha"
#define STATEFILE_SIZE (4 << 20)

bool
xa_ha_enabled(struct xa_txn *t)
{
    char *p = xa_api_pool(t);
    bool on =
        p && xa_api_bool(t, &xa_cls_pool, p, XA_F(xa_cls_pool, "ha_enabled"));
    free(p);
    return on;
}

/* --- the statefile SR ------------------------------------------------------*/

static struct xa_error *
check_statefile_sr(struct xa_txn *t, const char *sr)
{
    if (!xa_db_exists(t, &xa_cls_SR, sr)) {
        return xa_error_handle_invalid("SR", sr);
    }
    const char *type = xa_api_str(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "type"));
    if (strcmp(type, "file") != 0 && strcmp(type, "nfs") != 0) {
        return xa_error_new("INCOMPATIBLE_STATEFILE_SR", 1, type);
    }
    if (!xa_api_bool(t, &xa_cls_SR, sr, XA_F(xa_cls_SR, "shared"))) {
        return xa_error_new("HA_CONSTRAINT_VIOLATION_SR_NOT_SHARED", 1, sr);
    }
    /* every host must reach it */
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    struct xa_error *err = NULL;
    for (size_t i = 0; hosts && i < hosts->u.arr.n && !err; i++) {
        if (!xa_sr_attached_on(t, sr, hosts->u.arr.items[i]->u.str.s)) {
            err = xa_error_new("HA_HOST_CANNOT_ACCESS_STATEFILE", 0);
        }
    }
    xa_value_unref(hosts);
    return err;
}

struct xa_error *
xa_impl_SR_assert_can_host_ha_statefile(struct xa_call *call, const char *sr)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = check_statefile_sr(t, sr);
    xa_db_end(t);
    return err;
}

/* Rewrites the new VDI's image as a raw file of zeros: the daemons read
 * and write their slots in it directly. */
static struct xa_error *
make_raw(const char *vdi)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_sr_info s;
    char *loc = NULL;
    struct xa_error *err = xa_vdi_locate(t, vdi, &s, &loc);
    xa_db_end(t);
    if (err) {
        return err;
    }
    char *tmp = NULL;
    err = xa_sr_vdi_stage(&s.ctx, loc, &tmp);
    if (!err) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool ok = fd >= 0 && ftruncate(fd, STATEFILE_SIZE) == 0;
        if (fd >= 0) {
            close(fd);
        }
        err = ok ? xa_vdi_publish(vdi, tmp, "raw")
                 : xa_error_internal("cannot write %s", tmp);
    }
    free(tmp);
    free(loc);
    xa_sr_info_free(&s);
    return err;
}

static struct xa_error *
make_statefile(const char *sr, char **ret)
{
    struct xa_value *oc = xa_struct();
    struct xa_error *err =
        xa_vdi_make(sr, "Statefile for HA", "Used for storage heartbeating",
                    STATEFILE_SIZE, "ha_statefile", true, false, oc, ret);
    if (!err) {
        err = make_raw(*ret);
        if (err) {
            xa_error_free(xa_vdi_remove(*ret));
            free(*ret);
            *ret = NULL;
        }
    }
    return err;
}

/* --- enable and disable ----------------------------------------------------*/

static struct xa_error *
check_configuration(const struct xa_value *configuration)
{
    const char *timeout = xa_struct_get_str(configuration, "timeout");
    char *end = NULL;
    if (timeout && (strtod(timeout, &end) <= 0 || *end)) {
        return xa_error_new("INVALID_VALUE", 2, "timeout", timeout);
    }
    return NULL;
}

static struct xa_error *
record_enabled(const char *statefile, const struct xa_value *configuration)
{
    struct xa_txn *t = xa_db_begin_write();
    char *pool = xa_api_pool(t);
    struct xa_value *files = xa_array();
    xa_array_append(files, xa_string(statefile));
    struct xa_error *err = xa_api_set(
        t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "ha_statefiles"), files);
    if (!err) {
        err = xa_api_set(t, &xa_cls_pool, pool,
                         XA_F(xa_cls_pool, "ha_configuration"),
                         xa_value_copy(configuration));
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_pool, pool,
                         XA_F(xa_cls_pool, "ha_cluster_stack"),
                         xa_string("xhad"));
    }
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    for (size_t i = 0; hosts && i < hosts->u.arr.n && !err; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        struct xa_value *sf = xa_array();
        xa_array_append(sf, xa_string(statefile));
        struct xa_value *peers = xa_array();
        for (size_t j = 0; j < hosts->u.arr.n; j++) {
            if (j != i) {
                xa_array_append(
                    peers, xa_string(xa_api_str(t, &xa_cls_host,
                                                hosts->u.arr.items[j]->u.str.s,
                                                XA_F(xa_cls_host, "uuid"))));
            }
        }
        err = xa_api_set(t, &xa_cls_host, h, XA_F(xa_cls_host, "ha_statefiles"),
                         sf);
        if (!err) {
            err = xa_api_set(t, &xa_cls_host, h,
                             XA_F(xa_cls_host, "ha_network_peers"), peers);
        } else {
            xa_value_unref(peers);
        }
    }
    xa_value_unref(hosts);
    if (!err) {
        err = xa_api_set(t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "ha_enabled"),
                         xa_bool(true));
    }
    free(pool);
    return xa_api_finish(t, err);
}

/* xapi refuses to enable HA while a host is down. */
static struct xa_error *
check_hosts_live(struct xa_txn *t)
{
    struct xa_error *err = NULL;
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    for (size_t i = 0; !err && hosts && i < hosts->u.arr.n; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        if (!xa_pool_host_live(t, h)) {
            err = xa_error_new("HOST_OFFLINE", 1, h);
        }
    }
    xa_value_unref(hosts);
    return err;
}

/* Turns HA off in the database; on success '*files' holds the statefiles
 * the pool had (the caller removes them with remove_statefiles). */
static struct xa_error *
record_disabled(struct xa_value **files)
{
    *files = NULL;
    struct xa_txn *t = xa_db_begin_write();
    char *pool = xa_api_pool(t);
    struct xa_error *err = NULL;
    if (!xa_api_bool(t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "ha_enabled"))) {
        err = xa_error_new("HA_NOT_ENABLED", 0);
    } else {
        const struct xa_value *f = xa_db_peek_field(
            t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "ha_statefiles"));
        *files = f ? xa_value_copy(f) : NULL;
        err = xa_api_set(t, &xa_cls_pool, pool, XA_F(xa_cls_pool, "ha_enabled"),
                         xa_bool(false));
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_pool, pool,
                         XA_F(xa_cls_pool, "ha_statefiles"), xa_array());
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_pool, pool,
                         XA_F(xa_cls_pool, "ha_cluster_stack"), xa_string(""));
    }
    struct xa_value *hosts = xa_db_get_all(t, &xa_cls_host);
    for (size_t i = 0; !err && hosts && i < hosts->u.arr.n; i++) {
        const char *h = hosts->u.arr.items[i]->u.str.s;
        err = xa_api_set(t, &xa_cls_host, h, XA_F(xa_cls_host, "ha_statefiles"),
                         xa_array());
        if (!err) {
            err = xa_api_set(t, &xa_cls_host, h,
                             XA_F(xa_cls_host, "ha_network_peers"), xa_array());
        }
    }
    xa_value_unref(hosts);
    free(pool);
    err = xa_api_finish(t, err);
    if (err) {
        xa_value_unref(*files);
        *files = NULL;
    }
    return err;
}

/* Removes the statefile VDIs and frees 'files'. */
static void
remove_statefiles(struct xa_value *files)
{
    for (size_t i = 0; files && i < files->u.arr.n; i++) {
        struct xa_error *e = xa_vdi_remove(files->u.arr.items[i]->u.str.s);
        if (e) {
            xa_log_warn(LOG, "cannot remove the statefile: %s", e->code);
            xa_error_free(e);
        }
    }
    xa_value_unref(files);
}

/* enable_ha failed after the database said HA is on: as xapi does, turn
 * it off again pool-wide.  Decisions stay held until this host's daemon
 * has disarmed, so nobody is fenced for what made enable_ha fail. */
static void
roll_back_enable(void)
{
    struct xa_value *files = NULL;
    struct xa_error *err = record_disabled(&files);
    if (err) {
        xa_log_err(LOG, "cannot turn HA off after a failed enable: %s",
                   err->code);
        xa_error_free(err);
        return;
    }
    if (!xa_ha_wait_disarmed(10)) {
        xa_log_warn(LOG, "the HA daemon is still armed after 10 s");
    }
    remove_statefiles(files);
    xa_log_info(LOG, "HA enable rolled back");
}

/* How long enable_ha lets the hosts hear each other's heartbeats. */
#define PEERS_WAIT 10.0

/* After HA is on in the database: every host arms, and every host hears
 * every other over the network, or HA goes off again. */
static struct xa_error *
check_armed(void)
{
    struct xa_error *err = NULL;
    if (!xa_ha_wait_armed(30)) {
        err = xa_error_new("HA_HEARTBEAT_DAEMON_STARTUP_FAILED", 0);
    } else {
        err = xa_ha_wait_peers(PEERS_WAIT);
    }
    if (err) {
        roll_back_enable();
    }
    return err;
}

struct xa_error *
xa_impl_pool_enable_ha(struct xa_call *call,
                       const struct xa_value *heartbeat_srs,
                       const struct xa_value *configuration)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *err = NULL;
    if (xa_ha_enabled(t)) {
        err = xa_error_new("HA_IS_ENABLED", 0);
    } else if (heartbeat_srs->u.arr.n == 0) {
        err = xa_error_new("HA_HOST_CANNOT_ACCESS_STATEFILE", 0);
    } else {
        err = check_hosts_live(t);
    }
    for (size_t i = 0; !err && i < heartbeat_srs->u.arr.n; i++) {
        err = check_statefile_sr(t, heartbeat_srs->u.arr.items[i]->u.str.s);
    }
    char *sr = err ? NULL : xa_strdup(heartbeat_srs->u.arr.items[0]->u.str.s);
    xa_db_end(t);
    if (!err) {
        err = check_configuration(configuration);
    }
    char *statefile = NULL;
    if (!err) {
        err = make_statefile(sr, &statefile);
    }
    if (!err) {
        xa_ha_hold_decisions(true);
        err = record_enabled(statefile, configuration);
        if (err) {
            xa_error_free(xa_vdi_remove(statefile));
        }
    }
    if (!err) {
        xa_log_info(LOG, "HA enabled, statefile %s", statefile);
        xa_ha_update_plan_fields();
        err = check_armed();
    }
    xa_ha_hold_decisions(false);
    free(statefile);
    free(sr);
    return err;
}

struct xa_error *
xa_impl_pool_disable_ha(struct xa_call *call)
{
    XA_UNUSED(call);
    struct xa_value *files = NULL;
    struct xa_error *err = record_disabled(&files);
    if (!err) {
        remove_statefiles(files);
        xa_log_info(LOG, "HA disabled");
    }
    return err;
}

/* --- the planner's questions -----------------------------------------------*/

struct xa_error *
xa_impl_pool_ha_compute_max_host_failures_to_tolerate(struct xa_call *call,
                                                      struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_ha_plan p;
    struct xa_txn *t = xa_db_begin_read();
    xa_ha_plan_read(t, NULL, &p);
    xa_db_end(t);
    *ret = xa_int(xa_ha_plan_max_failures(&p));
    xa_ha_plan_free(&p);
    return NULL;
}

struct xa_error *
xa_impl_pool_ha_compute_hypothetical_max_host_failures_to_tolerate(
    struct xa_call *call, const struct xa_value *configuration,
    struct xa_value **ret)
{
    XA_UNUSED(call);
    for (size_t i = 0; i < configuration->u.st.n; i++) {
        const char *v = xa_value_str(configuration->u.st.m[i].val);
        if (xa_ha_priority_rank(v) == 2 && *v) {
            return xa_error_new("INVALID_VALUE", 2, "ha_restart_priority", v);
        }
    }
    struct xa_ha_plan p;
    struct xa_txn *t = xa_db_begin_read();
    xa_ha_plan_read(t, configuration, &p);
    xa_db_end(t);
    *ret = xa_int(xa_ha_plan_max_failures(&p));
    xa_ha_plan_free(&p);
    return NULL;
}

struct xa_error *
xa_impl_pool_ha_failover_plan_exists(struct xa_call *call, int64_t n,
                                     struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_ha_plan p;
    struct xa_txn *t = xa_db_begin_read();
    xa_ha_plan_read(t, NULL, &p);
    xa_db_end(t);
    *ret = xa_bool(xa_ha_plan_exists(&p, n));
    xa_ha_plan_free(&p);
    return NULL;
}

/* Places one VM of a failover plan: the live host with the most room. */
static struct xa_value *
place_one(struct xa_ha_plan *p, size_t vm, uint64_t failed)
{
    struct xa_ha_plan_vm *v = &p->vms[vm];
    int best = -1;
    for (size_t h = 0; h < p->n_hosts && h < 64; h++) {
        if (!((failed >> h) & 1) && p->hosts[h].free >= v->memory &&
            (best < 0 || p->hosts[h].free > p->hosts[best].free)) {
            best = (int)h;
        }
    }
    struct xa_value *m = xa_struct();
    if (best < 0) {
        xa_struct_add(m, "error_code",
                      xa_string("HOST_NOT_ENOUGH_FREE_MEMORY"));
    } else {
        p->hosts[best].free -= v->memory;
        xa_struct_add(m, "host", xa_string(p->hosts[best].ref));
    }
    return m;
}

struct xa_error *
xa_impl_pool_ha_compute_vm_failover_plan(struct xa_call *call,
                                         const struct xa_value *failed_hosts,
                                         const struct xa_value *failed_vms,
                                         struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_ha_plan p;
    struct xa_txn *t = xa_db_begin_read();
    xa_ha_plan_read(t, NULL, &p);
    xa_db_end(t);
    uint64_t failed = 0;
    for (size_t i = 0; i < failed_hosts->u.arr.n; i++) {
        int h =
            xa_ha_plan_host_index(&p, failed_hosts->u.arr.items[i]->u.str.s);
        if (h >= 0 && h < 64) {
            failed |= (uint64_t)1 << h;
        }
    }
    struct xa_value *out = xa_struct();
    /* protected ones first, then best-effort, each by order */
    for (int rank = 0; rank < 2; rank++) {
        for (size_t i = 0; i < failed_vms->u.arr.n; i++) {
            int v =
                xa_ha_plan_vm_index(&p, failed_vms->u.arr.items[i]->u.str.s);
            if (v >= 0 && p.vms[v].priority == rank) {
                xa_struct_add(out, p.vms[v].ref,
                              place_one(&p, (size_t)v, failed));
            }
        }
    }
    xa_ha_plan_free(&p);
    *ret = out;
    return NULL;
}

/* --- settings --------------------------------------------------------------*/

struct xa_error *
xa_impl_pool_set_ha_host_failures_to_tolerate(struct xa_call *call,
                                              const char *self, int64_t value)
{
    XA_UNUSED(call);
    if (value < 0) {
        return xa_error_new("INVALID_VALUE", 2, "ha_host_failures_to_tolerate",
                            "negative");
    }
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_pool, self)) {
        err = xa_error_handle_invalid("pool", self);
    } else if (xa_api_bool(t, &xa_cls_pool, self,
                           XA_F(xa_cls_pool, "ha_enabled")) &&
               !xa_api_bool(t, &xa_cls_pool, self,
                            XA_F(xa_cls_pool, "ha_allow_overcommit"))) {
        struct xa_ha_plan p;
        xa_ha_plan_read(t, NULL, &p);
        if (!xa_ha_plan_exists(&p, value)) {
            err = xa_error_new("HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN", 0);
        }
        xa_ha_plan_free(&p);
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_pool, self,
                         XA_F(xa_cls_pool, "ha_host_failures_to_tolerate"),
                         xa_int(value));
    }
    err = xa_api_finish(t, err);
    if (!err) {
        xa_ha_update_plan_fields();
    }
    return err;
}

struct xa_error *
xa_impl_pool_ha_prevent_restarts_for(struct xa_call *call, int64_t seconds)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    bool on = xa_ha_enabled(t);
    xa_db_end(t);
    if (!on) {
        return xa_error_new("HA_NOT_ENABLED", 0);
    }
    xa_ha_prevent_restarts_for((double)seconds);
    return NULL;
}

struct xa_error *
xa_impl_VM_set_ha_restart_priority(struct xa_call *call, const char *self,
                                   const char *value)
{
    XA_UNUSED(call);
    if (*value && xa_ha_priority_rank(value) == 2) {
        return xa_error_new("INVALID_VALUE", 2, "ha_restart_priority", value);
    }
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    if (!xa_db_exists(t, &xa_cls_VM, self)) {
        err = xa_error_handle_invalid("VM", self);
    } else if (xa_api_bool(t, &xa_cls_VM, self,
                           XA_F(xa_cls_VM, "is_control_domain"))) {
        err = xa_error_new("OPERATION_NOT_ALLOWED", 1,
                           "Cannot protect the control domain");
    }
    if (!err) {
        err = xa_ha_check_plan(t, self, NULL, value);
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_VM, self,
                         XA_F(xa_cls_VM, "ha_restart_priority"),
                         xa_string(value));
    }
    if (!err) {
        err = xa_api_set(t, &xa_cls_VM, self, XA_F(xa_cls_VM, "ha_always_run"),
                         xa_bool(xa_ha_priority_rank(value) < 2));
    }
    err = xa_api_finish(t, err);
    if (!err) {
        xa_ha_update_plan_fields();
    }
    return err;
}

struct xa_error *
xa_impl_host_emergency_ha_disable(struct xa_call *call, bool soft)
{
    XA_UNUSED(call);
    XA_UNUSED(soft);
    xa_ha_emergency_disable();
    return NULL;
}
