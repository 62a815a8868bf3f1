/* sr-driver.h - what a storage backend provides to xapid.
 *
 * One struct of function pointers per SR type, picked by the SR's type:
 *   ext   a local directory of thin qcow2 images (and raw ones), with
 *         snapshots and clones as qcow2 backing chains (storage/ext);
 *   file  the same layout on any directory (device_config:location),
 *         shared when the SR says so: several hosts may use one directory;
 *   nfs   mounts device_config:server + serverpath, then is 'file' on the
 *         mount (storage/nfs);
 *   iso   a read-only library of .iso files (storage/iso).
 * ext, file and nfs share their image logic (storage/imgdir).  The API
 * layer never calls a backend directly but goes through storage/sr.h,
 * which answers SR_UNKNOWN_DRIVER for an unknown type and NOT_IMPLEMENTED
 * (or SR_OPERATION_NOT_SUPPORTED for VDI data operations) for an entry a
 * backend leaves NULL.
 *
 * A backend keeps no state of its own between calls: everything it needs
 * to find an SR is in 'struct xa_sr_ctx' (built from the SR and PBD rows
 * by the caller), and a VDI is named by its 'location' (what the backend
 * answered when it made it; stored in VDI.location).  A location is a
 * plain name inside the SR: backends refuse one that could reach outside
 * it ('/', a leading '.', symlinks).  Entries are called without database
 * transactions held, possibly from several threads and, for shared SRs,
 * from several hosts at once: backends serialise what must be (the image
 * tree of an SR) with a lock in the SR itself. */
#ifndef XA_SR_DRIVER_H
#define XA_SR_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "value.h"

/* Where an SR lives on this host: everything borrowed. */
struct xa_sr_ctx {
    const char *uuid;
    const char *type;
    /* The directory the SR's images are in: device_config:location, else
     * device_config:path, else <state-dir>/sr/<uuid> (also the mount
     * point of an NFS SR). */
    const char *path;
    /* The PBD's device_config (a string map), or NULL. */
    const struct xa_value *device_config;
    bool shared;
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
    bool read_only; /* the backend can only read it (ISO images) */
};

struct xa_sr_driver {
    const char *type; /* "ext", "file", "nfs", "iso" */
    /* SR.content_type when SR.create names none ("user", "iso"). */
    const char *content_type;
    /* Whether SR.create(shared=true) makes sense (file, nfs). */
    bool shareable;

    /* PBD.plug / unplug on this host: makes the SR usable (creates the
     * directory, mounts the share) or releases it. */
    struct xa_error *(*attach)(const struct xa_sr_ctx *sr);
    struct xa_error *(*detach)(const struct xa_sr_ctx *sr);
    /* SR.create, after attach: prepares new storage (marks the directory
     * as this SR's).  SR.destroy, while attached: removes the SR's
     * content for good. */
    struct xa_error *(*create)(const struct xa_sr_ctx *sr);
    struct xa_error *(*destroy)(const struct xa_sr_ctx *sr);
    /* SR.probe: what SRs 'device_config' leads to, as xapi's XML text
     * (<SRlist>...); '*xml' owned by the caller. */
    struct xa_error *(*probe)(const struct xa_value *device_config, char **xml);
    struct xa_error *(*stat)(const struct xa_sr_ctx *sr,
                             struct xa_sr_stat *out);
    /* Lists the VDIs present: '*out' (free with xa_sr_vdi_free_array).
     * Internal images (snapshot bases, transfers in flight) are left
     * out. */
    struct xa_error *(*scan)(const struct xa_sr_ctx *sr, struct xa_sr_vdi **out,
                             size_t *n);

