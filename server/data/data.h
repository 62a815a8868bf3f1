/* data.h - what the HTTP data handlers (vdi_io.c: import_raw_vdi and
 * export_raw_vdi; xva.c: export and import) share: xapi's handler
 * conventions for authentication, object selection and tasks. */
#ifndef XA_DATA_H
#define XA_DATA_H

#include <stdbool.h>

#include "call.h"
#include "http/http.h"
#include "schema.h"

/* Checks the caller's session (query session_id, else cookie session_id)
 * and that its roles allow message 'as' (the API message whose rights
 * the handler needs, e.g. "VDI.create").  On failure answers 'r' (401 /
 * 403) and returns false. */
bool xa_data_auth(struct xa_http_request *r, const char *as);

/* The row of 'cls' named by 'key' (a ref or a uuid), or NULL; caller
 * frees. */
char *xa_data_resolve(const struct xa_class_desc *cls, const char *key);

/* The task that reports on the transfer: the caller's (query task_id),
 * else a new one.  Caller frees. */
char *xa_data_task(struct xa_http_request *r, const char *label);
void xa_data_task_progress(const char *task, double progress);
bool xa_data_task_cancelling(const char *task);
/* Records the outcome (takes 'err' and 'result'; result NULL: void). */
void xa_data_task_finish(const char *task, struct xa_error *err,
                         struct xa_value *result);

/* Answers 'r' with the error as text: 500 "CODE p1 p2...". */
void xa_data_fail(struct xa_http_request *r, int status,
                  const struct xa_error *err);

#endif
