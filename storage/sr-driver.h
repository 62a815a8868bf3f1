/* sr-driver.h - what a storage backend provides to xapid.
 *
 * One struct of function pointers per SR type ("ext" and "file" for now:
 * a directory of sparse image files), picked by the SR's type.  The API
 * layer never calls a backend directly but goes through storage/sr.h,
 * which answers SR_UNKNOWN_DRIVER for an unknown type and NOT_IMPLEMENTED
 * for an entry a backend leaves NULL.
 *
 * A backend keeps no state of its own between calls: everything it needs
 * to find an SR is in 'struct xa_sr_ctx' (built from the SR and PBD rows
 * by the caller), and a VDI is named by its 'location' (what the backend
 * answered when it made it; stored in VDI.location).  Entries are called
 * without database transactions held, possibly from several threads. */
#ifndef XA_SR_DRIVER_H
#define XA_SR_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Where an SR lives on this host: borrowed strings. */
struct xa_sr_ctx {
    const char *uuid;
    const char *type;
    /* device_config:path, or for local SRs <state-dir>/sr/<uuid>. */
    const char *path;
};

/* Sizes, in bytes. */
struct xa_sr_stat {
    int64_t physical_size;        /* capacity of the SR */
    int64_t physical_utilisation; /* bytes actually used */
};

/* What a new or scanned VDI looks like to the backend. */
struct xa_sr_vdi {
    char *location; /* owned; the backend's name for it */
    int64_t virtual_size;
    int64_t physical_utilisation;
};

struct xa_sr_driver {
    const char *type; /* "ext", "file" */

    /* PBD.plug / unplug on this host: makes the SR usable (creates the
     * directory, mounts the share) or releases it. */
    struct xa_error *(*attach)(const struct xa_sr_ctx *sr);
    struct xa_error *(*detach)(const struct xa_sr_ctx *sr);
    struct xa_error *(*stat)(const struct xa_sr_ctx *sr,
                             struct xa_sr_stat *out);
    /* Lists the VDIs present: '*out' (free with xa_sr_vdi_free_array). */
    struct xa_error *(*scan)(const struct xa_sr_ctx *sr, struct xa_sr_vdi **out,
                             size_t *n);

    /* A new empty VDI of 'size' bytes named after 'vdi_uuid'. */
    struct xa_error *(*vdi_create)(const struct xa_sr_ctx *sr,
                                   const char *vdi_uuid, int64_t size,
                                   struct xa_sr_vdi *out);
    struct xa_error *(*vdi_destroy)(const struct xa_sr_ctx *sr,
                                    const char *location);
    /* A new VDI 'new_uuid' with the content of 'location' (clone: the
     * cheapest copy the backend can make, e.g. a sparse or reflink copy;
     * snapshot: the same, read-only by convention of the caller). */
    struct xa_error *(*vdi_clone)(const struct xa_sr_ctx *sr,
                                  const char *location, const char *new_uuid,
                                  struct xa_sr_vdi *out);
    struct xa_error *(*vdi_snapshot)(const struct xa_sr_ctx *sr,
                                     const char *location, const char *new_uuid,
                                     struct xa_sr_vdi *out);
    struct xa_error *(*vdi_resize)(const struct xa_sr_ctx *sr,
                                   const char *location, int64_t new_size,
                                   struct xa_sr_vdi *out);
    /* A full copy of 'location' in 'src' into a new VDI of 'dst'. */
    struct xa_error *(*vdi_copy)(const struct xa_sr_ctx *src,
                                 const char *location,
                                 const struct xa_sr_ctx *dst,
                                 const char *new_uuid, struct xa_sr_vdi *out);
    /* Makes the VDI available to a domain on this host: '*path' is what
     * the hypervisor opens, '*format' its image format ("raw", "qcow2");
     * both owned by the caller. */
    struct xa_error *(*vdi_attach)(const struct xa_sr_ctx *sr,
                                   const char *location, bool read_only,
                                   char **path, char **format);
    struct xa_error *(*vdi_detach)(const struct xa_sr_ctx *sr,
                                   const char *location);
};

void xa_sr_vdi_free_array(struct xa_sr_vdi *a, size_t n);

/* Makes a backend available for its type (before serving). */
void xa_sr_register(const struct xa_sr_driver *drv);

/* Built-in backends. */
extern const struct xa_sr_driver xa_sr_file_driver; /* type "file" */
extern const struct xa_sr_driver xa_sr_ext_driver;  /* type "ext": same */

#endif
