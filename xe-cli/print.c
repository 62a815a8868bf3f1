/* print.c - output in xapi's layouts (cli_printer), or JSON.
 *
 * A record is a block: the first key padded on the right, the others on
 * the left, all to the longest key plus four, then ": " and the value.
 * xapi's server sends each block with one trailing newline and its
 * client adds another when printing, so every record is followed by two
 * empty lines.  --minimal prints the first value of every record joined
 * by commas (commas and backslashes escaped).  With --output json the
 * records are collected and printed as one JSON array at the end. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/jsonrpc.h"
#include "xe.h"

static struct xa_value *json_out; /* array of records, --output json */

void
xe_rec_add(struct xe_rec *r, const char *key, const char *val)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->keys = xa_realloc(r->keys, r->cap * sizeof *r->keys);
        r->vals = xa_realloc(r->vals, r->cap * sizeof *r->vals);
    }
    r->keys[r->n] = xa_strdup(key);
    r->vals[r->n] = xa_strdup(val);
    r->n++;
}

void
xe_rec_free(struct xe_rec *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->keys[i]);
        free(r->vals[i]);
    }
    free(r->keys);
    free(r->vals);
    memset(r, 0, sizeof *r);
}

static void
minimal_add(struct xe *xe, const char *s)
{
    if (xe->minimal_any) {
        xa_buf_putc(&xe->minimal_out, ',');
    }
    xe->minimal_any = true;
    for (const char *p = s; *p; p++) {
        if (*p == ',' || *p == '\\') {
            xa_buf_putc(&xe->minimal_out, '\\');
        }
        xa_buf_putc(&xe->minimal_out, *p);
    }
}

/* The JSON key of a printed key: "name-label ( RW)" -> "name-label". */
static char *
json_key(const char *k)
{
    const char *sp = strstr(k, " (");
    return sp ? xa_strndup(k, (size_t)(sp - k)) : xa_strdup(k);
}

void
xe_print_record(struct xe *xe, const struct xe_rec *r)
{
    if (r->n == 0) {
        return;
    }
    if (xe->minimal) {
        minimal_add(xe, r->vals[0]);
        return;
    }
    if (xe->json) {
        if (!json_out) {
            json_out = xa_array();
        }
        struct xa_value *o = xa_struct();
        for (size_t i = 0; i < r->n; i++) {
            char *k = json_key(r->keys[i]);
            xa_struct_set(o, k, xa_string(r->vals[i]));
            free(k);
        }
        xa_array_append(json_out, o);
        return;
    }
    size_t width = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t l = strlen(r->keys[i]);
        width = l > width ? l : width;
    }
    width += 4;
    for (size_t i = 0; i < r->n; i++) {
        if (i == 0) {
            printf("%-*s: %s\n", (int)width, r->keys[i], r->vals[i]);
        } else {
            printf("%*s: %s\n", (int)width, r->keys[i], r->vals[i]);
        }
    }
    fputs("\n\n", stdout);
}

void
xe_print_line(struct xe *xe, const char *s)
{
    if (xe->minimal) {
        minimal_add(xe, s);
        return;
    }
    if (xe->json) {
        if (!json_out) {
            json_out = xa_array();
        }
        xa_array_append(json_out, xa_string(s));
        return;
    }
    printf("%s\n", s);
}

void
xe_print_end(struct xe *xe)
{
    if (xe->minimal) {
        printf("%s\n", xe->minimal_out.data ? xe->minimal_out.data : "");
        xa_buf_free(&xe->minimal_out);
        xe->minimal_any = false;
        return;
    }
    if (xe->json && json_out) {
        struct xa_buf b = {0};
        /* A single string or record (param-get, param-list) is printed
         * bare: scripts then need no [0]. */
        const struct xa_value *v = json_out;
        if (json_out->u.arr.n == 1 && xe->json_single) {
            v = json_out->u.arr.items[0];
        }
        xa_jsonrpc_write_value(&b, v);
        printf("%s\n", b.data ? b.data : "");
        xa_buf_free(&b);
        xa_value_unref(json_out);
        json_out = NULL;
    } else if (xe->json) {
        printf("[]\n");
    }
}

