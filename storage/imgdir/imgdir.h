/* imgdir.h - a directory of disk images: the logic the ext, file and nfs
 * backends share (they differ only in where the directory is and how it
 * becomes reachable).
 *
 * Layout of the SR's directory:
 *   <location>.qcow2      a VDI: a thin qcow2 image, possibly with a
 *                         backing file;
 *   <location>.img        a VDI as a sparse raw image (Local storage
 *                         before qcow2, and disks imported raw: writing
 *                         them needs no conversion);
 *   .base-<uuid>.qcow2|.img  a hidden snapshot base: read-only content
 *                         shared by the VDIs whose images back onto it;
 *   .tmp-*                transfers and operations in flight;
 *   .xapid-sr             the SR's uuid (SR.probe, SR.introduce);
 *   .xapid-lock           flock()ed around every change of the tree.
 * VDIs are always leaves: a snapshot or clone of V renames V's image to a
 * new base B and gives V and the new VDI fresh empty qcow2 leaves over B,
 * as xapi's VHD SRs do, so no VDI is ever the backing file of another and
 * destroying any VDI keeps every chain valid.  A base left with no child
 * goes; one left with a single child is merged into it (qemu-img rebase,
 * which keeps the child's content identical; qemu's image locks make it
 * fail harmlessly while a running domain has the child open). */
#ifndef XA_IMGDIR_H
#define XA_IMGDIR_H

#include "storage/sr-driver.h"

/* SR_BACKEND_FAILURE ["1", "", "<what> <path>: <strerror(e)>"]. */
struct xa_error *xa_imgdir_failure(const char *what, const char *path, int e);

/* Runs 'argv' (argv[0] looked up in PATH) in directory 'cwd' (NULL: the
 * current one); SR_BACKEND_FAILURE with its output when it fails.  On
 * success '*out' (may be NULL) gets its standard output. */
struct xa_error *xa_imgdir_run(const char *cwd, const char *const argv[],
                               char **out);

/* Whether 'name' may name a file inside an SR directory: 1-200 of
 * [A-Za-z0-9._-], not starting with '.'. */
bool xa_imgdir_valid_name(const char *name);

/* Creates 'path' and its missing parents (0 or -1 with errno). */
int xa_imgdir_mkdir_p(const char *path);

/* The driver entries, for the backends built on this. */
struct xa_error *xa_imgdir_attach(const struct xa_sr_ctx *sr);
/* Nothing to release for a plain directory. */
struct xa_error *xa_imgdir_detach(const struct xa_sr_ctx *sr);
struct xa_error *xa_imgdir_create(const struct xa_sr_ctx *sr);
struct xa_error *xa_imgdir_destroy(const struct xa_sr_ctx *sr);
struct xa_error *xa_imgdir_probe(const struct xa_value *device_config,
                                 char **xml);
/* Probe of the directory 'dir' itself. */
char *xa_imgdir_probe_dir(const char *dir);
struct xa_error *xa_imgdir_stat(const struct xa_sr_ctx *sr,
                                struct xa_sr_stat *out);

#define XA_IMGDIR_ENTRIES                                                     \
    .create = xa_imgdir_create, .destroy = xa_imgdir_destroy,                 \
    .stat = xa_imgdir_stat, .scan = xa_imgdir_scan,                           \
    .vdi_create = xa_imgdir_vdi_create, .vdi_destroy = xa_imgdir_vdi_destroy, \
    .vdi_clone = xa_imgdir_vdi_clone, .vdi_snapshot = xa_imgdir_vdi_clone,    \
    .vdi_resize = xa_imgdir_vdi_resize, .vdi_copy = xa_imgdir_vdi_copy,       \
    .vdi_stat = xa_imgdir_vdi_stat, .vdi_attach = xa_imgdir_vdi_attach,       \
    .vdi_detach = xa_imgdir_vdi_detach, .vdi_stage = xa_imgdir_vdi_stage,     \
    .vdi_publish = xa_imgdir_vdi_publish, .vdi_export = xa_imgdir_vdi_export

struct xa_error *xa_imgdir_scan(const struct xa_sr_ctx *sr,
                                struct xa_sr_vdi **out, size_t *n);
struct xa_error *xa_imgdir_vdi_create(const struct xa_sr_ctx *sr,
                                      const char *vdi_uuid, int64_t size,
                                      struct xa_sr_vdi *out);
struct xa_error *xa_imgdir_vdi_destroy(const struct xa_sr_ctx *sr,
                                       const char *location);
struct xa_error *xa_imgdir_vdi_clone(const struct xa_sr_ctx *sr,
                                     const char *location, const char *new_uuid,
                                     struct xa_sr_vdi *out);
struct xa_error *xa_imgdir_vdi_resize(const struct xa_sr_ctx *sr,
                                      const char *location, int64_t new_size,
                                      struct xa_sr_vdi *out);
struct xa_error *xa_imgdir_vdi_copy(const struct xa_sr_ctx *src,
                                    const char *location,
                                    const struct xa_sr_ctx *dst,
                                    const char *new_uuid,
                                    struct xa_sr_vdi *out);
struct xa_error *xa_imgdir_vdi_stat(const struct xa_sr_ctx *sr,
                                    const char *location,
                                    struct xa_sr_vdi *out);
struct xa_error *xa_imgdir_vdi_attach(const struct xa_sr_ctx *sr,
                                      const char *location, bool read_only,
                                      char **path, char **format);
struct xa_error *xa_imgdir_vdi_detach(const struct xa_sr_ctx *sr,
                                      const char *location);
struct xa_error *xa_imgdir_vdi_stage(const struct xa_sr_ctx *sr,
                                     const char *location, char **tmp);
struct xa_error *xa_imgdir_vdi_publish(const struct xa_sr_ctx *sr,
                                       const char *location, const char *tmp,
                                       const char *format, int64_t max_size,
                                       struct xa_sr_vdi *out);
struct xa_error *xa_imgdir_vdi_export(const struct xa_sr_ctx *sr,
                                      const char *location, const char *format,
                                      char **path, bool *temporary);

#endif
