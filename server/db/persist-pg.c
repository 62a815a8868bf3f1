/* persist-pg.c - the PostgreSQL persistence driver, over libpq.
 *
 * Layout (created and migrated here, version in xapid_meta):
 *   xapid_meta (key text PRIMARY KEY, value text)
 *       'schema_version' - the layout below, XA_PG_SCHEMA_VERSION
 *       'generation'     - the generation of the last batch written
 *   xapid_rows (cls, ref, data, created, modified, ord)
 *       one row per stored object, 'data' the JSON text of its stored
 *       fields, as the sqlite driver keeps it; 'ord' (an identity column)
 *       keeps the order rows were first written, which breaks ties
 *       between rows created by one generation at load
 *   xapid_write_batch(...) - a PL/pgSQL function that applies one batch
 *
 * One batch is one statement: "SELECT xapid_write_batch($1..$9)", run
 * prepared, in autocommit, with the upserts and the deletions passed as
 * binary arrays.  So a batch costs one round trip and one commit whatever
 * its size, and is atomic; write_batch() returns once PostgreSQL has
 * answered, which with its default synchronous_commit=on means the commit
 * is flushed (and, with synchronous replication configured, replicated).
 * Several operations on one object within a batch (group commit joins
 * transactions) are folded into the last one first, because one INSERT
 * ... ON CONFLICT cannot touch a row twice.
 *
 * Fencing: the function locks the generation row and refuses the batch
 * unless the store is still at the generation this driver last saw
 * (loaded or wrote).  A second server writing to the same database - a
 * master that was replaced but is still running - therefore fails its
 * writes instead of interleaving them.
 *
 * Connection loss: a failed statement on a broken connection drops the
 * connection; the next write_batch() reconnects.  Whether the statement
 * that was in flight committed is then unknown, so the reconnect reads
 * the stored generation: at the generation of that batch, it did commit
 * (and rewriting it is harmless: the next batch carries the same final
 * values); at the one before, it did not.  Retrying and backing off is
 * the database layer's business (db.c), as is refusing writes meanwhile. */
#include <endian.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "persist-pg.h"
#include "util.h"

/* pg_type OIDs of the parameters (fixed since PostgreSQL 7) */
#define OID_INT8       20
#define OID_TEXT       25
#define OID_INT8_ARRAY 1016
#define OID_TEXT_ARRAY 1009

/* Serialises concurrent openers migrating one database ("xapi"). */
#define MIGRATION_LOCK "2021161080"

/* Raised by xapid_write_batch when another server wrote. */
#define SQLSTATE_FENCED "XA001"

struct pg {
    char *uri;
    PGconn *conn;       /* the persister's; NULL once lost */
    uint64_t gen;       /* the store's generation as this driver knows it */
    uint64_t tried_gen; /* a batch lost with its connection (0: none) */

    pthread_mutex_t side_lock; /* guards 'side' */
    PGconn *side;              /* for stored_generation() */
};

/* Each layout step, applied in order inside one transaction; step i
 * brings the layout from version i to i + 1.  Never edit a released
 * step: append one. */
static const char *const migrations[XA_PG_SCHEMA_VERSION] = {
    "CREATE TABLE xapid_rows ("
    " cls text NOT NULL, ref text NOT NULL, data text NOT NULL,"
    " created bigint NOT NULL, modified bigint NOT NULL,"
    " ord bigint GENERATED ALWAYS AS IDENTITY,"
    " PRIMARY KEY (cls, ref));"
    "CREATE INDEX xapid_rows_load ON xapid_rows (created, ord);"
    "INSERT INTO xapid_meta (key, value) VALUES ('generation', '0')"
    " ON CONFLICT (key) DO NOTHING;"
    "CREATE OR REPLACE FUNCTION xapid_write_batch("
    " up_cls text[], up_ref text[], up_data text[], up_created bigint[],"
    " up_modified bigint[], del_cls text[], del_ref text[],"
    " new_gen bigint, base_gen bigint) RETURNS bigint"
    " LANGUAGE plpgsql AS $f$\n"
    "DECLARE cur bigint;\n"
    "BEGIN\n"
    "  SELECT value::bigint INTO cur FROM xapid_meta"
    "   WHERE key = 'generation' FOR UPDATE;\n"
    "  IF cur IS DISTINCT FROM base_gen THEN\n"
    "    RAISE EXCEPTION 'the database is at generation % but this server"
    " last saw %: another server has written to it', cur, base_gen"
    "     USING ERRCODE = '" SQLSTATE_FENCED "';\n"
    "  END IF;\n"
    "  DELETE FROM xapid_rows r USING unnest(del_cls, del_ref) AS d(cls, ref)"
    "   WHERE r.cls = d.cls AND r.ref = d.ref;\n"
    "  INSERT INTO xapid_rows (cls, ref, data, created, modified)"
    "   SELECT u.cls, u.ref, u.data, u.created, u.modified"
    "   FROM unnest(up_cls, up_ref, up_data, up_created, up_modified)"
    "    WITH ORDINALITY AS u(cls, ref, data, created, modified, n)"
    "   ORDER BY u.n"
    "   ON CONFLICT (cls, ref) DO UPDATE SET data = EXCLUDED.data,"
    "    created = EXCLUDED.created, modified = EXCLUDED.modified;\n"
    "  UPDATE xapid_meta SET value = new_gen::text"
    "   WHERE key = 'generation';\n"
    "  RETURN new_gen;\n"
    "END\n"
    "$f$;",
};

