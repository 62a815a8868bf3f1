/* bootstrap.c - first-start creation and every-start refresh of the pool,
 * this host and the rows that come with them (see bootstrap.h). */
#include "bootstrap.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db/db.h"
#include "hostinfo.h"
#include "log.h"
#include "util.h"

#ifndef XA_VERSION
#    define XA_VERSION "0.1.0"
#endif

#define LOG_MODULE "bootstrap"
#define NULL_REF   "OpaqueRef:NULL"
#define MIB        ((int64_t)1 << 20)
#define GIB        ((int64_t)1 << 30)

/* XenAPI version xapid speaks, and the database schema version of the
 * xapi it mirrors (clients compare both). */
#define API_MAJOR      2
#define API_MINOR      23
#define DB_SCHEMA      "5.780"
#define HOST_UUID_FILE "host-uuid"

/* xapi's static roles: pool-admin's uuid is a constant of xapi, the other
 * roles' are the MD5 of their names laid out as a uuid (gen_rbac.ml), so
 * every xapi host has the same ones. */
const char *const xa_bootstrap_role_names[6] = {
    "pool-admin", "pool-operator", "vm-power-admin",
    "vm-admin",   "vm-operator",   "read-only",
};
const char *const xa_bootstrap_role_uuids[6] = {
    "0165f154-ba3e-034e-6b27-5d271af109ba",
    "b9ce9791-0604-50cd-0649-09b3284c7dfd",
    "7955168d-7bec-10ed-105f-c6a7e6e63249",
    "aaa00ab5-7340-bfbc-0d1b-7cf342639a6e",
    "fb8d4ff9-310c-a959-0613-54101535d3d5",
    "7233b8e3-eacb-d7da-2c95-f2e581cdbf4e",
};
static const char *const role_descriptions[6] = {
    "Everything, including users, roles and the control domain.",
    "Everything about the pool except users, roles and authentication.",
    "VM administration plus placement and migration of VMs between hosts.",
    "Create, change and destroy VMs and their disks and network interfaces.",
    "Use existing VMs: start, stop, and reach their consoles.",
    "Look at everything, change nothing.",
};

/* --- row building --------------------------------------------------------
 */

static void
unref_fields(struct xa_bootstrap_field *fields, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++) {
        xa_value_unref(fields[i].val);
        fields[i].val = NULL;
    }
}

struct xa_error *
xa_bootstrap_create_row(struct xa_txn *t, const char *cls_name, const char *ref,
                        struct xa_bootstrap_field *fields, size_t n)
{
    const struct xa_class_desc *cls = xa_schema_class(cls_name);
    struct xa_value *rec;

    if (cls == NULL) {
        unref_fields(fields, 0, n);
        return xa_error_internal("bootstrap: no class %s", cls_name);
    }
    rec = xa_struct();
    for (size_t i = 0; i < n; i++) {
        /* A typo in a table would otherwise become a default value that
         * nobody notices until a client trips over it. */
        if (xa_schema_field_index(cls, fields[i].name) < 0) {
            struct xa_error *err = xa_error_internal(
                "bootstrap: %s has no field %s", cls_name, fields[i].name);

            unref_fields(fields, i, n);
            xa_value_unref(rec);
            return err;
        }
        xa_struct_add(rec, fields[i].name, fields[i].val);
        fields[i].val = NULL;
    }
    return xa_db_create(t, cls, ref, rec);
}

struct xa_value *
xa_bootstrap_map(const struct xa_bootstrap_kv *kv)
{
    struct xa_value *m = xa_struct();

    for (; kv != NULL && kv->key != NULL; kv++) {
        xa_struct_set(m, kv->key, xa_string(kv->val != NULL ? kv->val : ""));
    }
    return m;
}

struct xa_value *
xa_bootstrap_str_set(const char *const *items)
{
    struct xa_value *a = xa_array();

    for (; items != NULL && *items != NULL; items++) {
        xa_array_append(a, xa_string(*items));
    }
    return a;
}

