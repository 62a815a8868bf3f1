/* ovs.c - the Open vSwitch backend: bridges and ports as OVSDB rows.
 *
 * Each entry is one or two transactions on ovsdb-server: a select to
 * learn what exists (uuids), then the change.  No local replica is kept:
 * the database is small enough that asking is cheap, and being stateless
 * means a restarted or wiped ovsdb-server needs nothing special (net.c
 * replays the desired state when the connection epoch changes).
 *
 * Ports replace rather than update: put_port removes any port of the same
 * name and inserts the new one in the same transaction, so the result
 * never depends on what was there.  An unchanged port (same digest in
 * external-ids:xapid-spec) is left alone, so a resync does not make
 * ovs-vswitchd recreate every VIF device.
 *
 * The locking rules are the exception to "the database holds it all":
 * they live only inside ovs-vswitchd.  A restarted ovs-vswitchd gets its
 * bridges and ports back from ovsdb-server but none of the rules, so the
 * epoch also counts new ovs-vswitchd processes, seen as new management
 * sockets of the bridges rules were put on (see "a new ovs-vswitchd"). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hmap.h"
#include "log.h"
#include "network/net-driver.h"
#include "network/openflow.h"
#include "network/ovsdb.h"
#include "util.h"

#define DEFAULT_REMOTE "unix:/var/run/openvswitch/db.sock"
#define DEFAULT_RUNDIR "/var/run/openvswitch"
#define TIMEOUT        5.0 /* seconds, per request */
#define OFPORT_WAIT_MS 3000

static struct xa_ovsdb *db;
static char *datapath_type; /* "" leaves OVS's default */
/* Where ovs-vswitchd puts the bridges' management sockets: next to the
 * database socket (OVS keeps both in its rundir). */
static char *rundir;

/* The management socket file of each bridge rules were put on, as last
 * seen: bridge name -> struct sock_id (owned).  Under socks_lock, with
 * the count of changes seen. */
struct sock_id {
    dev_t dev;
    ino_t ino;
    struct timespec ctime;
};
static pthread_mutex_t socks_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xa_hmap socks;
static unsigned new_vswitchds;

static char *
rundir_of(const char *remote)
{
    if (!remote || !xa_str_has_prefix(remote, "unix:")) {
        return xa_strdup(DEFAULT_RUNDIR);
    }
    const char *path = remote + 5;
    const char *slash = strrchr(path, '/');
    if (!slash) {
        return xa_strdup(".");
    }
    return xa_strndup(path, (size_t)(slash - path));
}

static struct xa_error *
ovs_init(const char *remote, const char *datapath)
{
    db = xa_ovsdb_new(remote && *remote ? remote : DEFAULT_REMOTE, TIMEOUT);
    datapath_type = xa_strdup(datapath ? datapath : "");
    rundir = rundir_of(remote && *remote ? remote : DEFAULT_REMOTE);
    struct xa_error *err = xa_ovsdb_ping(db);
    if (err) {
        /* Not fatal: xapid serves everything else and reconnects later. */
        xa_log_warn("net", "Open vSwitch: %s", err->params[0]);
        xa_error_free(err);
    }
    return NULL;
}

static void
ovs_fini(void)
{
    xa_ovsdb_free(db);
    db = NULL;
    free(datapath_type);
    datapath_type = NULL;
    free(rundir);
    rundir = NULL;
    xa_of_shutdown();
    pthread_mutex_lock(&socks_lock);
    xa_hmap_clear(&socks, free);
    pthread_mutex_unlock(&socks_lock);
}

static struct xa_error *
ovs_ping(void)
{
    return xa_ovsdb_ping(db);
}

static char *
mgmt_socket(const char *bridge)
{
    return xa_asprintf("%s/%s.mgmt", rundir, bridge);
}

/* --- a new ovs-vswitchd ----------------------------------------------- */

/* ovs-vswitchd makes each bridge's management socket file when it starts
 * (replacing any left by a crashed one), so a socket file that is not
 * the one seen before means a new ovs-vswitchd, without the rules.  A
 * file is told by inode and change time together: a new file may well
 * get the inode number just freed (ext4, tmpfs), not the same ctime.  A
 * missing file changes nothing: the switch is down, and its successor's
 * socket will differ.  Costs one stat() per bridge with rules. */

/* The identity of bridge 'bridge''s socket file; false when there is
 * none. */
