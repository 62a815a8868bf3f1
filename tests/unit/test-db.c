/* test-db.c - the in-memory database, its relations, generations, undo,
 * persistence and concurrency (server/db). */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "db/db.h"
#include "error.h"
#include "hmap.h"
#include "schema.h"
#include "util.h"
#include "value.h"

extern const struct xa_class_desc xa_cls_VM, xa_cls_VBD, xa_cls_VDI,
    xa_cls_host, xa_cls_SR;

#define VM   (&xa_cls_VM)
#define VBD  (&xa_cls_VBD)
#define HOST (&xa_cls_host)
#define VDI  (&xa_cls_VDI)

static int
fi(const struct xa_class_desc *cls, const char *name)
{
    int f = xa_schema_field_index(cls, name);
    assert_true(f >= 0);
    return f;
}

static void
ok(struct xa_error *e)
{
    if (e) {
        fail_msg("unexpected error %s %s", e->code,
                 e->n_params ? e->params[0] : "");
    }
}

static void
expect_error(struct xa_error *e, const char *code)
{
    assert_non_null(e);
    assert_string_equal(e->code, code);
    xa_error_free(e);
}

static struct xa_value *
rec(const char *k1, struct xa_value *v1, ...)
{
    struct xa_value *st = xa_struct();
    va_list ap;
    va_start(ap, v1);
    const char *k = k1;
    struct xa_value *v = v1;
    while (k) {
        xa_struct_set(st, k, v);
        k = va_arg(ap, const char *);
        if (k) {
            v = va_arg(ap, struct xa_value *);
        }
    }
    va_end(ap);
    return st;
}

static void
create(const struct xa_class_desc *cls, const char *ref,
       struct xa_value *record)
{
    struct xa_txn *t = xa_db_begin_write();
    ok(xa_db_create(t, cls, ref, record));
    ok(xa_db_commit(t));
}

static void
set(const struct xa_class_desc *cls, const char *ref, const char *field,
    struct xa_value *v)
{
    struct xa_txn *t = xa_db_begin_write();
    ok(xa_db_set_field(t, cls, ref, fi(cls, field), v));
    ok(xa_db_commit(t));
}

static void
destroy(const struct xa_class_desc *cls, const char *ref)
{
    struct xa_txn *t = xa_db_begin_write();
    ok(xa_db_destroy(t, cls, ref));
    ok(xa_db_commit(t));
}

/* The debug text of a field, for compact comparisons; caller frees. */
static char *
field_text(const struct xa_class_desc *cls, const char *ref, const char *field)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *v = xa_db_get_field(t, cls, ref, fi(cls, field));
    xa_db_end(t);
    if (!v) {
        return xa_strdup("(none)");
    }
    char *s = xa_value_to_debug(v);
    xa_value_unref(v);
    return s;
}

static void
assert_field(const struct xa_class_desc *cls, const char *ref,
             const char *field, const char *expect)
{
    char *s = field_text(cls, ref, field);
    if (strcmp(s, expect) != 0) {
        fail_msg("%s.%s of %s: got %s, expected %s", cls->name, field, ref, s,
                 expect);
    }
    free(s);
}

static void
assert_integrity(void)
{
    struct xa_error *e = xa_db_check_integrity();
    if (e) {
        fail_msg("integrity: %s", e->n_params ? e->params[0] : e->code);
    }
}

static int
setup_mem(void **state)
{
    XA_UNUSED(state);
    ok(xa_db_open(":memory:"));
    return 0;
}

static int
teardown(void **state)
{
    XA_UNUSED(state);
    xa_db_close();
    return 0;
}

/* --- hmap ---------------------------------------------------------------*/

static void
test_hmap(void **state)
{
    XA_UNUSED(state);
    struct xa_hmap m = {0};
    char key[32];
    for (intptr_t i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "k%ld", (long)i);
        assert_null(xa_hmap_put(&m, key, (void *)(i + 1)));
    }
    assert_int_equal(xa_hmap_count(&m), 10000);
    for (intptr_t i = 0; i < 10000; i += 2) {
        snprintf(key, sizeof key, "k%ld", (long)i);
        assert_int_equal((intptr_t)xa_hmap_remove(&m, key), i + 1);
    }
    for (intptr_t i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "k%ld", (long)i);
        void *v = xa_hmap_get(&m, key);
        if (i % 2) {
            assert_int_equal((intptr_t)v, i + 1);
        } else {
            assert_null(v);
        }
    }
    assert_int_equal((intptr_t)xa_hmap_put(&m, "k1", (void *)7), 2);
    assert_string_equal(xa_hmap_key(&m, "k1"), "k1");
    size_t n = 0;
    XA_HMAP_FOR_EACH (s, &m) {
        assert_non_null(s->val);
        n++;
    }
    assert_int_equal(n, 5000);
    xa_hmap_clear(&m, NULL);
    assert_int_equal(xa_hmap_count(&m), 0);
    assert_null(xa_hmap_get(&m, "k1"));
}

/* --- basic rows ---------------------------------------------------------*/