/* Sets one field by name, so callers need not carry field indexes. */
static struct xa_error *
set_field(struct xa_txn *t, const char *cls_name, const char *ref,
          const char *field, struct xa_value *v)
{
    const struct xa_class_desc *cls = xa_schema_class(cls_name);
    int idx = cls != NULL ? xa_schema_field_index(cls, field) : -1;

    if (idx < 0) {
        xa_value_unref(v);
        return xa_error_internal("bootstrap: no field %s.%s", cls_name, field);
    }
    return xa_db_set_field(t, cls, ref, idx, v);
}

/* A borrowed view of a field, or NULL when the row or field is missing. */
static const struct xa_value *
peek_field(struct xa_txn *t, const char *cls_name, const char *ref,
           const char *field)
{
    const struct xa_class_desc *cls = xa_schema_class(cls_name);
    int idx = cls != NULL ? xa_schema_field_index(cls, field) : -1;

    return idx < 0 ? NULL : xa_db_peek_field(t, cls, ref, idx);
}

/* --- facts about this host -----------------------------------------------
 */

/* The "xen" version clients show next to the product version.  Only the
 * xen backend has a real one; the others answer a plausible Xen release
 * tagged with the backend, because some clients parse the value. */
static char *
hypervisor_version(const char *hv)
{
    if (strcmp(hv, "xen") == 0) {
        FILE *f;
        unsigned major = 0, minor = 0;
        char extra[64] = "";
        bool ok = true;

        f = fopen("/sys/hypervisor/version/major", "r");
        ok = ok && f != NULL && fscanf(f, "%u", &major) == 1;
        if (f != NULL) {
            fclose(f);
        }
        f = fopen("/sys/hypervisor/version/minor", "r");
        ok = ok && f != NULL && fscanf(f, "%u", &minor) == 1;
        if (f != NULL) {
            fclose(f);
        }
        f = fopen("/sys/hypervisor/version/extra", "r");
        if (f != NULL) {
            if (fscanf(f, "%63s", extra) != 1) {
                extra[0] = '\0';
            }
            fclose(f);
        }
        if (ok) {
            return xa_asprintf("%u.%u%s", major, minor, extra);
        }
        return xa_strdup("4.17.0");
    }
    return xa_asprintf("4.17.0-%s", hv);
}

static struct xa_value *
software_version(const struct xa_hostinfo *hi, const char *hv)
{
    char *xen = hypervisor_version(hv);
    char short_version[32];
    const char *dot;
    struct xa_value *m;

    /* "0.1.0" -> "0.1", what xapi calls product_version_text. */
    dot = strchr(XA_VERSION, '.');
    dot = dot != NULL ? strchr(dot + 1, '.') : NULL;
    snprintf(short_version, sizeof short_version, "%.*s",
             dot != NULL ? (int)(dot - XA_VERSION) : (int)strlen(XA_VERSION),
             XA_VERSION);

    const struct xa_bootstrap_kv kv[] = {
        {"product_version", XA_VERSION},
        {"product_version_text", short_version},
        {"product_version_text_short", short_version},
        {"platform_name", "xapid"},
        {"platform_version", XA_VERSION},
        {"product_brand", "xapid"},
        {"build_number", "0"},
        {"hostname", hi->hostname},
        {"xapi", "2.23"},
        {"xapi_build", XA_VERSION},
        {"xen", xen},
        {"linux", hi->kernel_release},
        {"network_backend", "openvswitch"},
        {"db_schema", DB_SCHEMA},
        {NULL, NULL},
    };
    m = xa_bootstrap_map(kv);
    free(xen);
    return m;
}

static struct xa_value *
host_cpu_info(const struct xa_hostinfo *hi)
{
    char count[16], sockets[16], speed[32], family[24], model[24];

    snprintf(count, sizeof count, "%d", hi->cpu_count);
    snprintf(sockets, sizeof sockets, "%d", hi->socket_count);
    snprintf(speed, sizeof speed, "%" PRId64 ".000", hi->cpu_mhz);
    snprintf(family, sizeof family, "%" PRId64, hi->cpu_family);
    snprintf(model, sizeof model, "%" PRId64, hi->cpu_model);

    /* xapi's keys; the features_* variants are what pool joins and VM
     * migration compare, and with one featureset they are all equal. */
    const struct xa_bootstrap_kv kv[] = {
        {"cpu_count", count},
        {"socket_count", sockets},
        {"vendor", hi->cpu_vendor},
        {"speed", speed},
        {"modelname", hi->cpu_model_name},
        {"family", family},
        {"model", model},
        {"stepping", hi->cpu_stepping},
        {"flags", hi->cpu_flags},
        {"features", hi->cpu_features},
        {"features_pv", hi->cpu_features},
        {"features_hvm", hi->cpu_features},
        {"features_pv_host", hi->cpu_features},
        {"features_hvm_host", hi->cpu_features},
        {NULL, NULL},
    };
    return xa_bootstrap_map(kv);
}

