/* test-xmlrpc.c - the XML-RPC codec: exact writer bytes, parsing of every
 * value type, round trips, and hostile documents. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "rpc/xmlrpc.h"
#include "util.h"
#include "value.h"

#define HEAD "<?xml version=\"1.0\"?><methodResponse><params><param>"
#define TAIL "</param></params></methodResponse>"
#define OK_HEAD                                                             \
    HEAD "<value><struct><member><name>Status</name><value>Success</value>" \
         "</member><member><name>Value</name>"
#define OK_TAIL "</member></struct></value>" TAIL

#define CALL(params)                                                               \
    "<?xml version=\"1.0\"?><methodCall><methodName>m</methodName><params>" params \
    "</params></methodCall>"
#define PARAM(v) "<param><value>" v "</value></param>"

/* Writes 'v' with write_value and checks the exact bytes. */
static void
check_value_bytes(struct xa_value *v, const char *want)
{
    struct xa_buf b = {0};
    xa_xmlrpc_write_value(&b, v);
    assert_string_equal(b.data, want);
    xa_buf_free(&b);
    xa_value_unref(v);
}

/* Parses a call that must succeed; returns its only parameter. */
static struct xa_value *
parse_one(const char *doc)
{
    char *method = NULL;
    struct xa_value *params = NULL;
    struct xa_error *e =
        xa_xmlrpc_parse_call(doc, strlen(doc), &method, &params);
    if (e) {
        fprintf(stderr, "unexpected error %s %s\n", e->code,
                e->n_params ? e->params[0] : "");
    }
    assert_null(e);
    assert_string_equal(method, "m");
    assert_int_equal(params->kind, XA_ARRAY);
    assert_int_equal(params->u.arr.n, 1);
    struct xa_value *v = xa_value_ref(params->u.arr.items[0]);
    xa_value_unref(params);
    free(method);
    return v;
}

/* Parses 'len' bytes that must fail with 'code'; returns the error. */
static struct xa_error *
parse_fail_n(const char *doc, size_t len, const char *code)
{
    char *method = (char *)"sentinel";
    struct xa_value *params = (struct xa_value *)&method;
    struct xa_error *e = xa_xmlrpc_parse_call(doc, len, &method, &params);
    assert_non_null(e);
    if (code) {
        assert_string_equal(e->code, code);
    }
    assert_null(method);
    assert_null(params);
    return e;
}

static void
parse_fail(const char *doc, const char *code)
{
    xa_error_free(parse_fail_n(doc, strlen(doc), code));
}

/* --- writer ----------------------------------------------------------- */

static void
test_success_string(void **state)
{
    (void)state;
    struct xa_buf b = {0};
    struct xa_value *v = xa_string("OpaqueRef:abc");
    xa_xmlrpc_write_success(&b, v);
    assert_string_equal(b.data, OK_HEAD "<value>OpaqueRef:abc</value>" OK_TAIL);
    assert_string_equal(
        b.data, "<?xml version=\"1.0\"?><methodResponse><params><param>"
                "<value><struct><member><name>Status</name><value>Success"
                "</value></member><member><name>Value</name><value>"
                "OpaqueRef:abc</value></member></struct></value></param>"
                "</params></methodResponse>");
    xa_value_unref(v);
    xa_buf_free(&b);
}

static void
test_success_int_and_void(void **state)
{
    (void)state;
    struct xa_buf b = {0};
    struct xa_value *v = xa_int(-9223372036854775807LL - 1);
    xa_xmlrpc_write_success(&b, v);
    assert_string_equal(b.data,
                        OK_HEAD "<value>-9223372036854775808</value>" OK_TAIL);
    xa_value_unref(v);
    xa_buf_free(&b);

    xa_xmlrpc_write_success(&b, NULL);
    assert_string_equal(b.data, OK_HEAD "<value></value>" OK_TAIL);
    xa_buf_free(&b);
}

