/* where.c - see where.h; also xa_db_where(), which runs an expression
 * over a table.
 *
 * The tree has no left-deep spine: a run of "and"/"or" is one chain node
 * with its operands in a list, evaluated left to right.  The only other
 * nesting comes from "not" and parentheses, which the parser limits, so
 * evaluation recursion is bounded too.  Every node is also kept on a flat
 * list so freeing needs no recursion at all. */
#include "where.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db-internal.h"

enum node_kind { N_TRUE, N_FALSE, N_EQ, N_NEQ, N_NOT, N_CHAIN };

struct operand {
    bool is_field;
    char *text; /* literal, or field name as written */
    int field;  /* bound field index, or -1 */
};

struct node {
    enum node_kind kind;
    struct operand a, b; /* EQ, NEQ */
    struct node *child;  /* NOT */
    struct node **items; /* CHAIN: operands */
    bool *is_or;         /* CHAIN: operator before items[i], i >= 1 */
    size_t n_items;
    struct node *all_next; /* every node of the tree, for freeing */
};

struct xa_where {
    struct node *root;
    struct node *all;
};

/* --- lexer ---------------------------------------------------------------*/

enum tok {
    T_END,
    T_EQ,
    T_NEQ,
    T_LPAREN,
    T_RPAREN,
    T_TRUE,
    T_FALSE,
    T_FIELD,
    T_AND,
    T_OR,
    T_NOT,
    T_STRING,
    T_BAD,
};

struct parser {
    const char *text;
    const char *p;
    enum tok tok;
    const char *tok_start;
    const char *str; /* T_STRING: contents (not NUL-terminated) */
    size_t str_len;
    struct xa_where *w;
    struct xa_error *err;
};

static void
next_token(struct parser *ps)
{
    static const struct {
        const char *word;
        enum tok tok;
    } words[] = {
        {"true", T_TRUE}, {"false", T_FALSE}, {"field", T_FIELD},
        {"and", T_AND},   {"or", T_OR},       {"not", T_NOT},
    };
    const char *p = ps->p;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
        p++;
    }
    ps->tok_start = p;
    if (!*p) {
        ps->tok = T_END;
    } else if (*p == '=') {
        ps->tok = T_EQ;
        p++;
    } else if (p[0] == '<' && p[1] == '>') {
        ps->tok = T_NEQ;
        p += 2;
    } else if (*p == '(') {
        ps->tok = T_LPAREN;
        p++;
    } else if (*p == ')') {
        ps->tok = T_RPAREN;
        p++;
    } else if (*p == '"') {
        const char *end = strchr(p + 1, '"');
        if (!end) {
            ps->tok = T_BAD;
        } else {
            ps->tok = T_STRING;
            ps->str = p + 1;
            ps->str_len = (size_t)(end - p - 1);
            p = end + 1;
        }
    } else {
        size_t n = 0;
        while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') ||
               p[n] == '_') {
            n++;
        }
        ps->tok = T_BAD;
        for (size_t i = 0; n && i < XA_ARRAY_SIZE(words); i++) {
            if (strlen(words[i].word) == n &&
                memcmp(words[i].word, p, n) == 0) {
                ps->tok = words[i].tok;
                p += n;
                break;
            }
        }
    }
    ps->p = p;
}

/* --- parser --------------------------------------------------------------*/

static void
fail(struct parser *ps, const char *what)
{
    if (!ps->err) {
        ps->err = xa_error_internal("get_all_records_where: %s at offset %zu",
                                    what, (size_t)(ps->tok_start - ps->text));
    }
}

static struct node *
node_new(struct parser *ps, enum node_kind kind)
{
    struct node *n = xa_calloc(1, sizeof *n);
    n->kind = kind;
    n->a.field = n->b.field = -1;
    n->all_next = ps->w->all;
    ps->w->all = n;
    return n;
}

static bool
parse_value(struct parser *ps, struct operand *o)
{
    if (ps->tok == T_FIELD) {
        next_token(ps);
        if (ps->tok != T_STRING) {
            fail(ps, "field name expected");
            return false;
        }
        o->is_field = true;
    } else if (ps->tok != T_STRING) {
        fail(ps, "value expected");
        return false;
    }
    o->text = xa_strndup(ps->str, ps->str_len);
    next_token(ps);
    return true;
}

static struct node *parse_expr(struct parser *ps, int depth);

