/* session.h - sessions: login, validation on every call, logout, idle
 * expiry, a bound per user, and throttling of failed logins per client
 * address.  The live state is an in-memory table consulted on every call;
 * each session also has a row in the database (class session, not
 * persisted) for the API's getters and events. */
#ifndef XA_SESSION_H
#define XA_SESSION_H

#include "call.h"

struct xa_session_config {
    double idle_timeout;     /* seconds; xapi: 24 h */
    unsigned max_per_user;   /* oldest dropped beyond it; xapi: 500 */
    const char *pool_secret; /* for session.slave_login */
};

void xa_session_init(const struct xa_session_config *cfg);
void xa_session_shutdown(void);
/* Validates 'ref' for 'call': fills call->session_ref, roles and flags;
 * SESSION_INVALID [ref] when unknown or expired. */
struct xa_error *xa_session_check(const char *ref, struct xa_call *call);
/* True while 'ref' names a session that has not logged out. */
bool xa_session_alive(const char *ref);
/* Drops sessions idle longer than the timeout. */
void xa_session_expire(void);
/* Replaces the pool secret (a host joining a pool takes the pool's). */
void xa_session_set_pool_secret(const char *secret);
/* True for a session from slave_local_login_with_password: on a pool
 * member it may read the replica and make the emergency calls. */
bool xa_session_is_local(const char *ref);
/* host.migrate_receive hands its caller's session to another pool's
 * host, which may then call host.migrate_in with it; the permission ends
 * with the session. */
void xa_session_allow_migrate_in(const char *ref);
bool xa_session_may_migrate_in(const char *ref);

#endif
