/* bootstrap.h - the rows a pool has before anyone has called the API.
 *
 * A freshly installed xapi host already shows a pool (of one), its own
 * host with metrics and CPUs, its control domain, the RBAC roles and the
 * default VM templates; clients (XenCenter, Xen Orchestra, xe vm-install)
 * take all of them for granted.  xa_bootstrap() gives xapid the same
 * starting point: at the first start it creates them in one write
 * transaction, at every later start it refreshes the facts about this host
 * that change across reboots. */
#ifndef XA_BOOTSTRAP_H
#define XA_BOOTSTRAP_H

#include <stddef.h>

#include "error.h"
#include "value.h"

struct xa_txn;

struct xa_bootstrap_opts {
    /* Address the API listens on; NULL, "" or 0.0.0.0 mean "all", and the
     * host's address is then its first non-loopback IPv4 address. */
    const char *bind_address;
    const char *hypervisor; /* "sim", "kvm" or "xen"; NULL means "sim" */
    int http_port;
    int https_port;
    /* Directory holding "host-uuid", which tells a restarted xapid which
     * host row of the database is itself (xapi's inventory does the same).
     * NULL keeps nothing on disk: for unit tests on ":memory:". */
    const char *state_dir;
};

/* Call after xa_db_open() at every start.  On success '*ret_host_ref'
 * receives this host's ref (caller frees).  Fails when the database has a
 * pool but this host cannot be told apart in it, or when the state
 * directory cannot be written. */
struct xa_error *xa_bootstrap(const struct xa_bootstrap_opts *o,
                              char **ret_host_ref) XA_WARN_UNUSED;

/* The fixed uuids xapi gives its static roles (role.get_by_uuid answers
 * them on every xapi host, and clients hard-code the pool-admin one). */
extern const char *const xa_bootstrap_role_names[6];
extern const char *const xa_bootstrap_role_uuids[6];

/* The default templates created at the first start (templates.c). */
size_t xa_bootstrap_n_templates(void);
const char *xa_bootstrap_template_name(size_t i);

/* --- shared by bootstrap.c and templates.c ----------------------------- */

/* One (field name, value) pair of a row under construction: each row is
 * written as a small table of these, and fields a table leaves out take
 * their schema defaults in xa_db_create(). */
struct xa_bootstrap_field {
    const char *name;
    struct xa_value *val; /* owned until handed to the row */
};

/* Creates row 'ref' of class 'cls_name' from 'fields' (every value taken,
 * also on failure).  A name that is not a field of the class is an
 * INTERNAL_ERROR rather than a silently dropped member. */
struct xa_error *xa_bootstrap_create_row(struct xa_txn *t, const char *cls_name,
                                         const char *ref,
                                         struct xa_bootstrap_field *fields,
                                         size_t n) XA_WARN_UNUSED;
/* One key/value pair of a string map; tables end with {NULL, NULL}. */
struct xa_bootstrap_kv {
    const char *key;
    const char *val;
};

/* A string map from a {NULL, NULL}-terminated table. */
struct xa_value *xa_bootstrap_map(const struct xa_bootstrap_kv *kv);
/* A string set from a NULL-terminated list. */
struct xa_value *xa_bootstrap_str_set(const char *const *items);
/* Creates every default template, each with its VM_metrics row. */
struct xa_error *xa_bootstrap_create_templates(struct xa_txn *t) XA_WARN_UNUSED;

#endif