static const char write_sql[] =
    "SELECT xapid_write_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/* --- connections ---------------------------------------------------------*/

/* libpq's messages end with a newline (or several lines); the first
 * line says what happened. */
static char *
conn_message(PGconn *c)
{
    const char *m = c ? PQerrorMessage(c) : "out of memory";
    size_t n = strcspn(m, "\n");
    return n ? xa_strndup(m, n) : xa_strdup("connection lost");
}

static void
quiet_notices(void *arg, const char *message)
{
    XA_UNUSED(arg);
    /* CREATE ... IF NOT EXISTS and the like: nothing an operator needs */
    xa_log_debug("pg", "%s", message);
}

/* Connects with defaults the uri can override: a bounded connect and
 * TCP keepalives plus a user timeout, so a server that vanishes (rather
 * than closing the connection) is noticed in seconds, not never. */
static PGconn *
connect_uri(const char *uri, char **msg)
{
    static const char *const keys[] = {
        "connect_timeout",
        "application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "dbname",
        NULL,
    };
    const char *vals[] = {"5", "xapid", "1", "5", "2", "3", "10000", uri, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        *msg = conn_message(c);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet_notices, NULL);
    return c;
}

static struct xa_error *
result_error(PGconn *c, PGresult *r, const char *what)
{
    const char *m = r ? PQresultErrorMessage(r) : "";
    char *line = *m ? xa_strndup(m, strcspn(m, "\n")) : conn_message(c);
    struct xa_error *e = xa_error_internal("postgresql %s: %s", what, line);
    free(line);
    return e;
}

/* Runs SQL without parameters that returns no rows. */
static struct xa_error *
exec_cmd(PGconn *c, const char *sql, const char *what)
{
    PGresult *r = PQexec(c, sql);
    struct xa_error *e = NULL;
    if (PQresultStatus(r) != PGRES_COMMAND_OK &&
        PQresultStatus(r) != PGRES_TUPLES_OK) {
        e = result_error(c, r, what);
    }
    PQclear(r);
    return e;
}

