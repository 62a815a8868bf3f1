/* db-row.c - rows, relation sets and the undo log (see db-internal.h). */
#include <stdlib.h>
#include <string.h>

#include "db-internal.h"
#include "log.h"
#include "schema.h"
#include "value.h"

static const char null_ref[] = "OpaqueRef:NULL";

struct xa_db_table *
xa_db_table_of(const struct xa_class_desc *cls)
{
    if (!cls || !xa_db_g.tables) {
        return NULL;
    }
    struct xa_db_table *tbl = &xa_db_g.tables[cls->index];
    return tbl->cls ? tbl : NULL;
}

void
xa_db_tables_init(void)
{
    xa_db_g.tables = xa_calloc(xa_schema_n_classes, sizeof *xa_db_g.tables);
    for (size_t c = 0; c < xa_schema_n_classes; c++) {
        const struct xa_class_desc *cls = xa_schema_classes[c];
        if (!cls->in_db) {
            continue;
        }
        struct xa_db_table *tbl = &xa_db_g.tables[cls->index];
        tbl->cls = cls;
        tbl->link_of = xa_malloc((cls->n_fields + 1) * sizeof *tbl->link_of);
        tbl->link_field =
            xa_malloc((cls->n_fields + 1) * sizeof *tbl->link_field);
        tbl->sets = xa_calloc(cls->n_fields + 1, sizeof *tbl->sets);
        for (size_t f = 0; f < cls->n_fields; f++) {
            const struct xa_field_desc *fd = &cls->fields[f];
            xa_hmap_put(&tbl->field_index, fd->name, (void *)(intptr_t)(f + 1));
            tbl->link_of[f] = -1;
            /* a relation's ref side: its target class must have rows */
            if (fd->rel_cls && !fd->is_inverse_set &&
                fd->type->kind == XA_T_REF && fd->rel_cls->in_db &&
                fd->rel_field >= 0) {
                tbl->link_field[tbl->n_links] = (int)f;
                tbl->link_of[f] = tbl->n_links++;
            }
        }
    }
}

static void
free_relset(void *p)
{
    free(p);
}

void
xa_db_tables_free(void)
{
    if (!xa_db_g.tables) {
        return;
    }
    for (size_t c = 0; c < xa_schema_n_classes; c++) {
        struct xa_db_table *tbl = &xa_db_g.tables[c];
        if (!tbl->cls) {
            continue;
        }
        struct xa_db_row *r = tbl->first;
        while (r) {
            struct xa_db_row *next = r->next;
            xa_db_row_free(r);
            r = next;
        }
        xa_hmap_clear(&tbl->by_ref, NULL);
        xa_hmap_clear(&tbl->by_uuid, NULL);
        xa_hmap_clear(&tbl->field_index, NULL);
        for (size_t f = 0; f < tbl->cls->n_fields; f++) {
            xa_hmap_clear(&tbl->sets[f], free_relset);
        }
        free(tbl->sets);
        free(tbl->link_of);
        free(tbl->link_field);
    }
    free(xa_db_g.tables);
    xa_db_g.tables = NULL;
}

struct xa_db_row *
xa_db_row_lookup(const struct xa_class_desc *cls, const char *ref)
{
    struct xa_db_table *tbl = xa_db_table_of(cls);
    return tbl && ref ? xa_hmap_get(&tbl->by_ref, ref) : NULL;
}

static struct xa_db_row *
row_alloc(struct xa_db_table *tbl, const char *ref)
{
    size_t nf = tbl->cls->n_fields;
    size_t head = sizeof(struct xa_db_row) + nf * sizeof(struct xa_value *);
    /* keep the links suitably aligned after the value pointers */
    head = (head + _Alignof(struct xa_db_link) - 1) &
           ~(_Alignof(struct xa_db_link) - 1);
    struct xa_db_row *r =
        xa_calloc(1, head + (size_t)tbl->n_links * sizeof(struct xa_db_link));
    r->tbl = tbl;
    r->refv = xa_string(ref);
    r->links = (struct xa_db_link *)((char *)r + head);
    return r;
}