static void
test_failure(void **state)
{
    (void)state;
    struct xa_buf b = {0};
    struct xa_error *e =
        xa_error_new("HANDLE_INVALID", 2, "VM", "OpaqueRef:<x>&");
    xa_xmlrpc_write_failure(&b, e);
    assert_string_equal(
        b.data,
        HEAD "<value><struct><member><name>Status</name><value>Failure"
             "</value></member><member><name>ErrorDescription</name><value>"
             "<array><data><value>HANDLE_INVALID</value><value>VM</value>"
             "<value>OpaqueRef:&lt;x&gt;&amp;</value></data></array></value>"
             "</member></struct></value>" TAIL);
    xa_error_free(e);
    xa_buf_free(&b);
}

static void
test_bare(void **state)
{
    (void)state;
    struct xa_buf b = {0};
    struct xa_value *a = xa_array();
    xa_array_append(a, xa_string("VM.start"));
    xa_array_append(a, xa_string("VM.stop"));
    xa_xmlrpc_write_bare(&b, a);
    assert_string_equal(b.data, HEAD "<value><array><data><value>VM.start"
                                     "</value><value>VM.stop</value></data>"
                                     "</array></value>" TAIL);
    xa_value_unref(a);
    xa_buf_free(&b);
}

static void
test_write_scalars(void **state)
{
    (void)state;
    check_value_bytes(xa_int(123), "<value>123</value>");
    check_value_bytes(xa_int(0), "<value>0</value>");
    check_value_bytes(xa_int32(5), "<value><i4>5</i4></value>");
    check_value_bytes(xa_int32(-7), "<value><i4>-7</i4></value>");
    check_value_bytes(xa_bool(true), "<value><boolean>1</boolean></value>");
    check_value_bytes(xa_bool(false), "<value><boolean>0</boolean></value>");
    check_value_bytes(xa_double(0.5), "<value><double>0.5</double></value>");
    check_value_bytes(xa_double(0.1), "<value><double>0.1</double></value>");
    check_value_bytes(xa_double(1.0 / 3),
                      "<value><double>0.3333333333333333</double></value>");
    check_value_bytes(xa_double(1e300),
                      "<value><double>1e+300</double></value>");
    check_value_bytes(xa_datetime("20250319T04:16:24Z"),
                      "<value><dateTime.iso8601>20250319T04:16:24Z"
                      "</dateTime.iso8601></value>");
    check_value_bytes(xa_nil(), "<value><nil/></value>");
    check_value_bytes(xa_string(""), "<value></value>");
    check_value_bytes(NULL, "<value></value>");
}

static void
test_write_escaping(void **state)
{
    (void)state;
    /* & < > " are escaped; ' is not; C0 controls except TAB LF CR are
     * dropped; UTF-8 passes through. */
    check_value_bytes(xa_string("a&b<c>d\"e'f"),
                      "<value>a&amp;b&lt;c&gt;d&quot;e'f</value>");
    check_value_bytes(xa_string("x\001\002\ty\nz\r\037\x7f!"),
                      "<value>x\ty\nz\r\x7f!</value>");
    check_value_bytes(xa_string("\xe2\x82\xac caf\xc3\xa9"),
                      "<value>\xe2\x82\xac caf\xc3\xa9</value>");
    check_value_bytes(xa_string_n("a\0b", 3), "<value>ab</value>");
    struct xa_value *st = xa_struct();
    xa_struct_set(st, "k<&>", xa_string("v"));
    check_value_bytes(st, "<value><struct><member><name>k&lt;&amp;&gt;"
                          "</name><value>v</value></member></struct>"
                          "</value>");
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
    xa_struct_set(st, "b", xa_bool(true));
    struct xa_buf b = {0};
    xa_xmlrpc_write_value(&b, st);
    assert_string_equal(
        b.data,
        "<value><struct><member><name>list</name><value><array><data>"
        "<value>a</value><value>2</value><value><struct></struct></value>"
        "<value><array><data></data></array></value></data></array></value>"
        "</member><member><name>nil</name><value><nil/></value></member>"
        "<member><name>b</name><value><boolean>1</boolean></value></member>"
        "</struct></value>");
    /* No whitespace at all anywhere in the output. */
    for (size_t i = 0; i < b.len; i++) {
        assert_false(b.data[i] == ' ' || b.data[i] == '\n');
    }
    xa_buf_free(&b);
    xa_value_unref(st);
}

