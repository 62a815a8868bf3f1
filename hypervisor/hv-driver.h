/* hv-driver.h - what a hypervisor backend provides to xapid.
 *
 * One struct of function pointers per backend (sim, kvm, xen), chosen by
 * name at start-up (--hypervisor).  The API layer never calls a backend
 * directly: it goes through the wrappers of hv.h, which answer
 * NOT_IMPLEMENTED for an entry a backend leaves NULL.
 *
 * Domains are named by the uuid of the VM they run, as xenopsd does, so a
 * restarted xapid can match what the backend reports with its database.
 * Every entry may block (a clean shutdown waits for the guest) and is
 * called with no database transaction held; entries may be called from
 * several threads at once, for different or the same domain, and a
 * backend does its own locking.
 *
 * Errors are XenAPI errors (struct xa_error *, NULL on success): a backend
 * reports what went wrong in the code the client should see, e.g.
 * VM_SHUTDOWN_TIMEOUT, or INTERNAL_ERROR with its own text. */
#ifndef XA_HV_DRIVER_H
#define XA_HV_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* One disk of a domain: what the storage driver handed back for a VDI
 * (xa_sr_vdi_attach), or an empty CD drive when 'path' is NULL. */
struct xa_hv_disk {
    const char *device; /* userdevice, "0", "1", ... */
    const char *path;   /* file or block device; NULL for empty media */
    const char *format; /* "raw", "qcow2" */
    bool read_only;
    bool cdrom;
    bool bootable;
};

/* One network interface. */
struct xa_hv_nic {
    const char *device; /* "0", "1", ... */
    const char *mac;    /* "aa:bb:cc:dd:ee:ff" */
    const char *bridge; /* the network's bridge, "" when unknown */
    int64_t mtu;
};

/* Everything needed to build a domain; every pointer is borrowed for the
 * duration of the call. */
struct xa_hv_domain_config {
    const char *uuid; /* the VM's uuid: the domain's name */
    const char *name_label;
    bool hvm;                  /* HVM_boot_policy set */
    int64_t memory_static_max; /* bytes */
    int64_t memory_target;     /* bytes the domain starts with */
    int64_t vcpus_max;
    int64_t vcpus_at_startup;
    const char *kernel, *ramdisk, *cmdline; /* PV direct boot, or "" */
    const char *boot_order;                 /* HVM_boot_params:order */
    const struct xa_hv_disk *disks;
    size_t n_disks;
    const struct xa_hv_nic *nics;
    size_t n_nics;
    /* VM.platform as NULL-terminated key, value, key, value, ... pairs
     * (backend knobs such as "accel" or "machine"); NULL when empty. */
    const char *const *platform;
};

enum xa_hv_state {
    XA_HV_RUNNING,
    XA_HV_PAUSED,
    XA_HV_SHUTDOWN, /* the guest asked to halt; the domain still exists */
    XA_HV_CRASHED,
};

/* What a backend reports about one domain. */
struct xa_hv_domain_info {
    char uuid[37];
    int64_t domid;
    enum xa_hv_state state;
    int64_t memory_actual; /* bytes */
    int64_t vcpus;         /* online VCPUs */
    double cpu_seconds;    /* consumed since the domain was built */
    double start_time;     /* seconds since the epoch */
};

/* What the guest agent inside a domain has reported (the PV tools write
 * these to xenstore on Xen; the simulator makes them up).  Maps are
 * NULL-terminated key, value, key, value, ... arrays owned by the
 * caller's struct until xa_hv_guest_info_free(). */
struct xa_hv_guest_info {
    bool present; /* false: no agent has reported yet */
    char **os_version;
    char **networks;
    char **pv_drivers_version;
    char **other;
};

void xa_hv_guest_info_free(struct xa_hv_guest_info *g);

/* What one outgoing live migration cost: wall time from the first byte
 * to the destination running, the pause of the final copy, the memory
 * sent (all rounds) and the number of pre-copy rounds. */
struct xa_hv_migration_stats {
    int64_t total_ms;
    int64_t downtime_ms;
    int64_t transferred;
    int64_t rounds;
};

enum xa_hv_shutdown_reason {
    XA_HV_POWEROFF,
    XA_HV_REBOOT,
};

/* How to reach a domain's console. */
enum xa_hv_console_kind {
    XA_HV_CONSOLE_TEXT, /* vt100 serial console */
    XA_HV_CONSOLE_VNC,  /* rfb graphical console */
};

struct xa_hv_driver {
    const char *name; /* "sim", "kvm", "xen" */

    /* Once at start-up, before anything else; NULL means nothing to do. */
    struct xa_error *(*init)(void);
    /* Once at exit. */
    void (*fini)(void);

    /* The host's memory as the hypervisor sees it: 'total' and what is
     * still free for new domains (the control domain and running domains
     * already taken out).  Bytes. */
    struct xa_error *(*host_memory)(int64_t *total, int64_t *free_bytes);