void
xa_db_row_free(struct xa_db_row *r)
{
    for (size_t f = 0; f < r->tbl->cls->n_fields; f++) {
        xa_value_unref(r->vals[f]);
    }
    xa_value_unref(r->refv);
    free(r);
}

static inline const char *
row_ref(const struct xa_db_row *r)
{
    return r->refv->u.str.s;
}

static bool
is_null_ref(const struct xa_value *v)
{
    return !v || v->kind != XA_STRING || v->u.str.len == 0 ||
           strcmp(v->u.str.s, null_ref) == 0;
}

/* The row's uuid text, or NULL when the class has none or it is empty. */
static const char *
row_uuid(const struct xa_db_row *r)
{
    int uf = r->tbl->cls->uuid_field;
    if (uf < 0) {
        return NULL;
    }
    const char *s = xa_value_str(r->vals[uf]);
    return s && *s ? s : NULL;
}

/* Marks a row as changed by the open write transaction. */
static void
touch(struct xa_db_row *r)
{
    if (xa_db_g.quiet || r->touched) {
        return;
    }
    struct xa_txn *t = &xa_db_g.wtxn;
    if (t->n_touched == t->cap_touched) {
        t->cap_touched = t->cap_touched ? t->cap_touched * 2 : 64;
        t->touched =
            xa_realloc(t->touched, t->cap_touched * sizeof *t->touched);
    }
    r->touched = true;
    t->touched[t->n_touched++] = r;
}

static struct xa_db_undo *
undo_push(int op, struct xa_db_row *r)
{
    struct xa_txn *t = &xa_db_g.wtxn;
    if (t->n_undo == t->cap_undo) {
        t->cap_undo = t->cap_undo ? t->cap_undo * 2 : 64;
        t->undo = xa_realloc(t->undo, t->cap_undo * sizeof *t->undo);
    }
    struct xa_db_undo *u = &t->undo[t->n_undo++];
    memset(u, 0, sizeof *u);
    u->op = op;
    u->row = r;
    return u;
}

/* --- relation sets -------------------------------------------------------*/

/* The table and field of the set that link slot 'k' of 'r' feeds. */
static void
link_target(const struct xa_db_row *r, int k, struct xa_db_table **ttbl,
            int *tfield)
{
    const struct xa_field_desc *fd =
        &r->tbl->cls->fields[r->tbl->link_field[k]];
    *ttbl = &xa_db_g.tables[fd->rel_cls->index];
    *tfield = fd->rel_field;
}

struct xa_db_relset *
xa_db_relset_get(struct xa_db_table *tbl, int field, const char *ref)
{
    return xa_hmap_get(&tbl->sets[field], ref);
}

static void
touch_ref(struct xa_db_table *tbl, const char *ref)
{
    struct xa_db_row *target = xa_hmap_get(&tbl->by_ref, ref);
    if (target) {
        touch(target);
    }
}

/* Threads 'r' onto the set its link slot 'k' names: after 'after', at the
 * head when 'after' is NULL and 'at_tail' false, else at the tail. */
static void
link_in(struct xa_db_row *r, int k, struct xa_db_row *after, bool at_tail)
{
    struct xa_db_link *l = &r->links[k];
    const struct xa_value *v = r->vals[r->tbl->link_field[k]];
    if (l->linked || is_null_ref(v)) {
        return;
    }
    struct xa_db_table *ttbl;
    int tf;
    link_target(r, k, &ttbl, &tf);
    struct xa_db_relset *set = xa_hmap_get(&ttbl->sets[tf], v->u.str.s);
    if (!set) {
        set = xa_calloc(1, sizeof *set);
        xa_hmap_put(&ttbl->sets[tf], v->u.str.s, set);
    }
    if (at_tail) {
        after = set->last;
    }
    l->prev = after;
    l->next = after ? after->links[k].next : set->first;
    if (l->next) {
        l->next->links[k].prev = r;
    } else {
        set->last = r;
    }
    if (after) {
        after->links[k].next = r;
    } else {
        set->first = r;
    }
    set->n++;
    l->linked = true;
    touch_ref(ttbl, v->u.str.s);
}

