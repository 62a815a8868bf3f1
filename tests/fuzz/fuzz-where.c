/* fuzz-where.c - get_all_records_where's expression parser
 * (xa_where_parse).  An expression that parses is also bound to the VM
 * class and evaluated against a made-up row, so binding and evaluation
 * see every tree shape the parser can build. */
#include <stdlib.h>
#include <string.h>

#include "db/where.h"
#include "fuzz.h"
#include "schema.h"

/* Field i of the made-up row: alternately "" and a fixed word, so both
 * branches of every comparison are taken. */
static const char *
field_text(int field, struct xa_buf *scratch, void *ctx)
{
    (void)ctx;
    if (field % 3 == 0) {
        return "";
    }
    xa_buf_printf(scratch, "v%d", field % 7);
    return scratch->data;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct xa_class_desc *vm;
    if (!vm) {
        xa_schema_init();
        vm = xa_schema_class("VM");
    }
    char *text = malloc(size + 1);
    if (!text) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    struct xa_where *w = NULL;
    struct xa_error *e = xa_where_parse(text, &w);
    free(text);
    if (e) {
        xa_error_free(e);
        xa_where_free(w);
        return 0;
    }
    if (vm) {
        e = xa_where_bind(w, vm);
        if (e) {
            xa_error_free(e);
        } else {
            (void)xa_where_eval(w, field_text, NULL);
        }
    }
    xa_where_free(w);
    return 0;
}