static bool
sock_stat(const char *bridge, struct sock_id *id)
{
    char *path = mgmt_socket(bridge);
    struct stat st;
    bool ok = stat(path, &st) == 0;
    free(path);
    if (ok) {
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        id->ctime = st.st_ctim;
    }
    return ok;
}

static bool
sock_same(const struct sock_id *a, const struct sock_id *b)
{
    return a->dev == b->dev && a->ino == b->ino &&
           a->ctime.tv_sec == b->ctime.tv_sec &&
           a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Records 'now' as bridge 'bridge''s socket ('known': the record, NULL if
 * none yet); a different file than the one recorded counts as a new
 * ovs-vswitchd.  Requires socks_lock. */
static void
sock_seen_locked(const char *bridge, struct sock_id *known,
                 const struct sock_id *now)
{
    if (!known) {
        struct sock_id *id = xa_malloc(sizeof *id);
        *id = *now;
        xa_hmap_put(&socks, bridge, id);
        return;
    }
    if (!sock_same(known, now)) {
        *known = *now;
        new_vswitchds++;
        xa_log_info("net",
                    "Open vSwitch: bridge %s has a new management socket "
                    "(ovs-vswitchd restarted): its rules will be put back",
                    bridge);
    }
}

/* Called before putting rules on 'bridge': from now on its socket is
 * watched.  Looking first means a switch that restarts between the look
 * and the rules counts once more (harmless), never once less. */
static void
sock_watch(const char *bridge)
{
    struct sock_id now;
    if (!sock_stat(bridge, &now)) {
        return; /* nothing to compare with; the rules will fail anyway */
    }
    pthread_mutex_lock(&socks_lock);
    sock_seen_locked(bridge, xa_hmap_get(&socks, bridge), &now);
    pthread_mutex_unlock(&socks_lock);
}

/* Looks at every watched socket; returns how many new ones were seen
 * since start. */
static unsigned
sock_check_all(void)
{
    pthread_mutex_lock(&socks_lock);
    XA_HMAP_FOR_EACH (sl, &socks) {
        struct sock_id now;
        if (sock_stat(sl->key, &now)) {
            sock_seen_locked(sl->key, sl->val, &now);
        }
    }
    unsigned n = new_vswitchds;
    pthread_mutex_unlock(&socks_lock);
    return n;
}

/* Stops watching bridge 'bridge''s socket (the bridge is gone). */
static void
sock_forget(const char *bridge)
{
    pthread_mutex_lock(&socks_lock);
    free(xa_hmap_remove(&socks, bridge));
    pthread_mutex_unlock(&socks_lock);
}

/* New connections to ovsdb-server (it may have lost state) plus new
 * ovs-vswitchd processes (they lost the rules). */
static unsigned
ovs_epoch(void)
{
    return xa_ovsdb_epoch(db) + sock_check_all();
}

/* {"op":"select","table":T,"where":W,"columns":[C...]} */
static json_object *
op_select(const char *table, json_object *where, const char *const *cols)
{
    json_object *op = json_object_new_object();
    json_object_object_add(op, "op", json_object_new_string("select"));
    json_object_object_add(op, "table", json_object_new_string(table));
    json_object_object_add(op, "where",
                           where ? where : json_object_new_array());
    json_object *c = json_object_new_array();
    for (; *cols; cols++) {
        json_object_array_add(c, json_object_new_string(*cols));
    }
    json_object_object_add(op, "columns", c);
    return op;
}

static json_object *
op_new(const char *kind, const char *table, json_object *where)
{
    json_object *op = json_object_new_object();
    json_object_object_add(op, "op", json_object_new_string(kind));
    json_object_object_add(op, "table", json_object_new_string(table));
    if (where) {
        json_object_object_add(op, "where", where);
    }
    return op;
}

/* A one-element mutation list [[column, mutator, value]]. */
static json_object *
mutation(const char *column, const char *mutator, json_object *value)
{
    json_object *m = json_object_new_array();
    json_object_array_add(m, json_object_new_string(column));
    json_object_array_add(m, json_object_new_string(mutator));
    json_object_array_add(m, value);
    json_object *ms = json_object_new_array();
    json_object_array_add(ms, m);
    return ms;
}

/* ["set", [["uuid", u]]] */
static json_object *
uuid_set(const char *kind, const char *u)
{
    json_object *inner = json_object_new_array();
    json_object_array_add(inner, xa_ovsdb_uuid(kind, u));
    json_object *s = json_object_new_array();
    json_object_array_add(s, json_object_new_string("set"));
    json_object_array_add(s, inner);
    return s;
}

