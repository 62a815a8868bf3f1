/* util.h - allocation that aborts on exhaustion, growable buffers, small
 * string helpers.  Every module of xapid includes this; nothing here
 * can fail, so callers never test for NULL after allocating. */
#ifndef XA_UTIL_H
#define XA_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XA_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define XA_UNUSED(x)     ((void)(x))
#define XA_PRINTF(f, a)  __attribute__((format(printf, f, a)))
#define XA_WARN_UNUSED   __attribute__((warn_unused_result))

void *xa_malloc(size_t n);
void *xa_calloc(size_t n, size_t size);
void *xa_realloc(void *p, size_t n);
char *xa_strdup(const char *s);
char *xa_strndup(const char *s, size_t n);
char *xa_asprintf(const char *fmt, ...) XA_PRINTF(1, 2);
char *xa_vasprintf(const char *fmt, va_list ap) XA_PRINTF(1, 0);

/* A growable byte buffer, always NUL-terminated after its 'len' bytes.
 * Zero-initialise it ({0}) before use; xa_buf_free() releases it. */
struct xa_buf {
    char *data; /* NULL until the first append */
    size_t len; /* bytes in use, excluding the terminating NUL */
    size_t cap; /* bytes allocated */
};

void xa_buf_reserve(struct xa_buf *b, size_t extra);
void xa_buf_append(struct xa_buf *b, const void *data, size_t n);
void xa_buf_puts(struct xa_buf *b, const char *s);
void xa_buf_putc(struct xa_buf *b, char c);
void xa_buf_printf(struct xa_buf *b, const char *fmt, ...) XA_PRINTF(2, 3);
/* Hands the buffer's bytes to the caller (never NULL) and resets 'b'. */
char *xa_buf_steal(struct xa_buf *b);
void xa_buf_free(struct xa_buf *b);

/* A fresh random UUID (version 4) in its 36-character text form. */
void xa_uuid_generate(char out[37]);
bool xa_uuid_valid(const char *s);
/* "OpaqueRef:<new uuid>"; the caller owns the result. */
char *xa_ref_new(void);

/* Current time as XenAPI's datetime text, e.g. "20250319T04:16:24Z". */
void xa_datetime_now(char out[32]);
void xa_datetime_from_time(int64_t t, char out[32]);
/* Seconds since the epoch, monotonic clock in seconds. */
double xa_now(void);
double xa_monotonic(void);

bool xa_str_eq(const char *a, const char *b);
bool xa_str_has_prefix(const char *s, const char *prefix);
bool xa_utf8_valid(const char *s, size_t n);
/* A copy of 's' safe to echo back: invalid UTF-8 bytes (and NULs) are
 * replaced with U+FFFD.  Caller frees. */
char *xa_utf8_sanitize(const char *s, size_t n);
/* Parses a decimal int64; false when 's' is not exactly one. */
bool xa_parse_int64(const char *s, int64_t *out);

#endif
