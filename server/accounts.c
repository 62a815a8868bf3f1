/* accounts.c - see accounts.h.  Passwords are hashed with
 * PBKDF2-HMAC-SHA256 and a random salt per account. */
#include "accounts.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "schema.h"
#include "util.h"

#define ITERATIONS 20000
#define SALT_LEN   16
#define HASH_LEN   32

struct account {
    char *user;
    const char *role; /* one of xa_role_names: static, so it may be lent */
    unsigned char salt[SALT_LEN];
    unsigned char hash[HASH_LEN];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct account *accounts;
static size_t n_accounts;
static char *file_path;

static void
derive(const char *password, const unsigned char *salt,
       unsigned char out[HASH_LEN])
{
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, SALT_LEN,
                      ITERATIONS, EVP_sha256(), HASH_LEN, out);
}

static void
to_hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", b[i]);
    }
}

static bool
from_hex(const char *s, unsigned char *out, size_t n)
{
    if (strlen(s) != 2 * n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) {
            return false;
        }
        out[i] = (unsigned char)v;
    }
    return true;
}

static struct xa_error *
save_locked(void)
{
    char *tmp = xa_asprintf("%s.tmp", file_path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        struct xa_error *e = xa_error_internal("cannot write %s", tmp);
        free(tmp);
        return e;
    }
    fchmod(fileno(f), 0600);
    for (size_t i = 0; i < n_accounts; i++) {
        char salt[2 * SALT_LEN + 1], hash[2 * HASH_LEN + 1];
        to_hex(accounts[i].salt, SALT_LEN, salt);
        to_hex(accounts[i].hash, HASH_LEN, hash);
        fprintf(f, "%s:%s:%s:%s\n", accounts[i].user, accounts[i].role, salt,
                hash);
    }
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, file_path) != 0) {
        struct xa_error *e = xa_error_internal("cannot write %s", file_path);
        free(tmp);
        return e;
    }
    free(tmp);
    return NULL;
}

static struct account *
find_locked(const char *user)
{
    for (size_t i = 0; i < n_accounts; i++) {
        if (strcmp(accounts[i].user, user) == 0) {
            return &accounts[i];
        }
    }
    return NULL;
}

static const char *
intern_role(const char *role)
{
    for (int i = 0; i < XA_ROLE__MAX; i++) {
        if (strcmp(xa_role_names[i], role) == 0) {
            return xa_role_names[i];
        }
    }
    return NULL;
}

static void
set_locked(const char *user, const char *role, const char *password)
{
    struct account *a = find_locked(user);
    if (!a) {
        accounts = xa_realloc(accounts, (n_accounts + 1) * sizeof *accounts);
        a = &accounts[n_accounts++];
        a->user = xa_strdup(user);
    }
    a->role = intern_role(role);
    RAND_bytes(a->salt, SALT_LEN);
    derive(password, a->salt, a->hash);
}

struct xa_error *
xa_accounts_load(const char *path, const char *root_password)
{
    pthread_mutex_lock(&lock);
    free(file_path);
    file_path = xa_strdup(path);
    FILE *f = fopen(path, "r");
    struct xa_error *err = NULL;
    if (!f) {
        if (root_password) {
            set_locked("root", "pool-admin", root_password);
            err = save_locked();
        } else {
            xa_log_warn("accounts", "no accounts file %s: nobody can log in",
                        path);
        }
        pthread_mutex_unlock(&lock);
        return err;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *user = strtok(line, ":");
        char *role = strtok(NULL, ":");
        char *salt = strtok(NULL, ":");
        char *hash = strtok(NULL, ":");
        if (!user || !role || !salt || !hash) {
            continue;
        }
        accounts = xa_realloc(accounts, (n_accounts + 1) * sizeof *accounts);
        struct account *a = &accounts[n_accounts];
        a->role = intern_role(role);
        if (!a->role || !from_hex(salt, a->salt, SALT_LEN) ||
            !from_hex(hash, a->hash, HASH_LEN)) {
            continue;
        }
        a->user = xa_strdup(user);
        n_accounts++;
    }
    fclose(f);
    pthread_mutex_unlock(&lock);
    return NULL;
}

bool
xa_accounts_verify(const char *user, const char *password,
                   const char **ret_role)
{
    unsigned char salt[SALT_LEN], want[HASH_LEN], got[HASH_LEN];
    const char *role = NULL;
    pthread_mutex_lock(&lock);
    struct account *a = find_locked(user);
    if (a) {
        memcpy(salt, a->salt, SALT_LEN);
        memcpy(want, a->hash, HASH_LEN);
        role = a->role; /* accounts are never removed: stays valid */
    }
    pthread_mutex_unlock(&lock);
    if (!a) {
        return false;
    }
    derive(password, salt, got);
    if (CRYPTO_memcmp(got, want, HASH_LEN) != 0) {
        return false;
    }
    if (ret_role) {
        *ret_role = role;
    }
    return true;
}

struct xa_error *
xa_accounts_set(const char *user, const char *role, const char *password)
{
    if (!intern_role(role)) {
        return xa_error_new("INVALID_VALUE", 2, "role", role);
    }
    pthread_mutex_lock(&lock);
    set_locked(user, role, password);
    struct xa_error *err = file_path ? save_locked() : NULL;
    pthread_mutex_unlock(&lock);
    return err;
}
