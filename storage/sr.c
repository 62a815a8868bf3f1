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

const struct xa_sr_driver *
xa_sr_driver_for(const char *type)
{
    if (n_drivers == 0) {
        xa_sr_register(&xa_sr_file_driver);
        xa_sr_register(&xa_sr_ext_driver);
    }
    for (size_t i = 0; type && i < n_drivers; i++) {
        if (strcmp(drivers[i]->type, type) == 0) {
            return drivers[i];
        }
    }
    return NULL;
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

struct xa_error *
xa_sr_attach(const struct xa_sr_ctx *sr)
{
    DRIVER(d, sr, attach, "PBD.plug");
    return d->attach(sr);
}

struct xa_error *
xa_sr_stat(const struct xa_sr_ctx *sr, struct xa_sr_stat *out)
{
    DRIVER(d, sr, stat, "SR.scan");
    return d->stat(sr, out);
}

struct xa_error *
xa_sr_vdi_create(const struct xa_sr_ctx *sr, const char *vdi_uuid, int64_t size,
                 struct xa_sr_vdi *out)
{
    DRIVER(d, sr, vdi_create, "VDI.create");
    return d->vdi_create(sr, vdi_uuid, size, out);
}

struct xa_error *
xa_sr_vdi_destroy(const struct xa_sr_ctx *sr, const char *location)
{
    DRIVER(d, sr, vdi_destroy, "VDI.destroy");
    return d->vdi_destroy(sr, location);
}

struct xa_error *
xa_sr_vdi_clone(const char *what, const struct xa_sr_ctx *sr,
                const char *location, const char *new_uuid, bool snapshot,
                struct xa_sr_vdi *out)
{
    if (snapshot) {
        DRIVER(d, sr, vdi_snapshot, what);
        return d->vdi_snapshot(sr, location, new_uuid, out);
    }
    DRIVER(d, sr, vdi_clone, what);
    return d->vdi_clone(sr, location, new_uuid, out);
}

struct xa_error *
xa_sr_vdi_resize(const struct xa_sr_ctx *sr, const char *location,
                 int64_t new_size, struct xa_sr_vdi *out)
{
    DRIVER(d, sr, vdi_resize, "VDI.resize");
    return d->vdi_resize(sr, location, new_size, out);
}

struct xa_error *
xa_sr_vdi_copy(const struct xa_sr_ctx *src, const char *location,
               const struct xa_sr_ctx *dst, const char *new_uuid,
               struct xa_sr_vdi *out)
{
    /* The destination's backend reads the source file itself: both
     * built-in backends keep plain files.  Mixed backends will need a
     * stream through attach. */
    DRIVER(d, dst, vdi_copy, "VDI.copy");
    return d->vdi_copy(src, location, dst, new_uuid, out);
}

struct xa_error *
xa_sr_vdi_attach(const struct xa_sr_ctx *sr, const char *location,
                 bool read_only, char **path, char **format)
{
    DRIVER(d, sr, vdi_attach, "VBD.plug");
    return d->vdi_attach(sr, location, read_only, path, format);
}
