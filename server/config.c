/* config.c - see config.h. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* OPT_ACTION: a flag without a value that makes xapid do one
 * administrative job and exit instead of serving; command line only, so a
 * config file can never stop a server from starting. */
enum opt_kind { OPT_STR, OPT_INT, OPT_UINT, OPT_DOUBLE, OPT_ACTION };

/* One table drives the command line, the config file and --help. */
struct option_desc {
    const char *name; /* "--name" on the command line, "name" in files */
    enum opt_kind kind;
    size_t offset;
    const char *arg;
    const char *help;
};

#define OFF(f) offsetof(struct xa_config, f)

static const struct option_desc options[] = {
    {"state-dir", OPT_STR, OFF(state_dir), "DIR",
     "where the database, certificates and accounts live"},
    {"bind", OPT_STR, OFF(bind), "ADDR", "address to listen on"},
    {"http-port", OPT_INT, OFF(http_port), "N",
     "plain HTTP port (0 turns plain HTTP off)"},
    {"https-port", OPT_INT, OFF(https_port), "M",
     "HTTPS port (0 turns HTTPS off)"},
    {"hypervisor", OPT_STR, OFF(hypervisor), "sim|kvm|xen",
     "hypervisor driver"},
    {"kvm-accel", OPT_STR, OFF(kvm_accel), "kvm|tcg|auto",
     "QEMU accelerator of the kvm driver (a VM's platform:accel wins)"},
    {"db", OPT_STR, OFF(db), "sqlite|postgresql://...", "persistence backend"},
    {"root-password-file", OPT_STR, OFF(root_password_file), "FILE",
     "root's password, read at first start"},
    {"threads", OPT_UINT, OFF(threads), "N",
     "HTTP threads (default 16; 0: one per CPU)"},
    {"workers", OPT_UINT, OFF(workers), "N", "threads running Async tasks"},
    {"session-timeout", OPT_DOUBLE, OFF(session_timeout), "SECONDS",
     "idle time after which a session expires"},
    {"sessions-per-user", OPT_UINT, OFF(sessions_per_user), "N",
     "sessions one user may hold; the oldest goes beyond it"},
    {"log-level", OPT_STR, OFF(log_level), "LEVEL",
     "error, warn, info or debug"},
    {"network", OPT_STR, OFF(network), "sim|ovs", "network backend"},
    {"ovsdb", OPT_STR, OFF(ovsdb), "unix:PATH",
     "Open vSwitch database socket (network ovs)"},
    {"ovs-datapath", OPT_STR, OFF(ovs_datapath), "TYPE",
     "datapath_type of new bridges: netdev (userspace), or OVS's default"},
    {"net-namespace", OPT_STR, OFF(net_namespace), "FILE",
     "network namespace (/run/netns/NAME) holding the host's NICs"},
    {"nics", OPT_STR, OFF(nics), "DEV,DEV",
     "the host's NICs (default: every physical device found)"},
    {"pool-heartbeat", OPT_DOUBLE, OFF(pool_heartbeat), "SECONDS",
     "longest interval between a pool member's heartbeats"},
    {"pool-live-timeout", OPT_DOUBLE, OFF(pool_live_timeout), "SECONDS",
     "silence after which the master marks a member not live"},
    {"check-db", OPT_ACTION, OFF(check_db), "",
     "check the state directory's database, print OK or the problem, exit"},
    {"regenerate-cert", OPT_ACTION, OFF(regenerate_cert), "",
     "replace the host certificate and key, print the fingerprint, exit"},
};

static void
set_defaults(struct xa_config *c)
{
    memset(c, 0, sizeof *c);
    c->state_dir = xa_strdup("/var/lib/xapid");
    c->bind = xa_strdup("0.0.0.0");
    /* HTTPS only unless plain HTTP is asked for, as xapi's https-only */
    c->http_port = 0;
    c->https_port = 443;
    c->hypervisor = xa_strdup("sim");
    c->kvm_accel = xa_strdup("auto");
    c->db = xa_strdup("sqlite");
    /* A handler that waits (a commit's fsync, a call forwarded to a pool
     * member) holds its libmicrohttpd thread, and every connection that
     * thread polls, until it is done: keep enough of them. */
    c->threads = 16;
    c->workers = 8;
    c->session_timeout = 24 * 3600;
    c->sessions_per_user = 500;
    c->log_level = xa_strdup("info");
    c->network = xa_strdup("sim");
    c->ovsdb = xa_strdup("unix:/var/run/openvswitch/db.sock");
    c->ovs_datapath = xa_strdup("");
    c->net_namespace = xa_strdup("");
    c->nics = xa_strdup("");
    c->pool_heartbeat = 5;
    c->pool_live_timeout = 30;
}

