/* sim.c - the simulated hypervisor: domains in memory.
 *
 * Stands in for Xen or KVM wherever real guests are not the point: the
 * API's state machine, scale tests, fault handling.  Every operation
 * updates an in-memory table of domains under one mutex; optional delays
 * make operations take time like real ones, and injected faults make the
 * Nth call of an operation fail so tests can prove the callers roll back.
 * See sim.h for the knobs. */
#include "hypervisor/sim/sim.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>

#include "hmap.h"
#include "hypervisor/hv-driver.h"
#include "log.h"

#define MIB ((int64_t)1 << 20)
#define GIB ((int64_t)1 << 30)

/* The operations the knobs can name, in one table so counters, faults
 * and delays share indexes. */
enum sim_op {
    OP_CREATE,
    OP_UNPAUSE,
    OP_PAUSE,
    OP_SHUTDOWN,
    OP_DESTROY,
    OP_HARD_REBOOT,
    OP_SUSPEND,
    OP_RESUME,
    OP_MIGRATE_SEND,
    OP_MIGRATE_RECEIVE,
    OP_PLUG_DISK,
    OP_UNPLUG_DISK,
    OP_PLUG_NIC,
    OP_UNPLUG_NIC,
    OP_SET_MEMORY_TARGET,
    OP__MAX
};

static const char *const op_names[OP__MAX] = {
    "create",          "unpause",    "pause",
    "shutdown",        "destroy",    "hard_reboot",
    "suspend",         "resume",     "migrate_send",
    "migrate_receive", "plug_disk",  "unplug_disk",
    "plug_nic",        "unplug_nic", "set_memory_target",
};

#define MAX_FAULTS 32

struct sim_domain {
    char uuid[37];
    int64_t domid;
    enum xa_hv_state state;
    int64_t memory; /* bytes the domain holds */
    int64_t vcpus;
    unsigned n_nics;
    bool hvm;
    double start_time;   /* wall clock, for VM_metrics */
    double started_mono; /* monotonic, for the agent delay */
    bool local_incoming; /* a localhost migration is under way */
    int64_t local_domid; /* the id it will end with */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct xa_hmap domains; /* uuid -> struct sim_domain */
static int64_t next_domid = 1;
static int64_t host_total;          /* bytes */
static int64_t dom0_reserve;        /* bytes the control domain holds */
static int64_t used;                /* bytes held by domains */
static uint64_t calls[OP__MAX];     /* calls so far, per operation */
static uint64_t faults[MAX_FAULTS]; /* (op << 32) | call number */
static size_t n_faults;
static int64_t delay_ms[OP__MAX];
static int64_t agent_delay_ms;
/* the live-migration model (see migration_model) */
static double mig_bw = 10000.0 * 1e6 / 8; /* bytes/s: 10 Gbit/s */
static double mig_dirty = 64.0 * MIB;     /* bytes/s the guest dirties */
static double mig_scale = 0.001;

static int
op_index(const char *name, size_t len)
{
    if (len == 5 && strncmp(name, "start", 5) == 0) {
        return OP_CREATE;
    }
    if (len == 6 && strncmp(name, "reboot", 6) == 0) {
        return OP_HARD_REBOOT;
    }
    for (int i = 0; i < OP__MAX; i++) {
        if (strlen(op_names[i]) == len &&
            strncmp(op_names[i], name, len) == 0) {
            return i;
        }
    }
    return -1;
}

/* Parses "op:N,op:N" (faults) or "op:N" / "N" (delays: a bare number
 * applies to every operation).  Returns false on a malformed spec. */
static bool
parse_spec(const char *spec, bool is_fault)
{
    const char *p = spec;
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        char num[32];
        if (!colon) {
            if (is_fault || len == 0 || len >= sizeof num) {
                return false;
            }
            memcpy(num, p, len);
            num[len] = '\0';
            int64_t v;
            if (!xa_parse_int64(num, &v) || v < 0) {
                return false;
            }
            for (int i = 0; i < OP__MAX; i++) {
                delay_ms[i] = v;
            }
        } else {
            int op = op_index(p, (size_t)(colon - p));
            size_t nlen = len - (size_t)(colon - p) - 1;
            int64_t v;
            if (op < 0 || nlen == 0 || nlen >= sizeof num) {
                return false;
            }
            memcpy(num, colon + 1, nlen);
            num[nlen] = '\0';
            if (!xa_parse_int64(num, &v) || v < 0) {
                return false;
            }
            if (is_fault) {
                if (n_faults == MAX_FAULTS || v == 0) {
                    return false;
                }
                faults[n_faults++] = ((uint64_t)op << 32) | (uint64_t)v;
            } else {
                delay_ms[op] = v;
            }
        }
        p = end ? end + 1 : NULL;
    }
    return true;
}