static void
test_create_get_set_destroy(void **state)
{
    XA_UNUSED(state);
    uint64_t g0 = xa_db_generation();
    create(VM, "OpaqueRef:vm1",
           rec("name_label", xa_string("one"), "memory_static_max",
               xa_int32(1024), "is_a_template", xa_bool(true), "other_config",
               rec("a", xa_string("b"), NULL), "HVM_shadow_multiplier",
               xa_int(2), "power_state", xa_string("Halted"), NULL));
    assert_int_equal(xa_db_generation(), g0 + 1);

    struct xa_txn *t = xa_db_begin_read();
    assert_true(xa_db_exists(t, VM, "OpaqueRef:vm1"));
    assert_false(xa_db_exists(t, VM, "OpaqueRef:nope"));
    assert_int_equal(xa_db_count(t, VM), 1);
    /* ints normalised to XA_INT, floats to XA_DOUBLE */
    const struct xa_value *p =
        xa_db_peek_field(t, VM, "OpaqueRef:vm1", fi(VM, "memory_static_max"));
    assert_int_equal(p->kind, XA_INT);
    assert_int_equal(p->u.i, 1024);
    p = xa_db_peek_field(t, VM, "OpaqueRef:vm1",
                         fi(VM, "HVM_shadow_multiplier"));
    assert_int_equal(p->kind, XA_DOUBLE);
    assert_null(xa_db_peek_field(t, VM, "OpaqueRef:vm1", fi(VM, "VBDs")));
    struct xa_value *r = xa_db_get_record(t, VM, "OpaqueRef:vm1");
    assert_non_null(r);
    assert_int_equal(r->u.st.n, VM->n_fields);
    for (size_t f = 0; f < VM->n_fields; f++) {
        assert_string_equal(r->u.st.m[f].key, VM->fields[f].name);
    }
    assert_string_equal(xa_struct_get_str(r, "name_label"), "one");
    assert_int_equal(xa_struct_get(r, "VBDs")->kind, XA_ARRAY);
    xa_value_unref(r);
    assert_null(xa_db_get_record(t, VM, "OpaqueRef:nope"));
    assert_null(xa_db_get_field(t, VM, "OpaqueRef:nope", 0));
    xa_db_end(t);

    set(VM, "OpaqueRef:vm1", "name_label", xa_string("uno"));
    assert_field(VM, "OpaqueRef:vm1", "name_label", "\"uno\"");
    assert_int_equal(xa_db_generation(), g0 + 2);
    /* setting the same value again is no change */
    set(VM, "OpaqueRef:vm1", "name_label", xa_string("uno"));
    assert_int_equal(xa_db_generation(), g0 + 2);

    t = xa_db_begin_write();
    expect_error(
        xa_db_set_field(t, VM, "OpaqueRef:vm1", fi(VM, "VBDs"), xa_array()),
        "INTERNAL_ERROR");
    expect_error(xa_db_set_field(t, VM, "OpaqueRef:nope", 3, xa_string("x")),
                 "HANDLE_INVALID");
    expect_error(xa_db_destroy(t, VM, "OpaqueRef:nope"), "HANDLE_INVALID");
    expect_error(xa_db_create(t, VM, "OpaqueRef:vm1", NULL), "INTERNAL_ERROR");
    ok(xa_db_commit(t));
    assert_int_equal(xa_db_generation(), g0 + 2);

    destroy(VM, "OpaqueRef:vm1");
    t = xa_db_begin_read();
    assert_false(xa_db_exists(t, VM, "OpaqueRef:vm1"));
    assert_int_equal(xa_db_count(t, VM), 0);
    xa_db_end(t);
    assert_integrity();
}

static void
test_defaults_and_uuid(void **state)
{
    XA_UNUSED(state);
    create(VBD, "OpaqueRef:vbd", NULL);
    /* schema default "true"; no default: the empty value of the type */
    assert_field(VBD, "OpaqueRef:vbd", "unpluggable", "true");
    assert_field(VBD, "OpaqueRef:vbd", "bootable", "false");
    assert_field(VBD, "OpaqueRef:vbd", "VM", "\"OpaqueRef:NULL\"");
    assert_field(VBD, "OpaqueRef:vbd", "other_config", "{}");
    assert_field(VBD, "OpaqueRef:vbd", "status_code", "0");

    struct xa_txn *t = xa_db_begin_read();
    const char *u = xa_value_str(
        xa_db_peek_field(t, VBD, "OpaqueRef:vbd", VBD->uuid_field));
    assert_true(xa_uuid_valid(u));
    char *ref = xa_db_ref_by_uuid(t, VBD, u);
    assert_string_equal(ref, "OpaqueRef:vbd");
    free(ref);
    assert_null(xa_db_ref_by_uuid(t, VBD, "nope"));
    xa_db_end(t);

    const char *fixed = "0e1c8c5c-7a0d-4d6b-9d0b-000000000001";
    create(VM, "OpaqueRef:a", rec("uuid", xa_string(fixed), NULL));
    create(VM, "OpaqueRef:b", rec("uuid", xa_string(""), NULL));
    t = xa_db_begin_write();
    expect_error(
        xa_db_create(t, VM, "OpaqueRef:c", rec("uuid", xa_string(fixed), NULL)),
        "INTERNAL_ERROR");
    /* moving b onto a's uuid is refused too */
    expect_error(
        xa_db_set_field(t, VM, "OpaqueRef:b", VM->uuid_field, xa_string(fixed)),
        "INTERNAL_ERROR");
    ok(xa_db_set_field(t, VM, "OpaqueRef:a", VM->uuid_field,
                       xa_string("new-uuid")));
    ok(xa_db_commit(t));
    t = xa_db_begin_read();
    assert_null(xa_db_ref_by_uuid(t, VM, fixed));
    ref = xa_db_ref_by_uuid(t, VM, "new-uuid");
    assert_string_equal(ref, "OpaqueRef:a");
    free(ref);
    assert_false(xa_db_exists(t, VM, "OpaqueRef:c"));
    xa_db_end(t);
    assert_integrity();
}

