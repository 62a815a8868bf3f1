/* test-jsonrpc.c - the JSON-RPC codec: exact writer bytes for both
 * protocol versions, parsing, round trips and hostile requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <math.h>

#include "error.h"
#include "json-write.h"
#include "rpc/jsonrpc.h"
#include "util.h"
#include "value.h"

static void
check_value_bytes(struct xa_value *v, const char *want)
{
    struct xa_buf b = {0};
    xa_jsonrpc_write_value(&b, v);
    assert_string_equal(b.data, want);
    xa_buf_free(&b);
    xa_value_unref(v);
}

struct call {
    char *method;
    struct xa_value *params;
    struct xa_value *id;
    int version;
};

static void
call_free(struct call *c)
{
    free(c->method);
    xa_value_unref(c->params);
    xa_value_unref(c->id);
}

static void
parse_ok(const char *doc, struct call *c)
{
    struct xa_error *e = xa_jsonrpc_parse_call(doc, strlen(doc), &c->method,
                                               &c->params, &c->id, &c->version);
    if (e) {
        fprintf(stderr, "unexpected error %s %s\n", e->code,
                e->n_params ? e->params[0] : "");
    }
    assert_null(e);
    assert_non_null(c->method);
    assert_int_equal(c->params->kind, XA_ARRAY);
    assert_non_null(c->id);
}

/* Parses 'len' bytes that must fail with 'code' (any when NULL). */
static struct xa_error *
parse_fail_n(const char *doc, size_t len, const char *code)
{
    struct call c;
    c.method = (char *)"sentinel";
    c.params = c.id = (struct xa_value *)&c;
    c.version = 7;
    struct xa_error *e = xa_jsonrpc_parse_call(doc, len, &c.method, &c.params,
                                               &c.id, &c.version);
    assert_non_null(e);
    if (code) {
        assert_string_equal(e->code, code);
    }
    assert_null(c.method);
    assert_null(c.params);
    if (strcmp(e->code, "JSONRPC_PARSE_ERROR") == 0) {
        assert_null(c.id);
        assert_int_equal(c.version, 0);
    } else {
        /* a well-formed request with a bad parameter keeps its id */
        assert_non_null(c.id);
        assert_true(c.version == 1 || c.version == 2);
        xa_value_unref(c.id);
    }
    return e;
}

static void
parse_fail(const char *doc, const char *code)
{
    xa_error_free(parse_fail_n(doc, strlen(doc), code));
}

/* --- writer ----------------------------------------------------------- */

static void
test_success(void **state)
{
    (void)state;
    struct xa_buf b = {0};
    struct xa_value *id = xa_int(7);
    struct xa_value *sid = xa_string("abc");
    struct xa_value *s = xa_string("OpaqueRef:x");
    struct xa_value *i = xa_int(123);

    xa_jsonrpc_write_success(&b, 1, id, s);
    assert_string_equal(b.data,
                        "{\"result\":\"OpaqueRef:x\",\"error\":null,\"id\":7}");
    xa_buf_free(&b);
    xa_jsonrpc_write_success(&b, 2, id, s);
    assert_string_equal(b.data,
                        "{\"jsonrpc\":\"2.0\",\"result\":\"OpaqueRef:x\","
                        "\"id\":7}");
    xa_buf_free(&b);
    xa_jsonrpc_write_success(&b, 2, sid, i);
    assert_string_equal(b.data,
                        "{\"jsonrpc\":\"2.0\",\"result\":123,\"id\":\"abc\"}");
    xa_buf_free(&b);
    xa_jsonrpc_write_success(&b, 1, sid, NULL);
    assert_string_equal(b.data,
                        "{\"result\":\"\",\"error\":null,\"id\":\"abc\"}");
    xa_buf_free(&b);
    xa_jsonrpc_write_success(&b, 2, id, NULL);
    assert_string_equal(b.data,
                        "{\"jsonrpc\":\"2.0\",\"result\":\"\",\"id\":7}");
    xa_buf_free(&b);

    xa_value_unref(id);
    xa_value_unref(sid);
    xa_value_unref(s);
    xa_value_unref(i);
}

