/* where.h - get_all_records_where's expression language (xapi db_filter).
 *
 *   expr  := value "=" value | value "<>" value | expr "and" expr
 *          | expr "or" expr | "not" expr | "true" | "false" | "(" expr ")"
 *   value := "\"text\"" | "field" "\"name\""
 *
 * "and" and "or" share one precedence and associate left; "not" binds
 * tighter.  Strings have no escapes.  Parsing, binding to a class and
 * evaluation are separate steps so the parser can be fuzzed alone; nesting
 * is limited so hostile input cannot exhaust the stack. */
#ifndef XA_WHERE_H
#define XA_WHERE_H

#include <stdbool.h>

#include "error.h"
#include "schema.h"
#include "util.h"
#include "value.h"

#define XA_WHERE_MAX_DEPTH 256

struct xa_where;

/* Parses 'text' into '*out' (free with xa_where_free()); INTERNAL_ERROR
 * for malformed input. */
struct xa_error *xa_where_parse(const char *text,
                                struct xa_where **out) XA_WARN_UNUSED;
/* Resolves the field names against 'cls' ("name__label" is name_label);
 * INTERNAL_ERROR naming the first unknown field. */
struct xa_error *xa_where_bind(struct xa_where *w,
                               const struct xa_class_desc *cls) XA_WARN_UNUSED;
void xa_where_free(struct xa_where *w);

/* Gives the text of field 'field' of the row being tested: a string that
 * stays valid until the next call, either borrowed or written into
 * 'scratch' (already emptied). */
typedef const char *(*xa_where_field_fn)(int field, struct xa_buf *scratch,
                                         void *ctx);
/* Evaluates a bound expression; unbound fields compare as "". */
bool xa_where_eval(const struct xa_where *w, xa_where_field_fn fn, void *ctx);

/* Appends the text a field of type 't' compares by: strings, refs and enum
 * names as they are, bools "true"/"false", ints in decimal, floats %.16g,
 * sets and maps in xapi's S-expression form ('a' 'b'), (('k' 'v')). */
void xa_where_value_text(const struct xa_type *t, const struct xa_value *v,
                         struct xa_buf *out);

#endif
