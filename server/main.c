/* main.c - xapid: start-up, the serving loop, clean shutdown. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accounts.h"
#include "admin.h"
#include "api/api.h"
#include "api/net-api.h"
#include "bootstrap.h"
#include "config.h"
#include "db/db.h"
#include "event.h"
#include "ha/ha.h"
#include "http/cert.h"
#include "http/http.h"
#include "hypervisor/hv.h"
#include "hypervisor/kvm/kvm.h"
#include "log.h"
#include "network/net.h"
#include "pool/pool.h"
#include "rpc.h"
#include "self.h"
#include "session.h"
#include "task.h"
#include "timer.h"

static int
fail(struct xa_error *err, const char *what)
{
    fprintf(stderr, "xapid: %s: %s", what, err->code);
    for (size_t i = 0; i < err->n_params; i++) {
        fprintf(stderr, " %s", err->params[i]);
    }
    fputc('\n', stderr);
    xa_error_free(err);
    return 1;
}

/* Reads a whole small file, trailing newline removed; NULL on failure. */
static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return NULL;
    }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return xa_strdup(buf);
}

/* The pool secret authenticates host-to-host calls: made once, kept. */
static char *
pool_secret(const char *dir)
{
    char *path = xa_asprintf("%s/ptoken", dir);
    char *s = slurp(path);
    if (!s) {
        unsigned char r[32];
        RAND_bytes(r, sizeof r);
        char hex[65];
        for (size_t i = 0; i < sizeof r; i++) {
            snprintf(hex + 2 * i, 3, "%02x", r[i]);
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            ssize_t w = write(fd, hex, 64);
            XA_UNUSED(w);
            fsync(fd);
            close(fd);
        }
        s = xa_strdup(hex);
    }
    free(path);
    return s;
}

static void
sweep(void *ctx)
{
    XA_UNUSED(ctx);
    xa_task_gc();
    xa_session_expire();
    xa_timer_after(60, sweep, NULL);
}

static enum xa_log_level
log_level(const char *s)
{
    if (strcmp(s, "error") == 0) {
        return XA_LOG_ERR;
    }
    if (strcmp(s, "warn") == 0) {
        return XA_LOG_WARN;
    }
    if (strcmp(s, "debug") == 0) {
        return XA_LOG_DEBUG;
    }
    return XA_LOG_INFO;
}

