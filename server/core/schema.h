/* schema.h - the shapes of the generated datamodel tables.
 *
 * api-schema/ describes every class, field, message, enum and error of
 * the XenAPI; api-schema/codegen/xagen.py turns it into constant tables of
 * these types (build/gen/xa-schema.c).  Everything that must know the
 * datamodel - dispatch, the database, event and record marshalling, the
 * client library and xe - walks these tables instead of carrying its own
 * copy of the model. */
#ifndef XA_SCHEMA_H
#define XA_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

struct xa_value;
struct xa_error;
struct xa_call;

enum xa_type_kind {
    XA_T_VOID,
    XA_T_STRING,
    XA_T_INT,
    XA_T_FLOAT,
    XA_T_BOOL,
    XA_T_DATETIME,
    XA_T_REF,    /* 'cls' names the class */
    XA_T_ENUM,   /* 'enm' lists the values */
    XA_T_SET,    /* 'elem' */
    XA_T_MAP,    /* 'key' -> 'elem' */
    XA_T_RECORD, /* 'cls' */
    XA_T_OPTION, /* 'elem', or absent */
};

struct xa_enum_desc {
    const char *name;
    size_t n_values;
    const char *const *values;
};

struct xa_class_desc;

struct xa_type {
    enum xa_type_kind kind;
    const char *text;                /* schema spelling, "VM ref set" */
    const struct xa_class_desc *cls; /* REF, RECORD */
    const struct xa_enum_desc *enm;  /* ENUM */
    const struct xa_type *key;       /* MAP */
    const struct xa_type *elem;      /* SET, MAP, OPTION */
};

enum xa_qualifier {
    XA_Q_RW,             /* settable through set_<field> */
    XA_Q_RO_CONSTRUCTOR, /* given at create, read-only after */
    XA_Q_RO_RUNTIME,     /* maintained by the server */
};

struct xa_field_desc {
    const char *name; /* wire name, nested names joined by '_' */
    const struct xa_type *type;
    enum xa_qualifier qual;
    const char *dflt; /* default as JSON text; NULL when create needs it */
    int index;        /* position in the class's field array */
    /* For a "ref" field that is the single side of a relation (VBD.VM),
     * the set field on the other class it feeds (VM.VBDs), else -1; for
     * that set field, 'inverse' names this ref field.  Sets so named are
     * computed by the database, never stored. */
    const struct xa_class_desc *rel_cls;
    int rel_field;
    bool is_inverse_set; /* computed from the ref fields that point here */
};

/* Which implicit messages a class has. */
enum {
    XA_IMPL_CREATE = 1 << 0,
    XA_IMPL_DESTROY = 1 << 1,
    XA_IMPL_GET_ALL = 1 << 2, /* get_all, get_all_records(_where) */
    XA_IMPL_GETTERS = 1 << 3, /* get_record, get_by_uuid, get_<f> */
    XA_IMPL_BY_NAME = 1 << 4, /* get_by_name_label */
};

struct xa_class_desc {
    const char *name;  /* "VM" */
    const char *lname; /* "vm": event class names, table names */
    int index;         /* position in xa_schema_classes */
    unsigned implicit; /* XA_IMPL_* */
    bool in_db;        /* has rows in the database */
    size_t n_fields;
    const struct xa_field_desc *fields;
    int uuid_field;       /* index or -1 */
    int name_label_field; /* index or -1 */
    bool persist;         /* rows survive a restart (sessions, tasks don't) */
    /* rows are the pool's, one copy on the master: streamed to members,
     * and a member's writes go to the master (persisted rows, tasks;
     * sessions are each host's own) */
    bool replicate;
};

/* Roles, most to least privileged; a message carries the set of roles
 * that may call it as a bit mask of these. */
enum xa_role {
    XA_ROLE_POOL_ADMIN,
    XA_ROLE_POOL_OPERATOR,
    XA_ROLE_VM_POWER_ADMIN,
    XA_ROLE_VM_ADMIN,
    XA_ROLE_VM_OPERATOR,
    XA_ROLE_READ_ONLY,
    XA_ROLE_CLIENT_CERT,
    XA_ROLE__MAX
};

enum xa_implicit_kind {
    XA_MSG_EXPLICIT,
    XA_MSG_GET_FIELD,
    XA_MSG_SET_FIELD,
    XA_MSG_ADD_TO_MAP,
    XA_MSG_REMOVE_FROM_MAP,
    XA_MSG_ADD_TO_SET,
    XA_MSG_REMOVE_FROM_SET,
    XA_MSG_GET_RECORD,
    XA_MSG_GET_BY_UUID,
    XA_MSG_GET_BY_NAME_LABEL,
    XA_MSG_GET_ALL,
    XA_MSG_GET_ALL_RECORDS,
    XA_MSG_GET_ALL_RECORDS_WHERE,
    XA_MSG_GET_ALL_WHERE,
    XA_MSG_CREATE,
    XA_MSG_DESTROY,
};

struct xa_param_desc {
    const char *name;
    const struct xa_type *type;
    const char *dflt; /* JSON text of the default, or NULL: required */
};

/* A generated thunk: unmarshals 'args' (already type-checked, one per
 * declared parameter, session excluded), calls the implementation and
 * marshals its result into '*ret' (NULL for void). */
typedef struct xa_error *(*xa_thunk)(struct xa_call *call,
                                     struct xa_value *const *args,
                                     struct xa_value **ret);

struct xa_message_desc {
    const char *wire; /* "VM.start" */
    const struct xa_class_desc *cls;
    const char *name; /* "start" */
    size_t n_params;  /* excluding the session */
    const struct xa_param_desc *params;
    size_t n_required; /* params without defaults */
    const struct xa_type *result;
    unsigned roles; /* 1 << enum xa_role */
    bool session;   /* first wire argument is a session */
    bool async;     /* has an Async. form */
    bool hidden;    /* left out of system.listMethods */
    /* what serves it: XA_MSG_EXPLICIT, a hand-written thunk, or one of
     * the generic implementations */
    enum xa_implicit_kind implicit;
    bool explicit; /* declared by the datamodel, not generated for a class
                    * (may still be served generically: "sets"/"generic") */
    int field;     /* field index for field messages */
    xa_thunk fn;
    const char *const *errors; /* codes it may raise, NULL-ended */
};

extern const struct xa_class_desc *const xa_schema_classes[];
extern const size_t xa_schema_n_classes;
extern const struct xa_message_desc xa_schema_messages[];
extern const size_t xa_schema_n_messages;
extern const struct xa_enum_desc *const xa_schema_enums[];
extern const size_t xa_schema_n_enums;
extern const char *const xa_role_names[XA_ROLE__MAX];

/* Lookups (schema.c). */
const struct xa_class_desc *xa_schema_class(const char *name);
/* Case-insensitive, for event class names. */
const struct xa_class_desc *xa_schema_class_ci(const char *name);
const struct xa_message_desc *xa_schema_message(const char *wire);
int xa_schema_field_index(const struct xa_class_desc *cls, const char *name);
/* The default of a field as a value (borrowed, shared), or NULL. */
struct xa_value *xa_schema_field_default(const struct xa_class_desc *cls,
                                         int field);
/* The default of a message's parameter 'i' (new reference). */
struct xa_value *xa_schema_param_default(const struct xa_message_desc *m,
                                         size_t i);
/* Parses JSON text into a value of type 't' (new reference). */
struct xa_value *xa_schema_value_from_json_text(const struct xa_type *t,
                                                const char *text);
/* Builds the lookup indexes and parses defaults; call once at start. */
void xa_schema_init(void);

#endif