static struct xa_value *
pool_cpu_info(const struct xa_hostinfo *hi)
{
    char count[16], sockets[16];

    snprintf(count, sizeof count, "%d", hi->cpu_count);
    snprintf(sockets, sizeof sockets, "%d", hi->socket_count);
    const struct xa_bootstrap_kv kv[] = {
        {"cpu_count", count},
        {"socket_count", sockets},
        {"vendor", hi->cpu_vendor},
        {"features_pv", hi->cpu_features},
        {"features_hvm", hi->cpu_features},
        {"features_pv_host", hi->cpu_features},
        {"features_hvm_host", hi->cpu_features},
        {NULL, NULL},
    };
    return xa_bootstrap_map(kv);
}

/* xapi writes these times as OCaml floats ("1700000000."). */
static struct xa_value *
epoch_text(int64_t t)
{
    return xa_string_take(xa_asprintf("%" PRId64 ".", t));
}

/* The control domain's memory: a base for the toolstack and kernel plus a
 * little per GiB of guests, bounded to [752 MiB, 8 GiB] as XenServer's
 * installer does, and never more than half of a small machine. */
static int64_t
dom0_memory(int64_t total)
{
    int64_t m = 752 * MIB + total / 20;

    if (m > 8 * GIB) {
        m = 8 * GIB;
    }
    if (total > 0 && m > total / 2) {
        m = total / 2;
    }
    return m / MIB * MIB;
}

/* --- the first start -----------------------------------------------------
 */

struct first_start_ctx {
    const struct xa_bootstrap_opts *o;
    const char *hv;
    const struct xa_hostinfo *hi;
    const char *host_uuid;
    char *pool_ref, *host_ref, *metrics_ref, *dom0_ref, *dom0_metrics_ref;
    char now[32], boot[32];
};

static struct xa_error *
create_pool(struct xa_txn *t, struct first_start_ctx *fs)
{
    struct xa_bootstrap_field f[] = {
        {"name_label", xa_string("")},
        {"name_description", xa_string("")},
        {"master", xa_string(fs->host_ref)},
        /* No SR exists yet; the storage layer sets these when it
         * introduces the local SR. */
        {"default_SR", xa_string(NULL_REF)},
        {"suspend_image_SR", xa_string(NULL_REF)},
        {"crash_dump_SR", xa_string(NULL_REF)},
        {"other_config", xa_struct()},
        {"metadata_VDIs", xa_array()},
        {"cpu_info", pool_cpu_info(fs->hi)},
    };
    return xa_bootstrap_create_row(t, "pool", fs->pool_ref, f,
                                   XA_ARRAY_SIZE(f));
}