/* Takes 'r' off the set its link slot 'k' is on; returns the member that
 * preceded it (for undo). */
static struct xa_db_row *
link_out(struct xa_db_row *r, int k)
{
    struct xa_db_link *l = &r->links[k];
    if (!l->linked) {
        return NULL;
    }
    const struct xa_value *v = r->vals[r->tbl->link_field[k]];
    struct xa_db_table *ttbl;
    int tf;
    link_target(r, k, &ttbl, &tf);
    struct xa_db_relset *set = xa_hmap_get(&ttbl->sets[tf], v->u.str.s);
    struct xa_db_row *prev = l->prev;
    if (l->prev) {
        l->prev->links[k].next = l->next;
    } else {
        set->first = l->next;
    }
    if (l->next) {
        l->next->links[k].prev = l->prev;
    } else {
        set->last = l->prev;
    }
    l->prev = l->next = NULL;
    l->linked = false;
    touch_ref(ttbl, v->u.str.s);
    if (--set->n == 0) {
        free(xa_hmap_remove(&ttbl->sets[tf], v->u.str.s));
    }
    return prev;
}

struct xa_value *
xa_db_render_set(struct xa_db_table *tbl, int field, const char *ref)
{
    struct xa_db_relset *set = xa_hmap_get(&tbl->sets[field], ref);
    if (!set) {
        return xa_value_ref(xa_db_g.empty_array);
    }
    const struct xa_field_desc *fd = &tbl->cls->fields[field];
    int k = xa_db_g.tables[fd->rel_cls->index].link_of[fd->rel_field];
    struct xa_value *arr = xa_array();
    arr->u.arr.items = xa_malloc(set->n * sizeof *arr->u.arr.items);
    arr->u.arr.cap = set->n;
    for (struct xa_db_row *m = set->first; m; m = m->links[k].next) {
        xa_array_append(arr, xa_value_ref(m->refv));
    }
    return arr;
}

/* --- field assignment ----------------------------------------------------*/

/* Stores 'v' (taken) in field 'f' of live row 'r', keeping the uuid index
 * and relation sets right; a relation row rejoins its new set at the tail,
 * or after 'after' when 'exact' (undo).  Returns the value replaced. */
static struct xa_value *
assign(struct xa_db_row *r, int f, struct xa_value *v, bool exact,
       struct xa_db_row *after)
{
    struct xa_db_table *tbl = r->tbl;
    struct xa_value *old = r->vals[f];
    int k = tbl->link_of[f];
    if (f == tbl->cls->uuid_field) {
        const char *u = row_uuid(r);
        if (u && xa_hmap_get(&tbl->by_uuid, u) == r) {
            xa_hmap_remove(&tbl->by_uuid, u);
        }
    }
    if (k >= 0) {
        link_out(r, k);
    }
    r->vals[f] = v;
    if (k >= 0) {
        link_in(r, k, after, !exact);
    }
    if (f == tbl->cls->uuid_field) {
        const char *u = row_uuid(r);
        if (u) {
            xa_hmap_put(&tbl->by_uuid, u, r);
        }
    }
    return old;
}

/* Sets a field inside the write transaction, with undo. */
static void
set_logged(struct xa_db_row *r, int f, struct xa_value *v)
{
    int k = r->tbl->link_of[f];
    struct xa_db_row *prev = k >= 0 ? r->links[k].prev : NULL;
    struct xa_db_undo *u = undo_push(XA_UNDO_SET, r);
    u->field = f;
    u->prev = prev;
    u->old = assign(r, f, v, false, NULL);
    touch(r);
}

