/* test-bootstrap.c - the rows a first start creates, and that later starts
 * find and refresh them instead of adding more. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bootstrap.h"
#include "db/db.h"
#include "hostinfo.h"
#include "schema.h"
#include "util.h"
#include "value.h"

static const char *const required_templates[] = {
    "Other install media", "Debian Bookworm 12",
    "Debian Bullseye 11",  "Ubuntu Jammy Jellyfish 22.04",
    "CentOS Stream 9",     "Windows Server 2022 (64-bit)",
};

static const struct xa_class_desc *
cls(const char *name)
{
    const struct xa_class_desc *c = xa_schema_class(name);

    assert_non_null(c);
    return c;
}

/* A new reference to a field, failing the test when it is missing. */
static struct xa_value *
field(struct xa_txn *t, const char *c, const char *ref, const char *name)
{
    int idx = xa_schema_field_index(cls(c), name);
    struct xa_value *v;

    assert_true(idx >= 0);
    v = xa_db_get_field(t, cls(c), ref, idx);
    assert_non_null(v);
    return v;
}

static char *
field_str(struct xa_txn *t, const char *c, const char *ref, const char *name)
{
    struct xa_value *v = field(t, c, ref, name);
    char *s;

    assert_non_null(xa_value_str(v));
    s = xa_strdup(xa_value_str(v));
    xa_value_unref(v);
    return s;
}

static int64_t
field_int(struct xa_txn *t, const char *c, const char *ref, const char *name)
{
    struct xa_value *v = field(t, c, ref, name);
    int64_t i;

    assert_int_equal(v->kind, XA_INT);
    i = v->u.i;
    xa_value_unref(v);
    return i;
}

static bool
field_bool(struct xa_txn *t, const char *c, const char *ref, const char *name)
{
    struct xa_value *v = field(t, c, ref, name);
    bool b;

    assert_int_equal(v->kind, XA_BOOL);
    b = v->u.b;
    xa_value_unref(v);
    return b;
}

/* The only row of a class (the caller frees). */
static char *
only_row(struct xa_txn *t, const char *c)
{
    struct xa_value *all = xa_db_get_all(t, cls(c));
    char *ref;

    assert_non_null(all);
    assert_int_equal(all->kind, XA_ARRAY);
    assert_int_equal(all->u.arr.n, 1);
    ref = xa_strdup(xa_value_str(all->u.arr.items[0]));
    xa_value_unref(all);
    return ref;
}

/* VM rows named 'label'; returns how many and the first one's ref. */
static size_t
vms_named(struct xa_txn *t, const char *label, char **first)
{
    struct xa_value *all = xa_db_get_all(t, cls("VM"));
    size_t n = 0;

    *first = NULL;
    for (size_t i = 0; i < all->u.arr.n; i++) {
        const char *ref = xa_value_str(all->u.arr.items[i]);
        char *name = field_str(t, "VM", ref, "name_label");

        if (strcmp(name, label) == 0) {
            if (n++ == 0) {
                *first = xa_strdup(ref);
            }
        }
        free(name);
    }
    xa_value_unref(all);
    return n;
}

/* Row counts of every class bootstrap touches, to compare two starts. */
static const char *const counted[] = {
    "pool", "host", "host_metrics", "host_cpu", "VM", "VM_metrics", "role"};

static void
count_rows(size_t out[XA_ARRAY_SIZE(counted)])
{
    struct xa_txn *t = xa_db_begin_read();

    for (size_t i = 0; i < XA_ARRAY_SIZE(counted); i++) {
        out[i] = xa_db_count(t, cls(counted[i]));
    }
    xa_db_end(t);
}

static char *
run_bootstrap(const char *state_dir)
{
    struct xa_bootstrap_opts o = {
        .bind_address = NULL,
        .hypervisor = "sim",
        .http_port = 80,
        .https_port = 443,
        .state_dir = state_dir,
    };
    char *host = NULL;
    struct xa_error *err = xa_bootstrap(&o, &host);

    if (err != NULL) {
        fail_msg("xa_bootstrap: %s %s", err->code,
                 err->n_params > 0 ? err->params[0] : "");
    }
    assert_non_null(host);
    return host;
}