static struct xa_error *
apply(struct xa_config *c, const struct option_desc *o, const char *value)
{
    void *p = (char *)c + o->offset;
    char *end = NULL;
    switch (o->kind) {
    case OPT_STR:
        free(*(char **)p);
        *(char **)p = xa_strdup(value);
        return NULL;
    case OPT_INT:
    case OPT_UINT: {
        long v = strtol(value, &end, 10);
        if (!*value || *end || (o->kind == OPT_UINT && v < 0)) {
            break;
        }
        if (o->kind == OPT_INT) {
            *(int *)p = (int)v;
        } else {
            *(unsigned *)p = (unsigned)v;
        }
        return NULL;
    }
    case OPT_DOUBLE: {
        double v = strtod(value, &end);
        if (!*value || *end) {
            break;
        }
        *(double *)p = v;
        return NULL;
    }
    case OPT_ACTION:
        break; /* not from files: see enum opt_kind */
    }
    return xa_error_new("INVALID_VALUE", 2, o->name, value);
}

static const struct option_desc *
find(const char *name)
{
    for (size_t i = 0; i < XA_ARRAY_SIZE(options); i++) {
        if (strcmp(options[i].name, name) == 0) {
            return &options[i];
        }
    }
    return NULL;
}

static struct xa_error *
read_file(struct xa_config *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return xa_error_new("INVALID_VALUE", 2, "config", path);
    }
    char line[4096];
    struct xa_error *err = NULL;
    while (!err && fgets(line, sizeof line, f)) {
        char *s = line + strspn(line, " \t");
        s[strcspn(s, "#\r\n")] = '\0';
        char *eq = strchr(s, '=');
        if (!*s || !eq) {
            continue;
        }
        char *key = s, *val = eq + 1;
        *eq = '\0';
        for (char *e = eq - 1; e >= key && (*e == ' ' || *e == '\t'); e--) {
            *e = '\0';
        }
        val += strspn(val, " \t");
        for (char *e = val + strlen(val); e > val && (e[-1] == ' ');) {
            *--e = '\0';
        }
        const struct option_desc *o = find(key);
        err = o ? apply(c, o, val)
                : xa_error_new("INVALID_VALUE", 2, "config key", key);
    }
    fclose(f);
    return err;
}

static void
usage(void)
{
    printf("Usage: xapid [OPTION]...\n"
           "A XenAPI management server.\n\n");
    for (size_t i = 0; i < XA_ARRAY_SIZE(options); i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", options[i].name,
                 *options[i].arg ? " " : "", options[i].arg);
        printf("  %-36s %s\n", left, options[i].help);
    }
    printf("  %-36s %s\n", "--config FILE",
           "read 'name = value' settings (option names without --)");
    printf("  %-36s %s\n", "--help", "show this help");
}

struct xa_error *
xa_config_parse(struct xa_config *c, int argc, char **argv, bool *ret_exit)
{
    set_defaults(c);
    *ret_exit = false;
    /* The config file first, so the command line overrides it. */
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            struct xa_error *err = read_file(c, argv[i + 1]);
            if (err) {
                return err;
            }
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            *ret_exit = true;
            return NULL;
        }
        if (strncmp(a, "--", 2) != 0) {
            return xa_error_new("INVALID_VALUE", 2, "option", a);
        }
        const struct option_desc *o = find(a + 2);
        if (o && o->kind == OPT_ACTION) {
            *(bool *)((char *)c + o->offset) = true;
            continue;
        }
        if (i + 1 >= argc) {
            return xa_error_new("INVALID_VALUE", 2, "option", a);
        }
        if (strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (!o) {
            return xa_error_new("INVALID_VALUE", 2, "option", a);
        }
        struct xa_error *err = apply(c, o, argv[++i]);
        if (err) {
            return err;
        }
    }
    return NULL;
}

void
xa_config_free(struct xa_config *c)
{
    for (size_t i = 0; i < XA_ARRAY_SIZE(options); i++) {
        if (options[i].kind == OPT_STR) {
            char **p = (char **)((char *)c + options[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}
