/* xen.c - the Xen backend over libxl (Xen 4.17, Debian's libxen-dev).
 *
 * xapid runs in dom0 and builds guests with libxl, as xl does, with one
 * libxl context shared by every thread (libxl locks it itself; each call
 * here is synchronous and blocks only its caller).  A domain carries its
 * VM's uuid as its Xen handle and as its name, so the driver keeps no
 * table of its own: every entry finds the domain by uuid in libxl's list,
 * and a restarted xapid sees exactly what runs.  Rebuilding a domain
 * (clean reboot) takes the configuration libxl stored for it
 * (libxl_retrieve_domain_configuration), so that survives restarts too.
 *
 * What each entry does:
 *   create        PV (PV_kernel, PV_ramdisk, PV_args), PVH (the same kernel
 *                 fields, with platform:domain_type=pvh) or HVM (boot
 *                 order; needs QEMU in dom0).  Disks: with xapid's hotplug
 *                 scripts installed (hypervisor/xen/scripts, in
 *                 XEN_SCRIPT_DIR), every image goes to blkback (phy) and
 *                 the block script makes it a block device in dom0 (a
 *                 loop device for raw files, qemu-nbd for qcow2); without
 *                 them, qdisk (QEMU in dom0), or phy for block devices.
 *                 NICs: netback's vifD.N, brought up by xapid's vif script
 *                 (else Xen's vif-openvswitch / vif-bridge), then handed
 *                 to the network layer (xa_net_plug_vif), which puts it on
 *                 its network's bridge with xapi's external-ids, as the
 *                 kvm driver does with its taps.  Left paused.
 *   shutdown      the PV control node (libxl_domain_shutdown/_reboot),
 *                 then polls until the guest has shut down and destroys
 *                 the remains; a reboot rebuilds from libxl's stored
 *                 configuration.
 *   suspend       libxl's save stream into the image file, then destroy;
 *   resume        libxl_domain_create_restore from it, paused.
 *   migrate       the same stream into the core's descriptor
 *                 ("xapid-fd:N"), the sender's domain held until the
 *                 destination runs it; the receiver restores on a
 *                 thread of its own (see "live migration").
 *   list, info    libxl_list_domain; host memory from libxl_get_physinfo.
 *   console       the PV console's pty from xenconsoled
 *                 (libxl_console_get_tty), "pty:/dev/pts/N"; VNC from the
 *                 port QEMU wrote to xenstore.
 *   guest_info    what a guest agent wrote under data/ and attr/.
 *   (watcher)     a domain that shuts down with no API operation in
 *                 charge of its VM (the guest powered off, rebooted or
 *                 crashed by itself) gets what the VM's actions_after_*
 *                 say: destroyed (the VM Halted) or rebuilt (Running with
 *                 a new domid); see "domains that shut down by themselves".
 *
 * libxl reports failures through its logger: the first error message of
 * the calling thread's call becomes the INTERNAL_ERROR's text, and all
 * go to the log.  A domain whose build fails is destroyed before the error is
 * returned, so nothing of it stays in xenstore.  A suspend image or
 * migration stream is checked before libxl sees it (check_stream: libxl
 * 4.17 crashes on a bad stream header). */
#include "hypervisor/xen/xen.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libxl.h>
#include <libxl_utils.h>
#include <xenstore.h>

#include "api/vm.h"
#include "log.h"
#include "network/net.h"

#define LOG_MODULE "xen"
#define PAGE       4096
/* libxl's INVALID_DOMID is an int; domain ids are uint32_t. */
#define NO_DOMID   ((uint32_t)INVALID_DOMID)

/* How often a waiting shutdown looks at the domain again. */
#define POLL_NS 100000000L
/* Where xapid's own hotplug scripts (hypervisor/xen/scripts) are
 * installed; libxl runs them with absolute paths. */
#ifndef XEN_SCRIPT_DIR
#    define XEN_SCRIPT_DIR "/usr/libexec/xapid/xen"
#endif

static libxl_ctx *ctx;
static struct xs_handle *xsh;

/* --- libxl's log ----------------------------------------------------------
 * libxl says what went wrong only in log messages; the first error of the
 * thread's current call is what its caller gets to see (the root cause:
 * libxl then logs each layer that gives up). */

static __thread char first_error[512];

/* Notes when a migrating domain stops (in the migration section). */
static void clock_note(const char *msg);

__attribute__((format(printf, 5, 0))) static void
log_vmessage(xentoollog_logger *lg, xentoollog_level level, int errnoval,
             const char *context, const char *format, va_list al)
{
    XA_UNUSED(lg);
    char msg[480];
    vsnprintf(msg, sizeof msg, format, al);
    const char *who = context ? context : "libxl";
    clock_note(msg);
    if (level >= XTL_ERROR) {
        char full[512];
        if (errnoval > 0) {
            snprintf(full, sizeof full, "%s: %s", msg, strerror(errnoval));
        } else {
            snprintf(full, sizeof full, "%s", msg);
        }
        if (!first_error[0]) {
            memcpy(first_error, full, sizeof first_error);
        }
        xa_log_err(LOG_MODULE, "%s: %s", who, full);
    } else if (level >= XTL_WARN) {
        xa_log_warn(LOG_MODULE, "%s: %s", who, msg);
    } else if (level >= XTL_NOTICE) {
        xa_log_info(LOG_MODULE, "%s: %s", who, msg);
    } else {
        xa_log_debug(LOG_MODULE, "%s: %s", who, msg);
    }
}

static void
log_progress(xentoollog_logger *lg, const char *context, const char *doing,
             int percent, unsigned long done, unsigned long total)
{
    XA_UNUSED(lg);
    XA_UNUSED(done);
    XA_UNUSED(total);
    /* The save stream reports every few pages; the ends are enough. */
    if (percent == 0 || percent == 100) {
        xa_log_debug(LOG_MODULE, "%s: %s: %d%%", context ? context : "libxl",
                     doing, percent);
    }
}

static void
log_destroy(xentoollog_logger *lg)
{
    XA_UNUSED(lg); /* static */
}

static xentoollog_logger logger = {
    .vmessage = log_vmessage,
    .progress = log_progress,
    .destroy = log_destroy,
};

static void
clear_error(void)
{
    first_error[0] = '\0';
}

/* The XenAPI error for a failed libxl call 'what' on VM 'uuid'. */
static struct xa_error *
lx_error(const char *what, const char *uuid, int rc)
{
    const char *msg = first_error[0] ? first_error : "no detail from libxl";
    xa_log_err(LOG_MODULE, "%s of %s failed (libxl error %d): %s", what, uuid,
               rc, msg);
    return xa_error_internal("xen: %s: %s (libxl error %d)", what, msg, rc);
}

static struct xa_error *
no_domain(const char *uuid)
{
    return xa_error_internal("xen: no domain for VM %s", uuid);
}

/* --- finding domains ------------------------------------------------------ */

/* What the driver needs to know of one domain. */
struct dom {
    uint32_t domid;
    bool paused, shutdown;
    libxl_shutdown_reason reason;
    uint64_t memkb;
    uint32_t vcpus;
    uint64_t cpu_ns;
    libxl_uuid uuid;
};

static void
dom_from_info(const libxl_dominfo *i, struct dom *d)
{
    d->domid = i->domid;
    d->paused = i->paused;
    d->shutdown = i->shutdown;
    d->reason = i->shutdown_reason;
    d->memkb = i->current_memkb;
    d->vcpus = i->vcpu_online;
    d->cpu_ns = i->cpu_time;
    d->uuid = i->uuid;
}

/* Whether domain 'domid' belongs to a live migration in progress (an
 * incoming domain before its commit, or a sent one held until the
 * destination runs it): see "live migration" below. */
static bool mig_owned(uint32_t domid);

/* Finds the live domain of VM 'uuid' (dying ones are on their way out and
 * count as gone), leaving out domain 'except' and, unless 'all', the
 * domains a migration holds.  False when there is none. */
static bool
find_domain_ex(const char *uuid, uint32_t except, bool all, struct dom *out)
{
    libxl_uuid u;
    if (libxl_uuid_from_string(&u, uuid) != 0) {
        return false;
    }
    int n = 0;
    libxl_dominfo *l = libxl_list_domain(ctx, &n);
    bool found = false;
    for (int i = 0; l && i < n && !found; i++) {
        if (l[i].domid != 0 && !l[i].dying && l[i].domid != except &&
            libxl_uuid_compare(&l[i].uuid, &u) == 0 &&
            (all || !mig_owned(l[i].domid))) {
            dom_from_info(&l[i], out);
            found = true;
        }
    }
    if (l) {
        libxl_dominfo_list_free(l, n);
    }
    return found;
}

/* The domain of VM 'uuid' that API operations act on. */
static bool
find_domain(const char *uuid, struct dom *out)
{
    return find_domain_ex(uuid, NO_DOMID, false, out);
}

/* Destroys whatever domain VM 'uuid' still has but 'except' (the other
 * copy during a localhost migration): after a failed build, libxl
 * normally cleans up itself, but a half-made domain must not stay in
 * xenstore under any circumstances. */
static void
scrub(const char *uuid, uint32_t except)
{
    struct dom d;
    for (int tries = 0; tries < 3 && find_domain_ex(uuid, except, true, &d);
         tries++) {
        xa_log_warn(LOG_MODULE, "destroying leftover domain %u of VM %s",
                    d.domid, uuid);
        libxl_domain_destroy(ctx, d.domid, NULL);
    }
}

/* --- building a configuration ------------------------------------------- */

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

/* PV unless the VM asks for HVM (HVM_boot_policy) or for PVH: xapi's
 * VM.domain_type is not in the driver's configuration, so PVH is chosen
 * with platform:domain_type=pvh (which also overrides the other two). */
