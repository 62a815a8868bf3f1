/* test-qmp.c - the QMP client of the kvm backend (hypervisor/kvm/qmp.c)
 * against a real QEMU with no machine at all (-machine none: it starts
 * in milliseconds and runs no guest): the greeting and capabilities
 * negotiation, a command, an error reply, events arriving between
 * replies, passing a descriptor (getfd), timeouts, and the peer dying.  Skipped
 * when qemu-system-x86_64 is not installed (Debian: qemu-system-x86). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "hypervisor/kvm/qmp.h"
#include "util.h"

/* One QEMU per test, its monitor socket in a private directory. */
struct peer {
    pid_t pid;
    char dir[64];
    char sock[96];
};

static bool
have_qemu(void)
{
    return system("command -v qemu-system-x86_64 >/dev/null 2>&1") == 0;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Whether a socket listens on 'path': /proc/net/unix shows it with the
 * accepting flag (QEMU makes the file at bind(), before listen(): a
 * connect in between is refused). */
static bool
listening(const char *path)
{
    FILE *f = fopen("/proc/net/unix", "r");
    if (!f) {
        return false;
    }
    char line[512];
    bool found = false;
    size_t n = strlen(path);
    while (!found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        size_t len = strlen(line);
        unsigned long flags = 0;
        found = len > n && strcmp(line + len - n, path) == 0 &&
                line[len - n - 1] == ' ' &&
                sscanf(line, "%*s %*s %*s %lx", &flags) == 1 &&
                (flags & 0x10000) != 0;
    }
    fclose(f);
    return found;
}

static int
peer_start(void **state)
{
    if (!have_qemu()) {
        *state = NULL;
        return 0;
    }
    struct peer *p = calloc(1, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/xa-test-qmp-XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->sock, sizeof p->sock, "%s/qmp.sock", p->dir);
    char qmp[160];
    snprintf(qmp, sizeof qmp, "unix:%s,server=on,wait=off", p->sock);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "none",
               "-nodefaults", "-display", "none", "-qmp", qmp, (char *)NULL);
        _exit(127);
    }
    /* Until QEMU listens (a loaded box: allow 30 s). */
    for (int i = 0; i < 3000 && !listening(p->sock); i++) {
        sleep_ms(10);
    }
    *state = p;
    return 0;
}

static int
peer_stop(void **state)
{
    struct peer *p = *state;
    if (!p) {
        return 0;
    }
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
    }
    unlink(p->sock);
    rmdir(p->dir);
    free(p);
    return 0;
}

/* The peer, or a skip when there is no QEMU. */
static struct peer *
peer_of(void **state)
{
    if (!*state) {
        skip(); /* qemu-system-x86_64 is not installed */
    }
    return *state;
}

static struct xa_qmp *
open_ok(struct peer *p)
{
    struct xa_qmp *q = NULL;
    struct xa_error *err = xa_qmp_open(p->sock, 20, &q);
    if (err) {
        fail_msg("xa_qmp_open: %s", err->n_params ? err->params[0] : err->code);
    }
    assert_non_null(q);
    return q;
}

/* An error's first parameter (the message of an INTERNAL_ERROR). */
static const char *
msg_of(const struct xa_error *err)
{
    return err && err->n_params ? err->params[0] : "";
}

static void
test_parse_line(void **state)
{
    (void)state;
    static const char ok[] = "{\"return\": {}, \"id\": 3}\r\n";
    json_object *o = xa_qmp_parse_line(ok, sizeof ok - 1);
    assert_non_null(o);
    json_object *id = NULL;
    assert_true(json_object_object_get_ex(o, "id", &id));
    assert_int_equal(json_object_get_int64(id), 3);
    json_object_put(o);
    assert_null(xa_qmp_parse_line("[1, 2]\n", 7));
    assert_null(xa_qmp_parse_line("{\"return\": \n", 12));
    assert_null(xa_qmp_parse_line("\n", 1));
}

/* Greeting + qmp_capabilities (inside open), then a command's return. */
static void
test_greeting_and_command(void **state)
{
    struct peer *p = peer_of(state);
    struct xa_qmp *q = open_ok(p);
    json_object *ret = NULL;
    struct xa_error *err = xa_qmp_call(q, "query-version", NULL, 10, &ret);
    assert_null(err);
    json_object *qemu = NULL, *major = NULL;
    assert_true(json_object_object_get_ex(ret, "qemu", &qemu));
    assert_true(json_object_object_get_ex(qemu, "major", &major));
    assert_true(json_object_get_int(major) >= 2);
    json_object_put(ret);
    /* Arguments are sent (and taken by the call). */
    json_object *args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string("/machine"));
    err = xa_qmp_call(q, "qom-list", args, 10, &ret);
    assert_null(err);
    assert_true(json_object_is_type(ret, json_type_array));
    json_object_put(ret);
    /* A caller not wanting the return value. */
    assert_null(xa_qmp_call(q, "query-status", NULL, 10, NULL));
    xa_qmp_close(q);
}

