/* value.c - see value.h. */
#include "value.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-write.h"
#include "util.h"

static struct xa_value *
value_new(enum xa_kind kind)
{
    struct xa_value *v = xa_calloc(1, sizeof *v);
    v->kind = kind;
    v->refs = 1;
    return v;
}

struct xa_value *
xa_nil(void)
{
    return value_new(XA_NIL);
}

struct xa_value *
xa_string_n(const char *s, size_t n)
{
    struct xa_value *v = value_new(XA_STRING);
    v->u.str.s = xa_strndup(s, n);
    v->u.str.len = n;
    return v;
}

struct xa_value *
xa_string(const char *s)
{
    return xa_string_n(s, strlen(s));
}

struct xa_value *
xa_string_take(char *s)
{
    struct xa_value *v = value_new(XA_STRING);
    v->u.str.s = s;
    v->u.str.len = strlen(s);
    return v;
}

struct xa_value *
xa_int(int64_t i)
{
    struct xa_value *v = value_new(XA_INT);
    v->u.i = i;
    return v;
}

struct xa_value *
xa_int32(int32_t i)
{
    struct xa_value *v = value_new(XA_INT32);
    v->u.i = i;
    return v;
}

struct xa_value *
xa_double(double d)
{
    struct xa_value *v = value_new(XA_DOUBLE);
    v->u.d = d;
    return v;
}

struct xa_value *
xa_bool(bool b)
{
    struct xa_value *v = value_new(XA_BOOL);
    v->u.b = b;
    return v;
}

struct xa_value *
xa_datetime(const char *s)
{
    struct xa_value *v = value_new(XA_DATETIME);
    v->u.str.s = xa_strdup(s);
    v->u.str.len = strlen(s);
    return v;
}

struct xa_value *
xa_array(void)
{
    return value_new(XA_ARRAY);
}

struct xa_value *
xa_struct(void)
{
    return value_new(XA_STRUCT);
}

struct xa_value *
xa_value_ref(struct xa_value *v)
{
    if (v) {
        __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
    }
    return v;
}

static void
value_destroy(struct xa_value *v)
{
    switch (v->kind) {
    case XA_STRING:
    case XA_DATETIME:
        free(v->u.str.s);
        break;
    case XA_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++) {
            xa_value_unref(v->u.arr.items[i]);
        }
        free(v->u.arr.items);
        break;
    case XA_STRUCT:
        for (size_t i = 0; i < v->u.st.n; i++) {
            if (!v->u.st.m[i].static_key) {
                free(v->u.st.m[i].key);
            }
            xa_value_unref(v->u.st.m[i].val);
        }
        free(v->u.st.m);
        break;
    default:
        break;
    }
    free(v);
}

void
xa_value_unref(struct xa_value *v)
{
    if (v && __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        value_destroy(v);
    }
}

void
xa_array_append(struct xa_value *arr, struct xa_value *item)
{
    if (arr->u.arr.n == arr->u.arr.cap) {
        arr->u.arr.cap = arr->u.arr.cap ? arr->u.arr.cap * 2 : 4;
        arr->u.arr.items = xa_realloc(
            arr->u.arr.items, arr->u.arr.cap * sizeof *arr->u.arr.items);
    }
    arr->u.arr.items[arr->u.arr.n++] = item;
}

static void
struct_push(struct xa_value *st, char *key, bool static_key,
            struct xa_value *val)
{
    if (st->u.st.n == st->u.st.cap) {
        st->u.st.cap = st->u.st.cap ? st->u.st.cap * 2 : 4;
        st->u.st.m = xa_realloc(st->u.st.m, st->u.st.cap * sizeof *st->u.st.m);
    }
    struct xa_member *m = &st->u.st.m[st->u.st.n++];
    m->key = key;
    m->val = val;
    m->static_key = static_key;
}

void
xa_struct_add(struct xa_value *st, const char *key, struct xa_value *val)
{
    struct_push(st, xa_strdup(key), false, val);
}

void
xa_struct_add_static(struct xa_value *st, const char *key, struct xa_value *val)
{
    struct_push(st, (char *)key, true, val);
}