static libxl_domain_type
domain_type(const struct xa_hv_domain_config *cfg)
{
    const char *t = platform_get(cfg, "domain_type");
    if (t && strcmp(t, "pvh") == 0) {
        return LIBXL_DOMAIN_TYPE_PVH;
    }
    if (t && strcmp(t, "pv") == 0) {
        return LIBXL_DOMAIN_TYPE_PV;
    }
    if ((t && strcmp(t, "hvm") == 0) || cfg->hvm) {
        return LIBXL_DOMAIN_TYPE_HVM;
    }
    return LIBXL_DOMAIN_TYPE_PV;
}

static char *
dup_or_null(const char *s)
{
    return s && *s ? xa_strdup(s) : NULL;
}

/* "0" -> "xvda", "1" -> "xvdb"; anything else is taken as a device name. */
static char *
vdev_name(const char *userdevice)
{
    int64_t n;
    if (userdevice && xa_parse_int64(userdevice, &n) && n >= 0 && n < 26) {
        return xa_asprintf("xvd%c", (char)('a' + n));
    }
    return xa_strdup(userdevice && *userdevice ? userdevice : "xvda");
}

static bool
is_block_device(const char *path)
{
    return strncmp(path, "/dev/", 5) == 0;
}

/* The path of xapid's hotplug script 'name' when it is installed, else
 * NULL (then Xen's own scripts are used). */
static char *
xapid_script(const char *name)
{
    char *p = xa_asprintf("%s/%s", XEN_SCRIPT_DIR, name);
    if (access(p, X_OK) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

static void
disk_config(const struct xa_hv_disk *k, libxl_device_disk *disk)
{
    libxl_device_disk_init(disk);
    disk->vdev = vdev_name(k->device);
    disk->readwrite = !k->read_only;
    disk->is_cdrom = k->cdrom;
    disk->removable = k->cdrom;
    if (!k->path) {
        disk->format = LIBXL_DISK_FORMAT_EMPTY;
        disk->backend = LIBXL_DISK_BACKEND_QDISK;
        return;
    }
    disk->pdev_path = xa_strdup(k->path);
    char *script = k->cdrom ? NULL : xapid_script("block");
    if (script) {
        /* The script turns the image, whatever its format, into a block
         * device that blkback serves: libxl sees a raw phy disk. */
        disk->script = script;
        disk->format = LIBXL_DISK_FORMAT_RAW;
        disk->backend = LIBXL_DISK_BACKEND_PHY;
        return;
    }
    bool qcow2 = k->format && strcmp(k->format, "qcow2") == 0;
    disk->format = qcow2 ? LIBXL_DISK_FORMAT_QCOW2 : LIBXL_DISK_FORMAT_RAW;
    /* The kernel's blkback serves raw block devices directly; images in
     * files (and every qcow2) go through QEMU's qdisk in dom0. */
    disk->backend = !qcow2 && is_block_device(k->path)
                        ? LIBXL_DISK_BACKEND_PHY
                        : LIBXL_DISK_BACKEND_QDISK;
}

static bool
parse_mac(const char *s, libxl_mac *mac)
{
    unsigned b[6];
    if (!s || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3],
                     &b[4], &b[5]) != 6) {
        return false;
    }
    for (int i = 0; i < 6; i++) {
        (*mac)[i] = (uint8_t)b[i];
    }
    return true;
}

/* Xen's hotplug script for a guest NIC: Open vSwitch's when it is
 * installed (xapi's bridges are OVS bridges), else the Linux bridge one. */
static const char *
vif_script(void)
{
    return access("/usr/bin/ovs-vsctl", X_OK) == 0 ? "vif-openvswitch"
                                                   : "vif-bridge";
}

static struct xa_error *
nic_config(const struct xa_hv_nic *n, libxl_device_nic *nic)
{
    libxl_device_nic_init(nic);
    int64_t devid = 0;
    if (!n->device || !xa_parse_int64(n->device, &devid) || devid < 0) {
        return xa_error_internal("xen: bad VIF device '%s'",
                                 n->device ? n->device : "");
    }
    nic->devid = (libxl_devid)devid;
    if (n->mac && *n->mac && !parse_mac(n->mac, &nic->mac)) {
        return xa_error_new("MAC_INVALID", 1, n->mac);
    }
    if (n->bridge && *n->bridge) {
        nic->bridge = xa_strdup(n->bridge);
    }
    if (n->mtu > 0) {
        nic->mtu = (int)n->mtu;
    }
    nic->script = xapid_script("vif");
    if (!nic->script) {
        nic->script = xa_strdup(vif_script());
    }
    nic->nictype = LIBXL_NIC_TYPE_VIF;
    return NULL;
}

/* Fills 'dc' (initialised here; the caller disposes of it) from 'cfg'. */
static struct xa_error *
domain_config(const struct xa_hv_domain_config *cfg, libxl_domain_config *dc)
{
    libxl_domain_config_init(dc);
    libxl_domain_type type = domain_type(cfg);
    libxl_domain_create_info *c = &dc->c_info;
    c->type = type;
    /* Names must be unique to libxl; name_labels are not.  The uuid is
     * also what xenconsoled names the console log after. */
    c->name = xa_strdup(cfg->uuid);
    if (libxl_uuid_from_string(&c->uuid, cfg->uuid) != 0) {
        return xa_error_uuid_invalid("VM", cfg->uuid);
    }
    libxl_domain_build_info *b = &dc->b_info;
    libxl_domain_build_info_init_type(b, type);
    if (type != LIBXL_DOMAIN_TYPE_HVM && !(cfg->kernel && *cfg->kernel)) {
        return xa_error_internal("xen: VM %s: a %s domain needs PV_kernel "
                                 "(bootloaders are not supported)",
                                 cfg->uuid,
                                 type == LIBXL_DOMAIN_TYPE_PVH ? "PVH" : "PV");
    }
    b->kernel = dup_or_null(cfg->kernel);
    b->ramdisk = dup_or_null(cfg->ramdisk);
    b->cmdline = dup_or_null(cfg->cmdline);
    if (type == LIBXL_DOMAIN_TYPE_HVM) {
        b->u.hvm.boot = xa_strdup(
            cfg->boot_order && *cfg->boot_order ? cfg->boot_order : "cd");
        libxl_defbool_set(&b->u.hvm.vnc.enable, true);
        libxl_defbool_set(&b->u.hvm.vnc.findunused, true);
    }
    int64_t max = cfg->memory_static_max;
    int64_t target = cfg->memory_target > 0 ? cfg->memory_target : max;
    if (max <= 0) {
        return xa_error_internal("xen: VM %s: memory_static_max is %" PRId64,
                                 cfg->uuid, max);
    }
    /* memory_target includes xapi's overhead estimate, which libxl adds
     * on its own: the guest never gets more than its static maximum. */
    b->max_memkb = (uint64_t)(max / 1024);
    b->target_memkb = (uint64_t)((target < max ? target : max) / 1024);
    int64_t vmax = cfg->vcpus_max > 0 ? cfg->vcpus_max : 1;
    int64_t vnow = cfg->vcpus_at_startup > 0 ? cfg->vcpus_at_startup : vmax;
    if (vnow > vmax) {
        vnow = vmax;
    }
    b->max_vcpus = (int)vmax;
    if (libxl_bitmap_alloc(ctx, &b->avail_vcpus, (int)vmax) != 0) {
        return xa_error_internal("xen: cannot allocate a VCPU map");
    }
    libxl_bitmap_set_none(&b->avail_vcpus);
    for (int64_t i = 0; i < vnow; i++) {
        libxl_bitmap_set(&b->avail_vcpus, (int)i);
    }
    if (cfg->n_disks) {
        dc->disks = xa_calloc(cfg->n_disks, sizeof *dc->disks);
        for (size_t i = 0; i < cfg->n_disks; i++) {
            disk_config(&cfg->disks[i], &dc->disks[dc->num_disks++]);
        }
    }
    if (cfg->n_nics) {
        dc->nics = xa_calloc(cfg->n_nics, sizeof *dc->nics);
        for (size_t i = 0; i < cfg->n_nics; i++) {
            struct xa_error *err =
                nic_config(&cfg->nics[i], &dc->nics[dc->num_nics++]);
            if (err) {
                return err;
            }
        }
    }
    return NULL;
}

/* --- VIFs on their bridges --------------------------------------------------
 */

/* Hands netback's interface of each VIF of domain 'domid' (vifD.N, made
 * while libxl built the domain) to the network layer, which puts it on
 * the VIF's network's bridge with xapi's external-ids.  On failure the
 * ones already plugged are unplugged. */
static struct xa_error *
plug_vifs(const char *uuid, uint32_t domid)
{
    int n = 0;
    libxl_device_nic *nics = libxl_device_nic_list(ctx, domid, &n);
    struct xa_error *err = NULL;
    char **done = xa_calloc(n > 0 ? (size_t)n : 1, sizeof *done);
    for (int i = 0; i < n && !err; i++) {
        char dev[16];
        snprintf(dev, sizeof dev, "%d", nics[i].devid);
        done[i] = xa_net_vif_of(uuid, dev);
        if (!done[i]) {
            continue;
        }
        char *ifname = xa_asprintf("vif%u.%d", domid, nics[i].devid);
        err = xa_net_plug_vif(done[i], ifname);
        if (err) {
            xa_log_err(LOG_MODULE, "VM %s: cannot put %s on its bridge: %s",
                       uuid, ifname, err->n_params ? err->params[0] : "");
        }
        free(ifname);
    }
    for (int i = 0; i < n; i++) {
        if (err && done[i]) {
            xa_error_free(xa_net_unplug_vif(done[i]));
        }
        free(done[i]);
    }
    free(done);
    if (nics) {
        libxl_device_nic_list_free(nics, n);
    }
    return err;
}

/* Builds the domain of 'dc' (from nothing, or from the save stream on
 * 'restore_fd' when it is >= 0), with its VIFs on their bridges; leaves
 * it paused.  On failure nothing of it remains.  'other' is a domain of
 * the same VM that may exist meanwhile (the sender's, in a localhost
 * migration), else NO_DOMID. */
