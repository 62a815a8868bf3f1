/* hostinfo.c - reads the machine's name, address, CPUs, memory and boot
 * time for the host's database rows (see hostinfo.h). */
#include "hostinfo.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#    include <cpuid.h>
#endif

#include "util.h"

/* Copies at most size-1 bytes and always terminates, unlike strncpy. */
static void
copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);

    if (n >= size) {
        n = size - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Strips trailing whitespace (the newline fgets keeps) in place. */
static char *
rstrip(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && isspace((unsigned char)s[n - 1])) {
        s[--n] = '\0';
    }
    return s;
}

/* Splits a "key<spaces>:<spaces>value" line of /proc/cpuinfo in place.
 * False for lines without a colon (the blank lines between CPUs). */
static bool
split_colon_line(char *line, char **key, char **val)
{
    char *colon = strchr(line, ':');
    char *end;

    if (colon == NULL) {
        return false;
    }
    *colon = '\0';
    end = colon;
    while (end > line && isspace((unsigned char)end[-1])) {
        *--end = '\0';
    }
    *key = line;
    *val = colon + 1;
    while (isspace((unsigned char)**val)) {
        (*val)++;
    }
    rstrip(*val);
    return true;
}

static void
read_hostname(struct xa_hostinfo *hi)
{
    char buf[256];

    if (gethostname(buf, sizeof buf) != 0) {
        copy_str(hi->hostname, sizeof hi->hostname, "localhost");
        return;
    }
    /* POSIX leaves truncated names unterminated. */
    buf[sizeof buf - 1] = '\0';
    copy_str(hi->hostname, sizeof hi->hostname,
             buf[0] != '\0' ? buf : "localhost");
}

/* "0.0.0.0" and "::" mean "listen everywhere", which names no address a
 * client or another pool member could dial. */
static bool
is_wildcard(const char *addr)
{
    return addr == NULL || addr[0] == '\0' || strcmp(addr, "0.0.0.0") == 0 ||
           strcmp(addr, "::") == 0 || strcmp(addr, "*") == 0;
}

static void
read_address(struct xa_hostinfo *hi, const char *bind_address)
{
    struct ifaddrs *ifs = NULL;

    if (!is_wildcard(bind_address)) {
        copy_str(hi->address, sizeof hi->address, bind_address);
        return;
    }
    copy_str(hi->address, sizeof hi->address, "127.0.0.1");
    if (getifaddrs(&ifs) != 0) {
        return;
    }
    for (const struct ifaddrs *i = ifs; i != NULL; i = i->ifa_next) {
        const struct sockaddr_in *sin;
        char buf[INET_ADDRSTRLEN];

        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET) {
            continue;
        }
        if ((i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP)) {
            continue;
        }
        sin = (const struct sockaddr_in *)(const void *)i->ifa_addr;
        if (inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf) != NULL) {
            copy_str(hi->address, sizeof hi->address, buf);
            break;
        }
    }
    freeifaddrs(ifs);
}

/* Remembers distinct "physical id" values to count sockets; machines with
 * more sockets than this are not a concern. */
#define MAX_SOCKET_IDS 256

static void
read_cpuinfo(struct xa_hostinfo *hi, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    long socket_ids[MAX_SOCKET_IDS];
    int n_sockets = 0;
    int processors = 0;

    if (f == NULL) {
        return;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *key, *val;
        /* Every CPU repeats the description; the first one speaks for the
         * host, as xapi's host_cpu rows all carry the same values. */
        bool first = processors <= 1;

        if (!split_colon_line(line, &key, &val)) {
            continue;
        }
        if (strcmp(key, "processor") == 0) {
            processors++;
            first = processors <= 1;
        } else if (strcmp(key, "physical id") == 0) {
            long id = strtol(val, NULL, 10);
            bool seen = false;

            for (int i = 0; i < n_sockets; i++) {
                seen = seen || socket_ids[i] == id;
            }
            if (!seen && n_sockets < MAX_SOCKET_IDS) {
                socket_ids[n_sockets++] = id;
            }
        } else if (!first) {
            continue;
        } else if (strcmp(key, "vendor_id") == 0) {
            copy_str(hi->cpu_vendor, sizeof hi->cpu_vendor, val);
        } else if (strcmp(key, "model name") == 0) {
            copy_str(hi->cpu_model_name, sizeof hi->cpu_model_name, val);
        } else if (strcmp(key, "cpu MHz") == 0) {
            hi->cpu_mhz = (int64_t)strtod(val, NULL);
        } else if (strcmp(key, "cpu family") == 0) {
            hi->cpu_family = strtoll(val, NULL, 10);
        } else if (strcmp(key, "model") == 0) {
            hi->cpu_model = strtoll(val, NULL, 10);
        } else if (strcmp(key, "stepping") == 0) {
            copy_str(hi->cpu_stepping, sizeof hi->cpu_stepping, val);
        } else if (strcmp(key, "flags") == 0 || strcmp(key, "Features") == 0) {
            /* "Features" is the arm64 spelling. */
            free(hi->cpu_flags);
            hi->cpu_flags = xa_strdup(val);
        }
    }
    fclose(f);
    if (processors > 0) {
        hi->cpu_count = processors;
    }
    if (n_sockets > 0) {
        hi->socket_count = n_sockets;
    }
}