int
main(int argc, char **argv)
{
    struct xa_config cfg;
    bool just_exit = false;
    struct xa_error *err = xa_config_parse(&cfg, argc, argv, &just_exit);
    if (err) {
        fprintf(stderr, "xapid: try --help\n");
        return fail(err, "bad option");
    }
    if (just_exit) {
        xa_config_free(&cfg);
        return 0;
    }
    xa_log_set_level(log_level(cfg.log_level));
    if (xa_admin_wanted(&cfg)) { /* --check-db, --regenerate-cert */
        int rc = xa_admin_run(&cfg);
        xa_config_free(&cfg);
        return rc;
    }
    /* Large replies (get_all_records of thousands of objects) are built
     * in big buffers.  By default glibc maps and unmaps each one, so every
     * call faults all its pages in afresh; keeping freed memory in the
     * heap lets the next call reuse it. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM and SIGINT are taken synchronously by sigwait below; block
     * them before any thread starts so every thread inherits the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    if (mkdir(cfg.state_dir, 0700) != 0 && errno != EEXIST) {
        return fail(xa_error_internal("cannot create %s: %s", cfg.state_dir,
                                      strerror(errno)),
                    "state directory");
    }
    xa_self_set_state_dir(cfg.state_dir);
    xa_schema_init();

    char *db_uri = strcmp(cfg.db, "sqlite") == 0
                       ? xa_asprintf("sqlite:%s/xapi.db", cfg.state_dir)
                       : xa_strdup(cfg.db);
    err = xa_db_open(db_uri);
    free(db_uri);
    if (err) {
        return fail(err, "database");
    }
    char *root_pw =
        cfg.root_password_file ? slurp(cfg.root_password_file) : NULL;
    char *accounts_path = xa_asprintf("%s/accounts", cfg.state_dir);
    err = xa_accounts_load(accounts_path, root_pw);
    free(accounts_path);
    free(root_pw);
    if (err) {
        return fail(err, "accounts");
    }
    struct xa_bootstrap_opts bo = {
        .bind_address = cfg.bind,
        .hypervisor = cfg.hypervisor,
        .http_port = cfg.http_port,
        .https_port = cfg.https_port,
        .state_dir = cfg.state_dir,
    };
    char *host_ref = NULL;
    /* The pool secret exists before the pool reads it; a pool member
     * takes its rows from its replica instead of bootstrapping. */
    free(pool_secret(cfg.state_dir));
    struct xa_pool_config pc = {
        .state_dir = cfg.state_dir,
        .https_port = cfg.https_port,
        .heartbeat = cfg.pool_heartbeat,
        .live_timeout = cfg.pool_live_timeout,
        .argv = argv,
    };
    err = xa_pool_init(&pc);
    if (!err) {
        err = xa_pool_is_member() ? xa_pool_member_self(&host_ref)
                                  : xa_bootstrap(&bo, &host_ref);
    }
    if (err) {
        return fail(err, "first start");
    }
    xa_self_set_host(host_ref);
    free(host_ref);
    xa_pool_start();
    xa_kvm_configure(cfg.kvm_accel);
    err = xa_hv_select(cfg.hypervisor);
    if (err) {
        return fail(err, "hypervisor driver");
    }
    err = xa_net_select_ext(cfg.network, cfg.ovsdb, cfg.ovs_datapath,
                            cfg.net_namespace);
    if (err) {
        return fail(err, "network driver");
    }
    xa_api_init();
    xa_net_api_init(cfg.nics);

    char *secret = pool_secret(cfg.state_dir);
    struct xa_session_config sc = {
        .idle_timeout = cfg.session_timeout,
        .max_per_user = cfg.sessions_per_user,
        .pool_secret = secret,
    };
    xa_session_init(&sc);
    free(secret);
    xa_timer_start();
    xa_event_start();
    xa_task_start_workers(cfg.workers);
    xa_timer_after(60, sweep, NULL);
    xa_net_start();
    xa_pif_resume_dhcp();
    /* before serving: a host that HA replaced follows the new master */
    xa_ha_start(cfg.bind, cfg.https_port);

    char *cert = NULL, *key = NULL;
    if (cfg.https_port) {
        err = xa_cert_ensure(cfg.state_dir, "xapi-ssl.pem", "xapi-ssl.key",
                             &cert, &key);
        if (err) {
            return fail(err, "host certificate");
        }
    }
    struct xa_http_config hc = {
        .bind_address = cfg.bind,
        .http_port = cfg.http_port,
        .https_port = cfg.https_port,
        .cert_file = cert,
        .key_file = key,
        .threads = cfg.threads,
        .handler = xa_rpc_http_handler,
    };
    struct xa_http_server *http = NULL;
    err = xa_http_start(&hc, &http);
    if (err) {
        return fail(err, "listening");
    }
    if (cfg.http_port) {
        xa_log_info("main", "serving http://%s:%d/", cfg.bind,
                    xa_http_port(http, false));
    }
    if (cfg.https_port) {
        xa_log_info("main", "serving https://%s:%d/", cfg.bind,
                    xa_http_port(http, true));
    }

    int sig = 0;
    sigwait(&stop_signals, &sig);
    xa_log_info("main", "signal %d: stopping", sig);
    xa_ha_stop();
    xa_event_stop(); /* answers parked event.from calls */
    xa_pool_stop();  /* answers parked replication calls */
    xa_http_stop(http);
    xa_task_stop_workers();
    xa_timer_stop();
    xa_session_shutdown();
    xa_net_shutdown();
    xa_hv_shutdown_driver();
    xa_db_close();
    free(cert);
    free(key);
    xa_config_free(&cfg);
    return 0;
}
