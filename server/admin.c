/* admin.c - see admin.h. */
#include "admin.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db/db.h"
#include "http/cert.h"
#include "schema.h"
#include "util.h"

bool
xa_admin_wanted(const struct xa_config *cfg)
{
    return cfg->check_db || cfg->regenerate_cert;
}

static void
print_error(const char *what, struct xa_error *err)
{
    printf("%s: %s", what, err->code);
    for (size_t i = 0; i < err->n_params; i++) {
        printf(" %s", err->params[i]);
    }
    putchar('\n');
    xa_error_free(err);
}

/* SQLite's own check of the file's b-trees and indexes, before xapid's
 * loader sees the rows: a torn page is reported as such rather than as
 * whatever the rows it garbled would look like.  Opened read-write but
 * not created: replaying the write-ahead log needs to write, and a
 * missing file is a problem to report, not a database to make. */
static bool
sqlite_file_ok(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("no database: %s\n", path);
        return false;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st_check = NULL;
    bool ok = false;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        printf("sqlite: cannot open %s: %s\n", path,
               db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return false;
    }
    sqlite3_busy_timeout(db, 10000);
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st_check, NULL) !=
        SQLITE_OK) {
        printf("sqlite: %s: %s\n", path, sqlite3_errmsg(db));
    } else {
        /* one row "ok", or one row per problem */
        ok = true;
        int rc;
        while ((rc = sqlite3_step(st_check)) == SQLITE_ROW) {
            const char *r = (const char *)sqlite3_column_text(st_check, 0);
            if (!r || strcmp(r, "ok") != 0) {
                printf("sqlite integrity: %s\n", r ? r : "(null)");
                ok = false;
            }
        }
        if (rc != SQLITE_DONE) {
            printf("sqlite: %s: %s\n", path, sqlite3_errmsg(db));
            ok = false;
        }
    }
    sqlite3_finalize(st_check);
    sqlite3_close(db);
    return ok;
}

static int
check_db(const struct xa_config *cfg)
{
    char *uri;
    if (strcmp(cfg->db, "sqlite") == 0) {
        char *path = xa_asprintf("%s/xapi.db", cfg->state_dir);
        bool ok = sqlite_file_ok(path);
        uri = xa_asprintf("sqlite:%s", path);
        free(path);
        if (!ok) {
            free(uri);
            return 1;
        }
    } else {
        uri = xa_strdup(cfg->db);
    }
    xa_schema_init();
    struct xa_error *err = xa_db_open(uri);
    free(uri);
    if (err) {
        print_error("load", err);
        return 1;
    }
    err = xa_db_check_integrity();
    xa_db_close();
    if (err) {
        print_error("integrity", err);
        return 1;
    }
    printf("OK\n");
    return 0;
}

static int
regenerate_cert(const struct xa_config *cfg)
{
    struct xa_error *err =
        xa_cert_regenerate(cfg->state_dir, "xapi-ssl.pem", "xapi-ssl.key");
    if (err) {
        print_error("certificate", err);
        return 1;
    }
    char *path = xa_asprintf("%s/xapi-ssl.pem", cfg->state_dir);
    char *fp = xa_cert_fingerprint_sha256(path);
    printf("%s\nSHA256 fingerprint: %s\n"
           "a running xapid serves the old certificate until restarted\n",
           path, fp ? fp : "(unreadable)");
    free(path);
    bool ok = fp != NULL;
    free(fp);
    return ok ? 0 : 1;
}

int
xa_admin_run(const struct xa_config *cfg)
{
    int rc = 0;
    if (cfg->regenerate_cert) {
        rc |= regenerate_cert(cfg);
    }
    if (cfg->check_db) {
        rc |= check_db(cfg);
    }
    return rc;
}
