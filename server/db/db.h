/* db.h - the datamodel database: authoritative in memory, durable below.
 *
 * One table per schema class (those with in_db), rows keyed by ref
 * ("OpaqueRef:<uuid>"), each row an array of field values in schema order.
 * Reads never touch disk.  Every committed write transaction takes the
 * next generation number; rows remember the generation that created and
 * last modified them, and a deletion log remembers what went, so event.from
 * can ask "what changed since generation G" at a cost that follows the
 * changes, not the table sizes.
 *
 * Relationship sets (VM.VBDs, SR.VDIs, host.resident_VMs, ...) are computed
 * by the database from the ref field they pair with (VBD.VM, VDI.SR,
 * VM.resident_on; the schema's 'computed_from'): they are never stored and
 * cannot be set, and a change on either side bumps both rows' generations.
 * Destroying a row sets the relationship ref fields that pointed at it to
 * OpaqueRef:NULL.
 *
 * Concurrency: one reader-writer lock.  A read transaction shares it; a
 * write transaction holds it exclusively until xa_db_commit() or
 * xa_db_abort().  Never hold a transaction across a driver call or network
 * I/O.  A read transaction begun by the thread that holds the write
 * transaction nests inside it (and sees its changes); a nested write
 * transaction is a fatal programming error.  A commit returns only once the
 * write is durable in the persistence backend (group commit: concurrent
 * committers share one fsync).
 *
 * Values: functions that take a value take over the caller's reference;
 * returned values are new references the caller must unref. */
#ifndef XA_DB_H
#define XA_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "schema.h"
#include "value.h"

struct xa_txn;

/* Opens the database: 'uri' is "sqlite:/path/to/file.db" or ":memory:"
 * (no persistence, for unit tests) or "postgresql://..." (libpq URI).  Loads
 * every stored row into memory.  xa_schema_init() must have run. */
struct xa_error *xa_db_open(const char *uri) XA_WARN_UNUSED;
/* Flushes and closes; the in-memory tables are freed. */
void xa_db_close(void);

struct xa_txn *xa_db_begin_read(void);
struct xa_txn *xa_db_begin_write(void);
/* Ends a read transaction. */
void xa_db_end(struct xa_txn *t);
/* Publishes a write transaction's changes (a new generation, unless it
 * changed nothing), releases the lock, then waits until they are durable.
 * An error means they are not known to be durable; the caller reports it.
 * "database write failed": the store failed for XA_DB_RETRY_WINDOW (db.c)
 * and the in-memory state keeps the changes, which are written once the
 * store is back.  "database unavailable": the store was already down, so
 * the changes were undone before anyone saw them.  Frees 't'. */
struct xa_error *xa_db_commit(struct xa_txn *t) XA_WARN_UNUSED;
/* Publishes like xa_db_commit() but does not wait for durability: for
 * state that a crash may lose because start-up rebuilds it (an
 * operation in progress).  Later commits are persisted after it, so a
 * durable later commit makes this one durable too.  Frees 't'. */
void xa_db_commit_nowait(struct xa_txn *t);
/* Undoes every change of a write transaction and releases it. */
void xa_db_abort(struct xa_txn *t);

bool xa_db_exists(struct xa_txn *t, const struct xa_class_desc *cls,
                  const char *ref);
/* NULL when the row does not exist. */
struct xa_value *xa_db_get_field(struct xa_txn *t,
                                 const struct xa_class_desc *cls,
                                 const char *ref, int field);
/* A struct of every field (computed sets included), or NULL. */
struct xa_value *xa_db_get_record(struct xa_txn *t,
                                  const struct xa_class_desc *cls,
                                  const char *ref);
/* Borrowed view of a stored field, valid until the transaction ends or the
 * field is written: for hot loops that only read.  NULL if no row. */
const struct xa_value *xa_db_peek_field(struct xa_txn *t,
                                        const struct xa_class_desc *cls,
                                        const char *ref, int field);
/* Number of members of the computed set 'field' (VM.VBDs, ...) of a row,
 * without building it: 0 when no row or not a computed set.  (Peek gives
 * NULL for computed sets: they have no stored value.) */
size_t xa_db_count_related(struct xa_txn *t, const struct xa_class_desc *cls,
                           const char *ref, int field);
/* Caller frees; NULL when no row has that uuid. */
char *xa_db_ref_by_uuid(struct xa_txn *t, const struct xa_class_desc *cls,
                        const char *uuid);
/* Array of refs, in creation order. */
struct xa_value *xa_db_get_all(struct xa_txn *t,
                               const struct xa_class_desc *cls);
size_t xa_db_count(struct xa_txn *t, const struct xa_class_desc *cls);
/* Calls 'fn' for each row (creation order) until it returns false.  'fn'
 * must not write to the database. */
void xa_db_foreach(struct xa_txn *t, const struct xa_class_desc *cls,
                   bool (*fn)(const char *ref, void *ctx), void *ctx);

/* Creates a row.  'record' (taken) is a struct of field values; fields it
 * lacks take their schema default (or the empty value of their type);
 * computed sets in it are ignored.  A "uuid" member missing or empty gets a
 * fresh uuid.  Fails with INTERNAL_ERROR when the ref or uuid exists. */
struct xa_error *xa_db_create(struct xa_txn *t, const struct xa_class_desc *cls,
                              const char *ref,
                              struct xa_value *record) XA_WARN_UNUSED;
struct xa_error *xa_db_destroy(struct xa_txn *t,
                               const struct xa_class_desc *cls,
                               const char *ref) XA_WARN_UNUSED;
