/* generic.c - the commands generated for every class and message.
 *
 * <class>-list and -param-* work on records through the implicit
 * messages (get_all_records, get_record, set_<f>, add_to_<f>...); a
 * message command maps "name=value" arguments onto the message's
 * parameters by their dashed names, resolves references from uuids (or
 * names), and calls the message once per selected object. */
#include <stdlib.h>
#include <string.h>

#include "xe.h"

/* ---- records -------------------------------------------------------- */

static bool
field_wanted(const struct xe_class *xc, const struct xa_field_desc *f,
             const char *params)
{
    if (params && strcmp(params, "all") == 0) {
        return true;
    }
    if (params) {
        char *n = xe_field_cli_name(f);
        char *dup = xa_strdup(params), *save = NULL;
        bool hit = false;
        for (char *t = strtok_r(dup, ",", &save); t && !hit;
             t = strtok_r(NULL, ",", &save)) {
            hit = strcmp(t, n) == 0 || strcmp(t, f->name) == 0;
        }
        free(dup);
        free(n);
        return hit;
    }
    if (xc->list_fields) {
        for (size_t i = 0; xc->list_fields[i]; i++) {
            if (strcmp(xc->list_fields[i], f->name) == 0) {
                return true;
            }
        }
        return false;
    }
    return strcmp(f->name, "uuid") == 0 || strcmp(f->name, "name_label") == 0 ||
           strcmp(f->name, "name_description") == 0;
}

/* Builds the printed form of a record: the wanted fields in the
 * class's order (uuid comes first in every class). */
static void
record_rows(struct xe *xe, const struct xe_class *xc,
            const struct xa_value *rec, const char *params, struct xe_rec *out)
{
    const struct xa_class_desc *c = xc->cls;
    for (size_t i = 0; i < c->n_fields; i++) {
        const struct xa_field_desc *f = &c->fields[i];
        if (!field_wanted(xc, f, params)) {
            continue;
        }
        char *n = xe_field_cli_name(f);
        char *key = xa_asprintf("%s (%s)", n, xe_field_tag(c, f));
        char *val = xe_value_text(xe, f->type, xa_struct_get(rec, f->name));
        xe_rec_add(out, key, val);
        free(n);
        free(key);
        free(val);
    }
}

static int
report(struct xe *xe, struct xa_error *err)
{
    xe_print_error(xe, err);
    xa_error_free(err);
    return 1;
}

static int
run_list(struct xe *xe, const struct xe_cmd *cmd)
{
    const char *params = xe_arg(xe, "params");
    struct xa_value *recs = NULL;
    struct xa_error *err = xe_select(xe, cmd->xc, true, &recs);
    if (err) {
        return report(xe, err);
    }
    for (size_t i = 0; i < recs->u.st.n; i++) {
        struct xe_rec r = {0};
        record_rows(xe, cmd->xc, recs->u.st.m[i].val, params, &r);
        xe_print_record(xe, &r);
        xe_rec_free(&r);
    }
    xa_value_unref(recs);
    return 0;
}

/* Resolves uuid= of a param command to (ref, record). */
static int
one_object(struct xe *xe, const struct xe_cmd *cmd, char **ret_ref,
           struct xa_value **ret_rec)
{
    const char *uuid = xe_arg_req(xe, "uuid");
    if (!uuid) {
        return 1;
    }
    const struct xa_class_desc *c = cmd->xc->cls;
    struct xa_error *err = xe_resolve_ref(xe, c, uuid, ret_ref);
    if (err) {
        return report(xe, err);
    }
    char *m = xa_asprintf("%s.get_record", c->name);
    struct xa_value *p = xa_array();
    xa_array_append(p, xa_string(*ret_ref));
    err = xe_call(xe, m, p, ret_rec);
    free(m);
    if (err) {
        free(*ret_ref);
        *ret_ref = NULL;
        return report(xe, err);
    }
    return 0;
}

static const struct xa_field_desc *
param_field(struct xe *xe, const struct xa_class_desc *c, const char *name)
{
    const struct xa_field_desc *f = xe_field_by_cli_name(c, name);
    if (!f) {
        struct xa_error *e = xa_error_new("Missing parameter", 1, name);
        xe_print_error(xe, e);
        xa_error_free(e);
    }
    return f;
}

