/* qmp.h - a small synchronous client for QEMU's monitor protocol (QMP).
 *
 * QMP is line-delimited JSON over a unix socket: the server greets with
 * {"QMP": ...}, the client must send qmp_capabilities before anything
 * else, then each {"execute": ...} is answered by exactly one "return" or
 * "error" object, with asynchronous {"event": ...} objects interleaved
 * anywhere.  The kvm backend opens one connection per operation (QEMU's
 * monitor socket serves one client at a time), so this client is
 * deliberately blocking and single-threaded: every call takes a timeout
 * and events seen while waiting are kept for xa_qmp_wait_event(). */
#ifndef XA_QMP_H
#define XA_QMP_H

#include <json-c/json.h>
#include <stdbool.h>

#include "error.h"

struct xa_qmp;

/* Connects to the monitor at 'path', reads the greeting and negotiates
 * capabilities, all within 'timeout' seconds. */
struct xa_error *xa_qmp_open(const char *path, double timeout,
                             struct xa_qmp **ret) XA_WARN_UNUSED;
void xa_qmp_close(struct xa_qmp *q);

/* Runs 'command' with 'args' (taken; may be NULL).  '*ret' (may be NULL
 * when unwanted) receives the "return" value, which the caller puts with
 * json_object_put().  A QMP error becomes INTERNAL_ERROR with QEMU's
 * class and description. */
struct xa_error *xa_qmp_call(struct xa_qmp *q, const char *command,
                             json_object *args, double timeout,
                             json_object **ret) XA_WARN_UNUSED;

/* xa_qmp_call() passing 'fd' (a descriptor of ours, left open) along
 * with the command, for getfd and add-fd; -1 passes none. */
struct xa_error *xa_qmp_call_fd(struct xa_qmp *q, const char *command,
                                json_object *args, int fd, double timeout,
                                json_object **ret) XA_WARN_UNUSED;

/* Waits up to 'timeout' seconds for the event 'name' (one seen earlier on
 * this connection counts); true when it came.  '*data' (may be NULL)
 * receives its "data" member, to put. */
bool xa_qmp_wait_event(struct xa_qmp *q, const char *name, double timeout,
                       json_object **data);

/* Parses one QMP line: exposed for the unit tests.  Returns NULL for
 * something that is not a JSON object. */
json_object *xa_qmp_parse_line(const char *line, size_t len);

#endif