static void
test_failure(void **state)
{
    (void)state;
    struct xa_buf b = {0};
    struct xa_value *id = xa_int(3);
    struct xa_error *e = xa_error_new("HANDLE_INVALID", 2, "VM", "Opaque\"");
    struct xa_error *bare = xa_error_new("SESSION_INVALID", 0);

    xa_jsonrpc_write_failure(&b, 1, id, e);
    assert_string_equal(b.data,
                        "{\"result\":null,\"error\":[\"HANDLE_INVALID\","
                        "\"VM\",\"Opaque\\\"\"],\"id\":3}");
    xa_buf_free(&b);
    xa_jsonrpc_write_failure(&b, 2, id, e);
    assert_string_equal(b.data, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,"
                                "\"message\":\"HANDLE_INVALID\",\"data\":"
                                "[\"VM\",\"Opaque\\\"\"]},\"id\":3}");
    xa_buf_free(&b);
    xa_jsonrpc_write_failure(&b, 1, id, bare);
    assert_string_equal(
        b.data, "{\"result\":null,\"error\":[\"SESSION_INVALID\"],\"id\":3}");
    xa_buf_free(&b);
    xa_jsonrpc_write_failure(&b, 2, NULL, bare);
    assert_string_equal(b.data, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,"
                                "\"message\":\"SESSION_INVALID\",\"data\":[]},"
                                "\"id\":null}");
    xa_buf_free(&b);

    xa_error_free(e);
    xa_error_free(bare);
    xa_value_unref(id);
}

static void
test_write_scalars(void **state)
{
    (void)state;
    check_value_bytes(xa_int(0), "0");
    check_value_bytes(xa_int(INT64_MAX), "9223372036854775807");
    check_value_bytes(xa_int(INT64_MIN), "-9223372036854775808");
    check_value_bytes(xa_int32(-5), "-5");
    check_value_bytes(xa_bool(true), "true");
    check_value_bytes(xa_bool(false), "false");
    check_value_bytes(xa_nil(), "null");
    check_value_bytes(NULL, "null");
    check_value_bytes(xa_datetime("20250319T04:16:24Z"),
                      "\"20250319T04:16:24Z\"");
    check_value_bytes(xa_double(0.5), "0.5");
    check_value_bytes(xa_double(1.0 / 3), "0.3333333333333333");
    check_value_bytes(xa_double(2.0), "2.0");
    check_value_bytes(xa_double(-0.0), "-0.0");
    check_value_bytes(xa_double(1e300), "1e+300");
    check_value_bytes(xa_double(NAN), "null");
    check_value_bytes(xa_double(INFINITY), "null");
    check_value_bytes(xa_double(-INFINITY), "null");
}

/* The stored-row style of the same writer (db-json.c): doubles exact,
 * non-finite ones as strings strtod reads back. */
static void
check_store_bytes(struct xa_value *v, const char *want)
{
    struct xa_buf b = {0};
    xa_json_put_value(&b, v, XA_JSON_STORE);
    assert_string_equal(b.data, want);
    xa_buf_free(&b);
    xa_value_unref(v);
}

static void
test_write_store_style(void **state)
{
    (void)state;
    check_store_bytes(xa_double(0.1), "0.10000000000000001");
    check_store_bytes(xa_double(2.0), "2");
    check_store_bytes(xa_double(NAN), "\"nan\"");
    check_store_bytes(xa_double(INFINITY), "\"inf\"");
    check_store_bytes(xa_double(-INFINITY), "\"-inf\"");
    check_store_bytes(xa_int(INT64_MIN), "-9223372036854775808");
    struct xa_value *m = xa_struct();
    xa_struct_set(m, "k\"ey", xa_string("v\n"));
    check_store_bytes(m, "{\"k\\\"ey\":\"v\\n\"}");
}