/* Calls Class.<prefix><field>(ref, args...), taking 'a' and 'b'. */
static struct xa_error *
field_call(struct xe *xe, const struct xa_class_desc *c, const char *prefix,
           const struct xa_field_desc *f, const char *ref, struct xa_value *a,
           struct xa_value *b)
{
    char *wire = xa_asprintf("%s.%s%s", c->name, prefix, f->name);
    struct xa_error *err = NULL;
    if (!xa_schema_message(wire)) {
        char *n = xe_field_cli_name(f);
        err = xa_error_new("FIELD_READ_ONLY", 1, n);
        free(n);
        xa_value_unref(a);
        xa_value_unref(b);
    } else {
        struct xa_value *p = xa_array();
        xa_array_append(p, xa_string(ref));
        if (a) {
            xa_array_append(p, a);
        }
        if (b) {
            xa_array_append(p, b);
        }
        err = xe_call(xe, wire, p, NULL);
    }
    free(wire);
    return err;
}

static int
run_param(struct xe *xe, const struct xe_cmd *cmd)
{
    const struct xa_class_desc *c = cmd->xc->cls;
    char *ref = NULL;
    struct xa_value *rec = NULL;
    if (one_object(xe, cmd, &ref, &rec)) {
        return 1;
    }
    struct xa_error *err = NULL;
    int rc = 0;
    const struct xa_field_desc *f = NULL;
    if (cmd->kind != XE_CMD_PARAM_LIST && cmd->kind != XE_CMD_PARAM_SET) {
        const char *pn = xe_arg_req(xe, "param-name");
        if (!pn || !(f = param_field(xe, c, pn))) {
            rc = 1;
            goto out;
        }
    }
    switch (cmd->kind) {
    case XE_CMD_PARAM_LIST: {
        xe->json_single = true;
        struct xe_rec r = {0};
        record_rows(xe, cmd->xc, rec, "all", &r);
        xe_print_record(xe, &r);
        xe_rec_free(&r);
        break;
    }
    case XE_CMD_PARAM_GET: {
        xe->json_single = true;
        const char *key = xe_arg(xe, "param-key");
        const struct xa_value *v = xa_struct_get(rec, f->name);
        const struct xa_type *t = f->type;
        if (key) {
            if (t->kind != XA_T_MAP) {
                rc = xe_fail("param-key is only valid for map fields");
                break;
            }
            v = v ? xa_struct_get(v, key) : NULL;
            if (!v) {
                rc = xe_fail("Key %s not found in map", key);
                break;
            }
            t = t->elem;
        }
        char *s = xe_value_text(xe, t, v);
        xe_print_line(xe, s);
        free(s);
        break;
    }
    case XE_CMD_PARAM_SET:
        for (size_t i = 0; i < xe->n_args && !err; i++) {
            struct xe_arg *a = &xe->args[i];
            if (a->used || !a->val) {
                continue;
            }
            a->used = true;
            const char *colon = strchr(a->key, ':');
            char *fname = colon ? xa_strndup(a->key, (size_t)(colon - a->key))
                                : xa_strdup(a->key);
            const struct xa_field_desc *sf = param_field(xe, c, fname);
            free(fname);
            if (!sf) {
                rc = 1;
                break;
            }
            if (colon) {
                if (sf->type->kind != XA_T_MAP) {
                    rc = xe_fail("%s is not a map field", a->key);
                    break;
                }
                /* xapi replaces the key: remove (no-op if absent), add. */
                err = field_call(xe, c, "remove_from_", sf, ref,
                                 xa_string(colon + 1), NULL);
                if (!err) {
                    struct xa_value *v =
                        xe_value_parse(xe, sf->type->elem, a->val, &err);
                    if (v) {
                        err = field_call(xe, c, "add_to_", sf, ref,
                                         xa_string(colon + 1), v);
                    }
                }
            } else {
                struct xa_value *v = xe_value_parse(xe, sf->type, a->val, &err);
                if (v) {
                    err = field_call(xe, c, "set_", sf, ref, v, NULL);
                }
            }
        }
        break;
    case XE_CMD_PARAM_ADD:
        if (f->type->kind == XA_T_SET) {
            const char *key = xe_arg_req(xe, "param-key");
            if (!key) {
                rc = 1;
                break;
            }
            struct xa_value *v = xe_value_parse(xe, f->type->elem, key, &err);
            if (v) {
                err = field_call(xe, c, "add_", f, ref, v, NULL);
            }
        } else if (f->type->kind == XA_T_MAP) {
            for (size_t i = 0; i < xe->n_args && !err; i++) {
                struct xe_arg *a = &xe->args[i];
                if (a->used || !a->val) {
                    continue;
                }
                a->used = true;
                struct xa_value *v =
                    xe_value_parse(xe, f->type->elem, a->val, &err);
                if (v) {
                    err = field_call(xe, c, "add_to_", f, ref,
                                     xa_string(a->key), v);
                }
            }
        } else {
            rc = xe_fail("param-add works on map and set fields only");
        }
        break;
    case XE_CMD_PARAM_REMOVE: {
        const char *key = xe_arg_req(xe, "param-key");
        if (!key) {
            rc = 1;
        } else if (f->type->kind == XA_T_SET) {
            struct xa_value *v = xe_value_parse(xe, f->type->elem, key, &err);
            if (v) {
                err = field_call(xe, c, "remove_", f, ref, v, NULL);
            }
        } else if (f->type->kind == XA_T_MAP) {
            err =
                field_call(xe, c, "remove_from_", f, ref, xa_string(key), NULL);
        } else {
            rc = xe_fail("param-remove works on map and set fields only");
        }
        break;
    }
    case XE_CMD_PARAM_CLEAR: {
        struct xa_value *empty = NULL;
        switch (f->type->kind) {
        case XA_T_MAP:
            empty = xa_struct();
            break;
        case XA_T_SET:
            empty = xa_array();
            break;
        case XA_T_STRING:
            empty = xa_string("");
            break;
        case XA_T_REF:
            empty = xa_string("OpaqueRef:NULL");
            break;
        default:
            rc = xe_fail("Cannot clear parameter '%s'", f->name);
            break;
        }
        if (empty) {
            err = field_call(xe, c, "set_", f, ref, empty, NULL);
        }
        break;
    }
    default:
        break;
    }
out:
    if (err) {
        rc = report(xe, err);
    }
    free(ref);
    xa_value_unref(rec);
    return rc;
}

