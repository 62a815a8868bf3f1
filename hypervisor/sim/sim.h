/* sim.h - knobs of the simulated hypervisor, for tests.
 *
 * The simulator keeps domains in memory and is deterministic: domain ids
 * count up from 1, guest addresses follow from domain ids.  It reads its
 * configuration from the environment when selected:
 *   XAPID_SIM_FAULTS="start:3,suspend:1"  fail the 3rd start and the 1st
 *       suspend (operation names below; "start" is an alias of "create");
 *   XAPID_SIM_DELAY_MS="20" or "create:200,shutdown:50"  sleep before each
 *       (or each named) operation;
 *   XAPID_SIM_AGENT_DELAY_MS="500"  the guest agent reports this long
 *       after the domain starts (default: at once);
 *   XAPID_SIM_HOST_MEMORY_MB="65536"  the host's memory (default: the
 *       machine's);
 *   XAPID_SIM_MIGRATE_MBIT="10000", XAPID_SIM_DIRTY_MB="64" (per second)
 *       the link and dirty rate of the live-migration model, and
 *       XAPID_SIM_MIGRATE_SCALE_PERMILLE="1": the real time a migration
 *       sleeps, per mille of the modelled time.
 * Operation names: create, unpause, pause, shutdown, destroy, hard_reboot,
 * suspend, resume, migrate_send, migrate_receive, plug_disk, unplug_disk,
 * plug_nic, unplug_nic, set_memory_target. */
#ifndef XA_SIM_H
#define XA_SIM_H

#include <stdint.h>

/* Replaces the configuration (NULL strings mean "none"); resets the call
 * counters.  Returns 0, or -1 when a specification does not parse. */
int xa_sim_configure(const char *faults, const char *delays,
                     int64_t agent_delay_ms, int64_t host_memory);
/* Forgets every domain (unit tests: a fresh simulated host). */
void xa_sim_reset(void);
/* Number of domains the simulator runs. */
unsigned xa_sim_domain_count(void);

#endif