/* Everything a first start must leave behind, checked against 'host'. */
static void
check_first_start(const char *host)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_hostinfo hi;
    char *pool = only_row(t, "pool");
    char *s, *metrics, *dom0, *dom0_metrics;
    struct xa_value *v;

    xa_hostinfo_read(&hi, NULL);

    /* The pool's master is this host. */
    s = field_str(t, "pool", pool, "master");
    assert_string_equal(s, host);
    free(s);
    assert_int_equal(xa_db_count(t, cls("host")), 1);
    assert_int_equal(field_int(t, "host", host, "API_version_major"), 2);
    assert_int_equal(field_int(t, "host", host, "API_version_minor"), 23);
    assert_true(field_bool(t, "host", host, "enabled"));
    s = field_str(t, "host", host, "API_version_vendor");
    assert_string_equal(s, "XenSource");
    free(s);
    s = field_str(t, "host", host, "hostname");
    assert_string_equal(s, hi.hostname);
    free(s);
    s = field_str(t, "host", host, "address");
    assert_true(strlen(s) > 0);
    free(s);
    v = field(t, "host", host, "software_version");
    assert_string_equal(xa_struct_get_str(v, "xapi"), "2.23");
    assert_string_equal(xa_struct_get_str(v, "db_schema"), "5.780");
    assert_string_equal(xa_struct_get_str(v, "network_backend"), "openvswitch");
    assert_string_equal(xa_struct_get_str(v, "xen"), "4.17.0-sim");
    assert_non_null(xa_struct_get_str(v, "product_version"));
    xa_value_unref(v);
    v = field(t, "host", host, "cpu_info");
    assert_non_null(xa_struct_get_str(v, "cpu_count"));
    assert_int_equal(atoi(xa_struct_get_str(v, "cpu_count")), hi.cpu_count);
    assert_non_null(xa_struct_get_str(v, "features"));
    xa_value_unref(v);
    v = field(t, "host", host, "other_config");
    assert_non_null(xa_struct_get_str(v, "agent_start_time"));
    xa_value_unref(v);

    /* host_metrics, linked and live. */
    metrics = field_str(t, "host", host, "metrics");
    assert_true(xa_db_exists(t, cls("host_metrics"), metrics));
    assert_true(field_bool(t, "host_metrics", metrics, "live"));
    assert_true(field_int(t, "host_metrics", metrics, "memory_total") > 0);
    assert_true(field_int(t, "host_metrics", metrics, "memory_free") <=
                field_int(t, "host_metrics", metrics, "memory_total"));
    free(metrics);

    /* One host_cpu per CPU, numbered from 0, all on this host. */
    v = field(t, "host", host, "host_CPUs");
    assert_int_equal(v->kind, XA_ARRAY);
    assert_int_equal(v->u.arr.n, (size_t)hi.cpu_count);
    assert_int_equal(xa_db_count(t, cls("host_cpu")), (size_t)hi.cpu_count);
    for (size_t i = 0; i < v->u.arr.n; i++) {
        const char *cpu = xa_value_str(v->u.arr.items[i]);

        s = field_str(t, "host_cpu", cpu, "host");
        assert_string_equal(s, host);
        free(s);
        assert_true(field_int(t, "host_cpu", cpu, "number") < hi.cpu_count);
    }
    xa_value_unref(v);

    /* dom0. */
    dom0 = field_str(t, "host", host, "control_domain");
    assert_true(xa_db_exists(t, cls("VM"), dom0));
    assert_true(field_bool(t, "VM", dom0, "is_control_domain"));
    assert_false(field_bool(t, "VM", dom0, "is_a_template"));
    s = field_str(t, "VM", dom0, "resident_on");
    assert_string_equal(s, host);
    free(s);
    s = field_str(t, "VM", dom0, "power_state");
    assert_string_equal(s, "Running");
    free(s);
    assert_int_equal(field_int(t, "VM", dom0, "domid"), 0);
    assert_int_equal(field_int(t, "VM", dom0, "VCPUs_max"), hi.cpu_count);
    s = field_str(t, "VM", dom0, "name_label");
    assert_true(xa_str_has_prefix(s, "Control domain on host: "));
    free(s);
    v = field(t, "VM", dom0, "other_config");
    assert_string_equal(xa_struct_get_str(v, "storage_driver_domain"), dom0);
    assert_string_equal(xa_struct_get_str(v, "is_system_domain"), "true");
    xa_value_unref(v);
    dom0_metrics = field_str(t, "VM", dom0, "metrics");
    assert_true(xa_db_exists(t, cls("VM_metrics"), dom0_metrics));
    assert_int_equal(field_int(t, "VM_metrics", dom0_metrics, "VCPUs_number"),
                     hi.cpu_count);
    free(dom0_metrics);
    v = field(t, "host", host, "resident_VMs");
    assert_int_equal(v->u.arr.n, 1);
    assert_string_equal(xa_value_str(v->u.arr.items[0]), dom0);
    xa_value_unref(v);
    free(dom0);

    /* The six roles with xapi's uuids. */
    assert_int_equal(xa_db_count(t, cls("role")), 6);
    for (size_t i = 0; i < 6; i++) {
        char *ref =
            xa_db_ref_by_uuid(t, cls("role"), xa_bootstrap_role_uuids[i]);

        assert_non_null(ref);
        s = field_str(t, "role", ref, "name_label");
        assert_string_equal(s, xa_bootstrap_role_names[i]);
        free(s);
        free(ref);
    }

    /* The required templates, once each. */
    for (size_t i = 0; i < XA_ARRAY_SIZE(required_templates); i++) {
        char *tpl;

        assert_int_equal(vms_named(t, required_templates[i], &tpl), 1);
        assert_true(field_bool(t, "VM", tpl, "is_a_template"));
        assert_true(field_bool(t, "VM", tpl, "is_default_template"));
        free(tpl);
    }
    xa_db_end(t);
    free(pool);
    xa_hostinfo_free(&hi);
}

