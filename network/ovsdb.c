/* ovsdb.c - see ovsdb.h. */
#include "network/ovsdb.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define LOG_MODULE "ovsdb"

struct xa_ovsdb {
    pthread_mutex_t lock;
    char *remote; /* as given, for messages */
    char *path;   /* the socket */
    double timeout;
    int fd;            /* -1: not connected */
    json_tokener *tok; /* parser state of the current connection */
    char *buf;         /* bytes read but not parsed yet */
    size_t len, cap;
    unsigned next_id;
    unsigned epoch;
};

static double
now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct xa_ovsdb *
xa_ovsdb_new(const char *remote, double timeout)
{
    struct xa_ovsdb *db = xa_malloc(sizeof *db);
    memset(db, 0, sizeof *db);
    pthread_mutex_init(&db->lock, NULL);
    db->remote = xa_strdup(remote);
    db->path =
        xa_strdup(xa_str_has_prefix(remote, "unix:") ? remote + 5 : remote);
    db->timeout = timeout;
    db->fd = -1;
    return db;
}

static void
disconnect(struct xa_ovsdb *db)
{
    if (db->fd >= 0) {
        close(db->fd);
        db->fd = -1;
    }
    if (db->tok) {
        json_tokener_free(db->tok);
        db->tok = NULL;
    }
    db->len = 0;
}

void
xa_ovsdb_free(struct xa_ovsdb *db)
{
    if (!db) {
        return;
    }
    disconnect(db);
    pthread_mutex_destroy(&db->lock);
    free(db->remote);
    free(db->path);
    free(db->buf);
    free(db);
}

unsigned
xa_ovsdb_epoch(struct xa_ovsdb *db)
{
    pthread_mutex_lock(&db->lock);
    unsigned e = db->epoch;
    pthread_mutex_unlock(&db->lock);
    return e;
}

/* Waits for 'events' on the socket until 'deadline'. */
static struct xa_error *
wait_fd(struct xa_ovsdb *db, short events, double deadline)
{
    for (;;) {
        double left = deadline - now_mono();
        if (left <= 0) {
            return xa_error_internal("Open vSwitch database %s: no answer "
                                     "within %.0f s",
                                     db->remote, db->timeout);
        }
        struct pollfd p = {.fd = db->fd, .events = events};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0) {
            return NULL;
        }
        if (r < 0 && errno != EINTR) {
            return xa_error_internal("Open vSwitch database %s: poll: %s",
                                     db->remote, strerror(errno));
        }
    }
}

