/* main.c - xe: options, connection, and running one command.
 *
 * Options follow xapi's xe (ocaml/xe-cli/newcli.ml): -s server, -p port,
 * -u user, -pw password, -pwf file (user on its first line, password on
 * the second), --nossl; the same settings as server=, port=, username=,
 * password=, passwordfile=, nossl= come from ~/.xe (one per line) and
 * XE_EXTRA_ARGS (comma-separated, "\," for a comma), command line first,
 * then the environment, then the file.  Defaults: 127.0.0.1, root.  xe
 * never uses TLS to 127.0.0.1 (port 80 by default there); elsewhere it
 * uses HTTPS on 443 and pins the server's certificate in
 * ~/.xe_known_hosts ($XE_KNOWN_HOSTS): trust on first use, refusal when
 * it changes.
 *
 * Beyond xapi: --output json, progress bars on a terminal, and
 * --generate-bash-completion. */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xe.h"

struct conn {
    char *server, *port, *user, *pw, *pwfile;
    bool nossl, debug;
};

static void
conn_set(char **slot, const char *v)
{
    free(*slot);
    *slot = xa_strdup(v);
}

/* Applies a connection setting; false when 'k' is not one. */
static bool
conn_keyword(struct conn *c, const char *k, const char *v)
{
    if (strcmp(k, "server") == 0) {
        conn_set(&c->server, v);
    } else if (strcmp(k, "port") == 0) {
        conn_set(&c->port, v);
    } else if (strcmp(k, "username") == 0) {
        conn_set(&c->user, v);
    } else if (strcmp(k, "password") == 0) {
        conn_set(&c->pw, v);
    } else if (strcmp(k, "passwordfile") == 0) {
        conn_set(&c->pwfile, v);
    } else if (strcmp(k, "nossl") == 0) {
        c->nossl = strcmp(v, "true") == 0;
    } else if (strcmp(k, "debug") == 0) {
        c->debug = strcmp(v, "true") == 0;
    } else {
        return false;
    }
    return true;
}

static void
add_arg(struct xe *xe, const char *k, const char *v)
{
    xe->args = xa_realloc(xe->args, (xe->n_args + 1) * sizeof *xe->args);
    xe->args[xe->n_args].key = xa_strdup(k);
    xe->args[xe->n_args].val = v ? xa_strdup(v) : NULL;
    xe->args[xe->n_args].used = false;
    xe->n_args++;
}

/* "k=v": a connection setting, or an argument of the command. */
static void
take_kv(struct xe *xe, struct conn *c, const char *s, bool from_argv)
{
    const char *eq = strchr(s, '=');
    if (!eq) {
        add_arg(xe, s, NULL);
        return;
    }
    XA_UNUSED(from_argv);
    char *k = xa_strndup(s, (size_t)(eq - s));
    if (!conn_keyword(c, k, eq + 1)) {
        add_arg(xe, k, eq + 1);
    }
    free(k);
}

static void
read_rc(struct xe *xe, struct conn *c)
{
    const char *home = getenv("HOME");
    if (!home) {
        return;
    }
    char *path = xa_asprintf("%s/.xe", home);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f) {
        return;
    }
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] && line[0] != '#' && strchr(line, '=')) {
            take_kv(xe, c, line, false);
        }
    }
    fclose(f);
}

static void
read_extra_args(struct xe *xe, struct conn *c)
{
    const char *e = getenv("XE_EXTRA_ARGS");
    if (!e || !*e) {
        return;
    }
    struct xa_buf seg = {0};
    for (const char *p = e;; p++) {
        if (*p == '\\' && p[1] == ',') {
            xa_buf_putc(&seg, ',');
            p++;
            continue;
        }
        if (*p == ',' || *p == '\0') {
            if (seg.len) {
                take_kv(xe, c, seg.data, false);
            }
            seg.len = 0;
            if (seg.data) {
                seg.data[0] = '\0';
            }
            if (!*p) {
                break;
            }
            continue;
        }
        xa_buf_putc(&seg, *p);
    }
    xa_buf_free(&seg);
}