static struct xa_error *
build(libxl_domain_config *dc, const char *uuid, int restore_fd, uint32_t other,
      uint32_t *domid)
{
    struct dom old;
    if (find_domain_ex(uuid, other, true, &old)) {
        return xa_error_internal("xen: VM %s already has domain %u", uuid,
                                 old.domid);
    }
    uint32_t id = NO_DOMID;
    clear_error();
    int rc;
    if (restore_fd < 0) {
        rc = libxl_domain_create_new(ctx, dc, &id, NULL, NULL);
    } else {
        libxl_domain_restore_params params;
        libxl_domain_restore_params_init(&params);
        params.checkpointed_stream = LIBXL_CHECKPOINTED_STREAM_NONE;
        /* libxl_domain_suspend writes version 2; the default (1) would
         * have libxl run convert-legacy-stream over it. */
        params.stream_version = 2;
        rc = libxl_domain_create_restore(ctx, dc, &id, restore_fd, -1, &params,
                                         NULL, NULL);
        libxl_domain_restore_params_dispose(&params);
    }
    if (rc != 0) {
        struct xa_error *err =
            lx_error(restore_fd < 0 ? "create" : "restore", uuid, rc);
        if (id != NO_DOMID) {
            libxl_domain_destroy(ctx, id, NULL);
        }
        scrub(uuid, other);
        return err;
    }
    struct xa_error *err = plug_vifs(uuid, id);
    if (err) {
        libxl_domain_destroy(ctx, id, NULL);
        scrub(uuid, other);
        return err;
    }
    *domid = id;
    return NULL;
}

/* --- the entries ------------------------------------------------------------
 */

/* Live migrations in progress (further down). */
struct incoming;
static struct incoming *incoming_take(const char *uuid);
static struct xa_error *incoming_commit(struct incoming *in);
static void incoming_abort(struct incoming *in);
static bool held_take(const char *uuid, uint32_t *domid);
static struct xa_error *resume_held(const char *uuid, uint32_t domid);

/* The watcher of domains that shut down by themselves (further down). */
static void watch_ensure(void);
static void watch_end(void);

static const libxl_childproc_hooks child_hooks = {
    /* xapid has children of its own (storage and network tools): libxl
     * must reap only the ones it started (hotplug scripts, the save
     * helper). */
    .chldowner = libxl_sigchld_owner_libxl_always_selective_reap,
};

static struct xa_error *
xen_init(void)
{
    clear_error();
    int rc = libxl_ctx_alloc(&ctx, LIBXL_VERSION, 0, &logger);
    if (rc != 0) {
        ctx = NULL;
        return xa_error_internal("xen: cannot open libxl (%s): is this the "
                                 "control domain of a Xen host, with "
                                 "xenstored running?",
                                 first_error[0] ? first_error : "no detail");
    }
    libxl_childproc_setmode(ctx, &child_hooks, NULL);
    xsh = xs_open(0);
    if (!xsh) {
        libxl_ctx_free(ctx);
        ctx = NULL;
        return xa_error_internal("xen: cannot open xenstore: %s",
                                 strerror(errno));
    }
    const libxl_version_info *v = libxl_get_version_info(ctx);
    libxl_physinfo pi;
    libxl_physinfo_init(&pi);
    if (libxl_get_physinfo(ctx, &pi) == 0) {
        xa_log_info(LOG_MODULE,
                    "Xen %d.%d%s: %u CPUs, %" PRIu64 " MiB, %" PRIu64
                    " MiB free, hvm %s",
                    v ? v->xen_version_major : 0, v ? v->xen_version_minor : 0,
                    v && v->xen_version_extra ? v->xen_version_extra : "",
                    pi.nr_cpus, pi.total_pages * PAGE >> 20,
                    pi.free_pages * PAGE >> 20, pi.cap_hvm ? "yes" : "no");
    }
    libxl_physinfo_dispose(&pi);
    return NULL;
}

static void
xen_fini(void)
{
    watch_end();
    if (xsh) {
        xs_close(xsh);
        xsh = NULL;
    }
    if (ctx) {
        libxl_ctx_free(ctx);
        ctx = NULL;
    }
}

static struct xa_error *
xen_host_memory(int64_t *total, int64_t *free_bytes)
{
    libxl_physinfo pi;
    libxl_physinfo_init(&pi);
    clear_error();
    int rc = libxl_get_physinfo(ctx, &pi);
    if (rc == 0) {
        *total = (int64_t)(pi.total_pages * PAGE);
        /* Pages being scrubbed are free in a moment; pages claimed by
         * domains being built are not. */
        uint64_t f = pi.free_pages + pi.scrub_pages;
        f = f > pi.outstanding_pages ? f - pi.outstanding_pages : 0;
        *free_bytes = (int64_t)(f * PAGE);
    }
    libxl_physinfo_dispose(&pi);
    return rc == 0 ? NULL : lx_error("physinfo", "host", rc);
}

static struct xa_error *
xen_create(const struct xa_hv_domain_config *cfg, int64_t *domid)
{
    watch_ensure();
    libxl_domain_config dc;
    struct xa_error *err = domain_config(cfg, &dc);
    uint32_t id = NO_DOMID;
    if (!err) {
        err = build(&dc, cfg->uuid, -1, NO_DOMID, &id);
    }
    libxl_domain_config_dispose(&dc);
    if (!err) {
        xa_log_info(LOG_MODULE, "VM %s: built domain %u", cfg->uuid, id);
        *domid = id;
    }
    return err;
}

static struct xa_error *
xen_unpause(const char *uuid)
{
    /* the commit of an incoming migration, or a held domain going on */
    struct incoming *in = incoming_take(uuid);
    if (in) {
        return incoming_commit(in);
    }
    uint32_t held;
    if (held_take(uuid, &held)) {
        return resume_held(uuid, held);
    }
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    clear_error();
    int rc = libxl_domain_unpause(ctx, d.domid, NULL);
    return rc == 0 ? NULL : lx_error("unpause", uuid, rc);
}

static struct xa_error *
xen_pause(const char *uuid)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    clear_error();
    int rc = libxl_domain_pause(ctx, d.domid, NULL);
    return rc == 0 ? NULL : lx_error("pause", uuid, rc);
}

static void
nap(long ns)
{
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* Waits until domain 'domid' has shut down (true, '*reason' set) or is
 * gone (true, reason UNKNOWN), or 'timeout' seconds have passed (false). */
static bool
wait_shutdown(uint32_t domid, double timeout, libxl_shutdown_reason *reason)
{
    double deadline = xa_monotonic() + timeout;
    for (;;) {
        libxl_dominfo info;
        libxl_dominfo_init(&info);
        int rc = libxl_domain_info(ctx, &info, domid);
        bool gone = rc != 0 || info.dying;
        bool down = !gone && info.shutdown;
        *reason = down ? info.shutdown_reason : LIBXL_SHUTDOWN_REASON_UNKNOWN;
        libxl_dominfo_dispose(&info);
        if (gone || down) {
            return true;
        }
        if (xa_monotonic() >= deadline) {
            return false;
        }
        nap(POLL_NS);
    }
}

/* Destroys the domain and rebuilds it, running, from the configuration
 * libxl kept for it. */
static struct xa_error *
rebuild(const char *uuid, uint32_t domid, int64_t *new_domid)
{
    libxl_domain_config dc, fresh;
    libxl_domain_config_init(&dc);
    clear_error();
    int rc = libxl_retrieve_domain_configuration(ctx, domid, &dc, NULL);
    if (rc != 0) {
        libxl_domain_config_dispose(&dc);
        struct xa_error *err = lx_error("reboot (configuration)", uuid, rc);
        libxl_domain_destroy(ctx, domid, NULL);
        return err;
    }
    /* The stored configuration names the old domain id; a new domain
     * takes whatever id Xen gives it. */
    libxl_domain_config_init(&fresh);
    dc.c_info.domid = fresh.c_info.domid;
    libxl_domain_config_dispose(&fresh);
    clear_error();
    rc = libxl_domain_destroy(ctx, domid, NULL);
    struct xa_error *err = rc == 0 ? NULL : lx_error("destroy", uuid, rc);
    uint32_t id = NO_DOMID;
    if (!err) {
        err = build(&dc, uuid, -1, NO_DOMID, &id);
    }
    libxl_domain_config_dispose(&dc);
    if (!err) {
        clear_error();
        rc = libxl_domain_unpause(ctx, id, NULL);
        if (rc != 0) {
            err = lx_error("unpause", uuid, rc);
            libxl_domain_destroy(ctx, id, NULL);
        }
    }
    if (!err) {
        xa_log_info(LOG_MODULE, "VM %s: rebooted as domain %u", uuid, id);
        if (new_domid) {
            *new_domid = id;
        }
    }
    return err;
}

/* --- domains that shut down by themselves ----------------------------------
 * xenstored fires @releaseDomain whenever a domain shuts down or dies.  A
 * thread of this driver watches it (with a xenstore handle of its own)
 * and looks at every domain that has shut down: when no API operation is
 * in charge of its VM (an operation waits for the shutdowns it asks for,
 * and suspends are libxl's), the guest powered off, rebooted or crashed
 * by itself, and the VM's actions_after_shutdown / _reboot / _crash say
 * what becomes of it: "restart" (and for a crash "rename_restart" and
 * "coredump_and_restart") rebuilds the domain and the VM runs on with a
 * new domid; "preserve" leaves the crashed domain for inspection;
 * anything else destroys it and the VM is Halted.  The thread starts the
 * first time the core lists or builds domains (the database is up by
 * then) and stops in fini. */

static struct xs_handle *watch_xsh;
static int watch_stop[2] = {-1, -1};
static pthread_t watch_thread;
static pthread_once_t watch_once = PTHREAD_ONCE_INIT;
static bool watching;

enum after { AFTER_DESTROY, AFTER_RESTART, AFTER_PRESERVE };

/* Whether VM 'vm' is left to the watcher: no operation in charge of it,
 * and the database has it live on domain 'domid' (an operation that
 * rebuilt the domain recorded the new one). */
static bool
unattended(struct xa_txn *t, const char *vm, uint32_t domid)
{
    const struct xa_value *ops = xa_db_peek_field(
        t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "current_operations"));
    const char *ps =
        xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "power_state"));
    bool busy = ops && ops->kind == XA_STRUCT && ops->u.st.n > 0;
    return !busy && (strcmp(ps, "Running") == 0 || strcmp(ps, "Paused") == 0) &&
           xa_api_int(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "domid")) ==
               (int64_t)domid;
}