/* Reads one meta value as an integer; a missing key reads as -1. */
static struct xa_error *
read_meta(PGconn *c, const char *key, int64_t *out)
{
    const char *params[] = {key};
    PGresult *r = PQexecParams(c, "SELECT value FROM xapid_meta WHERE key = $1",
                               1, NULL, params, NULL, NULL, 0);
    struct xa_error *e = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        e = result_error(c, r, "reading xapid_meta");
    } else if (PQntuples(r) == 0) {
        *out = -1;
    } else if (!xa_parse_int64(PQgetvalue(r, 0, 0), out)) {
        e = xa_error_internal("postgresql: xapid_meta %s is '%s'", key,
                              PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return e;
}

/* Creates or upgrades the layout; several servers may start at once
 * against one database, so they queue on an advisory lock. */
static struct xa_error *
migrate(PGconn *c)
{
    struct xa_error *e =
        exec_cmd(c,
                 "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ");"
                 "CREATE TABLE IF NOT EXISTS xapid_meta (key text PRIMARY KEY,"
                 " value text NOT NULL)",
                 "creating xapid_meta");
    int64_t version = 0;
    if (!e) {
        e = read_meta(c, "schema_version", &version);
    }
    if (!e && version < 0) {
        version = 0;
    }
    if (!e && version > XA_PG_SCHEMA_VERSION) {
        e = xa_error_internal("postgresql: the database has schema version "
                              "%lld, newer than this xapid's %d",
                              (long long)version, XA_PG_SCHEMA_VERSION);
    }
    for (int64_t v = version; !e && v < XA_PG_SCHEMA_VERSION; v++) {
        xa_log_info("pg", "migrating the schema from version %lld to %lld",
                    (long long)v, (long long)v + 1);
        e = exec_cmd(c, migrations[v], "migrating the schema");
    }
    if (!e && version < XA_PG_SCHEMA_VERSION) {
        char v[16];
        snprintf(v, sizeof v, "%d", XA_PG_SCHEMA_VERSION);
        const char *params[] = {v};
        PGresult *r =
            PQexecParams(c,
                         "INSERT INTO xapid_meta (key, value) VALUES "
                         "('schema_version', $1) ON CONFLICT (key) DO UPDATE "
                         "SET value = EXCLUDED.value",
                         1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            e = result_error(c, r, "recording the schema version");
        }
        PQclear(r);
    }
    if (!e) {
        e = exec_cmd(c, "COMMIT", "committing the schema");
    }
    if (e) {
        xa_error_free(exec_cmd(c, "ROLLBACK", "rollback"));
    }
    return e;
}

/* Makes the persister's connection usable: connects, prepares the write
 * and settles what happened to a batch lost with the last connection. */
static struct xa_error *
ensure_conn(struct pg *s)
{
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK) {
        return NULL;
    }
    PQfinish(s->conn);
    s->conn = NULL;
    char *msg = NULL;
    PGconn *c = connect_uri(s->uri, &msg);
    if (!c) {
        struct xa_error *e =
            xa_error_internal("postgresql unreachable: %s", msg);
        free(msg);
        return e;
    }
    static const Oid types[] = {
        OID_TEXT_ARRAY, OID_TEXT_ARRAY, OID_TEXT_ARRAY,
        OID_INT8_ARRAY, OID_INT8_ARRAY, OID_TEXT_ARRAY,
        OID_TEXT_ARRAY, OID_INT8,       OID_INT8,
    };
    PGresult *r = PQprepare(c, "xapid_write", write_sql,
                            (int)XA_ARRAY_SIZE(types), types);
    struct xa_error *e = NULL;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        e = result_error(c, r, "preparing the batch write");
    }
    PQclear(r);
    int64_t stored = 0;
    if (!e) {
        e = read_meta(c, "generation", &stored);
    }
    if (e) {
        PQfinish(c);
        return e;
    }
    if (s->tried_gen && (uint64_t)stored == s->tried_gen) {
        xa_log_info("pg",
                    "the batch of generation %llu in flight when the "
                    "connection broke had committed",
                    (unsigned long long)stored);
        s->gen = (uint64_t)stored;
    }
    /* any other difference is another writer: the write refuses it */
    s->tried_gen = 0;
    s->conn = c;
    xa_log_info("pg", "connected to PostgreSQL at generation %lld",
                (long long)stored);
    return NULL;
}

/* --- open, load, close ---------------------------------------------------*/

static void
pg_close(void *state)
{
    struct pg *s = state;
    if (!s) {
        return;
    }
    PQfinish(s->conn);
    PQfinish(s->side);
    pthread_mutex_destroy(&s->side_lock);
    free(s->uri);
    free(s);
}

static struct xa_error *
pg_open(const char *uri, void **state)
{
    struct pg *s = xa_calloc(1, sizeof *s);
    s->uri = xa_strdup(uri);
    pthread_mutex_init(&s->side_lock, NULL);
    char *msg = NULL;
    s->conn = connect_uri(uri, &msg);
    if (!s->conn) {
        struct xa_error *e =
            xa_error_internal("postgresql: cannot connect: %s", msg);
        free(msg);
        pg_close(s);
        return e;
    }
    struct xa_error *e = migrate(s->conn);
    if (e) {
        pg_close(s);
        return e;
    }
    /* load() connects again for the persister, preparing the write */
    PQfinish(s->conn);
    s->conn = NULL;
    *state = s;
    return NULL;
}