/* ---- message commands ---------------------------------------------- */

/* The value of a parameter the user did not give: its schema default,
 * else an empty one of its type; NULL when nothing sensible exists. */
static struct xa_value *
param_fallback(struct xe *xe, const struct xa_message_desc *m, size_t i)
{
    const struct xa_param_desc *p = &m->params[i];
    if (p->dflt) {
        return xa_schema_param_default(m, i);
    }
    switch (p->type->kind) {
    case XA_T_STRING:
        return xa_string("");
    case XA_T_BOOL:
        return xa_bool(false);
    case XA_T_INT:
        return xa_int(0);
    case XA_T_FLOAT:
        return xa_double(0);
    case XA_T_MAP:
        return xa_struct();
    case XA_T_SET:
        return xa_array();
    case XA_T_REF:
        if (p->type->cls && strcmp(p->type->cls->name, "host") == 0) {
            /* Like xapi's xe: a host left out means the pool master. */
            struct xa_value *pools = NULL, *master = NULL;
            struct xa_error *err =
                xe_call(xe, "pool.get_all", xa_array(), &pools);
            if (!err && pools->kind == XA_ARRAY && pools->u.arr.n > 0) {
                struct xa_value *pp = xa_array();
                xa_array_append(pp, xa_value_ref(pools->u.arr.items[0]));
                err = xe_call(xe, "pool.get_master", pp, &master);
            }
            xa_error_free(err);
            xa_value_unref(pools);
            if (master) {
                return master;
            }
        }
        return xa_string("OpaqueRef:NULL");
    default:
        return NULL;
    }
}

/* The argument for a parameter: "name=value", "name-uuid=" for refs,
 * "name:key=value" for maps. */
static struct xa_value *
param_from_args(struct xe *xe, const struct xa_type *t, const char *cli,
                const char *wire, struct xa_error **err, bool *missing)
{
    *err = NULL;
    *missing = false;
    if (t->kind == XA_T_MAP) {
        char *d = xe_dashed(wire);
        struct xa_value *m = xe_arg_map(xe, d);
        free(d);
        if (m->u.st.n > 0) {
            return m;
        }
        xa_value_unref(m);
    }
    const char *v = xe_arg(xe, cli);
    if (!v) {
        char *d = xe_dashed(wire);
        v = xe_arg(xe, d);
        free(d);
    }
    if (!v) {
        *missing = true;
        return NULL;
    }
    return xe_value_parse(xe, t, v, err);
}