/* --- relations ----------------------------------------------------------*/

struct change {
    const struct xa_class_desc *cls;
    char ref[64];
    enum xa_db_op op;
    uint64_t gen;
};

struct changes {
    struct change c[64];
    size_t n;
};

static void
collect(const struct xa_class_desc *cls, const char *ref, enum xa_db_op op,
        uint64_t gen, void *ctx)
{
    struct changes *cs = ctx;
    assert_true(cs->n < XA_ARRAY_SIZE(cs->c));
    struct change *c = &cs->c[cs->n++];
    c->cls = cls;
    snprintf(c->ref, sizeof c->ref, "%s", ref);
    c->op = op;
    c->gen = gen;
}

static bool
changes_since(const struct xa_class_desc *cls, uint64_t since,
              struct changes *cs)
{
    memset(cs, 0, sizeof *cs);
    struct xa_txn *t = xa_db_begin_read();
    bool r = xa_db_changes_since(t, cls, since, collect, cs);
    xa_db_end(t);
    return r;
}

static const struct change *
find_change(const struct changes *cs, const char *ref)
{
    const struct change *found = NULL;
    for (size_t i = 0; i < cs->n; i++) {
        if (strcmp(cs->c[i].ref, ref) == 0) {
            assert_null(found); /* once per object */
            found = &cs->c[i];
        }
    }
    return found;
}

static void
test_relations(void **state)
{
    XA_UNUSED(state);
    create(VM, "OpaqueRef:A", NULL);
    create(VM, "OpaqueRef:B", NULL);
    create(VBD, "OpaqueRef:v1", rec("VM", xa_string("OpaqueRef:A"), NULL));
    create(VBD, "OpaqueRef:v2", rec("VM", xa_string("OpaqueRef:A"), NULL));
    assert_field(VM, "OpaqueRef:A", "VBDs",
                 "[\"OpaqueRef:v1\",\"OpaqueRef:v2\"]");
    assert_field(VM, "OpaqueRef:B", "VBDs", "[]");
    struct xa_txn *t = xa_db_begin_read();
    assert_int_equal(xa_db_count_related(t, VM, "OpaqueRef:A", fi(VM, "VBDs")),
                     2);
    xa_db_end(t);

    uint64_t g = xa_db_generation();
    set(VBD, "OpaqueRef:v1", "VM", xa_string("OpaqueRef:B"));
    assert_field(VM, "OpaqueRef:A", "VBDs", "[\"OpaqueRef:v2\"]");
    assert_field(VM, "OpaqueRef:B", "VBDs", "[\"OpaqueRef:v1\"]");
    /* both VMs and the VBD changed in that generation */
    struct changes cs;
    assert_true(changes_since(NULL, g, &cs));
    assert_int_equal(cs.n, 3);
    for (size_t i = 0; i < cs.n; i++) {
        assert_int_equal(cs.c[i].op, XA_DB_MOD);
        assert_int_equal(cs.c[i].gen, g + 1);
    }
    assert_non_null(find_change(&cs, "OpaqueRef:A"));
    assert_non_null(find_change(&cs, "OpaqueRef:B"));
    assert_non_null(find_change(&cs, "OpaqueRef:v1"));

    /* self-relation: VM.snapshot_of / VM.snapshots */
    create(VM, "OpaqueRef:snap",
           rec("snapshot_of", xa_string("OpaqueRef:B"), NULL));
    assert_field(VM, "OpaqueRef:B", "snapshots", "[\"OpaqueRef:snap\"]");

    /* a host with many resident VMs */
    create(HOST, "OpaqueRef:h", NULL);
    set(VM, "OpaqueRef:A", "resident_on", xa_string("OpaqueRef:h"));
    set(VM, "OpaqueRef:B", "resident_on", xa_string("OpaqueRef:h"));
    assert_field(HOST, "OpaqueRef:h", "resident_VMs",
                 "[\"OpaqueRef:A\",\"OpaqueRef:B\"]");
    assert_integrity();

    /* destroying B nulls what pointed at it, and only that */
    g = xa_db_generation();
    destroy(VM, "OpaqueRef:B");
    assert_field(VBD, "OpaqueRef:v1", "VM", "\"OpaqueRef:NULL\"");
    assert_field(VM, "OpaqueRef:snap", "snapshot_of", "\"OpaqueRef:NULL\"");
    assert_field(HOST, "OpaqueRef:h", "resident_VMs", "[\"OpaqueRef:A\"]");
    assert_true(changes_since(NULL, g, &cs));
    assert_int_equal(find_change(&cs, "OpaqueRef:B")->op, XA_DB_DEL);
    assert_int_equal(find_change(&cs, "OpaqueRef:v1")->op, XA_DB_MOD);
    assert_int_equal(find_change(&cs, "OpaqueRef:snap")->op, XA_DB_MOD);
    assert_int_equal(find_change(&cs, "OpaqueRef:h")->op, XA_DB_MOD);
    assert_null(find_change(&cs, "OpaqueRef:A"));
    assert_int_equal(cs.n, 4);

    /* destroying a VBD bumps its VM */
    g = xa_db_generation();
    destroy(VBD, "OpaqueRef:v2");
    assert_field(VM, "OpaqueRef:A", "VBDs", "[]");
    assert_true(changes_since(NULL, g, &cs));
    assert_int_equal(find_change(&cs, "OpaqueRef:A")->op, XA_DB_MOD);
    assert_int_equal(find_change(&cs, "OpaqueRef:v2")->op, XA_DB_DEL);
    assert_integrity();
}