static void
test_write_call(void **state)
{
    (void)state;
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string("root"));
    xa_array_append(p, xa_string("pw&"));
    struct xa_buf b = {0};
    xa_xmlrpc_write_call(&b, "session.login_with_password", p);
    assert_string_equal(b.data, "<?xml version=\"1.0\"?><methodCall>"
                                "<methodName>session.login_with_password"
                                "</methodName><params><param><value>root"
                                "</value></param><param><value>pw&amp;"
                                "</value></param></params></methodCall>");
    xa_buf_free(&b);
    xa_xmlrpc_write_call(&b, "system.listMethods", NULL);
    assert_string_equal(b.data, "<?xml version=\"1.0\"?><methodCall>"
                                "<methodName>system.listMethods</methodName>"
                                "<params></params></methodCall>");
    xa_buf_free(&b);
    xa_value_unref(p);
}

/* --- parser ----------------------------------------------------------- */

static void
test_parse_types(void **state)
{
    (void)state;
    struct xa_value *v;

    v = parse_one(CALL(PARAM("bare text")));
    assert_int_equal(v->kind, XA_STRING);
    assert_string_equal(v->u.str.s, "bare text");
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<string>typed</string>")));
    assert_int_equal(v->kind, XA_STRING);
    assert_string_equal(v->u.str.s, "typed");
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<int>42</int>")));
    assert_int_equal(v->kind, XA_INT);
    assert_int_equal(v->u.i, 42);
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<i4>-5</i4>")));
    assert_int_equal(v->kind, XA_INT);
    assert_int_equal(v->u.i, -5);
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<i8>9223372036854775807</i8>")));
    assert_int_equal(v->kind, XA_INT);
    assert_true(v->u.i == INT64_MAX);
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<i8>-9223372036854775808</i8>")));
    assert_true(v->u.i == INT64_MIN);
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<i8> 8589934592 </i8>")));
    assert_true(v->u.i == 8589934592LL);
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<boolean>1</boolean>")));
    assert_int_equal(v->kind, XA_BOOL);
    assert_true(v->u.b);
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<boolean>0</boolean>")));
    assert_false(v->u.b);
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<double>-1.5e3</double>")));
    assert_int_equal(v->kind, XA_DOUBLE);
    assert_true(v->u.d == -1500.0);
    xa_value_unref(v);

    v = parse_one(CALL(
        PARAM("<dateTime.iso8601>2025-03-19T04:16:24Z</dateTime.iso8601>")));
    assert_int_equal(v->kind, XA_DATETIME);
    assert_string_equal(v->u.str.s, "2025-03-19T04:16:24Z");
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<base64>aGVs\nbG8=</base64>")));
    assert_int_equal(v->kind, XA_STRING);
    assert_string_equal(v->u.str.s, "hello");
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<nil/>")));
    assert_int_equal(v->kind, XA_NIL);
    xa_value_unref(v);

    v = parse_one(CALL(PARAM("<ex:nil></ex:nil>")));
    assert_int_equal(v->kind, XA_NIL);
    xa_value_unref(v);
}

static void
test_parse_empty_strings(void **state)
{
    (void)state;
    const char *docs[] = {
        CALL(PARAM("")),
        CALL("<param><value/></param>"),
        CALL(PARAM("<string></string>")),
        CALL(PARAM("<string/>")),
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(docs); i++) {
        struct xa_value *v = parse_one(docs[i]);
        assert_int_equal(v->kind, XA_STRING);
        assert_int_equal(v->u.str.len, 0);
        xa_value_unref(v);
    }
    /* Whitespace is data in a bare value. */
    struct xa_value *v = parse_one(CALL(PARAM("  ")));
    assert_string_equal(v->u.str.s, "  ");
    xa_value_unref(v);
}

