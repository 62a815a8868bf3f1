/* admin.h - one-off administrative jobs xapid runs instead of serving:
 *
 *   xapid --state-dir DIR [--db URI] --check-db
 *       opens the database as a start would (for SQLite, after SQLite's
 *       own integrity check of the file), loads every row and runs
 *       xa_db_check_integrity(); prints "OK" or the problem.
 *   xapid --state-dir DIR --regenerate-cert
 *       replaces DIR/xapi-ssl.pem and DIR/xapi-ssl.key and prints the new
 *       certificate's SHA-256 fingerprint; a running xapid serves the old
 *       pair until it is restarted.
 *
 * Neither starts the HTTP server, the hypervisor driver or bootstrap, so
 * a check reads exactly what the last run left on disk. */
#ifndef XA_ADMIN_H
#define XA_ADMIN_H

#include "config.h"

/* True when 'cfg' asks for a job rather than a server. */
bool xa_admin_wanted(const struct xa_config *cfg);
/* Runs the job(s) 'cfg' asks for; the process's exit status (0: done and
 * everything checked out, 1: a problem, already printed). */
int xa_admin_run(const struct xa_config *cfg);

#endif
