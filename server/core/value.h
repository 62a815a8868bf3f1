/* value.h - the dynamically typed value every layer of xapid exchanges.
 *
 * The wire codecs turn XML-RPC and JSON-RPC into trees of xa_value and
 * back; the database stores each field as one; generated dispatch checks
 * them against the schema's types.  Values are reference counted and
 * treated as immutable once shared (stored in the database or held by two
 * owners): build a value, then hand it over.  Functions that "take" a value
 * take over the caller's reference; functions that return a value give the
 * caller a new reference unless they say "borrowed". */
#ifndef XA_VALUE_H
#define XA_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum xa_kind {
    XA_NIL,      /* <nil/>, JSON null */
    XA_STRING,   /* text, not necessarily NUL-free on input */
    XA_INT,      /* 64-bit: decimal string in XML-RPC, number in JSON */
    XA_INT32,    /* <i4> in XML-RPC (event.from's valid_ref_counts) */
    XA_DOUBLE,   /* <double>, %.16g */
    XA_BOOL,     /* <boolean>1|0</boolean>, true/false */
    XA_DATETIME, /* text "YYYYMMDDTHH:MM:SSZ" */
    XA_ARRAY,    /* ordered values */
    XA_STRUCT,   /* ordered string-keyed members (maps and records) */
};

struct xa_value;

/* One member of a struct. */
struct xa_member {
    char *key;            /* owned, unless 'static_key' */
    struct xa_value *val; /* owned reference */
    bool static_key;      /* 'key' lives forever (schema names) */
};

struct xa_value {
    enum xa_kind kind;
    int refs; /* atomically updated reference count */
    union {
        struct {
            char *s;    /* owned, NUL-terminated */
            size_t len; /* bytes, excluding the NUL */
        } str;          /* XA_STRING, XA_DATETIME */
        int64_t i;      /* XA_INT, XA_INT32 */
        double d;       /* XA_DOUBLE */
        bool b;         /* XA_BOOL */
        struct {
            struct xa_value **items; /* owned references */
            size_t n, cap;
        } arr; /* XA_ARRAY */
        struct {
            struct xa_member *m; /* owned */
            size_t n, cap;
        } st; /* XA_STRUCT */
    } u;
};

struct xa_value *xa_nil(void);
struct xa_value *xa_string(const char *s);
struct xa_value *xa_string_n(const char *s, size_t n);
/* Takes ownership of the malloc'd 's'. */
struct xa_value *xa_string_take(char *s);
struct xa_value *xa_int(int64_t i);
struct xa_value *xa_int32(int32_t i);
struct xa_value *xa_double(double d);
struct xa_value *xa_bool(bool b);
struct xa_value *xa_datetime(const char *s);
struct xa_value *xa_array(void);
struct xa_value *xa_struct(void);

struct xa_value *xa_value_ref(struct xa_value *v);
void xa_value_unref(struct xa_value *v); /* accepts NULL */

/* Appends, taking 'item'. */
void xa_array_append(struct xa_value *arr, struct xa_value *item);
/* Sets key to 'val' (taking it), replacing an existing member. */
void xa_struct_set(struct xa_value *st, const char *key, struct xa_value *val);
/* Appends without looking for an existing key: for building records whose
 * keys are known to be distinct (faster for large records). */
void xa_struct_add(struct xa_value *st, const char *key, struct xa_value *val);
/* As xa_struct_add, with a key that outlives every value (a schema field
 * name): it is not copied.  Records are built this way, which saves a
 * copy per field on the get_all_records path. */
void xa_struct_add_static(struct xa_value *st, const char *key,
                          struct xa_value *val);
/* Borrowed; NULL when absent. */
struct xa_value *xa_struct_get(const struct xa_value *st, const char *key);
bool xa_struct_remove(struct xa_value *st, const char *key);
/* Borrowed string of a member, or NULL if absent or not a string. */
const char *xa_struct_get_str(const struct xa_value *st, const char *key);

/* Deep copy: the result is unshared and may be modified. */
struct xa_value *xa_value_copy(const struct xa_value *v);
bool xa_value_equal(const struct xa_value *a, const struct xa_value *b);
/* Text of a string or datetime value, else NULL. Borrowed. */
const char *xa_value_str(const struct xa_value *v);

/* Debug rendering (JSON, as the JSON-RPC wire writes it), caller frees. */
char *xa_value_to_debug(const struct xa_value *v);

#endif