void
xa_struct_set(struct xa_value *st, const char *key, struct xa_value *val)
{
    for (size_t i = 0; i < st->u.st.n; i++) {
        if (strcmp(st->u.st.m[i].key, key) == 0) {
            xa_value_unref(st->u.st.m[i].val);
            st->u.st.m[i].val = val;
            return;
        }
    }
    xa_struct_add(st, key, val);
}

struct xa_value *
xa_struct_get(const struct xa_value *st, const char *key)
{
    if (!st || st->kind != XA_STRUCT) {
        return NULL;
    }
    for (size_t i = 0; i < st->u.st.n; i++) {
        if (strcmp(st->u.st.m[i].key, key) == 0) {
            return st->u.st.m[i].val;
        }
    }
    return NULL;
}

bool
xa_struct_remove(struct xa_value *st, const char *key)
{
    for (size_t i = 0; i < st->u.st.n; i++) {
        if (strcmp(st->u.st.m[i].key, key) == 0) {
            if (!st->u.st.m[i].static_key) {
                free(st->u.st.m[i].key);
            }
            xa_value_unref(st->u.st.m[i].val);
            memmove(&st->u.st.m[i], &st->u.st.m[i + 1],
                    (st->u.st.n - i - 1) * sizeof *st->u.st.m);
            st->u.st.n--;
            return true;
        }
    }
    return false;
}

const char *
xa_struct_get_str(const struct xa_value *st, const char *key)
{
    return xa_value_str(xa_struct_get(st, key));
}

const char *
xa_value_str(const struct xa_value *v)
{
    if (v && (v->kind == XA_STRING || v->kind == XA_DATETIME)) {
        return v->u.str.s;
    }
    return NULL;
}

struct xa_value *
xa_value_copy(const struct xa_value *v)
{
    struct xa_value *c;
    switch (v->kind) {
    case XA_STRING:
        return xa_string_n(v->u.str.s, v->u.str.len);
    case XA_DATETIME:
        return xa_datetime(v->u.str.s);
    case XA_ARRAY:
        c = xa_array();
        for (size_t i = 0; i < v->u.arr.n; i++) {
            xa_array_append(c, xa_value_copy(v->u.arr.items[i]));
        }
        return c;
    case XA_STRUCT:
        c = xa_struct();
        for (size_t i = 0; i < v->u.st.n; i++) {
            const struct xa_member *m = &v->u.st.m[i];
            struct_push(c, m->static_key ? m->key : xa_strdup(m->key),
                        m->static_key, xa_value_copy(m->val));
        }
        return c;
    default:
        c = value_new(v->kind);
        c->u = v->u;
        return c;
    }
}

bool
xa_value_equal(const struct xa_value *a, const struct xa_value *b)
{
    if (a == b) {
        return true;
    }
    if (!a || !b || a->kind != b->kind) {
        return false;
    }
    switch (a->kind) {
    case XA_NIL:
        return true;
    case XA_STRING:
    case XA_DATETIME:
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
    case XA_INT:
    case XA_INT32:
        return a->u.i == b->u.i;
    case XA_DOUBLE:
        return a->u.d == b->u.d;
    case XA_BOOL:
        return a->u.b == b->u.b;
    case XA_ARRAY:
        if (a->u.arr.n != b->u.arr.n) {
            return false;
        }
        for (size_t i = 0; i < a->u.arr.n; i++) {
            if (!xa_value_equal(a->u.arr.items[i], b->u.arr.items[i])) {
                return false;
            }
        }
        return true;
    case XA_STRUCT:
        if (a->u.st.n != b->u.st.n) {
            return false;
        }
        for (size_t i = 0; i < a->u.st.n; i++) {
            const struct xa_value *o = xa_struct_get(b, a->u.st.m[i].key);
            if (!o || !xa_value_equal(a->u.st.m[i].val, o)) {
                return false;
            }
        }
        return true;
    }
    return false;
}

char *
xa_value_to_debug(const struct xa_value *v)
{
    struct xa_buf b = {0};
    xa_json_put_value(&b, v, XA_JSON_WIRE);
    return xa_buf_steal(&b);
}
