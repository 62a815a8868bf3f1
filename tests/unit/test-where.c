/* test-where.c - get_all_records_where's expression language
 * (server/db/where.h): parsing, binding, evaluation and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "db/where.h"
#include "error.h"
#include "schema.h"
#include "util.h"
#include "value.h"

extern const struct xa_class_desc xa_cls_VM;

/* A fake VM row: field index -> text. */
struct row {
    const char *name_label;
    const char *power_state;
    const char *user_version;
};

static const char *
row_text(int field, struct xa_buf *scratch, void *ctx)
{
    const struct row *r = ctx;
    const char *name = xa_cls_VM.fields[field].name;
    XA_UNUSED(scratch);
    if (strcmp(name, "name_label") == 0) {
        return r->name_label;
    }
    if (strcmp(name, "power_state") == 0) {
        return r->power_state;
    }
    if (strcmp(name, "user_version") == 0) {
        return r->user_version;
    }
    return "";
}

/* Parses, binds to VM and evaluates against 'r'; -1 on any error. */
static int
run(const char *expr, const struct row *r)
{
    struct xa_where *w = NULL;
    struct xa_error *e = xa_where_parse(expr, &w);
    if (!e) {
        e = xa_where_bind(w, &xa_cls_VM);
    }
    if (e) {
        assert_string_equal(e->code, "INTERNAL_ERROR");
        assert_true(e->n_params == 1);
        xa_error_free(e);
        xa_where_free(w);
        return -1;
    }
    int res = xa_where_eval(w, row_text, (void *)r) ? 1 : 0;
    xa_where_free(w);
    return res;
}

static const struct row vm = {"web", "Running", "3"};

static void
test_basics(void **state)
{
    XA_UNUSED(state);
    assert_int_equal(run("true", &vm), 1);
    assert_int_equal(run("false", &vm), 0);
    assert_int_equal(run("  ( true )\n", &vm), 1);
    assert_int_equal(run("field \"name_label\" = \"web\"", &vm), 1);
    assert_int_equal(run("field \"name__label\" = \"web\"", &vm), 1);
    assert_int_equal(run("\"web\" = field \"name__label\"", &vm), 1);
    assert_int_equal(run("field \"name__label\" = \"db\"", &vm), 0);
    assert_int_equal(run("field \"name__label\" <> \"db\"", &vm), 1);
    assert_int_equal(run("\"a\" = \"a\"", &vm), 1);
    assert_int_equal(run("\"a\" <> \"a\"", &vm), 0);
    assert_int_equal(run("\"\" = \"\"", &vm), 1);
    assert_int_equal(run("field \"user_version\" = \"3\"", &vm), 1);
    assert_int_equal(run("not field \"power_state\" = \"Halted\"", &vm), 1);
    assert_int_equal(run("not not true", &vm), 1);
    /* strings may hold anything but '"' */
    assert_int_equal(run("\"a and (b\" = \"a and (b\"", &vm), 1);
}

static void
test_precedence(void **state)
{
    XA_UNUSED(state);
    /* and/or share precedence, left-associative: (true or true) and false */
    assert_int_equal(run("true or true and false", &vm), 0);
    assert_int_equal(run("true or (true and false)", &vm), 1);
    /* (false and false) or true */
    assert_int_equal(run("false and false or true", &vm), 1);
    /* not binds tighter: (not false) and false */
    assert_int_equal(run("not false and false", &vm), 0);
    assert_int_equal(run("not (false and false)", &vm), 1);
    assert_int_equal(
        run("field \"power_state\" = \"Running\" and field \"name__label\" = "
            "\"web\" and not field \"user_version\" = \"4\"",
            &vm),
        1);
    assert_int_equal(run("false or false or false or true", &vm), 1);
    assert_int_equal(run("true and true and true and false", &vm), 0);
}

static void
test_malformed(void **state)
{
    XA_UNUSED(state);
    static const char *const bad[] = {
        "",
        "   ",
        "(",
        ")",
        "()",
        "(true",
        "true)",
        "true true",
        "and",
        "true and",
        "or true",
        "not",
        "field",
        "field name_label = \"x\"",
        "field \"name_label\"",
        "field \"name_label\" =",
        "field \"name_label\" == \"x\"",
        "field \"name_label\" != \"x\"",
        "field \"name_label\" < \"x\"",
        "\"unterminated",
        "field \"name_label\" = \"x",
        "\"x\"",
        "True",
        "truex",
        "field \"nope\" = \"x\"",
        "field \"name__label__\" = \"x\"",
        "\"a\" = field \"no_such_field\"",
        "= \"a\"",
        "true = true",
        "\"a\" = \"b\" = \"c\"",
        "field \"name_label\" = field",
        "\x01",
        "true and \xff",
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(bad); i++) {
        if (run(bad[i], &vm) != -1) {
            fail_msg("accepted malformed: %s", bad[i]);
        }
    }
    struct xa_where *w = (struct xa_where *)1;
    struct xa_error *e = xa_where_parse(NULL, &w);
    assert_non_null(e);
    assert_null(w);
    xa_error_free(e);
}