static struct node *
parse_unary(struct parser *ps, int depth)
{
    if (depth > XA_WHERE_MAX_DEPTH) {
        fail(ps, "expression nested too deeply");
        return NULL;
    }
    struct node *n;
    switch (ps->tok) {
    case T_NOT:
        next_token(ps);
        n = node_new(ps, N_NOT);
        n->child = parse_unary(ps, depth + 1);
        return n->child ? n : NULL;
    case T_TRUE:
    case T_FALSE:
        n = node_new(ps, ps->tok == T_TRUE ? N_TRUE : N_FALSE);
        next_token(ps);
        return n;
    case T_LPAREN:
        next_token(ps);
        n = parse_expr(ps, depth + 1);
        if (!n) {
            return NULL;
        }
        if (ps->tok != T_RPAREN) {
            fail(ps, "')' expected");
            return NULL;
        }
        next_token(ps);
        return n;
    case T_FIELD:
    case T_STRING:
        n = node_new(ps, N_EQ);
        if (!parse_value(ps, &n->a)) {
            return NULL;
        }
        if (ps->tok != T_EQ && ps->tok != T_NEQ) {
            fail(ps, "'=' or '<>' expected");
            return NULL;
        }
        n->kind = ps->tok == T_EQ ? N_EQ : N_NEQ;
        next_token(ps);
        return parse_value(ps, &n->b) ? n : NULL;
    case T_BAD:
        fail(ps, "bad token");
        return NULL;
    default:
        fail(ps, "expression expected");
        return NULL;
    }
}

static struct node *
parse_expr(struct parser *ps, int depth)
{
    struct node *first = parse_unary(ps, depth);
    if (!first || (ps->tok != T_AND && ps->tok != T_OR)) {
        return first;
    }
    struct node *chain = node_new(ps, N_CHAIN);
    size_t cap = 4;
    chain->items = xa_malloc(cap * sizeof *chain->items);
    chain->is_or = xa_malloc(cap * sizeof *chain->is_or);
    chain->items[0] = first;
    chain->is_or[0] = false;
    chain->n_items = 1;
    while (ps->tok == T_AND || ps->tok == T_OR) {
        bool is_or = ps->tok == T_OR;
        next_token(ps);
        struct node *item = parse_unary(ps, depth);
        if (!item) {
            return NULL;
        }
        if (chain->n_items == cap) {
            cap *= 2;
            chain->items = xa_realloc(chain->items, cap * sizeof *chain->items);
            chain->is_or = xa_realloc(chain->is_or, cap * sizeof *chain->is_or);
        }
        chain->items[chain->n_items] = item;
        chain->is_or[chain->n_items] = is_or;
        chain->n_items++;
    }
    return chain;
}

void
xa_where_free(struct xa_where *w)
{
    if (!w) {
        return;
    }
    for (struct node *n = w->all, *next; n; n = next) {
        next = n->all_next;
        free(n->a.text);
        free(n->b.text);
        free(n->items);
        free(n->is_or);
        free(n);
    }
    free(w);
}

struct xa_error *
xa_where_parse(const char *text, struct xa_where **out)
{
    struct parser ps = {.text = text, .p = text};
    ps.w = xa_calloc(1, sizeof *ps.w);
    *out = NULL;
    if (!text) {
        xa_where_free(ps.w);
        return xa_error_internal("get_all_records_where: no expression");
    }
    next_token(&ps);
    ps.w->root = parse_expr(&ps, 0);
    if (!ps.err && ps.tok != T_END) {
        fail(&ps, "trailing input");
    }
    if (ps.err) {
        xa_where_free(ps.w);
        return ps.err;
    }
    *out = ps.w;
    return NULL;
}

/* --- binding and evaluation ---------------------------------------------*/

static int
resolve_field(const struct xa_class_desc *cls, const char *name)
{
    int f = xa_schema_field_index(cls, name);
    if (f >= 0) {
        return f;
    }
    /* xapi's database spells nested names with "__": name__label */
    char *flat = xa_strdup(name);
    char *o = flat;
    for (const char *p = name; *p; p++) {
        *o++ = *p;
        if (p[0] == '_' && p[1] == '_') {
            p++;
        }
    }
    *o = 0;
    f = xa_schema_field_index(cls, flat);
    free(flat);
    return f;
}

static struct xa_error *
bind_operand(struct operand *o, const struct xa_class_desc *cls)
{
    if (!o->is_field) {
        return NULL;
    }
    o->field = resolve_field(cls, o->text);
    if (o->field < 0) {
        return xa_error_internal("get_all_records_where: %s has no field %s",
                                 cls->name, o->text);
    }
    return NULL;
}

struct xa_error *
xa_where_bind(struct xa_where *w, const struct xa_class_desc *cls)
{
    struct xa_error *e = NULL;
    for (struct node *n = w->all; n && !e; n = n->all_next) {
        if (n->kind == N_EQ || n->kind == N_NEQ) {
            e = bind_operand(&n->a, cls);
            if (!e) {
                e = bind_operand(&n->b, cls);
            }
        }
    }
    return e;
}

struct eval_ctx {
    xa_where_field_fn fn;
    void *ctx;
    struct xa_buf sa, sb;
};

static const char *
operand_text(struct eval_ctx *ec, const struct operand *o, struct xa_buf *b)
{
    if (!o->is_field) {
        return o->text;
    }
    if (o->field < 0) {
        return "";
    }
    b->len = 0;
    if (b->data) {
        b->data[0] = 0;
    }
    const char *s = ec->fn(o->field, b, ec->ctx);
    return s ? s : "";
}