/* Prints a message's result: refs as uuids, sets of refs as lines,
 * records as blocks, anything else as text. */
static void
print_result(struct xe *xe, const struct xa_type *t, const struct xa_value *v)
{
    if (!v || !t || t->kind == XA_T_VOID) {
        return;
    }
    if (t->kind == XA_T_SET && v->kind == XA_ARRAY) {
        for (size_t i = 0; i < v->u.arr.n; i++) {
            char *s = xe_value_text(xe, t->elem, v->u.arr.items[i]);
            xe_print_line(xe, s);
            free(s);
        }
        return;
    }
    if (t->kind == XA_T_RECORD && t->cls && v->kind == XA_STRUCT) {
        const struct xe_class *xc = xe_class_of(t->cls);
        if (xc) {
            struct xe_rec r = {0};
            record_rows(xe, xc, v, "all", &r);
            xe_print_record(xe, &r);
            xe_rec_free(&r);
            return;
        }
    }
    if (t->kind == XA_T_MAP && v->kind == XA_STRUCT) {
        struct xe_rec r = {0};
        for (size_t i = 0; i < v->u.st.n; i++) {
            char *s = xe_value_text(xe, t->elem, v->u.st.m[i].val);
            xe_rec_add(&r, v->u.st.m[i].key, s);
            free(s);
        }
        xe_print_record(xe, &r);
        xe_rec_free(&r);
        return;
    }
    char *s = xe_value_text(xe, t, v);
    xe_print_line(xe, s);
    free(s);
}

/* xapi's xe spells some create arguments differently from the field:
 * vbd-create device= is the userdevice, vif-create mac= the MAC. */
static const char *
create_alias(const struct xa_class_desc *c, const struct xa_field_desc *f)
{
    if (strcmp(c->name, "VBD") == 0 && strcmp(f->name, "userdevice") == 0) {
        return "device";
    }
    if (strcmp(f->name, "MAC") == 0) {
        return "mac";
    }
    return NULL;
}

/* A value for a field the server requires and the user left out: what
 * xapi's xe would send for it. */
static struct xa_value *
create_fallback(const struct xa_class_desc *c, const struct xa_field_desc *f)
{
    static const struct {
        const char *cls, *field, *value;
    } dflt[] = {
        {"VBD", "mode", "RW"},
        {"VBD", "type", "Disk"},
        {"VDI", "type", "user"},
        {"VIF", "MTU", "1500"},
    };
    for (size_t i = 0; i < XA_ARRAY_SIZE(dflt); i++) {
        if (strcmp(dflt[i].cls, c->name) == 0 &&
            strcmp(dflt[i].field, f->name) == 0) {
            int64_t n;
            if (f->type->kind == XA_T_INT &&
                xa_parse_int64(dflt[i].value, &n)) {
                return xa_int(n);
            }
            return xa_string(dflt[i].value);
        }
    }
    switch (f->type->kind) {
    case XA_T_STRING:
        return xa_string("");
    case XA_T_BOOL:
        return xa_bool(false);
    case XA_T_INT:
        return xa_int(0);
    case XA_T_FLOAT:
        return xa_double(0);
    case XA_T_MAP:
        return xa_struct();
    case XA_T_SET:
        return xa_array();
    case XA_T_REF:
        return xa_string("OpaqueRef:NULL");
    default:
        return NULL;
    }
}

/* create: the record's fields from arguments; required ones without a
 * value get an empty value of their type, and the server says what it
 * thinks of that. */