static int
usage(void)
{
    fprintf(stderr, "Usage: xe <cmd> [-s server] [-p port] ([-u username] [-pw "
                    "password] or [-pwf <password file>]) <other arguments>\n\n"
                    "A full list of commands can be obtained by running \n"
                    "\txe help -s <server> -p <port>\n");
    return 1;
}

/* ---- arguments ---------------------------------------------------- */

const char *
xe_arg(struct xe *xe, const char *key)
{
    for (size_t i = 0; i < xe->n_args; i++) {
        if (xe->args[i].val && strcmp(xe->args[i].key, key) == 0) {
            xe->args[i].used = true;
            return xe->args[i].val;
        }
    }
    return NULL;
}

const char *
xe_arg_req(struct xe *xe, const char *key)
{
    const char *v = xe_arg(xe, key);
    if (!v) {
        xe_param_error("Required parameter not found", key);
    }
    return v;
}

bool
xe_arg_bool(struct xe *xe, const char *key, bool dflt)
{
    const char *v = xe_arg(xe, key);
    if (!v) {
        return dflt;
    }
    return strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
           strcmp(v, "1") == 0 || strcasecmp(v, "on") == 0;
}

struct xa_value *
xe_arg_map(struct xe *xe, const char *prefix)
{
    struct xa_value *m = xa_struct();
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < xe->n_args; i++) {
        struct xe_arg *a = &xe->args[i];
        if (a->val && strncmp(a->key, prefix, pl) == 0 && a->key[pl] == ':') {
            a->used = true;
            xa_struct_set(m, a->key + pl + 1, xa_string(a->val));
        }
    }
    return m;
}

struct xa_value *
xe_ref_array(const char *ref)
{
    struct xa_value *a = xa_array();
    xa_array_append(a, xa_string(ref ? ref : ""));
    return a;
}

/* ---- certificate pinning -------------------------------------------- */

struct pin {
    char *path;     /* known-hosts file */
    char *hostport; /* "host:port" */
    bool refused;
};

static char *
known_hosts_path(void)
{
    const char *e = getenv("XE_KNOWN_HOSTS");
    if (e && *e) {
        return xa_strdup(e);
    }
    const char *home = getenv("HOME");
    if (!home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : "/";
    }
    return xa_asprintf("%s/.xe_known_hosts", home);
}

static bool
pin_check(void *ctx, const char *fp, bool ca_ok)
{
    XA_UNUSED(ca_ok);
    struct pin *p = ctx;
    FILE *f = fopen(p->path, "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *sp = strchr(line, ' ');
        if (!sp) {
            continue;
        }
        *sp = '\0';
        if (strcmp(line, p->hostport) != 0) {
            continue;
        }
        fclose(f);
        if (strcmp(sp + 1, fp) == 0) {
            return true;
        }
        fprintf(stderr,
                "ERROR: the certificate of server %s has changed.\n"
                "Known fingerprint (SHA-256): %s\n"
                "Offered fingerprint (SHA-256): %s\n"
                "Someone may be intercepting the connection, or the server's "
                "certificate was replaced.\nIf the change is expected, remove "
                "the line for %s from %s.\n",
                p->hostport, sp + 1, fp, p->hostport, p->path);
        p->refused = true;
        return false;
    }
    if (f) {
        fclose(f);
    }
    /* First contact: remember the certificate, as ssh does. */
    f = fopen(p->path, "a");
    if (f) {
        fprintf(f, "%s %s\n", p->hostport, fp);
        fclose(f);
        fprintf(stderr,
                "Trusting the certificate of %s on first use: SHA-256 %s "
                "(saved in %s)\n",
                p->hostport, fp, p->path);
    } else {
        fprintf(stderr,
                "Warning: cannot save the fingerprint of %s in %s: "
                "%s\n",
                p->hostport, p->path, strerror(errno));
    }
    return true;
}

/* ---- another pool (vm-migrate remote-master=) ------------------------ */

