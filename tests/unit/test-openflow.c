/* test-openflow.c - the OpenFlow 1.3 flow_mod encoder (byte layout of the
 * header, match and instructions), the cookie made from a VIF uuid, and
 * the rule sets of each locking mode.  That Open vSwitch accepts and
 * applies them is tests/e2e/test_net_ovs.py's job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "network/openflow.h"

static unsigned
be16(const uint8_t *p)
{
    return (unsigned)(p[0] << 8 | p[1]);
}

static uint32_t
be32(const uint8_t *p)
{
    return (uint32_t)be16(p) << 16 | be16(p + 2);
}

static void
test_add_layout(void **state)
{
    (void)state;
    struct xa_of_flow f;
    memset(&f, 0, sizeof f);
    f.fields = XA_OF_IN_PORT | XA_OF_ETH_SRC | XA_OF_ETH_TYPE | XA_OF_IPV4_SRC;
    f.in_port = 5;
    memcpy(f.eth_src, "\x02\x11\x22\x33\x44\x55", 6);
    f.eth_type = 0x0800;
    memcpy(f.ipv4_src, "\x0a\x09\x00\x05", 4);
    f.priority = 6000;
    f.normal = true;
    uint8_t b[256];
    size_t n = xa_of_encode_flow_mod(b, sizeof b, 7, XA_OF_FLOW_MOD_ADD,
                                     0x5841000000000001ull, 0, &f);
    /* header 8 + flow_mod 40 + match 36 padded to 40 + instruction 24 */
    assert_int_equal(n, 112);
    assert_int_equal(b[0], 4);  /* OpenFlow 1.3 */
    assert_int_equal(b[1], 14); /* FLOW_MOD */
    assert_int_equal(be16(b + 2), n);
    assert_int_equal(be32(b + 4), 7);
    assert_int_equal(be32(b + 8), 0x58410000u);
    assert_int_equal(be32(b + 12), 1);
    assert_int_equal(b[24], 0);                  /* table */
    assert_int_equal(b[25], 0);                  /* ADD */
    assert_int_equal(be16(b + 30), 6000);        /* priority */
    assert_int_equal(be32(b + 32), 0xffffffffu); /* no buffer */
    /* The match: OXM, 36 bytes, in_port first. */
    const uint8_t *m = b + 48;
    assert_int_equal(be16(m), 1);
    assert_int_equal(be16(m + 2), 36);
    assert_int_equal(be32(m + 4), 0x80000004u); /* IN_PORT, 4 bytes */
    assert_int_equal(be32(m + 8), 5);
    assert_int_equal(be32(m + 12), 0x80000806u); /* ETH_SRC, 6 bytes */
    assert_memory_equal(m + 16, "\x02\x11\x22\x33\x44\x55", 6);
    assert_int_equal(be32(m + 22), 0x80000a02u); /* ETH_TYPE */
    assert_int_equal(be16(m + 26), 0x0800);
    assert_int_equal(be32(m + 28), 0x80001604u); /* IPV4_SRC */
    assert_memory_equal(m + 32, "\x0a\x09\x00\x05", 4);
    assert_memory_equal(m + 36, "\0\0\0\0", 4); /* padding */
    /* APPLY_ACTIONS [OUTPUT:NORMAL] */
    const uint8_t *i = m + 40;
    assert_int_equal(be16(i), 4);
    assert_int_equal(be16(i + 2), 24);
    assert_int_equal(be16(i + 8), 0);
    assert_int_equal(be16(i + 10), 16);
    assert_int_equal(be32(i + 12), 0xfffffffau);
}