static bool
parse_gen(const char *text, uint64_t *out)
{
    int64_t v;
    if (!xa_parse_int64(text, &v) || v < 0) {
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

/* Reads every row in one snapshot with the generation it belongs to,
 * streaming them (single-row mode) so a large pool database is never
 * held twice in memory. */
static struct xa_error *
pg_load(void *state, uint64_t *generation, xa_persist_row_fn fn, void *ctx)
{
    struct pg *s = state;
    *generation = 0;
    s->tried_gen = 0;
    struct xa_error *e = ensure_conn(s);
    if (e) {
        return e;
    }
    PGconn *c = s->conn;
    e = exec_cmd(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                 "starting the load");
    int64_t gen = 0;
    if (!e) {
        e = read_meta(c, "generation", &gen);
    }
    if (!e && !PQsendQuery(c, "SELECT cls, ref, data, created, modified "
                              "FROM xapid_rows ORDER BY created, ord")) {
        e = result_error(c, NULL, "loading rows");
    }
    if (!e && !PQsetSingleRowMode(c)) {
        e = xa_error_internal("postgresql: cannot stream the load");
    }
    bool sent = !e;
    PGresult *r;
    while (sent && (r = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (!e && st == PGRES_SINGLE_TUPLE) {
            uint64_t created, modified;
            if (!parse_gen(PQgetvalue(r, 0, 3), &created) ||
                !parse_gen(PQgetvalue(r, 0, 4), &modified)) {
                e = xa_error_internal("postgresql: bad generations in row %s",
                                      PQgetvalue(r, 0, 1));
            } else {
                e = fn(ctx, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1),
                       PQgetvalue(r, 0, 2), created, modified);
            }
        } else if (!e && st != PGRES_TUPLES_OK) {
            e = result_error(c, r, "loading rows");
        }
        /* after an error keep reading: the connection must be drained */
        PQclear(r);
    }
    xa_error_free(exec_cmd(c, e ? "ROLLBACK" : "COMMIT", "ending the load"));
    if (!e) {
        s->gen = gen > 0 ? (uint64_t)gen : 0;
        *generation = s->gen;
    }
    return e;
}

/* --- writing -------------------------------------------------------------*/

static int
cmp_op(const void *a, const void *b)
{
    const struct xa_persist_op *x = *(const struct xa_persist_op *const *)a;
    const struct xa_persist_op *y = *(const struct xa_persist_op *const *)b;
    int c = strcmp(x->cls, y->cls);
    if (!c) {
        c = strcmp(x->ref, y->ref);
    }
    if (!c && x != y) {
        c = x < y ? -1 : 1; /* the ops array's order */
    }
    return c;
}

/* One object's net change in a batch: 'first' places it, 'last' says
 * what it ends as. */
struct folded {
    const struct xa_persist_op *first;
    const struct xa_persist_op *last;
};

static int
cmp_first(const void *a, const void *b)
{
    const struct folded *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Folds the ops into one net change per object, in the order objects were
 * first touched; returns how many. */
static size_t
fold(const struct xa_persist_op *ops, size_t n, struct folded *out)
{
    const struct xa_persist_op **p = xa_malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        p[i] = &ops[i];
    }
    qsort(p, n, sizeof *p, cmp_op);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && strcmp(out[m - 1].last->cls, p[i]->cls) == 0 &&
            strcmp(out[m - 1].last->ref, p[i]->ref) == 0) {
            out[m - 1].last = p[i];
        } else {
            out[m].first = out[m].last = p[i];
            m++;
        }
    }
    free(p);
    qsort(out, m, sizeof *out, cmp_first);
    return m;
}

static void
put_u32(struct xa_buf *b, uint32_t v)
{
    v = htobe32(v);
    xa_buf_append(b, &v, sizeof v);
}

static void
put_u64(struct xa_buf *b, uint64_t v)
{
    v = htobe64(v);
    xa_buf_append(b, &v, sizeof v);
}

/* PostgreSQL's binary array format: dimensions, no-null flag, element
 * type, then length and lower bound of the one dimension. */
static void
array_header(struct xa_buf *b, uint32_t elem_oid, size_t n)
{
    put_u32(b, n ? 1 : 0);
    put_u32(b, 0);
    put_u32(b, elem_oid);
    if (n) {
        put_u32(b, (uint32_t)n);
        put_u32(b, 1);
    }
}

static void
array_text(struct xa_buf *b, const char *s)
{
    size_t len = strlen(s);
    put_u32(b, (uint32_t)len);
    xa_buf_append(b, s, len);
}

static void
array_int8(struct xa_buf *b, uint64_t v)
{
    put_u32(b, 8);
    put_u64(b, v);
}

