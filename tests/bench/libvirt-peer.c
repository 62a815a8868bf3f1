/* libvirt-peer: the libvirt side of the peer benchmark.
 *
 * Drives a libvirtd through its remote protocol (libvirt's client library
 * on one connection) the way xa-load drives xapid with one connection:
 * one call at a time, back to back.  Each command prints one JSON object.
 *
 *   libvirt-peer URI define N          define bench-0..N-1 (those missing)
 *   libvirt-peer URI getinfo SECS WARM virDomainGetInfo on bench-0
 *   libvirt-peer URI listall CALLS     virConnectListAllDomains wall time
 *   libvirt-peer URI pairs SECS        define + undefine of a fresh domain
 *   libvirt-peer URI clean             undefine every bench-* domain
 *
 * The domains are defined only, never started: the qemu driver writes
 * each definition to disk, as xapid commits each VM.create.
 */

#define _GNU_SOURCE
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PREFIX "bench-"

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A growing array of latencies (seconds); sorted for percentiles. */
struct samples {
    double *v;
    size_t n;
    size_t cap;
};

static void
samples_add(struct samples *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        double *v = realloc(s->v, cap * sizeof(*v));

        if (v == NULL) {
            fputs("libvirt-peer: out of memory\n", stderr);
            exit(2);
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return (x > y) - (x < y);
}

/* The q-quantile (0..1) in milliseconds; sorts the samples. */
static double
samples_ms(struct samples *s, double q)
{
    size_t i;

    if (s->n == 0) {
        return 0.0;
    }
    qsort(s->v, s->n, sizeof(*s->v), cmp_double);
    i = (size_t)(q * (double)(s->n - 1) + 0.5);
    return s->v[i] * 1000.0;
}

static void
fail(const char *what)
{
    const char *msg = virGetLastErrorMessage();

    fprintf(stderr, "libvirt-peer: %s: %s\n", what, msg ? msg : "?");
    exit(1);
}

static char *
domain_xml(const char *name)
{
    char *xml = NULL;

    if (asprintf(&xml,
                 "<domain type='qemu'><name>%s</name>"
                 "<description>xapid benchmark peer</description>"
                 "<memory unit='MiB'>1024</memory><vcpu>1</vcpu>"
                 "<os><type arch='x86_64'>hvm</type>"
                 "<boot dev='cdrom'/><boot dev='hd'/></os>"
                 "<features><acpi/><apic/><pae/></features>"
                 "<on_poweroff>destroy</on_poweroff>"
                 "<on_reboot>restart</on_reboot>"
                 "<on_crash>restart</on_crash></domain>",
                 name) < 0) {
        fputs("libvirt-peer: out of memory\n", stderr);
        exit(2);
    }
    return xml;
}

static int
define_one(virConnectPtr c, const char *name)
{
    char *xml = domain_xml(name);
    virDomainPtr d = virDomainDefineXML(c, xml);

    free(xml);
    if (d == NULL) {
        return -1;
    }
    virDomainFree(d);
    return 0;
}

static void
cmd_define(virConnectPtr c, int n)
{
    double t0 = now();
    int made = 0;

    for (int i = 0; i < n; i++) {
        char name[64];
        virDomainPtr d;

        snprintf(name, sizeof(name), PREFIX "%d", i);
        d = virDomainLookupByName(c, name);
        if (d != NULL) {
            virDomainFree(d);
            continue;
        }
        if (define_one(c, name) < 0) {
            fail("virDomainDefineXML");
        }
        made++;
    }
    printf("{\"defined\": %d, \"seconds\": %.3f}\n", made, now() - t0);
}

static void
cmd_getinfo(virConnectPtr c, double secs, double warm)
{
    struct samples s = {0};
    virDomainInfo info;
    virDomainPtr d = virDomainLookupByName(c, PREFIX "0");
    double t0, end, start;

    if (d == NULL) {
        fail("virDomainLookupByName " PREFIX "0");
    }
    t0 = now();
    start = t0 + warm;
    end = start + secs;
    for (;;) {
        double a = now(), b;

        if (a >= end) {
            break;
        }
        if (virDomainGetInfo(d, &info) < 0) {
            fail("virDomainGetInfo");
        }
        b = now();
        if (a >= start) {
            samples_add(&s, b - a);
        }
    }
    printf("{\"requests\": %zu, \"rps\": %.1f, \"p50_ms\": %.4f, "
           "\"p99_ms\": %.4f, \"state\": %d}\n",
           s.n, (double)s.n / secs, samples_ms(&s, 0.5), samples_ms(&s, 0.99),
           (int)info.state);
    virDomainFree(d);
    free(s.v);
}

static void
cmd_listall(virConnectPtr c, int calls)
{
    struct samples s = {0};
    int count = 0;

    for (int i = 0; i <= calls; i++) {
        virDomainPtr *doms = NULL;
        double a = now();

        count = virConnectListAllDomains(c, &doms, 0);
        if (count < 0) {
            fail("virConnectListAllDomains");
        }
        if (i > 0) { /* the first call is not measured */
            samples_add(&s, now() - a);
        }
        for (int j = 0; j < count; j++) {
            virDomainFree(doms[j]);
        }
        free(doms);
    }
    printf("{\"domains\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f}\n", count,
           samples_ms(&s, 0.5), samples_ms(&s, 0.0));
    free(s.v);
}

static void
cmd_pairs(virConnectPtr c, double secs)
{
    double t0 = now(), end = t0 + secs, t;
    long pairs = 0;

    while ((t = now()) < end) {
        char name[64];
        virDomainPtr d;
        char *xml;

        snprintf(name, sizeof(name), "pair-%ld", pairs);
        xml = domain_xml(name);
        d = virDomainDefineXML(c, xml);
        free(xml);
        if (d == NULL) {
            fail("virDomainDefineXML");
        }
        if (virDomainUndefine(d) < 0) {
            fail("virDomainUndefine");
        }
        virDomainFree(d);
        pairs++;
    }
    printf("{\"pairs\": %ld, \"pairs_per_s\": %.1f}\n", pairs,
           (double)pairs / (now() - t0));
}

static void
cmd_clean(virConnectPtr c)
{
    virDomainPtr *doms = NULL;
    int n = virConnectListAllDomains(c, &doms, 0);
    int gone = 0;

    if (n < 0) {
        fail("virConnectListAllDomains");
    }
    for (int i = 0; i < n; i++) {
        const char *name = virDomainGetName(doms[i]);

        if (name != NULL && (strncmp(name, PREFIX, strlen(PREFIX)) == 0 ||
                             strncmp(name, "pair-", 5) == 0)) {
            if (virDomainUndefine(doms[i]) == 0) {
                gone++;
            }
        }
        virDomainFree(doms[i]);
    }
    free(doms);
    printf("{\"undefined\": %d}\n", gone);
}

/* Errors are reported by fail(); libvirt's default handler would also
 * print the expected "not found" of cmd_define's lookups. */
static void
quiet(void *opaque, virErrorPtr err)
{
    (void)opaque;
    (void)err;
}

static void
usage(void)
{
    fputs("usage: libvirt-peer URI define N | getinfo SECS WARMUP | "
          "listall CALLS | pairs SECS | clean\n",
          stderr);
    exit(2);
}

int
main(int argc, char **argv)
{
    virConnectPtr c;
    const char *cmd;

    if (argc < 3) {
        usage();
    }
    cmd = argv[2];
    virSetErrorFunc(NULL, quiet);
    c = virConnectOpen(argv[1]);
    if (c == NULL) {
        fail("virConnectOpen");
    }
    if (strcmp(cmd, "define") == 0 && argc == 4) {
        cmd_define(c, atoi(argv[3]));
    } else if (strcmp(cmd, "getinfo") == 0 && argc == 5) {
        cmd_getinfo(c, atof(argv[3]), atof(argv[4]));
    } else if (strcmp(cmd, "listall") == 0 && argc == 4) {
        cmd_listall(c, atoi(argv[3]));
    } else if (strcmp(cmd, "pairs") == 0 && argc == 4) {
        cmd_pairs(c, atof(argv[3]));
    } else if (strcmp(cmd, "clean") == 0 && argc == 3) {
        cmd_clean(c);
    } else {
        usage();
    }
    virConnectClose(c);
    return 0;
}
