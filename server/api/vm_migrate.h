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
#include "util.h"
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
 * 'params'.  'task' (NULL: none) is the caller's task, which the host
 * updates while it works (XA_CALL_TASK_HEADER).  CANNOT_CONTACT_HOST when
 * the link fails. */
struct xa_error *xa_pool_call_host(const char *host, const char *kind,
                                   const char *method, struct xa_value *params,
                                   const char *task,
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
/* Writes all 'n' bytes of 'buf' to 'fd' (again after EINTR); false when
 * a write fails or writes nothing. */
bool xa_mig_write_all(int fd, const char *buf, size_t n);
char *xa_mig_stream_expect(int fd);
void xa_mig_stream_forget(const char *token);
struct xa_error *xa_mig_stream_dial(const char *addr, const char *token,
                                    struct xa_mig_out **o,
                                    int *driver_fd) XA_WARN_UNUSED;
struct xa_error *xa_mig_stream_finish(struct xa_mig_out *o, bool stop,
                                      int64_t *bytes) XA_WARN_UNUSED;
/* Storage motion.  Destination: a stream arriving with the returned
 * token (caller frees) is connected to the unix socket 'path' (the
 * incoming QEMU's NBD server) and relayed both ways.  Source: where to
 * dial ('port' 0: ours; 'fingerprint' NULL: the pool's pins, else the
 * SHA-256 fingerprint the certificate must have, another pool's host);
 * 'duplex' relays what comes back into '*driver_fd' too, and such a
 * stream ends only at finish. */
struct xa_mig_dest {
    const char *addr;
    int port;
    const char *fingerprint;
};
char *xa_mig_stream_expect_unix(const char *path);
struct xa_error *xa_mig_stream_dial_to(const struct xa_mig_dest *dest,
                                       const char *token, bool duplex,
                                       struct xa_mig_out **o,
                                       int *driver_fd) XA_WARN_UNUSED;

/* vm_migrate_disks.c: storage motion's disks.  Destination: prepare
 * makes the new VDIs named by 'spec' ("VBD=SR,VBD=SR,...", VBDs of
 * 'vm') and points the VBDs at them; serve (after the domain is built,
 * 'uuid' its domain) readies the way each one's content comes ('mirror':
 * the driver's NBD export, else a byte stream) and appends a line
 * "\nDEVICE NEW-VDI KIND TOKEN" per disk to 'answer'; finish waits for
 * the byte streams and, unless 'ok' and all went well, points the VBDs
 * back and destroys the new VDIs (answers what failed when 'ok'); it
 * frees 'in' in every case. */
struct xa_sxm_in;
struct xa_error *xa_sxm_in_prepare(const char *vm, const char *spec,
                                   struct xa_sxm_in **in) XA_WARN_UNUSED;
struct xa_error *xa_sxm_in_serve(struct xa_sxm_in *in, const char *uuid,
                                 bool mirror,
                                 struct xa_buf *answer) XA_WARN_UNUSED;
struct xa_error *xa_sxm_in_finish(struct xa_sxm_in *in, bool ok) XA_WARN_UNUSED;
/* The "sxm_wait" phase: the byte streams are all in and published
 * (before the memory moves: the simulator's send cannot be undone). */
struct xa_error *xa_sxm_in_wait(struct xa_sxm_in *in) XA_WARN_UNUSED;

/* Source: the disks that move (filled by the caller: vbd, old_vdi, and
 * 'spec' for the destination); parse takes the destination's lines off
 * the end of '*url'; start sends the byte streams and dials the NBD
 * streams, naming them in 'mirror_arg' ("DEVICE.FD,...") for the
 * driver's migrate_send; end_streams closes those once the send is
 * over; drop_old destroys the old VDIs after a success. */
struct xa_sxm_out_disk {
    char *vbd, *old_vdi;
    char *device, *new_vdi, *token; /* from the destination */
    char kind;
    struct xa_mig_out *stream; /* 'n', while the mirror runs */
};
struct xa_sxm_out {
    struct xa_sxm_out_disk *d;
    size_t n;
    char *spec;
    int64_t copy_ms; /* 'f' streams */
    int64_t bytes;   /* 'n' streams */
};
void xa_sxm_out_free(struct xa_sxm_out *o);
struct xa_error *xa_sxm_out_parse(struct xa_sxm_out *o, const char *vm,
                                  char **url) XA_WARN_UNUSED;
struct xa_error *xa_sxm_out_start(struct xa_sxm_out *o,
                                  const struct xa_mig_dest *dest,
                                  struct xa_buf *mirror_arg) XA_WARN_UNUSED;
void xa_sxm_out_end_streams(struct xa_sxm_out *o);
void xa_sxm_out_drop_old(struct xa_sxm_out *o);

#endif
