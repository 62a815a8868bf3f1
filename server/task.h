/* task.h - Async calls as task rows run by a pool of worker threads.
 *
 * Async.<class>.<message> creates a task (status pending) and returns its
 * ref at once; a worker runs the implementation and records the outcome in
 * the row: status success with 'result' holding the XML-RPC fragment of
 * the return value, or failure with 'error_info'.  task.cancel asks a
 * running task to stop; implementations poll xa_task_cancelling() at
 * safe points.  Finished tasks are removed after 65 minutes. */
#ifndef XA_TASK_H
#define XA_TASK_H

#include <stdbool.h>

#include "call.h"

void xa_task_start_workers(unsigned n);
void xa_task_stop_workers(void);

/* Creates the task for an Async call and queues the work.  'args' are
 * borrowed (the task keeps its own references).  '*ret' is the task ref. */
struct xa_error *xa_task_submit(struct xa_call *call,
                                struct xa_value *const *args,
                                struct xa_value **ret) XA_WARN_UNUSED;

/* Creates a pending task row not run by a worker (task.create, and
 * HTTP handlers that report progress).  Caller frees '*ret_ref'. */
struct xa_error *xa_task_create(const char *label, const char *description,
                                char **ret_ref) XA_WARN_UNUSED;
/* Whether task 'ref' is in this host's database (a member's replica
 * holds the master's tasks). */
bool xa_task_exists(const char *ref);
/* Progress in [0,1]; no-op when 'call' runs synchronously. */
void xa_task_set_progress(struct xa_call *call, double progress);
/* True when someone asked the call's task to stop. */
bool xa_task_cancelling(struct xa_call *call);
/* Destroys every task resident on 'host': a master that is gone took
 * their work with it (tasks live in the master's memory, as in xapi). */
void xa_task_forget_host(const char *host);
/* Removes finished tasks older than the retention time. */
void xa_task_gc(void);

#endif
