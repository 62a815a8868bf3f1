/* jsonrpc.c - see jsonrpc.h. */
#include "rpc/jsonrpc.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-write.h"

#define PUT_LIT(out, lit) xa_buf_append((out), (lit), sizeof(lit) - 1)

#define UTF8_MSG "Invalid UTF-8 string in parameter"

/* ---------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------- */

/* Appends 's' (NULL: "") as a JSON string literal. */
static void
put_cstring(struct xa_buf *out, const char *s)
{
    xa_json_put_string(out, s ? s : "", s ? strlen(s) : 0);
}

void
xa_jsonrpc_write_value(struct xa_buf *out, const struct xa_value *v)
{
    xa_json_put_value(out, v, XA_JSON_WIRE);
}

static void
put_id(struct xa_buf *out, const struct xa_value *id)
{
    PUT_LIT(out, ",\"id\":");
    xa_jsonrpc_write_value(out, id);
    xa_buf_putc(out, '}');
}

void
xa_jsonrpc_write_success(struct xa_buf *out, int version,
                         const struct xa_value *id,
                         const struct xa_value *result)
{
    if (version == 2) {
        PUT_LIT(out, "{\"jsonrpc\":\"2.0\",\"result\":");
    } else {
        PUT_LIT(out, "{\"result\":");
    }
    if (result) {
        xa_jsonrpc_write_value(out, result);
    } else {
        PUT_LIT(out, "\"\""); /* void, as xapi sends it */
    }
    if (version != 2) {
        PUT_LIT(out, ",\"error\":null");
    }
    put_id(out, id);
}

void
xa_jsonrpc_write_failure(struct xa_buf *out, int version,
                         const struct xa_value *id, const struct xa_error *e)
{
    const char *code = e ? e->code : "INTERNAL_ERROR";
    size_t n = e ? e->n_params : 0;
    if (version == 2) {
        /* xapi always uses code 1 and puts the XenAPI code in message. */
        PUT_LIT(out, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,"
                     "\"message\":");
        put_cstring(out, code);
        PUT_LIT(out, ",\"data\":[");
    } else {
        PUT_LIT(out, "{\"result\":null,\"error\":[");
        put_cstring(out, code);
    }
    for (size_t i = 0; i < n; i++) {
        if (i || version != 2) {
            xa_buf_putc(out, ',');
        }
        put_cstring(out, e->params[i]);
    }
    if (version == 2) {
        PUT_LIT(out, "]}");
    } else {
        xa_buf_putc(out, ']');
    }
    put_id(out, id);
}

void
xa_jsonrpc_write_call(struct xa_buf *out, const char *method,
                      const struct xa_value *params, int64_t id)
{
    PUT_LIT(out, "{\"jsonrpc\":\"2.0\",\"method\":");
    put_cstring(out, method);
    PUT_LIT(out, ",\"params\":");
    if (params && params->kind == XA_ARRAY) {
        xa_jsonrpc_write_value(out, params);
    } else {
        PUT_LIT(out, "[]");
    }
    PUT_LIT(out, ",\"id\":");
    xa_json_put_int(out, id);
    xa_buf_putc(out, '}');
}

/* ---------------------------------------------------------------------
 * Parser
 * ------------------------------------------------------------------- */

static struct xa_error *
parse_error(const char *msg)
{
    return xa_error_new("JSONRPC_PARSE_ERROR", 1, msg);
}

static struct xa_error *
utf8_error(const char *s, size_t n)
{
    /* The parameter is a C string and ends at any NUL; the message is
     * what matters. */
    char *copy = xa_utf8_sanitize(s, n);
    struct xa_error *e = xa_error_new("INVALID_VALUE", 2, UTF8_MSG, copy);
    free(copy);
    return e;
}

/* Converts a json-c tree.  Recursion is bounded by the tokenizer's depth
 * limit. */