static void
test_first_start(void **state)
{
    char *host;

    XA_UNUSED(state);
    assert_null(xa_db_open(":memory:"));
    host = run_bootstrap(NULL);
    check_first_start(host);
    assert_null(xa_db_check_integrity());
    free(host);
    xa_db_close();
}

/* Every default template is a well-formed HVM template. */
static void
test_templates(void **state)
{
    char *host;
    struct xa_txn *t;

    XA_UNUSED(state);
    assert_null(xa_db_open(":memory:"));
    host = run_bootstrap(NULL);
    t = xa_db_begin_read();
    assert_true(xa_bootstrap_n_templates() >=
                XA_ARRAY_SIZE(required_templates));
    for (size_t i = 0; i < xa_bootstrap_n_templates(); i++) {
        const char *name = xa_bootstrap_template_name(i);
        char *tpl, *s;
        struct xa_value *v;
        int64_t smin, dmin, dmax, smax;

        assert_int_equal(vms_named(t, name, &tpl), 1);
        assert_true(field_bool(t, "VM", tpl, "is_a_template"));
        s = field_str(t, "VM", tpl, "power_state");
        assert_string_equal(s, "Halted");
        free(s);
        smin = field_int(t, "VM", tpl, "memory_static_min");
        dmin = field_int(t, "VM", tpl, "memory_dynamic_min");
        dmax = field_int(t, "VM", tpl, "memory_dynamic_max");
        smax = field_int(t, "VM", tpl, "memory_static_max");
        assert_true(smin > 0 && smin <= dmin && dmin <= dmax && dmax <= smax);
        assert_true(field_int(t, "VM", tpl, "VCPUs_max") >= 1);
        s = field_str(t, "VM", tpl, "HVM_boot_policy");
        assert_string_equal(s, "BIOS order");
        free(s);
        v = field(t, "VM", tpl, "HVM_boot_params");
        assert_non_null(xa_struct_get_str(v, "order"));
        xa_value_unref(v);
        v = field(t, "VM", tpl, "platform");
        assert_non_null(xa_struct_get_str(v, "acpi"));
        xa_value_unref(v);
        s = field_str(t, "VM", tpl, "recommendations");
        assert_true(xa_str_has_prefix(s, "<restrictions>"));
        free(s);
        v = field(t, "VM", tpl, "other_config");
        assert_non_null(xa_struct_get_str(v, "mac_seed"));
        assert_non_null(xa_struct_get_str(v, "install-methods"));
        assert_string_equal(xa_struct_get_str(v, "default_template"), "true");
        if (strcmp(name, "Other install media") != 0) {
            const char *disks = xa_struct_get_str(v, "disks");

            assert_non_null(disks);
            assert_true(xa_str_has_prefix(disks, "<provision><disk "));
            assert_non_null(strstr(disks, "type=\"system\""));
        }
        xa_value_unref(v);
        s = field_str(t, "VM", tpl, "metrics");
        assert_true(xa_db_exists(t, cls("VM_metrics"), s));
        free(s);
        free(tpl);
    }
    xa_db_end(t);
    free(host);
    xa_db_close();
}