static void
test_write_escaping(void **state)
{
    (void)state;
    check_value_bytes(xa_string("a\"b\\c/d"), "\"a\\\"b\\\\c/d\"");
    check_value_bytes(xa_string("\n\r\t\001\037\x7f"),
                      "\"\\n\\r\\t\\u0001\\u001f\x7f\"");
    check_value_bytes(xa_string_n("a\0b", 3), "\"a\\u0000b\"");
    check_value_bytes(xa_string("\xe2\x82\xac caf\xc3\xa9 <&>"),
                      "\"\xe2\x82\xac caf\xc3\xa9 <&>\"");
    struct xa_value *st = xa_struct();
    xa_struct_set(st, "k\"\n", xa_string("v"));
    check_value_bytes(st, "{\"k\\\"\\n\":\"v\"}");

    /* Every byte value below 0x80 gives JSON that json-c reads back to
     * the same string. */
    char all[128];
    for (int c = 0; c < 128; c++) {
        all[c] = (char)c;
    }
    struct xa_value *v = xa_string_n(all, sizeof(all));
    struct xa_buf b = {0};
    xa_jsonrpc_write_value(&b, v);
    struct json_object *j = json_tokener_parse(b.data);
    assert_non_null(j);
    assert_int_equal(json_object_get_string_len(j), 128);
    assert_memory_equal(json_object_get_string(j), all, 128);
    json_object_put(j);
    xa_buf_free(&b);
    xa_value_unref(v);
}

static void
test_write_compact(void **state)
{
    (void)state;
    struct xa_value *st = xa_struct();
    struct xa_value *arr = xa_array();
    xa_array_append(arr, xa_string("a"));
    xa_array_append(arr, xa_int(2));
    xa_array_append(arr, xa_struct());
    xa_array_append(arr, xa_array());
    xa_struct_set(st, "list", arr);
    xa_struct_set(st, "nil", xa_nil());
    xa_struct_set(st, "d", xa_double(1.5));
    check_value_bytes(st, "{\"list\":[\"a\",2,{},[]],\"nil\":null,\"d\":1.5}");
}

static void
test_write_call(void **state)
{
    (void)state;
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string("root"));
    xa_array_append(p, xa_string("pw"));
    struct xa_buf b = {0};
    xa_jsonrpc_write_call(&b, "session.login_with_password", p, 42);
    assert_string_equal(b.data, "{\"jsonrpc\":\"2.0\",\"method\":"
                                "\"session.login_with_password\",\"params\":"
                                "[\"root\",\"pw\"],\"id\":42}");
    xa_buf_free(&b);
    xa_jsonrpc_write_call(&b, "system.listMethods", NULL, 1);
    assert_string_equal(b.data, "{\"jsonrpc\":\"2.0\",\"method\":"
                                "\"system.listMethods\",\"params\":[],"
                                "\"id\":1}");
    xa_buf_free(&b);
    xa_value_unref(p);
}

/* --- parser ----------------------------------------------------------- */

static void
test_parse_versions(void **state)
{
    (void)state;
    struct call c;

    parse_ok("{\"method\":\"VM.get_all\",\"params\":[\"s\"],\"id\":1}", &c);
    assert_int_equal(c.version, 1);
    assert_string_equal(c.method, "VM.get_all");
    assert_int_equal(c.params->u.arr.n, 1);
    assert_int_equal(c.id->kind, XA_INT);
    assert_int_equal(c.id->u.i, 1);
    call_free(&c);

    parse_ok("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[],"
             "\"id\":\"req-9\"}",
             &c);
    assert_int_equal(c.version, 2);
    assert_int_equal(c.id->kind, XA_STRING);
    assert_string_equal(c.id->u.str.s, "req-9");
    assert_int_equal(c.params->u.arr.n, 0);
    call_free(&c);

    /* Only "2.0" means version 2. */
    parse_ok("{\"jsonrpc\":\"1.0\",\"method\":\"m\",\"id\":0}", &c);
    assert_int_equal(c.version, 1);
    assert_int_equal(c.params->u.arr.n, 0); /* missing params */
    call_free(&c);
    parse_ok("{\"jsonrpc\":2,\"method\":\"m\",\"id\":0,\"params\":null}", &c);
    assert_int_equal(c.version, 1);
    assert_int_equal(c.params->u.arr.n, 0);
    call_free(&c);

    /* By-name parameters become one struct parameter. */
    parse_ok("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":5,"
             "\"params\":{\"a\":1,\"b\":\"x\"}}",
             &c);
    assert_int_equal(c.params->u.arr.n, 1);
    struct xa_value *st = c.params->u.arr.items[0];
    assert_int_equal(st->kind, XA_STRUCT);
    assert_int_equal(st->u.st.n, 2);
    assert_string_equal(st->u.st.m[0].key, "a");
    assert_string_equal(st->u.st.m[1].key, "b");
    call_free(&c);
}