/* --- table membership ----------------------------------------------------*/

static void
table_insert_after(struct xa_db_table *tbl, struct xa_db_row *r,
                   struct xa_db_row *after)
{
    r->prev = after;
    r->next = after ? after->next : tbl->first;
    if (r->next) {
        r->next->prev = r;
    } else {
        tbl->last = r;
    }
    if (after) {
        after->next = r;
    } else {
        tbl->first = r;
    }
    tbl->n++;
}

static void
table_remove(struct xa_db_table *tbl, struct xa_db_row *r)
{
    if (r->prev) {
        r->prev->next = r->next;
    } else {
        tbl->first = r->next;
    }
    if (r->next) {
        r->next->prev = r->prev;
    } else {
        tbl->last = r->prev;
    }
    r->prev = r->next = NULL;
    tbl->n--;
}

/* Enters a fully built row in the table, its indexes and its sets. */
static void
row_enter(struct xa_db_row *r, struct xa_db_row *after, bool at_tail,
          const struct xa_db_link *old_links)
{
    struct xa_db_table *tbl = r->tbl;
    table_insert_after(tbl, r, at_tail ? tbl->last : after);
    xa_hmap_put(&tbl->by_ref, row_ref(r), r);
    const char *u = row_uuid(r);
    if (u) {
        xa_hmap_put(&tbl->by_uuid, u, r);
    }
    for (int k = 0; k < tbl->n_links; k++) {
        if (old_links && !old_links[k].linked) {
            continue;
        }
        link_in(r, k, old_links ? old_links[k].prev : NULL, !old_links);
    }
}

/* The reverse of row_enter; fills 'saved' (n_links entries, may be NULL)
 * with where the row sat in each set. */
static void
row_leave(struct xa_db_row *r, struct xa_db_link *saved)
{
    struct xa_db_table *tbl = r->tbl;
    for (int k = tbl->n_links - 1; k >= 0; k--) {
        bool was = r->links[k].linked;
        struct xa_db_row *prev = link_out(r, k);
        if (saved) {
            saved[k].linked = was;
            saved[k].prev = prev;
            saved[k].next = NULL;
        }
    }
    const char *u = row_uuid(r);
    if (u && xa_hmap_get(&tbl->by_uuid, u) == r) {
        xa_hmap_remove(&tbl->by_uuid, u);
    }
    xa_hmap_remove(&tbl->by_ref, row_ref(r));
    table_remove(tbl, r);
}

struct xa_error *
xa_db_row_insert_loaded(struct xa_db_table *tbl, const char *ref,
                        struct xa_value **vals, uint64_t created,
                        uint64_t modified)
{
    struct xa_db_row *r = row_alloc(tbl, ref);
    memcpy(r->vals, vals, tbl->cls->n_fields * sizeof *vals);
    r->created = created;
    r->modified = modified;
    const char *u = row_uuid(r);
    if (xa_hmap_contains(&tbl->by_ref, ref) ||
        (u && xa_hmap_contains(&tbl->by_uuid, u))) {
        struct xa_error *e = xa_error_internal(
            "database: duplicate %s row %s at load", tbl->cls->name, ref);
        xa_db_row_free(r);
        return e;
    }
    row_enter(r, NULL, true, NULL);
    return NULL;
}

/* --- the public row operations ------------------------------------------*/

static struct xa_error *
need_write(struct xa_txn *t)
{
    if (!t || !t->write) {
        return xa_error_internal("database: write outside a write "
                                 "transaction");
    }
    return NULL;
}