/* A second start on the same in-memory database finds the host without a
 * state directory and adds nothing. */
static void
test_rerun_memory(void **state)
{
    size_t before[XA_ARRAY_SIZE(counted)], after[XA_ARRAY_SIZE(counted)];
    char *h1, *h2;
    struct xa_txn *t;
    struct xa_value *oc, *copy;

    XA_UNUSED(state);
    assert_null(xa_db_open(":memory:"));
    h1 = run_bootstrap(NULL);
    count_rows(before);

    /* A key someone added must survive the refresh of other_config. */
    t = xa_db_begin_write();
    oc = field(t, "host", h1, "other_config");
    copy = xa_value_copy(oc);
    xa_value_unref(oc);
    xa_struct_set(copy, "operator-note", xa_string("keep me"));
    assert_null(xa_db_set_field(
        t, cls("host"), h1, xa_schema_field_index(cls("host"), "other_config"),
        copy));
    assert_null(xa_db_commit(t));

    h2 = run_bootstrap(NULL);
    count_rows(after);
    assert_string_equal(h1, h2);
    assert_memory_equal(before, after, sizeof before);
    check_first_start(h2);
    t = xa_db_begin_read();
    oc = field(t, "host", h2, "other_config");
    assert_string_equal(xa_struct_get_str(oc, "operator-note"), "keep me");
    assert_non_null(xa_struct_get_str(oc, "agent_start_time"));
    xa_value_unref(oc);
    xa_db_end(t);
    free(h1);
    free(h2);
    xa_db_close();
}

static char *
read_file_line(const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[128];

    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return xa_strdup(buf);
}

/* Restarts on a persistent database: same host, no new rows, the uuid
 * file written at the first start and rewritten when lost. */
