/* hv.h - the core's side of the hypervisor driver interface.
 *
 * xapid runs one hypervisor backend per host, chosen by name at start-up.
 * The API layer calls only these wrappers: each checks that a backend is
 * selected and implements the entry, answering NOT_IMPLEMENTED [what]
 * otherwise, so a partial backend (kvm without migration) fails cleanly
 * instead of crashing.  'what' is the API message on whose behalf the
 * call is made ("VM.suspend"), which is what the client sees. */
#ifndef XA_HV_H
#define XA_HV_H

#include "hypervisor/hv-driver.h"

/* Selects and initialises the backend 'name'.  Registers the built-in
 * backends on first use.  Unknown name: INTERNAL_ERROR. */
struct xa_error *xa_hv_select(const char *name) XA_WARN_UNUSED;
/* The selected backend's name, or NULL. */
const char *xa_hv_name(void);
/* Shuts the backend down (xapid exit). */
void xa_hv_shutdown_driver(void);

struct xa_error *xa_hv_host_memory(int64_t *total, int64_t *free_bytes);
struct xa_error *xa_hv_create(const char *what,
                              const struct xa_hv_domain_config *cfg,
                              int64_t *domid);
struct xa_error *xa_hv_unpause(const char *what, const char *uuid);
struct xa_error *xa_hv_pause(const char *what, const char *uuid);
struct xa_error *xa_hv_shutdown(const char *what, const char *uuid,
                                enum xa_hv_shutdown_reason reason,
                                double timeout, int64_t *new_domid);
struct xa_error *xa_hv_destroy(const char *what, const char *uuid);
struct xa_error *xa_hv_hard_reboot(const char *what,
                                   const struct xa_hv_domain_config *cfg,
                                   int64_t *new_domid);
struct xa_error *xa_hv_suspend(const char *what, const char *uuid,
                               const char *path);
struct xa_error *xa_hv_resume(const char *what,
                              const struct xa_hv_domain_config *cfg,
                              const char *path, int64_t *domid);
/* Live migration (hv-driver.h); 'fd' -1 asks a backend for a domain
 * prepared to take the stream, left paused until the sender is done. */
struct xa_error *xa_hv_migrate_send(const char *what, const char *uuid,
                                    const char *url, bool live);
/* hv-driver.h's disk_export (NOT_IMPLEMENTED when the backend has none). */
struct xa_error *xa_hv_disk_export(const char *what, const char *uuid,
                                   const char *const *devices, size_t n,
                                   char **endpoint);
struct xa_error *xa_hv_migrate_receive(const char *what,
                                       const struct xa_hv_domain_config *cfg,
                                       int fd, int64_t *domid);
bool xa_hv_last_migration(const char *uuid, struct xa_hv_migration_stats *out);
struct xa_error *xa_hv_list(struct xa_hv_domain_info **out, size_t *n);
struct xa_error *xa_hv_get_info(const char *uuid,
                                struct xa_hv_domain_info *out);
struct xa_error *xa_hv_guest_info(const char *uuid,
                                  struct xa_hv_guest_info *out);
struct xa_error *xa_hv_console(const char *uuid, enum xa_hv_console_kind kind,
                               char **endpoint);
struct xa_error *xa_hv_plug_disk(const char *what, const char *uuid,
                                 const struct xa_hv_disk *disk);
struct xa_error *xa_hv_unplug_disk(const char *what, const char *uuid,
                                   const char *device);
struct xa_error *xa_hv_plug_nic(const char *what, const char *uuid,
                                const struct xa_hv_nic *nic);
struct xa_error *xa_hv_unplug_nic(const char *what, const char *uuid,
                                  const char *device);
/* A driver's DEVICE_DETACH_REJECTED names no device: the caller's class
 * ('cls', "VBD" or "VIF") and 'ref' go in, the reason stays.  Takes
 * 'err' (NULL passes through); any other error is returned as it is. */
struct xa_error *xa_hv_name_detach(struct xa_error *err, const char *cls,
                                   const char *ref);
struct xa_error *xa_hv_set_memory_target(const char *what, const char *uuid,
                                         int64_t bytes);

/* Brings the database in line with the domains the backend reports, once
 * at start-up after bootstrap: a VM recorded as Running or Paused whose
 * domain is gone becomes Halted (devices detached, consoles removed,
 * memory released); a live domain's state and domid are taken over; a
 * domain no VM row knows is logged and left alone (never killed: it may
 * be someone's); operations interrupted by a crash are forgotten; every
 * VM's allowed_operations and the host's free memory are recomputed. */
struct xa_error *xa_hv_reconcile(void) XA_WARN_UNUSED;

#endif