/* How the main connection was made: another server is reached the same
 * way (scheme, default port) and pinned in the same known-hosts file. */
static bool conn_tls;
static char conn_port[16];

struct xe_remote {
    struct xa_client *c;
    struct pin pin;
};

struct xe_remote *
xe_remote_open(const char *server)
{
    struct xe_remote *r = xa_calloc(1, sizeof *r);
    const char *colon = strrchr(server, ':');
    bool has_port = colon && server[0] != '[' && !strchr(colon + 1, ']') &&
                    strchr(server, ':') == colon;
    char *host = has_port ? xa_strndup(server, (size_t)(colon - server))
                          : xa_strdup(server);
    const char *port = has_port ? colon + 1 : conn_port;
    char *url =
        xa_asprintf("%s://%s:%s", conn_tls ? "https" : "http", host, port);
    r->pin.path = known_hosts_path();
    r->pin.hostport = xa_asprintf("%s:%s", host, port);
    struct xa_client_options opt = {.protocol = XA_CLIENT_XMLRPC,
                                    .cert_check = pin_check,
                                    .cert_ctx = &r->pin};
    r->c = xa_client_new(url, &opt);
    free(url);
    free(host);
    return r;
}

struct xa_client *
xe_remote_client(struct xe_remote *r)
{
    return r->c;
}

void
xe_remote_close(struct xe_remote *r)
{
    if (r) {
        xa_error_free(xa_client_logout(r->c));
        xa_client_free(r->c);
        free(r->pin.path);
        free(r->pin.hostport);
        free(r);
    }
}

/* ---- main ------------------------------------------------------------ */

static int
run(struct xe *xe, const struct xe_cmd *cmd)
{
    switch (cmd->kind) {
    case XE_CMD_HELP:
        return xe_help(xe, cmd);
    case XE_CMD_CUSTOM:
        return cmd->run(xe, cmd);
    default:
        return xe_run_generic(xe, cmd);
    }
}

static bool
read_pwfile(struct conn *c)
{
    FILE *f = fopen(c->pwfile, "r");
    if (!f) {
        fprintf(stderr, "Error opening password file '%s'\n", c->pwfile);
        return false;
    }
    char u[1024], p[1024];
    if (!fgets(u, sizeof u, f) || !fgets(p, sizeof p, f)) {
        fclose(f);
        fprintf(stderr, "Error: password file format: expecting username on "
                        "the first line, password on the second line\n");
        return false;
    }
    fclose(f);
    u[strcspn(u, "\r\n")] = '\0';
    p[strcspn(p, "\r\n")] = '\0';
    conn_set(&c->user, u);
    conn_set(&c->pw, p);
    explicit_bzero(p, sizeof p);
    return true;
}

/* Everything after option parsing; returns the exit code.  The caller
 * frees what parsing collected, whatever path this takes. */