static void
test_abort_restores(void **state)
{
    XA_UNUSED(state);
    create(HOST, "OpaqueRef:h", NULL);
    create(VM, "OpaqueRef:A",
           rec("name_label", xa_string("a"), "resident_on",
               xa_string("OpaqueRef:h"), NULL));
    create(VM, "OpaqueRef:B",
           rec("resident_on", xa_string("OpaqueRef:h"), NULL));
    create(VM, "OpaqueRef:C",
           rec("resident_on", xa_string("OpaqueRef:h"), NULL));
    for (int i = 0; i < 4; i++) {
        char ref[32];
        snprintf(ref, sizeof ref, "OpaqueRef:v%d", i);
        create(VBD, ref, rec("VM", xa_string("OpaqueRef:A"), NULL));
    }
    const char *vbds_a = "[\"OpaqueRef:v0\",\"OpaqueRef:v1\",\"OpaqueRef:v2\","
                         "\"OpaqueRef:v3\"]";
    const char *resident = "[\"OpaqueRef:A\",\"OpaqueRef:B\",\"OpaqueRef:C\"]";
    assert_field(VM, "OpaqueRef:A", "VBDs", vbds_a);
    char *uuid_a = field_text(VM, "OpaqueRef:A", "uuid");
    uint64_t g = xa_db_generation();

    struct xa_txn *t = xa_db_begin_write();
    ok(xa_db_set_field(t, VM, "OpaqueRef:A", fi(VM, "name_label"),
                       xa_string("changed")));
    ok(xa_db_set_field(t, VBD, "OpaqueRef:v1", fi(VBD, "VM"),
                       xa_string("OpaqueRef:B")));
    ok(xa_db_set_field(t, VBD, "OpaqueRef:v2", fi(VBD, "VM"),
                       xa_string("OpaqueRef:B")));
    ok(xa_db_create(t, VBD, "OpaqueRef:new",
                    rec("VM", xa_string("OpaqueRef:A"), NULL)));
    ok(xa_db_destroy(t, VM, "OpaqueRef:A"));
    ok(xa_db_destroy(t, VM, "OpaqueRef:C"));
    ok(xa_db_destroy(t, VBD, "OpaqueRef:v3"));
    ok(xa_db_create(t, VM, "OpaqueRef:A", NULL)); /* the ref, reused */
    ok(xa_db_set_field(t, VM, "OpaqueRef:B", fi(VM, "resident_on"),
                       xa_string("OpaqueRef:NULL")));
    /* reads inside the write transaction see its changes */
    assert_string_equal(
        xa_value_str(xa_db_peek_field(t, VBD, "OpaqueRef:v0", fi(VBD, "VM"))),
        "OpaqueRef:NULL");
    assert_int_equal(xa_db_count(t, VM), 2);
    xa_db_abort(t);

    assert_int_equal(xa_db_generation(), g);
    assert_field(VM, "OpaqueRef:A", "name_label", "\"a\"");
    assert_field(VM, "OpaqueRef:A", "VBDs", vbds_a);
    assert_field(VM, "OpaqueRef:B", "VBDs", "[]");
    assert_field(HOST, "OpaqueRef:h", "resident_VMs", resident);
    char *uuid_again = field_text(VM, "OpaqueRef:A", "uuid");
    assert_string_equal(uuid_a, uuid_again);
    free(uuid_a);
    free(uuid_again);
    t = xa_db_begin_read();
    assert_false(xa_db_exists(t, VBD, "OpaqueRef:new"));
    struct xa_value *all = xa_db_get_all(t, VM);
    char *s = xa_value_to_debug(all);
    assert_string_equal(s, resident);
    free(s);
    xa_value_unref(all);
    char *u = field_text(VM, "OpaqueRef:A", "uuid");
    u[strlen(u) - 1] = 0;
    char *ref = xa_db_ref_by_uuid(t, VM, u + 1);
    assert_string_equal(ref, "OpaqueRef:A");
    free(ref);
    free(u);
    xa_db_end(t);
    struct changes cs;
    assert_true(changes_since(NULL, g, &cs));
    assert_int_equal(cs.n, 0);
    assert_integrity();

    /* the same work committed shows up */
    t = xa_db_begin_write();
    ok(xa_db_destroy(t, VM, "OpaqueRef:A"));
    ok(xa_db_commit(t));
    assert_int_equal(xa_db_generation(), g + 1);
    assert_field(VBD, "OpaqueRef:v3", "VM", "\"OpaqueRef:NULL\"");
    assert_integrity();
}

/* --- generations --------------------------------------------------------*/

static int hook_calls;
static uint64_t hook_gen;