static struct xa_error *
connect_locked(struct xa_ovsdb *db)
{
    if (db->fd >= 0) {
        return NULL;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(db->path) >= sizeof sa.sun_path) {
        return xa_error_internal("Open vSwitch database %s: path too long",
                                 db->remote);
    }
    strcpy(sa.sun_path, db->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return xa_error_internal("socket: %s", strerror(errno));
    }
    /* A unix socket connects at once or fails at once (no listener);
     * only a full backlog can make it wait, which poll bounds below. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
        errno != EINPROGRESS && errno != EAGAIN) {
        int e = errno;
        close(fd);
        return xa_error_internal("Open vSwitch database %s is not "
                                 "reachable: %s",
                                 db->remote, strerror(e));
    }
    db->fd = fd;
    db->tok = json_tokener_new();
    db->len = 0;
    db->epoch++;
    xa_log_info(LOG_MODULE, "connected to %s", db->remote);
    return NULL;
}

static struct xa_error *
send_all(struct xa_ovsdb *db, const char *s, size_t n, double deadline)
{
    while (n > 0) {
        ssize_t w = send(db->fd, s, n, MSG_NOSIGNAL);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct xa_error *err = wait_fd(db, POLLOUT, deadline);
            if (err) {
                return err;
            }
            continue;
        }
        return xa_error_internal("Open vSwitch database %s: send: %s",
                                 db->remote, strerror(errno));
    }
    return NULL;
}

/* Takes one complete JSON message from the buffer, or NULL when more
 * bytes are needed.  '*bad' is set on a parse error. */
static json_object *
take_message(struct xa_ovsdb *db, bool *bad)
{
    *bad = false;
    if (db->len == 0) {
        return NULL;
    }
    json_object *o = json_tokener_parse_ex(db->tok, db->buf, (int)db->len);
    enum json_tokener_error je = json_tokener_get_error(db->tok);
    size_t used = json_tokener_get_parse_end(db->tok);
    if (je == json_tokener_continue) {
        /* The tokener keeps what it saw; those bytes are consumed. */
        db->len = 0;
        return NULL;
    }
    if (je != json_tokener_success || !o) {
        *bad = true;
        return NULL;
    }
    json_tokener_reset(db->tok);
    memmove(db->buf, db->buf + used, db->len - used);
    db->len -= used;
    return o;
}

static struct xa_error *
read_more(struct xa_ovsdb *db, double deadline)
{
    struct xa_error *err = wait_fd(db, POLLIN, deadline);
    if (err) {
        return err;
    }
    if (db->cap - db->len < 65536) {
        db->cap = db->cap ? db->cap * 2 : 131072;
        db->buf = xa_realloc(db->buf, db->cap);
    }
    ssize_t r = recv(db->fd, db->buf + db->len, db->cap - db->len, 0);
    if (r > 0) {
        db->len += (size_t)r;
        return NULL;
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        return NULL;
    }
    return xa_error_internal("Open vSwitch database %s closed the "
                             "connection%s%s",
                             db->remote, r < 0 ? ": " : "",
                             r < 0 ? strerror(errno) : "");
}

/* Sends 'req' (taken) and waits for the reply with the same id. */
static struct xa_error *
call_locked(struct xa_ovsdb *db, json_object *req, json_object **reply)
{
    double deadline = now_mono() + db->timeout;
    unsigned id = ++db->next_id;
    json_object_object_add(req, "id", json_object_new_int64(id));
    const char *text =
        json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
    struct xa_error *err = send_all(db, text, strlen(text), deadline);
    json_object_put(req);
    while (!err) {
        bool bad = false;
        json_object *msg = take_message(db, &bad);
        if (bad) {
            return xa_error_internal("Open vSwitch database %s sent "
                                     "malformed JSON",
                                     db->remote);
        }
        if (!msg) {
            err = read_more(db, deadline);
            continue;
        }
        json_object *m = NULL, *mid = NULL;
        if (json_object_object_get_ex(msg, "method", &m) &&
            json_object_is_type(m, json_type_string) &&
            strcmp(json_object_get_string(m), "echo") == 0) {
            /* The server's liveness probe: answer it, keep waiting. */
            json_object *params = NULL, *rid = NULL;
            json_object_object_get_ex(msg, "params", &params);
            json_object_object_get_ex(msg, "id", &rid);
            json_object *ans = json_object_new_object();
            json_object_object_add(ans, "result", json_object_get(params));
            json_object_object_add(ans, "error", NULL);
            json_object_object_add(ans, "id", json_object_get(rid));
            const char *a =
                json_object_to_json_string_ext(ans, JSON_C_TO_STRING_PLAIN);
            err = send_all(db, a, strlen(a), deadline);
            json_object_put(ans);
            json_object_put(msg);
            continue;
        }
        if (json_object_object_get_ex(msg, "id", &mid) &&
            json_object_is_type(mid, json_type_int) &&
            (unsigned)json_object_get_int64(mid) == id) {
            *reply = msg;
            return NULL;
        }
        /* Replies to requests that timed out earlier, notifications:
         * none is ours. */
        json_object_put(msg);
    }
    return err;
}

static struct xa_error *
request(struct xa_ovsdb *db, json_object *req, json_object **reply)
{
    pthread_mutex_lock(&db->lock);
    struct xa_error *err = connect_locked(db);
    if (!err) {
        err = call_locked(db, req, reply);
        req = NULL;
        if (err) {
            /* Whatever the server was doing, the stream is now out of
             * step with us: start afresh next time. */
            disconnect(db);
        }
    }
    pthread_mutex_unlock(&db->lock);
    if (req) {
        json_object_put(req);
    }
    return err;
}

struct xa_error *
xa_ovsdb_ping(struct xa_ovsdb *db)
{
    json_object *req = json_object_new_object();
    json_object_object_add(req, "method", json_object_new_string("echo"));
    json_object_object_add(req, "params", json_object_new_array());
    json_object *reply = NULL;
    struct xa_error *err = request(db, req, &reply);
    json_object_put(reply);
    return err;
}

struct xa_error *
xa_ovsdb_transact(struct xa_ovsdb *db, json_object *ops, json_object **ret)
{
    if (ret) {
        *ret = NULL;
    }
    json_object *params = json_object_new_array();
    json_object_array_add(params, json_object_new_string("Open_vSwitch"));
    size_t n = json_object_array_length(ops);
    for (size_t i = 0; i < n; i++) {
        json_object_array_add(
            params, json_object_get(json_object_array_get_idx(ops, i)));
    }
    json_object_put(ops);
    json_object *req = json_object_new_object();
    json_object_object_add(req, "method", json_object_new_string("transact"));
    json_object_object_add(req, "params", params);
    json_object *reply = NULL;
    struct xa_error *err = request(db, req, &reply);
    if (err) {
        return err;
    }
    json_object *e = NULL, *result = NULL;
    if (json_object_object_get_ex(reply, "error", &e) && e) {
        err = xa_error_internal("Open vSwitch database %s: %s", db->remote,
                                json_object_get_string(e));
    } else if (!json_object_object_get_ex(reply, "result", &result) ||
               !json_object_is_type(result, json_type_array)) {
        err = xa_error_internal("Open vSwitch database %s: reply without "
                                "result",
                                db->remote);
    } else {
        size_t rn = json_object_array_length(result);
        for (size_t i = 0; i < rn && !err; i++) {
            json_object *r = json_object_array_get_idx(result, i), *re = NULL;
            if (r && json_object_object_get_ex(r, "error", &re) && re) {
                json_object *det = NULL;
                json_object_object_get_ex(r, "details", &det);
                err = xa_error_internal(
                    "Open vSwitch database %s refused operation %zu: %s%s%s",
                    db->remote, i, json_object_get_string(re), det ? ": " : "",
                    det ? json_object_get_string(det) : "");
            }
        }
        if (!err && ret) {
            *ret = json_object_get(result);
        }
    }
    json_object_put(reply);
    return err;
}

json_object *
xa_ovsdb_str_set(const char *const *items)
{
    json_object *arr = json_object_new_array();
    for (; items && *items; items++) {
        json_object_array_add(arr, json_object_new_string(*items));
    }
    json_object *s = json_object_new_array();
    json_object_array_add(s, json_object_new_string("set"));
    json_object_array_add(s, arr);
    return s;
}

json_object *
xa_ovsdb_map(const char *const *kv)
{
    json_object *arr = json_object_new_array();
    for (; kv && kv[0]; kv += 2) {
        json_object *pair = json_object_new_array();
        json_object_array_add(pair, json_object_new_string(kv[0]));
        json_object_array_add(pair, json_object_new_string(kv[1]));
        json_object_array_add(arr, pair);
    }
    json_object *m = json_object_new_array();
    json_object_array_add(m, json_object_new_string("map"));
    json_object_array_add(m, arr);
    return m;
}

json_object *
xa_ovsdb_uuid(const char *kind, const char *u)
{
    json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_string(kind));
    json_object_array_add(a, json_object_new_string(u));
    return a;
}

json_object *
xa_ovsdb_where_eq(const char *column, const char *value)
{
    json_object *c = json_object_new_array();
    json_object_array_add(c, json_object_new_string(column));
    json_object_array_add(c, json_object_new_string("=="));
    json_object_array_add(c, json_object_new_string(value));
    json_object *w = json_object_new_array();
    json_object_array_add(w, c);
    return w;
}

const char *
xa_ovsdb_map_get(json_object *map, const char *key)
{
    if (!map || !json_object_is_type(map, json_type_array) ||
        json_object_array_length(map) != 2) {
        return NULL;
    }
    json_object *pairs = json_object_array_get_idx(map, 1);
    size_t n = json_object_array_length(pairs);
    for (size_t i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(pairs, i);
        if (json_object_array_length(p) == 2 &&
            strcmp(json_object_get_string(json_object_array_get_idx(p, 0)),
                   key) == 0) {
            return json_object_get_string(json_object_array_get_idx(p, 1));
        }
    }
    return NULL;
}