static void
test_parse_types(void **state)
{
    (void)state;
    struct call c;
    parse_ok("{\"method\":\"m\",\"id\":1,\"params\":["
             "\"s\\u00e9\\n\",9223372036854775807,-9223372036854775808,"
             "1.5,2e3,true,false,null,{\"k\":[1,{}]},[],\"a\\u0000b\"]}",
             &c);
    struct xa_value **it = c.params->u.arr.items;
    assert_int_equal(c.params->u.arr.n, 11);
    assert_int_equal(it[0]->kind, XA_STRING);
    assert_string_equal(it[0]->u.str.s, "s\xc3\xa9\n");
    assert_int_equal(it[1]->kind, XA_INT);
    assert_true(it[1]->u.i == INT64_MAX);
    assert_true(it[2]->u.i == INT64_MIN);
    assert_int_equal(it[3]->kind, XA_DOUBLE);
    assert_true(it[3]->u.d == 1.5);
    assert_int_equal(it[4]->kind, XA_DOUBLE);
    assert_true(it[4]->u.d == 2000.0);
    assert_int_equal(it[5]->kind, XA_BOOL);
    assert_true(it[5]->u.b);
    assert_false(it[6]->u.b);
    assert_int_equal(it[7]->kind, XA_NIL);
    assert_int_equal(it[8]->kind, XA_STRUCT);
    struct xa_value *k = xa_struct_get(it[8], "k");
    assert_int_equal(k->kind, XA_ARRAY);
    assert_int_equal(k->u.arr.items[0]->kind, XA_INT);
    assert_int_equal(k->u.arr.items[1]->kind, XA_STRUCT);
    assert_int_equal(it[9]->kind, XA_ARRAY);
    assert_int_equal(it[10]->u.str.len, 3);
    assert_memory_equal(it[10]->u.str.s, "a\0b", 3);
    call_free(&c);

    /* Beyond int64: refused rather than clamped. */
    parse_fail("{\"method\":\"m\",\"id\":1,\"params\":[9223372036854775808]}",
               "INVALID_VALUE");
}

static void
test_parse_missing(void **state)
{
    (void)state;
    parse_fail("{\"params\":[],\"id\":1}", "JSONRPC_PARSE_ERROR");
    parse_fail("{\"method\":5,\"params\":[],\"id\":1}", "JSONRPC_PARSE_ERROR");
    parse_fail("{\"method\":\"\",\"params\":[],\"id\":1}",
               "JSONRPC_PARSE_ERROR");
    parse_fail("{\"method\":\"m\",\"params\":[]}", "JSONRPC_PARSE_ERROR");
    parse_fail("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":[]}",
               "JSONRPC_PARSE_ERROR");
    parse_fail("{\"method\":\"m\",\"params\":[],\"id\":null}",
               "JSONRPC_PARSE_ERROR");
    parse_fail("{\"method\":\"m\",\"params\":\"x\",\"id\":1}",
               "JSONRPC_PARSE_ERROR");
    parse_fail("{\"method\":\"m\",\"params\":3,\"id\":1}",
               "JSONRPC_PARSE_ERROR");
}