static void
test_parse_structure(void **state)
{
    (void)state;
    /* Pretty-printed, with comments, PIs, an attribute and a BOM. */
    const char *doc =
        "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!-- a comment -->\n"
        "<methodCall>\n"
        "  <methodName> VM.get_record </methodName>\n"
        "  <params>\n"
        "    <param>\n"
        "      <value><string>OpaqueRef:x</string></value>\n"
        "    </param>\n"
        "    <param><value>\n"
        "      <struct>\n"
        "        <member><name>a</name><value><i4>1</i4></value></member>\n"
        "        <member>\n"
        "          <name>list</name>\n"
        "          <value><array><data>\n"
        "            <value>x</value>\n"
        "            <value><boolean>1</boolean></value>\n"
        "          </data></array></value>\n"
        "        </member>\n"
        "        <member><name>empty</name><value><struct/></value></member>\n"
        "      </struct>\n"
        "    </value></param>\n"
        "    <param><value><array><data/></array></value></param>\n"
        "  </params>\n"
        "</methodCall>\n<!-- trailing -->\n";
    char *method;
    struct xa_value *p;
    struct xa_error *e = xa_xmlrpc_parse_call(doc, strlen(doc), &method, &p);
    assert_null(e);
    assert_string_equal(method, "VM.get_record");
    assert_int_equal(p->u.arr.n, 3);
    assert_string_equal(p->u.arr.items[0]->u.str.s, "OpaqueRef:x");
    struct xa_value *st = p->u.arr.items[1];
    assert_int_equal(st->kind, XA_STRUCT);
    assert_int_equal(st->u.st.n, 3);
    assert_int_equal(xa_struct_get(st, "a")->u.i, 1);
    struct xa_value *list = xa_struct_get(st, "list");
    assert_int_equal(list->kind, XA_ARRAY);
    assert_int_equal(list->u.arr.n, 2);
    assert_string_equal(list->u.arr.items[0]->u.str.s, "x");
    assert_true(list->u.arr.items[1]->u.b);
    assert_int_equal(xa_struct_get(st, "empty")->kind, XA_STRUCT);
    assert_int_equal(p->u.arr.items[2]->kind, XA_ARRAY);
    assert_int_equal(p->u.arr.items[2]->u.arr.n, 0);
    free(method);
    xa_value_unref(p);
}

static void
test_parse_no_params(void **state)
{
    (void)state;
    const char *docs[] = {
        "<methodCall><methodName>system.listMethods</methodName>"
        "</methodCall>",
        "<methodCall><methodName>system.listMethods</methodName><params/>"
        "</methodCall>",
        "<methodCall><methodName>system.listMethods</methodName><params>"
        "</params></methodCall>",
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(docs); i++) {
        char *method;
        struct xa_value *p;
        assert_null(
            xa_xmlrpc_parse_call(docs[i], strlen(docs[i]), &method, &p));
        assert_string_equal(method, "system.listMethods");
        assert_int_equal(p->kind, XA_ARRAY);
        assert_int_equal(p->u.arr.n, 0);
        free(method);
        xa_value_unref(p);
    }
}

static void
test_parse_text_decoding(void **state)
{
    (void)state;
    struct xa_value *v =
        parse_one(CALL(PARAM("&amp;&lt;&gt;&quot;&apos;&#65;&#x42;&#x20AC;"
                             "<!-- gone -->c<![CDATA[<raw>&amp;]]>\r\nz\rq")));
    assert_string_equal(v->u.str.s, "&<>\"'AB\xe2\x82\xac"
                                    "c<raw>&amp;\nz\nq");
    xa_value_unref(v);
}

static void
test_parse_duplicate_members(void **state)
{
    (void)state;
    struct xa_value *v = parse_one(CALL(
        PARAM("<struct><member><name>k</name><value>1</value></member>"
              "<member><name>k</name><value>2</value></member></struct>")));
    assert_int_equal(v->u.st.n, 2);
    assert_string_equal(xa_struct_get_str(v, "k"), "1");
    xa_value_unref(v);
}

static void
test_parse_invalid_utf8(void **state)
{
    (void)state;
    struct xa_error *e;
    const char *doc = CALL(PARAM("ab\xff\xfe"));
    e = parse_fail_n(doc, strlen(doc), "INVALID_VALUE");
    assert_int_equal(e->n_params, 2);
    assert_string_equal(e->params[0], "Invalid UTF-8 string in parameter");
    /* echoed with the invalid bytes replaced, so the reply stays UTF-8 */
    assert_string_equal(e->params[1], "ab\xef\xbf\xbd\xef\xbf\xbd");
    xa_error_free(e);

    /* Overlong encoding and an encoded surrogate. */
    parse_fail(CALL(PARAM("<string>\xc0\xaf</string>")), "INVALID_VALUE");
    parse_fail(CALL(PARAM("\xed\xa0\x80")), "INVALID_VALUE");
    /* In a member name, and behind base64. */
    parse_fail(CALL(PARAM("<struct><member><name>\xff</name><value>x</value>"
                          "</member></struct>")),
               "INVALID_VALUE");
    parse_fail(CALL(PARAM("<base64>/w==</base64>")), "INVALID_VALUE");
    /* Deep inside an array. */
    parse_fail(CALL(PARAM("<array><data><value>ok</value><value>\x80</value>"
                          "</data></array>")),
               "INVALID_VALUE");
}