static struct xa_error *
create_args(struct xe *xe, const struct xa_class_desc *c, struct xa_value **ret)
{
    struct xa_value *rec = xa_struct();
    struct xa_error *err = NULL;
    for (size_t i = 0; i < c->n_fields && !err; i++) {
        const struct xa_field_desc *f = &c->fields[i];
        if (f->qual == XA_Q_RO_RUNTIME) {
            continue;
        }
        char *n = xe_field_cli_name(f);
        bool missing;
        const char *alias = create_alias(c, f);
        struct xa_value *v =
            param_from_args(xe, f->type, n, f->name, &err, &missing);
        if (!v && !err && alias) {
            v = param_from_args(xe, f->type, alias, alias, &err, &missing);
        }
        free(n);
        if (!v && !err && !f->dflt) {
            v = create_fallback(c, f);
        }
        if (v) {
            xa_struct_set(rec, f->name, v);
        }
    }
    if (err) {
        xa_value_unref(rec);
        return err;
    }
    *ret = rec;
    return NULL;
}

int
xe_run_message(struct xe *xe, const struct xe_cmd *cmd,
               const struct xa_message_desc *m)
{
    bool self = cmd->selectors && cmd->xc;
    struct xa_value *fixed = xa_array(); /* parameters after the object */
    struct xa_error *err = NULL;
    if (m->implicit == XA_MSG_CREATE) {
        struct xa_value *rec = NULL;
        err = create_args(xe, m->cls, &rec);
        if (!err) {
            xa_array_append(fixed, rec);
        }
    } else {
        for (size_t i = self ? 1 : 0; i < m->n_params && !err; i++) {
            char buf[128];
            const char *cli = xe_param_cli_name(m, i, buf, sizeof buf);
            bool missing;
            struct xa_value *v = param_from_args(
                xe, m->params[i].type, cli, m->params[i].name, &err, &missing);
            if (missing) {
                v = param_fallback(xe, m, i);
                if (!v) {
                    xa_value_unref(fixed);
                    return xe_param_error("Required parameter not found", cli);
                }
            }
            if (v) {
                xa_array_append(fixed, v);
            }
        }
    }
    if (err) {
        xa_value_unref(fixed);
        return report(xe, err);
    }
    bool is_async = m->async && xe->progress;
    if (!self) {
        for (size_t i = 0; i < xe->n_args; i++) {
            if (!xe->args[i].used) {
                xa_value_unref(fixed);
                return xe_param_error("Unknown parameter", xe->args[i].key);
            }
        }
        struct xa_value *ret = NULL;
        err = is_async ? xe_call_async(xe, m->wire, fixed, &ret)
                       : xe_call(xe, m->wire, fixed, &ret);
        if (err) {
            return report(xe, err);
        }
        print_result(xe, m->result, ret);
        xa_value_unref(ret);
        return 0;
    }
    struct xa_value *recs = NULL;
    err = xe_select(xe, cmd->xc, false, &recs);
    if (err) {
        xa_value_unref(fixed);
        return report(xe, err);
    }
    int rc = 0;
    if (recs->u.st.n == 0) {
        rc = xe_fail("No matching %ss found", cmd->xc->name);
    } else if (recs->u.st.n > 1 && !xe->multiple) {
        rc = xe_fail("Multiple matches for %s: use --multiple to act on all "
                     "of them",
                     cmd->xc->name);
    }
    for (size_t r = 0; !rc && r < recs->u.st.n; r++) {
        struct xa_value *p = xa_array();
        xa_array_append(p, xa_string(recs->u.st.m[r].key));
        for (size_t i = 0; i < fixed->u.arr.n; i++) {
            xa_array_append(p, xa_value_ref(fixed->u.arr.items[i]));
        }
        struct xa_value *ret = NULL;
        err = is_async ? xe_call_async(xe, m->wire, p, &ret)
                       : xe_call(xe, m->wire, p, &ret);
        if (err) {
            rc = report(xe, err);
            break;
        }
        print_result(xe, m->result, ret);
        xa_value_unref(ret);
    }
    xa_value_unref(recs);
    xa_value_unref(fixed);
    return rc;
}

int
xe_run_generic(struct xe *xe, const struct xe_cmd *cmd)
{
    switch (cmd->kind) {
    case XE_CMD_LIST:
        return run_list(xe, cmd);
    case XE_CMD_PARAM_LIST:
    case XE_CMD_PARAM_GET:
    case XE_CMD_PARAM_SET:
    case XE_CMD_PARAM_ADD:
    case XE_CMD_PARAM_REMOVE:
    case XE_CMD_PARAM_CLEAR:
        return run_param(xe, cmd);
    case XE_CMD_MESSAGE:
        return xe_run_message(xe, cmd, cmd->msg);
    default:
        return 1;
    }
}