static struct xa_error *
create_host(struct xa_txn *t, struct first_start_ctx *fs)
{
    const struct xa_hostinfo *hi = fs->hi;
    /* What Xen reports on x86-64 hardware with HVM support; clients look
     * for "hvm" here before offering HVM templates. */
    static const char *const caps[] = {"xen-3.0-x86_64", "hvm-3.0-x86_32",
                                       "hvm-3.0-x86_32p", "hvm-3.0-x86_64",
                                       NULL};
    static const char *const bootloaders[] = {"pygrub", "eliloader", NULL};
    static const char *const editions[] = {"xapid", NULL};
    struct xa_value *other = xa_struct();
    /* Xen's own bookkeeping per host: about 1% of RAM. */
    int64_t overhead = (hi->memory_total / 100 + MIB - 1) / MIB * MIB;

    xa_struct_add(other, "agent_start_time", epoch_text((int64_t)xa_now()));
    xa_struct_add(other, "boot_time", epoch_text(hi->boot_time));

    struct xa_bootstrap_field f[] = {
        {"uuid", xa_string(fs->host_uuid)},
        {"name_label", xa_string(hi->hostname)},
        {"name_description", xa_string("Default install")},
        {"hostname", xa_string(hi->hostname)},
        {"address", xa_string(hi->address)},
        {"memory_overhead", xa_int(overhead)},
        {"API_version_major", xa_int(API_MAJOR)},
        {"API_version_minor", xa_int(API_MINOR)},
        {"API_version_vendor", xa_string("XenSource")},
        {"API_version_vendor_implementation", xa_struct()},
        {"enabled", xa_bool(true)},
        {"software_version", software_version(hi, fs->hv)},
        {"other_config", other},
        {"capabilities", xa_bootstrap_str_set(caps)},
        {"cpu_configuration", xa_struct()},
        {"cpu_info", host_cpu_info(hi)},
        {"sched_policy", xa_string("credit")},
        {"supported_bootloaders", xa_bootstrap_str_set(bootloaders)},
        {"logging", xa_struct()},
        {"suspend_image_sr", xa_string(NULL_REF)},
        {"crash_dump_sr", xa_string(NULL_REF)},
        {"metrics", xa_string(fs->metrics_ref)},
        {"control_domain", xa_string(NULL_REF)},
        {"license_params", xa_struct()},
        {"edition", xa_string("xapid")},
        {"editions", xa_bootstrap_str_set(editions)},
        {"external_auth_type", xa_string("")},
        {"external_auth_service_name", xa_string("")},
        {"external_auth_configuration", xa_struct()},
        /* Legacy TLS (SSLv3/TLS 1.0) is never offered. */
        {"ssl_legacy", xa_bool(false)},
    };
    return xa_bootstrap_create_row(t, "host", fs->host_ref, f,
                                   XA_ARRAY_SIZE(f));
}

static struct xa_error *
create_host_metrics(struct xa_txn *t, struct first_start_ctx *fs)
{
    struct xa_bootstrap_field f[] = {
        {"memory_total", xa_int(fs->hi->memory_total)},
        {"memory_free", xa_int(fs->hi->memory_free)},
        {"live", xa_bool(true)},
        {"last_updated", xa_datetime(fs->now)},
        {"other_config", xa_struct()},
    };
    return xa_bootstrap_create_row(t, "host_metrics", fs->metrics_ref, f,
                                   XA_ARRAY_SIZE(f));
}

static struct xa_error *
create_host_cpus(struct xa_txn *t, struct first_start_ctx *fs)
{
    const struct xa_hostinfo *hi = fs->hi;

    for (int i = 0; i < hi->cpu_count; i++) {
        char *ref = xa_ref_new();
        struct xa_error *err;
        struct xa_bootstrap_field f[] = {
            {"host", xa_string(fs->host_ref)},
            {"number", xa_int(i)},
            {"vendor", xa_string(hi->cpu_vendor)},
            {"speed", xa_int(hi->cpu_mhz)},
            {"modelname", xa_string(hi->cpu_model_name)},
            {"family", xa_int(hi->cpu_family)},
            {"model", xa_int(hi->cpu_model)},
            {"stepping", xa_string(hi->cpu_stepping)},
            {"flags", xa_string(hi->cpu_flags)},
            {"features", xa_string(hi->cpu_features)},
            {"utilisation", xa_double(0.0)},
            {"other_config", xa_struct()},
        };

        err = xa_bootstrap_create_row(t, "host_cpu", ref, f, XA_ARRAY_SIZE(f));
        free(ref);
        if (err != NULL) {
            return err;
        }
    }
    return NULL;
}