/* Sets one stored field ('v' taken).  HANDLE_INVALID when no row;
 * INTERNAL_ERROR when the field is a computed set. */
struct xa_error *xa_db_set_field(struct xa_txn *t,
                                 const struct xa_class_desc *cls,
                                 const char *ref, int field,
                                 struct xa_value *v) XA_WARN_UNUSED;

/* The generation of the last committed write transaction. */
uint64_t xa_db_generation(void);

/* For a store several servers share (postgresql): reads the generation it
 * records now into '*stored' and sets '*ahead' when that is beyond this
 * process's in-memory generation, i.e. another server has written and
 * this copy is stale (a new master reloads: xa_db_close(), xa_db_open()).
 * Stores only this process writes report the in-memory generation. */
struct xa_error *xa_db_store_ahead(bool *ahead, uint64_t *stored);
/* False while the store is away and persisting commits are refused with
 * INTERNAL_ERROR ["database unavailable: ..."]. */
bool xa_db_store_available(void);

enum xa_db_op { XA_DB_ADD, XA_DB_MOD, XA_DB_DEL };

/* Reports, once per object, each row of 'cls' (or of every class when
 * NULL) changed after generation 'since': ADD for rows created after it,
 * MOD for older rows modified after it, DEL for rows that existed at
 * 'since' and are gone; rows created and destroyed after 'since' are not
 * reported.  'gen' is the generation of the object's last change.  Cost
 * follows the number of changes since 'since'.  Returns false if 'since'
 * is older than the deletion log reaches (the caller must resync). */
bool xa_db_changes_since(struct xa_txn *t, const struct xa_class_desc *cls,
                         uint64_t since,
                         void (*fn)(const struct xa_class_desc *cls,
                                    const char *ref, enum xa_db_op op,
                                    uint64_t gen, void *ctx),
                         void *ctx);

/* Called after every commit that produced a new generation, outside the
 * lock, from the committing thread (used to wake event.from waiters). */
void xa_db_set_commit_hook(void (*hook)(uint64_t generation, void *ctx),
                           void *ctx);

/* Evaluates get_all_records_where's expression language:
 *   true | false | field "<name>" = "<text>" | field "<name>" <> "<text>"
 *   | <e> and <e> | <e> or <e> | not <e> | ( <e> )
 * Field names may use xapi's database spelling ("name__label").  A field
 * compares by its text form (bools "true"/"false", ints in decimal, refs,
 * enums by value name).  Returns an array of matching refs, or an error
 * (INTERNAL_ERROR / the parse failure) for a malformed expression. */
struct xa_error *xa_db_where(struct xa_txn *t, const struct xa_class_desc *cls,
                             const char *expr,
                             struct xa_value **ret_refs) XA_WARN_UNUSED;

/* Checks every relationship pair and every ref field that names a class
 * with rows: returns NULL when consistent, else an error describing the
 * first problem (for tests and the crash-safety checker). */
struct xa_error *xa_db_check_integrity(void);

/* --- pool replication (server/pool) ---------------------------------------
 *
 * The master streams committed rows to pool members; a member applies
 * them to its replica and sends its own writes to the master instead of
 * committing them.  Rows travel as the JSON text of their stored fields
 * (the persistence format).  Only classes marked 'replicate' are
 * streamed: those that persist, and tasks (the pool's, kept on the master
 * only in memory); sessions are each host's own. */

/* Receives one row: 'json' is NULL for a row that is gone. */
typedef void (*xa_db_export_fn)(void *ctx, const char *cls, const char *ref,
                                const char *json);

/* Every replicated row changed after generation 'since' (deletions of rows
 * that existed at 'since' included), oldest change first, as one
 * consistent snapshot; '*ret_gen' receives the generation it reflects.
 * 'since' 0 exports every row.  False (nothing exported) when 'since'
 * is older than the deletion log reaches or newer than the database. */
bool xa_db_export_since(uint64_t since, xa_db_export_fn fn, void *ctx,
                        uint64_t *ret_gen);

/* Within write transaction 't': makes row 'ref' of class 'cls' hold the
 * stored fields of 'json' (creating it when absent), or destroys it when
 * 'json' is NULL (nothing when already gone).  With 'fields' (n_fields
 * names), only those fields of an existing row are written.  Fields whose
 * value is already equal are left untouched. */
struct xa_error *xa_db_apply_row(struct xa_txn *t, const char *cls,
                                 const char *ref, const char *json,
                                 const char *const *fields,
                                 size_t n_fields) XA_WARN_UNUSED;

/* One row a write transaction changed, for the remote commit. */
struct xa_db_change {
    const char *cls;
    const char *ref;
    const char *json;    /* every stored field; NULL: destroyed */
    bool created;        /* the row is new */
    const char **fields; /* the fields it set (existing rows only) */
    size_t n_fields;
};

/* On a pool member: a write transaction that changes rows of a
 * replicated class is not committed locally; its changes are undone and
 * handed to 'fn' (outside the lock), whose answer becomes the commit's.
 * Transactions touching only rows that are not replicated (sessions)
 * commit locally.  NULL turns it off (master, standalone). */
typedef struct xa_error *(*xa_db_remote_commit_fn)(
    void *ctx, const struct xa_db_change *changes, size_t n);
void xa_db_set_remote_commit(xa_db_remote_commit_fn fn, void *ctx);
/* The calling thread's commits stay local even with a remote commit set
 * (the member's replication applier). */
void xa_db_thread_commits_locally(bool local);

/* A second commit hook, for the replication stream (same contract as
 * xa_db_set_commit_hook). */
void xa_db_set_replication_hook(void (*hook)(uint64_t generation, void *ctx),
                                void *ctx);

#endif
