/* kvm.c - the QEMU backend: one qemu-system-x86_64 per domain (KVM where
 * the guest can use it, TCG otherwise).  See kvm.h for the files it keeps.
 *
 * Processes.  QEMU is forked by xapid itself and stays its child, so its
 * exit is seen at once (PID 1 on these machines takes 1.4-1.9 s to reap
 * orphans).  Each QEMU runs in a session of its own so that signals aimed
 * at xapid's process group miss it and it outlives xapid.  Exits are
 * watched with pidfds on one monitor thread; for our own children it then
 * reaps with waitpid() on that very pid (never waitpid(-1): other modules
 * have children too).  After a restart the QEMUs are no longer our
 * children: init() finds them again from their meta files (checking the
 * pid still runs a QEMU with that VM's uuid, against pid reuse), watches
 * them with pidfds as well (a pidfd works for any process) and leaves the
 * reaping to PID 1.
 *
 * Operations.  One QMP connection per operation (QEMU's monitor serves
 * one client at a time), operations on one domain serialised by its
 * mutex.  The power state xapid reports is cached from what the
 * operations did, so list() and get_info() never wait for a busy
 * monitor.  A QEMU that exits without being asked (the guest powered
 * off, QEMU crashed) takes its VM to Halted in the database when no
 * operation is in charge of it.
 *
 * Devices.  Taps are created here (non-persistent, so they disappear with
 * the QEMU that holds them: a dead QEMU leaves no stray tap), handed to
 * QEMU as file descriptors and put on the network's bridge with
 * xa_net_plug_vif().  They are made in the network backend's namespace
 * (--net-namespace; a tap lives where /dev/net/tun was opened), where
 * ovs-vswitchd's userspace datapath can open them.  Hot-plug: q35
 * domains get spare PCIe root ports (hp0..), VBD.plug is blockdev-add +
 * device_add, VIF.plug a new tap passed with getfd + netdev_add +
 * device_add; unplug waits for the guest to release the device. */
#include "hypervisor/kvm/kvm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/vm.h"
#include "hypervisor/kvm/qmp.h"
#include "log.h"
#include "network/net.h"
#include "network/netlink.h"
#include "self.h"
#include "util.h"

#ifndef SYS_pidfd_open
#    define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#    define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#    define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define MOD                "kvm"
#define MIB                ((int64_t)1 << 20)
/* How long QEMU may take to open its monitor; TCG on a loaded CI box is
 * slow to start, but not this slow. */
#define QMP_START_TIMEOUT  20.0
#define QMP_TIMEOUT        10.0
#define EXIT_TIMEOUT       10.0
#define MIGRATE_TIMEOUT    600.0
/* How long a guest may take to let go of a device on unplug (Linux's
 * PCIe hot-plug waits 5 s for a cancel before it acts). */
#define UNPLUG_TIMEOUT     20.0
/* q35: PCIe root ports for the virtio disks and NICs of these device
 * numbers (see device_port()). */
#define DISK_PORTS         6
#define NIC_PORTS          4
/* storage motion: the dirty-bitmap granularity of a disk mirror */
#define MIRROR_GRANULARITY (1024 * 1024)

struct kvm_dom {
    char uuid[37];
    int64_t domid;
    pid_t pid;
    int pidfd;
    bool child;    /* forked by this xapid: reap it */
    bool exited;   /* set by the monitor once everything is cleaned up */
    bool expected; /* an operation asked it to go */
    bool incoming; /* -incoming fd: may still be loading (migrate_receive) */
    bool nbd;      /* disk_export: its NBD server runs until the guest does */
    enum xa_hv_state state;
    int refs; /* list + monitor + callers; under 'lock' */
    char *dir;
    int64_t memory; /* bytes */
    int64_t vcpus;
    double start_time;
    char **vifs; /* refs of the VIFs put on bridges */
    size_t n_vifs;
    bool have_stats;
    struct xa_kvm_migration_stats stats;
    pthread_mutex_t op; /* one QMP user at a time */
    struct kvm_dom *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static struct kvm_dom *doms; /* live domains, under 'lock' */
static int64_t next_domid = 1;
static char *accel_default;
static char *base_dir; /* <state-dir>/kvm */
static int epfd = -1, wakefd = -1;
static pthread_t monitor;
static bool monitor_running;
/* Finished migrations, kept after their domain is gone. */
static struct migration_rec {
    char uuid[37];
    struct xa_kvm_migration_stats s;
} last_migrations[16];
static size_t n_last_migrations;

/* ---- small helpers --------------------------------------------------- */

static void
dom_unref(struct kvm_dom *d)
{
    pthread_mutex_lock(&lock);
    bool last = --d->refs == 0;
    pthread_mutex_unlock(&lock);
    if (!last) {
        return;
    }
    free(d->dir);
    for (size_t i = 0; i < d->n_vifs; i++) {
        free(d->vifs[i]);
    }
    free(d->vifs);
    pthread_mutex_destroy(&d->op);
    free(d);
}

/* The live domain 'uuid' with a reference for the caller, or NULL. */
static struct kvm_dom *
dom_get(const char *uuid)
{
    pthread_mutex_lock(&lock);
    struct kvm_dom *d = doms;
    while (d && strcmp(d->uuid, uuid) != 0) {
        d = d->next;
    }
    if (d) {
        d->refs++;
    }
    pthread_mutex_unlock(&lock);
    return d;
}

static struct xa_error *
no_domain(const char *uuid)
{
    return xa_error_internal("no running domain for VM %s", uuid);
}

static char *
dom_file(const struct kvm_dom *d, const char *name)
{
    return xa_asprintf("%s/%s", d->dir, name);
}

/* The last lines QEMU wrote to stderr, for error messages. */
static char *
qemu_log_tail(const char *uuid)
{
    char *path = xa_asprintf("%s/%s.qemu.log", base_dir, uuid);
    FILE *f = fopen(path, "r");
    free(path);
    char buf[600];
    size_t n = 0;
    if (f) {
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0,
              SEEK_SET);
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    for (char *p = buf; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    return xa_utf8_sanitize(buf, strlen(buf));
}

static void
rm_rf_flat(const char *dir)
{
    DIR *dh = opendir(dir);
    if (!dh) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(dh))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            char *p = xa_asprintf("%s/%s", dir, e->d_name);
            unlink(p);
            free(p);
        }
    }
    closedir(dh);
    rmdir(dir);
}

/* Commas in QEMU option values are escaped by doubling them. */
static char *
qemu_escape(const char *s)
{
    struct xa_buf b = {0};
    for (; *s; s++) {
        if (*s == ',') {
            xa_buf_putc(&b, ',');
        }
        xa_buf_putc(&b, *s);
    }
    return b.data ? xa_buf_steal(&b) : xa_strdup("");
}

/* Single-quotes 's' for /bin/sh (QEMU's exec: migration URIs). */
static char *
sh_quote(const char *s)
{
    struct xa_buf b = {0};
    xa_buf_putc(&b, '\'');
    for (; *s; s++) {
        if (*s == '\'') {
            xa_buf_puts(&b, "'\\''");
        } else {
            xa_buf_putc(&b, *s);
        }
    }
    xa_buf_putc(&b, '\'');
    return xa_buf_steal(&b);
}

static const char *
platform_get(const struct xa_hv_domain_config *cfg, const char *key)
{
    for (const char *const *p = cfg->platform; p && p[0] && p[1]; p += 2) {
        if (strcmp(p[0], key) == 0) {
            return p[1];
        }
    }
    return NULL;
}

static bool
file_starts_with(const char *path, const char *magic, size_t n)
{
    char buf[8] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    ssize_t got = read(fd, buf, n);
    close(fd);
    return got == (ssize_t)n && memcmp(buf, magic, n) == 0;
}

static const char *
host_accel(void)
{
    const char *a = accel_default ? accel_default : "auto";
    if (strcmp(a, "auto") != 0) {
        return a;
    }
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return "tcg";
    }
    close(fd);
    return "kvm";
}

void
xa_kvm_configure(const char *accel)
{
    free(accel_default);
    accel_default = accel ? xa_strdup(accel) : NULL;
}

bool
xa_kvm_last_migration(const char *uuid, struct xa_kvm_migration_stats *out)
{
    bool found = false;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n_last_migrations; i++) {
        if (strcmp(last_migrations[i].uuid, uuid) == 0) {
            *out = last_migrations[i].s;
            found = true;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

static void
remember_migration(const char *uuid, const struct xa_kvm_migration_stats *s)
{
    pthread_mutex_lock(&lock);
    if (n_last_migrations == XA_ARRAY_SIZE(last_migrations)) {
        memmove(last_migrations, last_migrations + 1,
                sizeof last_migrations - sizeof last_migrations[0]);
        n_last_migrations--;
    }
    snprintf(last_migrations[n_last_migrations].uuid, 37, "%s", uuid);
    last_migrations[n_last_migrations++].s = *s;
    pthread_mutex_unlock(&lock);
}

/* ---- the meta file ------------------------------------------------------ */

static void
meta_write(const struct kvm_dom *d)
{
    char *path = dom_file(d, "meta"), *tmp = dom_file(d, "meta.tmp");
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "pid=%d\ndomid=%lld\nstart=%.3f\nmemory=%lld\nvcpus=%lld\n",
                (int)d->pid, (long long)d->domid, d->start_time,
                (long long)d->memory, (long long)d->vcpus);
        for (size_t i = 0; i < d->n_vifs; i++) {
            fprintf(f, "vif=%s\n", d->vifs[i]);
        }
        if (fclose(f) == 0) {
            rename(tmp, path);
        }
    }
    free(path);
    free(tmp);
}

/* ---- exits ------------------------------------------------------------ */

/* A QEMU nobody asked to stop has gone: its VM is Halted, unless an
 * operation on it is running (that operation reports the failure). */
static void *
halt_in_db(void *arg)
{
    char *uuid = arg;
    struct xa_txn *t = xa_db_begin_write();
    char *vm = xa_db_ref_by_uuid(t, &xa_cls_VM, uuid);
    struct xa_error *err = NULL;
    bool done = false;
    if (vm) {
        const struct xa_value *ops = xa_db_peek_field(
            t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "current_operations"));
        const char *ps =
            xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
        bool busy = ops && ops->kind == XA_STRUCT && ops->u.st.n > 0;
        if (!busy &&
            (strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0)) {
            err = xa_vm_force_state(t, vm, "Halted");
            if (!err) {
                err = xa_vm_update_allowed(t, vm);
            }
            done = !err;
        }
    }
    err = xa_api_finish(t, err);
    if (err) {
        xa_log_warn(MOD, "VM %s: cannot record its halt: %s", uuid, err->code);
        xa_error_free(err);
    } else if (done) {
        xa_log_info(MOD, "VM %s is now Halted", uuid);
        xa_vm_refresh_host_memory();
    }
    free(vm);
    free(uuid);
    return NULL;
}