/* The rows of result 'i' of a transaction (borrowed). */
static json_object *
rows_of(json_object *results, size_t i)
{
    json_object *r = json_object_array_get_idx(results, i), *rows = NULL;
    if (r && json_object_object_get_ex(r, "rows", &rows) &&
        json_object_is_type(rows, json_type_array)) {
        return rows;
    }
    return NULL;
}

/* The uuid of a selected row (borrowed), from its ["uuid", u] column. */
static const char *
row_uuid(json_object *row)
{
    json_object *u = NULL;
    if (json_object_object_get_ex(row, "_uuid", &u) &&
        json_object_array_length(u) == 2) {
        return json_object_get_string(json_object_array_get_idx(u, 1));
    }
    return NULL;
}

/* Looks one row up by name: '*uuid' receives a copy (NULL when absent),
 * '*ids' (may be NULL) its external_ids (caller puts). */
static struct xa_error *
find_by_name(const char *table, const char *name, char **uuid,
             json_object **ids)
{
    static const char *const cols[] = {"_uuid", "external_ids", NULL};
    json_object *ops = json_object_new_array();
    json_object_array_add(
        ops, op_select(table, xa_ovsdb_where_eq("name", name), cols));
    json_object *res = NULL;
    struct xa_error *err = xa_ovsdb_transact(db, ops, &res);
    *uuid = NULL;
    if (ids) {
        *ids = NULL;
    }
    if (err) {
        return err;
    }
    json_object *rows = rows_of(res, 0);
    if (rows && json_object_array_length(rows) > 0) {
        json_object *row = json_object_array_get_idx(rows, 0), *e = NULL;
        const char *u = row_uuid(row);
        *uuid = u ? xa_strdup(u) : NULL;
        if (ids && json_object_object_get_ex(row, "external_ids", &e)) {
            *ids = json_object_get(e);
        }
    }
    json_object_put(res);
    return NULL;
}

/* external-ids with xapid's ownership mark added. */
static json_object *
owned_map(const char *const *ids, const char *spec)
{
    size_t n = 0;
    while (ids && ids[2 * n]) {
        n++;
    }
    const char **kv = xa_malloc((2 * n + 5) * sizeof *kv);
    size_t k = 0;
    for (size_t i = 0; i < 2 * n; i++) {
        kv[k++] = ids[i];
    }
    kv[k++] = "xapid-owned";
    kv[k++] = "true";
    if (spec) {
        kv[k++] = "xapid-spec";
        kv[k++] = spec;
    }
    kv[k] = NULL;
    json_object *m = xa_ovsdb_map(kv);
    free(kv);
    return m;
}

static struct xa_error *
ovs_ensure_bridge(const struct xa_net_bridge *b)
{
    char *uuid = NULL;
    struct xa_error *err = find_by_name("Bridge", b->name, &uuid, NULL);
    if (err) {
        return err;
    }
    const char *oc[] = {"hwaddr", b->hwaddr, NULL};
    json_object *ops = json_object_new_array();
    json_object *row = json_object_new_object();
    json_object_object_add(row, "external_ids", owned_map(b->ids, NULL));
    json_object_object_add(row, "other_config",
                           xa_ovsdb_map(b->hwaddr ? oc : oc + 2));
    json_object_object_add(row, "fail_mode",
                           json_object_new_string("standalone"));
    if (*datapath_type) {
        json_object_object_add(row, "datapath_type",
                               json_object_new_string(datapath_type));
    }
    if (uuid) {
        json_object *op =
            op_new("update", "Bridge", xa_ovsdb_where_eq("name", b->name));
        json_object_object_add(op, "row", row);
        json_object_array_add(ops, op);
    } else {
        /* A bridge always has a port and internal interface of its own
         * name: that is the device the host's IP address goes on. */
        json_object *irow = json_object_new_object();
        json_object_object_add(irow, "name", json_object_new_string(b->name));
        json_object_object_add(irow, "type",
                               json_object_new_string("internal"));
        json_object *iop = op_new("insert", "Interface", NULL);
        json_object_object_add(iop, "row", irow);
        json_object_object_add(iop, "uuid-name",
                               json_object_new_string("iface"));
        json_object_array_add(ops, iop);
        json_object *prow = json_object_new_object();
        json_object_object_add(prow, "name", json_object_new_string(b->name));
        json_object_object_add(prow, "interfaces",
                               uuid_set("named-uuid", "iface"));
        json_object *pop = op_new("insert", "Port", NULL);
        json_object_object_add(pop, "row", prow);
        json_object_object_add(pop, "uuid-name",
                               json_object_new_string("port"));
        json_object_array_add(ops, pop);
        json_object_object_add(row, "name", json_object_new_string(b->name));
        json_object_object_add(row, "ports", uuid_set("named-uuid", "port"));
        json_object *bop = op_new("insert", "Bridge", NULL);
        json_object_object_add(bop, "row", row);
        json_object_object_add(bop, "uuid-name",
                               json_object_new_string("bridge"));
        json_object_array_add(ops, bop);
        json_object *mop =
            op_new("mutate", "Open_vSwitch", json_object_new_array());
        json_object_object_add(
            mop, "mutations",
            mutation("bridges", "insert", uuid_set("named-uuid", "bridge")));
        json_object_array_add(ops, mop);
    }
    if (b->mtu > 0) {
        json_object *mrow = json_object_new_object();
        json_object_object_add(mrow, "mtu_request",
                               json_object_new_int64(b->mtu));
        json_object *op =
            op_new("update", "Interface", xa_ovsdb_where_eq("name", b->name));
        json_object_object_add(op, "row", mrow);
        json_object_array_add(ops, op);
    }
    free(uuid);
    return xa_ovsdb_transact(db, ops, NULL);
}