static void
hook(uint64_t gen, void *ctx)
{
    assert_ptr_equal(ctx, &hook_calls);
    hook_calls++;
    hook_gen = gen;
}

static void
test_generations(void **state)
{
    XA_UNUSED(state);
    xa_db_set_commit_hook(hook, &hook_calls);
    hook_calls = 0;
    uint64_t g0 = xa_db_generation();
    struct xa_txn *t = xa_db_begin_write();
    ok(xa_db_commit(t));
    assert_int_equal(xa_db_generation(), g0);
    assert_int_equal(hook_calls, 0);

    create(VM, "OpaqueRef:x", NULL); /* g0+1 */
    assert_int_equal(hook_calls, 1);
    assert_int_equal(hook_gen, g0 + 1);
    create(VM, "OpaqueRef:y", NULL);                      /* g0+2 */
    create(VM, "OpaqueRef:z", NULL);                      /* g0+3 */
    create(VBD, "OpaqueRef:d", NULL);                     /* g0+4 */
    set(VM, "OpaqueRef:x", "name_label", xa_string("1")); /* g0+5 */
    set(VM, "OpaqueRef:x", "name_label", xa_string("2")); /* g0+6 */
    destroy(VM, "OpaqueRef:y");                           /* g0+7 */
    destroy(VM, "OpaqueRef:z");                           /* g0+8 */

    /* create and destroy inside one transaction: no generation at all */
    t = xa_db_begin_write();
    ok(xa_db_create(t, VM, "OpaqueRef:tmp", NULL));
    ok(xa_db_destroy(t, VM, "OpaqueRef:tmp"));
    ok(xa_db_commit(t));
    assert_int_equal(xa_db_generation(), g0 + 8);

    struct changes cs;
    assert_true(changes_since(VM, g0 + 2, &cs));
    /* x modified (twice, reported once), y deleted, z created after */
    assert_int_equal(cs.n, 2);
    assert_int_equal(find_change(&cs, "OpaqueRef:x")->op, XA_DB_MOD);
    assert_int_equal(find_change(&cs, "OpaqueRef:x")->gen, g0 + 6);
    assert_int_equal(find_change(&cs, "OpaqueRef:y")->op, XA_DB_DEL);
    assert_int_equal(find_change(&cs, "OpaqueRef:y")->gen, g0 + 7);
    assert_null(find_change(&cs, "OpaqueRef:z"));

    assert_true(changes_since(NULL, g0, &cs));
    /* x and d created after g0; y and z came and went */
    assert_int_equal(cs.n, 2);
    assert_int_equal(find_change(&cs, "OpaqueRef:x")->op, XA_DB_ADD);
    assert_int_equal(find_change(&cs, "OpaqueRef:d")->op, XA_DB_ADD);
    /* reported in generation order */
    assert_string_equal(cs.c[0].ref, "OpaqueRef:d");
    assert_string_equal(cs.c[1].ref, "OpaqueRef:x");

    assert_true(changes_since(VBD, g0 + 5, &cs));
    assert_int_equal(cs.n, 0);
    assert_true(changes_since(NULL, g0 + 8, &cs));
    assert_int_equal(cs.n, 0);
    xa_db_set_commit_hook(NULL, NULL);
}

static void
test_get_all_order(void **state)
{
    XA_UNUSED(state);
    char ref[32];
    struct xa_txn *t = xa_db_begin_write();
    for (int i = 0; i < 100; i++) {
        snprintf(ref, sizeof ref, "OpaqueRef:%03d", 99 - i);
        ok(xa_db_create(t, VDI, ref, NULL));
    }
    ok(xa_db_commit(t));
    t = xa_db_begin_write();
    for (int i = 0; i < 100; i += 3) {
        snprintf(ref, sizeof ref, "OpaqueRef:%03d", i);
        ok(xa_db_destroy(t, VDI, ref));
    }
    ok(xa_db_commit(t));
    t = xa_db_begin_read();
    struct xa_value *all = xa_db_get_all(t, VDI);
    assert_int_equal(all->u.arr.n, 66);
    assert_int_equal(xa_db_count(t, VDI), 66);
    int last = 100;
    for (size_t i = 0; i < all->u.arr.n; i++) {
        int n = atoi(all->u.arr.items[i]->u.str.s + strlen("OpaqueRef:"));
        assert_true(n < last);
        assert_true(n % 3 != 0);
        last = n;
    }
    xa_value_unref(all);
    xa_db_end(t);
}

static bool
count_to_five(const char *ref, void *ctx)
{
    XA_UNUSED(ref);
    int *n = ctx;
    return ++*n < 5;
}

