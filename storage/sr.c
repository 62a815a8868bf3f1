/* sr.c - see sr.h. */
#include "storage/sr.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DRIVERS 8

/* Filled at start-up (first lookup happens before serving). */
static const struct xa_sr_driver *drivers[MAX_DRIVERS];
static size_t n_drivers;

void
xa_sr_register(const struct xa_sr_driver *drv)
{
    for (size_t i = 0; i < n_drivers; i++) {
        if (strcmp(drivers[i]->type, drv->type) == 0) {
            drivers[i] = drv;
            return;
        }
    }
    if (n_drivers < MAX_DRIVERS) {
        drivers[n_drivers++] = drv;
    }
}

void
xa_sr_vdi_free_array(struct xa_sr_vdi *a, size_t n)
{
    for (size_t i = 0; a && i < n; i++) {
        free(a[i].location);
    }
    free(a);
}

static void
register_builtins(void)
{
    if (n_drivers == 0) {
        xa_sr_register(&xa_sr_ext_driver);
        xa_sr_register(&xa_sr_file_driver);
        xa_sr_register(&xa_sr_nfs_driver);
        xa_sr_register(&xa_sr_iso_driver);
    }
}

const struct xa_sr_driver *
xa_sr_driver_for(const char *type)
{
    register_builtins();
    for (size_t i = 0; type && i < n_drivers; i++) {
        if (strcmp(drivers[i]->type, type) == 0) {
            return drivers[i];
        }
    }
    return NULL;
}

struct xa_value *
xa_sr_types(void)
{
    register_builtins();
    struct xa_value *a = xa_array();
    for (size_t i = 0; i < n_drivers; i++) {
        xa_array_append(a, xa_string(drivers[i]->type));
    }
    return a;
}

/* The backend of 'sr' with entry 'fn', or an error return. */
#define DRIVER(d, sr, fn, what)                                  \
    const struct xa_sr_driver *d = xa_sr_driver_for((sr)->type); \
    if (!d) {                                                    \
        return xa_error_new("SR_UNKNOWN_DRIVER", 1, (sr)->type); \
    }                                                            \
    if (!d->fn) {                                                \
        return xa_error_not_implemented(what);                   \
    }

/* The same for VDI operations a backend may simply not offer. */
#define VDI_DRIVER(d, sr, fn)                                             \
    const struct xa_sr_driver *d = xa_sr_driver_for((sr)->type);          \
    if (!d) {                                                             \
        return xa_error_new("SR_UNKNOWN_DRIVER", 1, (sr)->type);          \
    }                                                                     \
    if (!d->fn) {                                                         \
        return xa_error_new("SR_OPERATION_NOT_SUPPORTED", 1, (sr)->uuid); \
    }

struct xa_error *
xa_sr_attach(const struct xa_sr_ctx *sr)
{
    DRIVER(d, sr, attach, "PBD.plug");
    return d->attach(sr);
}

struct xa_error *
xa_sr_detach(const struct xa_sr_ctx *sr)
{
    DRIVER(d, sr, detach, "PBD.unplug");
    return d->detach(sr);
}

struct xa_error *
xa_sr_create(const struct xa_sr_ctx *sr)
{
    DRIVER(d, sr, create, "SR.create");
    return d->create(sr);
}

struct xa_error *
xa_sr_destroy(const struct xa_sr_ctx *sr)
{
    DRIVER(d, sr, destroy, "SR.destroy");
    return d->destroy(sr);
}

struct xa_error *
xa_sr_probe(const char *type, const struct xa_value *dc, char **xml)
{
    const struct xa_sr_driver *d = xa_sr_driver_for(type);
    if (!d) {
        return xa_error_new("SR_UNKNOWN_DRIVER", 1, type);
    }
    if (!d->probe) {
        return xa_error_not_implemented("SR.probe");
    }
    return d->probe(dc, xml);
}

struct xa_error *
xa_sr_stat(const struct xa_sr_ctx *sr, struct xa_sr_stat *out)
{
    DRIVER(d, sr, stat, "SR.scan");
    return d->stat(sr, out);
}

