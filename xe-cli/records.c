/* records.c - records as xe shows them: field names, tags, value text,
 * parsing values typed on the command line, and selecting objects.
 *
 * Everything here is driven by the schema's field and type descriptors,
 * so a field added to api-schema/ shows up in param-list, can be used as
 * a selector and (when it has a setter) set, without touching xe. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "xe.h"

char *
xe_field_cli_name(const struct xa_field_desc *f)
{
    /* xapi names the ref to the class a field is named after by its
     * uuid: VBD.VM is "vm-uuid", VDI.SR is "sr-uuid". */
    if (f->type->kind == XA_T_REF && f->type->cls &&
        strcasecmp(f->name, f->type->cls->name) == 0) {
        char *d = xe_dashed(f->type->cls->lname);
        char *s = xa_asprintf("%s-uuid", d);
        free(d);
        return s;
    }
    return xe_dashed(f->name);
}

const struct xa_field_desc *
xe_field_by_cli_name(const struct xa_class_desc *c, const char *name)
{
    for (size_t i = 0; i < c->n_fields; i++) {
        char *n = xe_field_cli_name(&c->fields[i]);
        bool eq = strcmp(n, name) == 0;
        free(n);
        if (eq) {
            return &c->fields[i];
        }
    }
    /* Also the wire name and its plain dashed form (name_label, VM). */
    for (size_t i = 0; i < c->n_fields; i++) {
        char *d = xe_dashed(c->fields[i].name);
        bool eq = strcmp(d, name) == 0 || strcmp(c->fields[i].name, name) == 0;
        free(d);
        if (eq) {
            return &c->fields[i];
        }
    }
    return NULL;
}

static const struct xa_message_desc *
field_message(const struct xa_class_desc *c, const char *prefix,
              const struct xa_field_desc *f)
{
    char *wire = xa_asprintf("%s.%s%s", c->name, prefix, f->name);
    const struct xa_message_desc *m = xa_schema_message(wire);
    free(wire);
    return m;
}

bool
xe_field_settable(const struct xa_class_desc *c, const struct xa_field_desc *f)
{
    return field_message(c, "set_", f) != NULL;
}

const char *
xe_field_tag(const struct xa_class_desc *c, const struct xa_field_desc *f)
{
    bool rw = xe_field_settable(c, f);
    switch (f->type->kind) {
    case XA_T_MAP:
        return rw || field_message(c, "add_to_", f) ? "MRW" : "MRO";
    case XA_T_SET:
        return rw || field_message(c, "add_", f) ? "SRW" : "SRO";
    default:
        return rw ? " RW" : " RO";
    }
}

/* ---- value text ------------------------------------------------------ */

char *
xe_ref_uuid(struct xe *xe, const struct xa_class_desc *cls, const char *ref)
{
    if (!ref || !*ref || strcmp(ref, "OpaqueRef:NULL") == 0) {
        return xa_strdup("<not in database>");
    }
    if (!xe->uuid_cache) {
        xe->uuid_cache = xa_struct();
    }
    const char *hit = xa_struct_get_str(xe->uuid_cache, ref);
    if (hit) {
        return xa_strdup(hit);
    }
    char *uuid = NULL;
    if (cls && cls->uuid_field >= 0) {
        char *m = xa_asprintf("%s.get_uuid", cls->name);
        struct xa_value *p = xa_array(), *v = NULL;
        xa_array_append(p, xa_string(ref));
        struct xa_error *err = xe_call(xe, m, p, &v);
        free(m);
        if (!err && xa_value_str(v)) {
            uuid = xa_strdup(xa_value_str(v));
        }
        xa_error_free(err);
        xa_value_unref(v);
    }
    if (!uuid) {
        uuid = xa_strdup("<not in database>");
    }
    xa_struct_set(xe->uuid_cache, ref, xa_string(uuid));
    return uuid;
}