static void
test_foreach_and_where(void **state)
{
    XA_UNUSED(state);
    char ref[32];
    for (int i = 0; i < 10; i++) {
        snprintf(ref, sizeof ref, "OpaqueRef:vm%d", i);
        create(VM, ref,
               rec("name_label", xa_string(i % 2 ? "odd" : "even"),
                   "user_version", xa_int(i), "is_a_template", xa_bool(i == 3),
                   NULL));
    }
    create(VBD, "OpaqueRef:vbd", rec("VM", xa_string("OpaqueRef:vm4"), NULL));
    struct xa_txn *t = xa_db_begin_read();
    int n = 0;
    xa_db_foreach(t, VM, count_to_five, &n);
    assert_int_equal(n, 5);

    struct {
        const char *expr;
        const char *refs;
    } cases[] = {
        {"field \"name__label\" = \"odd\" and field \"user_version\" <> \"5\"",
         "[\"OpaqueRef:vm1\",\"OpaqueRef:vm3\",\"OpaqueRef:vm7\","
         "\"OpaqueRef:vm9\"]"},
        {"field \"is_a_template\" = \"true\"", "[\"OpaqueRef:vm3\"]"},
        {"field \"user_version\" = \"8\" or field \"user_version\" = \"2\"",
         "[\"OpaqueRef:vm2\",\"OpaqueRef:vm8\"]"},
        {"\"OpaqueRef:vbd\" = field \"VBDs\" or field \"VBDs\" = "
         "\"('OpaqueRef:vbd')\"",
         "[\"OpaqueRef:vm4\"]"},
        {"false", "[]"},
        {"not (true)", "[]"},
        {"field \"power_state\" <> \"Halted\"", "[]"},
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(cases); i++) {
        struct xa_value *refs = NULL;
        ok(xa_db_where(t, VM, cases[i].expr, &refs));
        char *s = xa_value_to_debug(refs);
        if (strcmp(s, cases[i].refs) != 0) {
            fail_msg("%s: got %s", cases[i].expr, s);
        }
        free(s);
        xa_value_unref(refs);
    }
    struct xa_value *refs = NULL;
    ok(xa_db_where(t, VM, "true", &refs));
    assert_int_equal(refs->u.arr.n, 10);
    xa_value_unref(refs);
    expect_error(xa_db_where(t, VM, "field \"nope\" = \"x\"", &refs),
                 "INTERNAL_ERROR");
    assert_null(refs);
    expect_error(xa_db_where(t, VM, "field \"name_label\" =", &refs),
                 "INTERNAL_ERROR");
    xa_db_end(t);
}

/* --- persistence --------------------------------------------------------*/

static char tmpdir[256];
extern const struct xa_class_desc xa_cls_task;

static void
make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test-db-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

static void
remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    char path[512];
    while (d && (de = readdir(d))) {
        if (de->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", tmpdir, de->d_name);
            unlink(path);
        }
    }
    if (d) {
        closedir(d);
    }
    rmdir(tmpdir);
}

static char *
db_uri(void)
{
    return xa_asprintf("sqlite:%s/state.db", tmpdir);
}

static void
test_persistence(void **state)
{
    XA_UNUSED(state);
    make_tmpdir();
    char *uri = db_uri();
    ok(xa_db_open(uri));
    assert_int_equal(xa_db_generation(), 0);
    struct xa_value *tags = xa_array();
    xa_array_append(tags, xa_string("t1"));
    xa_array_append(tags, xa_string("quote\" back\\slash \x01 ünï"));
    create(HOST, "OpaqueRef:h", rec("name_label", xa_string("host"), NULL));
    create(VM, "OpaqueRef:A",
           rec("name_label", xa_string("alpha"), "memory_static_max",
               xa_int(INT64_C(1) << 40), "HVM_shadow_multiplier",
               xa_double(1.5), "is_a_template", xa_bool(true), "snapshot_time",
               xa_datetime("20240102T03:04:05Z"), "other_config",
               rec("k", xa_string("v"), "k2", xa_string(""), NULL), "tags",
               tags, "power_state", xa_string("Running"), "resident_on",
               xa_string("OpaqueRef:h"), NULL));
    create(VM, "OpaqueRef:B", NULL);
    create(VM, "OpaqueRef:gone", NULL);
    create(VBD, "OpaqueRef:v1", rec("VM", xa_string("OpaqueRef:A"), NULL));
    create(VBD, "OpaqueRef:v2", rec("VM", xa_string("OpaqueRef:A"), NULL));
    set(VM, "OpaqueRef:B", "name_label", xa_string("beta"));
    destroy(VM, "OpaqueRef:gone");
    uint64_t g = xa_db_generation();
    assert_int_equal(g, 8);
    /* tasks do not persist: no write, yet a generation */
    create(&xa_cls_task, "OpaqueRef:task", NULL);
    assert_int_equal(xa_db_generation(), g + 1);
    struct xa_txn *t = xa_db_begin_read();
    struct xa_value *before = xa_db_get_record(t, VM, "OpaqueRef:A");
    xa_db_end(t);
    xa_db_close();

    ok(xa_db_open(uri));
    assert_int_equal(xa_db_generation(), g);
    t = xa_db_begin_read();
    assert_false(xa_db_exists(t, &xa_cls_task, "OpaqueRef:task"));
    struct xa_value *after = xa_db_get_record(t, VM, "OpaqueRef:A");
    assert_true(xa_value_equal(before, after));
    assert_int_equal(xa_struct_get(after, "memory_static_max")->kind, XA_INT);
    assert_int_equal(xa_struct_get(after, "HVM_shadow_multiplier")->kind,
                     XA_DOUBLE);
    assert_int_equal(xa_struct_get(after, "snapshot_time")->kind, XA_DATETIME);
    assert_int_equal(xa_struct_get(after, "is_a_template")->kind, XA_BOOL);
    xa_value_unref(before);
    xa_value_unref(after);
    assert_false(xa_db_exists(t, VM, "OpaqueRef:gone"));
    struct xa_value *all = xa_db_get_all(t, VM);
    char *s = xa_value_to_debug(all);
    assert_string_equal(s, "[\"OpaqueRef:A\",\"OpaqueRef:B\"]");
    free(s);
    xa_value_unref(all);
    xa_db_end(t);
    assert_field(VM, "OpaqueRef:A", "VBDs",
                 "[\"OpaqueRef:v1\",\"OpaqueRef:v2\"]");
    assert_field(HOST, "OpaqueRef:h", "resident_VMs", "[\"OpaqueRef:A\"]");
    assert_field(VM, "OpaqueRef:B", "name_label", "\"beta\"");
    assert_integrity();

    /* deletions before the restart are unknown: resync, except from 0 */
    struct changes cs;
    assert_false(changes_since(NULL, g - 1, &cs));
    assert_false(changes_since(NULL, g + 1, &cs)); /* the lost task's */
    assert_true(changes_since(NULL, 0, &cs));
    assert_int_equal(cs.n, 5);
    assert_int_equal(find_change(&cs, "OpaqueRef:B")->gen, 7);
    assert_true(changes_since(NULL, g, &cs));
    assert_int_equal(cs.n, 0);

    /* the generation continues; a destroy persists */
    destroy(VBD, "OpaqueRef:v1");
    assert_int_equal(xa_db_generation(), g + 1);
    assert_true(changes_since(NULL, g, &cs));
    assert_int_equal(cs.n, 2); /* v1 deleted, A modified */
    xa_db_close();
    ok(xa_db_open(uri));
    assert_int_equal(xa_db_generation(), g + 1);
    assert_field(VM, "OpaqueRef:A", "VBDs", "[\"OpaqueRef:v2\"]");
    assert_integrity();
    xa_db_close();

    /* a bad location fails to open */
    struct xa_error *e = xa_db_open("sqlite:/nonexistent/dir/x.db");
    expect_error(e, "INTERNAL_ERROR");
    expect_error(xa_db_open("postgresql://nowhere"), "INTERNAL_ERROR");
    free(uri);
    remove_tmpdir();
}

