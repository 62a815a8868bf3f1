/* accounts.h - local user accounts: name, role, salted password hash,
 * kept in <state-dir>/accounts (mode 0600) and in memory.  root is the
 * local superuser; other accounts carry one RBAC role. */
#ifndef XA_ACCOUNTS_H
#define XA_ACCOUNTS_H

#include <stdbool.h>

#include "error.h"

/* Loads the accounts file; when it does not exist and 'root_password' is
 * given, creates it with root's account. */
struct xa_error *xa_accounts_load(const char *path,
                                  const char *root_password) XA_WARN_UNUSED;
/* True when the password matches; '*ret_role' (borrowed, may be NULL)
 * names the account's role ("pool-admin" for root). */
bool xa_accounts_verify(const char *user, const char *password,
                        const char **ret_role);
/* Adds or replaces an account and rewrites the file. */
struct xa_error *xa_accounts_set(const char *user, const char *role,
                                 const char *password) XA_WARN_UNUSED;

#endif
