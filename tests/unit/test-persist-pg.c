/* test-persist-pg.c - the PostgreSQL persistence driver (server/db/
 * persist-pg.c) against a real server: the schema and its version,
 * batches (folding, order, deletions), load, reopening by a new server,
 * fencing of a second writer, and the database over it.
 *
 * The server is XA_TEST_PG_URI (any database on it) when set, else a
 * private cluster started through tests/e2e/pg_cluster.py; without
 * PostgreSQL every test is skipped, saying so. */
#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "db/db.h"
#include "db/persist-pg.h"
#include "error.h"
#include "schema.h"
#include "util.h"
#include "value.h"

extern const struct xa_class_desc xa_cls_VM;

static char *server_uri;     /* NULL: no PostgreSQL, skip */
static char cluster_dir[64]; /* a private cluster to stop at the end */
static char *why_skipped;

static void
ok(struct xa_error *e)
{
    if (e) {
        fail_msg("unexpected error %s %s", e->code,
                 e->n_params ? e->params[0] : "");
    }
}

/* Runs SQL on the server's 'postgres' database (or 'db') and returns the
 * first value of the first row (caller frees), or NULL. */
static char *sql(const char *db, const char *fmt, ...) XA_PRINTF(2, 3);

static char *
sql(const char *db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *q = xa_vasprintf(fmt, ap);
    va_end(ap);
    char *uri =
        xa_asprintf("%.*s/%s", (int)(strrchr(server_uri, '/') - server_uri),
                    server_uri, db ? db : "postgres");
    PGconn *c = PQconnectdb(uri);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK &&
        PQresultStatus(r) != PGRES_COMMAND_OK) {
        fail_msg("%s: %s", q, PQresultErrorMessage(r));
    }
    char *out = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0
                    ? xa_strdup(PQgetvalue(r, 0, 0))
                    : NULL;
    PQclear(r);
    PQfinish(c);
    free(uri);
    free(q);
    return out;
}

/* A fresh database; returns its uri (caller frees). */
static char *
fresh_db(char *name, size_t n)
{
    static int seq;
    snprintf(name, n, "xa_unit_%d_%d", (int)getpid(), ++seq);
    free(sql(NULL, "DROP DATABASE IF EXISTS %s", name));
    free(sql(NULL, "CREATE DATABASE %s", name));
    return xa_asprintf("%.*s/%s", (int)(strrchr(server_uri, '/') - server_uri),
                       server_uri, name);
}

static void
drop_db(const char *name)
{
    free(sql(NULL, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name));
}

static int
setup_server(void **state)
{
    XA_UNUSED(state);
    const char *env = getenv("XA_TEST_PG_URI");
    if (env && *env) {
        server_uri = xa_strdup(env);
        return 0;
    }
    snprintf(cluster_dir, sizeof cluster_dir, "/tmp/xa-unit-pg-%d",
             (int)getpid());
    char *cmd =
        xa_asprintf("python3 ../e2e/pg_cluster.py start %s 2>&1", cluster_dir);
    FILE *p = popen(cmd, "r");
    free(cmd);
    char line[512] = "";
    struct xa_buf out = {0};
    while (p && fgets(line, sizeof line, p)) {
        xa_buf_puts(&out, line);
    }
    int rc = p ? pclose(p) : -1;
    char *text = xa_buf_steal(&out);
    text[strcspn(text, "\n")] = '\0';
    if (rc == 0 && xa_str_has_prefix(text, "postgresql://")) {
        server_uri = text;
    } else {
        why_skipped = text;
        cluster_dir[0] = '\0';
    }
    return 0;
}

static int
teardown_server(void **state)
{
    XA_UNUSED(state);
    if (cluster_dir[0]) {
        char *cmd =
            xa_asprintf("python3 ../e2e/pg_cluster.py stop %s >/dev/null 2>&1;"
                        " rm -rf %s",
                        cluster_dir, cluster_dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not stop the cluster in %s\n", cluster_dir);
        }
        free(cmd);
    }
    free(server_uri);
    free(why_skipped);
    return 0;
}

static void
need_server(void)
{
    if (!server_uri) {
        fprintf(stderr, "skipped: no PostgreSQL (%s)\n",
                why_skipped ? why_skipped : "?");
        skip();
    }
}

/* --- the driver ----------------------------------------------------------*/

struct loaded {
    char rows[16][96];
    size_t n;
};

static struct xa_error *
collect(void *ctx, const char *cls, const char *ref, const char *json,
        uint64_t created, uint64_t modified)
{
    struct loaded *l = ctx;
    assert_true(l->n < XA_ARRAY_SIZE(l->rows));
    snprintf(l->rows[l->n++], sizeof l->rows[0], "%s %s %s %llu %llu", cls, ref,
             json, (unsigned long long)created, (unsigned long long)modified);
    return NULL;
}

#define UP(c, r, j, cr, mo) \
    {                       \
        c, r, j, cr, mo     \
    }
#define DEL(c, r)        \
    {                    \
        c, r, NULL, 0, 0 \
    }