static char *
repeat(const char *prefix, const char *unit, size_t n, const char *mid,
       const char *close, size_t n_close)
{
    struct xa_buf b = {0};
    xa_buf_puts(&b, prefix);
    for (size_t i = 0; i < n; i++) {
        xa_buf_puts(&b, unit);
    }
    xa_buf_puts(&b, mid);
    for (size_t i = 0; i < n_close; i++) {
        xa_buf_puts(&b, close);
    }
    return xa_buf_steal(&b);
}

static void
test_deep_nesting(void **state)
{
    XA_UNUSED(state);
    /* within the limit: fine */
    char *s = repeat("", "(", 100, "true", ")", 100);
    assert_int_equal(run(s, &vm), 1);
    free(s);
    s = repeat("", "not ", 100, "true", "", 0);
    assert_int_equal(run(s, &vm), 1);
    free(s);
    /* hostile depth: an error, not a crash */
    s = repeat("", "(", 1000000, "true", ")", 1000000);
    assert_int_equal(run(s, &vm), -1);
    free(s);
    s = repeat("", "not ", 1000000, "true", "", 0);
    assert_int_equal(run(s, &vm), -1);
    free(s);
    s = repeat("", "(", 1000000, "", "", 0);
    assert_int_equal(run(s, &vm), -1);
    free(s);
    /* long flat chains have no depth at all */
    s = repeat("true", " and true", 200000, " and false", "", 0);
    assert_int_equal(run(s, &vm), 0);
    free(s);
    s = repeat("false", " or (not false and true)", 100000, "", "", 0);
    assert_int_equal(run(s, &vm), 1);
    free(s);
}

static void
test_value_text(void **state)
{
    XA_UNUSED(state);
    struct {
        struct xa_value *v;
        const char *text;
    } cases[] = {
        {xa_string("x y"), "x y"},
        {xa_int(-42), "-42"},
        {xa_bool(true), "true"},
        {xa_bool(false), "false"},
        {xa_double(1.5), "1.5"},
        {xa_datetime("20240101T00:00:00Z"), "20240101T00:00:00Z"},
        {xa_array(), "()"},
        {xa_struct(), "()"},
    };
    xa_array_append(cases[6].v, xa_string("a"));
    xa_array_append(cases[6].v, xa_string("it's"));
    cases[6].text = "('a' 'it\\'s')";
    xa_struct_add(cases[7].v, "k", xa_string("v"));
    cases[7].text = "(('k' 'v'))";
    for (size_t i = 0; i < XA_ARRAY_SIZE(cases); i++) {
        struct xa_buf b = {0};
        xa_where_value_text(NULL, cases[i].v, &b);
        assert_string_equal(b.data ? b.data : "", cases[i].text);
        xa_buf_free(&b);
        xa_value_unref(cases[i].v);
    }
}

/* Cheap fuzz: random token soup must parse or fail cleanly. */
static void
test_token_soup(void **state)
{
    XA_UNUSED(state);
    static const char *const toks[] = {
        "true",
        "false",
        "(",
        ")",
        "and",
        "or",
        "not",
        "=",
        "<>",
        "field",
        "\"name_label\"",
        "\"web\"",
        "\"",
        " ",
        "x",
    };
    unsigned seed = 12345;
    for (int iter = 0; iter < 20000; iter++) {
        struct xa_buf b = {0};
        int n = 1 + (int)(rand_r(&seed) % 24);
        for (int i = 0; i < n; i++) {
            xa_buf_puts(&b, toks[rand_r(&seed) % XA_ARRAY_SIZE(toks)]);
            xa_buf_putc(&b, ' ');
        }
        int r = run(b.data, &vm);
        assert_true(r >= -1 && r <= 1);
        xa_buf_free(&b);
    }
}

int
main(void)
{
    xa_schema_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),     cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_malformed),  cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_value_text), cmocka_unit_test(test_token_soup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