/* What to do with VM 'uuid' whose domain 'domid' shut down for 'why':
 * false when nothing (not an API VM, not unattended). */
static bool
after_action(const char *uuid, uint32_t domid, libxl_shutdown_reason why,
             enum after *what, char **vm_out)
{
    const char *field =
        why == LIBXL_SHUTDOWN_REASON_POWEROFF ? "actions_after_shutdown"
        : why == LIBXL_SHUTDOWN_REASON_REBOOT ? "actions_after_reboot"
                                              : "actions_after_crash";
    struct xa_txn *t = xa_db_begin_read();
    char *vm = xa_db_ref_by_uuid(t, &xa_cls_VM, uuid);
    bool act = false;
    if (vm) {
        act = unattended(t, vm, domid);
        const char *a =
            xa_api_str(t, &xa_cls_VM, vm, xa_api_field(&xa_cls_VM, field));
        *what = strcmp(a, "restart") == 0 || strcmp(a, "rename_restart") == 0 ||
                        strcmp(a, "coredump_and_restart") == 0
                    ? AFTER_RESTART
                : strcmp(a, "preserve") == 0 ? AFTER_PRESERVE
                                             : AFTER_DESTROY;
    }
    xa_db_end(t);
    if (!act) {
        free(vm);
        vm = NULL;
    }
    *vm_out = vm;
    return act;
}

/* Writes the outcome of a shutdown the guest of domain 'old' made:
 * Halted, or Running as 'domid' (>= 0) after a restart.  Skipped when an
 * operation has taken the VM in the meantime (it records its own
 * outcome). */
static void
record_guest_outcome(const char *vm, const char *uuid, uint32_t old,
                     int64_t domid)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = NULL;
    bool done = false;
    if (xa_db_exists(t, &xa_cls_VM, vm)) {
        if (unattended(t, vm, old)) {
            err = domid >= 0 ? xa_vm_record_rebooted(t, vm, domid)
                             : xa_vm_force_state(t, vm, "Halted");
            if (!err) {
                err = xa_vm_update_allowed(t, vm);
            }
            done = !err;
        }
    }
    err = xa_api_finish(t, err);
    if (err) {
        xa_log_warn(LOG_MODULE, "VM %s: cannot record what its guest did: %s",
                    uuid, err->code);
        xa_error_free(err);
    } else if (done) {
        xa_log_info(LOG_MODULE, "VM %s is now %s", uuid,
                    domid >= 0 ? "Running (rebooted by its guest)" : "Halted");
    }
    xa_net_vm_sync(vm); /* ports follow the new state */
    xa_vm_refresh_host_memory();
}

static const char *
reason_name(libxl_shutdown_reason why)
{
    switch (why) {
    case LIBXL_SHUTDOWN_REASON_POWEROFF:
        return "powered off";
    case LIBXL_SHUTDOWN_REASON_REBOOT:
        return "rebooted";
    case LIBXL_SHUTDOWN_REASON_CRASH:
        return "crashed";
    case LIBXL_SHUTDOWN_REASON_WATCHDOG:
        return "was stopped by its watchdog";
    default:
        return "shut down";
    }
}

/* Destroys domain 'domid' of VM 'uuid' if it is still there. */
static void
destroy_leftover(const char *uuid, uint32_t domid)
{
    clear_error();
    int rc = libxl_domain_destroy(ctx, domid, NULL);
    struct dom d;
    if (rc != 0 && find_domain(uuid, &d)) {
        xa_log_err(LOG_MODULE, "VM %s: cannot destroy domain %u: %s", uuid,
                   domid, first_error);
    }
}

/* Domain 'domid' of VM 'uuid' has shut down for 'why'. */
static void
guest_shut_down(const char *uuid, uint32_t domid, libxl_shutdown_reason why)
{
    enum after what = AFTER_DESTROY;
    char *vm = NULL;
    if (!after_action(uuid, domid, why, &what, &vm)) {
        return;
    }
    xa_log_info(LOG_MODULE, "VM %s: its guest %s (domain %u): %s", uuid,
                reason_name(why), domid,
                what == AFTER_RESTART    ? "restarting"
                : what == AFTER_PRESERVE ? "preserving the domain"
                                         : "destroying the domain");
    if (what == AFTER_PRESERVE) {
        free(vm);
        return;
    }
    int64_t new_domid = -1;
    struct xa_error *err = NULL;
    if (what == AFTER_RESTART) {
        err = rebuild(uuid, domid, &new_domid);
        if (err) {
            xa_log_err(LOG_MODULE, "VM %s: restart failed: %s", uuid,
                       err->n_params ? err->params[0] : err->code);
            xa_error_free(err);
            destroy_leftover(uuid, domid);
            new_domid = -1;
        }
    } else {
        destroy_leftover(uuid, domid);
    }
    record_guest_outcome(vm, uuid, domid, new_domid);
    free(vm);
}

/* Looks at every domain after @releaseDomain fired. */
static void
scan_shut_down(void)
{
    int n = 0;
    libxl_dominfo *l = libxl_list_domain(ctx, &n);
    for (int i = 0; l && i < n; i++) {
        if (l[i].domid == 0 || l[i].dying || !l[i].shutdown ||
            l[i].shutdown_reason == LIBXL_SHUTDOWN_REASON_SUSPEND) {
            continue;
        }
        char uuid[37];
        snprintf(uuid, sizeof uuid, LIBXL_UUID_FMT,
                 LIBXL_UUID_BYTES(l[i].uuid));
        guest_shut_down(uuid, l[i].domid, l[i].shutdown_reason);
    }
    if (l) {
        libxl_dominfo_list_free(l, n);
    }
}

static void *
watch_main(void *arg)
{
    XA_UNUSED(arg);
    struct pollfd p[2] = {{xs_fileno(watch_xsh), POLLIN, 0},
                          {watch_stop[0], POLLIN, 0}};
    for (;;) {
        if (poll(p, 2, -1) < 0 && errno != EINTR) {
            xa_log_err(LOG_MODULE, "domain watcher: poll: %s", strerror(errno));
            break;
        }
        if (p[1].revents) {
            break;
        }
        if (p[0].revents) {
            unsigned num = 0;
            char **ev = xs_read_watch(watch_xsh, &num);
            free(ev);
            scan_shut_down();
        }
    }
    return NULL;
}

static void
watch_start(void)
{
    watch_xsh = xs_open(0);
    if (!watch_xsh || pipe2(watch_stop, O_CLOEXEC) != 0 ||
        !xs_watch(watch_xsh, "@releaseDomain", "xapid") ||
        pthread_create(&watch_thread, NULL, watch_main, NULL) != 0) {
        xa_log_err(LOG_MODULE,
                   "cannot watch @releaseDomain (%s): domains that "
                   "shut down by themselves stay until reconciliation",
                   strerror(errno));
        return;
    }
    watching = true;
}

static void
watch_ensure(void)
{
    pthread_once(&watch_once, watch_start);
}

static void
watch_end(void)
{
    if (watching) {
        char c = 0;
        if (write(watch_stop[1], &c, 1) == 1) {
            pthread_join(watch_thread, NULL);
        }
        watching = false;
    }
    for (int i = 0; i < 2; i++) {
        if (watch_stop[i] >= 0) {
            close(watch_stop[i]);
            watch_stop[i] = -1;
        }
    }
    if (watch_xsh) {
        xs_close(watch_xsh);
        watch_xsh = NULL;
    }
}

static struct xa_error *
xen_shutdown(const char *uuid, enum xa_hv_shutdown_reason reason,
             double timeout, int64_t *new_domid)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    char t[32];
    snprintf(t, sizeof t, "%g", timeout);
    if (d.paused && !d.shutdown) {
        /* A paused guest cannot see the request: waiting is pointless. */
        return xa_error_new("VM_SHUTDOWN_TIMEOUT", 2, uuid, t);
    }
    if (!d.shutdown) {
        clear_error();
        int rc = reason == XA_HV_POWEROFF
                     ? libxl_domain_shutdown(ctx, d.domid, NULL)
                     : libxl_domain_reboot(ctx, d.domid, NULL);
        if (rc != 0) {
            return lx_error(reason == XA_HV_POWEROFF ? "shutdown" : "reboot",
                            uuid, rc);
        }
    }
    libxl_shutdown_reason why;
    if (!wait_shutdown(d.domid, timeout, &why)) {
        return xa_error_new("VM_SHUTDOWN_TIMEOUT", 2, uuid, t);
    }
    if (why == LIBXL_SHUTDOWN_REASON_CRASH) {
        libxl_domain_destroy(ctx, d.domid, NULL);
        return xa_error_internal("xen: VM %s crashed while shutting down",
                                 uuid);
    }
    if (reason == XA_HV_REBOOT) {
        return rebuild(uuid, d.domid, new_domid);
    }
    clear_error();
    int rc = libxl_domain_destroy(ctx, d.domid, NULL);
    return rc == 0 || !find_domain(uuid, &d) ? NULL
                                             : lx_error("destroy", uuid, rc);
}

static struct xa_error *
xen_destroy(const char *uuid)
{
    /* the abort of an incoming migration, or a held domain's end */
    struct incoming *in = incoming_take(uuid);
    if (in) {
        incoming_abort(in);
        return NULL;
    }
    uint32_t held;
    if (held_take(uuid, &held)) {
        clear_error();
        int rc = libxl_domain_destroy(ctx, held, NULL);
        return rc == 0 ? NULL : lx_error("destroy", uuid, rc);
    }
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return NULL; /* gone already: what the caller wants */
    }
    clear_error();
    int rc = libxl_domain_destroy(ctx, d.domid, NULL);
    if (rc != 0 && find_domain(uuid, &d)) {
        return lx_error("destroy", uuid, rc);
    }
    return NULL;
}

