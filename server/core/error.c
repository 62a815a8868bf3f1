/* error.c - see error.h. */
#include "error.h"

#include <stdlib.h>
#include <string.h>

struct xa_error *
xa_error_newv(const char *code, const char *const *params, size_t n)
{
    struct xa_error *e = xa_calloc(1, sizeof *e);
    e->code = xa_strdup(code);
    e->params = xa_calloc(n ? n : 1, sizeof *e->params);
    for (size_t i = 0; i < n; i++) {
        e->params[i] = xa_strdup(params[i] ? params[i] : "");
    }
    e->n_params = n;
    return e;
}

struct xa_error *
xa_error_new(const char *code, size_t n, ...)
{
    const char *p[16];
    va_list ap;
    va_start(ap, n);
    if (n > XA_ARRAY_SIZE(p)) {
        n = XA_ARRAY_SIZE(p);
    }
    for (size_t i = 0; i < n; i++) {
        p[i] = va_arg(ap, const char *);
    }
    va_end(ap);
    return xa_error_newv(code, p, n);
}

struct xa_error *
xa_error_internal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = xa_vasprintf(fmt, ap);
    va_end(ap);
    struct xa_error *e = xa_error_new("INTERNAL_ERROR", 1, msg);
    free(msg);
    return e;
}

void
xa_error_add_param(struct xa_error *e, const char *p)
{
    e->params = xa_realloc(e->params, (e->n_params + 1) * sizeof *e->params);
    e->params[e->n_params++] = xa_strdup(p);
}

void
xa_error_free(struct xa_error *e)
{
    if (!e) {
        return;
    }
    for (size_t i = 0; i < e->n_params; i++) {
        free(e->params[i]);
    }
    free(e->params);
    free(e->code);
    free(e->detail);
    free(e);
}

struct xa_error *
xa_error_copy(const struct xa_error *e)
{
    struct xa_error *c =
        xa_error_newv(e->code, (const char *const *)e->params, e->n_params);
    if (e->detail) {
        c->detail = xa_strdup(e->detail);
    }
    return c;
}

struct xa_error *
xa_error_handle_invalid(const char *cls, const char *ref)
{
    return xa_error_new("HANDLE_INVALID", 2, cls, ref);
}

struct xa_error *
xa_error_uuid_invalid(const char *cls, const char *uuid)
{
    return xa_error_new("UUID_INVALID", 2, cls, uuid);
}

struct xa_error *
xa_error_not_implemented(const char *what)
{
    return xa_error_new("NOT_IMPLEMENTED", 1, what);
}

struct xa_error *
xa_error_invalid_value(const char *field, const char *value)
{
    return xa_error_new("INVALID_VALUE", 2, field, value);
}
