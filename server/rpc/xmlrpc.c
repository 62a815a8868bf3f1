/* xmlrpc.c - see xmlrpc.h.
 *
 * The parser is split in two: a lexer that turns the document into start
 * tags, end tags and (entity-decoded) text, skipping comments and
 * processing instructions; and a recursive-descent reader of the XML-RPC
 * grammar on top.  Only the reader of <value> recurses, and it stops at
 * XA_XMLRPC_MAX_DEPTH, so hostile nesting costs a few stack frames. */
#include "rpc/xmlrpc.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUT_LIT(out, lit) put((out), (lit), sizeof(lit) - 1)

#define UTF8_MSG "Invalid UTF-8 string in parameter"

/* ---------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------- */

/* xa_buf_append without the call: the writer appends millions of short
 * pieces for a large get_all_records, and with a constant 'n' the memcpy
 * becomes a few moves. */
static inline void
put(struct xa_buf *out, const char *s, size_t n)
{
    if (out->len + n + 1 > out->cap) {
        xa_buf_reserve(out, n);
    }
    if (n) { /* 's' may be NULL when empty */
        memcpy(out->data + out->len, s, n);
    }
    out->len += n;
    out->data[out->len] = '\0';
}

/* What put_escaped does with each byte: 0 copy it, 1 drop it (control
 * characters other than tab, newline and return cannot appear in XML 1.0
 * at all, not even as references, so xapi drops them), 2 '&', 3 '<',
 * 4 '>', 5 '"'. */