static bool
eval_node(struct eval_ctx *ec, const struct node *n)
{
    switch (n->kind) {
    case N_TRUE:
        return true;
    case N_FALSE:
        return false;
    case N_EQ:
    case N_NEQ: {
        const char *a = operand_text(ec, &n->a, &ec->sa);
        const char *b = operand_text(ec, &n->b, &ec->sb);
        return (strcmp(a, b) == 0) == (n->kind == N_EQ);
    }
    case N_NOT:
        return !eval_node(ec, n->child);
    case N_CHAIN: {
        bool acc = eval_node(ec, n->items[0]);
        for (size_t i = 1; i < n->n_items; i++) {
            /* no side effects, so skip what cannot change the result */
            if (n->is_or[i] ? !acc : acc) {
                acc = eval_node(ec, n->items[i]);
            }
        }
        return acc;
    }
    }
    return false;
}

bool
xa_where_eval(const struct xa_where *w, xa_where_field_fn fn, void *ctx)
{
    struct eval_ctx ec = {.fn = fn, .ctx = ctx};
    bool r = w && w->root ? eval_node(&ec, w->root) : false;
    xa_buf_free(&ec.sa);
    xa_buf_free(&ec.sb);
    return r;
}

/* --- text forms ----------------------------------------------------------*/

static void
sexpr_string(struct xa_buf *out, const char *s)
{
    xa_buf_putc(out, '\'');
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\') {
            xa_buf_putc(out, '\\');
        }
        xa_buf_putc(out, *s);
    }
    xa_buf_putc(out, '\'');
}

/* Text of a value of unknown or scalar type. */
static void
scalar_text(const struct xa_value *v, struct xa_buf *out)
{
    switch (v->kind) {
    case XA_STRING:
    case XA_DATETIME:
        xa_buf_append(out, v->u.str.s, v->u.str.len);
        break;
    case XA_INT:
    case XA_INT32:
        xa_buf_printf(out, "%lld", (long long)v->u.i);
        break;
    case XA_DOUBLE:
        xa_buf_printf(out, "%.16g", v->u.d);
        break;
    case XA_BOOL:
        xa_buf_puts(out, v->u.b ? "true" : "false");
        break;
    default:
        break;
    }
}

static void
sexpr_value(const struct xa_value *v, struct xa_buf *out)
{
    struct xa_buf tmp = {0};
    if (v->kind == XA_ARRAY || v->kind == XA_STRUCT) {
        xa_where_value_text(NULL, v, out);
        return;
    }
    scalar_text(v, &tmp);
    sexpr_string(out, tmp.data ? tmp.data : "");
    xa_buf_free(&tmp);
}

void
xa_where_value_text(const struct xa_type *t, const struct xa_value *v,
                    struct xa_buf *out)
{
    XA_UNUSED(t); /* the stored kinds already say how to render */
    if (!v) {
        return;
    }
    if (v->kind == XA_ARRAY) {
        xa_buf_putc(out, '(');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) {
                xa_buf_putc(out, ' ');
            }
            sexpr_value(v->u.arr.items[i], out);
        }
        xa_buf_putc(out, ')');
    } else if (v->kind == XA_STRUCT) {
        xa_buf_putc(out, '(');
        for (size_t i = 0; i < v->u.st.n; i++) {
            if (i) {
                xa_buf_putc(out, ' ');
            }
            xa_buf_putc(out, '(');
            sexpr_string(out, v->u.st.m[i].key);
            xa_buf_putc(out, ' ');
            sexpr_value(v->u.st.m[i].val, out);
            xa_buf_putc(out, ')');
        }
        xa_buf_putc(out, ')');
    } else {
        scalar_text(v, out);
    }
}

/* --- over a table --------------------------------------------------------*/

static const char *
row_field_text(int field, struct xa_buf *scratch, void *ctx)
{
    struct xa_db_row *r = ctx;
    const struct xa_value *v = r->vals[field];
    if (v && v->kind == XA_STRING) {
        return v->u.str.s; /* the common case: no copy */
    }
    struct xa_value *set = NULL;
    if (!v) {
        set = xa_db_render_set(r->tbl, field, r->refv->u.str.s);
        v = set;
    }
    xa_where_value_text(r->tbl->cls->fields[field].type, v, scratch);
    xa_value_unref(set);
    return scratch->data ? scratch->data : "";
}

struct xa_error *
xa_db_where(struct xa_txn *t, const struct xa_class_desc *cls, const char *expr,
            struct xa_value **ret_refs)
{
    XA_UNUSED(t);
    *ret_refs = NULL;
    struct xa_db_table *tbl = xa_db_table_of(cls);
    if (!tbl) {
        return xa_error_internal("database: class %s has no table",
                                 cls ? cls->name : "(null)");
    }
    struct xa_where *w;
    struct xa_error *e = xa_where_parse(expr, &w);
    if (!e) {
        e = xa_where_bind(w, cls);
    }
    if (e) {
        xa_where_free(w);
        return e;
    }
    struct xa_value *arr = xa_array();
    for (struct xa_db_row *r = tbl->first; r; r = r->next) {
        if (xa_where_eval(w, row_field_text, r)) {
            xa_array_append(arr, xa_value_ref(r->refv));
        }
    }
    xa_where_free(w);
    *ret_refs = arr;
    return NULL;
}
