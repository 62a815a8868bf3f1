/* vm_migrate.h - live migration inside a pool (VM.pool_migrate,
 * VM.assert_can_migrate, host.evacuate and friends) and the pieces of
 * other modules it needs.
 *
 * A migration runs on the host the VM resides on (the source); the
 * destination takes part through the hidden host.migrate_in: "prepare"
 * builds a paused incoming domain, the source's driver sends the memory,
 * "commit" lets the domain run there and records it, "abort" destroys
 * it.  Drivers that move memory as bytes (kvm) get them over a dedicated
 * TLS connection to the destination's xapid (mig_stream.c below).  Until commit
 * the database still shows the VM on the source, so any failure leaves it
 * running there untouched. */
#ifndef XA_API_VM_MIGRATE_H
#define XA_API_VM_MIGRATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "value.h"

/* vm_lifecycle.c: builds the incoming domain of 'vm' on this host from
 * the database's configuration (attaching its disks here); 'fd' carries
 * the migration stream (-1: the driver needs none). */
struct xa_error *xa_vm_migrate_build(const char *vm, int fd,
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

/* server/pool/mig_stream.c: the migration stream over a dedicated TLS
 * connection.  Destination: 'fd' (taken) will receive the stream that
 * arrives with the returned token (caller frees), once; forget closes it
 * if none came.  Source: dials 'addr' with 'token' and relays what the
 * driver writes to '*driver_fd' (owned by 'o', valid until finish);
 * finish waits for the end of the relay ('stop': cut it short) and frees
 * 'o' in every case. */
struct xa_mig_out;
void xa_mig_stream_init(void);
/* Whether the fault 'name' of XAPID_MIG_FAULTS applies now ("name": every
 * time, "name:N": the first N times, counted in 'used'). */
bool xa_mig_fault_count(const char *name, atomic_int *used);
char *xa_mig_stream_expect(int fd);
void xa_mig_stream_forget(const char *token);
struct xa_error *xa_mig_stream_dial(const char *addr, const char *token,
                                    struct xa_mig_out **o,
                                    int *driver_fd) XA_WARN_UNUSED;
struct xa_error *xa_mig_stream_finish(struct xa_mig_out *o, bool stop,
                                      int64_t *bytes) XA_WARN_UNUSED;

#endif