static struct xa_error *
create_dom0(struct xa_txn *t, struct first_start_ctx *fs)
{
    const struct xa_hostinfo *hi = fs->hi;
    int64_t mem = dom0_memory(hi->memory_total);
    char *name = xa_asprintf("Control domain on host: %s", hi->hostname);
    struct xa_value *other = xa_struct();
    struct xa_error *err;

    /* dom0 runs the storage drivers and is not a guest: xapi marks it so,
     * and clients filter on both keys. */
    xa_struct_add(other, "storage_driver_domain", xa_string(fs->dom0_ref));
    xa_struct_add(other, "is_system_domain", xa_string("true"));

    struct xa_bootstrap_field m[] = {
        {"memory_actual", xa_int(mem)},
        {"VCPUs_number", xa_int(hi->cpu_count)},
        {"VCPUs_CPU", xa_struct()},
        {"VCPUs_params", xa_struct()},
        {"VCPUs_flags", xa_struct()},
        {"state", xa_array()},
        {"start_time", xa_datetime(fs->boot)},
        {"install_time", xa_datetime(fs->boot)},
        {"last_updated", xa_datetime(fs->now)},
        {"current_domain_type", xa_string("pv")},
    };
    err = xa_bootstrap_create_row(t, "VM_metrics", fs->dom0_metrics_ref, m,
                                  XA_ARRAY_SIZE(m));
    if (err != NULL) {
        xa_value_unref(other);
        free(name);
        return err;
    }

    /* A fixed-size dom0: all four limits and the target are equal, which
     * is xapi's default memory policy for the control domain. */
    struct xa_bootstrap_field f[] = {
        {"name_label", xa_string(name)},
        {"name_description", xa_string("The domain that owns the physical "
                                       "devices and runs the toolstack")},
        {"power_state", xa_string("Running")},
        {"user_version", xa_int(1)},
        {"is_a_template", xa_bool(false)},
        {"is_control_domain", xa_bool(true)},
        {"resident_on", xa_string(fs->host_ref)},
        {"affinity", xa_string(fs->host_ref)},
        {"memory_static_min", xa_int(mem)},
        {"memory_dynamic_min", xa_int(mem)},
        {"memory_dynamic_max", xa_int(mem)},
        {"memory_static_max", xa_int(mem)},
        {"memory_target", xa_int(mem)},
        {"VCPUs_params", xa_struct()},
        {"VCPUs_max", xa_int(hi->cpu_count)},
        {"VCPUs_at_startup", xa_int(hi->cpu_count)},
        {"actions_after_shutdown", xa_string("destroy")},
        {"actions_after_reboot", xa_string("destroy")},
        {"actions_after_crash", xa_string("destroy")},
        {"PV_bootloader", xa_string("")},
        {"PV_kernel", xa_string("")},
        {"PV_ramdisk", xa_string("")},
        {"PV_args", xa_string("")},
        {"PV_bootloader_args", xa_string("")},
        {"PV_legacy_args", xa_string("")},
        {"HVM_boot_policy", xa_string("")},
        {"HVM_boot_params", xa_struct()},
        {"platform", xa_struct()},
        {"PCI_bus", xa_string("")},
        {"other_config", other},
        {"domid", xa_int(0)},
        {"domarch", xa_string("x64")},
        {"metrics", xa_string(fs->dom0_metrics_ref)},
        {"guest_metrics", xa_string(NULL_REF)},
        {"recommendations", xa_string("")},
        {"domain_type", xa_string("pv")},
    };
    err = xa_bootstrap_create_row(t, "VM", fs->dom0_ref, f, XA_ARRAY_SIZE(f));
    free(name);
    return err;
}

static struct xa_error *
create_roles(struct xa_txn *t)
{
    for (size_t i = 0; i < XA_ARRAY_SIZE(xa_bootstrap_role_names); i++) {
        /* xapi's role refs are "OpaqueRef:" + the role's uuid. */
        char *ref = xa_asprintf("OpaqueRef:%s", xa_bootstrap_role_uuids[i]);
        struct xa_error *err;
        struct xa_bootstrap_field f[] = {
            {"uuid", xa_string(xa_bootstrap_role_uuids[i])},
            {"name_label", xa_string(xa_bootstrap_role_names[i])},
            {"name_description", xa_string(role_descriptions[i])},
            {"subroles", xa_array()},
            {"is_internal", xa_bool(false)},
        };

        err = xa_bootstrap_create_row(t, "role", ref, f, XA_ARRAY_SIZE(f));
        free(ref);
        if (err != NULL) {
            return err;
        }
    }
    return NULL;
}