/* On the monitor thread: 'd' has exited. */
static void
dom_exited(struct kvm_dom *d)
{
    int status = 0;
    bool reaped = false;
    if (d->child) {
        reaped = waitpid(d->pid, &status, 0) == d->pid;
    }
    /* Under the lock: dom_kill() signals through this pidfd, and a closed
     * descriptor number may soon name another domain's pidfd. */
    pthread_mutex_lock(&lock);
    epoll_ctl(epfd, EPOLL_CTL_DEL, d->pidfd, NULL);
    close(d->pidfd);
    d->pidfd = -1;
    /* Taken under the lock: a hot-plug (dom_track_vif) may be changing
     * the list right now. */
    char **vifs = d->vifs;
    size_t n_vifs = d->n_vifs;
    d->vifs = NULL;
    d->n_vifs = 0;
    pthread_mutex_unlock(&lock);
    for (size_t i = 0; i < n_vifs; i++) {
        struct xa_error *err = xa_net_unplug_vif(vifs[i]);
        if (err) {
            xa_log_warn(MOD, "VM %s: unplugging VIF %s: %s", d->uuid, vifs[i],
                        err->code);
            xa_error_free(err);
        }
        free(vifs[i]);
    }
    free(vifs);
    rm_rf_flat(d->dir);
    pthread_mutex_lock(&lock);
    bool expected = d->expected;
    for (struct kvm_dom **p = &doms; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            d->refs--; /* the list's reference */
            break;
        }
    }
    d->exited = true;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    if (!expected) {
        char *tail = qemu_log_tail(d->uuid);
        if (reaped && WIFSIGNALED(status)) {
            xa_log_warn(MOD, "VM %s: QEMU (pid %d) killed by signal %d: %s",
                        d->uuid, (int)d->pid, WTERMSIG(status), tail);
        } else {
            xa_log_info(MOD, "VM %s: QEMU (pid %d) exited (status %d): %s",
                        d->uuid, (int)d->pid, reaped ? WEXITSTATUS(status) : -1,
                        tail);
        }
        free(tail);
        pthread_t th;
        if (pthread_create(&th, NULL, halt_in_db, xa_strdup(d->uuid)) == 0) {
            pthread_detach(th);
        }
    }
    dom_unref(d); /* the monitor's reference */
}

static void *
monitor_main(void *arg)
{
    XA_UNUSED(arg);
    for (;;) {
        struct epoll_event ev[16];
        int n = epoll_wait(epfd, ev, 16, -1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            xa_log_err(MOD, "epoll_wait: %s", strerror(errno));
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.ptr == NULL) {
                return NULL; /* fini() */
            }
            dom_exited(ev[i].data.ptr);
        }
    }
}

/* Adds 'd' to the list and the monitor (which each hold a reference). */
static struct xa_error *
dom_watch(struct kvm_dom *d)
{
    d->pidfd = (int)syscall(SYS_pidfd_open, d->pid, 0);
    if (d->pidfd < 0) {
        return xa_error_internal("pidfd_open(%d): %s", (int)d->pid,
                                 strerror(errno));
    }
    fcntl(d->pidfd, F_SETFD, FD_CLOEXEC);
    pthread_mutex_lock(&lock);
    d->refs += 2;
    d->next = doms;
    doms = d;
    pthread_mutex_unlock(&lock);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = d};
    epoll_ctl(epfd, EPOLL_CTL_ADD, d->pidfd, &ev);
    return NULL;
}

/* Waits until the monitor has seen 'd' exit and cleaned up after it. */
static bool
wait_exit(struct kvm_dom *d, double timeout)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = (double)ts.tv_sec + ts.tv_nsec / 1e9 + timeout;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&lock);
    while (!d->exited) {
        if (pthread_cond_timedwait(&changed, &lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    bool gone = d->exited;
    pthread_mutex_unlock(&lock);
    return gone;
}

/* Kills the QEMU of 'd' and waits for it to be gone. */
static void
dom_kill(struct kvm_dom *d)
{
    pthread_mutex_lock(&lock);
    d->expected = true;
    bool gone = d->exited;
    /* pidfd_send_signal cannot hit a recycled pid; a closed pidfd means
     * the process is already gone. */
    if (!gone && d->pidfd >= 0) {
        syscall(SYS_pidfd_send_signal, d->pidfd, SIGKILL, NULL, 0);
    }
    pthread_mutex_unlock(&lock);
    if (!gone) {
        if (!wait_exit(d, EXIT_TIMEOUT)) {
            xa_log_err(MOD, "VM %s: QEMU pid %d survives SIGKILL", d->uuid,
                       (int)d->pid);
        }
    }
}

/* ---- building the command line ---------------------------------------- */

struct argv {
    char **v;
    size_t n, cap;
};

static void
arg(struct argv *a, char *s) /* takes 's' */
{
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = xa_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
}

static void
args(struct argv *a, const char *opt, char *val)
{
    arg(a, xa_strdup(opt));
    arg(a, val);
}

static void
argv_free(struct argv *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->v[i]);
    }
    free(a->v);
}

static const char *
qemu_binary(void)
{
    const char *b = getenv("XAPID_QEMU");
    return b && *b ? b : "qemu-system-x86_64";
}

/* A tap to create: what tap_create() needs and gives back. */
struct tap_req {
    const char *name;
    int64_t mtu;
    const char *netns; /* the namespace file, or NULL for xapid's own */
    int fd;
    struct xa_error *err;
};

/* Creates the non-persistent tap 'r->name' (up, with 'r->mtu' when > 0)
 * in the calling thread's network namespace. */
static void
tap_create(struct tap_req *r)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        r->err = xa_error_internal("/dev/net/tun: %s", strerror(errno));
        return;
    }
    struct ifreq ifr = {0};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", r->name);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        r->err = xa_error_internal("tap %s: %s", r->name, strerror(errno));
        close(fd);
        return;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s >= 0) {
        if (r->mtu > 0) {
            ifr.ifr_mtu = (int)r->mtu;
            ioctl(s, SIOCSIFMTU, &ifr);
        }
        if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
            ifr.ifr_flags |= IFF_UP;
            ioctl(s, SIOCSIFFLAGS, &ifr);
        }
        close(s);
    }
    r->fd = fd;
}

/* Thread body: enters the namespace first (setns() moves only the calling
 * thread; a tap lives in the namespace /dev/net/tun was opened in). */
static void *
tap_create_in_netns(void *arg)
{
    struct tap_req *r = arg;
    int ns = open(r->netns, O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
        r->err = xa_error_internal("network namespace %s: %s", r->netns,
                                   strerror(errno));
    } else {
        tap_create(r);
    }
    if (ns >= 0) {
        close(ns);
    }
    return NULL;
}

/* Creates the tap 'name' where the network backend sees the host's
 * interfaces (its namespace, when xapid was given one: there the
 * switch can open it) and returns its fd. */
static struct xa_error *
tap_open(const char *name, int64_t mtu, int *ret_fd)
{
    struct tap_req r = {name, mtu, xa_nl_netns(), -1, NULL};
    if (r.netns) {
        pthread_t th;
        if (pthread_create(&th, NULL, tap_create_in_netns, &r) != 0) {
            return xa_error_internal("tap %s: cannot start a thread", name);
        }
        pthread_join(th, NULL);
    } else {
        tap_create(&r);
    }
    *ret_fd = r.fd;
    return r.err;
}

/* Where a running VM's domain starts from. */
enum boot_from {
    BOOT_FRESH,
    BOOT_FILE, /* resume: 'incoming' is a file with the saved state */
    BOOT_FD,   /* migrate_receive: 'incoming_fd' carries the stream */
};

struct spawn {
    const struct xa_hv_domain_config *cfg;
    enum boot_from from;
    const char *incoming;
    int incoming_fd;
};

/* The q35 root port of the virtio device number 'device' ("pvbd2" for
 * disk 2, "pnic0" for NIC 0), or NULL when it has none (beyond 'n').
 * A device always sits in its own port, whether on the command line or
 * hot-plugged, so that QEMU rebuilt from the VM's devices (resume, a
 * migration's destination) has the very topology of the one it replaces. */
static char *
device_port(const char *prefix, const char *device, int n)
{
    char *end = NULL;
    long d = strtol(device, &end, 10);
    if (!*device || *end || d < 0 || d >= n) {
        return NULL;
    }
    return xa_asprintf("%s%ld", prefix, d);
}

/* Fills 'a' with QEMU's command line for 'cfg'; 'tap_fds' are the fds of
 * the NICs' taps, in order. */