static void
test_restart_sqlite(void **state)
{
    char dir[] = "/tmp/xa-test-bootstrap-XXXXXX";
    size_t before[XA_ARRAY_SIZE(counted)], after[XA_ARRAY_SIZE(counted)];
    char *uri, *uuid_path, *h1, *h2, *h3, *file_uuid, *db_uuid;
    struct xa_txn *t;

    XA_UNUSED(state);
    assert_non_null(mkdtemp(dir));
    uri = xa_asprintf("sqlite:%s/xapid.db", dir);
    uuid_path = xa_asprintf("%s/host-uuid", dir);

    assert_null(xa_db_open(uri));
    h1 = run_bootstrap(dir);
    count_rows(before);
    xa_db_close();

    file_uuid = read_file_line(uuid_path);
    assert_null(xa_db_open(uri));
    t = xa_db_begin_read();
    db_uuid = field_str(t, "host", h1, "uuid");
    xa_db_end(t);
    assert_string_equal(file_uuid, db_uuid);
    h2 = run_bootstrap(dir);
    count_rows(after);
    assert_string_equal(h1, h2);
    assert_memory_equal(before, after, sizeof before);
    check_first_start(h2);
    xa_db_close();

    /* Without the file a one-host pool is still unambiguous. */
    assert_int_equal(unlink(uuid_path), 0);
    assert_null(xa_db_open(uri));
    h3 = run_bootstrap(dir);
    assert_string_equal(h1, h3);
    count_rows(after);
    assert_memory_equal(before, after, sizeof before);
    xa_db_close();
    free(file_uuid);
    file_uuid = read_file_line(uuid_path);
    assert_string_equal(file_uuid, db_uuid);

    free(h1);
    free(h2);
    free(h3);
    free(file_uuid);
    free(db_uuid);
    /* Leave nothing behind: the database and whatever journal it keeps. */
    {
        char *cmd = xa_asprintf("rm -rf '%s'", dir);

        assert_int_equal(system(cmd), 0);
        free(cmd);
    }
    free(uri);
    free(uuid_path);
}

/* A first start with a host-uuid file already present (an earlier start
 * that died before committing) adopts that uuid. */
