/* xenmig.c - a live migration of a running PV domain to this same host at
 * the Xen driver's level, as `xl migrate DOMAIN localhost` does: the
 * driver's migrate_receive takes one end of a socketpair and returns once
 * libxl has made the new domain (the core's "prepare"), migrate_send
 * streams the domain into the other end ("xapid-fd:N?...&hold=1", what
 * the core hands it), then the new domain is unpaused (the core's
 * "commit") and the sender's held domain destroyed.  See
 * hypervisor/xen/xen.c, "live migration".
 *
 *   xenmig UUID KERNEL RAMDISK MEMORY_MIB
 *   xenmig --garbage UUID KERNEL RAMDISK MEMORY_MIB
 *   xenmig --refuse UUID KERNEL RAMDISK MEMORY_MIB
 *
 * The first migrates the domain of VM UUID (a PV guest built with that
 * kernel and ramdisk); --garbage feeds the receiver a stream that is not
 * libxl's and expects the commit to fail; --refuse sends the domain
 * with hold into /dev/null (a destination that then could not run it:
 * no receiver, which keeps it cheap) and unpauses the held domain, as
 * the core does then.  Both must leave only the sender's domain, running,
 * under its own name.  xapid must not be running.
 * Prints "XENMIG <key> <value>" lines (old, new: domain ids; send_ms,
 * downtime_ms: the driver's figures; commit_ms: the commit; stopped_ms:
 * from the guest's stop for the last copy to the new domain running;
 * running: the domain the driver now finds; error: what failed) and
 * exits 0 when all went as expected (the shell checks xenstore).
 * Built and put in the test dom0 by build-dom0.sh. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hypervisor/xen/xen.h"
#include "log.h"

static const struct xa_hv_driver *drv = &xa_hv_xen_driver;

static const char *
why(const struct xa_error *e)
{
    return e->n_params ? e->params[0] : e->code;
}

/* The domain of 'uuid' the driver acts on, or -1. */
static int64_t
domid_of(const char *uuid)
{
    struct xa_hv_domain_info info;
    struct xa_error *e = drv->get_info(uuid, &info);
    if (e) {
        xa_error_free(e);
        return -1;
    }
    return info.domid;
}

static int
fail(const char *what, struct xa_error *e)
{
    printf("XENMIG error %s: %s\n", what, e ? why(e) : "");
    xa_error_free(e);
    return 1;
}

int
main(int argc, char **argv)
{
    bool garbage = argc > 1 && strcmp(argv[1], "--garbage") == 0;
    bool refuse = argc > 1 && strcmp(argv[1], "--refuse") == 0;
    int opts = garbage || refuse;
    if (argc != 5 + opts) {
        fprintf(stderr, "usage: xenmig [--garbage|--refuse] UUID KERNEL "
                        "RAMDISK MEMORY_MIB\n");
        return 2;
    }
    char **a = argv + 1 + opts;
    signal(SIGPIPE, SIG_IGN); /* as xapid: the stream's ends may go */
    xa_log_set_level(XA_LOG_INFO);
    struct xa_error *err = drv->init();
    if (err) {
        return fail("init", err);
    }
    const char *uuid = a[0];
    int64_t mem = atoll(a[3]) * 1024 * 1024;
    struct xa_hv_domain_config cfg = {
        .uuid = uuid,
        .name_label = "xenmig",
        .memory_static_max = mem,
        .memory_target = mem,
        .vcpus_max = 1,
        .vcpus_at_startup = 1,
        .kernel = a[1],
        .ramdisk = a[2],
        .cmdline = "",
    };
    int64_t old = domid_of(uuid);
    printf("XENMIG old %lld\n", (long long)old);
    if (old < 0) {
        return fail("no domain of", NULL);
    }
    if (refuse) {
        int sink = open("/dev/null", O_WRONLY | O_CLOEXEC);
        char url[96];
        snprintf(url, sizeof url, "xapid-fd:%d?hold=1", sink);
        double t0 = xa_monotonic();
        err = sink < 0 ? xa_error_internal("/dev/null: %s", strerror(errno))
                       : drv->migrate_send(uuid, url, true);
        if (sink >= 0) {
            close(sink);
        }
        if (err) {
            return fail("send", err);
        }
        printf("XENMIG held %lld\n", (long long)domid_of(uuid));
        err = drv->unpause(uuid); /* the held domain goes on */
        if (err) {
            return fail("resume", err);
        }
        printf("XENMIG resume_ms %.0f\n", (xa_monotonic() - t0) * 1000.0);
        int64_t now = domid_of(uuid);
        printf("XENMIG running %lld\n", (long long)now);
        drv->fini();
        return now == old ? 0 : 1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("socketpair");
        return 1;
    }
    int64_t id = -1;
    double t0 = xa_monotonic();
    err = drv->migrate_receive(&cfg, sv[1], &id);
    close(sv[1]); /* the driver has its own copy, as in the core */
    if (err) {
        return fail("receive", err);
    }
    printf("XENMIG new %lld\n", (long long)id);
    printf("XENMIG prepare_ms %.0f\n", (xa_monotonic() - t0) * 1000.0);
    if (garbage) {
        static const char junk[4096] = "this is not a libxl stream";
        ssize_t n = write(sv[0], junk, sizeof junk);
        close(sv[0]);
        err = drv->unpause(uuid); /* the commit */
        if (!err || n != (ssize_t)sizeof junk) {
            xa_error_free(err);
            return fail("commit of a bad stream succeeded", NULL);
        }
        printf("XENMIG error %s\n", why(err));
        xa_error_free(err);
        int64_t now = domid_of(uuid);
        printf("XENMIG running %lld\n", (long long)now);
        drv->fini();
        return now == old ? 0 : 1;
    }
    char url[96];
    snprintf(url, sizeof url, "xapid-fd:%d?downtime_ms=300&bandwidth=0&hold=1",
             sv[0]);
    double t1 = xa_monotonic();
    err = drv->migrate_send(uuid, url, true);
    double t2 = xa_monotonic();
    close(sv[0]);
    if (err) {
        struct xa_error *e = drv->destroy(uuid); /* the core's abort */
        xa_error_free(e);
        return fail("send", err);
    }
    err = drv->unpause(uuid); /* the commit */
    double t3 = xa_monotonic();
    if (err) {
        xa_error_free(drv->unpause(uuid)); /* the held domain goes on */
        return fail("commit", err);
    }
    err = drv->destroy(uuid); /* the held domain */
    if (err) {
        return fail("destroy of the sender's domain", err);
    }
    struct xa_hv_migration_stats st = {0};
    bool have = drv->last_migration && drv->last_migration(uuid, &st);
    printf("XENMIG send_ms %.0f\n", (t2 - t1) * 1000.0);
    printf("XENMIG downtime_ms %lld\n",
           have ? (long long)st.downtime_ms : -1LL);
    printf("XENMIG commit_ms %.0f\n", (t3 - t2) * 1000.0);
    printf("XENMIG stopped_ms %.0f\n",
           have ? (double)st.downtime_ms + (t3 - t2) * 1000.0 : -1.0);
    int64_t now = domid_of(uuid);
    printf("XENMIG running %lld\n", (long long)now);
    drv->fini();
    return now == id && id != old ? 0 : 1;
}
