/* sr_api.h - shared by the storage API modules: sr_minimal.c (the local
 * SR, VDI create/destroy/clone/snapshot/copy/resize), sr.c (SR and PBD
 * messages, VDI introduce/forget), vdi_io.c (import_raw_vdi,
 * export_raw_vdi) and xva.c (VM export and import).
 *
 * The storage driver (storage/sr.h) is always called without a
 * transaction: read what it needs into a 'struct xa_sr_info' first. */
#ifndef XA_API_SR_API_H
#define XA_API_SR_API_H

#include "api/vm.h"
#include "storage/sr.h"

#define XA_NULL_REF "OpaqueRef:NULL"

/* An SR as its backend sees it from this host, owning its strings. */
struct xa_sr_info {
    struct xa_sr_ctx ctx; /* points into the fields below */
    char *uuid, *type, *path;
    struct xa_value *dc; /* device_config of this host's PBD */
    char *pbd;           /* this host's PBD */
    bool attached;       /* that PBD's currently_attached */
};

/* Fills 's' for 'sr' from the SR row and this host's PBD (whether plugged
 * or not): HANDLE_INVALID, or SR_HAS_NO_PBDS without one. */
struct xa_error *xa_sr_info_read(struct xa_txn *t, const char *sr,
                                 struct xa_sr_info *s) XA_WARN_UNUSED;
/* The same, and SR_NOT_ATTACHED unless that PBD is plugged. */
struct xa_error *xa_sr_info_plugged(struct xa_txn *t, const char *sr,
                                    struct xa_sr_info *s) XA_WARN_UNUSED;
/* Fills 's' from explicit values (borrowed 'dc'), for an SR that has no
 * rows yet (SR.create, probes). */
void xa_sr_info_make(struct xa_sr_info *s, const char *uuid, const char *type,
                     const struct xa_value *dc, bool shared);
void xa_sr_info_free(struct xa_sr_info *s);

/* Refreshes an SR's size fields ('st', read before the transaction, may
 * be NULL to recompute only virtual_allocation). */
struct xa_error *xa_sr_sizes(struct xa_txn *t, const char *sr,
                             const struct xa_sr_stat *st) XA_WARN_UNUSED;
/* Stores what the backend reports of a VDI's image ('v') in its row:
 * virtual_size and physical_utilisation. */
struct xa_error *xa_vdi_store_sizes(struct xa_txn *t, const char *vdi,
                                    const struct xa_sr_vdi *v) XA_WARN_UNUSED;
/* SR_FULL [requested, free] unless 'size' more bytes fit. */
struct xa_error *xa_sr_check_space(const struct xa_sr_stat *st,
                                   int64_t size) XA_WARN_UNUSED;
/* Creates the VDI row for an image the backend has made; 'extra' (taken,
 * may be NULL) adds or overrides fields. */
struct xa_error *xa_sr_record_vdi(struct xa_txn *t, const char *ref,
                                  const char *uuid, const char *sr,
                                  const struct xa_sr_vdi *v,
                                  struct xa_value *extra) XA_WARN_UNUSED;
/* The SR (plugged here) and location of 'vdi'. */
struct xa_error *xa_vdi_locate(struct xa_txn *t, const char *vdi,
                               struct xa_sr_info *s,
                               char **location) XA_WARN_UNUSED;
/* True when 'host' has 'sr' attached: a plugged PBD of it there. */
bool xa_sr_attached_on(struct xa_txn *t, const char *sr, const char *host);
/* A host that has every SR in 'srs' (a set of refs) attached, this one
 * first (this one for an empty set); NULL when none has.  Caller frees. */
char *xa_sr_host_for(struct xa_txn *t, const struct xa_value *srs);
/* True when a running or paused VM has 'vdi' plugged. */
bool xa_vdi_in_use(struct xa_txn *t, const char *vdi);
/* Removes a VDI's row and its VBDs (the image is the caller's concern). */
struct xa_error *xa_vdi_forget_row(struct xa_txn *t,
                                   const char *vdi) XA_WARN_UNUSED;
/* Replaces a VDI's content with the image at 'tmp' (see the driver's
 * vdi_publish) and records its new sizes. */
struct xa_error *xa_vdi_publish(const char *vdi, const char *tmp,
                                const char *format) XA_WARN_UNUSED;

/* Module start-up. */
void xa_sr_api_init(void);
void xa_vdi_io_init(void);
void xa_xva_init(void);

#endif
