/* dhcp.c - see dhcp.h. */
#include "network/dhcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hmap.h"
#include "log.h"
#include "network/netlink.h"
#include "self.h"
#include "util.h"

#define LOG_MODULE "dhcp"

/* One running client; owned by 'clients'. */
struct client {
    char *dev;
    pid_t pid;
    char *leases; /* the lease file */
    xa_dhcp_cb cb;
    struct xa_dhcp_lease applied; /* ip "" until the first lease */
    long long sig;                /* of the lease file when last read */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct xa_hmap clients; /* PIF ref -> struct client */
static pthread_t watcher;
static bool watcher_running, stopping;

/* --- lease files ------------------------------------------------------ */

/* Copies the value after 'key' up to ';' on the line at 'p' into 'out'. */
static void
take(const char *p, const char *key, char *out, size_t cap)
{
    p += strlen(key);
    while (*p == ' ') {
        p++;
    }
    size_t n = 0;
    while (p[n] && p[n] != ';' && p[n] != '\n') {
        n++;
    }
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(out, p, n);
    out[n] = '\0';
    /* "a, b" -> "a,b" */
    char *w = out;
    for (const char *r = out; *r; r++) {
        if (*r != ' ') {
            *w++ = *r;
        }
    }
    *w = '\0';
}

bool
xa_dhcp_parse_lease(const char *text, struct xa_dhcp_lease *out)
{
    memset(out, 0, sizeof *out);
    const char *last = NULL;
    for (const char *p = strstr(text, "lease {"); p;
         p = strstr(p + 1, "lease {")) {
        last = p;
    }
    if (!last) {
        return false;
    }
    const char *end = strchr(last, '}');
    for (const char *p = last; p && (!end || p < end);
         p = strchr(p + 1, '\n')) {
        while (*p == '\n' || *p == ' ' || *p == '\t') {
            p++;
        }
        if (xa_str_has_prefix(p, "fixed-address ")) {
            take(p, "fixed-address ", out->ip, sizeof out->ip);
        } else if (xa_str_has_prefix(p, "option subnet-mask ")) {
            take(p, "option subnet-mask ", out->netmask, sizeof out->netmask);
        } else if (xa_str_has_prefix(p, "option routers ")) {
            take(p, "option routers ", out->gateway, sizeof out->gateway);
            char *comma = strchr(out->gateway, ',');
            if (comma) {
                *comma = '\0'; /* the first router */
            }
        } else if (xa_str_has_prefix(p, "option domain-name-servers ")) {
            take(p, "option domain-name-servers ", out->dns, sizeof out->dns);
        }
    }
    struct in_addr a;
    return inet_pton(AF_INET, out->ip, &a) == 1 &&
           inet_pton(AF_INET, out->netmask, &a) == 1;
}

/* Puts the lease on the device. */
static struct xa_error *
apply(const char *dev, const struct xa_dhcp_lease *l)
{
    struct xa_error *err = xa_nl_flush_v4(dev);
    if (!err) {
        err = xa_nl_add_v4(dev, l->ip, xa_nl_prefix_len(l->netmask));
    }
    if (!err && *l->gateway) {
        err = xa_nl_default_route(dev, l->gateway);
    }
    return err;
}

/* The whole of a (small) file, NUL-terminated; NULL when unreadable. */
static char *
read_small_file(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = xa_malloc(cap);
    size_t k;
    while ((k = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += k;
        if (len + 1 == cap) {
            cap *= 2;
            buf = xa_realloc(buf, cap);
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* --- the watcher ------------------------------------------------------ */

/* Changes whenever the file is rewritten (time to the nanosecond, size). */
static long long
file_sig(const struct stat *st)
{
    return (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec +
           (long long)st->st_size * 31;
}

struct pending {
    char *pif, *dev;
    xa_dhcp_cb cb;
    struct xa_dhcp_lease lease;
};

/* Under 'lock': the clients whose lease file holds a new lease. */
static size_t
collect_changes(struct pending **out)
{
    size_t n = 0;
    *out = NULL;
    XA_HMAP_FOR_EACH (s, &clients) {
        struct client *c = s->val;
        struct stat st;
        if (stat(c->leases, &st) != 0 || file_sig(&st) == c->sig) {
            continue;
        }
        char *text = read_small_file(c->leases);
        if (!text) {
            continue;
        }
        struct xa_dhcp_lease l;
        bool ok = xa_dhcp_parse_lease(text, &l);
        free(text);
        if (!ok || memcmp(&l, &c->applied, sizeof l) == 0) {
            c->sig = file_sig(&st);
            continue;
        }
        *out = xa_realloc(*out, (n + 1) * sizeof **out);
        (*out)[n++] =
            (struct pending){xa_strdup(s->key), xa_strdup(c->dev), c->cb, l};
    }
    return n;
}

/* Records what was applied, unless the client changed meanwhile. */
static void
mark_applied(const struct pending *p)
{
    pthread_mutex_lock(&lock);
    struct client *c = xa_hmap_get(&clients, p->pif);
    struct stat st;
    if (c && strcmp(c->dev, p->dev) == 0) {
        c->applied = p->lease;
        if (stat(c->leases, &st) == 0) {
            c->sig = file_sig(&st);
        }
    }
    pthread_mutex_unlock(&lock);
}

static void *
watch_main(void *arg)
{
    XA_UNUSED(arg);
    pthread_mutex_lock(&lock);
    while (!stopping) {
        struct pending *ps = NULL;
        size_t n = collect_changes(&ps);
        pthread_mutex_unlock(&lock);
        for (size_t i = 0; i < n; i++) {
            struct xa_error *err = apply(ps[i].dev, &ps[i].lease);
            if (err) {
                xa_log_warn(LOG_MODULE, "%s: lease %s not applied: %s",
                            ps[i].dev, ps[i].lease.ip,
                            err->n_params ? err->params[0] : err->code);
                xa_error_free(err);
            } else {
                xa_log_info(LOG_MODULE, "%s: %s/%s via %s", ps[i].dev,
                            ps[i].lease.ip, ps[i].lease.netmask,
                            *ps[i].lease.gateway ? ps[i].lease.gateway : "-");
                /* Not recorded yet (the PIF's mode is being written):
                 * tried again at the next look. */
                if (!ps[i].cb || ps[i].cb(ps[i].pif, &ps[i].lease)) {
                    mark_applied(&ps[i]);
                }
            }
            free(ps[i].pif);
            free(ps[i].dev);
        }
        free(ps);
        pthread_mutex_lock(&lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (!stopping) {
            pthread_cond_timedwait(&wake, &lock, &ts);
        }
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* --- clients ---------------------------------------------------------- */

static const char *
dhclient_path(void)
{
    static const char *const candidates[] = {"/sbin/dhclient",
                                             "/usr/sbin/dhclient"};
    for (size_t i = 0; i < XA_ARRAY_SIZE(candidates); i++) {
        if (access(candidates[i], X_OK) == 0) {
            return candidates[i];
        }
    }
    return NULL;
}

static const char *
noop_script(void)
{
    return access("/bin/true", X_OK) == 0 ? "/bin/true" : "/usr/bin/true";
}

/* Ends a client: SIGTERM, then SIGKILL if it lingers; always reaped. */
static void
client_free(void *p)
{
    struct client *c = p;
    if (!c) {
        return;
    }
    if (c->pid > 0) {
        kill(c->pid, SIGTERM);
        int st;
        for (int i = 0; i < 100; i++) {
            if (waitpid(c->pid, &st, WNOHANG) != 0) {
                c->pid = 0;
                break;
            }
            usleep(10000);
        }
        if (c->pid > 0) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
        }
    }
    free(c->dev);
    free(c->leases);
    free(c);
}

/* The child: into the interfaces' namespace, then dhclient in the
 * foreground.  Only async-signal-safe calls between fork and exec. */
static void
exec_client(const char *ns, const char *const *argv, int logfd)
{
    if (ns) {
        int fd = open(ns, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
            _exit(126);
        }
    }
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) {
        dup2(nul, 0);
    }
    if (logfd >= 0) {
        dup2(logfd, 1);
        dup2(logfd, 2);
    }
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

struct xa_error *
xa_dhcp_start(const char *pif, const char *dev, xa_dhcp_cb cb)
{
    const char *client = dhclient_path();
    if (!client) {
        return xa_error_internal("no DHCP client: dhclient is not installed "
                                 "(Debian package isc-dhcp-client)");
    }
    xa_dhcp_stop(pif);
    const char *state = xa_self_state_dir();
    char *dir = xa_asprintf("%s/dhcp", state ? state : ".");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        struct xa_error *e =
            xa_error_internal("mkdir %s: %s", dir, strerror(errno));
        free(dir);
        return e;
    }
    char *leases = xa_asprintf("%s/%s.leases", dir, dev);
    char *pidf = xa_asprintf("%s/%s.pid", dir, dev);
    char *logf = xa_asprintf("%s/%s.log", dir, dev);
    free(dir);
    const char *argv[] = {client, "-d",        "-4",  "-sf",  noop_script(),
                          "-cf",  "/dev/null", "-lf", leases, "-pf",
                          pidf,   dev,         NULL};
    int logfd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    free(logf);
    const char *ns = xa_nl_netns();
    pid_t pid = fork();
    if (pid == 0) {
        exec_client(ns, argv, logfd);
    }
    if (logfd >= 0) {
        close(logfd);
    }
    free(pidf);
    if (pid < 0) {
        free(leases);
        return xa_error_internal("fork: %s", strerror(errno));
    }
    struct client *c = xa_malloc(sizeof *c);
    memset(c, 0, sizeof *c);
    c->dev = xa_strdup(dev);
    c->pid = pid;
    c->leases = leases;
    c->cb = cb;
    pthread_mutex_lock(&lock);
    client_free(xa_hmap_put(&clients, pif, c));
    if (!watcher_running) {
        stopping = false;
        watcher_running = pthread_create(&watcher, NULL, watch_main, NULL) == 0;
    }
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    xa_log_info(LOG_MODULE, "%s: dhclient started (pid %d)", dev, (int)pid);
    return NULL;
}

void
xa_dhcp_stop(const char *pif)
{
    pthread_mutex_lock(&lock);
    struct client *c = xa_hmap_remove(&clients, pif);
    pthread_mutex_unlock(&lock);
    client_free(c);
}

void
xa_dhcp_shutdown(void)
{
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    if (watcher_running) {
        pthread_join(watcher, NULL);
        watcher_running = false;
    }
    pthread_mutex_lock(&lock);
    xa_hmap_clear(&clients, client_free);
    pthread_mutex_unlock(&lock);
}
