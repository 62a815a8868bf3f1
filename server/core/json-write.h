/* json-write.h - values as JSON text, the one writer behind the JSON-RPC
 * wire, the database's stored rows and debug renderings.
 *
 * Strings are escaped as RFC 8259 asks (quote, backslash and control
 * characters; UTF-8 passes through as it is); integers are written
 * without printf; doubles follow 'style', since the wire and the store
 * disagree about what a double must look like. */
#ifndef XA_JSON_WRITE_H
#define XA_JSON_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"
#include "value.h"

enum xa_json_style {
    /* JSON-RPC: "%.16g" always with a decimal point (2.0, never 2, which
     * readers would take for an integer); inf and nan become null. */
    XA_JSON_WIRE,
    /* Stored rows: "%.17g", so a double reads back bit for bit; inf and
     * nan become the strings "inf", "-inf", "nan", which strtod reads. */
    XA_JSON_STORE,
};

/* Appends the 'n' bytes at 's' as a JSON string literal. */
void xa_json_put_string(struct xa_buf *out, const char *s, size_t n);
/* Appends the decimal text of 'i'. */
void xa_json_put_int(struct xa_buf *out, int64_t i);
/* Appends 'v' (NULL writes null). */
void xa_json_put_value(struct xa_buf *out, const struct xa_value *v,
                       enum xa_json_style style);

#endif
