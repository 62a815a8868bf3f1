/* test-sim.c - the simulated hypervisor (hypervisor/sim) and the core
 * wrappers of hypervisor/hv.h: domain life cycle, memory accounting,
 * fault injection, delays, the guest agent, and NOT_IMPLEMENTED for
 * entries a backend lacks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "hypervisor/hv.h"
#include "hypervisor/sim/sim.h"
#include "util.h"

#define MIB ((int64_t)1 << 20)
#define GIB ((int64_t)1 << 30)

static struct xa_hv_domain_config
cfg(const char *uuid, int64_t mem)
{
    struct xa_hv_domain_config c;
    memset(&c, 0, sizeof c);
    c.uuid = uuid;
    c.name_label = "test";
    c.memory_static_max = mem;
    c.memory_target = mem;
    c.vcpus_max = 2;
    c.vcpus_at_startup = 2;
    return c;
}

static const char *const U1 = "11111111-1111-4111-8111-111111111111";
static const char *const U2 = "22222222-2222-4222-8222-222222222222";

static void
expect_ok(struct xa_error *err)
{
    if (err) {
        fail_msg("unexpected %s %s", err->code,
                 err->n_params ? err->params[0] : "");
    }
}

static void
expect_code(struct xa_error *err, const char *code)
{
    assert_non_null(err);
    assert_string_equal(err->code, code);
    xa_error_free(err);
}

static int
setup(void **state)
{
    XA_UNUSED(state);
    xa_sim_reset();
    assert_int_equal(xa_sim_configure(NULL, NULL, 0, 16 * GIB), 0);
    return 0;
}

static void
test_lifecycle(void **state)
{
    XA_UNUSED(state);
    struct xa_hv_domain_config c = cfg(U1, 512 * MIB);
    int64_t domid = 0, total = 0, free0 = 0, free1 = 0;
    expect_ok(xa_hv_host_memory(&total, &free0));
    assert_true(total == 16 * GIB);
    expect_ok(xa_hv_create("VM.start", &c, &domid));
    assert_true(domid == 1);
    expect_ok(xa_hv_host_memory(&total, &free1));
    assert_true(free0 - free1 == 512 * MIB);

    struct xa_hv_domain_info info;
    expect_ok(xa_hv_get_info(U1, &info));
    assert_int_equal(info.state, XA_HV_PAUSED);
    assert_true(info.memory_actual == 512 * MIB);
    expect_ok(xa_hv_unpause("VM.start", U1));
    expect_ok(xa_hv_get_info(U1, &info));
    assert_int_equal(info.state, XA_HV_RUNNING);
    expect_ok(xa_hv_pause("VM.pause", U1));
    /* a paused guest cannot answer a clean shutdown */
    expect_code(
        xa_hv_shutdown("VM.clean_shutdown", U1, XA_HV_POWEROFF, 1.0, NULL),
        "VM_SHUTDOWN_TIMEOUT");
    expect_ok(xa_hv_unpause("VM.unpause", U1));

    int64_t d2 = 0;
    expect_ok(xa_hv_shutdown("VM.clean_reboot", U1, XA_HV_REBOOT, 1.0, &d2));
    assert_true(d2 == 2); /* a reboot builds a new domain */
    expect_ok(xa_hv_hard_reboot("VM.hard_reboot", &c, &d2));
    assert_true(d2 == 3);

    struct xa_hv_domain_info *list = NULL;
    size_t n = 0;
    expect_ok(xa_hv_list(&list, &n));
    assert_int_equal(n, 1);
    assert_string_equal(list[0].uuid, U1);
    free(list);

    expect_ok(
        xa_hv_shutdown("VM.clean_shutdown", U1, XA_HV_POWEROFF, 1.0, NULL));
    expect_code(xa_hv_get_info(U1, &info), "INTERNAL_ERROR");
    expect_ok(xa_hv_host_memory(&total, &free1));
    assert_true(free1 == free0);
    assert_int_equal(xa_sim_domain_count(), 0);
    /* destroying what is gone is fine: that is the wanted state */
    expect_ok(xa_hv_destroy("VM.hard_shutdown", U1));
}