static struct xa_error *
first_start(struct xa_txn *t, struct first_start_ctx *fs)
{
    struct xa_error *err;

    /* Rows are created after the rows they point at, and the one cycle
     * (host.control_domain <-> dom0's resident_on) is closed at the end,
     * as xapi does, so no row ever names a row that does not exist yet. */
    if ((err = create_host_metrics(t, fs)) != NULL ||
        (err = create_host(t, fs)) != NULL ||
        (err = create_pool(t, fs)) != NULL ||
        (err = create_host_cpus(t, fs)) != NULL ||
        (err = create_dom0(t, fs)) != NULL ||
        (err = set_field(t, "host", fs->host_ref, "control_domain",
                         xa_string(fs->dom0_ref))) != NULL ||
        (err = create_roles(t)) != NULL ||
        (err = xa_bootstrap_create_templates(t)) != NULL) {
        return err;
    }
    return NULL;
}

/* --- later starts --------------------------------------------------------
 */

/* Refreshes what a reboot or a new network may have changed: the
 * address, names, versions, memory and liveness.  User settings (a
 * renamed host, other_config keys) are kept. */
static struct xa_error *
refresh(struct xa_txn *t, const char *host_ref, const struct xa_hostinfo *hi,
        const char *hv)
{
    const struct xa_value *v;
    struct xa_value *other;
    const char *old_hostname;
    char now[32];
    struct xa_error *err;

    xa_datetime_now(now);
    v = peek_field(t, "host", host_ref, "hostname");
    old_hostname = xa_value_str(v);
    /* A name_label still equal to the old hostname was never chosen by
     * anyone, so it follows the machine's name (as dom0's does). */
    v = peek_field(t, "host", host_ref, "name_label");
    if (old_hostname != NULL && xa_value_str(v) != NULL &&
        strcmp(xa_value_str(v), old_hostname) == 0 &&
        strcmp(old_hostname, hi->hostname) != 0) {
        err = set_field(t, "host", host_ref, "name_label",
                        xa_string(hi->hostname));
        if (err != NULL) {
            return err;
        }
    }
    if ((err = set_field(t, "host", host_ref, "hostname",
                         xa_string(hi->hostname))) != NULL ||
        (err = set_field(t, "host", host_ref, "address",
                         xa_string(hi->address))) != NULL ||
        (err = set_field(t, "host", host_ref, "software_version",
                         software_version(hi, hv))) != NULL) {
        return err;
    }

    v = peek_field(t, "host", host_ref, "other_config");
    other = v != NULL && v->kind == XA_STRUCT ? xa_value_copy(v) : xa_struct();
    xa_struct_set(other, "agent_start_time", epoch_text((int64_t)xa_now()));
    xa_struct_set(other, "boot_time", epoch_text(hi->boot_time));
    if ((err = set_field(t, "host", host_ref, "other_config", other)) != NULL) {
        return err;
    }

    v = peek_field(t, "host", host_ref, "metrics");
    if (xa_value_str(v) != NULL &&
        xa_db_exists(t, xa_schema_class("host_metrics"), xa_value_str(v))) {
        char *mref = xa_strdup(xa_value_str(v));

        if ((err = set_field(t, "host_metrics", mref, "memory_total",
                             xa_int(hi->memory_total))) == NULL &&
            (err = set_field(t, "host_metrics", mref, "memory_free",
                             xa_int(hi->memory_free))) == NULL &&
            (err = set_field(t, "host_metrics", mref, "live", xa_bool(true))) ==
                NULL) {
            err = set_field(t, "host_metrics", mref, "last_updated",
                            xa_datetime(now));
        }
        free(mref);
        if (err != NULL) {
            return err;
        }
    } else {
        /* Lost or never made: give the host a fresh one. */
        char *mref = xa_ref_new();
        struct xa_bootstrap_field f[] = {
            {"memory_total", xa_int(hi->memory_total)},
            {"memory_free", xa_int(hi->memory_free)},
            {"live", xa_bool(true)},
            {"last_updated", xa_datetime(now)},
        };

        err = xa_bootstrap_create_row(t, "host_metrics", mref, f,
                                      XA_ARRAY_SIZE(f));
        if (err == NULL) {
            err = set_field(t, "host", host_ref, "metrics", xa_string(mref));
        }
        free(mref);
        if (err != NULL) {
            return err;
        }
    }

    /* dom0 is running whenever xapid is; its default name follows the
     * hostname. */
    v = peek_field(t, "host", host_ref, "control_domain");
    if (xa_value_str(v) != NULL &&
        xa_db_exists(t, xa_schema_class("VM"), xa_value_str(v))) {
        char *dref = xa_strdup(xa_value_str(v));
        const char *label =
            xa_value_str(peek_field(t, "VM", dref, "name_label"));

        err = set_field(t, "VM", dref, "power_state", xa_string("Running"));
        if (err == NULL) {
            err = set_field(t, "VM", dref, "domid", xa_int(0));
        }
        if (err == NULL && label != NULL &&
            xa_str_has_prefix(label, "Control domain on host: ")) {
            err = set_field(t, "VM", dref, "name_label",
                            xa_string_take(xa_asprintf(
                                "Control domain on host: %s", hi->hostname)));
        }
        free(dref);
    }
    return err;
}

