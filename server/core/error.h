/* error.h - XenAPI errors as values.
 *
 * A function that can fail returns 'struct xa_error *': NULL means
 * success, anything else is an error the caller now owns (pass it up, or
 * xa_error_free() it).  The code and parameters are what goes on the wire
 * as ErrorDescription [code, p1, ...]; 'detail' is for the log only. */
#ifndef XA_ERROR_H
#define XA_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#include "util.h"

struct xa_error {
    char *code;    /* e.g. "VM_BAD_POWER_STATE"; owned */
    char **params; /* owned strings */
    size_t n_params;
    char *detail; /* internal context, logged, never sent; may be NULL */
};

/* 'n' parameters follow as const char *. */
struct xa_error *xa_error_new(const char *code, size_t n, ...);
struct xa_error *xa_error_newv(const char *code, const char *const *params,
                               size_t n);
/* INTERNAL_ERROR [formatted message]. */
struct xa_error *xa_error_internal(const char *fmt, ...) XA_PRINTF(1, 2);
/* Appends a string parameter. */
void xa_error_add_param(struct xa_error *e, const char *p);
void xa_error_free(struct xa_error *e);
struct xa_error *xa_error_copy(const struct xa_error *e);

/* Common constructors. */
struct xa_error *xa_error_handle_invalid(const char *cls, const char *ref);
struct xa_error *xa_error_uuid_invalid(const char *cls, const char *uuid);
struct xa_error *xa_error_not_implemented(const char *what);
struct xa_error *xa_error_invalid_value(const char *field, const char *value);

#endif
