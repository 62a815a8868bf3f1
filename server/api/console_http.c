/* console_http.c - CONNECT /console?ref=|uuid=<console>&session_id=...
 *
 * What xapi's clients (XenCenter, xe console, Xen Orchestra's proxies)
 * do to reach a VM's console: after "HTTP/1.1 200 OK" the connection
 * carries the console's raw stream both ways, vt100 text or RFB.  The
 * hypervisor backend says where the console listens (xa_hv_console: a
 * unix socket); this module relays bytes between it and the client on a
 * thread of its own, so no HTTP thread waits on a console.
 *
 * Text consoles first replay what the guest printed before the client
 * came (the backend's log next to the socket, "<name>.log" for
 * "<name>.sock", when it keeps one): a serial console only streams, and
 * a client connecting after boot would otherwise miss everything.
 *
 * Plain HTTP only for now: over HTTPS libmicrohttpd owns the TLS
 * session, and its upgrade support cannot answer CONNECT (see http.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/api.h"
#include "api/vm.h"
#include "call.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "pool/pool.h"
#include "rpc.h"
#include "session.h"

#define BACKLOG_MAX (64 * 1024)

struct relay {
    struct xa_http_request *req;
    int client, console;
    char *log; /* backlog file, or NULL */
};

static void
refuse(struct xa_http_request *r, int status, const char *text)
{
    xa_http_respond(r, status, "text/plain", xa_strdup(text), strlen(text));
}

static bool
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, 1000);
            continue;
        }
        if (w <= 0) {
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Sends what was appended to 'log_fd' since the last call. */
static bool
send_log(int client, int log_fd)
{
    char buf[8192];
    ssize_t n;
    while ((n = read(log_fd, buf, sizeof buf)) > 0) {
        if (!write_all(client, buf, (size_t)n)) {
            return false;
        }
    }
    return true;
}

static void *
relay_main(void *arg)
{
    struct relay *rl = arg;
    static const char ok[] = "HTTP/1.1 200 OK\r\n\r\n";
    bool alive = write_all(rl->client, ok, sizeof ok - 1);
    /* With a log, the guest's output is read from it rather than from
     * the socket: output made while QEMU was still accepting us would
     * otherwise be lost between the backlog and the live stream.  What
     * the socket sends is then drained and dropped. */
    int log_fd = rl->log ? open(rl->log, O_RDONLY | O_CLOEXEC) : -1;
    if (log_fd >= 0) {
        off_t size = lseek(log_fd, 0, SEEK_END);
        lseek(log_fd, size > BACKLOG_MAX ? size - BACKLOG_MAX : 0, SEEK_SET);
    }
    char buf[16384];
    while (alive) {
        if (log_fd >= 0) {
            alive = send_log(rl->client, log_fd);
        }
        struct pollfd p[2] = {{.fd = rl->client, .events = POLLIN},
                              {.fd = rl->console, .events = POLLIN}};
        if (poll(p, 2, log_fd >= 0 ? 20 : -1) < 0) {
            alive = alive && errno == EINTR;
            continue;
        }
        for (int i = 0; i < 2 && alive; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            ssize_t n = recv(p[i].fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            }
            if (n > 0 && i == 1 && log_fd >= 0) {
                continue; /* already sent from the log */
            }
            alive = n > 0 && write_all(i == 0 ? rl->console : rl->client, buf,
                                       (size_t)n);
        }
    }
    if (log_fd >= 0) {
        close(log_fd);
    }
    close(rl->client);
    close(rl->console);
    xa_http_hangup(rl->req);
    free(rl->log);
    free(rl);
    return NULL;
}

static int
connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void
console_handler(struct xa_http_request *r, void *ctx)
{
    XA_UNUSED(ctx);
    const char *sid = xa_http_query(r, "session_id");
    if (!sid) {
        sid = xa_http_cookie(r, "session_id");
    }
    if (!sid) {
        refuse(r, 401, "A session_id is required\n");
        return;
    }
    struct xa_call *call = xa_call_new("console", xa_http_remote_addr(r));
    struct xa_error *err = xa_session_check(sid, call);
    xa_call_free(call);
    if (err) {
        xa_error_free(err); /* a session of the master's, on a member? */
        err = xa_pool_check_session(sid, "");
    }
    if (err) {
        xa_error_free(err);
        refuse(r, 401, "Invalid session\n");
        return;
    }
    const char *key = xa_http_query(r, "ref");
    if (!key) {
        key = xa_http_query(r, "uuid");
    }
    struct xa_txn *t = xa_db_begin_read();
    char *con = NULL, *vm_uuid = NULL, *protocol = NULL;
    if (key && xa_db_exists(t, &xa_cls_console, key)) {
        con = xa_strdup(key);
    } else if (key) {
        con = xa_db_ref_by_uuid(t, &xa_cls_console, key);
    }
    if (con) {
        const char *vm =
            xa_api_str(t, &xa_cls_console, con, XA_F(xa_cls_console, "VM"));
        protocol = xa_strdup(xa_api_str(t, &xa_cls_console, con,
                                        XA_F(xa_cls_console, "protocol")));
        if (xa_db_exists(t, &xa_cls_VM, vm)) {
            vm_uuid = xa_strdup(
                xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "uuid")));
        }
    }
    xa_db_end(t);
    char *endpoint = NULL;
    bool text = protocol && strcmp(protocol, "vt100") == 0;
    if (vm_uuid) {
        err = xa_hv_console(
            vm_uuid, text ? XA_HV_CONSOLE_TEXT : XA_HV_CONSOLE_VNC, &endpoint);
        xa_error_free(err);
    }
    int console = -1;
    if (endpoint && xa_str_has_prefix(endpoint, "unix:")) {
        console = connect_unix(endpoint + 5);
    }
    int client = console >= 0 ? xa_http_take_socket(r) : -1;
    if (!con) {
        refuse(r, 404, "No such console\n");
    } else if (console < 0) {
        refuse(r, 503, "The console is not available\n");
    } else if (client < 0) {
        refuse(r, 501, "Console connections need plain HTTP here\n");
    } else {
        struct relay *rl = xa_calloc(1, sizeof *rl);
        rl->req = r;
        rl->client = client;
        rl->console = console;
        size_t el = strlen(endpoint);
        if (text && el > 5 && strcmp(endpoint + el - 5, ".sock") == 0) {
            rl->log = xa_asprintf("%.*s.log", (int)(el - 10), endpoint + 5);
        }
        /* Parked before the relay can finish and hang up. */
        xa_http_suspend(r);
        pthread_t th;
        if (pthread_create(&th, NULL, relay_main, rl) == 0) {
            pthread_detach(th);
            console = -1;
        } else {
            close(client);
            free(rl->log);
            free(rl);
            xa_http_hangup(r);
        }
    }
    if (console >= 0) {
        close(console);
    }
    free(con);
    free(vm_uuid);
    free(protocol);
    free(endpoint);
}

void
xa_console_http_init(void)
{
    xa_rpc_add_route("CONNECT", "/console", console_handler, NULL);
}