struct xa_error *
xa_db_create(struct xa_txn *t, const struct xa_class_desc *cls, const char *ref,
             struct xa_value *record)
{
    struct xa_error *e = need_write(t);
    struct xa_db_table *tbl = xa_db_table_of(cls);
    if (!e && !tbl) {
        e = xa_error_internal("database: class %s has no table",
                              cls ? cls->name : "(null)");
    }
    if (!e && (!ref || xa_hmap_contains(&tbl->by_ref, ref))) {
        e = xa_error_internal("database: %s %s already exists", cls->name,
                              ref ? ref : "(null)");
    }
    if (e) {
        xa_value_unref(record);
        return e;
    }
    struct xa_db_row *r = row_alloc(tbl, ref);
    if (record && record->kind == XA_STRUCT) {
        /* one pass over the members: later duplicates win */
        for (size_t i = 0; i < record->u.st.n; i++) {
            intptr_t idx =
                (intptr_t)xa_hmap_get(&tbl->field_index, record->u.st.m[i].key);
            if (!idx || cls->fields[idx - 1].is_inverse_set) {
                continue;
            }
            xa_value_unref(r->vals[idx - 1]);
            r->vals[idx - 1] = xa_db_normalize(
                cls->fields[idx - 1].type, xa_value_ref(record->u.st.m[i].val));
        }
    }
    xa_value_unref(record);
    for (size_t f = 0; f < cls->n_fields; f++) {
        if (!r->vals[f] && !cls->fields[f].is_inverse_set) {
            r->vals[f] = xa_value_ref(xa_schema_field_default(cls, (int)f));
        }
    }
    if (cls->uuid_field >= 0 && !row_uuid(r)) {
        char uuid[37];
        xa_uuid_generate(uuid);
        xa_value_unref(r->vals[cls->uuid_field]);
        r->vals[cls->uuid_field] = xa_string(uuid);
    }
    const char *u = row_uuid(r);
    if (u && xa_hmap_contains(&tbl->by_uuid, u)) {
        e = xa_error_internal("database: %s with uuid %s already exists",
                              cls->name, u);
        xa_db_row_free(r);
        return e;
    }
    r->is_new = true;
    row_enter(r, NULL, true, NULL);
    undo_push(XA_UNDO_CREATE, r);
    touch(r);
    return NULL;
}

struct xa_error *
xa_db_destroy(struct xa_txn *t, const struct xa_class_desc *cls,
              const char *ref)
{
    struct xa_error *e = need_write(t);
    if (e) {
        return e;
    }
    struct xa_db_row *r = xa_db_row_lookup(cls, ref);
    if (!r) {
        return xa_error_handle_invalid(cls ? cls->name : "", ref ? ref : "");
    }
    struct xa_db_table *tbl = r->tbl;
    /* Null every relation ref naming this row (VBD.VM when destroying the
     * VM); each is an ordinary logged set, so abort restores it. */
    for (size_t g = 0; g < cls->n_fields; g++) {
        const struct xa_field_desc *fd = &cls->fields[g];
        if (!fd->is_inverse_set || !fd->rel_cls || !fd->rel_cls->in_db) {
            continue;
        }
        struct xa_db_relset *set;
        while ((set = xa_hmap_get(&tbl->sets[g], row_ref(r)))) {
            set_logged(set->first, fd->rel_field, xa_string(null_ref));
        }
    }
    struct xa_db_undo *u = undo_push(XA_UNDO_DESTROY, r);
    u->prev = r->prev;
    u->old_links = tbl->n_links
                       ? xa_malloc((size_t)tbl->n_links * sizeof *u->old_links)
                       : NULL;
    row_leave(r, u->old_links);
    r->dead = true;
    touch(r);
    return NULL;
}