static void
test_parse_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "   ",
        "not xml at all",
        "<methodCall></methodCall>",
        "<methodCall><methodName></methodName></methodCall>",
        "<methodResponse><params/></methodResponse>",
        CALL(PARAM("<int>12x</int>")),
        CALL(PARAM("<int></int>")),
        CALL(PARAM("<i8>9223372036854775808</i8>")),
        CALL(PARAM("<boolean>2</boolean>")),
        CALL(PARAM("<double>abc</double>")),
        CALL(PARAM("<base64>a*b</base64>")),
        CALL(PARAM("<unknown>1</unknown>")),
        CALL(PARAM("text<string>x</string>")),
        CALL(PARAM("<string>x</string>junk")),
        CALL(PARAM("<string>x</str>")),
        CALL(PARAM("<string>x<b/></string>")),
        CALL(PARAM("<array><value>x</value></array>")),
        CALL(PARAM("<struct><member><value>x</value></member></struct>")),
        CALL(PARAM("<struct>text</struct>")),
        CALL(PARAM("&unknown;")),
        CALL(PARAM("&#0;")),
        CALL(PARAM("&#xD800;")),
        CALL(PARAM("&#x110000;")),
        CALL(PARAM("&amp")),
        CALL("<param>x</param>"),
        CALL(PARAM("x")) "<extra/>",
        CALL(PARAM("x")) "trailing text",
        "<methodCall><methodName>m</methodName><params><param><value x>"
        "</value></param></params></methodCall>",
        "<methodCall><methodName>m</methodName><params><param><value x=y>"
        "</value></param></params></methodCall>",
        "<methodCall><methodName>m</methodName><!-- unterminated",
        "<methodCall><methodName>m</methodName><![CDATA[ x",
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(bad); i++) {
        parse_fail(bad[i], "XMLRPC_PARSE_ERROR");
    }
    /* A NUL byte inside the document. */
    static const char nul[] = CALL(PARAM("a\0b"));
    xa_error_free(parse_fail_n(nul, sizeof(nul) - 1, "XMLRPC_PARSE_ERROR"));
    /* The error carries one parameter describing the problem. */
    struct xa_error *e = parse_fail_n("<a>", 3, "XMLRPC_PARSE_ERROR");
    assert_int_equal(e->n_params, 1);
    assert_non_null(strstr(e->params[0], "methodCall"));
    xa_error_free(e);
}

static void
test_doctype_refused(void **state)
{
    (void)state;
    const char *laughs =
        "<?xml version=\"1.0\"?>\n"
        "<!DOCTYPE lolz [\n"
        " <!ENTITY lol \"lol\">\n"
        " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
        " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
        " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
        " <!ENTITY lol9 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
        "]>\n" CALL(PARAM("&lol9;"));
    struct xa_error *e =
        parse_fail_n(laughs, strlen(laughs), "XMLRPC_PARSE_ERROR");
    assert_non_null(strstr(e->params[0], "DOCTYPE"));
    xa_error_free(e);

    parse_fail("<!DOCTYPE methodCall SYSTEM \"file:///etc/passwd\">"
               "<methodCall><methodName>m</methodName></methodCall>",
               "XMLRPC_PARSE_ERROR");
    parse_fail("<methodCall><!ENTITY x \"y\"><methodName>m</methodName>"
               "</methodCall>",
               "XMLRPC_PARSE_ERROR");
}