static char *
scalar_text(const struct xa_value *v)
{
    switch (v->kind) {
    case XA_NIL:
        return xa_strdup("");
    case XA_STRING:
    case XA_DATETIME:
        return xa_strdup(v->u.str.s);
    case XA_INT:
    case XA_INT32:
        return xa_asprintf("%" PRId64, v->u.i);
    case XA_DOUBLE:
        return xa_asprintf("%g", v->u.d);
    case XA_BOOL:
        return xa_strdup(v->u.b ? "true" : "false");
    default:
        return xa_value_to_debug(v);
    }
}

char *
xe_value_text(struct xe *xe, const struct xa_type *t, const struct xa_value *v)
{
    if (!v) {
        return xa_strdup("");
    }
    enum xa_type_kind k = t ? t->kind : XA_T_STRING;
    if (k == XA_T_OPTION) {
        return xe_value_text(xe, t->elem, v);
    }
    if (v->kind == XA_ARRAY) {
        struct xa_buf b = {0};
        for (size_t i = 0; i < v->u.arr.n; i++) {
            char *s = xe_value_text(xe, k == XA_T_SET ? t->elem : NULL,
                                    v->u.arr.items[i]);
            xa_buf_printf(&b, "%s%s", i ? "; " : "", s);
            free(s);
        }
        return xa_buf_steal(&b);
    }
    if (v->kind == XA_STRUCT) {
        struct xa_buf b = {0};
        for (size_t i = 0; i < v->u.st.n; i++) {
            char *s = xe_value_text(xe, k == XA_T_MAP ? t->elem : NULL,
                                    v->u.st.m[i].val);
            xa_buf_printf(&b, "%s%s: %s", i ? "; " : "", v->u.st.m[i].key, s);
            free(s);
        }
        return xa_buf_steal(&b);
    }
    if (k == XA_T_REF && xa_value_str(v)) {
        return xe_ref_uuid(xe, t->cls, xa_value_str(v));
    }
    if (k == XA_T_ENUM && xa_value_str(v) && t->enm &&
        strcmp(t->enm->name, "vm_power_state") == 0) {
        /* xe prints power states in lower case ("halted"). */
        char *s = xa_strdup(xa_value_str(v));
        for (char *p = s; *p; p++) {
            *p = (char)tolower((unsigned char)*p);
        }
        return s;
    }
    if (k == XA_T_BOOL && v->kind == XA_STRING) {
        return xa_strdup(strcmp(v->u.str.s, "1") == 0 ||
                                 strcmp(v->u.str.s, "true") == 0
                             ? "true"
                             : "false");
    }
    return scalar_text(v);
}

bool
xe_parse_size(const char *s, int64_t *out)
{
    if (!s || !*s) {
        return false;
    }
    errno = 0;
    char *end;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || n < 0) {
        return false;
    }
    static const struct {
        const char *suffix;
        int64_t mult;
    } units[] = {{"", 1},
                 {"KiB", 1LL << 10},
                 {"MiB", 1LL << 20},
                 {"GiB", 1LL << 30},
                 {"TiB", 1LL << 40},
                 {"KB", 1000},
                 {"MB", 1000000},
                 {"GB", 1000000000},
                 {"TB", 1000000000000LL}};
    for (size_t i = 0; i < XA_ARRAY_SIZE(units); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (n > INT64_MAX / units[i].mult) {
                return false;
            }
            *out = (int64_t)n * units[i].mult;
            return true;
        }
    }
    return false;
}

static bool
parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