static void
build_argv(struct argv *a, const struct spawn *sp, const struct kvm_dom *d,
           const int *tap_fds, const char *accel)
{
    const struct xa_hv_domain_config *cfg = sp->cfg;
    bool direct = cfg->kernel && *cfg->kernel;
    const char *machine = platform_get(cfg, "machine");
    if (!machine) {
        /* QEMU boots an ELF kernel through its PVH note or multiboot
         * header: cheap to do on microvm.  A bzImage (Linux) gets q35,
         * which boots it reliably under TCG (microvm hangs sometimes). */
        machine = direct && file_starts_with(cfg->kernel, "\177ELF", 4)
                      ? "microvm"
                      : "q35";
    }
    bool micro = strcmp(machine, "microvm") == 0;
    char *name = qemu_escape(cfg->name_label ? cfg->name_label : cfg->uuid);
    arg(a, xa_strdup(qemu_binary()));
    arg(a, xa_strdup("-nodefaults"));
    arg(a, xa_strdup("-no-user-config"));
    args(a, "-name", xa_asprintf("guest=%s", name));
    free(name);
    args(a, "-uuid", xa_strdup(cfg->uuid));
    args(a, "-machine", xa_strdup(machine));
    args(a, "-accel", xa_strdup(accel));
    const char *cpu = platform_get(cfg, "cpu");
    if (cpu) {
        args(a, "-cpu", xa_strdup(cpu));
    }
    args(a, "-m", xa_asprintf("%lld", (long long)(d->memory / MIB)));
    int64_t vmax = cfg->vcpus_max > 0 ? cfg->vcpus_max : 1;
    int64_t vnow = cfg->vcpus_at_startup > 0 ? cfg->vcpus_at_startup : 1;
    args(a, "-smp",
         xa_asprintf("%lld,maxcpus=%lld", (long long)vnow,
                     (long long)(vmax > vnow ? vmax : vnow)));
    arg(a, xa_strdup("-S"));
    args(a, "-display", xa_strdup("none"));
    char *qmp = dom_file(d, "qmp.sock"), *ser = dom_file(d, "serial.sock"),
         *log = dom_file(d, "serial.log"), *vnc = dom_file(d, "vnc.sock");
    char *eq = qemu_escape(qmp), *es = qemu_escape(ser), *el = qemu_escape(log),
         *ev = qemu_escape(vnc);
    args(a, "-chardev",
         xa_asprintf("socket,id=qmp,path=%s,server=on,wait=off", eq));
    args(a, "-mon", xa_strdup("chardev=qmp,mode=control"));
    args(a, "-chardev",
         xa_asprintf("socket,id=ser0,path=%s,server=on,wait=off,logfile=%s,"
                     "logappend=on",
                     es, el));
    args(a, "-serial", xa_strdup("chardev:ser0"));
    args(a, "-vnc", xa_asprintf("unix:%s", ev));
    free(qmp);
    free(ser);
    free(log);
    free(vnc);
    free(eq);
    free(es);
    free(el);
    free(ev);
    if (cfg->hvm && !micro) {
        args(a, "-device", xa_strdup("VGA"));
    }
    /* q35 hot-plugs into PCIe root ports only (not the root complex):
     * one per possible virtio disk and NIC, used or not (device_port()),
     * no I/O window (virtio 1.0 on PCIe has no I/O BAR). */
    bool q35 = strstr(machine, "q35") != NULL;
    for (int i = 0; q35 && i < DISK_PORTS + NIC_PORTS; i++) {
        bool disk = i < DISK_PORTS;
        args(a, "-device",
             xa_asprintf("pcie-root-port,id=%s%d,chassis=%d,io-reserve=0",
                         disk ? "pvbd" : "pnic", disk ? i : i - DISK_PORTS,
                         i + 1));
    }
    if (direct) {
        args(a, "-kernel", xa_strdup(cfg->kernel));
        if (cfg->ramdisk && *cfg->ramdisk) {
            args(a, "-initrd", xa_strdup(cfg->ramdisk));
        }
        if (cfg->cmdline && *cfg->cmdline) {
            args(a, "-append", xa_strdup(cfg->cmdline));
        }
    }
    /* Boot order: HVM_boot_params:order letters, c = disk, d = CD,
     * n = network; each device class gets the next boot indexes. */
    const char *order =
        cfg->boot_order && *cfg->boot_order ? cfg->boot_order : "cd";
    int next_index = 1;
    int disk_index = 0, cd_index = 0, net_index = 0;
    for (const char *o = order; *o; o++) {
        int *slot = *o == 'c'   ? &disk_index
                    : *o == 'd' ? &cd_index
                    : *o == 'n' ? &net_index
                                : NULL;
        if (slot && !*slot) {
            *slot = next_index;
            next_index += 32;
        }
    }
    int ide_bus = 0;
    for (size_t i = 0; i < cfg->n_disks; i++) {
        const struct xa_hv_disk *k = &cfg->disks[i];
        bool virtio = !k->cdrom && !(cfg->hvm && !direct);
        char *file = k->path ? qemu_escape(k->path) : NULL;
        char *drive;
        if (file) {
            drive = xa_asprintf(
                "if=none,id=drive%zu,file=%s,format=%s,cache=none,aio=threads%s",
                i, file, k->format && *k->format ? k->format : "raw",
                k->read_only || k->cdrom ? ",readonly=on" : "");
        } else {
            drive = xa_asprintf("if=none,id=drive%zu", i);
        }
        free(file);
        args(a, "-drive", drive);
        int *slot = k->cdrom ? &cd_index : &disk_index;
        char boot[32] = "";
        if (*slot && (k->bootable || !direct)) {
            snprintf(boot, sizeof boot, ",bootindex=%d", (*slot)++);
        }
        if (micro) {
            args(a, "-device",
                 xa_asprintf("virtio-blk-device,drive=drive%zu,id=vbd%s", i,
                             k->device));
        } else if (virtio) {
            char *port =
                q35 ? device_port("pvbd", k->device, DISK_PORTS) : NULL;
            args(a, "-device",
                 xa_asprintf("virtio-blk-pci,drive=drive%zu,id=vbd%s%s%s%s", i,
                             k->device, port ? ",addr=0,bus=" : "",
                             port ? port : "", boot));
            free(port);
        } else {
            args(a, "-device",
                 xa_asprintf("%s,drive=drive%zu,id=vbd%s,bus=ide.%d%s",
                             k->cdrom ? "ide-cd" : "ide-hd", i, k->device,
                             ide_bus++, boot));
        }
    }
    for (size_t i = 0; i < cfg->n_nics; i++) {
        const struct xa_hv_nic *n = &cfg->nics[i];
        args(
            a, "-netdev",
            xa_asprintf("tap,id=net%s,fd=%d,vhost=off", n->device, tap_fds[i]));
        char boot[32] = "";
        if (net_index && !micro) {
            snprintf(boot, sizeof boot, ",bootindex=%d", net_index++);
        }
        char *port = q35 ? device_port("pnic", n->device, NIC_PORTS) : NULL;
        args(a, "-device",
             xa_asprintf("%s,netdev=net%s,id=nic%s,mac=%s%s%s%s",
                         micro ? "virtio-net-device" : "virtio-net-pci",
                         n->device, n->device, n->mac,
                         port ? ",addr=0,bus=" : "", port ? port : "", boot));
        free(port);
    }
    if (sp->from == BOOT_FILE) {
        char *q = sh_quote(sp->incoming);
        args(a, "-incoming", xa_asprintf("exec:cat %s", q));
        free(q);
    } else if (sp->from == BOOT_FD) {
        args(a, "-incoming", xa_asprintf("fd:%d", sp->incoming_fd));
    }
}

/* fork + exec of QEMU; only async-signal-safe calls in the child. */
static pid_t
fork_qemu(char **av, int log_fd, int null_fd, const int *keep, size_t n_keep)
{
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGPIPE, &dfl, NULL);
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    for (size_t i = 0; i < n_keep; i++) {
        fcntl(keep[i], F_SETFD, 0);
    }
    execvp(av[0], av);
    static const char msg[] = "xapid: cannot exec QEMU\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(127);
}

/* How long a starting QEMU may take to answer on its monitor:
 * QMP_START_TIMEOUT, or XAPID_QMP_START_TIMEOUT seconds (the tests of a
 * QEMU that never answers set it short). */
static double
qmp_start_timeout(void)
{
    const char *s = getenv("XAPID_QMP_START_TIMEOUT");
    double t = s && *s ? atof(s) : 0;
    return t > 0 ? t : QMP_START_TIMEOUT;
}

/* Waits for the monitor of a starting QEMU and checks its state. */
static struct xa_error *
await_monitor(struct kvm_dom *d, struct xa_qmp **ret)
{
    char *path = dom_file(d, "qmp.sock");
    double deadline = xa_monotonic() + qmp_start_timeout();
    struct xa_error *err = NULL;
    for (;;) {
        pthread_mutex_lock(&lock);
        bool gone = d->exited;
        pthread_mutex_unlock(&lock);
        if (gone) {
            char *tail = qemu_log_tail(d->uuid);
            err = xa_error_internal("QEMU exited during start-up: %s", tail);
            free(tail);
            break;
        }
        double left = deadline - xa_monotonic();
        err = xa_qmp_open(
            path, left < 0.1 ? 0.1 : (left < QMP_TIMEOUT ? left : QMP_TIMEOUT),
            ret);
        if (!err) {
            break;
        }
        if (xa_monotonic() > deadline) {
            char *tail = qemu_log_tail(d->uuid);
            struct xa_error *e = xa_error_internal(
                "QEMU never answered on its monitor (%s): %s",
                err->params && err->n_params ? err->params[0] : "?", tail);
            xa_error_free(err);
            free(tail);
            err = e;
            break;
        }
        xa_error_free(err);
        err = NULL;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    free(path);
    return err;
}

static const char *
json_str(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v)
               ? json_object_get_string(v)
               : NULL;
}

static int64_t
json_int(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v)
                                                      : 0;
}

/* Waits for an incoming migration (resume, migrate_receive) to finish:
 * the guest is then paused (-S), ready for unpause. */