    /* A new empty VDI of 'size' bytes named after 'vdi_uuid'. */
    struct xa_error *(*vdi_create)(const struct xa_sr_ctx *sr,
                                   const char *vdi_uuid, int64_t size,
                                   struct xa_sr_vdi *out);
    /* Removes a VDI's image; the images only it kept alive go too, and a
     * base left with one child is merged into it (the chain stays
     * valid: other VDIs read exactly what they read before). */
    struct xa_error *(*vdi_destroy)(const struct xa_sr_ctx *sr,
                                    const char *location);
    /* A new VDI 'new_uuid' with the content of 'location' at this moment.
     * Both leave 'location' under the same name (see storage/imgdir for
     * how the chain is arranged); snapshot and clone differ only in what
     * the caller records. */
    struct xa_error *(*vdi_clone)(const struct xa_sr_ctx *sr,
                                  const char *location, const char *new_uuid,
                                  struct xa_sr_vdi *out);
    struct xa_error *(*vdi_snapshot)(const struct xa_sr_ctx *sr,
                                     const char *location, const char *new_uuid,
                                     struct xa_sr_vdi *out);
    struct xa_error *(*vdi_resize)(const struct xa_sr_ctx *sr,
                                   const char *location, int64_t new_size,
                                   struct xa_sr_vdi *out);
    /* A full, independent copy of 'location' in 'src' into a new VDI of
     * 'dst' (both SRs attached on this host). */
    struct xa_error *(*vdi_copy)(const struct xa_sr_ctx *src,
                                 const char *location,
                                 const struct xa_sr_ctx *dst,
                                 const char *new_uuid, struct xa_sr_vdi *out);
    /* The sizes of an existing VDI (VDI.introduce, refreshes); VDI_MISSING
     * when there is no such image. */
    struct xa_error *(*vdi_stat)(const struct xa_sr_ctx *sr,
                                 const char *location, struct xa_sr_vdi *out);
    /* Makes the VDI available to a domain on this host: '*path' is what
     * the hypervisor opens, '*format' its image format ("raw", "qcow2");
     * both owned by the caller. */
    struct xa_error *(*vdi_attach)(const struct xa_sr_ctx *sr,
                                   const char *location, bool read_only,
                                   char **path, char **format);
    struct xa_error *(*vdi_detach)(const struct xa_sr_ctx *sr,
                                   const char *location);

    /* Data paths (import_raw_vdi, VM import).  New content is written by
     * the caller to a fresh file '*tmp' (owned) that vdi_stage names, in
     * the SR's directory so that publishing it is a rename.  vdi_publish
     * checks it ('format' "raw", "qcow2" or "vhd"; an image that is not
     * one, refers to other files, or holds more than 'max_size' bytes is
     * refused with VDI_IO_ERROR) and atomically makes it the content of
     * 'location', growing it to 'max_size'; '*out' gets the new sizes.
     * Either way 'tmp' is gone afterwards: a failed transfer leaves the
     * VDI exactly as it was. */
    struct xa_error *(*vdi_stage)(const struct xa_sr_ctx *sr,
                                  const char *location, char **tmp);
    struct xa_error *(*vdi_publish)(const struct xa_sr_ctx *sr,
                                    const char *location, const char *tmp,
                                    const char *format, int64_t max_size,
                                    struct xa_sr_vdi *out);
    /* export_raw_vdi, VM export: a file holding the VDI's content in
     * 'format' ("raw", "qcow2", "vhd"): the image itself when it already
     * is one, else a conversion made for the purpose ('*temporary' true:
     * the caller unlinks it when done).  '*path' owned by the caller. */
    struct xa_error *(*vdi_export)(const struct xa_sr_ctx *sr,
                                   const char *location, const char *format,
                                   char **path, bool *temporary);
};

void xa_sr_vdi_free_array(struct xa_sr_vdi *a, size_t n);

/* Makes a backend available for its type (before serving). */
void xa_sr_register(const struct xa_sr_driver *drv);

/* Built-in backends. */
extern const struct xa_sr_driver xa_sr_ext_driver;  /* storage/ext */
extern const struct xa_sr_driver xa_sr_file_driver; /* storage/file */
extern const struct xa_sr_driver xa_sr_nfs_driver;  /* storage/nfs */
extern const struct xa_sr_driver xa_sr_iso_driver;  /* storage/iso */

#endif