struct xa_value *
xe_value_parse(struct xe *xe, const struct xa_type *t, const char *text,
               struct xa_error **err)
{
    *err = NULL;
    switch (t->kind) {
    case XA_T_STRING:
        return xa_string(text);
    case XA_T_DATETIME:
        return xa_datetime(text);
    case XA_T_INT: {
        int64_t n;
        if (xa_parse_int64(text, &n) || xe_parse_size(text, &n)) {
            return xa_int(n);
        }
        break;
    }
    case XA_T_FLOAT: {
        char *end;
        double d = strtod(text, &end);
        if (*text && !*end) {
            return xa_double(d);
        }
        break;
    }
    case XA_T_BOOL: {
        bool b;
        if (parse_bool(text, &b)) {
            return xa_bool(b);
        }
        break;
    }
    case XA_T_ENUM:
        for (size_t i = 0; t->enm && i < t->enm->n_values; i++) {
            if (strcasecmp(t->enm->values[i], text) == 0) {
                return xa_string(t->enm->values[i]);
            }
        }
        break;
    case XA_T_REF: {
        char *ref = NULL;
        *err = xe_resolve_ref(xe, t->cls, text, &ref);
        if (*err) {
            return NULL;
        }
        return xa_string_take(ref);
    }
    case XA_T_OPTION:
        return xe_value_parse(xe, t->elem, text, err);
    case XA_T_SET: {
        struct xa_value *a = xa_array();
        char *dup = xa_strdup(text), *save = NULL;
        for (char *tok = strtok_r(dup, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ') {
                tok++;
            }
            struct xa_value *e = xe_value_parse(xe, t->elem, tok, err);
            if (!e) {
                free(dup);
                xa_value_unref(a);
                return NULL;
            }
            xa_array_append(a, e);
        }
        free(dup);
        return a;
    }
    case XA_T_MAP: {
        struct xa_value *m = xa_struct();
        char *dup = xa_strdup(text), *save = NULL;
        for (char *tok = strtok_r(dup, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(tok, '=');
            if (!eq) {
                free(dup);
                xa_value_unref(m);
                *err = xa_error_new("INVALID_VALUE", 2, t->text, text);
                return NULL;
            }
            *eq = '\0';
            struct xa_value *e = xe_value_parse(xe, t->elem, eq + 1, err);
            if (!e) {
                free(dup);
                xa_value_unref(m);
                return NULL;
            }
            xa_struct_set(m, tok, e);
        }
        free(dup);
        return m;
    }
    default:
        break;
    }
    *err = xa_error_new("INVALID_VALUE", 2, t->text, text);
    return NULL;
}

struct xa_error *
xe_resolve_ref(struct xe *xe, const struct xa_class_desc *cls, const char *text,
               char **ret_ref)
{
    *ret_ref = NULL;
    if (xa_str_has_prefix(text, "OpaqueRef:") || !cls) {
        *ret_ref = xa_strdup(text);
        return NULL;
    }
    struct xa_value *v = NULL;
    struct xa_error *err = NULL;
    if (xa_uuid_valid(text) || !(cls->implicit & XA_IMPL_BY_NAME)) {
        char *m = xa_asprintf("%s.get_by_uuid", cls->name);
        struct xa_value *p = xa_array();
        xa_array_append(p, xa_string(text));
        err = xe_call(xe, m, p, &v);
        free(m);
        if (err) {
            return err;
        }
        *ret_ref = xa_strdup(xa_value_str(v) ? xa_value_str(v) : "");
        xa_value_unref(v);
        return NULL;
    }
    /* Not a uuid: a name-label, which must name exactly one object. */
    char *m = xa_asprintf("%s.get_by_name_label", cls->name);
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(text));
    err = xe_call(xe, m, p, &v);
    free(m);
    if (err) {
        return err;
    }
    if (v->kind != XA_ARRAY || v->u.arr.n != 1) {
        err = xa_error_new("UUID_INVALID", 2, cls->name, text);
    } else {
        *ret_ref = xa_strdup(xa_value_str(v->u.arr.items[0]));
    }
    xa_value_unref(v);
    return err;
}

/* ---- selection ----------------------------------------------------- */

struct xa_error *
xe_call(struct xe *xe, const char *method, struct xa_value *params,
        struct xa_value **ret)
{
    return xa_client_call(xe->c, method, true, params, ret);
}

static bool
text_matches(const struct xa_type *t, const char *have, const char *want)
{
    if (t && t->kind == XA_T_ENUM) {
        return strcasecmp(have, want) == 0;
    }
    return strcmp(have, want) == 0;
}

/* Whether one record passes the selector 'key=want'; -1 when 'key' names
 * nothing in the class. */
