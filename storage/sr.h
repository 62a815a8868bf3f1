/* sr.h - the core's side of the SR driver interface: lookup by SR type
 * and NULL-checking wrappers (see sr-driver.h).  'what' names the API
 * message a call serves, for NOT_IMPLEMENTED.  An entry a backend leaves
 * NULL answers SR_OPERATION_NOT_SUPPORTED [sr uuid] for the VDI
 * operations (an ISO library cannot make disks) and NOT_IMPLEMENTED for
 * the rest. */
#ifndef XA_SR_H
#define XA_SR_H

#include "storage/sr-driver.h"

/* The backend for 'type', or NULL (registers the built-in ones on first
 * use). */
const struct xa_sr_driver *xa_sr_driver_for(const char *type);
/* Every registered type, for SR.get_supported_types: an array of strings
 * (caller unrefs). */
struct xa_value *xa_sr_types(void);

struct xa_error *xa_sr_attach(const struct xa_sr_ctx *sr);
struct xa_error *xa_sr_detach(const struct xa_sr_ctx *sr);
struct xa_error *xa_sr_create(const struct xa_sr_ctx *sr);
struct xa_error *xa_sr_destroy(const struct xa_sr_ctx *sr);
struct xa_error *xa_sr_probe(const char *type, const struct xa_value *dc,
                             char **xml);
struct xa_error *xa_sr_stat(const struct xa_sr_ctx *sr, struct xa_sr_stat *out);
struct xa_error *xa_sr_scan(const struct xa_sr_ctx *sr, struct xa_sr_vdi **out,
                            size_t *n);
struct xa_error *xa_sr_vdi_create(const struct xa_sr_ctx *sr,
                                  const char *vdi_uuid, int64_t size,
                                  struct xa_sr_vdi *out);
struct xa_error *xa_sr_vdi_destroy(const struct xa_sr_ctx *sr,
                                   const char *location);
struct xa_error *xa_sr_vdi_clone(const char *what, const struct xa_sr_ctx *sr,
                                 const char *location, const char *new_uuid,
                                 bool snapshot, struct xa_sr_vdi *out);
struct xa_error *xa_sr_vdi_resize(const struct xa_sr_ctx *sr,
                                  const char *location, int64_t new_size,
                                  struct xa_sr_vdi *out);
struct xa_error *xa_sr_vdi_copy(const struct xa_sr_ctx *src,
                                const char *location,
                                const struct xa_sr_ctx *dst,
                                const char *new_uuid, struct xa_sr_vdi *out);
struct xa_error *xa_sr_vdi_stat(const struct xa_sr_ctx *sr,
                                const char *location, struct xa_sr_vdi *out);
struct xa_error *xa_sr_vdi_attach(const struct xa_sr_ctx *sr,
                                  const char *location, bool read_only,
                                  char **path, char **format);
struct xa_error *xa_sr_vdi_detach(const struct xa_sr_ctx *sr,
                                  const char *location);
struct xa_error *xa_sr_vdi_stage(const struct xa_sr_ctx *sr,
                                 const char *location, char **tmp);
struct xa_error *xa_sr_vdi_publish(const struct xa_sr_ctx *sr,
                                   const char *location, const char *tmp,
                                   const char *format, int64_t max_size,
                                   struct xa_sr_vdi *out);
struct xa_error *xa_sr_vdi_export(const struct xa_sr_ctx *sr,
                                  const char *location, const char *format,
                                  char **path, bool *temporary);

#endif