static char *
repeat(const char *head, const char *mid, const char *unit, size_t n,
       const char *close_unit, const char *tail)
{
    struct xa_buf b = {0};
    xa_buf_puts(&b, head);
    for (size_t i = 0; i < n; i++) {
        xa_buf_puts(&b, unit);
    }
    xa_buf_puts(&b, mid);
    for (size_t i = 0; i < n; i++) {
        xa_buf_puts(&b, close_unit);
    }
    xa_buf_puts(&b, tail);
    return xa_buf_steal(&b);
}

#define DEEP_HEAD "<methodCall><methodName>m</methodName><params><param><value>"
#define DEEP_TAIL "</value></param></params></methodCall>"

static void
test_deep_nesting(void **state)
{
    (void)state;
    /* Depth 64 (the top-level value plus 63 arrays) is accepted... */
    char *doc = repeat(DEEP_HEAD, "<array><data></data></array>",
                       "<array><data><value>", 63, "</value></data></array>",
                       DEEP_TAIL);
    struct xa_value *v = parse_one(doc);
    free(doc);
    size_t depth = 1;
    while (v->kind == XA_ARRAY && v->u.arr.n == 1) {
        struct xa_value *inner = xa_value_ref(v->u.arr.items[0]);
        xa_value_unref(v);
        v = inner;
        depth++;
    }
    assert_int_equal(depth, 64);
    xa_value_unref(v);

    /* ...65 is not. */
    doc = repeat(DEEP_HEAD, "<array><data></data></array>",
                 "<array><data><value>", 64, "</value></data></array>",
                 DEEP_TAIL);
    xa_error_free(parse_fail_n(doc, strlen(doc), "XMLRPC_PARSE_ERROR"));
    free(doc);

    /* 100,000 levels of arrays, of structs, and of unknown elements:
     * each must be refused without deep recursion. */
    doc = repeat(DEEP_HEAD, "x", "<array><data><value>", 100000,
                 "</value></data></array>", DEEP_TAIL);
    xa_error_free(parse_fail_n(doc, strlen(doc), "XMLRPC_PARSE_ERROR"));
    free(doc);
    doc = repeat(DEEP_HEAD, "x", "<struct><member><name>k</name><value>",
                 100000, "</value></member></struct>", DEEP_TAIL);
    xa_error_free(parse_fail_n(doc, strlen(doc), "XMLRPC_PARSE_ERROR"));
    free(doc);
    doc = repeat(DEEP_HEAD, "", "<a>", 100000, "</a>", DEEP_TAIL);
    xa_error_free(parse_fail_n(doc, strlen(doc), "XMLRPC_PARSE_ERROR"));
    free(doc);
    /* Unclosed, as a truncated attack would send it. */
    doc = repeat(DEEP_HEAD, "", "<value><array><data>", 100000, "", "");
    xa_error_free(parse_fail_n(doc, strlen(doc), "XMLRPC_PARSE_ERROR"));
    free(doc);
}

static const char *const sample_call =
    "<?xml version=\"1.0\"?><methodCall><methodName>VM.set_other_config"
    "</methodName><params><param><value>OpaqueRef:1</value></param><param>"
    "<value><struct><member><name>a&amp;b</name><value><array><data><value>"
    "<i8>123</i8></value><value><boolean>1</boolean></value><value><double>"
    "2.5</double></value><value><nil/></value><value><base64>aGk=</base64>"
    "</value><value><dateTime.iso8601>20250319T04:16:24Z</dateTime.iso8601>"
    "</value></data></array></value></member></struct></value></param>"
    "</params></methodCall>";

