/* db-internal.h - the in-memory database's data structures, shared by the
 * files of server/db and by nothing else.
 *
 * Tables: one per in_db class, indexed by class index.  A table finds a row
 * by ref and by uuid through hash maps and keeps its rows in creation order
 * on a doubly linked list (get_all, foreach).
 *
 * Relations: a row keeps one link per relation ref field (VBD.VM), threading
 * it onto the set of the row it names.  The sets live on the target table,
 * per inverse-set field, in a map from target ref to set (VM.VBDs of
 * "OpaqueRef:x"), so joining, leaving and rendering are O(1) per member and
 * a set exists even while its target ref does not (a row created later
 * under that ref sees it, as xapi's computed query would).
 *
 * Generations: all rows live on one recency list ordered by the generation
 * that last modified them; a commit moves every touched row to its tail, so
 * "changed since G" walks back from the tail only as far as G.  Destroyed
 * rows leave an entry in a bounded deletion log.
 *
 * Write transactions: every change records an undo entry and marks the
 * rows it touched; commit stamps the touched rows with the new generation,
 * abort replays the undo log backwards.  Because undo runs in exact reverse
 * order, each list is in the state it had just after the change being
 * undone, so re-inserting "after the remembered neighbour" restores the
 * original order exactly (table order and relation set order alike). */
#ifndef XA_DB_INTERNAL_H
#define XA_DB_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "hmap.h"
#include "persist.h"
#include "util.h"

struct xa_db_row;

/* A row's place in one relation set. */
struct xa_db_link {
    struct xa_db_row *prev, *next;
    bool linked; /* false while the ref is NULL or the row is destroyed */
};

/* The members of one computed set (e.g. VM.VBDs of one VM), in order of
 * joining. */
struct xa_db_relset {
    struct xa_db_row *first, *last;
    size_t n;
};

struct xa_db_table;

struct xa_db_row {
    struct xa_db_table *tbl;
    struct xa_value *refv; /* XA_STRING of the ref, shared with readers */
    uint64_t created, modified;
    struct xa_db_row *prev, *next;   /* table, creation order */
    struct xa_db_row *rprev, *rnext; /* global recency list */
    bool dead;    /* destroyed in the open write transaction */
    bool is_new;  /* created in the open write transaction */
    bool touched; /* on the open write transaction's touched list */
    bool in_recency;
    struct xa_db_link *links; /* tbl->n_links entries, inside this block */
    struct xa_value *vals[];  /* one per field; NULL for computed sets */
};

struct xa_db_table {
    const struct xa_class_desc *cls; /* NULL: the class has no rows */
    struct xa_hmap by_ref;           /* ref -> row */
    struct xa_hmap by_uuid;          /* uuid -> row */
    struct xa_hmap field_index;      /* field name -> (void *)(index + 1) */
    struct xa_db_row *first, *last;
    size_t n;
    int n_links;
    int *link_of;    /* per field: its link slot, or -1 if not a relation */
    int *link_field; /* per link slot: the field */
    /* Per field; used for computed inverse sets: target ref -> relset. */
    struct xa_hmap *sets;
};

struct xa_db_undo {
    enum { XA_UNDO_SET, XA_UNDO_CREATE, XA_UNDO_DESTROY } op;
    int field;
    struct xa_db_row *row;
    struct xa_value *old;         /* SET: the value replaced (owned) */
    struct xa_db_row *prev;       /* SET: neighbour in the old relation set;
                                   * DESTROY: neighbour in the table */
    struct xa_db_link *old_links; /* DESTROY: the row's links (owned) */
};

struct xa_txn {
    bool write;
    struct xa_db_undo *undo;
    size_t n_undo, cap_undo;
    struct xa_db_row **touched;
    size_t n_touched, cap_touched;
};

/* One deletion: enough to answer changes_since. */
struct xa_db_deletion {
    uint64_t gen;
    uint64_t created;
    const struct xa_class_desc *cls;
    char *ref;
};

/* A commit's writes on their way to the persistence driver; owned by the
 * committer, which waits for 'done'. */