    /* Builds a domain from 'cfg' and leaves it paused (devices attached,
     * memory allocated).  '*domid' receives its domain id. */
    struct xa_error *(*create)(const struct xa_hv_domain_config *cfg,
                               int64_t *domid);
    /* Lets a paused domain run (also the second half of start). */
    struct xa_error *(*unpause)(const char *uuid);
    struct xa_error *(*pause)(const char *uuid);
    /* Asks the guest to power off or reboot and waits up to 'timeout'
     * seconds for it to do so (VM_SHUTDOWN_TIMEOUT otherwise).  After a
     * successful POWEROFF the domain is gone; after REBOOT it runs again,
     * rebuilt, with '*new_domid' (may be NULL). */
    struct xa_error *(*shutdown)(const char *uuid,
                                 enum xa_hv_shutdown_reason reason,
                                 double timeout, int64_t *new_domid);
    /* Destroys the domain at once, whatever the guest is doing. */
    struct xa_error *(*destroy)(const char *uuid);
    /* Destroys and rebuilds the domain from 'cfg', running. */
    struct xa_error *(*hard_reboot)(const struct xa_hv_domain_config *cfg,
                                    int64_t *new_domid);
    /* Saves the domain's memory to 'path' (a file or an attached VDI)
     * and destroys it. */
    struct xa_error *(*suspend)(const char *uuid, const char *path);
    /* Rebuilds a domain from 'cfg' and the image at 'path', paused. */
    struct xa_error *(*resume)(const struct xa_hv_domain_config *cfg,
                               const char *path, int64_t *domid);
    /* Live migration: the sender streams the domain to 'url' (what the
     * receiver's migrate_receive answered) and destroys it once the
     * receiver has it; the receiver builds it from the stream on 'fd'. */
    struct xa_error *(*migrate_send)(const char *uuid, const char *url,
                                     bool live);
    struct xa_error *(*migrate_receive)(const struct xa_hv_domain_config *cfg,
                                        int fd, int64_t *domid);
    /* Storage motion (NULL: the backend copies no disk while it runs).
     * The receiver's incoming domain 'uuid' serves its disks 'devices'
     * (userdevices) writable over NBD, export "vbd<device>", on the unix
     * socket '*endpoint' (caller frees) until it runs.  The sender's
     * migrate_send url then carries "mirror=DEVICE.FD,..." (FD a
     * descriptor of xapid connected to that socket): each disk is
     * mirrored there while the guest runs and the mirrors end in sync at
     * the switch-over; on any failure the guest keeps its own disks. */
    struct xa_error *(*disk_export)(const char *uuid,
                                    const char *const *devices, size_t n,
                                    char **endpoint);
    /* Figures of the last completed migrate_send of 'uuid', kept after
     * its domain left; false when none (NULL: the backend keeps none). */
    bool (*last_migration)(const char *uuid, struct xa_hv_migration_stats *out);

    /* Every domain the backend runs, the control domain excluded.
     * '*out' (caller frees with free()) has '*n' entries. */
    struct xa_error *(*list)(struct xa_hv_domain_info **out, size_t *n);
    /* One domain; XA_ERR VM_NOT_RUNNING-like INTERNAL_ERROR when absent. */
    struct xa_error *(*get_info)(const char *uuid,
                                 struct xa_hv_domain_info *out);
    /* What the guest agent reports ('out' zeroed by the caller). */
    struct xa_error *(*guest_info)(const char *uuid,
                                   struct xa_hv_guest_info *out);
    /* Where the domain's console listens, e.g. "unix:/run/x/console.sock"
     * or "tcp:127.0.0.1:5901"; caller frees '*endpoint'. */
    struct xa_error *(*console)(const char *uuid, enum xa_hv_console_kind kind,
                                char **endpoint);

    /* Hot-plug on a running domain.  An unplug the guest does not allow
     * answers DEVICE_DETACH_REJECTED("", device, reason); the core puts
     * in the device's class and ref (xa_hv_name_detach). */
    struct xa_error *(*plug_disk)(const char *uuid,
                                  const struct xa_hv_disk *disk);
    struct xa_error *(*unplug_disk)(const char *uuid, const char *device);
    struct xa_error *(*plug_nic)(const char *uuid, const struct xa_hv_nic *nic);
    struct xa_error *(*unplug_nic)(const char *uuid, const char *device);
    /* Changes the balloon target of a running domain. */
    struct xa_error *(*set_memory_target)(const char *uuid, int64_t bytes);
};

/* Makes a backend selectable by name (call before xa_hv_select). */
void xa_hv_register(const struct xa_hv_driver *drv);

/* The backends built into xapid. */
extern const struct xa_hv_driver xa_hv_sim_driver;
extern const struct xa_hv_driver xa_hv_kvm_driver;

#endif