struct xa_error *
xa_sr_scan(const struct xa_sr_ctx *sr, struct xa_sr_vdi **out, size_t *n)
{
    DRIVER(d, sr, scan, "SR.scan");
    return d->scan(sr, out, n);
}

struct xa_error *
xa_sr_vdi_create(const struct xa_sr_ctx *sr, const char *vdi_uuid, int64_t size,
                 struct xa_sr_vdi *out)
{
    VDI_DRIVER(d, sr, vdi_create);
    return d->vdi_create(sr, vdi_uuid, size, out);
}

struct xa_error *
xa_sr_vdi_destroy(const struct xa_sr_ctx *sr, const char *location)
{
    VDI_DRIVER(d, sr, vdi_destroy);
    return d->vdi_destroy(sr, location);
}

struct xa_error *
xa_sr_vdi_clone(const char *what, const struct xa_sr_ctx *sr,
                const char *location, const char *new_uuid, bool snapshot,
                struct xa_sr_vdi *out)
{
    XA_UNUSED(what);
    if (snapshot) {
        VDI_DRIVER(d, sr, vdi_snapshot);
        return d->vdi_snapshot(sr, location, new_uuid, out);
    }
    VDI_DRIVER(d, sr, vdi_clone);
    return d->vdi_clone(sr, location, new_uuid, out);
}

struct xa_error *
xa_sr_vdi_resize(const struct xa_sr_ctx *sr, const char *location,
                 int64_t new_size, struct xa_sr_vdi *out)
{
    VDI_DRIVER(d, sr, vdi_resize);
    return d->vdi_resize(sr, location, new_size, out);
}

struct xa_error *
xa_sr_vdi_copy(const struct xa_sr_ctx *src, const char *location,
               const struct xa_sr_ctx *dst, const char *new_uuid,
               struct xa_sr_vdi *out)
{
    /* The destination's backend reads the source through its path: every
     * built-in backend keeps files.  A source only readable through a
     * stream would need export + publish instead. */
    VDI_DRIVER(d, dst, vdi_copy);
    return d->vdi_copy(src, location, dst, new_uuid, out);
}

struct xa_error *
xa_sr_vdi_stat(const struct xa_sr_ctx *sr, const char *location,
               struct xa_sr_vdi *out)
{
    VDI_DRIVER(d, sr, vdi_stat);
    return d->vdi_stat(sr, location, out);
}

struct xa_error *
xa_sr_vdi_attach(const struct xa_sr_ctx *sr, const char *location,
                 bool read_only, char **path, char **format)
{
    DRIVER(d, sr, vdi_attach, "VBD.plug");
    return d->vdi_attach(sr, location, read_only, path, format);
}

struct xa_error *
xa_sr_vdi_detach(const struct xa_sr_ctx *sr, const char *location)
{
    DRIVER(d, sr, vdi_detach, "VBD.unplug");
    return d->vdi_detach(sr, location);
}

struct xa_error *
xa_sr_vdi_stage(const struct xa_sr_ctx *sr, const char *location, char **tmp)
{
    VDI_DRIVER(d, sr, vdi_stage);
    if (!d->vdi_publish) {
        return xa_error_new("SR_OPERATION_NOT_SUPPORTED", 1, sr->uuid);
    }
    return d->vdi_stage(sr, location, tmp);
}

struct xa_error *
xa_sr_vdi_publish(const struct xa_sr_ctx *sr, const char *location,
                  const char *tmp, const char *format, int64_t max_size,
                  struct xa_sr_vdi *out)
{
    VDI_DRIVER(d, sr, vdi_publish);
    return d->vdi_publish(sr, location, tmp, format, max_size, out);
}

struct xa_error *
xa_sr_vdi_export(const struct xa_sr_ctx *sr, const char *location,
                 const char *format, char **path, bool *temporary)
{
    VDI_DRIVER(d, sr, vdi_export);
    return d->vdi_export(sr, location, format, path, temporary);
}