struct xa_error *
xa_db_set_field(struct xa_txn *t, const struct xa_class_desc *cls,
                const char *ref, int field, struct xa_value *v)
{
    struct xa_error *e = need_write(t);
    struct xa_db_row *r = e ? NULL : xa_db_row_lookup(cls, ref);
    if (!e && !r) {
        e = xa_error_handle_invalid(cls ? cls->name : "", ref ? ref : "");
    }
    if (!e && (field < 0 || (size_t)field >= cls->n_fields)) {
        e = xa_error_internal("database: %s has no field %d", cls->name, field);
    }
    if (!e && cls->fields[field].is_inverse_set) {
        e = xa_error_internal("database: %s.%s is computed", cls->name,
                              cls->fields[field].name);
    }
    if (!e && !v) {
        e = xa_error_internal("database: NULL value for %s.%s", cls->name,
                              cls->fields[field].name);
    }
    if (e) {
        xa_value_unref(v);
        return e;
    }
    v = xa_db_normalize(cls->fields[field].type, v);
    if (xa_value_equal(r->vals[field], v)) {
        /* no change, no generation, no event */
        xa_value_unref(v);
        return NULL;
    }
    if (field == cls->uuid_field) {
        const char *nu = xa_value_str(v);
        struct xa_db_row *other =
            nu && *nu ? xa_hmap_get(&r->tbl->by_uuid, nu) : NULL;
        if (other && other != r) {
            e = xa_error_internal("database: %s with uuid %s already exists",
                                  cls->name, nu);
            xa_value_unref(v);
            return e;
        }
    }
    set_logged(r, field, v);
    return NULL;
}

/* --- undo ----------------------------------------------------------------*/

void
xa_db_undo_all(struct xa_txn *t)
{
    xa_db_g.quiet = true;
    for (size_t i = t->n_undo; i-- > 0;) {
        struct xa_db_undo *u = &t->undo[i];
        struct xa_db_row *r = u->row;
        switch (u->op) {
        case XA_UNDO_SET:
            xa_value_unref(assign(r, u->field, u->old, true, u->prev));
            break;
        case XA_UNDO_CREATE:
            row_leave(r, NULL);
            xa_db_row_free(r);
            break;
        case XA_UNDO_DESTROY:
            r->dead = false;
            row_enter(r, u->prev, false, u->old_links);
            free(u->old_links);
            break;
        }
    }
    t->n_undo = 0;
    xa_db_g.quiet = false;
}

void
xa_db_undo_release(struct xa_txn *t)
{
    for (size_t i = 0; i < t->n_undo; i++) {
        struct xa_db_undo *u = &t->undo[i];
        if (u->op == XA_UNDO_SET) {
            xa_value_unref(u->old);
        } else if (u->op == XA_UNDO_DESTROY) {
            free(u->old_links);
        }
    }
    t->n_undo = 0;
}

/* --- reads ---------------------------------------------------------------*/

bool
xa_db_exists(struct xa_txn *t, const struct xa_class_desc *cls, const char *ref)
{
    XA_UNUSED(t);
    return xa_db_row_lookup(cls, ref) != NULL;
}

struct xa_value *
xa_db_get_field(struct xa_txn *t, const struct xa_class_desc *cls,
                const char *ref, int field)
{
    XA_UNUSED(t);
    struct xa_db_row *r = xa_db_row_lookup(cls, ref);
    if (!r || field < 0 || (size_t)field >= cls->n_fields) {
        return NULL;
    }
    if (!r->vals[field]) {
        return xa_db_render_set(r->tbl, field, ref);
    }
    return xa_value_ref(r->vals[field]);
}

const struct xa_value *
xa_db_peek_field(struct xa_txn *t, const struct xa_class_desc *cls,
                 const char *ref, int field)
{
    XA_UNUSED(t);
    struct xa_db_row *r = xa_db_row_lookup(cls, ref);
    if (!r || field < 0 || (size_t)field >= cls->n_fields) {
        return NULL;
    }
    return r->vals[field];
}

