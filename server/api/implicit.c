/* implicit.c - see implicit.h. */
#include "api/implicit.h"

#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "db/db.h"
#include "error.h"
#include "value.h"

/* Overrides, indexed like xa_schema_messages (set before serving,
 * read-only afterwards). */
static xa_thunk *overrides;

void
xa_implicit_override(const char *wire, xa_thunk fn)
{
    const struct xa_message_desc *m = xa_schema_message(wire);
    if (!m || m->implicit == XA_MSG_EXPLICIT) {
        abort(); /* a programming error, found at start-up */
    }
    if (!overrides) {
        overrides = xa_calloc(xa_schema_n_messages, sizeof *overrides);
    }
    overrides[m - xa_schema_messages] = fn;
}

static struct xa_error *
finish_write(struct xa_txn *t, struct xa_error *err)
{
    if (err) {
        xa_db_abort(t);
        return err;
    }
    return xa_db_commit(t);
}

static struct xa_error *
get_field(const struct xa_message_desc *m, const char *ref,
          struct xa_value **ret)
{
    struct xa_txn *t = xa_db_begin_read();
    *ret = xa_db_get_field(t, m->cls, ref, m->field);
    xa_db_end(t);
    return *ret ? NULL : xa_error_handle_invalid(m->cls->name, ref);
}

static struct xa_error *
set_field(const struct xa_message_desc *m, const char *ref, struct xa_value *v)
{
    struct xa_txn *t = xa_db_begin_write();
    if (!xa_db_exists(t, m->cls, ref)) {
        xa_db_abort(t);
        return xa_error_handle_invalid(m->cls->name, ref);
    }
    return finish_write(
        t, xa_db_set_field(t, m->cls, ref, m->field, xa_value_ref(v)));
}

static struct xa_error *
map_change(const struct xa_message_desc *m, const char *ref, const char *key,
           struct xa_value *val)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *cur = xa_db_get_field(t, m->cls, ref, m->field);
    if (!cur) {
        xa_db_abort(t);
        return xa_error_handle_invalid(m->cls->name, ref);
    }
    if (val && xa_struct_get(cur, key)) {
        struct xa_value *uuid =
            xa_db_get_field(t, m->cls, ref, m->cls->uuid_field);
        struct xa_error *e = xa_error_new("MAP_DUPLICATE_KEY", 4, m->cls->name,
                                          m->cls->fields[m->field].name,
                                          uuid ? uuid->u.str.s : ref, key);
        xa_value_unref(uuid);
        xa_value_unref(cur);
        xa_db_abort(t);
        return e;
    }
    if (!val && !xa_struct_get(cur, key)) {
        xa_value_unref(cur);
        xa_db_abort(t);
        return NULL; /* removing a missing key changes nothing */
    }
    struct xa_value *next = xa_value_copy(cur);
    xa_value_unref(cur);
    if (val) {
        xa_struct_add(next, key, xa_value_ref(val));
    } else {
        xa_struct_remove(next, key);
    }
    return finish_write(t, xa_db_set_field(t, m->cls, ref, m->field, next));
}

static struct xa_error *
set_change(const struct xa_message_desc *m, const char *ref,
           const struct xa_value *item, bool add)
{
    struct xa_txn *t = xa_db_begin_write();
    struct xa_value *cur = xa_db_get_field(t, m->cls, ref, m->field);
    if (!cur) {
        xa_db_abort(t);
        return xa_error_handle_invalid(m->cls->name, ref);
    }
    struct xa_value *next = xa_array();
    bool present = false;
    for (size_t i = 0; i < cur->u.arr.n; i++) {
        if (xa_value_equal(cur->u.arr.items[i], item)) {
            present = true;
            if (!add) {
                continue;
            }
        }
        xa_array_append(next, xa_value_ref(cur->u.arr.items[i]));
    }
    xa_value_unref(cur);
    if (present == add) { /* already there, or nothing to remove */
        xa_value_unref(next);
        xa_db_abort(t);
        return NULL;
    }
    if (add) {
        xa_array_append(next, xa_value_ref((struct xa_value *)item));
    }
    return finish_write(t, xa_db_set_field(t, m->cls, ref, m->field, next));
}

struct records_ctx {
    struct xa_txn *t;
    const struct xa_class_desc *cls;
    struct xa_value *out;
};

static bool
add_record(const char *ref, void *ctx)
{
    struct records_ctx *c = ctx;
    xa_struct_add(c->out, ref, xa_db_get_record(c->t, c->cls, ref));
    return true;
}

static struct xa_error *
all_records(const struct xa_class_desc *cls, const char *expr,
            struct xa_value **ret)
{
    struct xa_txn *t = xa_db_begin_read();
    struct records_ctx c = {t, cls, xa_struct()};
    if (expr) {
        struct xa_value *refs = NULL;
        struct xa_error *err = xa_db_where(t, cls, expr, &refs);
        if (err) {
            xa_db_end(t);
            xa_value_unref(c.out);
            return err;
        }
        for (size_t i = 0; i < refs->u.arr.n; i++) {
            add_record(refs->u.arr.items[i]->u.str.s, &c);
        }
        xa_value_unref(refs);
    } else {
        xa_db_foreach(t, cls, add_record, &c);
    }
    xa_db_end(t);
    *ret = c.out;
    return NULL;
}

struct name_ctx {
    struct xa_txn *t;
    const struct xa_class_desc *cls;
    const char *label;
    struct xa_value *out;
};

static bool
match_name(const char *ref, void *ctx)
{
    struct name_ctx *c = ctx;
    const struct xa_value *v =
        xa_db_peek_field(c->t, c->cls, ref, c->cls->name_label_field);
    if (v && strcmp(v->u.str.s, c->label) == 0) {
        xa_array_append(c->out, xa_string(ref));
    }
    return true;
}

