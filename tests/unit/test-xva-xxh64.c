/* test-xva-xxh64.c - XXH64 (server/data/xxh64.h), the checksum of XVA
 * chunks: reference values from the specification's authors, and the
 * incremental interface agreeing with the one-shot one whatever the
 * split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/xxh64.h"

static void
test_reference_values(void **state)
{
    (void)state;
    assert_true(xa_xxh64("", 0, 0) == 0xEF46DB3751D8E999ULL);
    assert_true(xa_xxh64("abc", 3, 0) == 0x44BC2CF5AD770999ULL);
}

static void
test_incremental_matches_one_shot(void **state)
{
    (void)state;
    size_t n = 1000;
    unsigned char *buf = malloc(n);
    for (size_t i = 0; i < n; i++) {
        buf[i] = (unsigned char)(i * 131 + 7);
    }
    for (size_t len = 0; len < n; len += 37) {
        uint64_t want = xa_xxh64(buf, len, 0);
        for (size_t split = 0; split <= len; split += 5) {
            struct xa_xxh64 s;
            xa_xxh64_init(&s, 0);
            xa_xxh64_update(&s, buf, split);
            xa_xxh64_update(&s, buf + split, len - split);
            assert_true(xa_xxh64_digest(&s) == want);
        }
    }
    /* The seed matters. */
    assert_true(xa_xxh64(buf, 100, 1) != xa_xxh64(buf, 100, 0));
    free(buf);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_values),
        cmocka_unit_test(test_incremental_matches_one_shot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