static int
execute(struct xe *xe, struct conn *c, const char *cmdname, bool gen_completion)
{
    xa_schema_init();
    xe_cmdtab_build();
    if (gen_completion) {
        xe_print_bash_completion(stdout);
        return 0;
    }
    if (!cmdname) {
        return usage();
    }
    const struct xe_cmd *cmd = xe_cmd_find(cmdname);
    if (!cmd) {
        return xe_param_error("Unknown command", cmdname);
    }
    if (cmd->kind == XE_CMD_HELP) {
        return xe_help(xe, cmd);
    }
    if (c->pwfile && !read_pwfile(c)) {
        return 1;
    }
    /* Flags every command understands. */
    xe->minimal = xe_arg_bool(xe, "minimal", false);
    xe->multiple = xe_arg_bool(xe, "multiple", false);
    const char *output = xe_arg(xe, "output");
    xe->json = output && strcmp(output, "json") == 0;
    xe->progress = isatty(STDERR_FILENO) && !xe->json;

    const char *server = c->server ? c->server : "127.0.0.1";
    bool tls = !c->nossl && strcmp(server, "127.0.0.1") != 0;
    const char *port = c->port ? c->port : tls ? "443" : "80";
    int64_t pn;
    if (!xa_parse_int64(port, &pn) || pn < 0 || pn > 65535) {
        fprintf(stderr, "Port number must be an integer (0-65535)\n");
        return usage();
    }
    bool v6 = strchr(server, ':') && server[0] != '[';
    char *url = xa_asprintf("%s://%s%s%s:%s", tls ? "https" : "http",
                            v6 ? "[" : "", server, v6 ? "]" : "", port);
    struct pin pin = {.path = known_hosts_path(),
                      .hostport = xa_asprintf("%s:%s", server, port)};
    struct xa_client_options opt = {.protocol = XA_CLIENT_XMLRPC,
                                    .cert_check = pin_check,
                                    .cert_ctx = &pin};
    if (getenv("XE_JSONRPC")) {
        opt.protocol = XA_CLIENT_JSONRPC;
    }
    xe->c = xa_client_new(url, &opt);
    free(url);
    conn_tls = tls;
    snprintf(conn_port, sizeof conn_port, "%s", port);

    int rc;
    struct xa_error *err = xa_client_login(xe->c, c->user ? c->user : "root",
                                           c->pw ? c->pw : "null");
    if (err) {
        if (strcmp(err->code, "SESSION_AUTHENTICATION_FAILED") == 0) {
            rc = xe_param_error("", "Authentication failed");
        } else {
            xe_print_error(NULL, err);
            rc = 1;
        }
        xa_error_free(err);
    } else {
        rc = run(xe, cmd);
        xe_print_end(xe);
        xa_error_free(xa_client_logout(xe->c));
    }
    xa_client_free(xe->c);
    free(pin.path);
    free(pin.hostport);
    return rc;
}

int
main(int argc, char **argv)
{
    struct xe xe = {0};
    struct conn c = {0};
    const char *cmdname = NULL;
    bool gen_completion = false;

    /* Lowest priority first: later settings override earlier ones. */
    read_rc(&xe, &c);
    read_extra_args(&xe, &c);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        static const struct {
            const char *opt, *key;
        } opts[] = {{"-s", "server"},    {"-h", "server"},
                    {"-p", "port"},      {"-u", "username"},
                    {"-pw", "password"}, {"-pwf", "passwordfile"}};
        bool done = false;
        for (size_t k = 0; k < XA_ARRAY_SIZE(opts) && !done; k++) {
            if (strcmp(a, opts[k].opt) == 0 && i + 1 < argc) {
                conn_keyword(&c, opts[k].key, argv[++i]);
                done = true;
            }
        }
        if (done) {
            continue;
        }
        if (strcmp(a, "--nossl") == 0) {
            c.nossl = true;
        } else if (strcmp(a, "--debug") == 0) {
            c.debug = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-help") == 0) {
            cmdname = NULL; /* execute() prints the usage */
            break;
        } else if (strcmp(a, "--generate-bash-completion") == 0) {
            gen_completion = true;
        } else if (strcmp(a, "--output") == 0 && i + 1 < argc) {
            add_arg(&xe, "output", argv[++i]);
        } else if (a[0] == '-' && a[1] == '-' && a[2]) {
            /* xapi turns every other --flag into flag=true. */
            const char *eq = strchr(a + 2, '=');
            if (eq) {
                take_kv(&xe, &c, a + 2, true);
            } else {
                add_arg(&xe, a + 2, "true");
            }
        } else if (!cmdname && !strchr(a, '=')) {
            cmdname = a;
        } else {
            take_kv(&xe, &c, a, true);
        }
    }

    int rc = execute(&xe, &c, cmdname, gen_completion);
    free(c.server);
    free(c.port);
    free(c.user);
    free(c.pw);
    free(c.pwfile);
    for (size_t i = 0; i < xe.n_args; i++) {
        free(xe.args[i].key);
        free(xe.args[i].val);
    }
    free(xe.args);
    xa_value_unref(xe.uuid_cache);
    return rc;
}