static struct xa_error *
await_incoming(struct kvm_dom *d, struct xa_qmp *q)
{
    double deadline = xa_monotonic() + MIGRATE_TIMEOUT;
    for (;;) {
        json_object *st = NULL;
        struct xa_error *err =
            xa_qmp_call(q, "query-status", NULL, QMP_TIMEOUT, &st);
        if (err) {
            return err;
        }
        char *s = xa_strdup(json_str(st, "status"));
        json_object_put(st);
        bool waiting = strcmp(s, "inmigrate") == 0;
        bool ok = strcmp(s, "paused") == 0 || strcmp(s, "prelaunch") == 0 ||
                  strcmp(s, "running") == 0 || strcmp(s, "postmigrate") == 0;
        if (!waiting) {
            err = ok ? NULL
                     : xa_error_internal(
                           "incoming migration of %s ended in state %s",
                           d->uuid, s);
            free(s);
            return err;
        }
        free(s);
        if (xa_monotonic() > deadline) {
            return xa_error_internal("incoming migration of %s timed out",
                                     d->uuid);
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Builds the domain for 'sp', paused. */
static struct xa_error *
spawn(const struct spawn *sp, int64_t *ret_domid)
{
    const struct xa_hv_domain_config *cfg = sp->cfg;
    struct kvm_dom *old = dom_get(cfg->uuid);
    if (old) {
        dom_unref(old);
        return xa_error_internal("VM %s already has a running domain",
                                 cfg->uuid);
    }
    struct kvm_dom *d = xa_calloc(1, sizeof *d);
    snprintf(d->uuid, sizeof d->uuid, "%s", cfg->uuid);
    pthread_mutex_init(&d->op, NULL);
    d->pidfd = -1;
    d->refs = 1; /* ours */
    d->state = XA_HV_PAUSED;
    int64_t mem =
        cfg->memory_target > 0 ? cfg->memory_target : cfg->memory_static_max;
    d->memory = ((mem + MIB - 1) / MIB) * MIB;
    if (d->memory < 16 * MIB) {
        d->memory = 16 * MIB;
    }
    d->vcpus = cfg->vcpus_at_startup > 0 ? cfg->vcpus_at_startup : 1;
    pthread_mutex_lock(&lock);
    d->domid = next_domid++;
    pthread_mutex_unlock(&lock);
    d->dir = xa_asprintf("%s/%s", base_dir, cfg->uuid);
    rm_rf_flat(d->dir);
    struct xa_error *err = NULL;
    if (mkdir(d->dir, 0700) != 0) {
        err = xa_error_internal("mkdir %s: %s", d->dir, strerror(errno));
        dom_unref(d);
        return err;
    }
    const char *accel = platform_get(cfg, "accel");
    if (!accel || strcmp(accel, "auto") == 0) {
        accel = host_accel();
    }
    /* Taps first: QEMU receives them as open fds. */
    int *taps = xa_calloc(cfg->n_nics + 1, sizeof *taps);
    char **tap_names = xa_calloc(cfg->n_nics + 1, sizeof *tap_names);
    size_t n_taps = 0;
    for (size_t i = 0; i < cfg->n_nics && !err; i++) {
        tap_names[i] =
            xa_asprintf("tap%lld.%s", (long long)d->domid, cfg->nics[i].device);
        err = tap_open(tap_names[i], cfg->nics[i].mtu, &taps[i]);
        if (!err) {
            n_taps++;
        }
    }
    struct argv a = {0};
    char *log_path = xa_asprintf("%s/%s.qemu.log", base_dir, cfg->uuid);
    int log_fd = -1, null_fd = -1;
    if (!err) {
        build_argv(&a, sp, d, taps, accel);
        log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (log_fd < 0 || null_fd < 0) {
            err = xa_error_internal("%s: %s", log_path, strerror(errno));
        }
    }
    if (!err) {
        struct xa_buf line = {0};
        for (size_t i = 0; i < a.n; i++) {
            xa_buf_printf(&line, "%s%s", i ? " " : "", a.v[i]);
        }
        xa_log_debug(MOD, "VM %s: %s", cfg->uuid, line.data);
        dprintf(log_fd, "%s\n", line.data);
        xa_buf_free(&line);
        int keep[64];
        size_t n_keep = 0;
        for (size_t i = 0; i < n_taps && n_keep < 63; i++) {
            keep[n_keep++] = taps[i];
        }
        if (sp->from == BOOT_FD) {
            keep[n_keep++] = sp->incoming_fd;
        }
        d->start_time = xa_now();
        d->pid = fork_qemu(a.v, log_fd, null_fd, keep, n_keep);
        if (d->pid < 0) {
            err = xa_error_internal("fork: %s", strerror(errno));
        } else {
            d->child = true;
            err = dom_watch(d);
            if (err) {
                kill(d->pid, SIGKILL);
                waitpid(d->pid, NULL, 0);
            }
        }
    }
    /* QEMU holds the taps now (or nothing does: then they vanish). */
    for (size_t i = 0; i < n_taps; i++) {
        close(taps[i]);
    }
    if (log_fd >= 0) {
        close(log_fd);
    }
    if (null_fd >= 0) {
        close(null_fd);
    }
    argv_free(&a);
    free(log_path);
    struct xa_qmp *q = NULL;
    bool watched = !err;
    if (!err) {
        err = await_monitor(d, &q);
    }
    /* A migration stream arrives later: kvm_unpause() waits for it. */
    d->incoming = sp->from == BOOT_FD;
    if (!err && sp->from == BOOT_FILE) {
        err = await_incoming(d, q);
    }
    xa_qmp_close(q);
    for (size_t i = 0; i < cfg->n_nics && !err; i++) {
        char *vif = xa_net_vif_of(cfg->uuid, cfg->nics[i].device);
        if (!vif) {
            continue; /* a domain built outside the API (tests) */
        }
        d->vifs = xa_realloc(d->vifs, (d->n_vifs + 1) * sizeof *d->vifs);
        d->vifs[d->n_vifs++] = vif;
        err = xa_net_plug_vif(vif, tap_names[i]);
    }
    for (size_t i = 0; i < cfg->n_nics; i++) {
        free(tap_names[i]);
    }
    free(tap_names);
    free(taps);
    if (!err) {
        meta_write(d);
        *ret_domid = d->domid;
        xa_log_info(MOD, "VM %s: QEMU pid %d, domid %lld, %s", d->uuid,
                    (int)d->pid, (long long)d->domid, accel);
    } else if (watched) {
        xa_log_warn(MOD, "VM %s: start failed: %s", cfg->uuid,
                    err->n_params ? err->params[0] : err->code);
        dom_kill(d);
    } else {
        rm_rf_flat(d->dir);
    }
    dom_unref(d);
    return err;
}

/* Runs one QMP command on the domain 'uuid'. */
static struct xa_error *
dom_command(struct kvm_dom *d, const char *command, json_object *cmd_args,
            json_object **ret)
{
    char *path = dom_file(d, "qmp.sock");
    struct xa_qmp *q = NULL;
    struct xa_error *err = xa_qmp_open(path, QMP_TIMEOUT, &q);
    free(path);
    if (!err) {
        err = xa_qmp_call(q, command, cmd_args, QMP_TIMEOUT, ret);
        cmd_args = NULL;
    }
    if (cmd_args) {
        json_object_put(cmd_args);
    }
    xa_qmp_close(q);
    return err;
}

static void
set_state(struct kvm_dom *d, enum xa_hv_state s)
{
    pthread_mutex_lock(&lock);
    d->state = s;
    pthread_mutex_unlock(&lock);
}

/* ---- the vtable --------------------------------------------------------- */

/* Finds the QEMUs a previous xapid left running. */
static void
adopt_survivors(void)
{
    DIR *dh = opendir(base_dir);
    if (!dh) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(dh))) {
        if (!xa_uuid_valid(e->d_name)) {
            continue;
        }
        struct kvm_dom *d = xa_calloc(1, sizeof *d);
        memcpy(d->uuid, e->d_name, 36); /* xa_uuid_valid: 36 chars */
        d->dir = xa_asprintf("%s/%s", base_dir, e->d_name);
        pthread_mutex_init(&d->op, NULL);
        d->pidfd = -1;
        d->refs = 1;
        char *meta = dom_file(d, "meta");
        FILE *f = fopen(meta, "r");
        free(meta);
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            char *eq = strchr(line, '=');
            if (!eq) {
                continue;
            }
            *eq++ = '\0';
            if (strcmp(line, "pid") == 0) {
                d->pid = (pid_t)atoi(eq);
            } else if (strcmp(line, "domid") == 0) {
                d->domid = atoll(eq);
            } else if (strcmp(line, "start") == 0) {
                d->start_time = atof(eq);
            } else if (strcmp(line, "memory") == 0) {
                d->memory = atoll(eq);
            } else if (strcmp(line, "vcpus") == 0) {
                d->vcpus = atoll(eq);
            } else if (strcmp(line, "vif") == 0) {
                d->vifs = xa_realloc(d->vifs, (d->n_vifs + 1) * sizeof(char *));
                d->vifs[d->n_vifs++] = xa_strdup(eq);
            }
        }
        if (f) {
            fclose(f);
        }
        /* The pid must still be a QEMU of this VM (pids get reused). */
        bool alive = false;
        if (d->pid > 0) {
            char *cl = xa_asprintf("/proc/%d/cmdline", (int)d->pid);
            FILE *c = fopen(cl, "r");
            free(cl);
            if (c) {
                char buf[8192];
                size_t n = fread(buf, 1, sizeof buf - 1, c);
                fclose(c);
                for (size_t i = 0; i < n; i++) {
                    buf[i] = buf[i] ? buf[i] : ' ';
                }
                buf[n] = '\0';
                alive = strstr(buf, d->uuid) && strstr(buf, "qemu");
            }
        }
        struct xa_error *err = NULL;
        json_object *st = NULL;
        if (alive) {
            err = dom_command(d, "query-status", NULL, &st);
        }
        if (!alive || err) {
            xa_log_info(MOD, "VM %s: QEMU pid %d is gone%s%s", d->uuid,
                        (int)d->pid, err ? ": " : "",
                        err && err->n_params ? err->params[0] : "");
            if (alive) {
                kill(d->pid, SIGKILL);
            }
            xa_error_free(err);
            rm_rf_flat(d->dir);
            dom_unref(d);
            continue;
        }
        const char *s = json_str(st, "status");
        d->state = s && strcmp(s, "running") == 0    ? XA_HV_RUNNING
                   : s && strcmp(s, "shutdown") == 0 ? XA_HV_SHUTDOWN
                   : s && (strcmp(s, "guest-panicked") == 0 ||
                           strcmp(s, "internal-error") == 0)
                       ? XA_HV_CRASHED
                       : XA_HV_PAUSED;
        json_object_put(st);
        err = dom_watch(d);
        if (err) {
            xa_log_warn(MOD, "VM %s: %s", d->uuid, err->params[0]);
            xa_error_free(err);
            dom_unref(d);
            continue;
        }
        pthread_mutex_lock(&lock);
        if (d->domid >= next_domid) {
            next_domid = d->domid + 1;
        }
        pthread_mutex_unlock(&lock);
        xa_log_info(MOD, "VM %s: found QEMU pid %d again (domid %lld)", d->uuid,
                    (int)d->pid, (long long)d->domid);
        dom_unref(d);
    }
    closedir(dh);
}