static int64_t
machine_memory(void)
{
    struct sysinfo si;
    if (sysinfo(&si) == 0) {
        return (int64_t)si.totalram * si.mem_unit;
    }
    return 16 * GIB;
}

/* The control domain's share, by the rule the installer uses (see the
 * dom0 row bootstrap makes), so the simulated free memory agrees with
 * what the database shows for dom0. */
static int64_t
dom0_memory(int64_t total)
{
    int64_t m = 752 * MIB + total / 20;
    if (m > 8 * GIB) {
        m = 8 * GIB;
    }
    if (total > 0 && m > total / 2) {
        m = total / 2;
    }
    return m / MIB * MIB;
}

int
xa_sim_configure(const char *fault_spec, const char *delay_spec,
                 int64_t agent_ms, int64_t host_memory)
{
    pthread_mutex_lock(&lock);
    memset(calls, 0, sizeof calls);
    memset(delay_ms, 0, sizeof delay_ms);
    n_faults = 0;
    bool ok = parse_spec(fault_spec, true) && parse_spec(delay_spec, false);
    agent_delay_ms = agent_ms > 0 ? agent_ms : 0;
    host_total = host_memory > 0 ? host_memory : machine_memory();
    dom0_reserve = dom0_memory(host_total);
    pthread_mutex_unlock(&lock);
    return ok ? 0 : -1;
}

void
xa_sim_reset(void)
{
    pthread_mutex_lock(&lock);
    xa_hmap_clear(&domains, free);
    used = 0;
    next_domid = 1;
    pthread_mutex_unlock(&lock);
}

unsigned
xa_sim_domain_count(void)
{
    pthread_mutex_lock(&lock);
    unsigned n = (unsigned)xa_hmap_count(&domains);
    pthread_mutex_unlock(&lock);
    return n;
}

static int64_t
env_int(const char *name, int64_t dflt)
{
    const char *s = getenv(name);
    int64_t v;
    return s && xa_parse_int64(s, &v) ? v : dflt;
}

static struct xa_error *
sim_init(void)
{
    int64_t mb = env_int("XAPID_SIM_HOST_MEMORY_MB", 0);
    if (xa_sim_configure(getenv("XAPID_SIM_FAULTS"),
                         getenv("XAPID_SIM_DELAY_MS"),
                         env_int("XAPID_SIM_AGENT_DELAY_MS", 0),
                         mb > 0 ? mb * MIB : 0) != 0) {
        return xa_error_internal("cannot parse XAPID_SIM_FAULTS or "
                                 "XAPID_SIM_DELAY_MS");
    }
    int64_t v = env_int("XAPID_SIM_MIGRATE_MBIT", 0);
    if (v > 0) {
        mig_bw = (double)v * 1e6 / 8;
    }
    v = env_int("XAPID_SIM_DIRTY_MB", -1);
    if (v >= 0) {
        mig_dirty = (double)v * MIB;
    }
    v = env_int("XAPID_SIM_MIGRATE_SCALE_PERMILLE", -1);
    if (v >= 0) {
        mig_scale = (double)v / 1000.0;
    }
    return NULL;
}