static struct xa_error *
ovs_remove_bridge(const char *name)
{
    char *uuid = NULL;
    struct xa_error *err = find_by_name("Bridge", name, &uuid, NULL);
    if (err || !uuid) {
        return err;
    }
    json_object *ops = json_object_new_array();
    json_object *op = op_new("mutate", "Open_vSwitch", json_object_new_array());
    json_object_object_add(
        op, "mutations", mutation("bridges", "delete", uuid_set("uuid", uuid)));
    json_object_array_add(ops, op);
    free(uuid);
    err = xa_ovsdb_transact(db, ops, NULL);
    if (!err) {
        sock_forget(name);
    }
    return err;
}

/* Removes port 'uuid' from whichever bridge holds it (the Port row and
 * its interfaces then go with it: they are not root rows). */
static json_object *
op_unlink_port(const char *uuid)
{
    json_object *cond = json_object_new_array();
    json_object_array_add(cond, json_object_new_string("ports"));
    json_object_array_add(cond, json_object_new_string("includes"));
    json_object_array_add(cond, uuid_set("uuid", uuid));
    json_object *where = json_object_new_array();
    json_object_array_add(where, cond);
    json_object *op = op_new("mutate", "Bridge", where);
    json_object_object_add(op, "mutations",
                           mutation("ports", "delete", uuid_set("uuid", uuid)));
    return op;
}