static void
test_memory_admission(void **state)
{
    XA_UNUSED(state);
    int64_t total, free_bytes, domid;
    expect_ok(xa_hv_host_memory(&total, &free_bytes));
    struct xa_hv_domain_config big = cfg(U1, free_bytes + MIB);
    expect_code(xa_hv_create("VM.start", &big, &domid),
                "HOST_NOT_ENOUGH_FREE_MEMORY");
    struct xa_hv_domain_config fits = cfg(U1, free_bytes);
    expect_ok(xa_hv_create("VM.start", &fits, &domid));
    struct xa_hv_domain_config other = cfg(U2, MIB);
    expect_code(xa_hv_create("VM.start", &other, &domid),
                "HOST_NOT_ENOUGH_FREE_MEMORY");
    /* one domain per VM */
    expect_code(xa_hv_create("VM.start", &fits, &domid), "INTERNAL_ERROR");
    expect_ok(xa_hv_destroy("VM.hard_shutdown", U1));
}

static void
test_faults(void **state)
{
    XA_UNUSED(state);
    assert_int_equal(xa_sim_configure("start:2,suspend:1", NULL, 0, 16 * GIB),
                     0);
    struct xa_hv_domain_config c = cfg(U1, 64 * MIB);
    int64_t domid;
    expect_ok(xa_hv_create("VM.start", &c, &domid));
    expect_ok(xa_hv_destroy("VM.hard_shutdown", U1));
    expect_code(xa_hv_create("VM.start", &c, &domid), "INTERNAL_ERROR");
    assert_int_equal(xa_sim_domain_count(), 0); /* nothing half-built */
    expect_ok(xa_hv_create("VM.start", &c, &domid));
    expect_ok(xa_hv_unpause("VM.start", U1));
    expect_code(xa_hv_suspend("VM.suspend", U1, ""), "INTERNAL_ERROR");
    assert_int_equal(xa_sim_domain_count(), 1); /* still running */
    expect_ok(xa_hv_suspend("VM.suspend", U1, ""));
    assert_int_equal(xa_sim_domain_count(), 0);
    expect_ok(xa_hv_resume("VM.resume", &c, "", &domid));
    expect_ok(xa_hv_destroy("VM.hard_shutdown", U1));

    assert_int_equal(xa_sim_configure("bogus:1", NULL, 0, 0), -1);
    assert_int_equal(xa_sim_configure("start:x", NULL, 0, 0), -1);
    assert_int_equal(xa_sim_configure(NULL, "create:abc", 0, 0), -1);
    assert_int_equal(xa_sim_configure(NULL, "5", 0, 0), 0);
    assert_int_equal(xa_sim_configure(NULL, "create:20,shutdown:1", 0, 0), 0);
}

static void
test_delay(void **state)
{
    XA_UNUSED(state);
    assert_int_equal(xa_sim_configure(NULL, "create:100", 0, 16 * GIB), 0);
    struct xa_hv_domain_config c = cfg(U1, 64 * MIB);
    int64_t domid;
    double t0 = xa_monotonic();
    expect_ok(xa_hv_create("VM.start", &c, &domid));
    assert_true(xa_monotonic() - t0 >= 0.09);
    t0 = xa_monotonic();
    expect_ok(xa_hv_destroy("VM.hard_shutdown", U1));
    assert_true(xa_monotonic() - t0 < 0.09);
}

static const char *
kv_get(char **kv, const char *key)
{
    for (char **p = kv; p && p[0]; p += 2) {
        if (strcmp(p[0], key) == 0) {
            return p[1];
        }
    }
    return NULL;
}

