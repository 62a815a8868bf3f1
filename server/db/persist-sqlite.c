/* persist-sqlite.c - the embedded persistence driver: one SQLite file.
 *
 * WAL journal with synchronous=FULL, so a committed batch has been fsynced
 * before write_batch() returns.  Rows are stored as JSON text under
 * (class, ref); a meta table holds the generation and the layout version. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "persist.h"
#include "util.h"

/* Bumped when the table layout (not the datamodel) changes. */
#define LAYOUT_VERSION "1"

struct sq {
    sqlite3 *db;
    sqlite3_stmt *upsert;
    sqlite3_stmt *del;
    sqlite3_stmt *set_meta;
    sqlite3_stmt *begin;
    sqlite3_stmt *commit;
    sqlite3_stmt *rollback;
};

static struct xa_error *
sq_error(struct sq *s, const char *what)
{
    return xa_error_internal("sqlite %s: %s", what, sqlite3_errmsg(s->db));
}

static struct xa_error *
sq_exec(struct sq *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        struct xa_error *e =
            xa_error_internal("sqlite: %s: %s", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return e;
    }
    return NULL;
}

static struct xa_error *
sq_prepare(struct sq *s, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
                           NULL) != SQLITE_OK) {
        return sq_error(s, sql);
    }
    return NULL;
}

static void
sq_close(void *state)
{
    struct sq *s = state;
    if (!s) {
        return;
    }
    sqlite3_finalize(s->upsert);
    sqlite3_finalize(s->del);
    sqlite3_finalize(s->set_meta);
    sqlite3_finalize(s->begin);
    sqlite3_finalize(s->commit);
    sqlite3_finalize(s->rollback);
    sqlite3_close(s->db);
    free(s);
}

static struct xa_error *
sq_open(const char *uri, void **state)
{
    const char *path = uri + strlen("sqlite:");
    if (!*path) {
        return xa_error_internal("sqlite: no file in uri %s", uri);
    }
    struct sq *s = xa_calloc(1, sizeof *s);
    struct xa_error *e = NULL;
    /* the persister and the opener never use the handle at once, but
     * keep SQLite's own mutex: it costs nothing measurable */
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                            SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        e = xa_error_internal("sqlite: cannot open %s: %s", path,
                              s->db ? sqlite3_errmsg(s->db) : "no memory");
        sq_close(s);
        return e;
    }
    sqlite3_busy_timeout(s->db, 10000);
    static const char *const setup[] = {
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "CREATE TABLE IF NOT EXISTS rows (cls TEXT NOT NULL, "
        "ref TEXT NOT NULL, data TEXT NOT NULL, created INTEGER NOT NULL, "
        "modified INTEGER NOT NULL, PRIMARY KEY (cls, ref))",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
        "value TEXT NOT NULL)",
        "INSERT OR IGNORE INTO meta (key, value) VALUES "
        "('layout_version', '" LAYOUT_VERSION "')",
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(setup) && !e; i++) {
        e = sq_exec(s, setup[i]);
    }
    if (!e) {
        e = sq_prepare(s,
                       "INSERT INTO rows (cls, ref, data, created, modified) "
                       "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (cls, ref) "
                       "DO UPDATE SET data = excluded.data, "
                       "created = excluded.created, "
                       "modified = excluded.modified",
                       &s->upsert);
    }
    if (!e) {
        e = sq_prepare(s, "DELETE FROM rows WHERE cls = ?1 AND ref = ?2",
                       &s->del);
    }
    if (!e) {
        e = sq_prepare(s,
                       "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                       &s->set_meta);
    }
    if (!e) {
        e = sq_prepare(s, "BEGIN IMMEDIATE", &s->begin);
    }
    if (!e) {
        e = sq_prepare(s, "COMMIT", &s->commit);
    }
    if (!e) {
        e = sq_prepare(s, "ROLLBACK", &s->rollback);
    }
    if (e) {
        sq_close(s);
        return e;
    }
    *state = s;
    return NULL;
}

static struct xa_error *
sq_load(void *state, uint64_t *generation, xa_persist_row_fn fn, void *ctx)
{
    struct sq *s = state;
    struct xa_error *e = NULL;
    sqlite3_stmt *st = NULL;
    *generation = 0;
    e = sq_prepare(s, "SELECT key, value FROM meta", &st);
    while (!e && sqlite3_step(st) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        const char *val = (const char *)sqlite3_column_text(st, 1);
        int64_t g;
        if (!key || !val) {
            continue;
        }
        if (strcmp(key, "generation") == 0 && xa_parse_int64(val, &g)) {
            *generation = (uint64_t)g;
        } else if (strcmp(key, "layout_version") == 0 &&
                   strcmp(val, LAYOUT_VERSION) != 0) {
            e = xa_error_internal("sqlite: database layout %s, expected %s",
                                  val, LAYOUT_VERSION);
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    if (!e) {
        /* rowid breaks ties within one generation: rows are inserted in
         * the order the commit touched them */
        e = sq_prepare(s,
                       "SELECT cls, ref, data, created, modified FROM rows "
                       "ORDER BY created, rowid",
                       &st);
    }
    int rc = SQLITE_DONE;
    while (!e && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *cls = (const char *)sqlite3_column_text(st, 0);
        const char *ref = (const char *)sqlite3_column_text(st, 1);
        const char *data = (const char *)sqlite3_column_text(st, 2);
        if (!cls || !ref || !data) {
            continue;
        }
        e = fn(ctx, cls, ref, data, (uint64_t)sqlite3_column_int64(st, 3),
               (uint64_t)sqlite3_column_int64(st, 4));
    }
    if (!e && rc != SQLITE_DONE) {
        e = sq_error(s, "load");
    }
    sqlite3_finalize(st);
    return e;
}

static int
step_reset(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static struct xa_error *
sq_write_batch(void *state, const struct xa_persist_op *ops, size_t n,
               uint64_t generation)
{
    struct sq *s = state;
    if (step_reset(s->begin) != SQLITE_DONE) {
        return sq_error(s, "begin");
    }
    struct xa_error *e = NULL;
    for (size_t i = 0; i < n && !e; i++) {
        const struct xa_persist_op *op = &ops[i];
        sqlite3_stmt *st = op->json ? s->upsert : s->del;
        sqlite3_bind_text(st, 1, op->cls, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, op->ref, -1, SQLITE_STATIC);
        if (op->json) {
            sqlite3_bind_text(st, 3, op->json, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 4, (sqlite3_int64)op->created);
            sqlite3_bind_int64(st, 5, (sqlite3_int64)op->modified);
        }
        if (step_reset(st) != SQLITE_DONE) {
            e = sq_error(s, op->json ? "upsert" : "delete");
        }
    }
    if (!e) {
        char gen[24];
        snprintf(gen, sizeof gen, "%llu", (unsigned long long)generation);
        sqlite3_bind_text(s->set_meta, 1, "generation", -1, SQLITE_STATIC);
        sqlite3_bind_text(s->set_meta, 2, gen, -1, SQLITE_TRANSIENT);
        if (step_reset(s->set_meta) != SQLITE_DONE) {
            e = sq_error(s, "meta");
        }
    }
    if (!e && step_reset(s->commit) != SQLITE_DONE) {
        e = sq_error(s, "commit");
    }
    if (e) {
        step_reset(s->rollback);
    }
    return e;
}

const struct xa_persist_driver xa_persist_sqlite = {
    .scheme = "sqlite:",
    .open = sq_open,
    .load = sq_load,
    .write_batch = sq_write_batch,
    .close = sq_close,
};