static struct xa_error *
from_json(struct json_object *j, struct xa_value **ret)
{
    *ret = NULL;
    switch (json_object_get_type(j)) {
    case json_type_null:
        *ret = xa_nil();
        return NULL;
    case json_type_boolean:
        *ret = xa_bool(json_object_get_boolean(j));
        return NULL;
    case json_type_double:
        *ret = xa_double(json_object_get_double(j));
        return NULL;
    case json_type_int: {
        int64_t i = json_object_get_int64(j);
        /* json-c keeps integers above INT64_MAX as uint64 and clamps
         * them here; xapi's int64 cannot hold them either. */
        if (i == INT64_MAX && json_object_get_uint64(j) > (uint64_t)INT64_MAX) {
            return xa_error_new("INVALID_VALUE", 2, "integer out of range",
                                json_object_to_json_string(j));
        }
        *ret = xa_int(i);
        return NULL;
    }
    case json_type_string: {
        const char *s = json_object_get_string(j);
        size_t n = (size_t)json_object_get_string_len(j);
        if (!xa_utf8_valid(s, n)) {
            return utf8_error(s, n);
        }
        *ret = xa_string_n(s, n);
        return NULL;
    }
    case json_type_array: {
        struct xa_value *arr = xa_array();
        size_t n = json_object_array_length(j);
        for (size_t i = 0; i < n; i++) {
            struct xa_value *item;
            struct xa_error *e =
                from_json(json_object_array_get_idx(j, i), &item);
            if (e) {
                xa_value_unref(arr);
                return e;
            }
            xa_array_append(arr, item);
        }
        *ret = arr;
        return NULL;
    }
    case json_type_object: {
        struct xa_value *st = xa_struct();
        struct json_object_iterator it = json_object_iter_begin(j);
        struct json_object_iterator stop = json_object_iter_end(j);
        for (; !json_object_iter_equal(&it, &stop);
             json_object_iter_next(&it)) {
            const char *key = json_object_iter_peek_name(&it);
            if (!xa_utf8_valid(key, strlen(key))) {
                xa_value_unref(st);
                return utf8_error(key, strlen(key));
            }
            struct xa_value *item;
            struct xa_error *e =
                from_json(json_object_iter_peek_value(&it), &item);
            if (e) {
                xa_value_unref(st);
                return e;
            }
            /* json-c has already merged duplicate keys. */
            xa_struct_add(st, key, item);
        }
        *ret = st;
        return NULL;
    }
    }
    return parse_error("unknown JSON type");
}

