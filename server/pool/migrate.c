/* migrate.c - the pool link as live migration uses it: a call to a
 * named pool host, whichever role this host has.
 *
 * Migration traffic goes host to host (source to destination, the
 * evacuating host to each source) rather than through the master, so
 * the member that runs a migration reaches its peer directly; each
 * purpose has its own kept-alive connection so that a long migration
 * does not queue the short calls of another. */
#include <stdlib.h>
#include <string.h>

#include "api/vm.h"
#include "api/vm_migrate.h"
#include "log.h"
#include "pool/pool-internal.h"
#include "self.h"

#define LOG "pool"

struct xa_error *
xa_pool_call_host(const char *host, const char *kind, const char *method,
                  struct xa_value *params, const char *task,
                  struct xa_value **ret)
{
    if (ret) {
        *ret = NULL;
    }
    struct xa_txn *t = xa_db_begin_read();
    char *addr = xa_strdup(
        xa_api_str(t, &xa_cls_host, host, XA_F(xa_cls_host, "address")));
    xa_db_end(t);
    if (!*addr || strcmp(host, xa_self_host()) == 0) {
        /* a caller bug: local work never needs the link */
        free(addr);
        xa_value_unref(params);
        return xa_error_internal("no link to host %s", host);
    }
    /* the host updates the task through its replica: it must hold the
     * task's row first (as for any forwarded call) */
    if (task && xa_pool_role() == XA_POOL_MASTER &&
        !xa_pool_wait_member(host, xa_db_generation(), 5)) {
        xa_log_warn(LOG, "%s on %s: its replica lags; task %s may not move",
                    method, addr, task);
    }
    struct xa_value *r = NULL;
    xa_log_debug(LOG, "%s on %s", method, addr);
    struct xa_error *err =
        xa_pool_link_forward(addr, kind, method, params, task, &r);
    free(addr);
    if (err && strncmp(err->code, "CLIENT_", 7) == 0) {
        xa_log_warn(LOG, "%s on %s: %s", method, host, err->code);
        xa_error_free(err);
        err = xa_error_new("CANNOT_CONTACT_HOST", 1, host);
    }
    if (ret && !err) {
        *ret = r;
    } else {
        xa_value_unref(r);
    }
    return err;
}
