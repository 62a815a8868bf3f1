/* kvm.h - knobs and figures of the QEMU backend ("kvm") beyond the
 * driver vtable (xa_hv_kvm_driver in hv-driver.h).
 *
 * The backend runs one qemu-system-x86_64 per domain, as xapid's own
 * child in a session of its own (so it outlives xapid), talks to it over
 * QMP and keeps its runtime files in <state-dir>/kvm/<vm-uuid>/:
 *   qmp.sock     the monitor          serial.sock  the text console
 *   vnc.sock     the graphical one    serial.log   what the guest printed
 *   meta         pid, domid, start time and plugged VIFs, for a restarted
 *                xapid to find the domain again
 *   qemu.log     QEMU's own stderr (kept after exit, for error messages)
 * Accelerator: per host (xa_kvm_configure), overridden per VM by
 * platform:accel; platform:machine picks the machine type (default:
 * microvm for an ELF kernel booted directly, q35 otherwise). */
#ifndef XA_KVM_H
#define XA_KVM_H

#include <stdint.h>

#include "hypervisor/hv-driver.h"

/* 'accel': "kvm", "tcg" or "auto" (kvm when /dev/kvm opens, else tcg);
 * NULL keeps the default ("auto").  Call before xa_hv_select(). */
void xa_kvm_configure(const char *accel);

/* Figures of the last completed outgoing migration of 'uuid' (a live
 * migration or a suspend), as QEMU's query-migrate reported them. */
struct xa_kvm_migration_stats {
    int64_t total_ms;
    int64_t downtime_ms;
    int64_t setup_ms;
    int64_t transferred; /* bytes of RAM sent */
};

/* False when no migration of 'uuid' completed since xapid started. */
bool xa_kvm_last_migration(const char *uuid,
                           struct xa_kvm_migration_stats *out);

#endif