/* QEMU's error reply becomes INTERNAL_ERROR with its class and text; the
 * connection stays usable. */
static void
test_error_reply(void **state)
{
    struct peer *p = peer_of(state);
    struct xa_qmp *q = open_ok(p);
    json_object *ret = NULL;
    struct xa_error *err = xa_qmp_call(q, "no-such-command", NULL, 10, &ret);
    assert_non_null(err);
    assert_null(ret);
    assert_string_equal(err->code, "INTERNAL_ERROR");
    assert_non_null(strstr(msg_of(err), "no-such-command"));
    assert_non_null(strstr(msg_of(err), "CommandNotFound"));
    xa_error_free(err);
    json_object *args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string("/nowhere"));
    err = xa_qmp_call(q, "qom-list", args, 10, NULL);
    assert_non_null(err);
    assert_non_null(strstr(msg_of(err), "DeviceNotFound"));
    xa_error_free(err);
    assert_null(xa_qmp_call(q, "query-status", NULL, 10, NULL));
    xa_qmp_close(q);
}

/* 'stop' and 'cont' emit STOP and RESUME while the client waits for
 * their replies: both are kept for xa_qmp_wait_event(), in any order,
 * and each is handed out once. */
static void
test_events_between_replies(void **state)
{
    struct peer *p = peer_of(state);
    struct xa_qmp *q = open_ok(p);
    assert_null(xa_qmp_call(q, "stop", NULL, 10, NULL));
    assert_null(xa_qmp_call(q, "cont", NULL, 10, NULL));
    assert_null(xa_qmp_call(q, "query-status", NULL, 10, NULL));
    json_object *data = NULL;
    assert_true(xa_qmp_wait_event(q, "RESUME", 5, &data));
    json_object_put(data);
    assert_true(xa_qmp_wait_event(q, "STOP", 5, NULL));
    /* Handed out once: a second wait times out. */
    double t0 = xa_monotonic();
    assert_false(xa_qmp_wait_event(q, "STOP", 0.3, NULL));
    assert_true(xa_monotonic() - t0 >= 0.25);
    /* An event arriving while waiting for it. */
    assert_null(xa_qmp_call(q, "stop", NULL, 10, NULL));
    assert_true(xa_qmp_wait_event(q, "STOP", 5, NULL));
    xa_qmp_close(q);
}

/* A descriptor passed along with getfd (SCM_RIGHTS) is QEMU's under its
 * name: closefd finds it once. */
static void
test_pass_fd(void **state)
{
    struct peer *p = peer_of(state);
    struct xa_qmp *q = open_ok(p);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    json_object *a = json_object_new_object();
    json_object_object_add(a, "fdname", json_object_new_string("pipe"));
    assert_null(xa_qmp_call_fd(q, "getfd", a, fds[1], 10, NULL));
    close(fds[1]);
    a = json_object_new_object();
    json_object_object_add(a, "fdname", json_object_new_string("pipe"));
    assert_null(xa_qmp_call(q, "closefd", a, 10, NULL));
    /* QEMU closed its copy: the pipe has no writer left. */
    char c;
    assert_int_equal(read(fds[0], &c, 1), 0);
    close(fds[0]);
    a = json_object_new_object();
    json_object_object_add(a, "fdname", json_object_new_string("pipe"));
    struct xa_error *err = xa_qmp_call(q, "closefd", a, 10, NULL);
    assert_non_null(err);
    xa_error_free(err);
    /* getfd without a descriptor is QEMU's error, not a hang. */
    a = json_object_new_object();
    json_object_object_add(a, "fdname", json_object_new_string("none"));
    err = xa_qmp_call(q, "getfd", a, 10, NULL);
    assert_non_null(err);
    xa_error_free(err);
    xa_qmp_close(q);
}