struct xa_db_batch {
    struct xa_persist_op *ops; /* strings owned ('cls' is static) */
    size_t n, cap;
    uint64_t gen;
    bool done;
    bool detached; /* nobody waits: the persister frees it */
    struct xa_error *err;
    struct xa_db_batch *next;
};

struct xa_db {
    bool open;
    pthread_rwlock_t lock;
    struct xa_db_table *tables;       /* xa_schema_n_classes entries */
    uint64_t generation;              /* __atomic: read without the lock */
    struct xa_db_row *rfirst, *rlast; /* recency list */
    struct xa_txn wtxn;               /* the one write transaction */
    bool quiet; /* abort or load in progress: changes touch nothing */

    /* deletion log: a ring of up to XA_DB_DELLOG_MAX entries */
    struct xa_db_deletion *dels;
    size_t del_head, del_n, del_cap;
    uint64_t del_floor; /* changes before this may have been forgotten */

    struct xa_value *empty_array; /* shared rendering of an empty set */

    /* persistence */
    const struct xa_persist_driver *drv;
    void *drv_state;
    pthread_t persister;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;    /* work queued, or stop */
    pthread_cond_t donecond; /* batches finished */
    struct xa_db_batch *qfirst, *qlast;
    bool stop;
    /* __atomic: the store failed a batch after retrying for a while and
     * is still away: commits that would persist are refused */
    bool store_down;
    char store_err[256]; /* why, under qlock */

    void (*hook)(uint64_t generation, void *ctx);
    void *hook_ctx;
    void (*repl_hook)(uint64_t generation, void *ctx); /* replication */
    void *repl_hook_ctx;
    xa_db_remote_commit_fn remote; /* set on pool members */
    void *remote_ctx;
};

#define XA_DB_DELLOG_MAX 1000000

extern struct xa_db xa_db_g;

/* db-row.c */
struct xa_db_row *xa_db_row_lookup(const struct xa_class_desc *cls,
                                   const char *ref);
struct xa_db_table *xa_db_table_of(const struct xa_class_desc *cls);
/* Inserts a loaded row (no transaction, no undo); takes 'vals' entries. */
struct xa_error *xa_db_row_insert_loaded(struct xa_db_table *tbl,
                                         const char *ref,
                                         struct xa_value **vals,
                                         uint64_t created, uint64_t modified);
void xa_db_row_free(struct xa_db_row *r);
/* Replays the open write transaction's undo log backwards. */
void xa_db_undo_all(struct xa_txn *t);
/* Releases what undo entries own once the transaction commits. */
void xa_db_undo_release(struct xa_txn *t);
/* The computed set 'field' of 'ref' as an array of refs (new ref). */
struct xa_value *xa_db_render_set(struct xa_db_table *tbl, int field,
                                  const char *ref);
struct xa_db_relset *xa_db_relset_get(struct xa_db_table *tbl, int field,
                                      const char *ref);
void xa_db_tables_init(void);
void xa_db_tables_free(void);

/* db-json.c */
/* Appends the JSON object of the stored fields of 'vals'. */
void xa_db_json_encode_row(struct xa_buf *b, const struct xa_class_desc *cls,
                           struct xa_value *const *vals);
/* Decodes a stored row into 'vals' (n_fields entries, set to new refs;
 * fields absent or unknown get defaults, computed sets stay NULL). */
struct xa_error *xa_db_json_decode_row(const struct xa_class_desc *cls,
                                       const struct xa_hmap *field_index,
                                       const char *json,
                                       struct xa_value **vals);
/* Brings 'v' (taken) to the stored kinds of type 't': XA_INT for ints,
 * XA_DATETIME for datetimes, and so on.  Returns a new reference, 'v'
 * itself when it already conforms. */
struct xa_value *xa_db_normalize(const struct xa_type *t, struct xa_value *v);
/* True when 'v' has the stored kind of type 't' (shallow). */
bool xa_db_kind_ok(const struct xa_type *t, const struct xa_value *v);

#endif