/* A new row may only point at objects that exist (or at nothing). */
static struct xa_error *
check_record_refs(struct xa_txn *t, const struct xa_class_desc *cls,
                  const struct xa_value *rec)
{
    for (size_t i = 0; i < rec->u.st.n; i++) {
        int f = xa_schema_field_index(cls, rec->u.st.m[i].key);
        const struct xa_type *ty = f >= 0 ? cls->fields[f].type : NULL;
        if (!ty || ty->kind != XA_T_REF || !ty->cls->in_db) {
            continue;
        }
        const char *target = rec->u.st.m[i].val->u.str.s;
        if (strcmp(target, "OpaqueRef:NULL") != 0 &&
            !xa_db_exists(t, ty->cls, target)) {
            return xa_error_handle_invalid(ty->cls->name, target);
        }
    }
    return NULL;
}

static struct xa_error *
create_row(const struct xa_message_desc *m, const struct xa_value *args,
           struct xa_value **ret)
{
    const struct xa_class_desc *cls = m->cls;
    struct xa_value *rec = xa_struct();
    for (size_t i = 0; i < cls->n_fields; i++) {
        const struct xa_field_desc *f = &cls->fields[i];
        if (f->qual == XA_Q_RO_RUNTIME || f->is_inverse_set) {
            continue; /* the server owns these */
        }
        struct xa_value *v = xa_struct_get(args, f->name);
        if (!v && !f->dflt) {
            xa_value_unref(rec);
            return xa_error_internal("Field %s is required by %s.create",
                                     f->name, cls->name);
        }
        if (v) {
            xa_struct_add(rec, f->name, xa_value_ref(v));
        }
    }
    char *ref = xa_ref_new();
    struct xa_txn *t = xa_db_begin_write();
    struct xa_error *err = check_record_refs(t, cls, rec);
    if (err) {
        xa_db_abort(t);
        xa_value_unref(rec);
        free(ref);
        return err;
    }
    err = finish_write(t, xa_db_create(t, cls, ref, rec));
    if (err) {
        free(ref);
        return err;
    }
    *ret = xa_string_take(ref);
    return NULL;
}

struct xa_error *
xa_implicit_generic(struct xa_call *call, struct xa_value *const *args,
                    struct xa_value **ret)
{
    const struct xa_message_desc *m = call->msg;
    const struct xa_class_desc *cls = m->cls;
    struct xa_txn *t;
    char *ref;
    switch (m->implicit) {
    case XA_MSG_GET_FIELD:
        return get_field(m, args[0]->u.str.s, ret);
    case XA_MSG_SET_FIELD:
        return set_field(m, args[0]->u.str.s, args[1]);
    case XA_MSG_ADD_TO_MAP:
        return map_change(m, args[0]->u.str.s, args[1]->u.str.s, args[2]);
    case XA_MSG_REMOVE_FROM_MAP:
        return map_change(m, args[0]->u.str.s, args[1]->u.str.s, NULL);
    case XA_MSG_ADD_TO_SET:
        return set_change(m, args[0]->u.str.s, args[1], true);
    case XA_MSG_REMOVE_FROM_SET:
        return set_change(m, args[0]->u.str.s, args[1], false);
    case XA_MSG_GET_RECORD:
        t = xa_db_begin_read();
        *ret = xa_db_get_record(t, cls, args[0]->u.str.s);
        xa_db_end(t);
        return *ret ? NULL
                    : xa_error_handle_invalid(cls->name, args[0]->u.str.s);
    case XA_MSG_GET_BY_UUID:
        t = xa_db_begin_read();
        ref = xa_db_ref_by_uuid(t, cls, args[0]->u.str.s);
        xa_db_end(t);
        if (!ref) {
            return xa_error_uuid_invalid(cls->name, args[0]->u.str.s);
        }
        *ret = xa_string_take(ref);
        return NULL;
    case XA_MSG_GET_BY_NAME_LABEL: {
        struct name_ctx c = {xa_db_begin_read(), cls, args[0]->u.str.s,
                             xa_array()};
        xa_db_foreach(c.t, cls, match_name, &c);
        xa_db_end(c.t);
        *ret = c.out;
        return NULL;
    }
    case XA_MSG_GET_ALL:
        t = xa_db_begin_read();
        *ret = xa_db_get_all(t, cls);
        xa_db_end(t);
        return NULL;
    case XA_MSG_GET_ALL_WHERE: {
        t = xa_db_begin_read();
        struct xa_error *err = xa_db_where(t, cls, args[0]->u.str.s, ret);
        xa_db_end(t);
        return err;
    }
    case XA_MSG_GET_ALL_RECORDS:
        return all_records(cls, NULL, ret);
    case XA_MSG_GET_ALL_RECORDS_WHERE:
        return all_records(cls, args[0]->u.str.s, ret);
    case XA_MSG_CREATE:
        return create_row(m, args[0], ret);
    case XA_MSG_DESTROY:
        t = xa_db_begin_write();
        return finish_write(t, xa_db_destroy(t, cls, args[0]->u.str.s));
    case XA_MSG_EXPLICIT:
        break;
    }
    return xa_error_internal("%s is not an implicit message", m->wire);
}

struct xa_error *
xa_implicit_call(struct xa_call *call, struct xa_value *const *args,
                 struct xa_value **ret)
{
    if (overrides) {
        xa_thunk fn = overrides[call->msg - xa_schema_messages];
        if (fn) {
            return fn(call, args, ret);
        }
    }
    return xa_implicit_generic(call, args, ret);
}