/* --- the host-uuid file --------------------------------------------------
 */

/* Reads state_dir/host-uuid.  False when absent or not a uuid. */
static bool
read_host_uuid(const char *state_dir, char out[37])
{
    char *path = xa_asprintf("%s/%s", state_dir, HOST_UUID_FILE);
    FILE *f = fopen(path, "r");
    char buf[64] = "";
    bool ok = false;

    if (f != NULL) {
        if (fgets(buf, sizeof buf, f) != NULL) {
            buf[strcspn(buf, " \t\r\n")] = '\0';
            ok = xa_uuid_valid(buf);
        }
        fclose(f);
        if (!ok) {
            xa_log_warn(LOG_MODULE, "%s does not hold a uuid; ignoring it",
                        path);
        }
    }
    free(path);
    if (ok) {
        memcpy(out, buf, 37);
    }
    return ok;
}

/* Writes state_dir/host-uuid so that a crash leaves the old file or the
 * new one, never a torn one: temp file, fsync, rename, fsync the dir. */
static struct xa_error *
write_host_uuid(const char *state_dir, const char *uuid)
{
    char *path = xa_asprintf("%s/%s", state_dir, HOST_UUID_FILE);
    char *tmp = xa_asprintf("%s.tmp", path);
    char *line = xa_asprintf("%s\n", uuid);
    struct xa_error *err = NULL;
    size_t len = strlen(line), done = 0;
    int fd, dfd;

    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        err = xa_error_internal("cannot create %s: %s", state_dir,
                                strerror(errno));
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        err = xa_error_internal("cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    while (done < len) {
        ssize_t n = write(fd, line + done, len - done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        done += (size_t)n;
    }
    if (done < len || fsync(fd) != 0) {
        err = xa_error_internal("cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        err = xa_error_internal("cannot install %s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        /* Best effort: some filesystems refuse fsync on directories. */
        if (fsync(dfd) != 0) {
            xa_log_debug(LOG_MODULE, "fsync %s: %s", state_dir,
                         strerror(errno));
        }
        close(dfd);
    }
out:
    free(line);
    free(tmp);
    free(path);
    return err;
}

/* Finds this host's row at a later start: by the uuid file, or, when the
 * file is gone and the pool has a single host, that host. */
static struct xa_error *
find_self(struct xa_txn *t, const char *state_dir, char **ret_ref,
          bool *rewrite_file)
{
    const struct xa_class_desc *host_cls = xa_schema_class("host");
    char uuid[37];

    *rewrite_file = false;
    if (state_dir != NULL && read_host_uuid(state_dir, uuid)) {
        *ret_ref = xa_db_ref_by_uuid(t, host_cls, uuid);
        if (*ret_ref == NULL) {
            return xa_error_internal("this host (uuid %s from %s/%s) is not "
                                     "in the database",
                                     uuid, state_dir, HOST_UUID_FILE);
        }
        return NULL;
    }
    if (xa_db_count(t, host_cls) != 1) {
        return xa_error_internal("the database holds %zu hosts and %s does "
                                 "not say which one is this host",
                                 xa_db_count(t, host_cls),
                                 state_dir != NULL ? state_dir
                                                   : "no state directory");
    }
    struct xa_value *all = xa_db_get_all(t, host_cls);

    if (all != NULL && all->kind == XA_ARRAY && all->u.arr.n == 1 &&
        xa_value_str(all->u.arr.items[0]) != NULL) {
        *ret_ref = xa_strdup(xa_value_str(all->u.arr.items[0]));
    }
    xa_value_unref(all);
    if (*ret_ref == NULL) {
        return xa_error_internal("bootstrap: cannot list the host table");
    }
    *rewrite_file = state_dir != NULL;
    return NULL;
}

/* --- entry point ---------------------------------------------------------
 */

struct xa_error *
xa_bootstrap(const struct xa_bootstrap_opts *o, char **ret_host_ref)
{
    const char *hv = o->hypervisor != NULL ? o->hypervisor : "sim";
    const struct xa_class_desc *pool_cls = xa_schema_class("pool");
    struct xa_hostinfo hi;
    struct xa_txn *t;
    struct xa_error *err = NULL;
    char *host_ref = NULL;
    char host_uuid[37] = "";
    bool write_file = false;

    *ret_host_ref = NULL;
    if (pool_cls == NULL) {
        return xa_error_internal("bootstrap: the schema has no pool class");
    }
    /* Ports are not part of any row yet: console locations (which carry
     * them) are made by the console code from the host's address. */
    XA_UNUSED(o->http_port);
    XA_UNUSED(o->https_port);

    xa_hostinfo_read(&hi, o->bind_address);
    t = xa_db_begin_write();

    if (xa_db_count(t, pool_cls) == 0) {
        struct first_start_ctx fs = {.o = o, .hv = hv, .hi = &hi};

        /* A uuid left by an earlier attempt that died before committing
         * is reused, so the file and the database cannot disagree. */
        if (o->state_dir == NULL || !read_host_uuid(o->state_dir, host_uuid)) {
            xa_uuid_generate(host_uuid);
            write_file = o->state_dir != NULL;
        }
        /* Written before the commit: afterwards the database could name a
         * host that no file on this machine claims. */
        if (write_file &&
            (err = write_host_uuid(o->state_dir, host_uuid)) != NULL) {
            xa_db_abort(t);
            goto out;
        }
        fs.host_uuid = host_uuid;
        fs.pool_ref = xa_ref_new();
        fs.host_ref = xa_ref_new();
        fs.metrics_ref = xa_ref_new();
        fs.dom0_ref = xa_ref_new();
        fs.dom0_metrics_ref = xa_ref_new();
        xa_datetime_now(fs.now);
        xa_datetime_from_time(hi.boot_time, fs.boot);
        err = first_start(t, &fs);
        host_ref = fs.host_ref;
        free(fs.pool_ref);
        free(fs.metrics_ref);
        free(fs.dom0_ref);
        free(fs.dom0_metrics_ref);
        if (err == NULL) {
            xa_log_info(LOG_MODULE,
                        "first start: created pool, host %s (%s, %s), %d "
                        "CPUs, %zu templates",
                        host_uuid, hi.hostname, hi.address, hi.cpu_count,
                        xa_bootstrap_n_templates());
        }
        write_file = false;
    } else {
        err = find_self(t, o->state_dir, &host_ref, &write_file);
        if (err == NULL) {
            err = refresh(t, host_ref, &hi, hv);
        }
    }

    if (err != NULL) {
        xa_db_abort(t);
        goto out;
    }
    err = xa_db_commit(t);
    if (err != NULL) {
        goto out;
    }
    if (write_file) {
        const struct xa_value *uv;
        struct xa_txn *rt = xa_db_begin_read();

        uv = peek_field(rt, "host", host_ref, "uuid");
        if (xa_value_str(uv) != NULL) {
            snprintf(host_uuid, sizeof host_uuid, "%s", xa_value_str(uv));
        }
        xa_db_end(rt);
        if (host_uuid[0] != '\0') {
            err = write_host_uuid(o->state_dir, host_uuid);
        }
    }
out:
    xa_hostinfo_free(&hi);
    if (err != NULL) {
        free(host_ref);
        return err;
    }
    *ret_host_ref = host_ref;
    return NULL;
}
