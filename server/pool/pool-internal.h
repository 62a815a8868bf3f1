/* pool-internal.h - shared by the files of server/pool and
 * server/api/pool.c: the pool's state, links and replication. */
#ifndef XA_POOL_INTERNAL_H
#define XA_POOL_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "db/db.h"
#include "pool/pool.h"
#include "value.h"

enum xa_pool_role {
    XA_POOL_MASTER,   /* standalone or master of others */
    XA_POOL_MEMBER,   /* replica; writes go to the master */
    XA_POOL_HANDOVER, /* designate_new_master in progress on the master */
};

struct xa_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* role, replica position or members changed */
    struct xa_pool_config cfg;
    char *state_dir;
    enum xa_pool_role role;
    char *master_addr; /* members: the master's address */
    char *secret;      /* the pool secret */
    char **pins;       /* fingerprints pinned outside the database */
    size_t n_pins;
    /* master: names this run's generation numbering, so a member can
     * tell that its position means nothing here (restart, new master) */
    char epoch[33];
    /* member: the master's epoch and generation the replica reflects */
    char *replica_epoch;
    uint64_t replica_gen;
    bool stop;
    pthread_t thread;
    bool started;
    uint64_t seq; /* member: numbers its writes so none applies twice */
};

extern struct xa_pool xa_pool_g;

/* pool.c */
enum xa_pool_role xa_pool_role(void);
void xa_pool_become_member(const char *master_addr);
void xa_pool_become_master(void);
/* The same in place of a master that is gone (emergency transition, HA
 * takeover): the tasks it was running, which the replica holds, go
 * (a client polling one gets HANDLE_INVALID rather than a task pending
 * for ever).  An orderly hand-over keeps them: the old master finishes
 * them through the new one. */
void xa_pool_take_over(void);
struct xa_error *xa_pool_write_file(const char *name, const char *text);
void xa_pool_add_pin(const char *fp);
char *xa_pool_own_fingerprint(void);
const char *xa_pool_secret(void);
void xa_pool_set_secret(const char *secret);
/* Wipes this host's pool state and restarts it as a fresh standalone
 * host (the end of an eject); runs after a short delay, in the
 * background. */
void xa_pool_restart_fresh(void);
/* The CLOCK_REALTIME instant 'secs' from now, for timed waits. */
void xa_pool_abstime(struct timespec *ts, double secs);

/* link.c: calls to another host over a pinned, kept-alive connection
 * with a pool session.  'kind' keeps separate connections for separate
 * purposes ("calls", "stream").  Takes 'params' (arguments after the
 * session).  An idempotent call is retried when the connection fails. */
struct xa_error *xa_pool_link_call(const char *addr, const char *kind,
                                   const char *method, struct xa_value *params,
                                   struct xa_value **ret, bool idempotent,
                                   long timeout_s);
/* A call the master forwards to the host that owns the work (not
 * retried, no timeout), on behalf of the Async call of 'task' (NULL:
 * none): the peer's implementation updates that task (the master's row,
 * through the peer's replica) as it would its own. */
struct xa_error *xa_pool_link_forward(const char *addr, const char *kind,
                                      const char *method,
                                      struct xa_value *params, const char *task,
                                      struct xa_value **ret);
void xa_pool_links_reset(void);

/* Work run on a peer by the link's own threads, so that an HTTP thread
 * never waits for a peer: the caller defers its call, submits a job and
 * returns; the job answers the call. */
struct xa_pool_job {
    /* on a link thread: the work, over connection 'kind' to 'addr';
     * answers and frees the job */
    void (*run)(struct xa_pool_job *job, const char *addr, const char *kind);
    /* instead of run, when the pool stops first: answers with an error
     * and frees the job */
    void (*cancel)(struct xa_pool_job *job);
    struct xa_pool_job *next; /* the queue's */
};
void xa_pool_link_submit(const char *addr, struct xa_pool_job *job);
/* At shutdown: refuses queued jobs, waits for those running, closes
 * every link. */
void xa_pool_links_stop(void);
bool xa_pool_fingerprint_trusted(const char *fp);
char *xa_pool_url(const char *addr);

/* replica.c */
void xa_pool_replica_init(void);
/* member: one long-poll round; false when it failed */
bool xa_pool_replicate_once(void);
/* master: answers parked replicate calls, and calls waiting for their
 * writes to reach the members, that are ready or due; waits a little
 * first when none is */
void xa_pool_pump(void);
/* the same without waiting (any role) */
void xa_pool_answer_due(void);
void xa_pool_replica_reset(void);
void xa_pool_replica_save(void);
struct xa_error *
xa_pool_remote_commit(void *ctx, const struct xa_db_change *changes, size_t n);
struct xa_error *xa_pool_serve_replicate(struct xa_call *call,
                                         const char *request,
                                         struct xa_value **ret);
struct xa_error *xa_pool_serve_db_write(const char *payload,
                                        struct xa_value **ret);
/* master, pool.check_session: whether 'ref' is a session here that may
 * call 'message' ("": any). */
struct xa_error *xa_pool_serve_check_session(const struct xa_call *call,
                                             const char *ref,
                                             const char *message);
/* master, designate_new_master: from now on a write waits for the
 * outcome of the hand-over and then goes to the new master (or, when
 * unfenced, commits here).  Returns the last generation committed
 * here, which the new master must hold before it takes over. */
uint64_t xa_pool_fence_writes(void);
/* the hand-over failed: this host stays master */
void xa_pool_unfence_writes(void);
/* master: waits until host 'ref' has acknowledged generation 'gen' */
bool xa_pool_wait_member(const char *ref, uint64_t gen, double timeout);
/* master: waits until every member heard within the live timeout holds
 * generation 'gen' (bounded by the live timeout) */
void xa_pool_wait_live_members(uint64_t gen);
/* master, pool lock held: whether every member heard within the live
 * timeout holds generation 'gen' */
bool xa_pool_live_members_hold_locked(uint64_t gen);

/* forward.c: liveness and placement on the master */
void xa_pool_heard_from(const char *host, const char *epoch, uint64_t since);
void xa_pool_liveness_check(void);
void xa_pool_liveness_reset(void);
/* the host that should run 'vm' (caller frees) or an error */
struct xa_error *xa_pool_place(const char *vm, char **ret_host);
struct xa_error *xa_pool_can_boot_here(const char *vm, const char *host);

#endif
