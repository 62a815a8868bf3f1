/* config.h - xapid's settings: defaults, then the config file, then the
 * command line, each overriding the one before. */
#ifndef XA_CONFIG_H
#define XA_CONFIG_H

#include <stdbool.h>

#include "error.h"

struct xa_config {
    char *state_dir;          /* database, certificates, accounts */
    char *bind;               /* listening address */
    int http_port;            /* 0: no plain HTTP */
    int https_port;           /* 0: no HTTPS */
    char *hypervisor;         /* sim | kvm | xen */
    char *kvm_accel;          /* kvm backend: kvm | tcg | auto */
    char *db;                 /* "sqlite" or "postgresql://..." */
    char *root_password_file; /* read at first start */
    unsigned threads;         /* HTTP threads */
    unsigned workers;         /* task worker threads */
    double session_timeout;   /* seconds idle before a session expires */
    unsigned sessions_per_user;
    char *log_level;     /* error | warn | info | debug */
    char *network;       /* sim | ovs */
    char *ovsdb;         /* unix:PATH of ovsdb-server */
    char *ovs_datapath;  /* datapath_type of new bridges, "" default */
    char *net_namespace; /* netns file holding the NICs, "" own */
    char *nics;          /* comma-separated NIC names, "" discover */
    /* Pools: a member's longest silence between two heartbeats (its
     * replication long-poll), and the silence after which the master
     * marks it not live. */
    double pool_heartbeat;
    double pool_live_timeout;
    /* one-off jobs instead of serving (server/admin.h) */
    bool check_db;
    bool regenerate_cert;
};

/* Fills 'cfg' from argv (and a --config file).  Returns an error for bad
 * options; sets '*ret_exit' when the program should just exit (--help). */
struct xa_error *xa_config_parse(struct xa_config *cfg, int argc, char **argv,
                                 bool *ret_exit) XA_WARN_UNUSED;
void xa_config_free(struct xa_config *cfg);

#endif