/* Parses a whole document into a json-c tree, refusing trailing bytes. */
static struct xa_error *
tokenize(const char *body, size_t len, struct json_object **ret)
{
    *ret = NULL;
    if (!body || len == 0) {
        return parse_error("empty request body");
    }
    if (len > INT_MAX) {
        return parse_error("request body too large");
    }
    struct json_tokener *tok = json_tokener_new_ex(XA_JSONRPC_MAX_DEPTH);
    if (!tok) {
        return parse_error("out of memory");
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *j = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (jerr == json_tokener_continue) {
        json_object_put(j);
        return parse_error("truncated JSON");
    }
    if (jerr != json_tokener_success || !j) {
        json_object_put(j);
        return parse_error(json_tokener_error_desc(jerr));
    }
    for (size_t i = used; i < len; i++) {
        char c = body[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            json_object_put(j);
            return parse_error("trailing bytes after the JSON value");
        }
    }
    *ret = j;
    return NULL;
}

struct xa_error *
xa_jsonrpc_parse_call(const char *body, size_t len, char **ret_method,
                      struct xa_value **ret_params, struct xa_value **ret_id,
                      int *ret_version)
{
    struct json_object *root;
    struct json_object *m, *p, *id, *ver;
    struct xa_value *params = NULL, *idv = NULL;
    struct xa_error *e;

    *ret_method = NULL;
    *ret_params = NULL;
    *ret_id = NULL;
    *ret_version = 0;
    e = tokenize(body, len, &root);
    if (e) {
        return e;
    }
    if (!json_object_is_type(root, json_type_object)) {
        e = parse_error("request is not a JSON object");
        goto out;
    }
    int version = 1;
    if (json_object_object_get_ex(root, "jsonrpc", &ver) &&
        json_object_is_type(ver, json_type_string) &&
        strcmp(json_object_get_string(ver), "2.0") == 0) {
        version = 2;
    }
    if (!json_object_object_get_ex(root, "method", &m) ||
        !json_object_is_type(m, json_type_string)) {
        e = parse_error("missing or non-string method");
        goto out;
    }
    /* xapi has no notifications: a request must carry an id to echo. */
    if (!json_object_object_get_ex(root, "id", &id) || !id) {
        e = parse_error("missing or null id");
        goto out;
    }
    e = from_json(id, &idv);
    if (e) {
        goto out;
    }
    /* From here on the request is well formed enough to be answered: a
     * bad parameter gets a XenAPI error carrying the caller's id. */
    *ret_version = version;
    if (!json_object_object_get_ex(root, "params", &p) || !p) {
        params = xa_array();
    } else if (json_object_is_type(p, json_type_array)) {
        e = from_json(p, &params);
    } else if (json_object_is_type(p, json_type_object)) {
        /* By-name parameters are passed as one struct parameter. */
        struct xa_value *st;
        e = from_json(p, &st);
        if (!e) {
            params = xa_array();
            xa_array_append(params, st);
        }
    } else {
        e = parse_error("params is neither an array nor an object");
    }
    if (e) {
        goto out;
    }
    const char *ms = json_object_get_string(m);
    size_t mn = (size_t)json_object_get_string_len(m);
    if (mn == 0 || strlen(ms) != mn || !xa_utf8_valid(ms, mn)) {
        e = parse_error("empty or malformed method name");
        goto out;
    }
    *ret_method = xa_strndup(ms, mn);
    *ret_params = params;
    *ret_id = idv;
    *ret_version = version;
    params = NULL;
    idv = NULL;

out:
    if (e && idv && strcmp(e->code, "JSONRPC_PARSE_ERROR") != 0) {
        *ret_id = idv; /* the answer to a bad parameter echoes the id */
        idv = NULL;
    } else if (e) {
        *ret_version = 0;
    }
    xa_value_unref(params);
    xa_value_unref(idv);
    json_object_put(root);
    return e;
}

/* Text of an error parameter; xapi sends only strings. */
static char *
param_text(struct json_object *j)
{
    if (json_object_is_type(j, json_type_string)) {
        return xa_strndup(json_object_get_string(j),
                          (size_t)json_object_get_string_len(j));
    }
    return xa_strdup(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
}

/* Builds an error from a code and an optional array of parameters. */
static struct xa_error *
error_from(struct json_object *code, struct json_object *params, size_t skip)
{
    char *c = code ? param_text(code) : xa_strdup("INTERNAL_ERROR");
    struct xa_error *e = xa_error_new(c, 0);
    free(c);
    if (json_object_is_type(params, json_type_array)) {
        size_t n = json_object_array_length(params);
        for (size_t i = skip; i < n; i++) {
            char *s = param_text(json_object_array_get_idx(params, i));
            xa_error_add_param(e, s);
            free(s);
        }
    } else if (params) {
        char *s = param_text(params);
        xa_error_add_param(e, s);
        free(s);
    }
    return e;
}

struct xa_error *
xa_jsonrpc_parse_response(const char *body, size_t len,
                          struct xa_value **ret_value)
{
    struct json_object *root, *err, *res;
    struct xa_error *e;

    *ret_value = NULL;
    e = tokenize(body, len, &root);
    if (e) {
        return e;
    }
    if (!json_object_is_type(root, json_type_object)) {
        e = parse_error("reply is not a JSON object");
    } else if (json_object_object_get_ex(root, "error", &err) && err) {
        if (json_object_is_type(err, json_type_array)) {
            /* v1, and v2 for errors raised before dispatch. */
            if (json_object_array_length(err) == 0) {
                e = parse_error("empty error array");
            } else {
                e = error_from(json_object_array_get_idx(err, 0), err, 1);
            }
        } else if (json_object_is_type(err, json_type_object)) {
            struct json_object *msg = NULL, *data = NULL;
            json_object_object_get_ex(err, "message", &msg);
            json_object_object_get_ex(err, "data", &data);
            e = error_from(msg, data, 0);
        } else {
            e = error_from(err, NULL, 0);
        }
    } else if (json_object_object_get_ex(root, "result", &res)) {
        e = from_json(res, ret_value);
    } else {
        e = parse_error("reply has neither result nor error");
    }
    json_object_put(root);
    return e;
}
