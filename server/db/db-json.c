/* db-json.c - stored rows as JSON, and the stored kinds of values.
 *
 * Rows go to the persistence driver as a JSON object of their stored
 * fields keyed by field name.  Encoding is hand-written (it runs under the
 * write lock at every commit); decoding (once, at load) uses json-c and is
 * directed by the schema types, so a value written as a JSON number comes
 * back as XA_INT or XA_DOUBLE as its field demands, unknown fields are
 * ignored and missing ones defaulted: the schema may grow between runs. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "db-internal.h"
#include "json-write.h"
#include "schema.h"
#include "value.h"

void
xa_db_json_encode_row(struct xa_buf *b, const struct xa_class_desc *cls,
                      struct xa_value *const *vals)
{
    bool first = true;
    xa_buf_putc(b, '{');
    for (size_t f = 0; f < cls->n_fields; f++) {
        if (!vals[f]) {
            continue; /* computed set */
        }
        if (!first) {
            xa_buf_putc(b, ',');
        }
        first = false;
        const char *name = cls->fields[f].name;
        xa_json_put_string(b, name, strlen(name));
        xa_buf_putc(b, ':');
        xa_json_put_value(b, vals[f], XA_JSON_STORE);
    }
    xa_buf_putc(b, '}');
}

/* A value of no particular type: follows the JSON. */
static struct xa_value *
dec_generic(struct json_object *j)
{
    struct xa_value *v;
    switch (json_object_get_type(j)) {
    case json_type_null:
        return xa_nil();
    case json_type_boolean:
        return xa_bool(json_object_get_boolean(j));
    case json_type_int:
        return xa_int(json_object_get_int64(j));
    case json_type_double:
        return xa_double(json_object_get_double(j));
    case json_type_array:
        v = xa_array();
        for (size_t i = 0; i < json_object_array_length(j); i++) {
            xa_array_append(v, dec_generic(json_object_array_get_idx(j, i)));
        }
        return v;
    case json_type_object:
        v = xa_struct();
        json_object_object_foreach(j, key, val)
        {
            xa_struct_add(v, key, dec_generic(val));
        }
        return v;
    case json_type_string:
    default:
        return xa_string_n(json_object_get_string(j),
                           (size_t)json_object_get_string_len(j));
    }
}

static struct xa_value *
dec_typed(const struct xa_type *t, struct json_object *j)
{
    enum json_type jt = json_object_get_type(j);
    struct xa_value *v;
    int64_t i;
    switch (t->kind) {
    case XA_T_INT:
        if (jt == json_type_string &&
            xa_parse_int64(json_object_get_string(j), &i)) {
            return xa_int(i);
        }
        return xa_int(json_object_get_int64(j));
    case XA_T_FLOAT:
        if (jt == json_type_string) {
            return xa_double(strtod(json_object_get_string(j), NULL));
        }
        return xa_double(json_object_get_double(j));
    case XA_T_BOOL:
        return xa_bool(json_object_get_boolean(j));
    case XA_T_DATETIME:
        return xa_datetime(json_object_get_string(j));
    case XA_T_STRING:
    case XA_T_REF:
    case XA_T_ENUM:
        if (jt == json_type_null) {
            return xa_string(t->kind == XA_T_REF ? "OpaqueRef:NULL" : "");
        }
        return xa_string_n(json_object_get_string(j),
                           (size_t)json_object_get_string_len(j));
    case XA_T_SET:
        v = xa_array();
        if (jt == json_type_array) {
            for (size_t k = 0; k < json_object_array_length(j); k++) {
                xa_array_append(
                    v, dec_typed(t->elem, json_object_array_get_idx(j, k)));
            }
        }
        return v;
    case XA_T_MAP:
        v = xa_struct();
        if (jt == json_type_object) {
            json_object_object_foreach(j, key, val)
            {
                xa_struct_add(v, key, dec_typed(t->elem, val));
            }
        }
        return v;
    case XA_T_OPTION:
        if (jt == json_type_null) {
            return xa_nil();
        }
        return dec_typed(t->elem, j);
    default:
        return dec_generic(j);
    }
}

