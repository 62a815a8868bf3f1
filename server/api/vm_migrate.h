/* vm_migrate.h - live migration inside a pool (VM.pool_migrate,
 * VM.assert_can_migrate, host.evacuate and friends) and the pieces of
 * other modules it needs.
 *
 * A migration runs on the host the VM resides on (the source); the
 * destination takes part through the hidden host.migrate_in: "prepare"
 * builds a paused incoming domain, the source's driver sends the memory,
 * "commit" lets the domain run there and records it, "abort" destroys
 * it.  Until commit the database still shows the VM on the source, so
 * any failure leaves it running there untouched. */
#ifndef XA_API_VM_MIGRATE_H
#define XA_API_VM_MIGRATE_H

#include <stdint.h>

#include "error.h"
#include "value.h"

/* vm_lifecycle.c: builds the incoming domain of 'vm' on this host from
 * the database's configuration (attaching its disks here). */
struct xa_error *xa_vm_migrate_build(const char *vm,
                                     int64_t *domid) XA_WARN_UNUSED;
/* vm_lifecycle.c: records that 'vm' now runs here as 'domid' (power
 * state, resident_on, consoles, metrics, this host's free memory). */
struct xa_error *xa_vm_migrate_arrived(const char *vm,
                                       int64_t domid) XA_WARN_UNUSED;

/* server/pool/migrate.c: calls 'method' on pool host 'host' over the
 * link of purpose 'kind' (separate kinds run in parallel); takes
 * 'params'.  CANNOT_CONTACT_HOST when the link fails. */
struct xa_error *xa_pool_call_host(const char *host, const char *kind,
                                   const char *method, struct xa_value *params,
                                   struct xa_value **ret) XA_WARN_UNUSED;

#endif
