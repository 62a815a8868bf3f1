/* ha.h - high availability: the failover planner, the liveness daemon
 * (UDP heartbeats between hosts and a statefile on a shared SR), fencing
 * and the restart of protected VMs after a host failure.
 *
 * The API side (pool.enable_ha...) lives in server/api/ha.c and writes
 * only the database: every host's daemon follows pool.ha_enabled in its
 * own copy of the database (the master's, or a member's replica) and arms
 * or disarms itself. */
#ifndef XA_HA_H
#define XA_HA_H

#include <stdbool.h>
#include <stdint.h>

#include "call.h"
#include "db/db.h"
#include "error.h"
#include "value.h"

/* xapi's default: configuration:timeout absent. */
#define XA_HA_DEFAULT_TIMEOUT 60.0

/* --- the API side (server/api/ha.c) --------------------------------------*/

/* pool.ha_enabled. */
bool xa_ha_enabled(struct xa_txn *t);

/* --- the planner (plan.c) ------------------------------------------------*/

/* A snapshot of what the planner needs, read in one transaction. */
struct xa_ha_plan_host {
    char *ref;
    int64_t free; /* memory a restarted VM may use */
};
struct xa_ha_plan_vm {
    char *ref;
    int64_t memory;
    int host;     /* index into hosts, -1: not running */
    int priority; /* 0 restart, 1 best-effort, 2 unprotected */
    int64_t order;
};
struct xa_ha_plan {
    struct xa_ha_plan_host *hosts;
    size_t n_hosts;
    struct xa_ha_plan_vm *vms;
    size_t n_vms;
};

/* Reads hosts and non-control-domain VMs; 'priorities' (a VM ref ->
 * priority map, may be NULL) overrides VM.ha_restart_priority for the
 * VMs it names and unprotects all the others (the hypothetical plan). */
void xa_ha_plan_read(struct xa_txn *t, const struct xa_value *priorities,
                     struct xa_ha_plan *p);
void xa_ha_plan_free(struct xa_ha_plan *p);
/* Whether the protected VMs running on the hosts in 'failed' (a bit per
 * host index) fit in the memory of the others. */
bool xa_ha_plan_fits(const struct xa_ha_plan *p, uint64_t failed);
/* Whether a plan exists for every choice of 'n' failed hosts. */
bool xa_ha_plan_exists(const struct xa_ha_plan *p, int64_t n);
/* The largest n for which plans exist (at most hosts - 1). */
int64_t xa_ha_plan_max_failures(const struct xa_ha_plan *p);
/* Index of a host / VM ref in the snapshot, or -1. */
int xa_ha_plan_host_index(const struct xa_ha_plan *p, const char *ref);
int xa_ha_plan_vm_index(const struct xa_ha_plan *p, const char *ref);

/* The restart priority's rank: 0 "restart", 1 "best-effort", 2 other. */
int xa_ha_priority_rank(const char *priority);

/* HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN when HA is enabled, overcommit
 * is not allowed and running 'vm' on 'host' (with priority 'priority',
 * NULL: its own) would leave no plan for ha_host_failures_to_tolerate.
 * 'host' NULL: wherever it runs now (a priority change). */
struct xa_error *xa_ha_check_plan(struct xa_txn *t, const char *vm,
                                  const char *host, const char *priority);
/* The master, before it runs a client's VM.start / start_on / resume_on
 * of 'vm' on 'host': xa_ha_check_plan's answer (HA's own restarts come
 * with a pool session and are not checked). */
struct xa_error *xa_ha_check_start(const struct xa_call *call, const char *vm,
                                   const char *host);
/* Recomputes pool.ha_plan_exists_for and ha_overcommitted (master). */
void xa_ha_update_plan_fields(void);

/* --- the daemon (daemon.c) -----------------------------------------------*/

/* Starts the thread that follows pool.ha_enabled; 'bind' and 'port' are
 * where the UDP heartbeats are received (the HTTPS port number). */
void xa_ha_start(const char *bind, int port);
void xa_ha_stop(void);
/* host.emergency_ha_disable: this host stops heartbeating and will not
 * fence until HA is enabled again. */
void xa_ha_emergency_disable(void);
/* pool.ha_prevent_restarts_for */
void xa_ha_prevent_restarts_for(double seconds);
/* Master: waits until every host has written its statefile slot since
 * HA was enabled; false after 'timeout' seconds. */
bool xa_ha_wait_armed(double timeout);
/* Master, during pool.enable_ha: while held, no host is declared dead
 * (so that one the others cannot hear is not fenced before enable_ha
 * gives up on it). */
void xa_ha_hold_decisions(bool hold);
/* Master, once armed: waits up to 'timeout' seconds until every host has
 * heard every other over the network; NULL then, else
 * HA_HOST_CANNOT_SEE_PEERS(host, all, subset) naming the host that hears
 * the fewest, 'all' and 'subset' (what it hears, itself included) as
 * comma-separated host uuids. */
struct xa_error *xa_ha_wait_peers(double timeout);
/* Waits up to 'timeout' seconds for this host's daemon to disarm (after
 * pool.ha_enabled went false); false when it has not. */
bool xa_ha_wait_disarmed(double timeout);

#endif
