/* schema.c - lookups over the generated datamodel tables (schema.h). */
#include "schema.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "util.h"
#include "value.h"

const char *const xa_role_names[XA_ROLE__MAX] = {
    "pool-admin",  "pool-operator", "vm-power-admin", "vm-admin",
    "vm-operator", "read-only",     "client-cert",
};

/* Open-addressing table from message wire name to descriptor, built once
 * by xa_schema_init() and read-only afterwards. */
static const struct xa_message_desc **msg_table;
static size_t msg_table_size;
/* Parsed field defaults, per class, per field (NULL when none). */
static struct xa_value ***field_defaults;

static uint64_t
hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

static struct xa_value *value_from_json(const struct xa_type *t,
                                        struct json_object *j);

static struct xa_value *
empty_of(const struct xa_type *t)
{
    switch (t->kind) {
    case XA_T_INT:
        return xa_int(0);
    case XA_T_FLOAT:
        return xa_double(0.0);
    case XA_T_BOOL:
        return xa_bool(false);
    case XA_T_DATETIME:
        return xa_datetime("19700101T00:00:00Z");
    case XA_T_REF:
        return xa_string("OpaqueRef:NULL");
    case XA_T_ENUM:
        return xa_string(t->enm->n_values ? t->enm->values[0] : "");
    case XA_T_SET:
        return xa_array();
    case XA_T_MAP:
    case XA_T_RECORD:
        return xa_struct();
    default:
        return xa_string("");
    }
}

static struct xa_value *
value_from_json(const struct xa_type *t, struct json_object *j)
{
    struct xa_value *v;
    switch (t->kind) {
    case XA_T_INT:
        return xa_int(json_object_get_int64(j));
    case XA_T_FLOAT:
        return xa_double(json_object_get_double(j));
    case XA_T_BOOL:
        return xa_bool(json_object_get_boolean(j));
    case XA_T_DATETIME:
        return xa_datetime(json_object_get_string(j));
    case XA_T_SET:
        v = xa_array();
        for (size_t i = 0; i < json_object_array_length(j); i++) {
            xa_array_append(
                v, value_from_json(t->elem, json_object_array_get_idx(j, i)));
        }
        return v;
    case XA_T_MAP:
        v = xa_struct();
        json_object_object_foreach(j, key, val)
        {
            xa_struct_add(v, key, value_from_json(t->elem, val));
        }
        return v;
    case XA_T_RECORD:
        return xa_struct();
    default:
        return xa_string(json_object_get_string(j));
    }
}

struct xa_value *
xa_schema_value_from_json_text(const struct xa_type *t, const char *text)
{
    struct json_object *j = json_tokener_parse(text);
    if (!j) {
        xa_log_err("schema", "bad default %s for type %s", text, t->text);
        abort();
    }
    struct xa_value *v = value_from_json(t, j);
    json_object_put(j);
    return v;
}

void
xa_schema_init(void)
{
    if (msg_table) {
        return;
    }
    msg_table_size = 1;
    while (msg_table_size < xa_schema_n_messages * 2) {
        msg_table_size *= 2;
    }
    msg_table = xa_calloc(msg_table_size, sizeof *msg_table);
    for (size_t i = 0; i < xa_schema_n_messages; i++) {
        const struct xa_message_desc *m = &xa_schema_messages[i];
        size_t h = hash_str(m->wire) & (msg_table_size - 1);
        while (msg_table[h]) {
            h = (h + 1) & (msg_table_size - 1);
        }
        msg_table[h] = m;
    }
    field_defaults = xa_calloc(xa_schema_n_classes, sizeof *field_defaults);
    for (size_t c = 0; c < xa_schema_n_classes; c++) {
        const struct xa_class_desc *cls = xa_schema_classes[c];
        field_defaults[c] = xa_calloc(cls->n_fields, sizeof **field_defaults);
        for (size_t f = 0; f < cls->n_fields; f++) {
            const struct xa_field_desc *fd = &cls->fields[f];
            field_defaults[c][f] =
                fd->dflt ? xa_schema_value_from_json_text(fd->type, fd->dflt)
                         : empty_of(fd->type);
        }
    }
}

const struct xa_message_desc *
xa_schema_message(const char *wire)
{
    size_t h = hash_str(wire) & (msg_table_size - 1);
    while (msg_table[h]) {
        if (strcmp(msg_table[h]->wire, wire) == 0) {
            return msg_table[h];
        }
        h = (h + 1) & (msg_table_size - 1);
    }
    return NULL;
}

const struct xa_class_desc *
xa_schema_class(const char *name)
{
    for (size_t i = 0; i < xa_schema_n_classes; i++) {
        if (strcmp(xa_schema_classes[i]->name, name) == 0) {
            return xa_schema_classes[i];
        }
    }
    return NULL;
}

const struct xa_class_desc *
xa_schema_class_ci(const char *name)
{
    for (size_t i = 0; i < xa_schema_n_classes; i++) {
        if (strcasecmp(xa_schema_classes[i]->name, name) == 0) {
            return xa_schema_classes[i];
        }
    }
    return NULL;
}

int
xa_schema_field_index(const struct xa_class_desc *cls, const char *name)
{
    for (size_t i = 0; i < cls->n_fields; i++) {
        if (strcmp(cls->fields[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

struct xa_value *
xa_schema_field_default(const struct xa_class_desc *cls, int field)
{
    return field_defaults[cls->index][field];
}

struct xa_value *
xa_schema_param_default(const struct xa_message_desc *m, size_t i)
{
    /* Defaults are rare and small: parse on use. */
    return xa_schema_value_from_json_text(m->params[i].type, m->params[i].dflt);
}