enum {
    P_UP_CLS,
    P_UP_REF,
    P_UP_DATA,
    P_UP_CREATED,
    P_UP_MODIFIED,
    P_DEL_CLS,
    P_DEL_REF,
    P_NEW_GEN,
    P_BASE_GEN,
    N_PARAMS
};

static struct xa_error *
pg_write_batch(void *state, const struct xa_persist_op *ops, size_t n,
               uint64_t generation)
{
    struct pg *s = state;
    struct xa_error *e = ensure_conn(s);
    if (e) {
        return e;
    }
    struct folded *f = xa_malloc((n ? n : 1) * sizeof *f);
    size_t m = fold(ops, n, f);
    size_t n_up = 0;
    for (size_t i = 0; i < m; i++) {
        n_up += f[i].last->json != NULL;
    }
    struct xa_buf p[N_PARAMS] = {0};
    array_header(&p[P_UP_CLS], OID_TEXT, n_up);
    array_header(&p[P_UP_REF], OID_TEXT, n_up);
    array_header(&p[P_UP_DATA], OID_TEXT, n_up);
    array_header(&p[P_UP_CREATED], OID_INT8, n_up);
    array_header(&p[P_UP_MODIFIED], OID_INT8, n_up);
    array_header(&p[P_DEL_CLS], OID_TEXT, m - n_up);
    array_header(&p[P_DEL_REF], OID_TEXT, m - n_up);
    for (size_t i = 0; i < m; i++) {
        const struct xa_persist_op *op = f[i].last;
        if (op->json) {
            array_text(&p[P_UP_CLS], op->cls);
            array_text(&p[P_UP_REF], op->ref);
            array_text(&p[P_UP_DATA], op->json);
            array_int8(&p[P_UP_CREATED], op->created);
            array_int8(&p[P_UP_MODIFIED], op->modified);
        } else {
            array_text(&p[P_DEL_CLS], op->cls);
            array_text(&p[P_DEL_REF], op->ref);
        }
    }
    free(f);
    put_u64(&p[P_NEW_GEN], generation);
    put_u64(&p[P_BASE_GEN], s->gen);
    const char *vals[N_PARAMS];
    int lens[N_PARAMS], fmts[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++) {
        vals[i] = p[i].data;
        lens[i] = (int)p[i].len;
        fmts[i] = 1;
    }
    PGresult *r =
        PQexecPrepared(s->conn, "xapid_write", N_PARAMS, vals, lens, fmts, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        s->gen = generation;
    } else {
        const char *state_code =
            r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        bool fenced = state_code && strcmp(state_code, SQLSTATE_FENCED) == 0;
        e = result_error(s->conn, r, fenced ? "refused the write" : "write");
        if (fenced) {
            /* the same message, under the code that says "do not retry" */
            struct xa_error *refused =
                xa_error_new(XA_PERSIST_REFUSED, 1, e->params[0]);
            xa_error_free(e);
            e = refused;
        }
        if (PQstatus(s->conn) != CONNECTION_OK) {
            /* it may or may not have committed: ensure_conn() finds out */
            s->tried_gen = generation;
            PQfinish(s->conn);
            s->conn = NULL;
        }
    }
    PQclear(r);
    for (int i = 0; i < N_PARAMS; i++) {
        xa_buf_free(&p[i]);
    }
    return e;
}

static struct xa_error *
pg_stored_generation(void *state, uint64_t *generation)
{
    struct pg *s = state;
    struct xa_error *e = NULL;
    pthread_mutex_lock(&s->side_lock);
    if (s->side && PQstatus(s->side) != CONNECTION_OK) {
        PQfinish(s->side);
        s->side = NULL;
    }
    if (!s->side) {
        char *msg = NULL;
        s->side = connect_uri(s->uri, &msg);
        if (!s->side) {
            e = xa_error_internal("postgresql unreachable: %s", msg);
            free(msg);
        }
    }
    int64_t g = 0;
    if (!e) {
        e = read_meta(s->side, "generation", &g);
    }
    pthread_mutex_unlock(&s->side_lock);
    *generation = g > 0 ? (uint64_t)g : 0;
    return e;
}

const struct xa_persist_driver xa_persist_pg = {
    .scheme = "postgresql://",
    .open = pg_open,
    .load = pg_load,
    .write_batch = pg_write_batch,
    .close = pg_close,
    .stored_generation = pg_stored_generation,
};