static void
test_parse_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "   ",
        "null",
        "[]",
        "\"str\"",
        "42",
        "{",
        "{\"method\":\"m\",\"id\":1",
        "{\"method\":\"m\",\"id\":1,}",
        "{\"method\":\"m\",\"id\":1} x",
        "{\"method\":\"m\",\"id\":1}{}",
        "{\"method\":\"m\" \"id\":1}",
        "{\"method\":\"m\",\"id\":1,\"params\":[1 2]}",
        "<?xml version=\"1.0\"?><methodCall/>",
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(bad); i++) {
        parse_fail(bad[i], "JSONRPC_PARSE_ERROR");
    }
    /* json-c stops at a NUL; the bytes after it must not be ignored. */
    static const char nul[] = "{\"method\":\"m\",\"id\":1}\0garbage";
    xa_error_free(parse_fail_n(nul, sizeof(nul) - 1, "JSONRPC_PARSE_ERROR"));
    static const char nul2[] =
        "{\"method\":\"m\",\"id\":1,\"params\":[\"a\0\"]}";
    xa_error_free(parse_fail_n(nul2, sizeof(nul2) - 1, "JSONRPC_PARSE_ERROR"));
}

static void
test_parse_invalid_utf8(void **state)
{
    (void)state;
    struct xa_error *e;
    const char *doc = "{\"method\":\"m\",\"id\":1,\"params\":[\"ab\xff\"]}";
    e = parse_fail_n(doc, strlen(doc), "INVALID_VALUE");
    assert_int_equal(e->n_params, 2);
    assert_string_equal(e->params[0], "Invalid UTF-8 string in parameter");
    assert_string_equal(e->params[1], "ab\xef\xbf\xbd");
    xa_error_free(e);
    /* Overlong, encoded surrogate, in a key, nested deep. */
    parse_fail("{\"method\":\"m\",\"id\":1,\"params\":[\"\xc0\xaf\"]}",
               "INVALID_VALUE");
    parse_fail("{\"method\":\"m\",\"id\":1,\"params\":[\"\xed\xa0\x80\"]}",
               "INVALID_VALUE");
    parse_fail("{\"method\":\"m\",\"id\":1,\"params\":[{\"\xfe\":1}]}",
               "INVALID_VALUE");
    parse_fail(
        "{\"method\":\"m\",\"id\":1,\"params\":[[[{\"a\":[\"\x80\"]}]]]}",
        "INVALID_VALUE");
}

static char *
nest(const char *head, const char *open, size_t n, const char *mid,
     const char *close, const char *tail)
{
    struct xa_buf b = {0};
    xa_buf_puts(&b, head);
    for (size_t i = 0; i < n; i++) {
        xa_buf_puts(&b, open);
    }
    xa_buf_puts(&b, mid);
    for (size_t i = 0; i < n; i++) {
        xa_buf_puts(&b, close);
    }
    xa_buf_puts(&b, tail);
    return xa_buf_steal(&b);
}

#define NEST_HEAD "{\"method\":\"m\",\"id\":1,\"params\":"

static void
test_deep_nesting(void **state)
{
    (void)state;
    /* The request object takes one level, the params array another. */
    char *doc = nest(NEST_HEAD, "[", XA_JSONRPC_MAX_DEPTH - 1, "", "]", "}");
    struct call c;
    parse_ok(doc, &c);
    call_free(&c);
    free(doc);
    doc = nest(NEST_HEAD, "[", XA_JSONRPC_MAX_DEPTH, "", "]", "}");
    xa_error_free(parse_fail_n(doc, strlen(doc), "JSONRPC_PARSE_ERROR"));
    free(doc);

    doc = nest(NEST_HEAD, "[", 100000, "1", "]", "}");
    xa_error_free(parse_fail_n(doc, strlen(doc), "JSONRPC_PARSE_ERROR"));
    free(doc);
    doc = nest(NEST_HEAD "[", "{\"a\":", 100000, "1", "}", "]}");
    xa_error_free(parse_fail_n(doc, strlen(doc), "JSONRPC_PARSE_ERROR"));
    free(doc);
    doc = nest("", "[", 100000, "", "", "");
    xa_error_free(parse_fail_n(doc, strlen(doc), "JSONRPC_PARSE_ERROR"));
    free(doc);
}