static struct xa_error *
kvm_init(void)
{
    const char *sd = xa_self_state_dir();
    base_dir = xa_asprintf("%s/kvm", sd ? sd : ".");
    if (mkdir(base_dir, 0700) != 0 && errno != EEXIST) {
        return xa_error_internal("mkdir %s: %s", base_dir, strerror(errno));
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    wakefd = eventfd(0, EFD_CLOEXEC);
    if (epfd < 0 || wakefd < 0) {
        return xa_error_internal("epoll: %s", strerror(errno));
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev);
    if (pthread_create(&monitor, NULL, monitor_main, NULL) != 0) {
        return xa_error_internal("cannot start the QEMU monitor thread");
    }
    monitor_running = true;
    adopt_survivors();
    xa_log_info(MOD, "QEMU backend: %s, default accelerator %s (%s)",
                qemu_binary(), host_accel(),
                accel_default ? accel_default : "auto");
    return NULL;
}

/* xapid stops: the QEMUs keep running (a restarted xapid adopts them). */
static void
kvm_fini(void)
{
    if (monitor_running) {
        uint64_t one = 1;
        ssize_t w = write(wakefd, &one, sizeof one);
        (void)w;
        pthread_join(monitor, NULL);
        monitor_running = false;
    }
    pthread_mutex_lock(&lock);
    while (doms) {
        struct kvm_dom *d = doms;
        doms = d->next;
        if (d->pidfd >= 0) {
            close(d->pidfd);
        }
        d->refs -= 2; /* the list's and the monitor's */
        if (d->refs == 0) {
            pthread_mutex_unlock(&lock);
            d->refs = 1;
            dom_unref(d);
            pthread_mutex_lock(&lock);
        }
    }
    pthread_mutex_unlock(&lock);
    close(epfd);
    close(wakefd);
    epfd = wakefd = -1;
    free(base_dir);
    base_dir = NULL;
}

static int64_t
meminfo(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    int64_t v = 0;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = atoll(line + kl + 1) * 1024;
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return v;
}

/* Resident bytes and consumed CPU seconds of 'pid'. */
static void
proc_usage(pid_t pid, int64_t *rss, double *cpu)
{
    *rss = 0;
    *cpu = 0;
    char *path = xa_asprintf("/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    free(path);
    char buf[1024];
    if (f && fgets(buf, sizeof buf, f)) {
        char *p = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        long rss_pages = 0;
        /* Fields after "(comm)": state is 3; utime 14, stime 15, rss 24. */
        if (p && sscanf(p + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu "
                        "%*d %*d %*d %*d %*d %*d %*u %*u %ld",
                        &ut, &st, &rss_pages) == 3) {
            double hz = (double)sysconf(_SC_CLK_TCK);
            *cpu = (double)(ut + st) / hz;
            *rss = (int64_t)rss_pages * sysconf(_SC_PAGESIZE);
        }
    }
    if (f) {
        fclose(f);
    }
}

static struct xa_error *
kvm_host_memory(int64_t *total, int64_t *free_bytes)
{
    *total = meminfo("MemTotal");
    int64_t avail = meminfo("MemAvailable");
    /* Guests' memory QEMU has not touched yet is still counted free by
     * the kernel; take it out so admission control sees the promise. */
    int64_t promised = 0;
    pthread_mutex_lock(&lock);
    for (struct kvm_dom *d = doms; d; d = d->next) {
        int64_t rss;
        double cpu;
        proc_usage(d->pid, &rss, &cpu);
        promised += d->memory > rss ? d->memory - rss : 0;
    }
    pthread_mutex_unlock(&lock);
    *free_bytes = avail > promised ? avail - promised : 0;
    return NULL;
}

static struct xa_error *
kvm_create(const struct xa_hv_domain_config *cfg, int64_t *domid)
{
    struct spawn sp = {cfg, BOOT_FRESH, NULL, -1};
    return spawn(&sp, domid);
}

static struct xa_error *
run_state_command(const char *uuid, const char *command, enum xa_hv_state s)
{
    struct kvm_dom *d = dom_get(uuid);
    if (!d) {
        return no_domain(uuid);
    }
    pthread_mutex_lock(&d->op);
    struct xa_error *err = dom_command(d, command, NULL, NULL);
    if (!err) {
        set_state(d, s);
    }
    pthread_mutex_unlock(&d->op);
    dom_unref(d);
    return err;
}

/* The end of the stream of a domain built by migrate_receive: QEMU
 * leaves "inmigrate" once it has loaded everything (or failed to). */
static struct xa_error *
await_migrated_in(const char *uuid)
{
    struct kvm_dom *d = dom_get(uuid);
    if (!d) {
        return no_domain(uuid);
    }
    pthread_mutex_lock(&d->op);
    struct xa_error *err = NULL;
    if (d->incoming) {
        char *path = dom_file(d, "qmp.sock");
        struct xa_qmp *q = NULL;
        err = xa_qmp_open(path, QMP_TIMEOUT, &q);
        free(path);
        if (!err) {
            err = await_incoming(d, q);
        }
        if (!err && d->nbd) {
            /* the source's mirrors ended before the switch-over */
            err = xa_qmp_call(q, "nbd-server-stop", NULL, QMP_TIMEOUT, NULL);
            d->nbd = err != NULL;
        }
        xa_qmp_close(q);
        d->incoming = err != NULL;
    }
    pthread_mutex_unlock(&d->op);
    dom_unref(d);
    return err;
}

static struct xa_error *
kvm_unpause(const char *uuid)
{
    struct xa_error *err = await_migrated_in(uuid);
    return err ? err : run_state_command(uuid, "cont", XA_HV_RUNNING);
}

static struct xa_error *
kvm_pause(const char *uuid)
{
    return run_state_command(uuid, "stop", XA_HV_PAUSED);
}

static struct xa_error *
kvm_shutdown(const char *uuid, enum xa_hv_shutdown_reason reason,
             double timeout, int64_t *new_domid)
{
    struct kvm_dom *d = dom_get(uuid);
    if (!d) {
        return no_domain(uuid);
    }
    struct xa_error *err = NULL;
    pthread_mutex_lock(&d->op);
    if (reason == XA_HV_REBOOT) {
        /* The guest restarts inside the same QEMU: same domid. */
        err = dom_command(d, "system_reset", NULL, NULL);
        if (!err) {
            set_state(d, XA_HV_RUNNING);
        }
        if (new_domid) {
            *new_domid = d->domid;
        }
    } else {
        pthread_mutex_lock(&lock);
        d->expected = true;
        pthread_mutex_unlock(&lock);
        /* The ACPI power button; QEMU exits when the guest powers off. */
        err = dom_command(d, "system_powerdown", NULL, NULL);
        if (!err && !wait_exit(d, timeout)) {
            pthread_mutex_lock(&lock);
            d->expected = false;
            pthread_mutex_unlock(&lock);
            char t[32];
            snprintf(t, sizeof t, "%g", timeout);
            err = xa_error_new("VM_SHUTDOWN_TIMEOUT", 2, uuid, t);
        }
        if (err && strcmp(err->code, "VM_SHUTDOWN_TIMEOUT") != 0) {
            pthread_mutex_lock(&lock);
            bool gone = d->exited;
            d->expected = gone;
            pthread_mutex_unlock(&lock);
            if (gone) {
                xa_error_free(err); /* it went away meanwhile: fine */
                err = NULL;
            }
        }
    }
    pthread_mutex_unlock(&d->op);
    dom_unref(d);
    return err;
}

static struct xa_error *
kvm_destroy(const char *uuid)
{
    struct kvm_dom *d = dom_get(uuid);
    if (!d) {
        return NULL; /* already gone: what destroy wants */
    }
    dom_kill(d);
    dom_unref(d);
    return NULL;
}

static struct xa_error *
kvm_hard_reboot(const struct xa_hv_domain_config *cfg, int64_t *new_domid)
{
    struct xa_error *err = kvm_destroy(cfg->uuid);
    if (!err) {
        err = kvm_create(cfg, new_domid);
    }
    if (!err) {
        err = kvm_unpause(cfg->uuid);
    }
    return err;
}

/* ---- storage motion: block mirrors over NBD ------------------------- */

/* One disk a migration mirrors: 'device' (userdevice) into the NBD
 * export of the same name reached through our descriptor 'fd'. */
struct mirror {
    char device[16];
    int fd;
};

/* The -drive id of the disk of userdevice 'device' (caller frees). */
static char *
drive_of(struct xa_qmp *q, const char *device)
{
    json_object *r = NULL;
    struct xa_error *err = xa_qmp_call(q, "query-block", NULL, QMP_TIMEOUT, &r);
    if (err) {
        xa_error_free(err);
        return NULL;
    }
    char *id = xa_asprintf("vbd%s", device);
    char *path = xa_asprintf("/machine/peripheral/vbd%s/", device);
    char *found = NULL;
    size_t n = json_object_is_type(r, json_type_array)
                   ? json_object_array_length(r)
                   : 0;
    for (size_t i = 0; i < n && !found; i++) {
        json_object *b = json_object_array_get_idx(r, i);
        const char *qdev = json_str(b, "qdev");
        if (qdev && (strcmp(qdev, id) == 0 || xa_str_has_prefix(qdev, path))) {
            found = xa_strdup(json_str(b, "device"));
        }
    }
    json_object_put(r);
    free(id);
    free(path);
    return found;
}

/* State of the mirror job of 'm': 1 ready, 0 still copying, -1 gone. */
static int
mirror_state(json_object *jobs, const struct mirror *m, int64_t *done,
             int64_t *len)
{
    char id[32];
    snprintf(id, sizeof id, "mir%s", m->device);
    size_t n = json_object_is_type(jobs, json_type_array)
                   ? json_object_array_length(jobs)
                   : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *j = json_object_array_get_idx(jobs, i);
        const char *dev = json_str(j, "device");
        if (dev && strcmp(dev, id) == 0) {
            json_object *rd = NULL;
            *done += json_int(j, "offset");
            *len += json_int(j, "len");
            return json_object_object_get_ex(j, "ready", &rd) &&
                           json_object_get_boolean(rd)
                       ? 1
                       : 0;
        }
    }
    return -1;
}

/* Ends the mirror jobs of 'm' and drops their NBD nodes: 'force' throws
 * the copy away (failure), else a ready job completes in sync (the
 * guest is stopped: nothing more to copy). */
static struct xa_error *
mirrors_end(struct xa_qmp *q, const struct mirror *m, size_t n, bool force)
{
    for (size_t i = 0; i < n; i++) {
        json_object *a = json_object_new_object();
        char id[32];
        snprintf(id, sizeof id, "mir%s", m[i].device);
        json_object_object_add(a, "device", json_object_new_string(id));
        if (force) {
            json_object_object_add(a, "force", json_object_new_boolean(true));
        }
        xa_error_free(xa_qmp_call(q, "block-job-cancel", a, QMP_TIMEOUT, NULL));
    }
    struct xa_error *err = NULL;
    double deadline = xa_monotonic() + MIGRATE_TIMEOUT;
    for (;;) {
        json_object *jobs = NULL;
        err = xa_qmp_call(q, "query-block-jobs", NULL, QMP_TIMEOUT, &jobs);
        if (err) {
            break;
        }
        size_t left = 0;
        int64_t done = 0, len = 0;
        for (size_t i = 0; i < n; i++) {
            left += mirror_state(jobs, &m[i], &done, &len) >= 0;
        }
        json_object_put(jobs);
        if (!left) {
            break;
        }
        if (xa_monotonic() > deadline) {
            err = xa_error_internal("disk mirrors did not end");
            break;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        json_object *a = json_object_new_object();
        char id[32];
        snprintf(id, sizeof id, "mir%s", m[i].device);
        json_object_object_add(a, "node-name", json_object_new_string(id));
        xa_error_free(xa_qmp_call(q, "blockdev-del", a, QMP_TIMEOUT, NULL));
    }
    return err;
}

/* Starts one mirror per entry of 'm' and waits for all to be ready (the
 * destination's copy is complete; writes now go to both). */
static struct xa_error *
mirrors_start(struct kvm_dom *d, struct xa_qmp *q, const struct mirror *m,
              size_t n, size_t *started)
{
    struct xa_error *err = NULL;
    *started = 0;
    for (size_t i = 0; i < n && !err; i++) {
        char fdname[32], node[32], export[32];
        snprintf(fdname, sizeof fdname, "nbd%s", m[i].device);
        snprintf(node, sizeof node, "mir%s", m[i].device);
        snprintf(export, sizeof export, "vbd%s", m[i].device);
        json_object *g = json_object_new_object();
        json_object_object_add(g, "fdname", json_object_new_string(fdname));
        err = xa_qmp_call_fd(q, "getfd", g, m[i].fd, QMP_TIMEOUT, NULL);
        if (err) {
            break;
        }
        json_object *srv = json_object_new_object();
        json_object_object_add(srv, "type", json_object_new_string("fd"));
        json_object_object_add(srv, "str", json_object_new_string(fdname));
        json_object *a = json_object_new_object();
        json_object_object_add(a, "driver", json_object_new_string("nbd"));
        json_object_object_add(a, "node-name", json_object_new_string(node));
        json_object_object_add(a, "server", srv);
        json_object_object_add(a, "export", json_object_new_string(export));
        err = xa_qmp_call(q, "blockdev-add", a, QMP_TIMEOUT, NULL);
        if (err) {
            break;
        }
        char *drive = drive_of(q, m[i].device);
        if (!drive) {
            json_object *del = json_object_new_object();
            json_object_object_add(del, "node-name",
                                   json_object_new_string(node));
            xa_error_free(
                xa_qmp_call(q, "blockdev-del", del, QMP_TIMEOUT, NULL));
            err =
                xa_error_internal("VM %s has no disk %s", d->uuid, m[i].device);
            break;
        }
        json_object *mi = json_object_new_object();
        json_object_object_add(mi, "job-id", json_object_new_string(node));
        json_object_object_add(mi, "device", json_object_new_string(drive));
        json_object_object_add(mi, "target", json_object_new_string(node));
        json_object_object_add(mi, "sync", json_object_new_string("full"));
        /* big chunks: the copy crosses two relays, so each request's
         * round trip is long; QEMU keeps 16 in flight */
        json_object_object_add(mi, "granularity",
                               json_object_new_int64(MIRROR_GRANULARITY));
        json_object_object_add(mi, "buf-size",
                               json_object_new_int64(16 * MIRROR_GRANULARITY));
        free(drive);
        err = xa_qmp_call(q, "blockdev-mirror", mi, QMP_TIMEOUT, NULL);
        if (err) {
            json_object *del = json_object_new_object();
            json_object_object_add(del, "node-name",
                                   json_object_new_string(node));
            xa_error_free(
                xa_qmp_call(q, "blockdev-del", del, QMP_TIMEOUT, NULL));
            break;
        }
        (*started)++;
    }
    double t0 = xa_monotonic(), deadline = t0 + MIGRATE_TIMEOUT;
    while (!err) {
        json_object *jobs = NULL;
        err = xa_qmp_call(q, "query-block-jobs", NULL, QMP_TIMEOUT, &jobs);
        if (err) {
            break;
        }
        size_t ready = 0;
        int64_t done = 0, len = 0;
        for (size_t i = 0; i < n && !err; i++) {
            int st = mirror_state(jobs, &m[i], &done, &len);
            if (st < 0) {
                err = xa_error_internal("the mirror of disk %s of VM %s "
                                        "failed",
                                        m[i].device, d->uuid);
            }
            ready += st > 0;
        }
        json_object_put(jobs);
        if (!err && ready == n) {
            xa_log_info(MOD,
                        "VM %s: %zu disk mirror(s) ready: %lld bytes in "
                        "%.0f ms",
                        d->uuid, n, (long long)done,
                        (xa_monotonic() - t0) * 1000.0);
            break;
        }
        if (!err && xa_monotonic() > deadline) {
            err = xa_error_internal("disk mirrors of %s timed out", d->uuid);
        }
        if (!err) {
            struct timespec ts = {0, 5 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return err;
}

/* Whether the guest of monitor 'q' runs under TCG (KVM not enabled).
 * QEMU 7.2's TCG misses some guest writes while it tracks dirty RAM: a
 * busy Linux guest migrated live came up corrupted on the destination
 * in 2-3 of 10 runs of bare QEMU (kernel BUGs at once), in none of 12
 * when stopped before its RAM went.  Such guests move stopped. */
static bool
runs_under_tcg(struct xa_qmp *q)
{
    json_object *r = NULL;
    struct xa_error *err = xa_qmp_call(q, "query-kvm", NULL, QMP_TIMEOUT, &r);
    json_object *en = NULL;
    bool tcg = !err && json_object_object_get_ex(r, "enabled", &en) &&
               !json_object_get_boolean(en);
    json_object_put(r);
    xa_error_free(err);
    return tcg;
}

/* Whether the guest of monitor 'q' runs (QMP status "running"). */
static bool
guest_running(struct xa_qmp *q)
{
    json_object *st = NULL;
    struct xa_error *err =
        xa_qmp_call(q, "query-status", NULL, QMP_TIMEOUT, &st);
    const char *s = err ? NULL : json_str(st, "status");
    bool running = s && strcmp(s, "running") == 0;
    json_object_put(st);
    xa_error_free(err);
    return running;
}

/* Runs an outgoing migration of 'd' to 'uri' and waits for its end;
 * on success QEMU is left stopped ("postmigrate") with the figures.
 * With mirrors (storage motion) the disks are copied first, while the
 * guest runs; QEMU pauses before the switch-over, the mirrors end in
 * sync there, then the migration completes; any failure ends them
 * (the guest keeps its disks).  A running TCG guest stops before its
 * RAM goes (runs_under_tcg()): its downtime is then the time since that
 * stop; a guest stopped before the call is down for the whole of it. */
static struct xa_error *
migrate_out(struct kvm_dom *d, const char *uri, int64_t downtime_ms,
            int64_t bandwidth, const struct mirror *mirrors, size_t n_mirrors,
            struct xa_kvm_migration_stats *stats)
{
    double entered = xa_monotonic();
    char *path = dom_file(d, "qmp.sock");
    struct xa_qmp *q = NULL;
    struct xa_error *err = xa_qmp_open(path, QMP_TIMEOUT, &q);
    free(path);
    if (!err) {
        json_object *p = json_object_new_object();
        /* QEMU's default of 32 MiB/s would make a 256 MiB save take 8 s. */
        json_object_object_add(p, "max-bandwidth",
                               json_object_new_int64(bandwidth > 0
                                                         ? bandwidth
                                                         : INT64_C(1) << 40));
        if (downtime_ms > 0) {
            json_object_object_add(p, "downtime-limit",
                                   json_object_new_int64(downtime_ms));
        }
        err = xa_qmp_call(q, "migrate-set-parameters", p, QMP_TIMEOUT, NULL);
    }
    if (!err) {
        /* set every time: a QEMU that stays keeps its capabilities */
        json_object *c = json_object_new_object();
        json_object_object_add(c, "capability",
                               json_object_new_string("pause-before-"
                                                      "switchover"));
        json_object_object_add(c, "state",
                               json_object_new_boolean(n_mirrors > 0));
        json_object *caps = json_object_new_array();
        json_object_array_add(caps, c);
        json_object *a = json_object_new_object();
        json_object_object_add(a, "capabilities", caps);
        err = xa_qmp_call(q, "migrate-set-capabilities", a, QMP_TIMEOUT, NULL);
    }
    size_t mirroring = 0;
    if (!err && n_mirrors) {
        err = mirrors_start(d, q, mirrors, n_mirrors, &mirroring);
    }
    /* a guest stopped already (suspend, a non-live move) is down for
     * the whole migration */
    bool was_running = !err && guest_running(q);
    double stopped_at = 0;
    if (was_running && runs_under_tcg(q)) {
        stopped_at = xa_monotonic();
        err = xa_qmp_call(q, "stop", NULL, QMP_TIMEOUT, NULL);
    }
    /* "xapid-fd:N": our descriptor N carries the stream (mig_stream.c) */
    bool pass_fd = xa_str_has_prefix(uri, "xapid-fd:");
    if (!err && pass_fd) {
        json_object *g = json_object_new_object();
        json_object_object_add(g, "fdname", json_object_new_string("mig"));
        err = xa_qmp_call_fd(q, "getfd", g, atoi(uri + 9), QMP_TIMEOUT, NULL);
    }
    if (!err) {
        json_object *m = json_object_new_object();
        json_object_object_add(
            m, "uri", json_object_new_string(pass_fd ? "fd:mig" : uri));
        err = xa_qmp_call(q, "migrate", m, QMP_TIMEOUT, NULL);
    }
    double deadline = xa_monotonic() + MIGRATE_TIMEOUT;
    while (!err) {
        json_object *r = NULL;
        err = xa_qmp_call(q, "query-migrate", NULL, QMP_TIMEOUT, &r);
        if (err) {
            break;
        }
        const char *s = json_str(r, "status");
        if (s && strcmp(s, "pre-switchover") == 0 && mirroring) {
            /* the guest is stopped: the mirrors end in sync */
            err = mirrors_end(q, mirrors, mirroring, false);
            mirroring = 0;
            if (!err) {
                json_object *c = json_object_new_object();
                json_object_object_add(c, "state",
                                       json_object_new_string("pre-"
                                                              "switchover"));
                err = xa_qmp_call(q, "migrate-continue", c, QMP_TIMEOUT, NULL);
            }
            if (err) {
                xa_error_free(
                    xa_qmp_call(q, "migrate_cancel", NULL, QMP_TIMEOUT, NULL));
            }
            json_object_put(r);
            continue;
        }
        if (s && strcmp(s, "completed") == 0) {
            json_object *ram = NULL;
            json_object_object_get_ex(r, "ram", &ram);
            stats->total_ms = json_int(r, "total-time");
            stats->downtime_ms =
                stopped_at > 0
                    ? (int64_t)((xa_monotonic() - stopped_at) * 1000.0)
                : was_running ? json_int(r, "downtime")
                              : (int64_t)((xa_monotonic() - entered) * 1000.0);
            stats->setup_ms = json_int(r, "setup-time");
            stats->transferred = json_int(ram, "transferred");
            json_object_put(r);
            break;
        }
        if (s && (strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0)) {
            const char *why = json_str(r, "error-desc");
            err = xa_error_internal("migration of %s %s: %s", d->uuid, s,
                                    why ? why : "no reason given");
        }
        json_object_put(r);
        if (!err && xa_monotonic() > deadline) {
            xa_error_free(
                xa_qmp_call(q, "migrate_cancel", NULL, QMP_TIMEOUT, NULL));
            err = xa_error_internal("migration of %s timed out", d->uuid);
        }
        if (!err) {
            struct timespec ts = {0, 2 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (err && q && mirroring) {
        xa_error_free(mirrors_end(q, mirrors, mirroring, true));
    }
    xa_qmp_close(q);
    return err;
}

static struct xa_error *
kvm_suspend(const char *uuid, const char *path)
{
    struct kvm_dom *d = dom_get(uuid);
    if (!d) {
        return no_domain(uuid);
    }
    pthread_mutex_lock(&d->op);
    /* A qcow2 VDI cannot take the raw stream: save next to it, convert. */
    bool qcow2 = file_starts_with(path, "QFI\xfb", 4);
    char *target = qcow2 ? xa_asprintf("%s.xapid-save", path) : xa_strdup(path);
    char *quoted = sh_quote(target);
    char *uri = xa_asprintf("exec:cat > %s", quoted);
    struct xa_kvm_migration_stats s = {0};
    /* Stop first: the image is a point in time, not a live copy. */
    struct xa_error *err = dom_command(d, "stop", NULL, NULL);
    if (!err) {
        set_state(d, XA_HV_PAUSED);
        err = migrate_out(d, uri, 0, 0, NULL, 0, &s);
    }
    if (!err && qcow2) {
        char *qt = sh_quote(path),
             *cmd = xa_asprintf("qemu-img convert -f raw -O qcow2 %s "
                                "%s.new && mv -f %s.new %s",
                                quoted, qt, qt, qt);
        int rc = system(cmd);
        if (rc != 0) {
            err =
                xa_error_internal("saving %s into qcow2 failed (%d)", path, rc);
        }
        free(qt);
        free(cmd);
        unlink(target);
    }
    if (!err) {
        remember_migration(uuid, &s);
        xa_log_info(MOD, "VM %s suspended: %lld bytes in %lld ms", uuid,
                    (long long)s.transferred, (long long)s.total_ms);
        dom_kill(d);
    } else {
        /* The guest goes on where it was. */
        xa_error_free(dom_command(d, "cont", NULL, NULL));
        set_state(d, XA_HV_RUNNING);
    }
    pthread_mutex_unlock(&d->op);
    free(target);
    free(quoted);
    free(uri);
    dom_unref(d);
    return err;
}

static struct xa_error *
kvm_resume(const struct xa_hv_domain_config *cfg, const char *path,
           int64_t *domid)
{
    if (!path || !*path) {
        return xa_error_internal("VM %s has no suspend image", cfg->uuid);
    }
    char *raw = NULL;
    if (file_starts_with(path, "QFI\xfb", 4)) {
        raw = xa_asprintf("%s/%s.resume", base_dir, cfg->uuid);
        char *qp = sh_quote(path), *qr = sh_quote(raw);
        char *cmd =
            xa_asprintf("qemu-img convert -f qcow2 -O raw %s %s", qp, qr);
        int rc = system(cmd);
        free(qp);
        free(qr);
        free(cmd);
        if (rc != 0) {
            free(raw);
            return xa_error_internal("reading suspend image %s failed (%d)",
                                     path, rc);
        }
    }
    struct spawn sp = {cfg, BOOT_FILE, raw ? raw : path, -1};
    struct xa_error *err = spawn(&sp, domid);
    if (raw) {
        unlink(raw);
        free(raw);
    }
    return err;
}

/* After a failed live migration: the guest runs on here.  QEMU may
 * still be finishing the migration ("finish-migrate": "cont" is refused
 * then) or restart the guest itself; "cont" until it runs. */
static void
resume_after_migrate(struct kvm_dom *d)
{
    for (int i = 0; i < 100; i++) {
        json_object *st = NULL;
        struct xa_error *err = dom_command(d, "query-status", NULL, &st);
        const char *s = err ? NULL : json_str(st, "status");
        bool running = s && strcmp(s, "running") == 0;
        bool busy = s && strcmp(s, "finish-migrate") == 0;
        json_object_put(st);
        xa_error_free(err);
        if (running) {
            set_state(d, XA_HV_RUNNING);
            return;
        }
        if (!busy) {
            xa_error_free(dom_command(d, "cont", NULL, NULL));
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    xa_log_err(MOD, "VM %s: not running again after a failed migration",
               d->uuid);
}

/* 'url' is a QEMU migration URI ("tcp:HOST:PORT", "unix:PATH"; or
 * "xapid-fd:N", a descriptor of this process passed to QEMU) optionally
 * followed by "?downtime_ms=N&bandwidth=BYTES_PER_S&hold=1".  With hold,
 * a completed migration leaves QEMU stopped ("postmigrate") instead of
 * killing it: the caller destroys it once the destination runs the
 * guest, or unpauses it ("cont" restarts the source) if that failed. */
static struct xa_error *
kvm_migrate_send(const char *uuid, const char *url, bool live)
{
    struct kvm_dom *d = dom_get(uuid);
    if (!d) {
        return no_domain(uuid);
    }
    char *uri = xa_strdup(url);
    int64_t downtime = 0, bandwidth = 0;
    bool hold = false;
    struct mirror mirrors[16];
    size_t n_mirrors = 0;
    bool bad_mirrors = false;
    char *qs = strchr(uri, '?');
    if (qs) {
        *qs++ = '\0';
        for (char *kv = strtok(qs, "&"); kv; kv = strtok(NULL, "&")) {
            if (strncmp(kv, "downtime_ms=", 12) == 0) {
                downtime = atoll(kv + 12);
            } else if (strncmp(kv, "bandwidth=", 10) == 0) {
                bandwidth = atoll(kv + 10);
            } else if (strcmp(kv, "hold=1") == 0) {
                hold = true;
            } else if (strncmp(kv, "mirror=", 7) == 0) {
                /* DEVICE.FD,DEVICE.FD,...: every disk or none (a disk
                 * left out would arrive empty) */
                for (char *e = kv + 7; *e;) {
                    char *dot = strchr(e, '.');
                    if (!dot || (size_t)(dot - e) >= sizeof mirrors[0].device ||
                        n_mirrors == XA_ARRAY_SIZE(mirrors)) {
                        bad_mirrors = true;
                        break;
                    }
                    struct mirror *m = &mirrors[n_mirrors++];
                    snprintf(m->device, sizeof m->device, "%.*s",
                             (int)(dot - e), e);
                    m->fd = atoi(dot + 1);
                    char *comma = strchr(dot, ',');
                    e = comma ? comma + 1 : dot + strlen(dot);
                }
            }
        }
    }
    if (bad_mirrors) {
        free(uri);
        dom_unref(d);
        return xa_error_internal("VM %s: cannot mirror the disks of %s", uuid,
                                 url);
    }
    pthread_mutex_lock(&d->op);
    struct xa_error *err = NULL;
    if (!live) {
        err = dom_command(d, "stop", NULL, NULL);
    }
    struct xa_kvm_migration_stats s = {0};
    if (!err) {
        err = migrate_out(d, uri, downtime, bandwidth, mirrors, n_mirrors, &s);
    }
    if (!err) {
        remember_migration(uuid, &s);
        xa_log_info(MOD,
                    "VM %s migrated: total %lld ms, downtime %lld ms, "
                    "%lld bytes",
                    uuid, (long long)s.total_ms, (long long)s.downtime_ms,
                    (long long)s.transferred);
        if (hold) {
            set_state(d, XA_HV_PAUSED);
        } else {
            dom_kill(d);
        }
    } else if (live) {
        resume_after_migrate(d);
    } else {
        xa_error_free(dom_command(d, "cont", NULL, NULL));
    }
    pthread_mutex_unlock(&d->op);
    free(uri);
    dom_unref(d);
    return err;
}

static struct xa_error *
kvm_migrate_receive(const struct xa_hv_domain_config *cfg, int fd,
                    int64_t *domid)
{
    struct spawn sp = {cfg, BOOT_FD, NULL, fd};
    return spawn(&sp, domid);
}

/* Runs 'fn' on 'uuid's QEMU with a monitor connection, under its
 * operation lock. */
static struct xa_error *
with_monitor(const char *uuid,
             struct xa_error *(*fn)(struct kvm_dom *d, struct xa_qmp *q,
                                    const void *arg),
             const void *arg)
{
    struct kvm_dom *d = dom_get(uuid);
    if (!d) {
        return no_domain(uuid);
    }
    pthread_mutex_lock(&d->op);
    char *path = dom_file(d, "qmp.sock");
    struct xa_qmp *q = NULL;
    struct xa_error *err = xa_qmp_open(path, QMP_TIMEOUT, &q);
    free(path);
    if (!err) {
        err = fn(d, q, arg);
    }
    xa_qmp_close(q);
    pthread_mutex_unlock(&d->op);
    dom_unref(d);
    return err;
}

/* kvm_disk_export's arguments, for disk_export_on under with_monitor. */
struct disk_export {
    const char *uuid;
    const char *const *devices;
    size_t n;
    char **endpoint;
};

static struct xa_error *
disk_export_on(struct kvm_dom *d, struct xa_qmp *q, const void *arg)
{
    const struct disk_export *x = arg;
    struct xa_error *err = NULL;
    char *sock = dom_file(d, "nbd.sock");
    if (!d->nbd) {
        unlink(sock);
        json_object *data = json_object_new_object();
        json_object_object_add(data, "path", json_object_new_string(sock));
        json_object *addr = json_object_new_object();
        json_object_object_add(addr, "type", json_object_new_string("unix"));
        json_object_object_add(addr, "data", data);
        json_object *a = json_object_new_object();
        json_object_object_add(a, "addr", addr);
        err = xa_qmp_call(q, "nbd-server-start", a, QMP_TIMEOUT, NULL);
        d->nbd = err == NULL;
    }
    for (size_t i = 0; i < x->n && !err; i++) {
        char *drive = drive_of(q, x->devices[i]);
        if (!drive) {
            err = xa_error_internal("VM %s has no disk %s", x->uuid,
                                    x->devices[i]);
            break;
        }
        char name[32];
        snprintf(name, sizeof name, "vbd%s", x->devices[i]);
        json_object *a = json_object_new_object();
        json_object_object_add(a, "device", json_object_new_string(drive));
        json_object_object_add(a, "name", json_object_new_string(name));
        json_object_object_add(a, "writable", json_object_new_boolean(true));
        free(drive);
        err = xa_qmp_call(q, "nbd-server-add", a, QMP_TIMEOUT, NULL);
    }
    if (err) {
        free(sock);
        return err;
    }
    *x->endpoint = sock;
    return NULL;
}

/* Storage motion's destination: the incoming domain serves the disks
 * 'devices' writable over NBD (export "vbd<device>") on a unix socket in
 * its directory until it runs (await_migrated_in stops the server). */
static struct xa_error *
kvm_disk_export(const char *uuid, const char *const *devices, size_t n,
                char **endpoint)
{
    struct disk_export x = {uuid, devices, n, endpoint};
    return with_monitor(uuid, disk_export_on, &x);
}

static bool
kvm_last_migration(const char *uuid, struct xa_hv_migration_stats *out)
{
    struct xa_kvm_migration_stats s;
    if (!xa_kvm_last_migration(uuid, &s)) {
        return false;
    }
    memset(out, 0, sizeof *out);
    out->total_ms = s.total_ms;
    out->downtime_ms = s.downtime_ms;
    out->transferred = s.transferred;
    return true;
}

static void
fill_info(struct kvm_dom *d, struct xa_hv_domain_info *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->uuid, sizeof out->uuid, "%s", d->uuid);
    out->domid = d->domid;
    out->state = d->state;
    out->memory_actual = d->memory;
    out->vcpus = d->vcpus;
    out->start_time = d->start_time;
    int64_t rss;
    proc_usage(d->pid, &rss, &out->cpu_seconds);
}

static struct xa_error *
kvm_list(struct xa_hv_domain_info **out, size_t *n)
{
    pthread_mutex_lock(&lock);
    size_t count = 0;
    for (struct kvm_dom *d = doms; d; d = d->next) {
        count++;
    }
    *out = xa_calloc(count + 1, sizeof **out);
    *n = 0;
    for (struct kvm_dom *d = doms; d; d = d->next) {
        fill_info(d, &(*out)[(*n)++]);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static struct xa_error *
kvm_get_info(const char *uuid, struct xa_hv_domain_info *out)
{
    pthread_mutex_lock(&lock);
    struct kvm_dom *d = doms;
    while (d && strcmp(d->uuid, uuid) != 0) {
        d = d->next;
    }
    if (d) {
        fill_info(d, out);
    }
    pthread_mutex_unlock(&lock);
    return d ? NULL : no_domain(uuid);
}

/* No guest agent talks to this backend (yet): nothing to report. */
static struct xa_error *
kvm_guest_info(const char *uuid, struct xa_hv_guest_info *out)
{
    XA_UNUSED(uuid);
    out->present = false;
    return NULL;
}

static struct xa_error *
kvm_console(const char *uuid, enum xa_hv_console_kind kind, char **endpoint)
{
    struct kvm_dom *d = dom_get(uuid);
    if (!d) {
        return no_domain(uuid);
    }
    *endpoint =
        xa_asprintf("unix:%s/%s", d->dir,
                    kind == XA_HV_CONSOLE_TEXT ? "serial.sock" : "vnc.sock");
    dom_unref(d);
    return NULL;
}

/* ---- hot-plug ------------------------------------------------------------ */

/* device_add of 'props' (a "driver" and its properties; taken) into the
 * root port 'port' (device_port()), slot 0, the only one it has. */
static struct xa_error *
hotplug_device(struct xa_qmp *q, json_object *props, const char *port,
               const char *device)
{
    if (!port) {
        json_object_put(props);
        return xa_error_internal("QEMU has no hot-plug slot for device %s "
                                 "(q35 machines only: disks 0-%d, NICs 0-%d)",
                                 device, DISK_PORTS - 1, NIC_PORTS - 1);
    }
    json_object_object_add(props, "bus", json_object_new_string(port));
    json_object_object_add(props, "addr", json_object_new_string("0"));
    return xa_qmp_call(q, "device_add", props, QMP_TIMEOUT, NULL);
}

/* device_del of 'id', then waits for the guest to let it go (PCIe
 * hot-plug in the guest); DEVICE_DETACH_REJECTED when it does not in
 * UNPLUG_TIMEOUT.  QEMU keeps the request: a guest that acts later still
 * removes the device. */
static struct xa_error *
unplug_device(struct xa_qmp *q, const char *uuid, const char *id)
{
    json_object *a = json_object_new_object();
    json_object_object_add(a, "id", json_object_new_string(id));
    struct xa_error *err = xa_qmp_call(q, "device_del", a, QMP_TIMEOUT, NULL);
    double deadline = xa_monotonic() + UNPLUG_TIMEOUT;
    while (!err) {
        double left = deadline - xa_monotonic();
        json_object *data = NULL;
        if (left <= 0 || !xa_qmp_wait_event(q, "DEVICE_DELETED", left, &data)) {
            xa_log_warn(MOD, "VM %s: the guest did not release %s", uuid, id);
            err = xa_error_new("DEVICE_DETACH_REJECTED", 3, "", id,
                               "the guest did not release the device (no "
                               "PCIe hot-plug support in the guest?)");
            break;
        }
        const char *dev = json_str(data, "device");
        bool ours = dev && strcmp(dev, id) == 0;
        json_object_put(data);
        if (ours) {
            break;
        }
    }
    return err;
}

static json_object *
json_pairs(const char *k1, json_object *v1, const char *k2, json_object *v2)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, k1, v1);
    if (k2) {
        json_object_object_add(o, k2, v2);
    }
    return o;
}

static struct xa_error *
plug_disk_on(struct kvm_dom *d, struct xa_qmp *q, const void *arg)
{
    XA_UNUSED(d);
    const struct xa_hv_disk *k = arg;
    if (k->cdrom || !k->path) {
        return xa_error_internal("QEMU cannot hot-plug a CD drive (IDE)");
    }
    struct stat st;
    bool blk = stat(k->path, &st) == 0 && S_ISBLK(st.st_mode);
    char node[32];
    snprintf(node, sizeof node, "vbd%s", k->device);
    json_object *file = json_pairs(
        "driver", json_object_new_string(blk ? "host_device" : "file"),
        "filename", json_object_new_string(k->path));
    json_object *bd = json_pairs(
        "driver",
        json_object_new_string(k->format && *k->format ? k->format : "raw"),
        "node-name", json_object_new_string(node));
    json_object_object_add(bd, "file", file);
    json_object_object_add(bd, "read-only",
                           json_object_new_boolean(k->read_only));
    struct xa_error *err =
        xa_qmp_call(q, "blockdev-add", bd, QMP_TIMEOUT, NULL);
    if (!err) {
        json_object *dev =
            json_pairs("driver", json_object_new_string("virtio-blk-pci"),
                       "drive", json_object_new_string(node));
        json_object_object_add(dev, "id", json_object_new_string(node));
        char *port = device_port("pvbd", k->device, DISK_PORTS);
        err = hotplug_device(q, dev, port, k->device);
        free(port);
        if (err) {
            xa_error_free(xa_qmp_call(q, "blockdev-del",
                                      json_pairs("node-name",
                                                 json_object_new_string(node),
                                                 NULL, NULL),
                                      QMP_TIMEOUT, NULL));
        }
    }
    return err;
}

static struct xa_error *
unplug_disk_on(struct kvm_dom *d, struct xa_qmp *q, const void *arg)
{
    char id[32];
    snprintf(id, sizeof id, "vbd%s", (const char *)arg);
    struct xa_error *err = unplug_device(q, d->uuid, id);
    if (!err) {
        /* A hot-plugged disk's node; a disk of the command line (-drive)
         * went with its device, so an error here means nothing. */
        xa_error_free(xa_qmp_call(
            q, "blockdev-del",
            json_pairs("node-name", json_object_new_string(id), NULL, NULL),
            QMP_TIMEOUT, NULL));
    }
    return err;
}

static struct xa_error *
kvm_plug_disk(const char *uuid, const struct xa_hv_disk *disk)
{
    return with_monitor(uuid, plug_disk_on, disk);
}

static struct xa_error *
kvm_unplug_disk(const char *uuid, const char *device)
{
    return with_monitor(uuid, unplug_disk_on, device);
}

/* Adds (or, 'add' false, drops) 'vif' to the VIFs 'd' put on bridges. */
static void
dom_track_vif(struct kvm_dom *d, const char *vif, bool add)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < d->n_vifs; i++) {
        if (strcmp(d->vifs[i], vif) == 0) {
            free(d->vifs[i]);
            d->vifs[i] = d->vifs[--d->n_vifs];
            break;
        }
    }
    if (add) {
        d->vifs = xa_realloc(d->vifs, (d->n_vifs + 1) * sizeof *d->vifs);
        d->vifs[d->n_vifs++] = xa_strdup(vif);
    }
    meta_write(d); /* for a restarted xapid: which VIFs to unplug */
    pthread_mutex_unlock(&lock);
}

/* A new tap, handed to QEMU (getfd) as the backend of a new virtio NIC,
 * then put on the network's bridge. */
static struct xa_error *
plug_nic_on(struct kvm_dom *d, struct xa_qmp *q, const void *arg)
{
    const struct xa_hv_nic *n = arg;
    char *tap = xa_asprintf("tap%lld.%s", (long long)d->domid, n->device);
    char *netdev = xa_asprintf("net%s", n->device);
    char *id = xa_asprintf("nic%s", n->device);
    int fd = -1;
    struct xa_error *err = tap_open(tap, n->mtu, &fd);
    if (!err) {
        err = xa_qmp_call_fd(
            q, "getfd",
            json_pairs("fdname", json_object_new_string(netdev), NULL, NULL),
            fd, QMP_TIMEOUT, NULL);
        close(fd); /* QEMU holds it now (or nothing does: the tap goes) */
    }
    if (!err) {
        json_object *nd = json_pairs("type", json_object_new_string("tap"),
                                     "id", json_object_new_string(netdev));
        json_object_object_add(nd, "fd", json_object_new_string(netdev));
        json_object_object_add(nd, "vhost", json_object_new_boolean(false));
        err = xa_qmp_call(q, "netdev_add", nd, QMP_TIMEOUT, NULL);
        if (err) {
            xa_error_free(
                xa_qmp_call(q, "closefd",
                            json_pairs("fdname", json_object_new_string(netdev),
                                       NULL, NULL),
                            QMP_TIMEOUT, NULL));
        }
    }
    if (!err) {
        json_object *dev =
            json_pairs("driver", json_object_new_string("virtio-net-pci"),
                       "netdev", json_object_new_string(netdev));
        json_object_object_add(dev, "id", json_object_new_string(id));
        json_object_object_add(dev, "mac", json_object_new_string(n->mac));
        char *port = device_port("pnic", n->device, NIC_PORTS);
        err = hotplug_device(q, dev, port, n->device);
        free(port);
        if (err) {
            xa_error_free(xa_qmp_call(
                q, "netdev_del",
                json_pairs("id", json_object_new_string(netdev), NULL, NULL),
                QMP_TIMEOUT, NULL));
        }
    }
    char *vif = err ? NULL : xa_net_vif_of(d->uuid, n->device);
    if (vif) {
        dom_track_vif(d, vif, true);
        err = xa_net_plug_vif(vif, tap);
    }
    free(vif);
    free(tap);
    free(netdev);
    free(id);
    return err;
}

/* The NIC goes (the guest lets go of it), then its netdev, whose tap
 * vanishes with QEMU's descriptor, then its switch port. */
static struct xa_error *
unplug_nic_on(struct kvm_dom *d, struct xa_qmp *q, const void *arg)
{
    const char *device = arg;
    char *id = xa_asprintf("nic%s", device);
    char *netdev = xa_asprintf("net%s", device);
    struct xa_error *err = unplug_device(q, d->uuid, id);
    if (!err) {
        err = xa_qmp_call(
            q, "netdev_del",
            json_pairs("id", json_object_new_string(netdev), NULL, NULL),
            QMP_TIMEOUT, NULL);
    }
    char *vif = err ? NULL : xa_net_vif_of(d->uuid, device);
    if (vif) {
        dom_track_vif(d, vif, false);
        err = xa_net_unplug_vif(vif);
    }
    free(vif);
    free(id);
    free(netdev);
    return err;
}

static struct xa_error *
kvm_plug_nic(const char *uuid, const struct xa_hv_nic *nic)
{
    return with_monitor(uuid, plug_nic_on, nic);
}

static struct xa_error *
kvm_unplug_nic(const char *uuid, const char *device)
{
    return with_monitor(uuid, unplug_nic_on, device);
}

const struct xa_hv_driver xa_hv_kvm_driver = {
    .name = "kvm",
    .init = kvm_init,
    .fini = kvm_fini,
    .host_memory = kvm_host_memory,
    .create = kvm_create,
    .unpause = kvm_unpause,
    .pause = kvm_pause,
    .shutdown = kvm_shutdown,
    .destroy = kvm_destroy,
    .hard_reboot = kvm_hard_reboot,
    .suspend = kvm_suspend,
    .resume = kvm_resume,
    .migrate_send = kvm_migrate_send,
    .migrate_receive = kvm_migrate_receive,
    .disk_export = kvm_disk_export,
    .last_migration = kvm_last_migration,
    .list = kvm_list,
    .get_info = kvm_get_info,
    .guest_info = kvm_guest_info,
    .console = kvm_console,
    .plug_disk = kvm_plug_disk,
    .unplug_disk = kvm_unplug_disk,
    .plug_nic = kvm_plug_nic,
    .unplug_nic = kvm_unplug_nic,
};