/* Reads "Key:   123 kB" lines; values are in KiB. */
static void
read_meminfo(struct xa_hostinfo *hi, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[256];
    int64_t total = -1, free_kb = -1, avail = -1;

    if (f == NULL) {
        return;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        long long v;

        if (sscanf(line, "MemTotal: %lld", &v) == 1) {
            total = v;
        } else if (sscanf(line, "MemFree: %lld", &v) == 1) {
            free_kb = v;
        } else if (sscanf(line, "MemAvailable: %lld", &v) == 1) {
            avail = v;
        }
    }
    fclose(f);
    if (total > 0) {
        hi->memory_total = total * 1024;
    }
    /* MemAvailable counts reclaimable cache, which is what a new guest
     * could actually get; kernels before 3.14 only have MemFree. */
    if (avail >= 0) {
        hi->memory_free = avail * 1024;
    } else if (free_kb >= 0) {
        hi->memory_free = free_kb * 1024;
    }
}

static void
read_boot_time(struct xa_hostinfo *hi, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];

    if (f != NULL) {
        while (fgets(line, sizeof line, f) != NULL) {
            long long bt;

            if (sscanf(line, "btime %lld", &bt) == 1 && bt > 0) {
                hi->boot_time = bt;
                break;
            }
        }
        fclose(f);
    }
}

/* The CPUID words in the order of Xen's public featureset (1.edx, 1.ecx,
 * e1.edx, e1.ecx, Dh:1.eax, 7:0.ebx, 7:0.ecx, e7.edx, e8.ebx, 7:0.edx), so
 * the string reads like the "features" xapi reports from Xen. */
static void
read_cpu_features(struct xa_hostinfo *hi)
{
#if defined(__x86_64__) || defined(__i386__)
    static const struct {
        unsigned leaf, sub;
        int reg; /* 0 eax, 1 ebx, 2 ecx, 3 edx */
    } words[] = {
        {1, 0, 3},          {1, 0, 2}, {0x80000001, 0, 3}, {0x80000001, 0, 2},
        {0xd, 1, 0},        {7, 0, 1}, {7, 0, 2},          {0x80000007, 0, 3},
        {0x80000008, 0, 1}, {7, 0, 3},
    };
    struct xa_buf b = {0};

    for (size_t i = 0; i < XA_ARRAY_SIZE(words); i++) {
        unsigned r[4] = {0, 0, 0, 0};

        if (!__get_cpuid_count(words[i].leaf, words[i].sub, &r[0], &r[1], &r[2],
                               &r[3])) {
            memset(r, 0, sizeof r);
        }
        xa_buf_printf(&b, "%s%08x", i > 0 ? "-" : "", r[words[i].reg]);
    }
    copy_str(hi->cpu_features, sizeof hi->cpu_features, b.data);
    xa_buf_free(&b);
#else
    hi->cpu_features[0] = '\0';
#endif
}

void
xa_hostinfo_read_paths(struct xa_hostinfo *hi, const char *bind_address,
                       const char *cpuinfo_path, const char *meminfo_path,
                       const char *stat_path)
{
    struct utsname un;
    struct sysinfo si;
    long online;

    memset(hi, 0, sizeof *hi);
    read_hostname(hi);
    read_address(hi, bind_address);
    if (uname(&un) == 0) {
        copy_str(hi->kernel_release, sizeof hi->kernel_release, un.release);
    }

    online = sysconf(_SC_NPROCESSORS_ONLN);
    hi->cpu_count = online > 0 ? (int)online : 1;
    hi->socket_count = 1;
    read_cpuinfo(hi, cpuinfo_path);
    if (hi->cpu_vendor[0] == '\0') {
        copy_str(hi->cpu_vendor, sizeof hi->cpu_vendor, "Unknown");
    }
    if (hi->cpu_model_name[0] == '\0') {
        copy_str(hi->cpu_model_name, sizeof hi->cpu_model_name, "Unknown");
    }
    if (hi->cpu_stepping[0] == '\0') {
        copy_str(hi->cpu_stepping, sizeof hi->cpu_stepping, "0");
    }
    if (hi->cpu_flags == NULL) {
        hi->cpu_flags = xa_strdup("");
    }
    read_cpu_features(hi);
    /* Tests stand up hosts with different CPUs on one machine. */
    const char *forced = getenv("XAPID_CPU_FEATURES");
    if (forced && *forced) {
        copy_str(hi->cpu_features, sizeof hi->cpu_features, forced);
    }

    /* sysinfo() answers even where /proc is absent (some sandboxes). */
    if (sysinfo(&si) == 0) {
        hi->memory_total = (int64_t)si.totalram * si.mem_unit;
        hi->memory_free = (int64_t)si.freeram * si.mem_unit;
        hi->boot_time = (int64_t)time(NULL) - si.uptime;
    } else {
        hi->boot_time = (int64_t)time(NULL);
    }
    read_meminfo(hi, meminfo_path);
    read_boot_time(hi, stat_path);
    if (hi->memory_free > hi->memory_total) {
        hi->memory_free = hi->memory_total;
    }
}

void
xa_hostinfo_read(struct xa_hostinfo *hi, const char *bind_address)
{
    xa_hostinfo_read_paths(hi, bind_address, "/proc/cpuinfo", "/proc/meminfo",
                           "/proc/stat");
}

void
xa_hostinfo_free(struct xa_hostinfo *hi)
{
    free(hi->cpu_flags);
    hi->cpu_flags = NULL;
}