size_t
xa_db_count_related(struct xa_txn *t, const struct xa_class_desc *cls,
                    const char *ref, int field)
{
    XA_UNUSED(t);
    struct xa_db_table *tbl = xa_db_table_of(cls);
    if (!tbl || field < 0 || (size_t)field >= cls->n_fields ||
        !cls->fields[field].is_inverse_set || !ref) {
        return 0;
    }
    struct xa_db_relset *set = xa_hmap_get(&tbl->sets[field], ref);
    return set ? set->n : 0;
}

struct xa_value *
xa_db_get_record(struct xa_txn *t, const struct xa_class_desc *cls,
                 const char *ref)
{
    XA_UNUSED(t);
    struct xa_db_row *r = xa_db_row_lookup(cls, ref);
    if (!r) {
        return NULL;
    }
    size_t nf = cls->n_fields;
    struct xa_value *st = xa_struct();
    /* size the member array once: records are large and built often */
    st->u.st.m = xa_malloc(nf * sizeof *st->u.st.m);
    st->u.st.cap = nf;
    for (size_t f = 0; f < nf; f++) {
        struct xa_value *v = r->vals[f] ? xa_value_ref(r->vals[f])
                                        : xa_db_render_set(r->tbl, (int)f, ref);
        xa_struct_add_static(st, cls->fields[f].name, v);
    }
    return st;
}

char *
xa_db_ref_by_uuid(struct xa_txn *t, const struct xa_class_desc *cls,
                  const char *uuid)
{
    XA_UNUSED(t);
    struct xa_db_table *tbl = xa_db_table_of(cls);
    struct xa_db_row *r = tbl && uuid ? xa_hmap_get(&tbl->by_uuid, uuid) : NULL;
    return r ? xa_strdup(row_ref(r)) : NULL;
}

struct xa_value *
xa_db_get_all(struct xa_txn *t, const struct xa_class_desc *cls)
{
    XA_UNUSED(t);
    struct xa_value *arr = xa_array();
    struct xa_db_table *tbl = xa_db_table_of(cls);
    if (!tbl || !tbl->n) {
        return arr;
    }
    arr->u.arr.items = xa_malloc(tbl->n * sizeof *arr->u.arr.items);
    arr->u.arr.cap = tbl->n;
    for (struct xa_db_row *r = tbl->first; r; r = r->next) {
        xa_array_append(arr, xa_value_ref(r->refv));
    }
    return arr;
}

size_t
xa_db_count(struct xa_txn *t, const struct xa_class_desc *cls)
{
    XA_UNUSED(t);
    struct xa_db_table *tbl = xa_db_table_of(cls);
    return tbl ? tbl->n : 0;
}

void
xa_db_foreach(struct xa_txn *t, const struct xa_class_desc *cls,
              bool (*fn)(const char *ref, void *ctx), void *ctx)
{
    XA_UNUSED(t);
    struct xa_db_table *tbl = xa_db_table_of(cls);
    if (!tbl) {
        return;
    }
    for (struct xa_db_row *r = tbl->first; r; r = r->next) {
        if (!fn(row_ref(r), ctx)) {
            break;
        }
    }
}

/* --- integrity -----------------------------------------------------------*/