int
xe_record_matches(struct xe *xe, const struct xe_class *xc,
                  const struct xa_value *rec, const char *key, const char *want)
{
    const struct xa_class_desc *c = xc->cls;
    /* Pseudo-field named after the class: its uuid or name-label. */
    if (strcmp(key, xc->name) == 0 || strcmp(key, c->lname) == 0) {
        const char *u =
            c->uuid_field >= 0
                ? xa_struct_get_str(rec, c->fields[c->uuid_field].name)
                : NULL;
        const char *n =
            c->name_label_field >= 0
                ? xa_struct_get_str(rec, c->fields[c->name_label_field].name)
                : NULL;
        return (u && strcmp(u, want) == 0) || (n && strcmp(n, want) == 0);
    }
    const char *colon = strchr(key, ':');
    if (colon) {
        char *fname = xa_strndup(key, (size_t)(colon - key));
        const struct xa_field_desc *f = xe_field_by_cli_name(c, fname);
        free(fname);
        if (!f || f->type->kind != XA_T_MAP) {
            return -1;
        }
        const struct xa_value *m = xa_struct_get(rec, f->name);
        const struct xa_value *e = m ? xa_struct_get(m, colon + 1) : NULL;
        if (!e) {
            return 0;
        }
        char *s = xe_value_text(xe, f->type->elem, e);
        bool ok = strcmp(s, want) == 0;
        free(s);
        return ok;
    }
    const struct xa_field_desc *f = xe_field_by_cli_name(c, key);
    if (!f) {
        return -1;
    }
    char *s = xe_value_text(xe, f->type, xa_struct_get(rec, f->name));
    bool ok = text_matches(f->type, s, want);
    free(s);
    return ok;
}

static struct xa_error *
fetch_one(struct xe *xe, const struct xa_class_desc *c, const char *uuid,
          struct xa_value **ret)
{
    char *ref = NULL;
    struct xa_error *err = xe_resolve_ref(xe, c, uuid, &ref);
    if (err) {
        return err;
    }
    char *m = xa_asprintf("%s.get_record", c->name);
    struct xa_value *p = xa_array(), *rec = NULL;
    xa_array_append(p, xa_string(ref));
    err = xe_call(xe, m, p, &rec);
    free(m);
    if (!err) {
        *ret = xa_struct();
        xa_struct_set(*ret, ref, rec);
    }
    free(ref);
    return err;
}

struct xa_error *
xe_select(struct xe *xe, const struct xe_class *xc, bool list_mode,
          struct xa_value **ret)
{
    XA_UNUSED(list_mode);
    const struct xa_class_desc *c = xc->cls;
    struct xa_value *all = NULL;
    struct xa_error *err = NULL;
    const char *uuid = xe_arg(xe, "uuid");
    if (uuid) {
        err = fetch_one(xe, c, uuid, &all);
    } else {
        char *m = xa_asprintf("%s.get_all_records", c->name);
        err = xe_call(xe, m, xa_array(), &all);
        free(m);
    }
    if (err) {
        return err;
    }
    if (all->kind != XA_STRUCT) {
        xa_value_unref(all);
        return xa_error_internal("get_all_records did not return a map");
    }
    /* The view's own filter applies unless the user chose that field
     * himself (vm-list is-a-template=true lists templates). */
    bool view_filter = xc->filter_field != NULL && !uuid;
    if (view_filter) {
        for (size_t i = 0; i < xe->n_args; i++) {
            char *d = xe_dashed(xc->filter_field);
            if (strcmp(xe->args[i].key, d) == 0) {
                view_filter = false;
            }
            free(d);
        }
    }
    struct xa_value *out = xa_struct();
    for (size_t r = 0; r < all->u.st.n; r++) {
        const struct xa_value *rec = all->u.st.m[r].val;
        bool keep = true;
        if (view_filter) {
            const struct xa_value *fv = xa_struct_get(rec, xc->filter_field);
            bool b = fv &&
                     ((fv->kind == XA_BOOL && fv->u.b) ||
                      (fv->kind == XA_STRING && strcmp(fv->u.str.s, "1") == 0));
            keep = b == xc->filter_value;
        }
        for (size_t i = 0; keep && i < xe->n_args; i++) {
            struct xe_arg *a = &xe->args[i];
            if (a->used && !a->val) {
                continue;
            }
            if (a->used) {
                continue;
            }
            if (!a->val) {
                err = xa_error_new("Syntax error", 1, a->key);
                break;
            }
            int m = xe_record_matches(xe, xc, rec, a->key, a->val);
            if (m < 0) {
                err = xa_error_new("Missing parameter", 1, a->key);
                break;
            }
            keep = m == 1;
        }
        if (err) {
            break;
        }
        if (keep) {
            xa_struct_add(out, all->u.st.m[r].key,
                          xa_value_ref(all->u.st.m[r].val));
        }
    }
    xa_value_unref(all);
    if (err) {
        xa_value_unref(out);
        return err;
    }
    /* Selectors are consumed once every record has been tested. */
    for (size_t i = 0; i < xe->n_args; i++) {
        xe->args[i].used = true;
    }
    *ret = out;
    return NULL;
}