static const unsigned char escape_class[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1,
    [0x06] = 1, [0x07] = 1, [0x08] = 1, [0x0b] = 1, [0x0c] = 1, [0x0e] = 1,
    [0x0f] = 1, [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1,
    [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1, [0x19] = 1, [0x1a] = 1,
    [0x1b] = 1, [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, ['&'] = 2,
    ['<'] = 3,  ['>'] = 4,  ['"'] = 5,
};

/* Appends 's' escaped for XML character data.  Runs of ordinary bytes are
 * copied in one go because this is the hot path of get_all_records. */
static void
put_escaped(struct xa_buf *out, const char *s, size_t n)
{
    static const char *const rep[] = {"",     "",     "&amp;",
                                      "&lt;", "&gt;", "&quot;"};
    static const unsigned char rep_len[] = {0, 0, 5, 4, 4, 6};
    size_t run = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned k = escape_class[(unsigned char)s[i]];
        if (k == 0) {
            continue;
        }
        put(out, s + run, i - run);
        put(out, rep[k], rep_len[k]);
        run = i + 1;
    }
    if (n > run) {
        put(out, s + run, n - run);
    }
}

/* Decimal text of 'i' without going through printf. */
static void
put_int64(struct xa_buf *out, int64_t i)
{
    char tmp[24];
    size_t pos = sizeof(tmp);
    /* Work on the magnitude as unsigned so INT64_MIN does not overflow. */
    uint64_t u = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
    do {
        tmp[--pos] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (i < 0) {
        tmp[--pos] = '-';
    }
    put(out, tmp + pos, sizeof(tmp) - pos);
}

static void
put_double(struct xa_buf *out, double d)
{
    char tmp[40];
    int n = snprintf(tmp, sizeof(tmp), "%.16g", d);
    if (n <= 0 || (size_t)n >= sizeof(tmp)) {
        return;
    }
    /* A locale with a decimal comma must not leak onto the wire. */
    for (int k = 0; k < n; k++) {
        if (tmp[k] == ',') {
            tmp[k] = '.';
        }
    }
    xa_buf_append(out, tmp, (size_t)n);
}

/* How many members ahead the writer prefetches. */
#define PREFETCH_AHEAD 4

void
xa_xmlrpc_write_value(struct xa_buf *out, const struct xa_value *v)
{
    if (!v) {
        PUT_LIT(out, "<value></value>");
        return;
    }
    switch (v->kind) {
    case XA_STRING:
        PUT_LIT(out, "<value>");
        put_escaped(out, v->u.str.s, v->u.str.len);
        PUT_LIT(out, "</value>");
        break;
    case XA_INT:
        /* xapi sends int64 as a decimal string, never <i4>/<i8>. */
        PUT_LIT(out, "<value>");
        put_int64(out, v->u.i);
        PUT_LIT(out, "</value>");
        break;
    case XA_INT32:
        PUT_LIT(out, "<value><i4>");
        put_int64(out, v->u.i);
        PUT_LIT(out, "</i4></value>");
        break;
    case XA_BOOL:
        if (v->u.b) {
            PUT_LIT(out, "<value><boolean>1</boolean></value>");
        } else {
            PUT_LIT(out, "<value><boolean>0</boolean></value>");
        }
        break;
    case XA_DOUBLE:
        PUT_LIT(out, "<value><double>");
        put_double(out, v->u.d);
        PUT_LIT(out, "</double></value>");
        break;
    case XA_DATETIME:
        PUT_LIT(out, "<value><dateTime.iso8601>");
        put_escaped(out, v->u.str.s, v->u.str.len);
        PUT_LIT(out, "</dateTime.iso8601></value>");
        break;
    case XA_ARRAY:
        PUT_LIT(out, "<value><array><data>");
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i + PREFETCH_AHEAD < v->u.arr.n) {
                __builtin_prefetch(v->u.arr.items[i + PREFETCH_AHEAD]);
            }
            xa_xmlrpc_write_value(out, v->u.arr.items[i]);
        }
        PUT_LIT(out, "</data></array></value>");
        break;
    case XA_STRUCT:
        PUT_LIT(out, "<value><struct>");
        for (size_t i = 0; i < v->u.st.n; i++) {
            const char *key = v->u.st.m[i].key;
            /* The values of a large reply are spread over the heap: ask
             * for the next ones early, reading them is most of the time. */
            if (i + PREFETCH_AHEAD < v->u.st.n) {
                __builtin_prefetch(v->u.st.m[i + PREFETCH_AHEAD].val);
            }
            PUT_LIT(out, "<member><name>");
            if (v->u.st.m[i].static_key) {
                /* a schema field name: letters, digits and '_' only */
                put(out, key, strlen(key));
            } else {
                put_escaped(out, key, strlen(key));
            }
            PUT_LIT(out, "</name>");
            xa_xmlrpc_write_value(out, v->u.st.m[i].val);
            PUT_LIT(out, "</member>");
        }
        PUT_LIT(out, "</struct></value>");
        break;
    case XA_NIL:
    default:
        PUT_LIT(out, "<value><nil/></value>");
        break;
    }
}

static void
put_string_value(struct xa_buf *out, const char *s)
{
    PUT_LIT(out, "<value>");
    put_escaped(out, s ? s : "", s ? strlen(s) : 0);
    PUT_LIT(out, "</value>");
}

#define RESPONSE_HEAD "<?xml version=\"1.0\"?><methodResponse><params><param>"
#define RESPONSE_TAIL "</param></params></methodResponse>"

void
xa_xmlrpc_write_success(struct xa_buf *out, const struct xa_value *v)
{
    PUT_LIT(out, RESPONSE_HEAD
            "<value><struct><member><name>Status</name><value>Success</value>"
            "</member><member><name>Value</name>");
    /* write_value turns NULL into <value></value>, which is how xapi
     * sends void. */
    xa_xmlrpc_write_value(out, v);
    PUT_LIT(out, "</member></struct></value>" RESPONSE_TAIL);
}

void
xa_xmlrpc_write_failure(struct xa_buf *out, const struct xa_error *e)
{
    PUT_LIT(out, RESPONSE_HEAD
            "<value><struct><member><name>Status</name><value>Failure</value>"
            "</member><member><name>ErrorDescription</name>"
            "<value><array><data>");
    put_string_value(out, e ? e->code : "INTERNAL_ERROR");
    for (size_t i = 0; e && i < e->n_params; i++) {
        put_string_value(out, e->params[i]);
    }
    PUT_LIT(out,
            "</data></array></value></member></struct></value>" RESPONSE_TAIL);
}

void
xa_xmlrpc_write_bare(struct xa_buf *out, const struct xa_value *v)
{
    PUT_LIT(out, RESPONSE_HEAD);
    xa_xmlrpc_write_value(out, v);
    PUT_LIT(out, RESPONSE_TAIL);
}

void
xa_xmlrpc_write_call(struct xa_buf *out, const char *method,
                     const struct xa_value *params)
{
    PUT_LIT(out, "<?xml version=\"1.0\"?><methodCall><methodName>");
    put_escaped(out, method, strlen(method));
    PUT_LIT(out, "</methodName><params>");
    if (params && params->kind == XA_ARRAY) {
        for (size_t i = 0; i < params->u.arr.n; i++) {
            PUT_LIT(out, "<param>");
            xa_xmlrpc_write_value(out, params->u.arr.items[i]);
            PUT_LIT(out, "</param>");
        }
    }
    PUT_LIT(out, "</params></methodCall>");
}

/* ---------------------------------------------------------------------
 * Lexer
 * ------------------------------------------------------------------- */

enum tok_kind { TOK_EOF, TOK_START, TOK_END, TOK_TEXT };

struct xml_parser {
    const char *base; /* start of the document, for error offsets */
    const char *p;    /* next unread byte */
    const char *end;
    /* The current token.  For TOK_TEXT the decoded text is in 'text';
     * it stays there until the next text token starts, so a reader may
     * look one tag past a text before using it. */
    enum tok_kind kind;
    const char *name; /* tag name (points into the document) */
    size_t name_len;
    /* A self-closing <x/> is delivered as <x> then </x>. */
    bool pending_end;
    struct xa_buf text;
    struct xa_error *err; /* first error; owned until handed out */
};

static bool
fail(struct xml_parser *x, const char *msg)
{
    if (!x->err) {
        char *d = xa_asprintf("XML-RPC document invalid at byte %zu: %s",
                              (size_t)(x->p - x->base), msg);
        x->err = xa_error_new("XMLRPC_PARSE_ERROR", 1, d);
        free(d);
    }
    return false;
}

static bool
fail_utf8(struct xml_parser *x, const char *s, size_t n)
{
    if (!x->err) {
        /* The parameter is a C string, so it ends at any NUL; the message
         * matters more than the exact bytes. */
        char *copy = xa_utf8_sanitize(s, n);
        x->err = xa_error_new("INVALID_VALUE", 2, UTF8_MSG, copy);
        free(copy);
    }
    return false;
}

static bool
has_prefix(const struct xml_parser *x, const char *lit, size_t n)
{
    return (size_t)(x->end - x->p) >= n && memcmp(x->p, lit, n) == 0;
}

#define HAS(x, lit) has_prefix((x), (lit), sizeof(lit) - 1)

static bool
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool
is_name_char(char c)
{
    unsigned char u = (unsigned char)c;
    return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
           (u >= '0' && u <= '9') || u == '.' || u == '-' || u == '_' ||
           u == ':' || u >= 0x80;
}

/* Finds 'lit' at or after x->p; leaves x->p just past it. */
static bool
skip_past(struct xml_parser *x, const char *lit, const char *what)
{
    size_t n = strlen(lit);
    const char *hit = memmem(x->p, (size_t)(x->end - x->p), lit, n);
    if (!hit) {
        x->p = x->end;
        return fail(x, what);
    }
    x->p = hit + n;
    return true;
}

static void
put_utf8(struct xa_buf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    xa_buf_append(b, u, n);
}

/* Decodes one reference at x->p ('&').  Only the predefined entities and
 * character references exist: with DOCTYPE refused there is nothing else
 * a name could refer to, so no expansion can ever multiply input. */
static bool
lex_reference(struct xml_parser *x)
{
    const char *start = x->p + 1;
    const char *semi = NULL;
    /* The longest legal reference is "&#x10FFFF;" or "&#1114111;". */
    for (const char *q = start; q < x->end && q < start + 12; q++) {
        if (*q == ';') {
            semi = q;
            break;
        }
    }
    if (!semi) {
        return fail(x, "unterminated or overlong entity reference");
    }
    size_t n = (size_t)(semi - start);
    if (n >= 2 && start[0] == '#') {
        uint32_t cp = 0;
        bool hex = start[1] == 'x';
        size_t k = hex ? 2 : 1;
        if (k == n) {
            return fail(x, "empty character reference");
        }
        for (; k < n; k++) {
            char c = start[k];
            uint32_t d;
            if (c >= '0' && c <= '9') {
                d = (uint32_t)(c - '0');
            } else if (hex && c >= 'a' && c <= 'f') {
                d = (uint32_t)(c - 'a' + 10);
            } else if (hex && c >= 'A' && c <= 'F') {
                d = (uint32_t)(c - 'A' + 10);
            } else {
                return fail(x, "bad character reference");
            }
            cp = cp * (hex ? 16 : 10) + d;
            if (cp > 0x10ffff) {
                return fail(x, "character reference out of range");
            }
        }
        /* XML 1.0's Char production: no NUL, no surrogates, no other C0
         * controls, no U+FFFE/U+FFFF. */
        bool ok = cp == 0x9 || cp == 0xa || cp == 0xd ||
                  (cp >= 0x20 && cp <= 0xd7ff) ||
                  (cp >= 0xe000 && cp <= 0xfffd) ||
                  (cp >= 0x10000 && cp <= 0x10ffff);
        if (!ok) {
            return fail(x, "character reference to a non-XML character");
        }
        put_utf8(&x->text, cp);
    } else if (n == 3 && memcmp(start, "amp", 3) == 0) {
        xa_buf_putc(&x->text, '&');
    } else if (n == 2 && memcmp(start, "lt", 2) == 0) {
        xa_buf_putc(&x->text, '<');
    } else if (n == 2 && memcmp(start, "gt", 2) == 0) {
        xa_buf_putc(&x->text, '>');
    } else if (n == 4 && memcmp(start, "quot", 4) == 0) {
        xa_buf_putc(&x->text, '"');
    } else if (n == 4 && memcmp(start, "apos", 4) == 0) {
        xa_buf_putc(&x->text, '\'');
    } else {
        return fail(x, "undefined entity (entities are not supported)");
    }
    x->p = semi + 1;
    return true;
}

/* Character data up to the next '<', decoded and appended to x->text. */
static bool
lex_chars(struct xml_parser *x)
{
    const char *run = x->p;
    while (x->p < x->end && *x->p != '<') {
        char c = *x->p;
        if (c != '&' && c != '\r' && c != '\0') {
            x->p++;
            continue;
        }
        xa_buf_append(&x->text, run, (size_t)(x->p - run));
        if (c == '\0') {
            return fail(x, "NUL byte in document");
        }
        if (c == '&') {
            if (!lex_reference(x)) {
                return false;
            }
        } else {
            /* XML end-of-line handling: CR LF and lone CR become LF. */
            xa_buf_putc(&x->text, '\n');
            x->p++;
            if (x->p < x->end && *x->p == '\n') {
                x->p++;
            }
        }
        run = x->p;
    }
    xa_buf_append(&x->text, run, (size_t)(x->p - run));
    return true;
}

static bool
lex_name(struct xml_parser *x)
{
    x->name = x->p;
    while (x->p < x->end && is_name_char(*x->p)) {
        x->p++;
    }
    x->name_len = (size_t)(x->p - x->name);
    if (x->name_len == 0) {
        return fail(x, "missing or bad tag name");
    }
    return true;
}

static void
skip_spaces(struct xml_parser *x)
{
    while (x->p < x->end && is_space(*x->p)) {
        x->p++;
    }
}

/* x->p is just past '<'.  Attributes are checked for shape and ignored:
 * XML-RPC defines none. */
static bool
lex_start_tag(struct xml_parser *x)
{
    if (!lex_name(x)) {
        return false;
    }
    for (;;) {
        bool spaced = x->p < x->end && is_space(*x->p);
        skip_spaces(x);
        if (x->p >= x->end) {
            return fail(x, "unterminated start tag");
        }
        if (*x->p == '>') {
            x->p++;
            x->kind = TOK_START;
            return true;
        }
        if (HAS(x, "/>")) {
            x->p += 2;
            x->kind = TOK_START;
            x->pending_end = true;
            return true;
        }
        if (!spaced || !is_name_char(*x->p)) {
            return fail(x, "bad attribute");
        }
        while (x->p < x->end && is_name_char(*x->p)) {
            x->p++;
        }
        skip_spaces(x);
        if (x->p >= x->end || *x->p != '=') {
            return fail(x, "attribute without a value");
        }
        x->p++;
        skip_spaces(x);
        if (x->p >= x->end || (*x->p != '"' && *x->p != '\'')) {
            return fail(x, "unquoted attribute value");
        }
        char q = *x->p++;
        while (x->p < x->end && *x->p != q) {
            if (*x->p == '<' || *x->p == '\0') {
                return fail(x, "bad character in attribute value");
            }
            x->p++;
        }
        if (x->p >= x->end) {
            return fail(x, "unterminated attribute value");
        }
        x->p++;
    }
}

/* x->p is just past "</". */
static bool
lex_end_tag(struct xml_parser *x)
{
    if (!lex_name(x)) {
        return false;
    }
    skip_spaces(x);
    if (x->p >= x->end || *x->p != '>') {
        return fail(x, "unterminated end tag");
    }
    x->p++;
    x->kind = TOK_END;
    return true;
}

/* Moves to the next token.  Text, CDATA sections and comments between
 * two tags form a single text token. */
static bool
lex(struct xml_parser *x)
{
    if (x->err) {
        return false;
    }
    if (x->pending_end) {
        x->pending_end = false;
        x->kind = TOK_END; /* same name as the start tag just given */
        return true;
    }
    bool have_text = false;
    for (;;) {
        if (x->p >= x->end) {
            x->kind = have_text ? TOK_TEXT : TOK_EOF;
            return true;
        }
        if (*x->p != '<' || HAS(x, "<![CDATA[")) {
            if (!have_text) {
                x->text.len = 0;
                xa_buf_reserve(&x->text, 0); /* keeps data non-NULL */
                x->text.data[0] = '\0';
                have_text = true;
            }
            if (*x->p != '<') {
                if (!lex_chars(x)) {
                    return false;
                }
                continue;
            }
            x->p += 9;
            const char *from = x->p;
            if (!skip_past(x, "]]>", "unterminated CDATA section")) {
                return false;
            }
            const char *to = x->p - 3;
            if (memchr(from, '\0', (size_t)(to - from))) {
                return fail(x, "NUL byte in document");
            }
            xa_buf_append(&x->text, from, (size_t)(to - from));
            continue;
        }
        if (HAS(x, "<!--")) {
            x->p += 4;
            if (!skip_past(x, "-->", "unterminated comment")) {
                return false;
            }
            continue;
        }
        if (HAS(x, "<!")) {
            /* DOCTYPE is where entities are declared; refusing it
             * outright rules out entity expansion attacks and external
             * entity fetches. */
            return fail(x, "DOCTYPE and declarations are not allowed");
        }
        if (HAS(x, "<?")) {
            x->p += 2;
            if (!skip_past(x, "?>", "unterminated processing instruction")) {
                return false;
            }
            continue;
        }
        if (have_text) {
            x->kind = TOK_TEXT;
            return true;
        }
        if (HAS(x, "</")) {
            x->p += 2;
            return lex_end_tag(x);
        }
        x->p++;
        return lex_start_tag(x);
    }
}

/* ---------------------------------------------------------------------
 * Reader of the XML-RPC grammar
 * ------------------------------------------------------------------- */

static bool
text_is_space(const struct xml_parser *x)
{
    for (size_t i = 0; i < x->text.len; i++) {
        if (!is_space(x->text.data[i])) {
            return false;
        }
    }
    return true;
}

/* Skips a whitespace-only text token where the grammar allows only
 * elements. */
static bool
skip_ws(struct xml_parser *x)
{
    if (x->err) {
        return false;
    }
    if (x->kind == TOK_TEXT) {
        if (!text_is_space(x)) {
            return fail(x, "unexpected text between elements");
        }
        return lex(x);
    }
    return true;
}

static bool
name_is(const struct xml_parser *x, const char *name)
{
    size_t n = strlen(name);
    return x->name_len == n && memcmp(x->name, name, n) == 0;
}

static bool
at_start(struct xml_parser *x, const char *name)
{
    return skip_ws(x) && x->kind == TOK_START && name_is(x, name);
}

static bool
expect_start(struct xml_parser *x, const char *name)
{
    if (!at_start(x, name)) {
        if (!x->err) {
            char *m = xa_asprintf("expected <%s>", name);
            fail(x, m);
            free(m);
        }
        return false;
    }
    return lex(x);
}

static bool
expect_end(struct xml_parser *x, const char *name)
{
    if (!skip_ws(x)) {
        return false;
    }
    if (x->kind != TOK_END || !name_is(x, name)) {
        char *m = xa_asprintf("expected </%s>", name);
        fail(x, m);
        free(m);
        return false;
    }
    return lex(x);
}

/* Called just past <tag>: reads the element's text, leaving the current
 * token on </tag> (not consumed) so that the text is still in x->text.
 * '*s' is NUL-terminated. */
static bool
element_text(struct xml_parser *x, const char *tag, const char **s, size_t *n)
{
    static const char empty[1] = "";
    bool have = false;
    if (x->kind == TOK_TEXT) {
        have = true;
        if (!lex(x)) {
            return false;
        }
    }
    if (x->kind != TOK_END || !name_is(x, tag)) {
        char *m = xa_asprintf("expected text and </%s>", tag);
        fail(x, m);
        free(m);
        return false;
    }
    *s = have ? x->text.data : empty;
    *n = have ? x->text.len : 0;
    return true;
}

/* Bounds of 's' without surrounding whitespace, for numbers. */
static void
trim(const char **s, size_t *n)
{
    while (*n && is_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_space((*s)[*n - 1])) {
        (*n)--;
    }
}

static struct xa_value *
make_string(struct xml_parser *x, const char *s, size_t n)
{
    if (!xa_utf8_valid(s, n)) {
        fail_utf8(x, s, n);
        return NULL;
    }
    return xa_string_n(s, n);
}

static struct xa_value *
make_int(struct xml_parser *x, const char *s, size_t n)
{
    char tmp[32];
    int64_t i;
    trim(&s, &n);
    if (n == 0 || n >= sizeof(tmp)) {
        fail(x, "bad integer");
        return NULL;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (!xa_parse_int64(tmp, &i)) {
        fail(x, "bad or out-of-range integer");
        return NULL;
    }
    return xa_int(i);
}

static struct xa_value *
make_double(struct xml_parser *x, const char *s, size_t n)
{
    trim(&s, &n);
    if (n == 0) {
        fail(x, "empty double");
        return NULL;
    }
    char *tmp = xa_strndup(s, n);
    char *endp;
    double d = strtod(tmp, &endp);
    bool ok = *endp == '\0';
    free(tmp);
    if (!ok) {
        fail(x, "bad double");
        return NULL;
    }
    return xa_double(d);
}

static struct xa_value *
make_bool(struct xml_parser *x, const char *s, size_t n)
{
    trim(&s, &n);
    if ((n == 1 && *s == '1') || (n == 4 && memcmp(s, "true", 4) == 0)) {
        return xa_bool(true);
    }
    if ((n == 1 && *s == '0') || (n == 5 && memcmp(s, "false", 5) == 0)) {
        return xa_bool(false);
    }
    fail(x, "bad boolean");
    return NULL;
}

static int
b64_digit(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

/* base64 decodes to a string, as in xapi; whitespace is ignored and the
 * padding may be left out. */
static struct xa_value *
make_base64(struct xml_parser *x, const char *s, size_t n)
{
    struct xa_buf b = {0};
    uint32_t acc = 0;
    int bits = 0;
    bool padded = false;
    xa_buf_reserve(&b, n / 4 * 3 + 3);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_space((char)c)) {
            continue;
        }
        if (c == '=') {
            padded = true;
            continue;
        }
        int d = b64_digit(c);
        if (d < 0 || padded) {
            xa_buf_free(&b);
            fail(x, "bad base64");
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            xa_buf_putc(&b, (char)((acc >> bits) & 0xff));
        }
    }
    struct xa_value *v = make_string(x, b.data ? b.data : "", b.len);
    xa_buf_free(&b);
    return v;
}

enum scalar_type { S_STRING, S_INT, S_BOOL, S_DOUBLE, S_DATETIME, S_BASE64 };

static const struct {
    const char *tag;
    enum scalar_type type;
} scalar_tags[] = {
    {"string", S_STRING},
    {"int", S_INT},
    {"i4", S_INT},
    {"i8", S_INT},
    {"boolean", S_BOOL},
    {"double", S_DOUBLE},
    {"dateTime.iso8601", S_DATETIME},
    {"base64", S_BASE64},
};

/* Current token is <tag> of a scalar type. */
static struct xa_value *
read_scalar(struct xml_parser *x, const char *tag, enum scalar_type type)
{
    const char *s;
    size_t n;
    if (!lex(x) || !element_text(x, tag, &s, &n)) {
        return NULL;
    }
    struct xa_value *v = NULL;
    switch (type) {
    case S_STRING:
        v = make_string(x, s, n);
        break;
    case S_INT:
        v = make_int(x, s, n);
        break;
    case S_BOOL:
        v = make_bool(x, s, n);
        break;
    case S_DOUBLE:
        v = make_double(x, s, n);
        break;
    case S_DATETIME:
        /* Kept exactly as sent: xapi accepts several spellings and the
         * layers above decide what they mean. */
        if (!xa_utf8_valid(s, n)) {
            fail_utf8(x, s, n);
        } else {
            v = xa_datetime(s); /* 's' is NUL-terminated, NUL-free */
        }
        break;
    case S_BASE64:
        v = make_base64(x, s, n);
        break;
    }
    if (v && !expect_end(x, tag)) {
        xa_value_unref(v);
        v = NULL;
    }
    return v;
}

static struct xa_value *read_value(struct xml_parser *x, int depth);

/* Current token is <array>. */
static struct xa_value *
read_array(struct xml_parser *x, int depth)
{
    if (!lex(x) || !expect_start(x, "data")) {
        return NULL;
    }
    struct xa_value *arr = xa_array();
    while (at_start(x, "value")) {
        struct xa_value *item = read_value(x, depth + 1);
        if (!item) {
            xa_value_unref(arr);
            return NULL;
        }
        xa_array_append(arr, item);
    }
    if (!expect_end(x, "data") || !expect_end(x, "array")) {
        xa_value_unref(arr);
        return NULL;
    }
    return arr;
}

/* Current token is <member>; adds it to 'st'. */
static bool
read_member(struct xml_parser *x, struct xa_value *st, int depth)
{
    const char *s;
    size_t n;
    if (!lex(x) || !expect_start(x, "name") ||
        !element_text(x, "name", &s, &n)) {
        return false;
    }
    if (!xa_utf8_valid(s, n)) {
        return fail_utf8(x, s, n);
    }
    char *key = xa_strndup(s, n);
    struct xa_value *v = NULL;
    if (expect_end(x, "name") && skip_ws(x)) {
        if (x->kind == TOK_START && name_is(x, "value")) {
            v = read_value(x, depth + 1);
        } else {
            fail(x, "expected <value> in <member>");
        }
    }
    if (!v || !expect_end(x, "member")) {
        xa_value_unref(v);
        free(key);
        return false;
    }
    /* xa_struct_add keeps duplicates in order, like xapi's association
     * lists, and avoids a quadratic scan on large structs. */
    xa_struct_add(st, key, v);
    free(key);
    return true;
}

/* Current token is <struct>. */
static struct xa_value *
read_struct(struct xml_parser *x, int depth)
{
    if (!lex(x)) {
        return NULL;
    }
    struct xa_value *st = xa_struct();
    while (at_start(x, "member")) {
        if (!read_member(x, st, depth)) {
            xa_value_unref(st);
            return NULL;
        }
    }
    if (!expect_end(x, "struct")) {
        xa_value_unref(st);
        return NULL;
    }
    return st;
}

static bool
is_nil_tag(const struct xml_parser *x)
{
    /* xmlrpc-c and Apache send the extension as <ex:nil/>. */
    return name_is(x, "nil") ||
           (x->name_len > 4 &&
            memcmp(x->name + x->name_len - 4, ":nil", 4) == 0);
}

/* Current token is <value>; reads through </value>. */
static struct xa_value *
read_typed(struct xml_parser *x, int depth)
{
    for (size_t i = 0; i < XA_ARRAY_SIZE(scalar_tags); i++) {
        if (name_is(x, scalar_tags[i].tag)) {
            return read_scalar(x, scalar_tags[i].tag, scalar_tags[i].type);
        }
    }
    if (name_is(x, "array")) {
        return read_array(x, depth);
    }
    if (name_is(x, "struct")) {
        return read_struct(x, depth);
    }
    if (is_nil_tag(x)) {
        /* Copy the name before lex() moves on: expect_end compares it. */
        char tag[64];
        size_t n =
            x->name_len < sizeof(tag) - 1 ? x->name_len : sizeof(tag) - 1;
        memcpy(tag, x->name, n);
        tag[n] = '\0';
        if (!lex(x) || !expect_end(x, tag)) {
            return NULL;
        }
        return xa_nil();
    }
    fail(x, "unknown value type");
    return NULL;
}

static struct xa_value *
read_value(struct xml_parser *x, int depth)
{
    if (depth > XA_XMLRPC_MAX_DEPTH) {
        fail(x, "values nested too deeply");
        return NULL;
    }
    if (!lex(x)) {
        return NULL;
    }
    if (x->kind == TOK_TEXT) {
        if (!lex(x)) {
            return NULL;
        }
        if (x->kind == TOK_END && name_is(x, "value")) {
            /* A bare <value>text</value> is a string. */
            struct xa_value *v = make_string(x, x->text.data, x->text.len);
            if (v && !lex(x)) {
                xa_value_unref(v);
                v = NULL;
            }
            return v;
        }
        if (x->kind != TOK_START || !text_is_space(x)) {
            fail(x, "text mixed with elements in <value>");
            return NULL;
        }
    } else if (x->kind == TOK_END && name_is(x, "value")) {
        if (!lex(x)) {
            return NULL;
        }
        return xa_string("");
    }
    if (x->kind != TOK_START) {
        fail(x, "expected a value");
        return NULL;
    }
    struct xa_value *v = read_typed(x, depth);
    if (v && !expect_end(x, "value")) {
        xa_value_unref(v);
        v = NULL;
    }
    return v;
}

static void
parser_init(struct xml_parser *x, const char *body, size_t len)
{
    memset(x, 0, sizeof(*x));
    x->base = body ? body : "";
    x->p = x->base;
    x->end = x->base + (body ? len : 0);
    /* A UTF-8 byte order mark is allowed before the prolog. */
    if (HAS(x, "\xef\xbb\xbf")) {
        x->p += 3;
    }
}

static struct xa_error *
parser_finish(struct xml_parser *x)
{
    xa_buf_free(&x->text);
    return x->err;
}

/* Reads up to and including the root start tag named 'root'. */
static bool
read_root_start(struct xml_parser *x, const char *root)
{
    if (!lex(x)) {
        return false;
    }
    if (x->kind == TOK_EOF) {
        return fail(x, "empty document");
    }
    return expect_start(x, root);
}

/* After the root end tag only whitespace, comments and PIs may follow. */
static bool
read_root_end(struct xml_parser *x, const char *root)
{
    if (!expect_end(x, root) || !skip_ws(x)) {
        return false;
    }
    if (x->kind != TOK_EOF) {
        return fail(x, "content after the document element");
    }
    return true;
}

struct xa_error *
xa_xmlrpc_parse_call(const char *body, size_t len, char **ret_method,
                     struct xa_value **ret_params)
{
    struct xml_parser x;
    char *method = NULL;
    struct xa_value *params = xa_array();
    const char *s;
    size_t n;

    parser_init(&x, body, len);
    if (!read_root_start(&x, "methodCall") || !expect_start(&x, "methodName") ||
        !element_text(&x, "methodName", &s, &n)) {
        goto out;
    }
    trim(&s, &n);
    if (n == 0 || !xa_utf8_valid(s, n)) {
        fail(&x, "empty or non-UTF-8 method name");
        goto out;
    }
    method = xa_strndup(s, n);
    if (!expect_end(&x, "methodName")) {
        goto out;
    }
    /* <params> may be left out when there are none. */
    if (at_start(&x, "params")) {
        if (!lex(&x)) {
            goto out;
        }
        while (at_start(&x, "param")) {
            struct xa_value *v = NULL;
            if (lex(&x) && at_start(&x, "value")) {
                v = read_value(&x, 1);
            } else {
                fail(&x, "expected <value> in <param>");
            }
            if (!v) {
                goto out;
            }
            xa_array_append(params, v);
            if (!expect_end(&x, "param")) {
                goto out;
            }
        }
        if (!expect_end(&x, "params")) {
            goto out;
        }
    }
    read_root_end(&x, "methodCall");

out:;
    struct xa_error *err = parser_finish(&x);
    if (err) {
        free(method);
        xa_value_unref(params);
        method = NULL;
        params = NULL;
    }
    *ret_method = method;
    *ret_params = params;
    return err;
}

/* Text of an ErrorDescription item, which xapi always sends as strings
 * but other servers may not. */
static char *
param_text(const struct xa_value *v)
{
    if (!v) {
        return xa_strdup("");
    }
    switch (v->kind) {
    case XA_STRING:
    case XA_DATETIME:
        return xa_strndup(v->u.str.s, v->u.str.len);
    case XA_INT:
    case XA_INT32:
        return xa_asprintf("%" PRId64, v->u.i);
    default:
        return xa_value_to_debug(v);
    }
}

static struct xa_error *
error_from_description(const struct xa_value *desc)
{
    if (!desc || desc->kind != XA_ARRAY || desc->u.arr.n == 0) {
        return xa_error_new("XMLRPC_PARSE_ERROR", 1,
                            "Failure without an ErrorDescription");
    }
    char *code = param_text(desc->u.arr.items[0]);
    struct xa_error *e = xa_error_new(code, 0);
    free(code);
    for (size_t i = 1; i < desc->u.arr.n; i++) {
        char *p = param_text(desc->u.arr.items[i]);
        xa_error_add_param(e, p);
        free(p);
    }
    return e;
}

static struct xa_error *
error_from_fault(const struct xa_value *fault)
{
    char *code = param_text(xa_struct_get(fault, "faultCode"));
    char *msg = param_text(xa_struct_get(fault, "faultString"));
    struct xa_error *e = xa_error_new("XMLRPC_FAULT", 2, code, msg);
    free(code);
    free(msg);
    return e;
}

/* Unwraps the XenAPI envelope, taking 'v'. */
static struct xa_error *
unwrap_envelope(struct xa_value *v, struct xa_value **ret_value)
{
    const char *status = xa_struct_get_str(v, "Status");
    if (!status) {
        *ret_value = v;
        return NULL;
    }
    if (strcmp(status, "Success") == 0) {
        struct xa_value *inner = xa_struct_get(v, "Value");
        *ret_value = inner ? xa_value_ref(inner) : xa_string("");
        xa_value_unref(v);
        return NULL;
    }
    struct xa_error *e;
    if (strcmp(status, "Failure") == 0) {
        e = error_from_description(xa_struct_get(v, "ErrorDescription"));
    } else {
        e = xa_error_new("XMLRPC_PARSE_ERROR", 1, "unknown Status in reply");
    }
    xa_value_unref(v);
    *ret_value = NULL;
    return e;
}

struct xa_error *
xa_xmlrpc_parse_response(const char *body, size_t len,
                         struct xa_value **ret_value)
{
    struct xml_parser x;
    struct xa_value *v = NULL;
    bool is_fault = false;

    *ret_value = NULL;
    parser_init(&x, body, len);
    if (!read_root_start(&x, "methodResponse")) {
        goto out;
    }
    if (at_start(&x, "fault")) {
        is_fault = true;
        if (lex(&x) && at_start(&x, "value")) {
            v = read_value(&x, 1);
        } else {
            fail(&x, "expected <value> in <fault>");
        }
        if (!v || !expect_end(&x, "fault")) {
            goto out;
        }
    } else {
        if (!expect_start(&x, "params") || !expect_start(&x, "param")) {
            goto out;
        }
        if (at_start(&x, "value")) {
            v = read_value(&x, 1);
        } else {
            fail(&x, "expected <value> in <param>");
        }
        if (!v || !expect_end(&x, "param") || !expect_end(&x, "params")) {
            goto out;
        }
    }
    read_root_end(&x, "methodResponse");

out:;
    struct xa_error *err = parser_finish(&x);
    if (err) {
        xa_value_unref(v);
        return err;
    }
    if (is_fault) {
        err = error_from_fault(v);
        xa_value_unref(v);
        return err;
    }
    return unwrap_envelope(v, ret_value);
}