static void
test_adopts_uuid_file(void **state)
{
    char dir[] = "/tmp/xa-test-bootstrap-XXXXXX";
    const char *uuid = "2f6a3c1e-8f1d-4c55-9a0b-6e7d8c9b0a1f";
    char *path, *host, *s;
    FILE *f;
    struct xa_txn *t;

    XA_UNUSED(state);
    assert_non_null(mkdtemp(dir));
    path = xa_asprintf("%s/host-uuid", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%s\n", uuid);
    fclose(f);

    assert_null(xa_db_open(":memory:"));
    host = run_bootstrap(dir);
    t = xa_db_begin_read();
    s = field_str(t, "host", host, "uuid");
    xa_db_end(t);
    assert_string_equal(s, uuid);
    free(s);
    free(host);
    xa_db_close();
    unlink(path);
    rmdir(dir);
    free(path);
}

/* A uuid file naming a host the database does not have is an error, not
 * a reason to guess or to create a second host. */
static void
test_foreign_uuid_file(void **state)
{
    char dir[] = "/tmp/xa-test-bootstrap-XXXXXX";
    struct xa_bootstrap_opts o = {.hypervisor = "sim"};
    char *path, *host = NULL, *first;
    struct xa_error *err;
    struct xa_txn *t;
    FILE *f;

    XA_UNUSED(state);
    assert_non_null(mkdtemp(dir));
    path = xa_asprintf("%s/host-uuid", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("11111111-2222-4333-8444-555555555555\n", f);
    fclose(f);

    assert_null(xa_db_open(":memory:"));
    first = run_bootstrap(NULL);
    o.state_dir = dir;
    err = xa_bootstrap(&o, &host);
    assert_non_null(err);
    assert_null(host);
    xa_error_free(err);
    t = xa_db_begin_read();
    assert_int_equal(xa_db_count(t, cls("host")), 1);
    xa_db_end(t);
    free(first);
    xa_db_close();
    unlink(path);
    rmdir(dir);
    free(path);
}

static void
write_fixture(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void
test_hostinfo_fixtures(void **state)
{
    char dir[] = "/tmp/xa-test-hostinfo-XXXXXX";
    char *cpuinfo, *meminfo, *stat;
    struct xa_hostinfo hi;

    XA_UNUSED(state);
    assert_non_null(mkdtemp(dir));
    cpuinfo = xa_asprintf("%s/cpuinfo", dir);
    meminfo = xa_asprintf("%s/meminfo", dir);
    stat = xa_asprintf("%s/stat", dir);
    write_fixture(cpuinfo, "processor\t: 0\n"
                           "vendor_id\t: GenuineIntel\n"
                           "cpu family\t: 6\n"
                           "model\t\t: 85\n"
                           "model name\t: Intel(R) Xeon(R) Gold 6138\n"
                           "stepping\t: 4\n"
                           "cpu MHz\t\t: 2000.123\n"
                           "physical id\t: 0\n"
                           "flags\t\t: fpu vme de pse\n"
                           "\n"
                           "processor\t: 1\n"
                           "vendor_id\t: GenuineIntel\n"
                           "physical id\t: 1\n"
                           "model name\t: something else\n"
                           "\n"
                           "processor\t: 2\n"
                           "physical id\t: 1\n"
                           "\n");
    write_fixture(meminfo, "MemTotal:       16384000 kB\n"
                           "MemFree:         1000000 kB\n"
                           "MemAvailable:    8192000 kB\n");
    write_fixture(stat, "cpu  1 2 3 4\nbtime 1700000000\nprocesses 5\n");

    xa_hostinfo_read_paths(&hi, "192.0.2.10", cpuinfo, meminfo, stat);
    assert_int_equal(hi.cpu_count, 3);
    assert_int_equal(hi.socket_count, 2);
    assert_string_equal(hi.cpu_vendor, "GenuineIntel");
    assert_string_equal(hi.cpu_model_name, "Intel(R) Xeon(R) Gold 6138");
    assert_int_equal(hi.cpu_mhz, 2000);
    assert_int_equal(hi.cpu_family, 6);
    assert_int_equal(hi.cpu_model, 85);
    assert_string_equal(hi.cpu_stepping, "4");
    assert_string_equal(hi.cpu_flags, "fpu vme de pse");
    assert_int_equal(hi.memory_total, (int64_t)16384000 * 1024);
    assert_int_equal(hi.memory_free, (int64_t)8192000 * 1024);
    assert_int_equal(hi.boot_time, 1700000000);
    assert_string_equal(hi.address, "192.0.2.10");
    assert_true(hi.hostname[0] != '\0');
    xa_hostinfo_free(&hi);

    unlink(cpuinfo);
    unlink(meminfo);
    unlink(stat);
    rmdir(dir);
    free(cpuinfo);
    free(meminfo);
    free(stat);
}

/* Hidden /proc files leave neutral values, never a failure. */
static void
test_hostinfo_missing_files(void **state)
{
    struct xa_hostinfo hi;

    XA_UNUSED(state);
    xa_hostinfo_read_paths(&hi, "0.0.0.0", "/nonexistent/cpuinfo",
                           "/nonexistent/meminfo", "/nonexistent/stat");
    assert_true(hi.cpu_count >= 1);
    assert_true(hi.socket_count >= 1);
    assert_true(hi.cpu_vendor[0] != '\0');
    assert_true(hi.cpu_model_name[0] != '\0');
    assert_non_null(hi.cpu_flags);
    assert_true(hi.memory_total > 0);
    assert_true(hi.memory_free <= hi.memory_total);
    assert_true(hi.boot_time > 0);
    /* A wildcard bind names no address; some real one (or loopback) is
     * used instead. */
    assert_string_not_equal(hi.address, "0.0.0.0");
    assert_true(hi.address[0] != '\0');
    xa_hostinfo_free(&hi);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostinfo_fixtures),
        cmocka_unit_test(test_hostinfo_missing_files),
        cmocka_unit_test(test_first_start),
        cmocka_unit_test(test_templates),
        cmocka_unit_test(test_rerun_memory),
        cmocka_unit_test(test_restart_sqlite),
        cmocka_unit_test(test_adopts_uuid_file),
        cmocka_unit_test(test_foreign_uuid_file),
    };

    xa_schema_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