static void
test_drop_and_delete(void **state)
{
    (void)state;
    struct xa_of_flow f;
    memset(&f, 0, sizeof f);
    f.fields = XA_OF_IN_PORT;
    f.in_port = 9;
    f.priority = 4000;
    uint8_t b[256];
    /* A drop rule has no instructions. */
    size_t n =
        xa_of_encode_flow_mod(b, sizeof b, 1, XA_OF_FLOW_MOD_ADD, 1, 0, &f);
    assert_int_equal(n, 48 + 16);
    assert_int_equal(be16(b + 50), 12);
    /* DELETE: every table, by cookie under the mask, empty match. */
    n = xa_of_encode_flow_mod(b, sizeof b, 2, XA_OF_FLOW_MOD_DELETE,
                              0x5841aaaabbbbccccull, ~0ull, NULL);
    assert_int_equal(n, 56);
    assert_int_equal(be32(b + 16), 0xffffffffu);
    assert_int_equal(be32(b + 20), 0xffffffffu);
    assert_int_equal(b[24], 0xff);
    assert_int_equal(b[25], 3);
    assert_int_equal(be32(b + 36), 0xffffffffu); /* out_port ANY */
    assert_int_equal(be16(b + 50), 4);
    /* Too small a buffer: nothing. */
    assert_int_equal(
        xa_of_encode_flow_mod(b, 20, 3, XA_OF_FLOW_MOD_ADD, 1, 0, &f), 0);
}

static void
test_cookie(void **state)
{
    (void)state;
    assert_true(xa_of_cookie("0123abcd-ef45-6789-abcd-0123456789ab") ==
                0x58410123abcdef45ull);
    assert_true(xa_of_cookie("ffffffff-ffff-0000-0000-000000000000") ==
                0x5841ffffffffffffull);
}

static size_t
count_prio(const struct xa_of_flow *f, size_t n, unsigned prio, bool normal)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        k += f[i].priority == prio && f[i].normal == normal;
    }
    return k;
}

static void
test_mode_rules(void **state)
{
    (void)state;
    const char *v4[] = {"10.0.0.5", NULL};
    const char *v6[] = {"fd00::5", NULL};
    struct xa_of_flow *f = NULL;
    size_t n = 0;
    assert_null(
        xa_of_vif_flows("unlocked", 3, "02:00:00:00:00:01", v4, v6, &f, &n));
    assert_int_equal(n, 0);
    assert_null(xa_of_vif_flows("disabled", 3, "", NULL, NULL, &f, &n));
    assert_int_equal(n, 1);
    assert_false(f[0].normal);
    assert_int_equal(f[0].fields, XA_OF_IN_PORT);
    free(f);
    assert_null(
        xa_of_vif_flows("locked", 3, "02:00:00:00:00:01", v4, v6, &f, &n));
    /* DHCP, ARP probe, 2 per IPv4, 5 per IPv6, 9 ICMPv6 drops, the rest */
    assert_int_equal(n, 1 + 1 + 2 + 5 + 9 + 1);
    assert_int_equal(count_prio(f, n, 4000, false), 1);
    assert_int_equal(count_prio(f, n, 8000, true), 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(f[i].in_port, 3);
        if (f[i].normal) {
            assert_true(f[i].fields & XA_OF_ETH_SRC);
            assert_memory_equal(f[i].eth_src, "\x02\0\0\0\0\x01", 6);
        }
        /* Every field's prerequisite is there. */
        if (f[i].fields & (XA_OF_IPV4_SRC | XA_OF_IPV6_SRC | XA_OF_ARP_SPA |
                           XA_OF_IP_PROTO)) {
            assert_true(f[i].fields & XA_OF_ETH_TYPE);
        }
        if (f[i].fields & (XA_OF_UDP_DST | XA_OF_ICMPV6_TYPE)) {
            assert_true(f[i].fields & XA_OF_IP_PROTO);
        }
        uint8_t b[256];
        assert_true(xa_of_encode_flow_mod(b, sizeof b, 1, XA_OF_FLOW_MOD_ADD, 1,
                                          0, &f[i]) > 0);
    }
    free(f);
    const char *bad[] = {"10.0.0.300", NULL};
    struct xa_error *err =
        xa_of_vif_flows("locked", 3, "02:00:00:00:00:01", bad, NULL, &f, &n);
    assert_non_null(err);
    assert_string_equal(err->code, "INVALID_VALUE");
    assert_null(f);
    xa_error_free(err);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_layout),
        cmocka_unit_test(test_drop_and_delete),
        cmocka_unit_test(test_cookie),
        cmocka_unit_test(test_mode_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