static void
test_truncations(void **state)
{
    (void)state;
    size_t len = strlen(sample_call);
    char *method;
    struct xa_value *p;
    assert_null(xa_xmlrpc_parse_call(sample_call, len, &method, &p));
    free(method);
    xa_value_unref(p);
    /* Every proper prefix is an error: copy it to a heap buffer of the
     * exact size so that any read past the end shows under ASan. */
    for (size_t n = 0; n < len; n++) {
        char *cut = xa_malloc(n ? n : 1);
        memcpy(cut, sample_call, n);
        xa_error_free(parse_fail_n(cut, n, NULL));
        struct xa_value *r = (struct xa_value *)&method;
        struct xa_error *e = xa_xmlrpc_parse_response(cut, n, &r);
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
    uint32_t seed = 12345;
    char buf[512];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = (size_t)(iter % (int)sizeof(buf));
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (char)(seed >> 16);
        }
        /* Sometimes start from a valid prefix, so that the garbage
         * reaches the deeper parts of the grammar. */
        if (iter % 3 == 0 && n > 80) {
            memcpy(buf, sample_call, 80);
        }
        char *method;
        struct xa_value *p;
        struct xa_error *e = xa_xmlrpc_parse_call(buf, n, &method, &p);
        if (e) {
            xa_error_free(e);
        } else {
            free(method);
            xa_value_unref(p);
        }
    }
    /* Mutations of a valid document: flip one byte at each offset. */
    size_t len = strlen(sample_call);
    char *copy = xa_strdup(sample_call);
    for (size_t i = 0; i < len; i++) {
        for (int k = 0; k < 4; k++) {
            static const char subst[] = {'<', '>', '&', '\0'};
            char saved = copy[i];
            copy[i] = subst[k];
            char *method;
            struct xa_value *p;
            struct xa_error *e = xa_xmlrpc_parse_call(copy, len, &method, &p);
            if (e) {
                xa_error_free(e);
            } else {
                free(method);
                xa_value_unref(p);
            }
            copy[i] = saved;
        }
    }
    free(copy);
}

/* Builds a value using every kind that survives a round trip unchanged
 * (XA_INT does not: xapi's writer sends it as a string). */
static struct xa_value *
sample_value(void)
{
    struct xa_value *st = xa_struct();
    xa_struct_set(st, "s", xa_string("a<b>&c\"d' \t\n\xe2\x82\xac"));
    xa_struct_set(st, "d", xa_double(-0.1));
    xa_struct_set(st, "big", xa_double(1.5e300));
    xa_struct_set(st, "t", xa_bool(true));
    xa_struct_set(st, "f", xa_bool(false));
    xa_struct_set(st, "dt", xa_datetime("20250319T04:16:24Z"));
    xa_struct_set(st, "nil", xa_nil());
    xa_struct_set(st, "empty", xa_string(""));
    xa_struct_set(st, "", xa_string("empty key"));
    struct xa_value *arr = xa_array();
    for (int i = 0; i < 5; i++) {
        struct xa_value *inner = xa_struct();
        xa_struct_set(inner, "n", xa_string("x"));
        xa_struct_set(inner, "a", xa_array());
        xa_array_append(arr, inner);
    }
    xa_struct_set(st, "arr", arr);
    return st;
}

static void
test_round_trip_call(void **state)
{
    (void)state;
    struct xa_value *params = xa_array();
    xa_array_append(params, xa_string("OpaqueRef:abc"));
    xa_array_append(params, sample_value());
    struct xa_buf b = {0};
    xa_xmlrpc_write_call(&b, "VM.create", params);
    char *method;
    struct xa_value *got;
    assert_null(xa_xmlrpc_parse_call(b.data, b.len, &method, &got));
    assert_string_equal(method, "VM.create");
    assert_true(xa_value_equal(params, got));
    free(method);
    xa_value_unref(got);
    xa_value_unref(params);
    xa_buf_free(&b);

    /* Integers come back as their decimal strings, and <i4> as XA_INT. */
    params = xa_array();
    xa_array_append(params, xa_int(-42));
    xa_array_append(params, xa_int32(7));
    xa_xmlrpc_write_call(&b, "m", params);
    assert_null(xa_xmlrpc_parse_call(b.data, b.len, &method, &got));
    assert_int_equal(got->u.arr.items[0]->kind, XA_STRING);
    assert_string_equal(got->u.arr.items[0]->u.str.s, "-42");
    assert_int_equal(got->u.arr.items[1]->kind, XA_INT);
    assert_int_equal(got->u.arr.items[1]->u.i, 7);
    free(method);
    xa_value_unref(got);
    xa_value_unref(params);
    xa_buf_free(&b);
}

