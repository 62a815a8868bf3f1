/* rbac.h - role-based access control: each message names the roles that
 * may call it (schema); a session carries its subject's roles. */
#ifndef XA_RBAC_H
#define XA_RBAC_H

#include "call.h"

/* RBAC_PERMISSION_DENIED [permission, explanation] unless the caller's
 * session has a role the message allows (local superusers pass). */
struct xa_error *xa_rbac_check(const struct xa_call *call,
                               const struct xa_message_desc *m);
/* The permission name of a message: its wire name in lower case. */
char *xa_rbac_permission(const struct xa_message_desc *m);
/* Role mask of a role name ("vm-admin" -> that role only), 0 if unknown. */
unsigned xa_rbac_role_bit(const char *name);

#endif
