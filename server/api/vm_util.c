/* vm_util.c - small database helpers for the VM and device modules (see
 * vm.h): borrowed typed reads, one-field writes, map member updates. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api/vm.h"
#include "log.h"

int
xa_api_field(const struct xa_class_desc *cls, const char *name)
{
    int i = xa_schema_field_index(cls, name);
    if (i < 0) {
        xa_log_err("api", "schema has no field %s.%s", cls->name, name);
        abort();
    }
    return i;
}

char *
xa_api_pool(struct xa_txn *t)
{
    struct xa_value *all = xa_db_get_all(t, &xa_cls_pool);
    char *p =
        all && all->u.arr.n ? xa_strdup(all->u.arr.items[0]->u.str.s) : NULL;
    xa_value_unref(all);
    return p;
}

const char *
xa_api_str(struct xa_txn *t, const struct xa_class_desc *cls, const char *ref,
           int field)
{
    const struct xa_value *v = xa_db_peek_field(t, cls, ref, field);
    const char *s = v ? xa_value_str(v) : NULL;
    return s ? s : "";
}

int64_t
xa_api_int(struct xa_txn *t, const struct xa_class_desc *cls, const char *ref,
           int field)
{
    const struct xa_value *v = xa_db_peek_field(t, cls, ref, field);
    return v && (v->kind == XA_INT || v->kind == XA_INT32) ? v->u.i : 0;
}

bool
xa_api_bool(struct xa_txn *t, const struct xa_class_desc *cls, const char *ref,
            int field)
{
    const struct xa_value *v = xa_db_peek_field(t, cls, ref, field);
    return v && v->kind == XA_BOOL && v->u.b;
}

const char *
xa_api_map_get(struct xa_txn *t, const struct xa_class_desc *cls,
               const char *ref, int field, const char *key)
{
    const struct xa_value *v = xa_db_peek_field(t, cls, ref, field);
    return v && v->kind == XA_STRUCT ? xa_struct_get_str(v, key) : NULL;
}

struct refs_ctx {
    struct xa_txn *t;
    const struct xa_class_desc *cls;
    int field;
    const char *ref;
    struct xa_value *out;
};

static bool
match_ref(const char *ref, void *ctx)
{
    struct refs_ctx *c = ctx;
    if (strcmp(xa_api_str(c->t, c->cls, ref, c->field), c->ref) == 0) {
        xa_array_append(c->out, xa_string(ref));
    }
    return true;
}

struct xa_value *
xa_api_refs_where(struct xa_txn *t, const struct xa_class_desc *cls, int field,
                  const char *ref)
{
    /* A relation the database computes is cheapest asked of the other
     * side (VM.VBDs for VBD.VM). */
    const struct xa_field_desc *f = &cls->fields[field];
    if (f->rel_cls && f->rel_field >= 0) {
        struct xa_value *v = xa_db_get_field(t, f->rel_cls, ref, f->rel_field);
        if (v && v->kind == XA_ARRAY) {
            return v;
        }
        xa_value_unref(v);
    }
    struct refs_ctx c = {t, cls, field, ref, xa_array()};
    xa_db_foreach(t, cls, match_ref, &c);
    return c.out;
}

struct xa_error *
xa_api_set(struct xa_txn *t, const struct xa_class_desc *cls, const char *ref,
           int field, struct xa_value *v)
{
    return xa_db_set_field(t, cls, ref, field, v);
}

struct xa_error *
xa_api_map_set(struct xa_txn *t, const struct xa_class_desc *cls,
               const char *ref, int field, const char *key, struct xa_value *v)
{
    const struct xa_value *cur = xa_db_peek_field(t, cls, ref, field);
    if (!cur) {
        xa_value_unref(v);
        return xa_error_handle_invalid(cls->name, ref);
    }
    struct xa_value *next = xa_value_copy(cur);
    if (v) {
        xa_struct_set(next, key, v);
    } else if (!xa_struct_remove(next, key)) {
        xa_value_unref(next);
        return NULL;
    }
    return xa_db_set_field(t, cls, ref, field, next);
}

struct xa_error *
xa_api_finish(struct xa_txn *t, struct xa_error *err)
{
    if (err) {
        xa_db_abort(t);
        return err;
    }
    return xa_db_commit(t);
}

char *
xa_api_i64(int64_t v)
{
    return xa_asprintf("%" PRId64, v);
}