/* ---- tasks and progress ------------------------------------------- */

static void
draw_bar(double p)
{
    int width = 50;
    int fill = (int)(p * width + 0.5);
    fputc('\r', stderr);
    fputc('[', stderr);
    for (int i = 0; i < width; i++) {
        fputc(i < fill ? '#' : ' ', stderr);
    }
    fprintf(stderr, "] %3d%%", (int)(p * 100 + 0.5));
    fflush(stderr);
}

/* The result of a task is an XML-RPC fragment, "<value>X</value>". */
static struct xa_value *
task_result_value(const char *s)
{
    if (!s || !*s) {
        return xa_string("");
    }
    const char *b = strstr(s, "<value>");
    const char *e = strstr(s, "</value>");
    if (b && e && e > b) {
        b += strlen("<value>");
        if (strncmp(b, "<array>", 7) == 0) {
            struct xa_value *a = xa_array();
            const char *p = b;
            while ((p = strstr(p, "<value>")) != NULL) {
                p += 7;
                const char *q = strstr(p, "</value>");
                if (!q) {
                    break;
                }
                xa_array_append(a, xa_string_n(p, (size_t)(q - p)));
                p = q;
            }
            return a;
        }
        return xa_string_n(b, (size_t)(e - b));
    }
    return xa_string(s);
}

struct xa_error *
xe_call_async(struct xe *xe, const char *method, struct xa_value *params,
              struct xa_value **ret)
{
    if (!xe->progress) {
        return xe_call(xe, method, params, ret);
    }
    char *am = xa_asprintf("Async.%s", method);
    struct xa_value *task = NULL;
    struct xa_error *err = xe_call(xe, am, params, &task);
    free(am);
    if (err) {
        return err;
    }
    const char *tref = xa_value_str(task);
    struct xa_value *rec = NULL;
    for (;;) {
        struct xa_value *p = xa_array();
        xa_array_append(p, xa_string(tref ? tref : ""));
        xa_value_unref(rec);
        rec = NULL;
        err = xe_call(xe, "task.get_record", p, &rec);
        if (err) {
            break;
        }
        const struct xa_value *pv = xa_struct_get(rec, "progress");
        double prog = pv && pv->kind == XA_DOUBLE ? pv->u.d : 0;
        draw_bar(prog < 0 ? 0 : prog > 1 ? 1 : prog);
        const char *st = xa_struct_get_str(rec, "status");
        if (st && strcmp(st, "pending") != 0) {
            fputc('\n', stderr);
            if (strcmp(st, "success") == 0) {
                if (ret) {
                    *ret = task_result_value(xa_struct_get_str(rec, "result"));
                }
            } else {
                const struct xa_value *ei = xa_struct_get(rec, "error_info");
                if (ei && ei->kind == XA_ARRAY && ei->u.arr.n > 0) {
                    err = xa_error_new(xa_value_str(ei->u.arr.items[0]), 0);
                    for (size_t i = 1; i < ei->u.arr.n; i++) {
                        xa_error_add_param(err,
                                           xa_value_str(ei->u.arr.items[i]));
                    }
                } else {
                    err = xa_error_new("TASK_CANCELLED", 1, tref);
                }
            }
            break;
        }
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    xa_value_unref(rec);
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(tref ? tref : ""));
    xa_error_free(xe_call(xe, "task.destroy", p, NULL));
    xa_value_unref(task);
    return err;
}