static void
test_schema_and_batches(void **state)
{
    XA_UNUSED(state);
    need_server();
    char name[64];
    char *uri = fresh_db(name, sizeof name);
    void *s = NULL;
    ok(xa_persist_pg.open(uri, &s));
    char *v = sql(name, "SELECT value FROM xapid_meta "
                        "WHERE key = 'schema_version'");
    assert_string_equal(v, "1");
    free(v);

    struct loaded l = {0};
    uint64_t gen = 99;
    ok(xa_persist_pg.load(s, &gen, collect, &l));
    assert_int_equal(gen, 0);
    assert_int_equal(l.n, 0);

    /* one group commit: z created before a, a touched twice (the last
     * wins, the first places it), b created then destroyed, a deletion
     * of something never stored */
    const struct xa_persist_op b1[] = {
        UP("VM", "z", "{\"n\":\"quote\\\" \\\\ ü\"}", 1, 1),
        UP("VM", "a", "{\"n\":1}", 1, 1),
        UP("SR", "b", "{}", 1, 1),
        UP("VM", "a", "{\"n\":2}", 1, 2),
        DEL("SR", "b"),
        DEL("VM", "never"),
    };
    ok(xa_persist_pg.write_batch(s, b1, XA_ARRAY_SIZE(b1), 2));
    const struct xa_persist_op b2[] = {
        UP("host", "h", "{}", 3, 3),
        DEL("VM", "z"),
        UP("VM", "a", "{\"n\":3}", 1, 3),
    };
    ok(xa_persist_pg.write_batch(s, b2, XA_ARRAY_SIZE(b2), 3));
    const struct xa_persist_op empty[] = {DEL("VM", "none")};
    ok(xa_persist_pg.write_batch(s, empty, 0, 4));
    xa_persist_pg.close(s);

    /* a new server (or a new master) opening the same database */
    ok(xa_persist_pg.open(uri, &s));
    memset(&l, 0, sizeof l);
    ok(xa_persist_pg.load(s, &gen, collect, &l));
    assert_int_equal(gen, 4);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.rows[0], "VM a {\"n\":3} 1 3");
    assert_string_equal(l.rows[1], "host h {} 3 3");
    /* the JSON text is kept byte for byte */
    const struct xa_persist_op b3[] = {
        UP("VM", "q", "{\"n\":\"quote\\\" \\\\ ü\"}", 5, 5),
    };
    ok(xa_persist_pg.write_batch(s, b3, 1, 5));
    uint64_t stored = 0;
    ok(xa_persist_pg.stored_generation(s, &stored));
    assert_int_equal(stored, 5);
    xa_persist_pg.close(s);
    ok(xa_persist_pg.open(uri, &s));
    memset(&l, 0, sizeof l);
    ok(xa_persist_pg.load(s, &gen, collect, &l));
    assert_string_equal(l.rows[2], "VM q {\"n\":\"quote\\\" \\\\ ü\"} 5 5");
    xa_persist_pg.close(s);

    /* a layout from a newer xapid is refused, not rewritten */
    free(sql(name, "UPDATE xapid_meta SET value = '99' "
                   "WHERE key = 'schema_version'"));
    struct xa_error *e = xa_persist_pg.open(uri, &s);
    assert_non_null(e);
    assert_non_null(strstr(e->params[0], "schema version 99"));
    xa_error_free(e);
    drop_db(name);
    free(uri);
}

static void
test_second_writer_is_fenced(void **state)
{
    XA_UNUSED(state);
    need_server();
    char name[64];
    char *uri = fresh_db(name, sizeof name);
    void *old = NULL, *new = NULL;
    uint64_t gen;
    struct loaded l = {0};
    ok(xa_persist_pg.open(uri, &old));
    ok(xa_persist_pg.load(old, &gen, collect, &l));
    const struct xa_persist_op w1[] = {UP("VM", "a", "{}", 1, 1)};
    ok(xa_persist_pg.write_batch(old, w1, 1, 1));

    /* a new master takes over the database and writes */
    ok(xa_persist_pg.open(uri, &new));
    ok(xa_persist_pg.load(new, &gen, collect, &l));
    assert_int_equal(gen, 1);
    const struct xa_persist_op w2[] = {UP("VM", "b", "{}", 2, 2)};
    ok(xa_persist_pg.write_batch(new, w2, 1, 2));

    /* the old one sees the database is ahead, and cannot write */
    uint64_t stored = 0;
    ok(xa_persist_pg.stored_generation(old, &stored));
    assert_int_equal(stored, 2);
    const struct xa_persist_op w3[] = {UP("VM", "a", "{\"x\":1}", 1, 2)};
    struct xa_error *e = xa_persist_pg.write_batch(old, w3, 1, 2);
    assert_non_null(e);
    assert_non_null(strstr(e->params[0], "another server has written"));
    xa_error_free(e);
    char *v = sql(name, "SELECT data FROM xapid_rows WHERE ref = 'a'");
    assert_string_equal(v, "{}");
    free(v);
    xa_persist_pg.close(old);
    xa_persist_pg.close(new);
    drop_db(name);
    free(uri);
}

