/* test-storage-imgdir.c - the image directory backend (storage/imgdir)
 * on a real temporary directory with qemu-img: names that could leave
 * the SR are refused, and snapshot chains stay valid whichever VDI goes
 * first.  The chain test is reported skipped when qemu-img is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "storage/imgdir/imgdir.h"
#include "storage/sr.h"
#include "util.h"

static char dir[] = "/tmp/xapid-imgdir-XXXXXX";
static struct xa_sr_ctx ctx;
static bool have_qemu_img;

static int
setup(void **state)
{
    (void)state;
    have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0;
    if (!mkdtemp(dir)) {
        return -1;
    }
    ctx = (struct xa_sr_ctx){"00000000-0000-0000-0000-000000000001", "ext", dir,
                             NULL, false};
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    char *cmd = xa_asprintf("rm -rf %s", dir);
    int rc = system(cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

static void
test_names(void **state)
{
    (void)state;
    assert_true(xa_imgdir_valid_name("0e2b6a4a-5d4f-4b8e-9a53-6b0c0c0f0001"));
    assert_true(xa_imgdir_valid_name("disk_1.v2"));
    assert_false(xa_imgdir_valid_name(""));
    assert_false(xa_imgdir_valid_name(".."));
    assert_false(xa_imgdir_valid_name("../etc/passwd"));
    assert_false(xa_imgdir_valid_name("a/b"));
    assert_false(xa_imgdir_valid_name(".base-x"));
    assert_false(xa_imgdir_valid_name(NULL));
    struct xa_sr_vdi v = {0};
    struct xa_error *err = xa_sr_vdi_stat(&ctx, "../x", &v);
    assert_non_null(err);
    xa_error_free(err);
}

/* Writes 'byte' over the first MiB of VDI 'loc' the way import_raw_vdi
 * does: a raw publish of a staged file. */
static void
fill(const char *loc, int byte, int64_t size)
{
    char *tmp = NULL;
    struct xa_error *err = xa_sr_vdi_stage(&ctx, loc, &tmp);
    assert_null(err);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    for (int i = 0; i < 1024 * 1024; i++) {
        fputc(byte, f);
    }
    fclose(f);
    struct xa_sr_vdi v = {0};
    err = xa_sr_vdi_publish(&ctx, loc, tmp, "raw", size, &v);
    assert_null(err);
    free(v.location);
    free(tmp);
}

/* The first byte of VDI 'loc' as the hypervisor would read it. */
static int
first_byte(const char *loc)
{
    char *path = NULL;
    bool temporary = false;
    struct xa_error *err =
        xa_sr_vdi_export(&ctx, loc, "raw", &path, &temporary);
    assert_null(err);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int c = fgetc(f);
    fclose(f);
    if (temporary) {
        unlink(path);
    }
    free(path);
    return c;
}

static int
hidden_files(void)
{
    char *cmd = xa_asprintf("ls -A %s | grep -c '^\\.base-\\|^\\.tmp-'", dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p && fscanf(p, "%d", &n) != 1) {
        n = -1;
    }
    if (p) {
        pclose(p);
    }
    free(cmd);
    return n;
}

static void
test_chains(void **state)
{
    (void)state;
    if (!have_qemu_img) {
        skip();
    }
    int64_t size = 4 * 1024 * 1024;
    struct xa_sr_vdi a = {0}, s1 = {0}, s2 = {0}, c = {0};
    assert_null(xa_sr_attach(&ctx));
    assert_null(xa_sr_create(&ctx));
    assert_null(xa_sr_vdi_create(&ctx, "a", size, &a));
    fill("a", 'A', size);
    assert_null(xa_sr_vdi_clone("snap", &ctx, "a", "s1", true, &s1));
    fill("a", 'B', size);
    assert_null(xa_sr_vdi_clone("snap", &ctx, "a", "s2", true, &s2));
    assert_null(xa_sr_vdi_clone("clone", &ctx, "s1", "c", false, &c));
    assert_int_equal(first_byte("a"), 'B');
    assert_int_equal(first_byte("s1"), 'A');
    assert_int_equal(first_byte("s2"), 'B');
    assert_int_equal(first_byte("c"), 'A');
    /* Every order of removal keeps the others' content. */
    assert_null(xa_sr_vdi_destroy(&ctx, "s1"));
    assert_int_equal(first_byte("c"), 'A');
    assert_null(xa_sr_vdi_destroy(&ctx, "a"));
    assert_int_equal(first_byte("s2"), 'B');
    assert_int_equal(first_byte("c"), 'A');
    assert_null(xa_sr_vdi_destroy(&ctx, "c"));
    assert_int_equal(first_byte("s2"), 'B');
    assert_null(xa_sr_vdi_destroy(&ctx, "s2"));
    assert_int_equal(hidden_files(), 0);
    struct xa_sr_vdi *found = NULL;
    size_t n = 9;
    assert_null(xa_sr_scan(&ctx, &found, &n));
    assert_int_equal(n, 0);
    xa_sr_vdi_free_array(found, n);
    free(a.location);
    free(s1.location);
    free(s2.location);
    free(c.location);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_chains),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