static void
sim_fini(void)
{
    xa_sim_reset();
}

/* Counts a call of 'op', sleeps its delay (outside the lock, so slow
 * operations on different domains overlap as on a real host) and tells
 * whether this call is one a fault was injected into. */
static struct xa_error *
enter(enum sim_op op)
{
    pthread_mutex_lock(&lock);
    uint64_t n = ++calls[op];
    int64_t d = delay_ms[op];
    bool fail = false;
    for (size_t i = 0; i < n_faults; i++) {
        if (faults[i] == (((uint64_t)op << 32) | n)) {
            fail = true;
        }
    }
    pthread_mutex_unlock(&lock);
    if (d > 0) {
        struct timespec ts = {d / 1000, (long)(d % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (fail) {
        return xa_error_internal("simulated failure of %s (call %" PRIu64 ")",
                                 op_names[op], n);
    }
    return NULL;
}

static struct xa_error *
no_domain(const char *uuid)
{
    return xa_error_internal("sim: no domain for VM %s", uuid);
}

static struct xa_error *
sim_host_memory(int64_t *total, int64_t *free_bytes)
{
    pthread_mutex_lock(&lock);
    *total = host_total;
    *free_bytes = host_total - dom0_reserve - used;
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* Adds a domain built from 'cfg' in state 'state'; with the lock held. */
/* XAPID_SIM_DOMAINS_FILE names a file that always lists the uuids of the
 * running domains, one a line (replaced whole): tests read what a host
 * really runs even when its API does not answer. */
static void
publish_locked(void)
{
    const char *path = getenv("XAPID_SIM_DOMAINS_FILE");
    if (!path || !*path) {
        return;
    }
    char *tmp = xa_asprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f) {
        XA_HMAP_FOR_EACH (slot, &domains) {
            fprintf(f, "%s\n", (const char *)slot->key);
        }
        if (fclose(f) == 0) {
            rename(tmp, path);
        }
    }
    free(tmp);
}

static struct xa_error *
add_domain(const struct xa_hv_domain_config *cfg, enum xa_hv_state state,
           int64_t *domid)
{
    if (xa_hmap_get(&domains, cfg->uuid)) {
        return xa_error_internal("sim: VM %s already has a domain", cfg->uuid);
    }
    int64_t mem =
        cfg->memory_target > 0 ? cfg->memory_target : cfg->memory_static_max;
    int64_t avail = host_total - dom0_reserve - used;
    if (mem > avail) {
        char need[32], have[32];
        snprintf(need, sizeof need, "%" PRId64, mem);
        snprintf(have, sizeof have, "%" PRId64, avail);
        return xa_error_new("HOST_NOT_ENOUGH_FREE_MEMORY", 2, need, have);
    }
    struct sim_domain *d = xa_calloc(1, sizeof *d);
    snprintf(d->uuid, sizeof d->uuid, "%s", cfg->uuid);
    d->domid = next_domid++;
    d->state = state;
    d->memory = mem;
    d->vcpus = cfg->vcpus_at_startup > 0 ? cfg->vcpus_at_startup : 1;
    d->n_nics = (unsigned)cfg->n_nics;
    d->hvm = cfg->hvm;
    d->start_time = xa_now();
    d->started_mono = xa_monotonic();
    used += mem;
    xa_hmap_put(&domains, d->uuid, d);
    publish_locked();
    if (domid) {
        *domid = d->domid;
    }
    return NULL;
}

static void
drop_domain(struct sim_domain *d)
{
    used -= d->memory;
    xa_hmap_remove(&domains, d->uuid);
    free(d);
    publish_locked();
}

static struct xa_error *
sim_create(const struct xa_hv_domain_config *cfg, int64_t *domid)
{
    struct xa_error *err = enter(OP_CREATE);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    err = add_domain(cfg, XA_HV_PAUSED, domid);
    pthread_mutex_unlock(&lock);
    return err;
}

/* Moves an existing domain between states; 'from' lists the states the
 * move is valid from (a bit per enum xa_hv_state). */
static struct xa_error *
set_state(enum sim_op op, const char *uuid, unsigned from, enum xa_hv_state to)
{
    struct xa_error *err = enter(op);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    if (!d) {
        err = no_domain(uuid);
    } else if (!(from & (1u << d->state))) {
        err = xa_error_internal("sim: %s: domain of %s is in the wrong state",
                                op_names[op], uuid);
    } else {
        d->state = to;
    }
    pthread_mutex_unlock(&lock);
    return err;
}

static struct xa_error *
sim_unpause(const char *uuid)
{
    return set_state(OP_UNPAUSE, uuid, 1u << XA_HV_PAUSED | 1u << XA_HV_RUNNING,
                     XA_HV_RUNNING);
}

static struct xa_error *
sim_pause(const char *uuid)
{
    return set_state(OP_PAUSE, uuid, 1u << XA_HV_RUNNING, XA_HV_PAUSED);
}

static struct xa_error *
sim_shutdown(const char *uuid, enum xa_hv_shutdown_reason reason,
             double timeout, int64_t *new_domid)
{
    XA_UNUSED(timeout); /* the simulated guest always obeys at once */
    struct xa_error *err = enter(OP_SHUTDOWN);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    if (!d) {
        err = no_domain(uuid);
    } else if (d->state != XA_HV_RUNNING) {
        /* A paused guest cannot react to the request. */
        char t[32];
        snprintf(t, sizeof t, "%g", timeout);
        err = xa_error_new("VM_SHUTDOWN_TIMEOUT", 2, uuid, t);
    } else if (reason == XA_HV_POWEROFF) {
        drop_domain(d);
    } else {
        d->domid = next_domid++;
        d->start_time = xa_now();
        d->started_mono = xa_monotonic();
        if (new_domid) {
            *new_domid = d->domid;
        }
    }
    pthread_mutex_unlock(&lock);
    return err;
}

static struct xa_error *
sim_destroy(const char *uuid)
{
    struct xa_error *err = enter(OP_DESTROY);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    if (d) {
        drop_domain(d);
    }
    /* Destroying what is already gone is not an error: that is the state
     * the caller wants. */
    pthread_mutex_unlock(&lock);
    return NULL;
}

static struct xa_error *
sim_hard_reboot(const struct xa_hv_domain_config *cfg, int64_t *new_domid)
{
    struct xa_error *err = enter(OP_HARD_REBOOT);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, cfg->uuid);
    if (d) {
        drop_domain(d);
    }
    err = add_domain(cfg, XA_HV_RUNNING, new_domid);
    pthread_mutex_unlock(&lock);
    return err;
}

static struct xa_error *
sim_suspend(const char *uuid, const char *path)
{
    struct xa_error *err = enter(OP_SUSPEND);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    if (!d) {
        err = no_domain(uuid);
    } else {
        /* Leaves a small image so resume can tell a real save from a
         * stray file. */
        FILE *f = path && *path ? fopen(path, "w") : NULL;
        if (f) {
            fprintf(f, "xapid-sim-image %s %" PRId64 "\n", uuid, d->memory);
            fclose(f);
        }
        drop_domain(d);
    }
    pthread_mutex_unlock(&lock);
    return err;
}

static struct xa_error *
sim_resume(const struct xa_hv_domain_config *cfg, const char *path,
           int64_t *domid)
{
    XA_UNUSED(path);
    struct xa_error *err = enter(OP_RESUME);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    err = add_domain(cfg, XA_HV_PAUSED, domid);
    pthread_mutex_unlock(&lock);
    return err;
}

/* The pre-copy model of a live migration: round 0 sends all memory,
 * each later round what the guest dirtied while the previous one was on
 * the wire, until what is left fits the downtime target or the rounds
 * stop shrinking it; then the domain pauses for the final copy.  The
 * figures are those of a real link (mig_bw, mig_dirty); the sleep is
 * that time times mig_scale, so hundreds of migrations take seconds. */
#define MIG_MAX_ROUNDS     8
#define MIG_TARGET_DOWN_MS 30 /* what the final copy may take */
#define MIG_FIXED_DOWN_MS  2  /* device state, unpause on the receiver */

static struct xa_hv_migration_stats
migration_model(int64_t memory, bool live)
{
    struct xa_hv_migration_stats st = {0};
    double left = (double)memory, secs = 0, sent = 0;
    if (live) {
        double target = mig_bw * MIG_TARGET_DOWN_MS / 1000.0;
        for (int r = 0; r < MIG_MAX_ROUNDS; r++) {
            double t = left / mig_bw;
            sent += left;
            secs += t;
            st.rounds++;
            double dirty = mig_dirty * t;
            if (dirty > (double)memory) {
                dirty = (double)memory;
            }
            bool shrinking = dirty < left * 0.9;
            left = dirty;
            if (left <= target || !shrinking) {
                break;
            }
        }
    }
    double down = left / mig_bw + MIG_FIXED_DOWN_MS / 1000.0;
    sent += left;
    secs += down;
    st.total_ms = (int64_t)(secs * 1000.0 + 0.5);
    st.downtime_ms = (int64_t)(down * 1000.0 + 0.5);
    st.transferred = (int64_t)sent;
    return st;
}

/* Figures of finished migrations, after their domains left. */
static struct {
    char uuid[37];
    struct xa_hv_migration_stats s;
} mig_done[64];
static size_t mig_next;

static struct xa_error *
sim_migrate_send(const char *uuid, const char *url, bool live)
{
    XA_UNUSED(url);
    struct xa_error *err = enter(OP_MIGRATE_SEND);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    int64_t mem = d ? d->memory : 0;
    pthread_mutex_unlock(&lock);
    if (!d) {
        return no_domain(uuid);
    }
    struct xa_hv_migration_stats st = migration_model(mem, live);
    /* The guest keeps running during the rounds: sleep unlocked. */
    double wait = (double)st.total_ms / 1000.0 * mig_scale;
    if (wait > 0) {
        struct timespec ts = {(time_t)wait,
                              (long)((wait - (double)(time_t)wait) * 1e9)};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&lock);
    d = xa_hmap_get(&domains, uuid);
    if (!d) {
        err = xa_error_internal("sim: VM %s vanished during migration", uuid);
    } else if (d->local_incoming) {
        /* localhost migration: the same table entry becomes the new
         * domain under the id the receiver handed out */
        d->domid = d->local_domid;
        d->local_incoming = false;
    } else {
        drop_domain(d); /* it lives on the receiver now */
    }
    if (!err) {
        snprintf(mig_done[mig_next].uuid, 37, "%s", uuid);
        mig_done[mig_next].s = st;
        mig_next = (mig_next + 1) % XA_ARRAY_SIZE(mig_done);
    }
    pthread_mutex_unlock(&lock);
    return err;
}

/* Builds the incoming domain paused; the caller unpauses it once the
 * sender is done, or destroys it when the sender failed.  A domain of
 * the same VM already here means a localhost migration. */
static struct xa_error *
sim_migrate_receive(const struct xa_hv_domain_config *cfg, int fd,
                    int64_t *domid)
{
    XA_UNUSED(fd);
    struct xa_error *err = enter(OP_MIGRATE_RECEIVE);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, cfg->uuid);
    if (d) {
        d->local_incoming = true;
        d->local_domid = next_domid++;
        *domid = d->local_domid;
    } else {
        err = add_domain(cfg, XA_HV_PAUSED, domid);
    }
    pthread_mutex_unlock(&lock);
    return err;
}

static bool
sim_last_migration(const char *uuid, struct xa_hv_migration_stats *out)
{
    bool found = false;
    pthread_mutex_lock(&lock);
    /* newest first: the ring may hold several of the same VM */
    for (size_t i = 0; i < XA_ARRAY_SIZE(mig_done) && !found; i++) {
        size_t k = (mig_next + XA_ARRAY_SIZE(mig_done) - 1 - i) %
                   XA_ARRAY_SIZE(mig_done);
        if (strcmp(mig_done[k].uuid, uuid) == 0) {
            *out = mig_done[k].s;
            found = true;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

static void
fill_info(const struct sim_domain *d, struct xa_hv_domain_info *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->uuid, d->uuid, sizeof out->uuid);
    out->domid = d->domid;
    out->state = d->state;
    out->memory_actual = d->memory;
    out->vcpus = d->vcpus;
    /* A deterministic stand-in for CPU use: a tenth of wall time. */
    out->cpu_seconds = (xa_monotonic() - d->started_mono) / 10.0;
    out->start_time = d->start_time;
}

static struct xa_error *
sim_list(struct xa_hv_domain_info **out, size_t *n)
{
    pthread_mutex_lock(&lock);
    size_t count = xa_hmap_count(&domains);
    struct xa_hv_domain_info *a = xa_calloc(count ? count : 1, sizeof *a);
    size_t i = 0;
    XA_HMAP_FOR_EACH (s, &domains) {
        fill_info(s->val, &a[i++]);
    }
    pthread_mutex_unlock(&lock);
    *out = a;
    *n = i;
    return NULL;
}

static struct xa_error *
sim_get_info(const char *uuid, struct xa_hv_domain_info *out)
{
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    if (d) {
        fill_info(d, out);
    }
    pthread_mutex_unlock(&lock);
    return d ? NULL : no_domain(uuid);
}

/* A NULL-terminated key/value array from a list of pairs. */
static char **
kv(size_t n_pairs, const char *const *pairs)
{
    char **a = xa_calloc(2 * n_pairs + 1, sizeof *a);
    for (size_t i = 0; i < 2 * n_pairs; i++) {
        a[i] = xa_strdup(pairs[i]);
    }
    return a;
}

static struct xa_error *
sim_guest_info(const char *uuid, struct xa_hv_guest_info *out)
{
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    if (!d) {
        pthread_mutex_unlock(&lock);
        return no_domain(uuid);
    }
    int64_t domid = d->domid;
    unsigned n_nics = d->n_nics;
    bool ready =
        d->state == XA_HV_RUNNING &&
        (xa_monotonic() - d->started_mono) * 1000.0 >= (double)agent_delay_ms;
    pthread_mutex_unlock(&lock);
    if (!ready) {
        return NULL; /* the agent has not started yet */
    }
    static const char *const os[] = {
        "name",   "Debian GNU/Linux 12 (bookworm)",
        "distro", "debian",
        "major",  "12",
        "minor",  "0",
        "uname",  "6.1.0-sim-amd64",
    };
    static const char *const drivers[] = {
        "major", "9", "minor", "0", "micro", "0", "build", "1",
    };
    static const char *const other[] = {
        "feature-shutdown",
        "1",
        "feature-poweroff",
        "1",
        "feature-reboot",
        "1",
        "feature-suspend",
        "1",
        "feature-vcpu-hotplug",
        "1",
        "has-vendor-device",
        "0",
        "platform-feature-multiprocessor-suspend",
        "1",
    };
    out->present = true;
    out->os_version = kv(XA_ARRAY_SIZE(os) / 2, os);
    out->pv_drivers_version = kv(XA_ARRAY_SIZE(drivers) / 2, drivers);
    out->other = kv(XA_ARRAY_SIZE(other) / 2, other);
    /* One address per NIC, 10.<nic>.<domid / 256>.<domid % 256>: unique
     * per running domain and predictable in tests. */
    out->networks = xa_calloc(4 * n_nics + 1, sizeof *out->networks);
    for (unsigned i = 0; i < n_nics; i++) {
        char *ip = xa_asprintf("10.%u.%" PRId64 ".%" PRId64, i,
                               (domid / 256) % 256, domid % 256);
        out->networks[4 * i] = xa_asprintf("%u/ip", i);
        out->networks[4 * i + 1] = xa_strdup(ip);
        out->networks[4 * i + 2] = xa_asprintf("%u/ipv4/0", i);
        out->networks[4 * i + 3] = ip;
    }
    return NULL;
}

static struct xa_error *
sim_console(const char *uuid, enum xa_hv_console_kind kind, char **endpoint)
{
    pthread_mutex_lock(&lock);
    bool known = xa_hmap_get(&domains, uuid) != NULL;
    pthread_mutex_unlock(&lock);
    if (!known) {
        return no_domain(uuid);
    }
    *endpoint = xa_asprintf("sim:%s:%s", uuid,
                            kind == XA_HV_CONSOLE_VNC ? "rfb" : "vt100");
    return NULL;
}

/* Hot-plug: the simulated guest accepts any device on a live domain. */
static struct xa_error *
device_change(enum sim_op op, const char *uuid, int nic_delta)
{
    struct xa_error *err = enter(op);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    if (!d) {
        err = no_domain(uuid);
    } else if (nic_delta > 0 || (nic_delta < 0 && d->n_nics > 0)) {
        d->n_nics = (unsigned)((int)d->n_nics + nic_delta);
    }
    pthread_mutex_unlock(&lock);
    return err;
}

static struct xa_error *
sim_plug_disk(const char *uuid, const struct xa_hv_disk *disk)
{
    XA_UNUSED(disk);
    return device_change(OP_PLUG_DISK, uuid, 0);
}

static struct xa_error *
sim_unplug_disk(const char *uuid, const char *device)
{
    XA_UNUSED(device);
    return device_change(OP_UNPLUG_DISK, uuid, 0);
}

static struct xa_error *
sim_plug_nic(const char *uuid, const struct xa_hv_nic *nic)
{
    XA_UNUSED(nic);
    return device_change(OP_PLUG_NIC, uuid, 1);
}

static struct xa_error *
sim_unplug_nic(const char *uuid, const char *device)
{
    XA_UNUSED(device);
    return device_change(OP_UNPLUG_NIC, uuid, -1);
}

static struct xa_error *
sim_set_memory_target(const char *uuid, int64_t bytes)
{
    struct xa_error *err = enter(OP_SET_MEMORY_TARGET);
    if (err) {
        return err;
    }
    pthread_mutex_lock(&lock);
    struct sim_domain *d = xa_hmap_get(&domains, uuid);
    if (!d) {
        err = no_domain(uuid);
    } else if (bytes - d->memory > host_total - dom0_reserve - used) {
        err = xa_error_internal("sim: not enough memory to balloon up");
    } else {
        used += bytes - d->memory;
        d->memory = bytes;
    }
    pthread_mutex_unlock(&lock);
    return err;
}

const struct xa_hv_driver xa_hv_sim_driver = {
    .name = "sim",
    .init = sim_init,
    .fini = sim_fini,
    .host_memory = sim_host_memory,
    .create = sim_create,
    .unpause = sim_unpause,
    .pause = sim_pause,
    .shutdown = sim_shutdown,
    .destroy = sim_destroy,
    .hard_reboot = sim_hard_reboot,
    .suspend = sim_suspend,
    .resume = sim_resume,
    .migrate_send = sim_migrate_send,
    .migrate_receive = sim_migrate_receive,
    .last_migration = sim_last_migration,
    .list = sim_list,
    .get_info = sim_get_info,
    .guest_info = sim_guest_info,
    .console = sim_console,
    .plug_disk = sim_plug_disk,
    .unplug_disk = sim_unplug_disk,
    .plug_nic = sim_plug_nic,
    .unplug_nic = sim_unplug_nic,
    .set_memory_target = sim_set_memory_target,
};