static struct xa_error *
xen_hard_reboot(const struct xa_hv_domain_config *cfg, int64_t *new_domid)
{
    struct xa_error *err = xen_destroy(cfg->uuid);
    int64_t id = -1;
    if (!err) {
        err = xen_create(cfg, &id);
    }
    if (!err) {
        err = xen_unpause(cfg->uuid);
        if (err) {
            xa_error_free(xen_destroy(cfg->uuid));
        }
    }
    if (!err && new_domid) {
        *new_domid = id;
    }
    return err;
}

/* Streams the domain's state into 'fd' (libxl's save format); on success
 * the domain has shut down in the "suspend" state and still exists. */
static struct xa_error *
save_to(const char *uuid, const struct dom *d, int fd, bool live)
{
    clear_error();
    int rc = libxl_domain_suspend(ctx, d->domid, fd,
                                  live ? LIBXL_SUSPEND_LIVE : 0, NULL);
    return rc == 0 ? NULL : lx_error(live ? "migrate" : "suspend", uuid, rc);
}

/* Lets a domain that was suspended for a save that then failed run on
 * (a save that failed before the guest suspended left it running). */
static void
cancel_save(const char *uuid, uint32_t domid)
{
    libxl_dominfo info;
    libxl_dominfo_init(&info);
    bool suspended = libxl_domain_info(ctx, &info, domid) == 0 &&
                     info.shutdown &&
                     info.shutdown_reason == LIBXL_SHUTDOWN_REASON_SUSPEND;
    libxl_dominfo_dispose(&info);
    if (!suspended) {
        return;
    }
    clear_error();
    int rc = libxl_domain_resume(ctx, domid, 1, NULL);
    if (rc != 0) {
        xa_log_err(LOG_MODULE,
                   "VM %s: cannot resume domain %u after a failed "
                   "save: %s",
                   uuid, domid, first_error);
    }
}

static struct xa_error *
xen_suspend(const char *uuid, const char *path)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    if (!path || !*path) {
        return xa_error_internal("xen: suspend of %s: no image path", uuid);
    }
    /* The image may be a preallocated volume: written over, not cut. */
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return xa_error_internal("xen: cannot open %s: %s", path,
                                 strerror(errno));
    }
    struct xa_error *err = save_to(uuid, &d, fd, false);
    if (!err && fsync(fd) != 0) {
        err = xa_error_internal("xen: cannot write %s: %s", path,
                                strerror(errno));
    }
    close(fd);
    if (err) {
        cancel_save(uuid, d.domid);
        return err;
    }
    clear_error();
    int rc = libxl_domain_destroy(ctx, d.domid, NULL);
    return rc == 0 ? NULL : lx_error("destroy", uuid, rc);
}

/* Checks that 'fd' starts with a libxl save stream (version 2), without
 * consuming it: libxl 4.17 crashes (a NULL callback, in the caller's
 * thread) when restore meets a bad stream header, so a file that is not
 * a stream must never reach it.  Files are read and rewound; sockets
 * are peeked at. */
static struct xa_error *
check_stream(int fd, bool socket_fd, const char *what)
{
    unsigned char h[12];
    ssize_t n = socket_fd ? recv(fd, h, sizeof h, MSG_PEEK | MSG_WAITALL)
                          : pread(fd, h, sizeof h, 0);
    static const unsigned char ident[8] = {'L', 'i', 'b', 'x',
                                           'l', 'F', 'm', 't'};
    if (n != (ssize_t)sizeof h || memcmp(h, ident, sizeof ident) != 0) {
        return xa_error_internal("xen: %s is not a libxl save stream", what);
    }
    uint32_t version = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 |
                       (uint32_t)h[10] << 8 | h[11];
    if (version != 2) {
        return xa_error_internal("xen: %s is a libxl stream of version %u, "
                                 "not 2",
                                 what, version);
    }
    return NULL;
}

static struct xa_error *
xen_resume(const struct xa_hv_domain_config *cfg, const char *path,
           int64_t *domid)
{
    if (!path || !*path) {
        return xa_error_internal("xen: resume of %s: no suspend image",
                                 cfg->uuid);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return xa_error_internal("xen: cannot open %s: %s", path,
                                 strerror(errno));
    }
    struct xa_error *err = check_stream(fd, false, path);
    if (err) {
        xa_log_err(LOG_MODULE, "VM %s: cannot resume: %s", cfg->uuid,
                   err->params[0]);
        close(fd);
        return err;
    }
    libxl_domain_config dc;
    err = domain_config(cfg, &dc);
    uint32_t id = NO_DOMID;
    if (!err) {
        err = build(&dc, cfg->uuid, fd, NO_DOMID, &id);
    }
    libxl_domain_config_dispose(&dc);
    close(fd);
    if (!err) {
        xa_log_info(LOG_MODULE, "VM %s: restored as domain %u", cfg->uuid, id);
        *domid = id;
    }
    return err;
}

/* --- live migration ---------------------------------------------------------
 * libxl's stream, as xl migrate sends it, but fitted to the core
 * (server/api/vm_migrate.c), which calls the destination's
 * migrate_receive in "prepare" and needs it to return, with the new
 * domain's id, before the source sends anything; "commit" unpauses the
 * domain there, "abort" destroys it.
 *
 * The receiver: libxl_domain_create_restore reads the whole stream
 * before it returns, so migrate_receive runs it on a thread of its own
 * (the restorer) and returns as soon as libxl has made the new domain
 * (libxl makes it before it reads the stream).  libxl does not read the
 * socket itself: libxl 4.17 crashes on a bad stream header (see
 * check_stream), and the header comes only once prepare has returned,
 * so libxl reads a pipe that starts with the header the sender's libxl
 * writes (version 2, no options), and a second thread (the relay)
 * checks the real header off the socket and then copies the rest of the
 * stream into the pipe; a bad header or a stream cut short ends the pipe
 * and libxl fails the restore like a migration whose sender died.
 * Commit (unpause) waits for the restorer and reports its error; abort
 * (destroy) cuts the socket, waits for both threads and destroys
 * whatever was built.
 *
 * The sender: "xapid-fd:N[?downtime_ms=..&bandwidth=..&hold=1]" names
 * descriptor N of this process, the core's end of the stream;
 * libxl_domain_suspend(LIVE) writes into it.  libxl 4.17 has no knob for
 * the downtime or the bandwidth (its pre-copy runs a fixed number of
 * rounds and stops the guest for the last one): both are accepted and
 * ignored.  A live send needs Xen's log-dirty mode, which a PV domain
 * has only with shadow paging (Debian's Xen 4.17 has none) and the
 * others with HAP or shadow paging; without it the domain is sent
 * stopped (libxl's non-live save), so its downtime is the whole send.
 * Without hold the domain is destroyed once the stream is
 * sent; with hold it stays as libxl leaves it, shut down in the
 * "suspend" state (its memory intact, nothing running), until the core
 * says: destroy (the destination runs the guest) or unpause, which for
 * a held domain is libxl_domain_resume with suspend_cancel (the guest's
 * suspend hypercall returns as if it had failed and the guest carries on
 * with its devices) -- as far as libxl allows, the held domain of QEMU's
 * "postmigrate".
 *
 * A localhost migration (the core keeps the domain instead; the driver
 * test, tests/xen/xenmig.c, does it as `xl migrate DOM localhost`
 * does): two domains carry the VM's uuid for a while.  The receiver
 * renames the sender's to "UUID--migratedaway" before libxl makes the
 * new one, which must have the name (xenconsoled names the console log
 * after it), and renames it back if the migration fails.  While a
 * migration holds them, find_domain leaves out both the incoming domain
 * (until its commit) and the held one, so the other entries act on the
 * VM's running copy; unpause and destroy look at the migration first. */

/* How long migrate_receive waits for libxl to make the domain. */
#define MAKE_TIMEOUT_S 120.0
/* The stream header: "LibxlFmt", version 2, options (big-endian). */
#define STREAM_HDR_LEN 16

struct incoming {
    struct incoming *next;
    char uuid[37];
    libxl_domain_config dc;
    int sock;       /* our copy of the stream's socket */
    int pipe_r;     /* libxl's end of the pipe */
    int pipe_w;     /* the relay's end */
    uint32_t other; /* localhost: the sender's domain, else NO_DOMID */
    pthread_t restorer, relay;
    bool restorer_started, relay_started;
    /* under mig_lock: */
    bool done;      /* the restorer has finished */
    uint32_t domid; /* the new domain, once libxl made it */
    struct xa_error *err;
    char relay_error[160];
    int64_t relayed; /* bytes of the stream libxl got */
};

/* A domain whose stream went out, kept until the core's word. */
struct held {
    struct held *next;
    char uuid[37];
    uint32_t domid;
};

/* What the last send of a VM cost. */
struct sent {
    struct sent *next;
    char uuid[37];
    struct xa_hv_migration_stats st;
};

static pthread_mutex_t mig_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mig_cond = PTHREAD_COND_INITIALIZER;
static struct incoming *incomings;
static struct held *helds;
static struct sent *sents;

static bool
mig_owned(uint32_t domid)
{
    bool owned = false;
    pthread_mutex_lock(&mig_lock);
    for (struct incoming *in = incomings; in && !owned; in = in->next) {
        owned = in->domid == domid;
    }
    for (struct held *h = helds; h && !owned; h = h->next) {
        owned = h->domid == domid;
    }
    pthread_mutex_unlock(&mig_lock);
    return owned;
}

/* When each outgoing domain stopped for the last copy: libxl says so at
 * debug level ("Domain N:guest has suspended"), from whichever thread
 * runs its event loop.  The logger fills the slot of the domain. */
#define CLOCKS 8
static struct {
    uint32_t domid;
    double at;
} clocks[CLOCKS] = {[0 ... CLOCKS - 1] = {NO_DOMID, 0}};

