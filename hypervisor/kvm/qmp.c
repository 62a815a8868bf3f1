/* qmp.c - see qmp.h. */
#include "hypervisor/kvm/qmp.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

/* Events kept while waiting for replies; QEMU emits few per operation. */
#define MAX_EVENTS 32

struct xa_qmp {
    int fd;
    struct xa_buf in; /* bytes read but not yet parsed into lines */
    json_object *events[MAX_EVENTS];
    size_t n_events;
    unsigned next_id;
};

json_object *
xa_qmp_parse_line(const char *line, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, line, (int)len);
    json_tokener_free(tok);
    if (o && !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

static int
remaining_ms(double deadline)
{
    double left = deadline - xa_monotonic();
    return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

/* The next JSON object from the monitor, or NULL on timeout, EOF or a
 * broken line ('*err' says which). */
static json_object *
read_object(struct xa_qmp *q, double deadline, struct xa_error **err)
{
    for (;;) {
        char *nl = q->in.data ? memchr(q->in.data, '\n', q->in.len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->in.data) + 1;
            json_object *o = xa_qmp_parse_line(q->in.data, n);
            memmove(q->in.data, q->in.data + n, q->in.len - n);
            q->in.len -= n;
            if (o) {
                return o;
            }
            continue; /* blank or garbage line: QEMU never sends one */
        }
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        int r = poll(&p, 1, remaining_ms(deadline));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r == 0) {
            *err = xa_error_internal("QMP: no answer from QEMU in time");
            return NULL;
        }
        xa_buf_reserve(&q->in, 4096);
        ssize_t got = read(q->fd, q->in.data + q->in.len, 4096);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            *err = xa_error_internal("QMP: QEMU closed the monitor");
            return NULL;
        }
        q->in.len += (size_t)got;
    }
}

static void
keep_event(struct xa_qmp *q, json_object *o)
{
    if (q->n_events == MAX_EVENTS) {
        json_object_put(q->events[0]);
        memmove(q->events, q->events + 1,
                (MAX_EVENTS - 1) * sizeof q->events[0]);
        q->n_events--;
    }
    q->events[q->n_events++] = o;
}

static struct xa_error *
send_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return xa_error_internal("QMP: write: %s", strerror(errno));
        }
        s += w;
        n -= (size_t)w;
    }
    return NULL;
}

/* Sends 'line' with the file descriptor 'fd' attached (SCM_RIGHTS), the
 * way QMP's getfd and add-fd receive descriptors. */
static struct xa_error *
send_with_fd(int sock, const char *line, size_t n, int fd)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = (void *)line, .iov_len = n};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t w;
    do {
        w = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w <= 0) {
        return xa_error_internal("QMP: sendmsg: %s", strerror(errno));
    }
    /* The descriptor went with the first byte; the rest is plain. */
    return send_all(sock, line + w, n - (size_t)w);
}

struct xa_error *
xa_qmp_open(const char *path, double timeout, struct xa_qmp **ret)
{
    *ret = NULL;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        return xa_error_internal("QMP socket path too long: %s", path);
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return xa_error_internal("socket: %s", strerror(errno));
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        struct xa_error *e =
            xa_error_internal("QMP connect %s: %s", path, strerror(errno));
        close(fd);
        return e;
    }
    struct xa_qmp *q = xa_calloc(1, sizeof *q);
    q->fd = fd;
    double deadline = xa_monotonic() + timeout;
    struct xa_error *err = NULL;
    json_object *greeting = read_object(q, deadline, &err);
    /* QEMU 7.2 may put an event (RESUME, as a guest starts) before the
     * greeting of a client that connects in the same instant */
    while (greeting && !json_object_object_get_ex(greeting, "QMP", NULL) &&
           json_object_object_get_ex(greeting, "event", NULL)) {
        keep_event(q, greeting);
        greeting = read_object(q, deadline, &err);
    }
    if (greeting && !json_object_object_get_ex(greeting, "QMP", NULL)) {
        err = xa_error_internal("QMP: unexpected greeting: %.200s",
                                json_object_to_json_string(greeting));
    }
    json_object_put(greeting);
    if (!err) {
        err = xa_qmp_call(q, "qmp_capabilities", NULL,
                          remaining_ms(deadline) / 1000.0, NULL);
    }
    if (err) {
        xa_qmp_close(q);
        return err;
    }
    *ret = q;
    return NULL;
}

