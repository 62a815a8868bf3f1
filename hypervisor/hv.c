/* hv.c - see hv.h.  Backend registry and the NULL-checking wrappers. */
#include "hypervisor/hv.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#ifdef XA_HAVE_XEN
#    include "hypervisor/xen/xen.h"
#endif

#define MAX_DRIVERS 8

/* Written at start-up only, before the server takes calls. */
static const struct xa_hv_driver *drivers[MAX_DRIVERS];
static size_t n_drivers;
static const struct xa_hv_driver *active;

void
xa_hv_register(const struct xa_hv_driver *drv)
{
    for (size_t i = 0; i < n_drivers; i++) {
        if (strcmp(drivers[i]->name, drv->name) == 0) {
            drivers[i] = drv;
            return;
        }
    }
    if (n_drivers < MAX_DRIVERS) {
        drivers[n_drivers++] = drv;
    }
}

void
xa_hv_guest_info_free(struct xa_hv_guest_info *g)
{
    char **maps[] = {g->os_version, g->networks, g->pv_drivers_version,
                     g->other};
    for (size_t i = 0; i < XA_ARRAY_SIZE(maps); i++) {
        for (char **p = maps[i]; p && *p; p++) {
            free(*p);
        }
        free(maps[i]);
    }
    memset(g, 0, sizeof *g);
}

struct xa_error *
xa_hv_select(const char *name)
{
    if (n_drivers == 0) {
        xa_hv_register(&xa_hv_sim_driver);
        xa_hv_register(&xa_hv_kvm_driver);
#ifdef XA_HAVE_XEN
        /* Only where libxl was found at build time (CMakeLists.txt). */
        xa_hv_register(&xa_hv_xen_driver);
#endif
    }
    for (size_t i = 0; i < n_drivers; i++) {
        if (strcmp(drivers[i]->name, name) == 0) {
            if (drivers[i]->init) {
                struct xa_error *err = drivers[i]->init();
                if (err) {
                    return err;
                }
            }
            active = drivers[i];
            xa_log_info("hv", "hypervisor driver: %s", name);
            return NULL;
        }
    }
    return xa_error_internal("unknown hypervisor driver '%s'", name);
}

const char *
xa_hv_name(void)
{
    return active ? active->name : NULL;
}

void
xa_hv_shutdown_driver(void)
{
    if (active && active->fini) {
        active->fini();
    }
    active = NULL;
}

/* NOT_IMPLEMENTED unless the active backend has entry 'fn'. */
#define NEED(fn, what)                             \
    do {                                           \
        if (!active || !active->fn) {              \
            return xa_error_not_implemented(what); \
        }                                          \
    } while (0)

struct xa_error *
xa_hv_host_memory(int64_t *total, int64_t *free_bytes)
{
    NEED(host_memory, "host_memory");
    return active->host_memory(total, free_bytes);
}

struct xa_error *
xa_hv_create(const char *what, const struct xa_hv_domain_config *cfg,
             int64_t *domid)
{
    NEED(create, what);
    return active->create(cfg, domid);
}

struct xa_error *
xa_hv_unpause(const char *what, const char *uuid)
{
    NEED(unpause, what);
    return active->unpause(uuid);
}

struct xa_error *
xa_hv_pause(const char *what, const char *uuid)
{
    NEED(pause, what);
    return active->pause(uuid);
}

struct xa_error *
xa_hv_shutdown(const char *what, const char *uuid,
               enum xa_hv_shutdown_reason reason, double timeout,
               int64_t *new_domid)
{
    NEED(shutdown, what);
    return active->shutdown(uuid, reason, timeout, new_domid);
}

struct xa_error *
xa_hv_destroy(const char *what, const char *uuid)
{
    NEED(destroy, what);
    return active->destroy(uuid);
}

struct xa_error *
xa_hv_hard_reboot(const char *what, const struct xa_hv_domain_config *cfg,
                  int64_t *new_domid)
{
    NEED(hard_reboot, what);
    return active->hard_reboot(cfg, new_domid);
}

struct xa_error *
xa_hv_suspend(const char *what, const char *uuid, const char *path)
{
    NEED(suspend, what);
    return active->suspend(uuid, path);
}

struct xa_error *
xa_hv_resume(const char *what, const struct xa_hv_domain_config *cfg,
             const char *path, int64_t *domid)
{
    NEED(resume, what);
    return active->resume(cfg, path, domid);
}

struct xa_error *
xa_hv_migrate_send(const char *what, const char *uuid, const char *url,
                   bool live)
{
    NEED(migrate_send, what);
    return active->migrate_send(uuid, url, live);
}

struct xa_error *
xa_hv_migrate_receive(const char *what, const struct xa_hv_domain_config *cfg,
                      int fd, int64_t *domid)
{
    NEED(migrate_receive, what);
    return active->migrate_receive(cfg, fd, domid);
}

struct xa_error *
xa_hv_disk_export(const char *what, const char *uuid,
                  const char *const *devices, size_t n, char **endpoint)
{
    NEED(disk_export, what);
    return active->disk_export(uuid, devices, n, endpoint);
}

bool
xa_hv_last_migration(const char *uuid, struct xa_hv_migration_stats *out)
{
    memset(out, 0, sizeof *out);
    return active && active->last_migration &&
           active->last_migration(uuid, out);
}

struct xa_error *
xa_hv_list(struct xa_hv_domain_info **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    NEED(list, "list_domains");
    return active->list(out, n);
}

struct xa_error *
xa_hv_get_info(const char *uuid, struct xa_hv_domain_info *out)
{
    NEED(get_info, "domain_info");
    return active->get_info(uuid, out);
}

struct xa_error *
xa_hv_guest_info(const char *uuid, struct xa_hv_guest_info *out)
{
    memset(out, 0, sizeof *out);
    NEED(guest_info, "guest_info");
    return active->guest_info(uuid, out);
}

struct xa_error *
xa_hv_console(const char *uuid, enum xa_hv_console_kind kind, char **endpoint)
{
    *endpoint = NULL;
    NEED(console, "console");
    return active->console(uuid, kind, endpoint);
}

struct xa_error *
xa_hv_plug_disk(const char *what, const char *uuid,
                const struct xa_hv_disk *disk)
{
    NEED(plug_disk, what);
    return active->plug_disk(uuid, disk);
}

struct xa_error *
xa_hv_unplug_disk(const char *what, const char *uuid, const char *device)
{
    NEED(unplug_disk, what);
    return active->unplug_disk(uuid, device);
}

struct xa_error *
xa_hv_plug_nic(const char *what, const char *uuid, const struct xa_hv_nic *nic)
{
    NEED(plug_nic, what);
    return active->plug_nic(uuid, nic);
}

struct xa_error *
xa_hv_unplug_nic(const char *what, const char *uuid, const char *device)
{
    NEED(unplug_nic, what);
    return active->unplug_nic(uuid, device);
}

struct xa_error *
xa_hv_name_detach(struct xa_error *err, const char *cls, const char *ref)
{
    if (!err || strcmp(err->code, "DEVICE_DETACH_REJECTED") != 0) {
        return err;
    }
    struct xa_error *named =
        xa_error_new("DEVICE_DETACH_REJECTED", 3, cls, ref,
                     err->n_params > 2 ? err->params[2] : "");
    xa_error_free(err);
    return named;
}

struct xa_error *
xa_hv_set_memory_target(const char *what, const char *uuid, int64_t bytes)
{
    NEED(set_memory_target, what);
    return active->set_memory_target(uuid, bytes);
}
