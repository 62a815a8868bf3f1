/* sessions.c - a session made on the master, presented to a member.
 *
 * Sessions belong to the host that made them (server/session.c), but a
 * client of the pool holds the master's: xapi hands out console URLs on
 * the VM's host, and clients download or upload a member's disks there.
 * A member that does not know a session asks the master, over the pool's
 * pinned link, whether it is valid and may call the message the request
 * stands for (pool.check_session, pool sessions only). */
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "log.h"
#include "pool/pool-internal.h"
#include "rbac.h"
#include "schema.h"
#include "session.h"
#include "value.h"

#define LOG "pool"

struct xa_error *
xa_pool_check_session(const char *ref, const char *message)
{
    if (!xa_pool_is_member()) {
        return xa_error_new("SESSION_INVALID", 1, ref);
    }
    char *master = xa_pool_master_address();
    if (!master || !*master) {
        free(master);
        return xa_error_new("SESSION_INVALID", 1, ref);
    }
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(ref));
    xa_array_append(p, xa_string(message ? message : ""));
    struct xa_error *err = xa_pool_link_call(
        master, "calls", "pool.check_session", p, NULL, true, 10);
    if (err && strcmp(err->code, "SESSION_INVALID") != 0 &&
        strcmp(err->code, "RBAC_PERMISSION_DENIED") != 0) {
        xa_log_warn(LOG, "cannot check a session with the master %s: %s",
                    master, err->code);
        xa_error_free(err);
        err = xa_error_new("SESSION_INVALID", 1, ref);
    }
    free(master);
    return err;
}

struct xa_error *
xa_pool_serve_check_session(const struct xa_call *call, const char *ref,
                            const char *message)
{
    struct xa_call *c = xa_call_new(message, call->remote_addr);
    struct xa_error *err = xa_session_check(ref, c);
    const struct xa_message_desc *m =
        *message ? xa_schema_message(message) : NULL;
    if (!err && m) {
        err = xa_rbac_check(c, m);
    }
    xa_call_free(c);
    return err;
}