static void
clock_arm(uint32_t domid)
{
    pthread_mutex_lock(&mig_lock);
    for (int i = 0; i < CLOCKS; i++) {
        if (clocks[i].domid == NO_DOMID) {
            clocks[i].domid = domid;
            clocks[i].at = 0;
            break;
        }
    }
    pthread_mutex_unlock(&mig_lock);
}

/* When domain 'domid' suspended (0: not seen); frees its slot. */
static double
clock_take(uint32_t domid)
{
    double at = 0;
    pthread_mutex_lock(&mig_lock);
    for (int i = 0; i < CLOCKS; i++) {
        if (clocks[i].domid == domid) {
            at = clocks[i].at;
            clocks[i].domid = NO_DOMID;
        }
    }
    pthread_mutex_unlock(&mig_lock);
    return at;
}

static void
clock_note(const char *msg)
{
    const char *p = strstr(msg, "Domain ");
    unsigned id;
    if (!p || !strstr(p, "guest has suspended") ||
        sscanf(p, "Domain %u:", &id) != 1) {
        return;
    }
    double now = xa_monotonic();
    pthread_mutex_lock(&mig_lock);
    for (int i = 0; i < CLOCKS; i++) {
        if (clocks[i].domid == id) {
            clocks[i].at = now;
        }
    }
    pthread_mutex_unlock(&mig_lock);
}

static void
remember_sent(const char *uuid, const struct xa_hv_migration_stats *st)
{
    pthread_mutex_lock(&mig_lock);
    struct sent *s = sents;
    while (s && strcmp(s->uuid, uuid) != 0) {
        s = s->next;
    }
    if (!s) {
        s = xa_calloc(1, sizeof *s);
        snprintf(s->uuid, sizeof s->uuid, "%s", uuid);
        s->next = sents;
        sents = s;
    }
    s->st = *st;
    pthread_mutex_unlock(&mig_lock);
}

static bool
xen_last_migration(const char *uuid, struct xa_hv_migration_stats *out)
{
    pthread_mutex_lock(&mig_lock);
    struct sent *s = sents;
    while (s && strcmp(s->uuid, uuid) != 0) {
        s = s->next;
    }
    if (s) {
        *out = s->st;
    }
    pthread_mutex_unlock(&mig_lock);
    return s != NULL;
}

/* Takes the held domain of VM 'uuid' off the list: false when none. */
static bool
held_take(const char *uuid, uint32_t *domid)
{
    pthread_mutex_lock(&mig_lock);
    struct held **pp = &helds;
    while (*pp && strcmp((*pp)->uuid, uuid) != 0) {
        pp = &(*pp)->next;
    }
    struct held *h = *pp;
    if (h) {
        *pp = h->next;
        *domid = h->domid;
    }
    pthread_mutex_unlock(&mig_lock);
    free(h);
    return h != NULL;
}

static struct incoming *
incoming_take(const char *uuid)
{
    pthread_mutex_lock(&mig_lock);
    struct incoming **pp = &incomings;
    while (*pp && strcmp((*pp)->uuid, uuid) != 0) {
        pp = &(*pp)->next;
    }
    struct incoming *in = *pp;
    if (in) {
        *pp = in->next;
    }
    pthread_mutex_unlock(&mig_lock);
    return in;
}

static char *
away_name(const char *uuid)
{
    return xa_asprintf("%s--migratedaway", uuid);
}

/* Gives the sender's domain of a localhost migration its name back. */
static void
rename_back(const char *uuid, uint32_t domid)
{
    char *away = away_name(uuid);
    char *name = libxl_domid_to_name(ctx, domid);
    clear_error();
    if (name && strcmp(name, away) == 0 &&
        libxl_domain_rename(ctx, domid, away, uuid) != 0) {
        xa_log_warn(LOG_MODULE, "VM %s: domain %u keeps its name %s: %s", uuid,
                    domid, away, first_error);
    }
    free(name);
    free(away);
}

static bool
read_full(int fd, unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        got += (size_t)n;
    }
    return true;
}

static bool
write_full(int fd, const unsigned char *buf, size_t len)
{
    size_t put = 0;
    while (put < len) {
        ssize_t n = write(fd, buf + put, len - put);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        put += (size_t)n;
    }
    return true;
}

/* Copies what comes on 'from' into the pipe 'to' until 'from' ends or
 * the pipe's reader goes; returns the bytes copied.  (Not splice(),
 * tried: the relay then hung in the kernel in the test's dom0 while
 * libxl waited for the pipe.)
 * libxl stops reading after the stream's END record and closes its end:
 * a failed write is not an error here. */
static int64_t
relay_copy(int from, int to)
{
    static const size_t chunk = 256 * 1024;
    int64_t copied = 0;
    unsigned char *buf = xa_malloc(chunk);
    for (;;) {
        ssize_t n = read(from, buf, chunk);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || !write_full(to, buf, (size_t)n)) {
            break;
        }
        copied += n;
    }
    free(buf);
    return copied;
}

/* The header libxl_domain_suspend writes on a little-endian host. */
static void
stream_header(unsigned char h[STREAM_HDR_LEN])
{
    static const unsigned char v2[STREAM_HDR_LEN] = {
        'L', 'i', 'b', 'x', 'l', 'F', 'm', 't', 0, 0, 0, 2, 0, 0, 0, 0};
    memcpy(h, v2, STREAM_HDR_LEN);
}

static void *
relay_main(void *arg)
{
    struct incoming *in = arg;
    unsigned char want[STREAM_HDR_LEN], got[STREAM_HDR_LEN];
    stream_header(want);
    char why[160] = "";
    int64_t relayed = 0;
    if (!read_full(in->sock, got, sizeof got)) {
        snprintf(why, sizeof why,
                 "the migration stream ended before its "
                 "header");
    } else if (memcmp(got, want, sizeof want) != 0) {
        snprintf(why, sizeof why,
                 "the migration stream is not a libxl "
                 "save stream (version 2)");
    } else {
        relayed = STREAM_HDR_LEN + relay_copy(in->sock, in->pipe_w);
    }
    close(in->pipe_w); /* the end of the stream for libxl */
    in->pipe_w = -1;
    pthread_mutex_lock(&mig_lock);
    memcpy(in->relay_error, why, sizeof why);
    in->relayed = relayed;
    pthread_mutex_unlock(&mig_lock);
    if (why[0]) {
        xa_log_err(LOG_MODULE, "VM %s: %s", in->uuid, why);
    }
    return NULL;
}

static void *
restore_main(void *arg)
{
    struct incoming *in = arg;
    uint32_t id = NO_DOMID;
    struct xa_error *err = build(&in->dc, in->uuid, in->pipe_r, in->other, &id);
    close(in->pipe_r);
    in->pipe_r = -1;
    pthread_mutex_lock(&mig_lock);
    in->err = err;
    if (!err) {
        in->domid = id;
    }
    in->done = true;
    pthread_cond_broadcast(&mig_cond);
    pthread_mutex_unlock(&mig_lock);
    return NULL;
}

/* Waits for the restorer of 'in' (cutting its stream first when 'cut')
 * and the relay, and frees 'in'; returns the restore's outcome and the
 * new domain ('*domid', NO_DOMID when none is left). */