static struct xa_error *
ovs_put_port(const struct xa_net_port *p)
{
    char *uuid = NULL;
    json_object *ids = NULL;
    struct xa_error *err = find_by_name("Port", p->name, &uuid, &ids);
    if (err) {
        return err;
    }
    const char *old_spec = xa_ovsdb_map_get(ids, "xapid-spec");
    if (uuid && p->spec && old_spec && strcmp(old_spec, p->spec) == 0) {
        free(uuid);
        json_object_put(ids);
        return NULL;
    }
    json_object_put(ids);
    json_object *ops = json_object_new_array();
    /* Fails the whole transaction when the bridge is missing, rather
     * than inserting a port nothing refers to. */
    json_object *wait =
        op_new("wait", "Bridge", xa_ovsdb_where_eq("name", p->bridge));
    json_object *wrow = json_object_new_object();
    json_object_object_add(wrow, "name", json_object_new_string(p->bridge));
    json_object *wrows = json_object_new_array();
    json_object_array_add(wrows, wrow);
    json_object *wcols = json_object_new_array();
    json_object_array_add(wcols, json_object_new_string("name"));
    json_object_object_add(wait, "columns", wcols);
    json_object_object_add(wait, "until", json_object_new_string("=="));
    json_object_object_add(wait, "rows", wrows);
    json_object_object_add(wait, "timeout", json_object_new_int(0));
    json_object_array_add(ops, wait);
    if (uuid) {
        json_object_array_add(ops, op_unlink_port(uuid));
    }
    json_object *ifset = json_object_new_array();
    for (size_t i = 0; i < p->n_ifaces; i++) {
        const struct xa_net_iface *f = &p->ifaces[i];
        char nm[32];
        snprintf(nm, sizeof nm, "if%zu", i);
        json_object *row = json_object_new_object();
        json_object_object_add(row, "name", json_object_new_string(f->name));
        json_object_object_add(row, "type", json_object_new_string(f->type));
        json_object_object_add(row, "external_ids", owned_map(f->ids, NULL));
        if (f->mtu > 0) {
            json_object_object_add(row, "mtu_request",
                                   json_object_new_int64(f->mtu));
        }
        if (f->mac && *f->mac) {
            json_object_object_add(row, "mac", json_object_new_string(f->mac));
        }
        if (f->options) {
            json_object_object_add(row, "options", xa_ovsdb_map(f->options));
        }
        json_object *op = op_new("insert", "Interface", NULL);
        json_object_object_add(op, "row", row);
        json_object_object_add(op, "uuid-name", json_object_new_string(nm));
        json_object_array_add(ops, op);
        json_object_array_add(ifset, xa_ovsdb_uuid("named-uuid", nm));
    }
    json_object *ifs = json_object_new_array();
    json_object_array_add(ifs, json_object_new_string("set"));
    json_object_array_add(ifs, ifset);
    json_object *row = json_object_new_object();
    json_object_object_add(row, "name", json_object_new_string(p->name));
    json_object_object_add(row, "interfaces", ifs);
    json_object_object_add(row, "external_ids", owned_map(p->ids, p->spec));
    if (p->tag >= 0) {
        json_object_object_add(row, "tag", json_object_new_int64(p->tag));
    }
    if (p->fake_bridge) {
        json_object_object_add(row, "fake_bridge", json_object_new_boolean(1));
    }
    if (p->bond_mode) {
        json_object_object_add(row, "bond_mode",
                               json_object_new_string(p->bond_mode));
    }
    if (p->lacp) {
        json_object_object_add(row, "lacp", json_object_new_string("active"));
    }
    json_object_object_add(row, "other_config", xa_ovsdb_map(p->other_config));
    json_object *pop = op_new("insert", "Port", NULL);
    json_object_object_add(pop, "row", row);
    json_object_object_add(pop, "uuid-name", json_object_new_string("port"));
    json_object_array_add(ops, pop);
    json_object *mop =
        op_new("mutate", "Bridge", xa_ovsdb_where_eq("name", p->bridge));
    json_object_object_add(
        mop, "mutations",
        mutation("ports", "insert", uuid_set("named-uuid", "port")));
    json_object_array_add(ops, mop);
    free(uuid);
    return xa_ovsdb_transact(db, ops, NULL);
}

static struct xa_error *
ovs_remove_port(const char *name)
{
    char *uuid = NULL;
    struct xa_error *err = find_by_name("Port", name, &uuid, NULL);
    if (err || !uuid) {
        return err;
    }
    json_object *ops = json_object_new_array();
    json_object_array_add(ops, op_unlink_port(uuid));
    free(uuid);
    return xa_ovsdb_transact(db, ops, NULL);
}

static void
push_name(char ***arr, size_t *n, const char *s)
{
    *arr = xa_realloc(*arr, (*n + 1) * sizeof **arr);
    (*arr)[(*n)++] = xa_strdup(s);
}

static struct xa_error *
ovs_list_owned(struct xa_net_owned *out)
{
    static const char *const cols[] = {"name", "external_ids", NULL};
    memset(out, 0, sizeof *out);
    json_object *ops = json_object_new_array();
    json_object_array_add(ops, op_select("Bridge", NULL, cols));
    json_object_array_add(ops, op_select("Port", NULL, cols));
    json_object *res = NULL;
    struct xa_error *err = xa_ovsdb_transact(db, ops, &res);
    if (err) {
        return err;
    }
    for (size_t t = 0; t < 2; t++) {
        json_object *rows = rows_of(res, t);
        size_t n = rows ? json_object_array_length(rows) : 0;
        for (size_t i = 0; i < n; i++) {
            json_object *row = json_object_array_get_idx(rows, i);
            json_object *nm = NULL, *ids = NULL;
            json_object_object_get_ex(row, "name", &nm);
            json_object_object_get_ex(row, "external_ids", &ids);
            const char *own = xa_ovsdb_map_get(ids, "xapid-owned");
            if (!nm || !own || strcmp(own, "true") != 0) {
                continue;
            }
            if (t == 0) {
                push_name(&out->bridges, &out->n_bridges,
                          json_object_get_string(nm));
            } else {
                const char *spec = xa_ovsdb_map_get(ids, "xapid-spec");
                size_t k = out->n_ports;
                push_name(&out->ports, &out->n_ports,
                          json_object_get_string(nm));
                out->port_specs = xa_realloc(out->port_specs,
                                             (k + 1) * sizeof *out->port_specs);
                out->port_specs[k] = xa_strdup(spec ? spec : "");
            }
        }
    }
    json_object_put(res);
    return NULL;
}