static struct xa_error *
check_row(struct xa_db_row *r)
{
    struct xa_db_table *tbl = r->tbl;
    const struct xa_class_desc *cls = tbl->cls;
    const char *ref = row_ref(r);
    if (xa_hmap_get(&tbl->by_ref, ref) != r) {
        return xa_error_internal("integrity: %s %s not indexed by ref",
                                 cls->name, ref);
    }
    const char *u = row_uuid(r);
    if (u && xa_hmap_get(&tbl->by_uuid, u) != r) {
        return xa_error_internal("integrity: %s %s not indexed by uuid %s",
                                 cls->name, ref, u);
    }
    for (size_t f = 0; f < cls->n_fields; f++) {
        const struct xa_field_desc *fd = &cls->fields[f];
        const struct xa_value *v = r->vals[f];
        if (fd->is_inverse_set) {
            if (v) {
                return xa_error_internal("integrity: %s.%s of %s is stored",
                                         cls->name, fd->name, ref);
            }
            if (!fd->rel_cls || !fd->rel_cls->in_db) {
                continue;
            }
            /* every member must name this row back */
            struct xa_db_table *stbl = &xa_db_g.tables[fd->rel_cls->index];
            int k = stbl->link_of[fd->rel_field];
            struct xa_db_relset *set = xa_hmap_get(&tbl->sets[f], ref);
            size_t n = 0;
            for (struct xa_db_row *m = set ? set->first : NULL; m;
                 m = m->links[k].next, n++) {
                const char *back = xa_value_str(m->vals[fd->rel_field]);
                if (m->dead || !back || strcmp(back, ref) != 0) {
                    return xa_error_internal(
                        "integrity: %s.%s of %s lists %s %s, which names %s",
                        cls->name, fd->name, ref, fd->rel_cls->name, row_ref(m),
                        back ? back : "(none)");
                }
            }
            if (set && n != set->n) {
                return xa_error_internal(
                    "integrity: %s.%s of %s counts %zu members, has %zu",
                    cls->name, fd->name, ref, set->n, n);
            }
            continue;
        }
        if (!v) {
            return xa_error_internal("integrity: %s.%s of %s missing",
                                     cls->name, fd->name, ref);
        }
        if (!xa_db_kind_ok(fd->type, v)) {
            return xa_error_internal("integrity: %s.%s of %s has kind %d",
                                     cls->name, fd->name, ref, (int)v->kind);
        }
        int k = tbl->link_of[f];
        if (k < 0) {
            continue;
        }
        /* a relation ref: NULL, or a live row whose set holds us */
        if (is_null_ref(v)) {
            if (r->links[k].linked) {
                return xa_error_internal("integrity: %s.%s of %s is NULL "
                                         "but linked",
                                         cls->name, fd->name, ref);
            }
            continue;
        }
        if (!xa_db_row_lookup(fd->rel_cls, v->u.str.s)) {
            return xa_error_internal("integrity: %s.%s of %s names missing "
                                     "%s %s",
                                     cls->name, fd->name, ref,
                                     fd->rel_cls->name, v->u.str.s);
        }
        if (!r->links[k].linked) {
            return xa_error_internal(
                "integrity: %s.%s of %s not in %s.%s", cls->name, fd->name, ref,
                fd->rel_cls->name, fd->rel_cls->fields[fd->rel_field].name);
        }
    }
    return NULL;
}

struct xa_error *
xa_db_check_integrity(void)
{
    struct xa_txn *t = xa_db_begin_read();
    struct xa_error *e = NULL;
    for (size_t c = 0; c < xa_schema_n_classes && !e; c++) {
        struct xa_db_table *tbl = &xa_db_g.tables[c];
        if (!tbl->cls) {
            continue;
        }
        size_t n = 0;
        for (struct xa_db_row *r = tbl->first; r && !e; r = r->next, n++) {
            e = check_row(r);
        }
        if (!e && (n != tbl->n || xa_hmap_count(&tbl->by_ref) != n)) {
            e = xa_error_internal("integrity: %s counts %zu rows, lists %zu, "
                                  "indexes %zu",
                                  tbl->cls->name, tbl->n, n,
                                  xa_hmap_count(&tbl->by_ref));
        }
        /* sets keyed by refs that name no row: dangling relation refs */
        for (size_t f = 0; f < tbl->cls->n_fields && !e; f++) {
            XA_HMAP_FOR_EACH (s, &tbl->sets[f]) {
                if (!xa_hmap_contains(&tbl->by_ref, s->key)) {
                    e = xa_error_internal("integrity: %s.%s set of missing "
                                          "row %s",
                                          tbl->cls->name,
                                          tbl->cls->fields[f].name, s->key);
                    break;
                }
            }
        }
    }
    xa_db_end(t);
    return e;
}
