/* pool.h - resource pools: membership, the host-to-host link,
 * replication of the database, forwarding and liveness.
 *
 * A host is standalone (a pool of one, its own master), the master of a
 * pool, or a member.  The role lives in <state-dir>/pool.conf ("master"
 * or "slave:<master address>"), as xapi keeps it in
 * /etc/xensource/pool.conf.  The master holds the live database; a member
 * keeps a replica fed by the master's stream of committed rows and sends
 * its own writes to the master (db.h's remote commit), so every write has
 * one order: the master's generations.
 *
 * Host-to-host traffic is XenAPI over HTTPS on the hosts' management
 * addresses and the shared HTTPS port, authenticated by the pool secret
 * (session.slave_login) and pinned by certificate fingerprint: a host
 * talks only to certificates of the pool's hosts (Certificate rows) or
 * the ones it pinned at join. */
#ifndef XA_POOL_H
#define XA_POOL_H

#include <stdbool.h>

#include "call.h"
#include "error.h"

struct xa_pool_config {
    const char *state_dir;
    int https_port; /* every host of the pool listens on it */
    double heartbeat;
    double live_timeout;
    char **argv; /* to restart as a fresh host after an eject */
};

/* Reads pool.conf and the pins; call after xa_db_open(). */
struct xa_error *xa_pool_init(const struct xa_pool_config *cfg) XA_WARN_UNUSED;
bool xa_pool_is_member(void);
struct xa_txn;
/* True when 'host' is this host, or a member heard from within the live
 * timeout whose host_metrics say live. */
bool xa_pool_host_live(struct xa_txn *t, const char *host);
/* The master's address (caller frees), or NULL on a master. */
char *xa_pool_master_address(void);
/* A member, for a session it does not know (a client of the pool holds
 * the master's): asks the master whether 'ref' is valid and may call
 * 'message' ("": any); NULL when so, else SESSION_INVALID or
 * RBAC_PERMISSION_DENIED.  SESSION_INVALID on a master. */
struct xa_error *xa_pool_check_session(const char *ref,
                                       const char *message) XA_WARN_UNUSED;
/* On a member, instead of xa_bootstrap(): this host's ref from the
 * host-uuid file and the replica (caller frees). */
struct xa_error *xa_pool_member_self(char **ret_host_ref) XA_WARN_UNUSED;
/* Starts the pool's thread (after the host ref is known). */
void xa_pool_start(void);
void xa_pool_stop(void);

/* Dispatch, before an implementation runs: a member answers
 * HOST_IS_SLAVE [master] to any call but host-to-host ones, the logins
 * it serves itself, and reads and emergency calls on a local session. */
struct xa_error *xa_pool_check_call(const struct xa_call *call,
                                    const struct xa_message_desc *m);
/* Dispatch, around an implementation run on an HTTP thread: between
 * the two, a master's commits do not wait for the members; then
 * xa_pool_call_end() either returns false (answer now) or takes the
 * answer ('*err', '*ret'), defers the call and answers it once every
 * live member holds its writes.  'call' NULL: the implementation
 * deferred the call itself; waits for the members here. */
void xa_pool_call_begin(void);
bool xa_pool_call_end(struct xa_call *call, struct xa_error **err,
                      struct xa_value **ret);
/* Dispatch, in place of the implementation: on the master, runs a call
 * whose work belongs to another host on that host.  '*handled' says
 * whether it did. */
struct xa_error *xa_pool_forward(struct xa_call *call,
                                 struct xa_value *const *args,
                                 struct xa_value **ret, bool *handled);

#endif