static void
test_response_success(void **state)
{
    (void)state;
    struct xa_value *v = sample_value();
    struct xa_buf b = {0};
    xa_xmlrpc_write_success(&b, v);
    struct xa_value *got = NULL;
    assert_null(xa_xmlrpc_parse_response(b.data, b.len, &got));
    assert_true(xa_value_equal(v, got));
    xa_value_unref(got);
    xa_buf_free(&b);
    xa_value_unref(v);

    /* Void comes back as "". */
    xa_xmlrpc_write_success(&b, NULL);
    assert_null(xa_xmlrpc_parse_response(b.data, b.len, &got));
    assert_int_equal(got->kind, XA_STRING);
    assert_int_equal(got->u.str.len, 0);
    xa_value_unref(got);
    xa_buf_free(&b);

    /* A pretty-printed envelope as other servers write it. */
    const char *doc =
        "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
        "<value><struct>\n<member>\n<name>Status</name>\n"
        "<value><string>Success</string></value>\n</member>\n<member>\n"
        "<name>Value</name>\n<value><string>OpaqueRef:s</string></value>\n"
        "</member>\n</struct></value>\n</param>\n</params>\n"
        "</methodResponse>\n";
    assert_null(xa_xmlrpc_parse_response(doc, strlen(doc), &got));
    assert_string_equal(got->u.str.s, "OpaqueRef:s");
    xa_value_unref(got);
}

static void
test_response_failure(void **state)
{
    (void)state;
    struct xa_error *e = xa_error_new("SESSION_AUTHENTICATION_FAILED", 2,
                                      "root", "Authentication failure");
    struct xa_buf b = {0};
    xa_xmlrpc_write_failure(&b, e);
    struct xa_value *got = (struct xa_value *)&b;
    struct xa_error *r = xa_xmlrpc_parse_response(b.data, b.len, &got);
    assert_non_null(r);
    assert_null(got);
    assert_string_equal(r->code, "SESSION_AUTHENTICATION_FAILED");
    assert_int_equal(r->n_params, 2);
    assert_string_equal(r->params[0], "root");
    assert_string_equal(r->params[1], "Authentication failure");
    xa_error_free(r);
    xa_error_free(e);
    xa_buf_free(&b);

    e = xa_error_new("NO_PARAMS", 0);
    xa_xmlrpc_write_failure(&b, e);
    r = xa_xmlrpc_parse_response(b.data, b.len, &got);
    assert_string_equal(r->code, "NO_PARAMS");
    assert_int_equal(r->n_params, 0);
    xa_error_free(r);
    xa_error_free(e);
    xa_buf_free(&b);

    const char *fault =
        "<methodResponse><fault><value><struct><member><name>faultCode"
        "</name><value><int>4</int></value></member><member><name>"
        "faultString</name><value>Too many parameters</value></member>"
        "</struct></value></fault></methodResponse>";
    r = xa_xmlrpc_parse_response(fault, strlen(fault), &got);
    assert_string_equal(r->code, "XMLRPC_FAULT");
    assert_int_equal(r->n_params, 2);
    assert_string_equal(r->params[0], "4");
    assert_string_equal(r->params[1], "Too many parameters");
    xa_error_free(r);
}

static void
test_response_bare(void **state)
{
    (void)state;
    struct xa_value *arr = xa_array();
    xa_array_append(arr, xa_string("VM.start"));
    struct xa_buf b = {0};
    xa_xmlrpc_write_bare(&b, arr);
    struct xa_value *got;
    assert_null(xa_xmlrpc_parse_response(b.data, b.len, &got));
    assert_true(xa_value_equal(arr, got));
    xa_value_unref(got);
    xa_value_unref(arr);
    xa_buf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_string),
        cmocka_unit_test(test_success_int_and_void),
        cmocka_unit_test(test_failure),
        cmocka_unit_test(test_bare),
        cmocka_unit_test(test_write_scalars),
        cmocka_unit_test(test_write_escaping),
        cmocka_unit_test(test_write_compact),
        cmocka_unit_test(test_write_call),
        cmocka_unit_test(test_parse_types),
        cmocka_unit_test(test_parse_empty_strings),
        cmocka_unit_test(test_parse_structure),
        cmocka_unit_test(test_parse_no_params),
        cmocka_unit_test(test_parse_text_decoding),
        cmocka_unit_test(test_parse_duplicate_members),
        cmocka_unit_test(test_parse_invalid_utf8),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_doctype_refused),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_round_trip_call),
        cmocka_unit_test(test_response_success),
        cmocka_unit_test(test_response_failure),
        cmocka_unit_test(test_response_bare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