int
xe_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("Error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int
xe_param_error(const char *what, const char *name)
{
    if (what && *what) {
        fprintf(stderr, "%s: %s\n", what, name);
    } else {
        fprintf(stderr, "%s\n", name);
    }
    fputs("For usage run: 'xe help'\n", stderr);
    return 1;
}

/* xapi shows a reference parameter as "uuid (name-label)" when it can
 * find the object; we look the ref up in every class that has a getter,
 * starting with the one the parameter is named after. */
static char *
convert_ref(struct xe *xe, const char *pname, const char *v)
{
    if (!xa_str_has_prefix(v, "OpaqueRef:") ||
        strcmp(v, "OpaqueRef:NULL") == 0) {
        return xa_strdup(v);
    }
    const struct xa_class_desc *first =
        pname ? xa_schema_class_ci(pname) : NULL;
    for (size_t i = 0; i <= xa_schema_n_classes; i++) {
        const struct xa_class_desc *cls =
            i == 0 ? first : xa_schema_classes[i - 1];
        if (!cls || (i > 0 && cls == first) || cls->uuid_field < 0 ||
            !(cls->implicit & XA_IMPL_GETTERS)) {
            continue;
        }
        char *m = xa_asprintf("%s.get_uuid", cls->name);
        struct xa_value *p = xa_array(), *uuid = NULL;
        xa_array_append(p, xa_string(v));
        struct xa_error *err = xa_client_call(xe->c, m, true, p, &uuid);
        free(m);
        if (err) {
            xa_error_free(err);
            continue;
        }
        char *out = xa_strdup(xa_value_str(uuid) ? xa_value_str(uuid) : v);
        xa_value_unref(uuid);
        if (cls->name_label_field >= 0) {
            m = xa_asprintf("%s.get_name_label", cls->name);
            p = xa_array();
            xa_array_append(p, xa_string(v));
            struct xa_value *name = NULL;
            err = xa_client_call(xe->c, m, true, p, &name);
            free(m);
            if (!err && xa_value_str(name)) {
                char *t = xa_asprintf("%s (%s)", out, xa_value_str(name));
                free(out);
                out = t;
            }
            xa_error_free(err);
            xa_value_unref(name);
        }
        return out;
    }
    return xa_strdup(v);
}

void
xe_print_error(struct xe *xe, const struct xa_error *e)
{
    if (strcmp(e->code, XA_CLIENT_TRANSPORT_ERROR) == 0) {
        fprintf(stderr, "Unable to contact server. Please check server and "
                        "port settings.\n");
        if (e->n_params > 1) {
            fprintf(stderr, "(%s: %s)\n", e->params[0], e->params[1]);
        }
        return;
    }
    if (strcmp(e->code, "XE_REPORTED") == 0 ||
        strcmp(e->code, XA_CLIENT_CERTIFICATE_REJECTED) == 0) {
        /* The known-hosts check already explained itself. */
        return;
    }
    if (strcmp(e->code, XA_CLIENT_HTTP_ERROR) == 0 && e->n_params > 1) {
        fprintf(stderr, "Error: the server answered HTTP %s to %s\n",
                e->params[1], e->params[0]);
        return;
    }
    const struct xe_errtext *t = xe_errtext_find(e->code);
    if (!t) {
        fprintf(stderr, "Error code: %s\nError parameters: ", e->code);
        for (size_t i = 0; i < e->n_params; i++) {
            char *v = xe && xe->c ? convert_ref(xe, NULL, e->params[i])
                                  : xa_strdup(e->params[i]);
            fprintf(stderr, "%s%s", i ? ", " : "", v);
            free(v);
        }
        fputc('\n', stderr);
        return;
    }
    fprintf(stderr, "%s\n", t->text);
    size_t np = 0;
    while (t->params[np]) {
        np++;
    }
    size_t n = np > e->n_params ? np : e->n_params;
    for (size_t i = 0; i < n; i++) {
        const char *name = i < np ? t->params[i] : "<extra>";
        if (i >= e->n_params) {
            fprintf(stderr, "%s: <unknown>\n", name);
            continue;
        }
        char *v = xe && xe->c ? convert_ref(xe, name, e->params[i])
                              : xa_strdup(e->params[i]);
        fprintf(stderr, "%s: %s\n", name, v);
        free(v);
    }
}