/* The peer goes away: calls fail (no hang), waits end. */
static void
test_peer_dies(void **state)
{
    struct peer *p = peer_of(state);
    struct xa_qmp *q = open_ok(p);
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = -1;
    double t0 = xa_monotonic();
    struct xa_error *err = xa_qmp_call(q, "query-status", NULL, 10, NULL);
    assert_non_null(err);
    assert_true(strstr(msg_of(err), "closed the monitor") ||
                strstr(msg_of(err), "write"));
    xa_error_free(err);
    assert_false(xa_qmp_wait_event(q, "SHUTDOWN", 10, NULL));
    assert_true(xa_monotonic() - t0 < 5);
    xa_qmp_close(q);
    /* Nobody listens any more. */
    struct xa_qmp *q2 = NULL;
    err = xa_qmp_open(p->sock, 1, &q2);
    assert_non_null(err);
    assert_null(q2);
    assert_non_null(strstr(msg_of(err), "QMP connect"));
    xa_error_free(err);
}

/* 'quit': the reply, then SHUTDOWN, then the end of the connection. */
static void
test_quit(void **state)
{
    struct peer *p = peer_of(state);
    struct xa_qmp *q = open_ok(p);
    assert_null(xa_qmp_call(q, "quit", NULL, 10, NULL));
    assert_true(xa_qmp_wait_event(q, "SHUTDOWN", 10, NULL));
    int status = 0;
    assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
    p->pid = -1;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct xa_error *err = xa_qmp_call(q, "query-status", NULL, 10, NULL);
    assert_non_null(err);
    xa_error_free(err);
    xa_qmp_close(q);
}

/* A fake peer: a unix socket listening in a private directory, which
 * says nothing unless the test makes it. */
struct fake {
    char dir[32];
    char path[64];
    int fd;
};

static void
fake_open(struct fake *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/xa-test-qmp-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/fake.sock", f->dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    f->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->fd >= 0);
    assert_int_equal(bind(f->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->fd, 1), 0);
}

static void
fake_close(struct fake *f)
{
    close(f->fd);
    unlink(f->path);
    rmdir(f->dir);
}

/* A socket whose peer never greets: open gives up at its timeout. */
static void
test_no_greeting(void **state)
{
    (void)state;
    struct fake f;
    fake_open(&f);
    double t0 = xa_monotonic();
    struct xa_qmp *q = NULL;
    struct xa_error *err = xa_qmp_open(f.path, 0.3, &q);
    assert_non_null(err);
    assert_null(q);
    assert_non_null(strstr(msg_of(err), "no answer"));
    assert_true(xa_monotonic() - t0 < 5);
    xa_error_free(err);
    fake_close(&f);
}

/* A peer that sends an event before its greeting (QEMU 7.2 does when a
 * client connects as the guest starts): the event is kept, the greeting
 * and the negotiation still work. */
static void
test_event_before_greeting(void **state)
{
    (void)state;
    struct fake f;
    fake_open(&f);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int c = accept(f.fd, NULL, NULL);
        const char *hello =
            "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, "
            "\"event\": \"RESUME\"}\r\n"
            "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
        if (c < 0 || write(c, hello, strlen(hello)) < 0) {
            _exit(1);
        }
        char buf[256], ch;
        if (read(c, buf, sizeof buf) <= 0) { /* qmp_capabilities */
            _exit(1);
        }
        const char *ok = "{\"return\": {}, \"id\": 1}\r\n";
        if (write(c, ok, strlen(ok)) < 0) {
            _exit(1);
        }
        while (read(c, &ch, 1) == 1) {
        }
        _exit(0);
    }
    struct xa_qmp *q = NULL;
    struct xa_error *err = xa_qmp_open(f.path, 5, &q);
    if (err) {
        fail_msg("xa_qmp_open: %s", msg_of(err));
    }
    assert_true(xa_qmp_wait_event(q, "RESUME", 0.1, NULL));
    xa_qmp_close(q);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    fake_close(&f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_line),
        cmocka_unit_test(test_no_greeting),
        cmocka_unit_test(test_event_before_greeting),
        cmocka_unit_test_setup_teardown(test_greeting_and_command, peer_start,
                                        peer_stop),
        cmocka_unit_test_setup_teardown(test_error_reply, peer_start,
                                        peer_stop),
        cmocka_unit_test_setup_teardown(test_events_between_replies, peer_start,
                                        peer_stop),
        cmocka_unit_test_setup_teardown(test_pass_fd, peer_start, peer_stop),
        cmocka_unit_test_setup_teardown(test_peer_dies, peer_start, peer_stop),
        cmocka_unit_test_setup_teardown(test_quit, peer_start, peer_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