static const char *const sample_call =
    "{\"jsonrpc\":\"2.0\",\"method\":\"VM.set_other_config\",\"params\":"
    "[\"OpaqueRef:1\",{\"a\":[123,true,2.5,null,\"x\\\"y\\u00e9\"],"
    "\"b\":{}}],\"id\":\"abc\"}";

static void
test_truncations(void **state)
{
    (void)state;
    size_t len = strlen(sample_call);
    struct call c;
    parse_ok(sample_call, &c);
    call_free(&c);
    /* Every proper prefix is an error; each is copied to a buffer of
     * exactly its size so that reading past the end shows under ASan. */
    for (size_t n = 0; n < len; n++) {
        char *cut = xa_malloc(n ? n : 1);
        memcpy(cut, sample_call, n);
        xa_error_free(parse_fail_n(cut, n, "JSONRPC_PARSE_ERROR"));
        struct xa_value *r = NULL;
        struct xa_error *e = xa_jsonrpc_parse_response(cut, n, &r);
        assert_non_null(e);
        assert_null(r);
        xa_error_free(e);
        free(cut);
    }
}

static void
test_garbage(void **state)
{
    (void)state;
    uint32_t seed = 99;
    char buf[512];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(iter % (int)sizeof(buf));
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (char)(seed >> 16);
        }
        if (iter % 3 == 0 && n > 40) {
            memcpy(buf, sample_call, 40);
        }
        struct call c = {0};
        struct xa_error *e = xa_jsonrpc_parse_call(buf, n, &c.method, &c.params,
                                                   &c.id, &c.version);
        if (e) {
            xa_error_free(e);
        } else {
            call_free(&c);
        }
        struct xa_value *r = NULL;
        e = xa_jsonrpc_parse_response(buf, n, &r);
        xa_error_free(e);
        xa_value_unref(r);
    }
    size_t len = strlen(sample_call);
    char *copy = xa_strdup(sample_call);
    for (size_t i = 0; i < len; i++) {
        static const char subst[] = {'"', '\\', '{', ']', '\0', '\xff'};
        for (size_t k = 0; k < sizeof(subst); k++) {
            char saved = copy[i];
            copy[i] = subst[k];
            struct call c = {0};
            struct xa_error *e = xa_jsonrpc_parse_call(
                copy, len, &c.method, &c.params, &c.id, &c.version);
            if (e) {
                xa_error_free(e);
                xa_value_unref(c.id); /* set for a bad parameter */
            } else {
                call_free(&c);
            }
            copy[i] = saved;
        }
    }
    free(copy);
}

/* Kinds that survive JSON unchanged (XA_INT32 and XA_DATETIME do not:
 * JSON cannot tell them from XA_INT and XA_STRING). */
static struct xa_value *
sample_value(void)
{
    struct xa_value *st = xa_struct();
    xa_struct_set(st, "s", xa_string("a\"b\\c\n\001\xe2\x82\xac"));
    xa_struct_set(st, "i", xa_int(-1234567890123LL));
    xa_struct_set(st, "d", xa_double(-0.1));
    xa_struct_set(st, "whole", xa_double(3.0));
    xa_struct_set(st, "t", xa_bool(true));
    xa_struct_set(st, "nil", xa_nil());
    xa_struct_set(st, "", xa_string(""));
    struct xa_value *arr = xa_array();
    for (int i = 0; i < 5; i++) {
        struct xa_value *inner = xa_struct();
        xa_struct_set(inner, "n", xa_int(i));
        xa_struct_set(inner, "a", xa_array());
        xa_array_append(arr, inner);
    }
    xa_struct_set(st, "arr", arr);
    return st;
}