/* --- replication ----------------------------------------------------------*/

extern const struct xa_class_desc xa_cls_session;

/* The rows an export names, as "class ref" lines. */
static void
export_line(void *ctx, const char *cls, const char *ref, const char *json)
{
    XA_UNUSED(json);
    xa_buf_printf(ctx, "%s %s\n", cls, ref);
}

/* What a remote commit was handed, as "class ref field..." lines. */
static void
remote_line(struct xa_buf *b, const struct xa_db_change *c)
{
    xa_buf_printf(b, "%s %s", c->cls, c->ref);
    for (size_t k = 0; k < c->n_fields; k++) {
        xa_buf_printf(b, " %s", c->fields[k]);
    }
    xa_buf_putc(b, '\n');
}

static struct xa_error *
remote_commit(void *ctx, const struct xa_db_change *ch, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        remote_line(ctx, &ch[i]);
    }
    return NULL;
}

static void
test_replicated_classes(void **state)
{
    XA_UNUSED(state);
    create(VM, "OpaqueRef:A", NULL);
    create(&xa_cls_task, "OpaqueRef:T", NULL);
    create(&xa_cls_session, "OpaqueRef:S", NULL);
    /* the stream carries persisted rows and tasks, not sessions */
    struct xa_buf b = {0};
    uint64_t gen = 0;
    assert_true(xa_db_export_since(0, export_line, &b, &gen));
    assert_int_equal(gen, 3);
    assert_string_equal(b.data, "VM OpaqueRef:A\ntask OpaqueRef:T\n");
    xa_buf_free(&b);
    /* a member's write to a task goes to the master, undone here */
    xa_db_set_remote_commit(remote_commit, &b);
    set(&xa_cls_task, "OpaqueRef:T", "progress", xa_double(0.5));
    assert_string_equal(b.data, "task OpaqueRef:T progress\n");
    assert_field(&xa_cls_task, "OpaqueRef:T", "progress", "0.0");
    xa_buf_free(&b);
    /* its own sessions stay its own */
    set(&xa_cls_session, "OpaqueRef:S", "auth_user_name", xa_string("me"));
    assert_null(b.data);
    assert_field(&xa_cls_session, "OpaqueRef:S", "auth_user_name", "\"me\"");
    xa_db_set_remote_commit(NULL, NULL);
    assert_int_equal(xa_db_generation(), 4);
}

/* --- concurrency --------------------------------------------------------*/

#define N_WRITERS 8
#define N_COMMITS 25

static volatile int readers_stop;

static void *
writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    char ref[64];
    for (int i = 0; i < N_COMMITS; i++) {
        snprintf(ref, sizeof ref, "OpaqueRef:w%d-%d", id, i);
        struct xa_txn *t = xa_db_begin_write();
        ok(xa_db_create(t, VM, ref,
                        rec("name_label", xa_string(ref), "resident_on",
                            xa_string("OpaqueRef:h"), NULL)));
        ok(xa_db_commit(t));
    }
    return NULL;
}