/* A connection that breaks under the driver is replaced at the next
 * write; the write in flight is settled from the stored generation. */
static void
test_reconnects(void **state)
{
    XA_UNUSED(state);
    need_server();
    char name[64];
    char *uri = fresh_db(name, sizeof name);
    void *s = NULL;
    uint64_t gen;
    struct loaded l = {0};
    ok(xa_persist_pg.open(uri, &s));
    ok(xa_persist_pg.load(s, &gen, collect, &l));
    const struct xa_persist_op w1[] = {UP("VM", "a", "{}", 1, 1)};
    ok(xa_persist_pg.write_batch(s, w1, 1, 1));
    free(sql(NULL,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE datname = '%s' AND application_name = 'xapid'",
             name));
    const struct xa_persist_op w2[] = {UP("VM", "b", "{}", 2, 2)};
    struct xa_error *e = xa_persist_pg.write_batch(s, w2, 1, 2);
    if (e) {
        /* the broken connection is noticed by this write; the next one
         * reconnects */
        xa_error_free(e);
        ok(xa_persist_pg.write_batch(s, w2, 1, 2));
    }
    char *v = sql(name, "SELECT value FROM xapid_meta "
                        "WHERE key = 'generation'");
    assert_string_equal(v, "2");
    free(v);
    xa_persist_pg.close(s);
    drop_db(name);
    free(uri);
}

/* --- the database over it ------------------------------------------------*/

static void
create_vm(const char *ref, const char *name)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *r = xa_struct();
    xa_struct_set(r, "name_label", xa_string(name));
    ok(xa_db_create(t, &xa_cls_VM, ref, r));
    ok(xa_db_commit(t));
}

static void
test_database_reopens(void **state)
{
    XA_UNUSED(state);
    need_server();
    char name[64];
    char *uri = fresh_db(name, sizeof name);
    ok(xa_db_open(uri));
    create_vm("OpaqueRef:1", "one");
    create_vm("OpaqueRef:2", "two");
    uint64_t g = xa_db_generation();
    bool ahead = true;
    uint64_t stored = 0;
    ok(xa_db_store_ahead(&ahead, &stored));
    assert_false(ahead);
    assert_int_equal(stored, g);
    assert_true(xa_db_store_available());

    /* another server moves the database on: this copy is stale */
    free(sql(name,
             "UPDATE xapid_meta SET value = '%llu' "
             "WHERE key = 'generation'",
             (unsigned long long)g + 5));
    ok(xa_db_store_ahead(&ahead, &stored));
    assert_true(ahead);
    assert_int_equal(stored, g + 5);
    /* ... and a write from here is refused: never acknowledged */
    struct xa_txn *t = xa_db_begin_write();
    ok(xa_db_set_field(t, &xa_cls_VM, "OpaqueRef:1",
                       xa_schema_field_index(&xa_cls_VM, "name_label"),
                       xa_string("stale")));
    struct xa_error *e = xa_db_commit(t);
    assert_non_null(e);
    assert_string_equal(e->code, "INTERNAL_ERROR");
    assert_non_null(strstr(e->params[0], "database write failed"));
    xa_error_free(e);
    assert_false(xa_db_store_available());
    /* while the store refuses, writes fail at once and change nothing */
    t = xa_db_begin_write();
    ok(xa_db_set_field(t, &xa_cls_VM, "OpaqueRef:2",
                       xa_schema_field_index(&xa_cls_VM, "name_label"),
                       xa_string("refused")));
    e = xa_db_commit(t);
    assert_non_null(e);
    assert_non_null(strstr(e->params[0], "database unavailable"));
    xa_error_free(e);
    t = xa_db_begin_read();
    struct xa_value *n =
        xa_db_get_field(t, &xa_cls_VM, "OpaqueRef:2",
                        xa_schema_field_index(&xa_cls_VM, "name_label"));
    assert_string_equal(n->u.str.s, "two");
    xa_value_unref(n);
    xa_db_end(t);
    xa_db_close();

    /* the new master's view: reload from the database */
    ok(xa_db_open(uri));
    assert_int_equal(xa_db_generation(), g + 5);
    t = xa_db_begin_read();
    assert_true(xa_db_exists(t, &xa_cls_VM, "OpaqueRef:1"));
    assert_true(xa_db_exists(t, &xa_cls_VM, "OpaqueRef:2"));
    xa_db_end(t);
    create_vm("OpaqueRef:3", "three");
    ok(xa_db_store_ahead(&ahead, &stored));
    assert_false(ahead);
    xa_db_close();
    drop_db(name);
    free(uri);
}

int
main(void)
{
    xa_schema_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_and_batches),
        cmocka_unit_test(test_second_writer_is_fenced),
        cmocka_unit_test(test_reconnects),
        cmocka_unit_test(test_database_reopens),
    };
    return cmocka_run_group_tests(tests, setup_server, teardown_server);
}