static void
test_round_trip(void **state)
{
    (void)state;
    struct xa_value *params = xa_array();
    xa_array_append(params, xa_string("OpaqueRef:abc"));
    xa_array_append(params, sample_value());
    struct xa_buf b = {0};
    xa_jsonrpc_write_call(&b, "VM.create", params, 77);
    struct call c;
    parse_ok(b.data, &c);
    assert_int_equal(c.version, 2);
    assert_string_equal(c.method, "VM.create");
    assert_int_equal(c.id->u.i, 77);
    assert_true(xa_value_equal(params, c.params));
    call_free(&c);
    xa_buf_free(&b);

    /* A server reply in both versions reads back to the same value. */
    struct xa_value *id = xa_int(1);
    for (int version = 1; version <= 2; version++) {
        xa_jsonrpc_write_success(&b, version, id, params);
        struct xa_value *got = NULL;
        assert_null(xa_jsonrpc_parse_response(b.data, b.len, &got));
        assert_true(xa_value_equal(params, got));
        xa_value_unref(got);
        xa_buf_free(&b);
    }
    xa_value_unref(id);
    xa_value_unref(params);
}

static void
test_response_errors(void **state)
{
    (void)state;
    struct xa_error *e = xa_error_new("VM_BAD_POWER_STATE", 3, "OpaqueRef:v",
                                      "halted", "running");
    struct xa_value *id = xa_string("x");
    struct xa_buf b = {0};
    for (int version = 1; version <= 2; version++) {
        xa_jsonrpc_write_failure(&b, version, id, e);
        struct xa_value *got = (struct xa_value *)&b;
        struct xa_error *r = xa_jsonrpc_parse_response(b.data, b.len, &got);
        assert_non_null(r);
        assert_null(got);
        assert_string_equal(r->code, "VM_BAD_POWER_STATE");
        assert_int_equal(r->n_params, 3);
        assert_string_equal(r->params[0], "OpaqueRef:v");
        assert_string_equal(r->params[2], "running");
        xa_error_free(r);
        xa_buf_free(&b);
    }
    xa_error_free(e);
    xa_value_unref(id);

    /* The v2-with-array shape xapi uses for errors before dispatch. */
    const char *quirk = "{\"jsonrpc\":\"2.0\",\"error\":[\"HOST_IS_SLAVE\","
                        "\"10.0.0.1\"],\"id\":0}";
    struct xa_value *got = NULL;
    struct xa_error *r = xa_jsonrpc_parse_response(quirk, strlen(quirk), &got);
    assert_string_equal(r->code, "HOST_IS_SLAVE");
    assert_int_equal(r->n_params, 1);
    assert_string_equal(r->params[0], "10.0.0.1");
    xa_error_free(r);

    /* Void and null results. */
    const char *v1 = "{\"result\":\"\",\"error\":null,\"id\":1}";
    assert_null(xa_jsonrpc_parse_response(v1, strlen(v1), &got));
    assert_int_equal(got->kind, XA_STRING);
    xa_value_unref(got);
    const char *v2 = "{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":1}";
    assert_null(xa_jsonrpc_parse_response(v2, strlen(v2), &got));
    assert_int_equal(got->kind, XA_NIL);
    xa_value_unref(got);

    const char *neither = "{\"jsonrpc\":\"2.0\",\"id\":1}";
    r = xa_jsonrpc_parse_response(neither, strlen(neither), &got);
    assert_string_equal(r->code, "JSONRPC_PARSE_ERROR");
    assert_null(got);
    xa_error_free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success),
        cmocka_unit_test(test_failure),
        cmocka_unit_test(test_write_scalars),
        cmocka_unit_test(test_write_escaping),
        cmocka_unit_test(test_write_store_style),
        cmocka_unit_test(test_write_compact),
        cmocka_unit_test(test_write_call),
        cmocka_unit_test(test_parse_versions),
        cmocka_unit_test(test_parse_types),
        cmocka_unit_test(test_parse_missing),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_invalid_utf8),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_response_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