static void
test_guest_agent(void **state)
{
    XA_UNUSED(state);
    struct xa_hv_domain_config c = cfg(U1, 64 * MIB);
    struct xa_hv_nic nics[2] = {{"0", "02:00:00:00:00:01", "xenbr0", 1500},
                                {"1", "02:00:00:00:00:02", "xenbr0", 1500}};
    c.nics = nics;
    c.n_nics = 2;
    int64_t domid;
    expect_ok(xa_hv_create("VM.start", &c, &domid));
    struct xa_hv_guest_info g;
    expect_ok(xa_hv_guest_info(U1, &g));
    assert_false(g.present); /* paused: the agent has not run */
    expect_ok(xa_hv_unpause("VM.start", U1));
    expect_ok(xa_hv_guest_info(U1, &g));
    assert_true(g.present);
    assert_string_equal(kv_get(g.os_version, "distro"), "debian");
    assert_string_equal(kv_get(g.networks, "0/ip"), "10.0.0.1");
    assert_string_equal(kv_get(g.networks, "1/ip"), "10.1.0.1");
    assert_string_equal(kv_get(g.other, "feature-suspend"), "1");
    xa_hv_guest_info_free(&g);
    char *ep = NULL;
    expect_ok(xa_hv_console(U1, XA_HV_CONSOLE_VNC, &ep));
    assert_non_null(strstr(ep, U1));
    free(ep);
    expect_ok(xa_hv_destroy("VM.hard_shutdown", U1));

    /* an agent that reports late */
    assert_int_equal(xa_sim_configure(NULL, NULL, 150, 16 * GIB), 0);
    expect_ok(xa_hv_create("VM.start", &c, &domid));
    expect_ok(xa_hv_unpause("VM.start", U1));
    expect_ok(xa_hv_guest_info(U1, &g));
    assert_false(g.present);
    double t0 = xa_monotonic();
    while (!g.present && xa_monotonic() - t0 < 2.0) {
        xa_hv_guest_info_free(&g);
        expect_ok(xa_hv_guest_info(U1, &g));
    }
    assert_true(g.present);
    xa_hv_guest_info_free(&g);
    expect_ok(xa_hv_destroy("VM.hard_shutdown", U1));
}

static void
test_hotplug(void **state)
{
    XA_UNUSED(state);
    struct xa_hv_domain_config c = cfg(U1, 64 * MIB);
    int64_t domid;
    struct xa_hv_nic nic = {"0", "02:00:00:00:00:01", "", 1500};
    struct xa_hv_disk disk = {"1", "/dev/null", "raw", false, false, false};
    expect_code(xa_hv_plug_nic("VIF.plug", U1, &nic), "INTERNAL_ERROR");
    expect_ok(xa_hv_create("VM.start", &c, &domid));
    expect_ok(xa_hv_plug_nic("VIF.plug", U1, &nic));
    expect_ok(xa_hv_plug_disk("VBD.plug", U1, &disk));
    expect_ok(xa_hv_unplug_disk("VBD.unplug", U1, "1"));
    expect_ok(xa_hv_unplug_nic("VIF.unplug", U1, "0"));
    expect_ok(
        xa_hv_set_memory_target("VM.set_memory_target_live", U1, 128 * MIB));
    struct xa_hv_domain_info info;
    expect_ok(xa_hv_get_info(U1, &info));
    assert_true(info.memory_actual == 128 * MIB);
    expect_ok(xa_hv_destroy("VM.hard_shutdown", U1));
}

/* A backend with almost nothing: the wrappers answer NOT_IMPLEMENTED
 * naming the message, instead of calling through NULL. */
static struct xa_error *
tiny_list(struct xa_hv_domain_info **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    return NULL;
}

static const struct xa_hv_driver tiny = {.name = "tiny", .list = tiny_list};

static void
test_missing_entries(void **state)
{
    XA_UNUSED(state);
    xa_hv_register(&tiny);
    expect_ok(xa_hv_select("tiny"));
    assert_string_equal(xa_hv_name(), "tiny");
    struct xa_error *err = xa_hv_suspend("VM.suspend", U1, "/x");
    assert_non_null(err);
    assert_string_equal(err->code, "NOT_IMPLEMENTED");
    assert_string_equal(err->params[0], "VM.suspend");
    xa_error_free(err);
    struct xa_hv_domain_config c = cfg(U1, MIB);
    int64_t domid;
    expect_code(xa_hv_create("VM.start", &c, &domid), "NOT_IMPLEMENTED");
    expect_code(xa_hv_select("no-such-driver"), "INTERNAL_ERROR");
    expect_ok(xa_hv_select("sim"));
    assert_string_equal(xa_hv_name(), "sim");
}

int
main(void)
{
    /* The built-in backends register on first selection. */
    struct xa_error *err = xa_hv_select("sim");
    if (err) {
        fprintf(stderr, "cannot select sim: %s\n", err->code);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_lifecycle, setup),
        cmocka_unit_test_setup(test_memory_admission, setup),
        cmocka_unit_test_setup(test_faults, setup),
        cmocka_unit_test_setup(test_delay, setup),
        cmocka_unit_test_setup(test_guest_agent, setup),
        cmocka_unit_test_setup(test_hotplug, setup),
        cmocka_unit_test_setup(test_missing_entries, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