static struct xa_error *
incoming_join(struct incoming *in, bool cut, uint32_t *domid)
{
    if (cut && in->sock >= 0) {
        shutdown(in->sock, SHUT_RDWR);
    }
    if (in->restorer_started) {
        pthread_join(in->restorer, NULL);
    }
    /* the restore is over: whatever the socket still has is not for it */
    if (in->sock >= 0) {
        shutdown(in->sock, SHUT_RDWR);
    }
    if (in->relay_started) {
        pthread_join(in->relay, NULL);
    }
    struct xa_error *err = in->err;
    if (err && in->relay_error[0]) {
        struct xa_error *why = xa_error_internal("xen: migration of %s: %s",
                                                 in->uuid, in->relay_error);
        xa_error_free(err);
        err = why;
    }
    *domid = err ? NO_DOMID : in->domid;
    xa_log_info(LOG_MODULE, "VM %s: %" PRId64 " bytes of migration stream in",
                in->uuid, in->relayed);
    int fds[] = {in->sock, in->pipe_r, in->pipe_w};
    for (size_t i = 0; i < XA_ARRAY_SIZE(fds); i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    libxl_domain_config_dispose(&in->dc);
    free(in);
    return err;
}

/* Commit: the domain of the stream runs. */
static struct xa_error *
incoming_commit(struct incoming *in)
{
    char uuid[37];
    memcpy(uuid, in->uuid, sizeof uuid);
    uint32_t other = in->other;
    uint32_t id;
    struct xa_error *err = incoming_join(in, false, &id);
    if (!err) {
        clear_error();
        int rc = libxl_domain_unpause(ctx, id, NULL);
        if (rc != 0) {
            err = lx_error("unpause", uuid, rc);
            libxl_domain_destroy(ctx, id, NULL);
        }
    }
    if (err && other != NO_DOMID) {
        rename_back(uuid, other);
    }
    if (!err) {
        xa_log_info(LOG_MODULE, "VM %s: migrated in as domain %u", uuid, id);
    }
    return err;
}

/* Abort: nothing of the incoming domain stays. */
static void
incoming_abort(struct incoming *in)
{
    char uuid[37];
    memcpy(uuid, in->uuid, sizeof uuid);
    uint32_t other = in->other;
    uint32_t id;
    xa_error_free(incoming_join(in, true, &id));
    if (id != NO_DOMID) {
        libxl_domain_destroy(ctx, id, NULL);
    }
    scrub(uuid, other);
    if (other != NO_DOMID) {
        rename_back(uuid, other);
    }
    xa_log_info(LOG_MODULE, "VM %s: incoming migration abandoned", uuid);
}

/* The new domain of VM 'uuid' (not 'other'), once libxl has made it. */
static uint32_t
made_domain(const char *uuid, uint32_t other)
{
    struct dom d;
    return find_domain_ex(uuid, other, true, &d) ? d.domid : NO_DOMID;
}

static struct xa_error *
xen_migrate_receive(const struct xa_hv_domain_config *cfg, int fd,
                    int64_t *domid)
{
    if (fd < 0) {
        /* The core hands no stream for a localhost migration (it keeps
         * the domain); libxl would need one. */
        return xa_error_internal("xen: VM %s: migration without a stream "
                                 "(localhost) is not supported",
                                 cfg->uuid);
    }
    struct incoming *stale = incoming_take(cfg->uuid);
    if (stale) {
        incoming_abort(stale);
    }
    struct incoming *in = xa_calloc(1, sizeof *in);
    snprintf(in->uuid, sizeof in->uuid, "%s", cfg->uuid);
    in->sock = in->pipe_r = in->pipe_w = -1;
    in->other = in->domid = NO_DOMID;
    struct xa_error *err = domain_config(cfg, &in->dc);
    int p[2];
    if (!err) {
        in->sock = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (in->sock < 0 || pipe2(p, O_CLOEXEC) != 0) {
            err = xa_error_internal("xen: migration of %s: %s", cfg->uuid,
                                    strerror(errno));
        } else {
            in->pipe_r = p[0];
            in->pipe_w = p[1];
        }
    }
    if (!err) {
        unsigned char h[STREAM_HDR_LEN];
        stream_header(h);
        if (!write_full(in->pipe_w, h, sizeof h)) {
            err = xa_error_internal("xen: migration of %s: pipe: %s", cfg->uuid,
                                    strerror(errno));
        }
    }
    struct dom old;
    if (!err && find_domain(cfg->uuid, &old)) {
        /* localhost: the new domain takes the name */
        char *away = away_name(cfg->uuid);
        clear_error();
        int rc = libxl_domain_rename(ctx, old.domid, cfg->uuid, away);
        free(away);
        if (rc != 0) {
            err = lx_error("rename", cfg->uuid, rc);
        } else {
            in->other = old.domid;
        }
    }
    if (!err) {
        pthread_mutex_lock(&mig_lock);
        in->next = incomings;
        incomings = in;
        pthread_mutex_unlock(&mig_lock);
        in->relay_started =
            pthread_create(&in->relay, NULL, relay_main, in) == 0;
        in->restorer_started =
            in->relay_started &&
            pthread_create(&in->restorer, NULL, restore_main, in) == 0;
        if (!in->restorer_started) {
            err = xa_error_internal("xen: migration of %s: no thread: %s",
                                    cfg->uuid, strerror(errno));
        }
    }
    /* Until libxl has made the domain (it then waits for the stream). */
    uint32_t id = NO_DOMID;
    double deadline = xa_monotonic() + MAKE_TIMEOUT_S;
    while (!err) {
        uint32_t made = made_domain(cfg->uuid, in->other);
        pthread_mutex_lock(&mig_lock);
        if (made != NO_DOMID && in->domid == NO_DOMID) {
            in->domid = made;
        }
        bool done = in->done;
        bool failed = done && in->err;
        id = failed ? NO_DOMID : in->domid;
        pthread_mutex_unlock(&mig_lock);
        if (failed || done || id != NO_DOMID) {
            break;
        }
        if (xa_monotonic() > deadline) {
            err = xa_error_internal("xen: migration of %s: libxl made no "
                                    "domain in %.0f s",
                                    cfg->uuid, MAKE_TIMEOUT_S);
            break;
        }
        nap(POLL_NS / 2);
    }
    if (err || id == NO_DOMID) {
        uint32_t other = in->other;
        struct incoming *mine = incoming_take(cfg->uuid);
        uint32_t left = NO_DOMID;
        struct xa_error *why = incoming_join(mine ? mine : in, true, &left);
        if (left != NO_DOMID) {
            libxl_domain_destroy(ctx, left, NULL);
        }
        if (mine) {
            scrub(cfg->uuid, other);
        }
        if (!err) {
            err = why ? why
                      : xa_error_internal("xen: migration of %s: no domain",
                                          cfg->uuid);
        } else {
            xa_error_free(why);
        }
        if (other != NO_DOMID) {
            rename_back(cfg->uuid, other);
        }
        return err;
    }
    xa_log_info(LOG_MODULE, "VM %s: domain %u waits for the migration stream",
                cfg->uuid, id);
    *domid = id;
    return NULL;
}

/* "xapid-fd:N?downtime_ms=..&bandwidth=..&hold=1": N and hold. */
static struct xa_error *
parse_send_url(const char *url, int *fd, bool *hold)
{
    static const char prefix[] = "xapid-fd:";
    char *end = NULL;
    long n = -1;
    if (strncmp(url, prefix, sizeof prefix - 1) == 0) {
        errno = 0;
        n = strtol(url + sizeof prefix - 1, &end, 10);
    }
    if (n < 0 || n > INT32_MAX || !end || (*end && *end != '?') ||
        end == url + sizeof prefix - 1) {
        return xa_error_internal("xen: migration URL '%s' is not "
                                 "xapid-fd:N[?options]",
                                 url);
    }
    *fd = (int)n;
    *hold = false;
    for (const char *o = *end ? end + 1 : end; *o;) {
        size_t len = strcspn(o, "&");
        /* downtime_ms and bandwidth: libxl has no such knobs */
        if (len == 6 && strncmp(o, "hold=1", 6) == 0) {
            *hold = true;
        }
        o += len;
        o += *o == '&';
    }
    return NULL;
}

/* Whether Xen can track the memory domain 'domid' dirties while it runs
 * (log-dirty mode), which a live send needs: shadow paging for a PV
 * domain, HAP or shadow paging for the others.  Debian's Xen 4.17 has no
 * shadow paging, so without HAP (nested under TCG) libxl fails a live
 * send at once ("Failed to enable logdirty"). */
static bool
can_track_dirty(uint32_t domid)
{
    libxl_physinfo pi;
    libxl_physinfo_init(&pi);
    libxl_dominfo info;
    libxl_dominfo_init(&info);
    bool ok = true; /* when in doubt, let libxl say */
    if (libxl_get_physinfo(ctx, &pi) == 0 &&
        libxl_domain_info(ctx, &info, domid) == 0) {
        ok = info.domain_type == LIBXL_DOMAIN_TYPE_PV
                 ? pi.cap_shadow
                 : pi.cap_hap || pi.cap_shadow;
    }
    libxl_dominfo_dispose(&info);
    libxl_physinfo_dispose(&pi);
    return ok;
}

static struct xa_error *
xen_migrate_send(const char *uuid, const char *url, bool live)
{
    int fd = -1;
    bool hold = false;
    struct xa_error *err = parse_send_url(url, &fd, &hold);
    if (err) {
        return err;
    }
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    if (live && !can_track_dirty(d.domid)) {
        xa_log_warn(LOG_MODULE,
                    "VM %s: Xen cannot track the memory domain %u "
                    "dirties (no shadow paging, no HAP): sending it "
                    "stopped, not live",
                    uuid, d.domid);
        live = false;
    }
    clock_arm(d.domid);
    double t0 = xa_monotonic();
    err = save_to(uuid, &d, fd, live);
    double t1 = xa_monotonic();
    double stopped = clock_take(d.domid);
    if (err) {
        cancel_save(uuid, d.domid);
        return err;
    }
    struct xa_hv_migration_stats st = {0};
    st.total_ms = (int64_t)((t1 - t0) * 1000.0);
    /* from the guest's stop for the last copy to the stream's end (a
     * non-live send stops it at once) */
    st.downtime_ms =
        live && stopped > 0 ? (int64_t)((t1 - stopped) * 1000.0) : st.total_ms;
    remember_sent(uuid, &st);
    xa_log_info(LOG_MODULE,
                "VM %s: domain %u sent in %" PRId64 " ms, stopped for the "
                "last %" PRId64 " ms%s",
                uuid, d.domid, st.total_ms, st.downtime_ms,
                hold ? "; held until the destination runs it" : "");
    if (hold) {
        struct held *h = xa_calloc(1, sizeof *h);
        snprintf(h->uuid, sizeof h->uuid, "%s", uuid);
        h->domid = d.domid;
        pthread_mutex_lock(&mig_lock);
        h->next = helds;
        helds = h;
        pthread_mutex_unlock(&mig_lock);
        return NULL;
    }
    clear_error();
    int rc = libxl_domain_destroy(ctx, d.domid, NULL);
    if (rc != 0) {
        xa_log_err(LOG_MODULE,
                   "VM %s: migrated, but the old domain %u "
                   "remains: %s",
                   uuid, d.domid, first_error);
    }
    return NULL;
}

/* A held domain runs on here: its suspend is cancelled. */
static struct xa_error *
resume_held(const char *uuid, uint32_t domid)
{
    clear_error();
    int rc = libxl_domain_resume(ctx, domid, 1, NULL);
    if (rc != 0) {
        return lx_error("resume after migration", uuid, rc);
    }
    struct dom d;
    if (!find_domain_ex(uuid, domid, true, &d)) {
        rename_back(uuid, domid); /* a localhost migration renamed it */
    }
    return NULL;
}

static void
fill_info(const struct dom *d, struct xa_hv_domain_info *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->uuid, sizeof out->uuid, LIBXL_UUID_FMT,
             LIBXL_UUID_BYTES(d->uuid));
    out->domid = d->domid;
    if (d->shutdown) {
        out->state = d->reason == LIBXL_SHUTDOWN_REASON_CRASH ||
                             d->reason == LIBXL_SHUTDOWN_REASON_WATCHDOG
                         ? XA_HV_CRASHED
                         : XA_HV_SHUTDOWN;
    } else {
        out->state = d->paused ? XA_HV_PAUSED : XA_HV_RUNNING;
    }
    out->memory_actual = (int64_t)d->memkb * 1024;
    out->vcpus = d->vcpus;
    out->cpu_seconds = (double)d->cpu_ns / 1e9;
    out->start_time = libxl_vm_get_start_time(ctx, d->domid);
}

