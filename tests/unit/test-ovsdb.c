/* test-ovsdb.c - the OVSDB client against a scripted fake server: reply
 * framing (split and back-to-back messages), the server's echo probes,
 * bounded waits on a silent server, a refused connection, reconnecting
 * after the server hangs up, and failed operations reported as errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "network/ovsdb.h"

enum script {
    REPLY_SPLIT,  /* echo probe first, then the reply in two pieces */
    SILENT,       /* accepts, never answers */
    HANG_UP_ONCE, /* first connection: closes; second: answers */
    OP_ERROR,     /* the transaction fails */
};

struct fake {
    char path[108];
    int lfd;
    enum script script;
    pthread_t th;
    int accepted;
};

/* The id of the request in 'buf' ("id":N), or -1. */
static long
req_id(const char *buf)
{
    const char *p = strstr(buf, "\"id\":");
    return p ? strtol(p + 5, NULL, 10) : -1;
}

static void
serve_one(struct fake *f, int fd)
{
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n <= 0) {
        return;
    }
    buf[n] = '\0';
    long id = req_id(buf);
    char out[512];
    if (f->script == SILENT) {
        sleep(2);
        return;
    }
    if (f->script == HANG_UP_ONCE && f->accepted == 1) {
        return; /* close without answering */
    }
    if (f->script == REPLY_SPLIT) {
        const char *echo = "{\"method\":\"echo\",\"params\":[],\"id\":\"e1\"}";
        ssize_t w = write(fd, echo, strlen(echo));
        (void)w;
        /* Our answer to the probe must arrive before the reply. */
        n = read(fd, buf, sizeof buf - 1);
        assert_true(n > 0);
        buf[n] = '\0';
        assert_non_null(strstr(buf, "\"e1\""));
    }
    if (f->script == OP_ERROR) {
        snprintf(out, sizeof out,
                 "{\"id\":%ld,\"error\":null,\"result\":[{\"error\":"
                 "\"constraint violation\",\"details\":\"no such bridge\"}]}",
                 id);
    } else {
        snprintf(out, sizeof out,
                 "{\"id\":%ld,\"error\":null,\"result\":[{\"rows\":[{\"name\":"
                 "\"xenbr0\"}]}]}",
                 id);
    }
    size_t half = strlen(out) / 2;
    ssize_t w = write(fd, out, half);
    usleep(20000);
    w = write(fd, out + half, strlen(out) - half);
    (void)w;
}

static void *
fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) {
            return NULL;
        }
        f->accepted++;
        for (int i = 0; i < 4; i++) {
            serve_one(f, fd);
            if (f->script == HANG_UP_ONCE && f->accepted == 1) {
                break;
            }
        }
        close(fd);
    }
}

static void
fake_start(struct fake *f, enum script s)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "/tmp/xa-ovsdb-test-%d.sock", getpid());
    unlink(f->path);
    f->script = s;
    f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, f->path);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 4), 0);
    pthread_create(&f->th, NULL, fake_main, f);
}

static void
fake_stop(struct fake *f)
{
    shutdown(f->lfd, SHUT_RDWR);
    close(f->lfd);
    pthread_join(f->th, NULL);
    unlink(f->path);
}

static char *
remote_of(const struct fake *f)
{
    static char r[128];
    snprintf(r, sizeof r, "unix:%s", f->path);
    return r;
}

static json_object *
one_select(void)
{
    json_object *ops = json_object_new_array();
    json_object_array_add(
        ops, json_tokener_parse("{\"op\":\"select\",\"table\":\"Bridge\","
                                "\"where\":[]}"));
    return ops;
}

static void
test_split_reply_and_echo(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, REPLY_SPLIT);
    struct xa_ovsdb *db = xa_ovsdb_new(remote_of(&f), 2.0);
    json_object *res = NULL;
    struct xa_error *err = xa_ovsdb_transact(db, one_select(), &res);
    assert_null(err);
    assert_non_null(res);
    assert_non_null(strstr(json_object_to_json_string(res), "xenbr0"));
    json_object_put(res);
    assert_int_equal(xa_ovsdb_epoch(db), 1);
    xa_ovsdb_free(db);
    fake_stop(&f);
}

static void
test_silent_server_times_out(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, SILENT);
    struct xa_ovsdb *db = xa_ovsdb_new(remote_of(&f), 0.3);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    json_object *res = NULL;
    struct xa_error *err = xa_ovsdb_transact(db, one_select(), &res);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_non_null(err);
    assert_non_null(strstr(err->params[0], "no answer"));
    double took =
        (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    assert_true(took < 1.5);
    xa_error_free(err);
    xa_ovsdb_free(db);
    fake_stop(&f);
}

static void
test_refused(void **state)
{
    (void)state;
    struct xa_ovsdb *db =
        xa_ovsdb_new("unix:/tmp/xa-ovsdb-test-nobody-listens.sock", 1.0);
    struct xa_error *err = xa_ovsdb_ping(db);
    assert_non_null(err);
    assert_non_null(strstr(err->params[0], "not reachable"));
    xa_error_free(err);
    xa_ovsdb_free(db);
}

static void
test_reconnects_after_hang_up(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, HANG_UP_ONCE);
    struct xa_ovsdb *db = xa_ovsdb_new(remote_of(&f), 1.0);
    json_object *res = NULL;
    struct xa_error *err = xa_ovsdb_transact(db, one_select(), &res);
    assert_non_null(err); /* the server hung up on us */
    xa_error_free(err);
    err = xa_ovsdb_transact(db, one_select(), &res);
    assert_null(err);
    json_object_put(res);
    assert_int_equal(xa_ovsdb_epoch(db), 2);
    xa_ovsdb_free(db);
    fake_stop(&f);
}

static void
test_failed_operation_is_an_error(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, OP_ERROR);
    struct xa_ovsdb *db = xa_ovsdb_new(remote_of(&f), 1.0);
    json_object *res = NULL;
    struct xa_error *err = xa_ovsdb_transact(db, one_select(), &res);
    assert_non_null(err);
    assert_non_null(strstr(err->params[0], "no such bridge"));
    assert_null(res);
    xa_error_free(err);
    xa_ovsdb_free(db);
    fake_stop(&f);
}

static void
test_builders(void **state)
{
    (void)state;
    const char *kv[] = {"a", "1", "b", "2", NULL};
    json_object *m = xa_ovsdb_map(kv);
    assert_string_equal(
        json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN),
        "[\"map\",[[\"a\",\"1\"],[\"b\",\"2\"]]]");
    assert_string_equal(xa_ovsdb_map_get(m, "b"), "2");
    assert_null(xa_ovsdb_map_get(m, "c"));
    json_object_put(m);
    json_object *w = xa_ovsdb_where_eq("name", "xenbr0");
    assert_string_equal(
        json_object_to_json_string_ext(w, JSON_C_TO_STRING_PLAIN),
        "[[\"name\",\"==\",\"xenbr0\"]]");
    json_object_put(w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_reply_and_echo),
        cmocka_unit_test(test_silent_server_times_out),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_reconnects_after_hang_up),
        cmocka_unit_test(test_failed_operation_is_an_error),
        cmocka_unit_test(test_builders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
