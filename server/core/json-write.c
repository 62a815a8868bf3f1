/* json-write.c - see json-write.h. */
#include "json-write.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define PUT_LIT(out, lit) xa_buf_append((out), (lit), sizeof(lit) - 1)

void
xa_json_put_string(struct xa_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0; /* start of the bytes waiting to be copied verbatim */
    xa_buf_reserve(out, n + 2);
    xa_buf_putc(out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        xa_buf_append(out, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            PUT_LIT(out, "\\\"");
            break;
        case '\\':
            PUT_LIT(out, "\\\\");
            break;
        case '\n':
            PUT_LIT(out, "\\n");
            break;
        case '\r':
            PUT_LIT(out, "\\r");
            break;
        case '\t':
            PUT_LIT(out, "\\t");
            break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
            xa_buf_append(out, u, sizeof u);
            break;
        }
        }
    }
    xa_buf_append(out, s + run, n - run);
    xa_buf_putc(out, '"');
}

/* without going through printf: this runs for every number of a reply */
void
xa_json_put_int(struct xa_buf *out, int64_t i)
{
    char tmp[24];
    size_t pos = sizeof tmp;
    /* the magnitude as unsigned, so INT64_MIN does not overflow */
    uint64_t u = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
    do {
        tmp[--pos] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (i < 0) {
        tmp[--pos] = '-';
    }
    xa_buf_append(out, tmp + pos, sizeof tmp - pos);
}

static void
put_nonfinite(struct xa_buf *out, double d, enum xa_json_style style)
{
    if (style == XA_JSON_WIRE) {
        PUT_LIT(out, "null");
    } else if (isnan(d)) {
        PUT_LIT(out, "\"nan\"");
    } else if (d > 0) {
        PUT_LIT(out, "\"inf\"");
    } else {
        PUT_LIT(out, "\"-inf\"");
    }
}

static void
put_double(struct xa_buf *out, double d, enum xa_json_style style)
{
    char tmp[48];
    int n = isfinite(d) ? snprintf(tmp, sizeof tmp,
                                   style == XA_JSON_WIRE ? "%.16g" : "%.17g", d)
                        : -1;
    if (n <= 0 || (size_t)n >= sizeof tmp - 2) {
        put_nonfinite(out, d, style);
        return;
    }
    bool has_point = false;
    for (int k = 0; k < n; k++) {
        if (tmp[k] == ',') {
            tmp[k] = '.'; /* a decimal-comma locale must not leak out */
        }
        if (tmp[k] == '.' || tmp[k] == 'e') {
            has_point = true;
        }
    }
    if (!has_point && style == XA_JSON_WIRE) {
        tmp[n++] = '.';
        tmp[n++] = '0';
    }
    xa_buf_append(out, tmp, (size_t)n);
}

void
xa_json_put_value(struct xa_buf *out, const struct xa_value *v,
                  enum xa_json_style style)
{
    if (!v) {
        PUT_LIT(out, "null");
        return;
    }
    switch (v->kind) {
    case XA_STRING:
    case XA_DATETIME:
        xa_json_put_string(out, v->u.str.s, v->u.str.len);
        break;
    case XA_INT:
    case XA_INT32:
        xa_json_put_int(out, v->u.i);
        break;
    case XA_BOOL:
        if (v->u.b) {
            PUT_LIT(out, "true");
        } else {
            PUT_LIT(out, "false");
        }
        break;
    case XA_DOUBLE:
        put_double(out, v->u.d, style);
        break;
    case XA_ARRAY:
        xa_buf_putc(out, '[');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i) {
                xa_buf_putc(out, ',');
            }
            xa_json_put_value(out, v->u.arr.items[i], style);
        }
        xa_buf_putc(out, ']');
        break;
    case XA_STRUCT:
        xa_buf_putc(out, '{');
        for (size_t i = 0; i < v->u.st.n; i++) {
            const char *key = v->u.st.m[i].key;
            if (i) {
                xa_buf_putc(out, ',');
            }
            xa_json_put_string(out, key, strlen(key));
            xa_buf_putc(out, ':');
            xa_json_put_value(out, v->u.st.m[i].val, style);
        }
        xa_buf_putc(out, '}');
        break;
    case XA_NIL:
    default:
        PUT_LIT(out, "null");
        break;
    }
}