static struct xa_error *
xen_list(struct xa_hv_domain_info **out, size_t *n_out)
{
    watch_ensure();
    int n = 0;
    clear_error();
    libxl_dominfo *l = libxl_list_domain(ctx, &n);
    if (!l) {
        return lx_error("list", "host", ERROR_FAIL);
    }
    struct xa_hv_domain_info *a = xa_calloc(n > 0 ? (size_t)n : 1, sizeof *a);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (l[i].domid == 0 || l[i].dying) {
            continue;
        }
        struct dom d;
        dom_from_info(&l[i], &d);
        fill_info(&d, &a[k++]);
    }
    libxl_dominfo_list_free(l, n);
    *out = a;
    *n_out = k;
    return NULL;
}

static struct xa_error *
xen_get_info(const char *uuid, struct xa_hv_domain_info *out)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    fill_info(&d, out);
    return NULL;
}

/* --- the guest agent's reports in xenstore -------------------------------- */

static char *
xs_get(uint32_t domid, const char *rel)
{
    char *path = xa_asprintf("/local/domain/%u/%s", domid, rel);
    unsigned len = 0;
    char *v = xs_read(xsh, XBT_NULL, path, &len);
    free(path);
    return v;
}

/* A growing key, value, ... array. */
struct kv {
    char **a;
    size_t n;
};

static void
kv_add(struct kv *m, const char *key, char *val_owned)
{
    m->a = xa_realloc(m->a, (m->n + 3) * sizeof *m->a);
    m->a[m->n++] = xa_strdup(key);
    m->a[m->n++] = val_owned;
    m->a[m->n] = NULL;
}

/* Adds 'key' = /local/domain/<domid>/<rel> when the agent wrote it. */
static bool
kv_from_xs(struct kv *m, uint32_t domid, const char *key, const char *rel)
{
    char *v = xs_get(domid, rel);
    if (v) {
        kv_add(m, key, v);
    }
    return v != NULL;
}

static char **
kv_done(struct kv *m)
{
    if (!m->a) {
        m->a = xa_calloc(1, sizeof *m->a);
    }
    return m->a;
}

/* attr/vif/<n>/ipv4/<i> and ipv6/<i>, as xe-guest-utilities writes them,
 * become "<n>/ip", "<n>/ipv4/<i>", "<n>/ipv6/<i>". */
static void
guest_networks(uint32_t domid, struct kv *m)
{
    char *base = xa_asprintf("/local/domain/%u/attr/vif", domid);
    unsigned nv = 0;
    char **vifs = xs_directory(xsh, XBT_NULL, base, &nv);
    for (unsigned i = 0; vifs && i < nv; i++) {
        static const char *const fams[] = {"ipv4", "ipv6"};
        for (size_t f = 0; f < XA_ARRAY_SIZE(fams); f++) {
            char *dir = xa_asprintf("%s/%s/%s", base, vifs[i], fams[f]);
            unsigned na = 0;
            char **addrs = xs_directory(xsh, XBT_NULL, dir, &na);
            for (unsigned j = 0; addrs && j < na; j++) {
                char *p = xa_asprintf("%s/%s", dir, addrs[j]);
                unsigned len = 0;
                char *ip = xs_read(xsh, XBT_NULL, p, &len);
                free(p);
                if (!ip) {
                    continue;
                }
                if (f == 0 && j == 0) {
                    char *k = xa_asprintf("%s/ip", vifs[i]);
                    kv_add(m, k, xa_strdup(ip));
                    free(k);
                }
                char *k = xa_asprintf("%s/%s/%s", vifs[i], fams[f], addrs[j]);
                kv_add(m, k, ip);
                free(k);
            }
            free(addrs);
            free(dir);
        }
    }
    free(vifs);
    free(base);
}

static struct xa_error *
xen_guest_info(const char *uuid, struct xa_hv_guest_info *out)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    struct kv os = {0}, drv = {0}, net = {0}, other = {0};
    bool agent = kv_from_xs(&os, d.domid, "name", "data/os_name");
    agent |= kv_from_xs(&os, d.domid, "uname", "data/os_uname");
    agent |= kv_from_xs(&os, d.domid, "distro", "data/os_distro");
    agent |= kv_from_xs(&os, d.domid, "major", "data/os_majorver");
    agent |= kv_from_xs(&os, d.domid, "minor", "data/os_minorver");
    agent |= kv_from_xs(&drv, d.domid, "major", "attr/PVAddons/MajorVersion");
    kv_from_xs(&drv, d.domid, "minor", "attr/PVAddons/MinorVersion");
    kv_from_xs(&drv, d.domid, "micro", "attr/PVAddons/MicroVersion");
    kv_from_xs(&drv, d.domid, "build", "attr/PVAddons/BuildVersion");
    guest_networks(d.domid, &net);
    /* The guest kernel itself advertises what its control node accepts. */
    static const char *const features[] = {
        "feature-shutdown", "feature-poweroff",     "feature-reboot",
        "feature-suspend",  "feature-vcpu-hotplug",
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(features); i++) {
        char *rel = xa_asprintf("control/%s", features[i]);
        kv_from_xs(&other, d.domid, features[i], rel);
        free(rel);
    }
    out->present = agent || net.n > 0;
    out->os_version = kv_done(&os);
    out->pv_drivers_version = kv_done(&drv);
    out->networks = kv_done(&net);
    out->other = kv_done(&other);
    if (!out->present) {
        xa_hv_guest_info_free(out);
    }
    return NULL;
}

static struct xa_error *
xen_console(const char *uuid, enum xa_hv_console_kind kind, char **endpoint)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    if (kind == XA_HV_CONSOLE_VNC) {
        char *port = xs_get(d.domid, "console/vnc-port");
        if (!port) {
            return xa_error_internal("xen: VM %s has no graphical console",
                                     uuid);
        }
        *endpoint = xa_asprintf("tcp:127.0.0.1:%s", port);
        free(port);
        return NULL;
    }
    libxl_dominfo info;
    libxl_dominfo_init(&info);
    libxl_console_type type = LIBXL_CONSOLE_TYPE_PV;
    if (libxl_domain_info(ctx, &info, d.domid) == 0 &&
        info.domain_type == LIBXL_DOMAIN_TYPE_HVM) {
        type = LIBXL_CONSOLE_TYPE_SERIAL;
    }
    libxl_dominfo_dispose(&info);
    char *tty = NULL;
    clear_error();
    int rc = libxl_console_get_tty(ctx, d.domid, 0, type, &tty);
    if (rc != 0) {
        return lx_error("console", uuid, rc);
    }
    *endpoint = xa_asprintf("pty:%s", tty);
    free(tty);
    return NULL;
}

/* --- hot-plug ---------------------------------------------------------------
 */

static struct xa_error *
xen_plug_disk(const char *uuid, const struct xa_hv_disk *disk)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    libxl_device_disk k;
    disk_config(disk, &k);
    clear_error();
    int rc = libxl_device_disk_add(ctx, d.domid, &k, NULL);
    libxl_device_disk_dispose(&k);
    return rc == 0 ? NULL : lx_error("disk plug", uuid, rc);
}

static struct xa_error *
xen_unplug_disk(const char *uuid, const char *device)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    char *vdev = vdev_name(device);
    libxl_device_disk k;
    libxl_device_disk_init(&k);
    clear_error();
    int rc = libxl_vdev_to_device_disk(ctx, d.domid, vdev, &k);
    free(vdev);
    if (rc == 0) {
        rc = libxl_device_disk_remove(ctx, d.domid, &k, NULL);
    }
    libxl_device_disk_dispose(&k);
    return rc == 0 ? NULL : lx_error("disk unplug", uuid, rc);
}

static struct xa_error *
xen_plug_nic(const char *uuid, const struct xa_hv_nic *nic)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    libxl_device_nic n;
    struct xa_error *err = nic_config(nic, &n);
    if (!err) {
        clear_error();
        int rc = libxl_device_nic_add(ctx, d.domid, &n, NULL);
        if (rc != 0) {
            err = lx_error("VIF plug", uuid, rc);
        }
    }
    libxl_device_nic_dispose(&n);
    return err;
}

static struct xa_error *
xen_unplug_nic(const char *uuid, const char *device)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    int64_t devid;
    if (!device || !xa_parse_int64(device, &devid) || devid < 0) {
        return xa_error_internal("xen: bad VIF device '%s'",
                                 device ? device : "");
    }
    libxl_device_nic n;
    libxl_device_nic_init(&n);
    clear_error();
    int rc = libxl_devid_to_device_nic(ctx, d.domid, (int)devid, &n);
    if (rc == 0) {
        rc = libxl_device_nic_remove(ctx, d.domid, &n, NULL);
    }
    libxl_device_nic_dispose(&n);
    return rc == 0 ? NULL : lx_error("VIF unplug", uuid, rc);
}

static struct xa_error *
xen_set_memory_target(const char *uuid, int64_t bytes)
{
    struct dom d;
    if (!find_domain(uuid, &d)) {
        return no_domain(uuid);
    }
    clear_error();
    int rc = libxl_set_memory_target(ctx, d.domid, bytes / 1024, 0, 1);
    return rc == 0 ? NULL : lx_error("memory target", uuid, rc);
}

const struct xa_hv_driver xa_hv_xen_driver = {
    .name = "xen",
    .init = xen_init,
    .fini = xen_fini,
    .host_memory = xen_host_memory,
    .create = xen_create,
    .unpause = xen_unpause,
    .pause = xen_pause,
    .shutdown = xen_shutdown,
    .destroy = xen_destroy,
    .hard_reboot = xen_hard_reboot,
    .suspend = xen_suspend,
    .resume = xen_resume,
    .migrate_send = xen_migrate_send,
    .migrate_receive = xen_migrate_receive,
    .last_migration = xen_last_migration,
    .list = xen_list,
    .get_info = xen_get_info,
    .guest_info = xen_guest_info,
    .console = xen_console,
    .plug_disk = xen_plug_disk,
    .unplug_disk = xen_unplug_disk,
    .plug_nic = xen_plug_nic,
    .unplug_nic = xen_unplug_nic,
    .set_memory_target = xen_set_memory_target,
};
