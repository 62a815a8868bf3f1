/* hostinfo.h - facts about the machine xapid runs on.
 *
 * The host row, its host_metrics and host_cpu rows and the control
 * domain's record describe the real machine, as xapi's do: its name, its
 * management address, its CPUs and memory, when it booted.  Everything
 * here is read from the kernel's text files, and every reader tolerates a
 * missing or odd file (containers hide some of /proc, non-x86 machines
 * spell /proc/cpuinfo differently): a fact it cannot find keeps a neutral
 * value instead of failing the start. */
#ifndef XA_HOSTINFO_H
#define XA_HOSTINFO_H

#include <stdint.h>

struct xa_hostinfo {
    char hostname[256];
    /* Dotted IPv4 of the management interface: the bind address when one
     * was given, else the first non-loopback address that is up, else
     * 127.0.0.1 so the host row always carries something dialable. */
    char address[64];
    /* Kernel release (uname -r): software_version's "linux" key. */
    char kernel_release[128];

    int cpu_count;    /* logical CPUs, at least 1 */
    int socket_count; /* distinct "physical id"s, at least 1 */
    char cpu_vendor[64];
    char cpu_model_name[256];
    int64_t cpu_mhz; /* 0 when the kernel does not say */
    int64_t cpu_family;
    int64_t cpu_model;
    char cpu_stepping[32];
    char *cpu_flags; /* owned; space-separated, "" when unknown */
    /* CPUID feature words as xapi prints them ("%08x-%08x-..."), "" on
     * machines without CPUID. */
    char cpu_features[160];

    int64_t memory_total; /* bytes */
    int64_t memory_free;  /* bytes the host could still hand out */
    int64_t boot_time;    /* seconds since the epoch */
};

/* Fills 'hi' from the running system.  'bind_address' is the address the
 * API listens on (NULL, "" or a wildcard mean "all"). */
void xa_hostinfo_read(struct xa_hostinfo *hi, const char *bind_address);

/* The same, reading the three /proc files from the given paths: lets the
 * unit tests feed fixtures and check the fallbacks for missing files. */
void xa_hostinfo_read_paths(struct xa_hostinfo *hi, const char *bind_address,
                            const char *cpuinfo_path, const char *meminfo_path,
                            const char *stat_path);

void xa_hostinfo_free(struct xa_hostinfo *hi);

#endif