void
xa_qmp_close(struct xa_qmp *q)
{
    if (!q) {
        return;
    }
    close(q->fd);
    xa_buf_free(&q->in);
    for (size_t i = 0; i < q->n_events; i++) {
        json_object_put(q->events[i]);
    }
    free(q);
}

struct xa_error *
xa_qmp_call(struct xa_qmp *q, const char *command, json_object *args,
            double timeout, json_object **ret)
{
    return xa_qmp_call_fd(q, command, args, -1, timeout, ret);
}

struct xa_error *
xa_qmp_call_fd(struct xa_qmp *q, const char *command, json_object *args, int fd,
               double timeout, json_object **ret)
{
    if (ret) {
        *ret = NULL;
    }
    /* An id lets us tell our answer from a late one to an earlier
     * command that timed out on this connection. */
    unsigned id = ++q->next_id;
    json_object *req = json_object_new_object();
    json_object_object_add(req, "execute", json_object_new_string(command));
    if (args) {
        json_object_object_add(req, "arguments", args);
    }
    json_object_object_add(req, "id", json_object_new_int64(id));
    const char *text =
        json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
    char *line = xa_asprintf("%s\n", text);
    json_object_put(req);
    struct xa_error *err = fd >= 0 ? send_with_fd(q->fd, line, strlen(line), fd)
                                   : send_all(q->fd, line, strlen(line));
    free(line);
    double deadline = xa_monotonic() + timeout;
    while (!err) {
        json_object *o = read_object(q, deadline, &err);
        if (!o) {
            break;
        }
        if (json_object_object_get_ex(o, "event", NULL)) {
            keep_event(q, o);
            continue;
        }
        json_object *oid = NULL;
        if (!json_object_object_get_ex(o, "id", &oid) ||
            json_object_get_int64(oid) != (int64_t)id) {
            json_object_put(o);
            continue;
        }
        json_object *v = NULL;
        if (json_object_object_get_ex(o, "error", &v)) {
            json_object *cls = NULL, *desc = NULL;
            json_object_object_get_ex(v, "class", &cls);
            json_object_object_get_ex(v, "desc", &desc);
            err = xa_error_internal("QEMU %s: %s: %s", command,
                                    cls ? json_object_get_string(cls) : "Error",
                                    desc ? json_object_get_string(desc)
                                         : "(no description)");
        } else if (ret && json_object_object_get_ex(o, "return", &v)) {
            *ret = json_object_get(v);
        }
        json_object_put(o);
        return err;
    }
    return err;
}

bool
xa_qmp_wait_event(struct xa_qmp *q, const char *name, double timeout,
                  json_object **data)
{
    if (data) {
        *data = NULL;
    }
    double deadline = xa_monotonic() + timeout;
    for (;;) {
        for (size_t i = 0; i < q->n_events; i++) {
            json_object *ev = NULL;
            json_object_object_get_ex(q->events[i], "event", &ev);
            if (ev && strcmp(json_object_get_string(ev), name) == 0) {
                json_object *d = NULL;
                if (data &&
                    json_object_object_get_ex(q->events[i], "data", &d)) {
                    *data = json_object_get(d);
                }
                json_object_put(q->events[i]);
                memmove(q->events + i, q->events + i + 1,
                        (q->n_events - i - 1) * sizeof q->events[0]);
                q->n_events--;
                return true;
            }
        }
        struct xa_error *err = NULL;
        json_object *o = read_object(q, deadline, &err);
        if (!o) {
            xa_error_free(err);
            return false;
        }
        if (json_object_object_get_ex(o, "event", NULL)) {
            keep_event(q, o);
        } else {
            json_object_put(o);
        }
    }
}