static void *
reader(void *arg)
{
    size_t *reads = arg;
    while (!__atomic_load_n(&readers_stop, __ATOMIC_ACQUIRE)) {
        struct xa_txn *t = xa_db_begin_read();
        struct xa_value *all = xa_db_get_all(t, VM);
        for (size_t i = 0; i < all->u.arr.n; i++) {
            struct xa_value *r =
                xa_db_get_record(t, VM, all->u.arr.items[i]->u.str.s);
            assert_non_null(r);
            xa_value_unref(r);
        }
        xa_value_unref(all);
        struct xa_value *h =
            xa_db_get_field(t, HOST, "OpaqueRef:h", fi(HOST, "resident_VMs"));
        xa_value_unref(h);
        xa_db_end(t);
        (*reads)++;
    }
    return NULL;
}

static void
test_concurrency(void **state)
{
    XA_UNUSED(state);
    make_tmpdir();
    char *uri = db_uri();
    ok(xa_db_open(uri));
    create(HOST, "OpaqueRef:h", NULL);
    pthread_t w[N_WRITERS], r;
    size_t reads = 0;
    readers_stop = 0;
    double t0 = xa_monotonic();
    assert_int_equal(pthread_create(&r, NULL, reader, &reads), 0);
    for (intptr_t i = 0; i < N_WRITERS; i++) {
        assert_int_equal(pthread_create(&w[i], NULL, writer, (void *)i), 0);
    }
    for (int i = 0; i < N_WRITERS; i++) {
        pthread_join(w[i], NULL);
    }
    __atomic_store_n(&readers_stop, 1, __ATOMIC_RELEASE);
    pthread_join(r, NULL);
    double dt = xa_monotonic() - t0;
    print_message("[ info ] %d durable commits from %d threads in %.3f s "
                  "(%zu parallel full reads)\n",
                  N_WRITERS * N_COMMITS, N_WRITERS, dt, reads);
    assert_int_equal(xa_db_generation(), 1 + N_WRITERS * N_COMMITS);
    xa_db_close();

    ok(xa_db_open(uri));
    struct xa_txn *t = xa_db_begin_read();
    assert_int_equal(xa_db_count(t, VM), N_WRITERS * N_COMMITS);
    assert_int_equal(
        xa_db_count_related(t, HOST, "OpaqueRef:h", fi(HOST, "resident_VMs")),
        N_WRITERS * N_COMMITS);
    xa_db_end(t);
    assert_int_equal(xa_db_generation(), 1 + N_WRITERS * N_COMMITS);
    assert_integrity();
    xa_db_close();
    free(uri);
    remove_tmpdir();
}

/* --- timing -------------------------------------------------------------*/

static void
test_timing_get_record(void **state)
{
    XA_UNUSED(state);
    enum { N = 10000 };
    char ref[64];
    create(HOST, "OpaqueRef:h", NULL);
    double t0 = xa_monotonic();
    struct xa_txn *t = xa_db_begin_write();
    for (int i = 0; i < N; i++) {
        snprintf(ref, sizeof ref, "OpaqueRef:vm-%05d", i);
        ok(xa_db_create(t, VM, ref,
                        rec("name_label", xa_string(ref), "resident_on",
                            xa_string("OpaqueRef:h"), "other_config",
                            rec("a", xa_string("b"), NULL), NULL)));
    }
    ok(xa_db_commit(t));
    double t1 = xa_monotonic();
    t = xa_db_begin_read();
    struct xa_value *all = xa_db_get_all(t, VM);
    size_t members = 0;
    for (size_t i = 0; i < all->u.arr.n; i++) {
        struct xa_value *r =
            xa_db_get_record(t, VM, all->u.arr.items[i]->u.str.s);
        members += r->u.st.n;
        xa_value_unref(r);
    }
    xa_value_unref(all);
    double t2 = xa_monotonic();
    struct xa_value *h = xa_db_get_record(t, HOST, "OpaqueRef:h");
    assert_int_equal(xa_struct_get(h, "resident_VMs")->u.arr.n, N);
    xa_value_unref(h);
    double t3 = xa_monotonic();
    struct xa_value *refs;
    ok(xa_db_where(t, VM, "field \"name__label\" = \"OpaqueRef:vm-05000\"",
                   &refs));
    assert_int_equal(refs->u.arr.n, 1);
    xa_value_unref(refs);
    double t4 = xa_monotonic();
    xa_db_end(t);
    assert_int_equal(members, (size_t)N * VM->n_fields);
    print_message("[ info ] create %d VMs: %.1f ms; get_record of all "
                  "(%zu fields each): %.1f ms (%.2f us/record); host record "
                  "with %d resident_VMs: %.2f ms; where over %d: %.2f ms\n",
                  N, (t1 - t0) * 1e3, VM->n_fields, (t2 - t1) * 1e3,
                  (t2 - t1) * 1e6 / N, N, (t3 - t2) * 1e3, N, (t4 - t3) * 1e3);
    assert_integrity();
}

int
main(void)
{
    xa_schema_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmap),
        cmocka_unit_test_setup_teardown(test_create_get_set_destroy, setup_mem,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_defaults_and_uuid, setup_mem,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_relations, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_abort_restores, setup_mem,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_generations, setup_mem, teardown),
        cmocka_unit_test_setup_teardown(test_get_all_order, setup_mem,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_foreach_and_where, setup_mem,
                                        teardown),
        cmocka_unit_test(test_persistence),
        cmocka_unit_test_setup_teardown(test_replicated_classes, setup_mem,
                                        teardown),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test_setup_teardown(test_timing_get_record, setup_mem,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
