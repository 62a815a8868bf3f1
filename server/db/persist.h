/* persist.h - the durable layer under the in-memory database.
 *
 * A driver stores rows as (class name, ref, JSON text of the stored
 * fields, created generation, modified generation) plus the generation of
 * the last write.  The database calls open() and load() once at start,
 * then write_batch() from its single persister thread, then close().  A
 * driver never sees two calls at once. */
#ifndef XA_PERSIST_H
#define XA_PERSIST_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* One row to write: an upsert when 'json' is set, a delete when NULL.
 * The strings belong to the caller. */
struct xa_persist_op {
    const char *cls;
    const char *ref;
    const char *json;
    uint64_t created;
    uint64_t modified;
};

/* Receives one stored row at load; the strings are borrowed for the call.
 * Returning an error stops the load and fails it. */
typedef struct xa_error *(*xa_persist_row_fn)(void *ctx, const char *cls,
                                              const char *ref, const char *json,
                                              uint64_t created,
                                              uint64_t modified);

struct xa_persist_driver {
    const char *scheme; /* uri prefix it serves, e.g. "sqlite:" */
    /* Opens (creating if needed) the store named by 'uri' (the whole uri,
     * scheme included); '*state' is the driver's handle. */
    struct xa_error *(*open)(const char *uri, void **state);
    /* Calls 'fn' for every stored row, oldest creation first, and sets
     * '*generation' to the generation of the last batch written (0 for a
     * new store). */
    struct xa_error *(*load)(void *state, uint64_t *generation,
                             xa_persist_row_fn fn, void *ctx);
    /* Applies 'ops' in order, atomically, and records 'generation'; it
     * returns only once the result is durable. */
    struct xa_error *(*write_batch)(void *state,
                                    const struct xa_persist_op *ops, size_t n,
                                    uint64_t generation);
    /* Closes the store and frees 'state'. */
    void (*close)(void *state);
    /* Optional, for stores several servers can reach (NULL otherwise):
     * reads the generation the store records now, over a connection of
     * its own, so it may be called from any thread while write_batch()
     * runs.  A value ahead of what this process loaded or wrote means
     * another server has written (see xa_db_store_ahead()). */
    struct xa_error *(*stored_generation)(void *state, uint64_t *generation);
};

/* The code of a write_batch() error that retrying cannot cure (the store
 * belongs to another server now): the batch is not retried for a while
 * before its committers hear of it. */
#define XA_PERSIST_REFUSED "PERSIST_REFUSED"

/* "sqlite:/path/to/file.db": one SQLite file, WAL, fsync at commit. */
extern const struct xa_persist_driver xa_persist_sqlite;

#endif