struct xa_error *
xa_db_json_decode_row(const struct xa_class_desc *cls,
                      const struct xa_hmap *field_index, const char *json,
                      struct xa_value **vals)
{
    struct json_object *j = json_tokener_parse(json);
    if (!j || !json_object_is_type(j, json_type_object)) {
        json_object_put(j);
        return xa_error_internal("database: bad stored row of class %s",
                                 cls->name);
    }
    for (size_t f = 0; f < cls->n_fields; f++) {
        vals[f] = NULL;
    }
    json_object_object_foreach(j, key, val)
    {
        intptr_t idx = (intptr_t)xa_hmap_get(field_index, key);
        if (!idx) {
            continue; /* a field the schema no longer has */
        }
        const struct xa_field_desc *fd = &cls->fields[idx - 1];
        if (fd->is_inverse_set) {
            continue;
        }
        xa_value_unref(vals[idx - 1]);
        vals[idx - 1] = dec_typed(fd->type, val);
    }
    json_object_put(j);
    for (size_t f = 0; f < cls->n_fields; f++) {
        if (!vals[f] && !cls->fields[f].is_inverse_set) {
            vals[f] = xa_value_ref(xa_schema_field_default(cls, (int)f));
        }
    }
    return NULL;
}

/* Normalises each element of an array or each member value of a struct;
 * copies the container only when some element changes. */
static struct xa_value *
normalize_container(const struct xa_type *elem, struct xa_value *v)
{
    bool is_arr = v->kind == XA_ARRAY;
    size_t n = is_arr ? v->u.arr.n : v->u.st.n;
    struct xa_value *out = NULL;
    for (size_t i = 0; i < n; i++) {
        struct xa_value *item = is_arr ? v->u.arr.items[i] : v->u.st.m[i].val;
        struct xa_value *norm = xa_db_normalize(elem, xa_value_ref(item));
        if (norm == item && !out) {
            xa_value_unref(norm);
            continue;
        }
        if (!out) {
            /* first change: copy what came before unchanged */
            out = is_arr ? xa_array() : xa_struct();
            for (size_t k = 0; k < i; k++) {
                if (is_arr) {
                    xa_array_append(out, xa_value_ref(v->u.arr.items[k]));
                } else {
                    xa_struct_add(out, v->u.st.m[k].key,
                                  xa_value_ref(v->u.st.m[k].val));
                }
            }
        }
        if (is_arr) {
            xa_array_append(out, norm);
        } else {
            xa_struct_add(out, v->u.st.m[i].key, norm);
        }
    }
    if (!out) {
        return v;
    }
    xa_value_unref(v);
    return out;
}

struct xa_value *
xa_db_normalize(const struct xa_type *t, struct xa_value *v)
{
    struct xa_value *n = NULL;
    int64_t i;
    switch (t->kind) {
    case XA_T_INT:
        if (v->kind == XA_INT32) {
            n = xa_int(v->u.i);
        } else if (v->kind == XA_DOUBLE) {
            n = xa_int((int64_t)v->u.d);
        } else if (v->kind == XA_STRING && xa_parse_int64(v->u.str.s, &i)) {
            n = xa_int(i);
        }
        break;
    case XA_T_FLOAT:
        if (v->kind == XA_INT || v->kind == XA_INT32) {
            n = xa_double((double)v->u.i);
        } else if (v->kind == XA_STRING) {
            n = xa_double(strtod(v->u.str.s, NULL));
        }
        break;
    case XA_T_BOOL:
        if (v->kind == XA_STRING) {
            n = xa_bool(strcmp(v->u.str.s, "true") == 0);
        } else if (v->kind == XA_INT || v->kind == XA_INT32) {
            n = xa_bool(v->u.i != 0);
        }
        break;
    case XA_T_DATETIME:
        if (v->kind == XA_STRING) {
            n = xa_datetime(v->u.str.s);
        }
        break;
    case XA_T_STRING:
    case XA_T_REF:
    case XA_T_ENUM:
        if (v->kind == XA_DATETIME) {
            n = xa_string_n(v->u.str.s, v->u.str.len);
        }
        break;
    case XA_T_SET:
        if (v->kind == XA_ARRAY) {
            return normalize_container(t->elem, v);
        }
        break;
    case XA_T_MAP:
        if (v->kind == XA_STRUCT) {
            return normalize_container(t->elem, v);
        }
        break;
    default:
        break;
    }
    if (!n) {
        return v;
    }
    xa_value_unref(v);
    return n;
}

bool
xa_db_kind_ok(const struct xa_type *t, const struct xa_value *v)
{
    switch (t->kind) {
    case XA_T_INT:
        return v->kind == XA_INT;
    case XA_T_FLOAT:
        return v->kind == XA_DOUBLE;
    case XA_T_BOOL:
        return v->kind == XA_BOOL;
    case XA_T_DATETIME:
        return v->kind == XA_DATETIME;
    case XA_T_STRING:
    case XA_T_REF:
    case XA_T_ENUM:
        return v->kind == XA_STRING;
    case XA_T_SET:
        return v->kind == XA_ARRAY;
    case XA_T_MAP:
    case XA_T_RECORD:
        return v->kind == XA_STRUCT;
    default:
        return true;
    }
}
