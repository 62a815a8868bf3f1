/* persist-pg.h - the PostgreSQL persistence driver.
 *
 * "postgresql://user@host:port/dbname?opts" (any libpq URI): the pool
 * database on an external server that every host of a pool can reach and
 * that PostgreSQL replicates by its own means.  xapid creates and migrates
 * its tables itself (the xapid_meta row 'schema_version' records the
 * layout); see persist-pg.c for the layout, the batching and the fencing
 * of a second writer. */
#ifndef XA_PERSIST_PG_H
#define XA_PERSIST_PG_H

#include "persist.h"

extern const struct xa_persist_driver xa_persist_pg;

/* The layout version this build creates and expects. */
#define XA_PG_SCHEMA_VERSION 1

#endif