/* The OpenFlow port number ovs-vswitchd gave interface 'name', waiting a
 * little for it to be assigned (the port may have just been added). */
static struct xa_error *
ofport_of(const char *name, uint32_t *ofport)
{
    json_object *ops = json_object_new_array();
    json_object *wait =
        op_new("wait", "Interface", xa_ovsdb_where_eq("name", name));
    json_object *wcols = json_object_new_array();
    json_object_array_add(wcols, json_object_new_string("ofport"));
    json_object_object_add(wait, "columns", wcols);
    /* Until the column is no longer the empty set. */
    json_object *unset = json_object_new_array();
    json_object_array_add(unset, json_object_new_string("set"));
    json_object_array_add(unset, json_object_new_array());
    json_object *wrow = json_object_new_object();
    json_object_object_add(wrow, "ofport", unset);
    json_object *wrows = json_object_new_array();
    json_object_array_add(wrows, wrow);
    json_object_object_add(wait, "until", json_object_new_string("!="));
    json_object_object_add(wait, "rows", wrows);
    json_object_object_add(wait, "timeout",
                           json_object_new_int(OFPORT_WAIT_MS));
    json_object_array_add(ops, wait);
    static const char *const cols[] = {"ofport", NULL};
    json_object_array_add(
        ops, op_select("Interface", xa_ovsdb_where_eq("name", name), cols));
    json_object *res = NULL;
    struct xa_error *err = xa_ovsdb_transact(db, ops, &res);
    if (err) {
        return err;
    }
    json_object *rows = rows_of(res, 1), *v = NULL;
    int64_t n = -1;
    if (rows && json_object_array_length(rows) > 0 &&
        json_object_object_get_ex(json_object_array_get_idx(rows, 0), "ofport",
                                  &v) &&
        json_object_is_type(v, json_type_int)) {
        n = json_object_get_int64(v);
    }
    json_object_put(res);
    if (n <= 0 || n >= 0xff00) {
        return xa_error_internal("Open vSwitch gave interface %s no "
                                 "OpenFlow port",
                                 name);
    }
    *ofport = (uint32_t)n;
    return NULL;
}

static struct xa_error *
ovs_set_rules(const struct xa_net_rules *r)
{
    /* Before anything is read from the switch: see sock_watch(). */
    sock_watch(r->bridge);
    uint32_t ofport = 0;
    bool any =
        strcmp(r->mode, "locked") == 0 || strcmp(r->mode, "disabled") == 0;
    struct xa_error *err = any ? ofport_of(r->port, &ofport) : NULL;
    struct xa_of_flow *flows = NULL;
    size_t n = 0;
    if (!err) {
        err = xa_of_vif_flows(r->mode, ofport, r->mac, r->ipv4, r->ipv6, &flows,
                              &n);
    }
    if (!err) {
        char *sock = mgmt_socket(r->bridge);
        err = xa_of_replace(sock, xa_of_cookie(r->vif_uuid), flows, n);
        free(sock);
    }
    free(flows);
    return err;
}

static struct xa_error *
ovs_prune_rules(const char *bridge, const char *const *keep)
{
    size_t n = 0;
    while (keep && keep[n]) {
        n++;
    }
    uint64_t *cookies = xa_malloc((n + 1) * sizeof *cookies);
    for (size_t i = 0; i < n; i++) {
        cookies[i] = xa_of_cookie(keep[i]);
    }
    char *sock = mgmt_socket(bridge);
    struct xa_error *err = xa_of_prune(sock, cookies, n);
    free(sock);
    free(cookies);
    return err;
}

const struct xa_net_driver xa_net_ovs_driver = {
    .name = "ovs",
    .init = ovs_init,
    .fini = ovs_fini,
    .ping = ovs_ping,
    .epoch = ovs_epoch,
    .ensure_bridge = ovs_ensure_bridge,
    .remove_bridge = ovs_remove_bridge,
    .put_port = ovs_put_port,
    .remove_port = ovs_remove_port,
    .list_owned = ovs_list_owned,
    .set_rules = ovs_set_rules,
    .prune_rules = ovs_prune_rules,
};
