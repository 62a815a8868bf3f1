/* xe.h - internals shared by the files of xe, the command line.
 *
 * xe is a client of the public API (clients/c, the generated typed calls
 * and xa_client_call) - not of xapi's thin /cli protocol.  Its command
 * table is built at start-up from the generated schema tables that the
 * server itself uses (schema.h: xa_schema_classes, xa_schema_messages),
 * so every class and message of api-schema/ gets its commands with no
 * copy of the model here; cmdtab.c adds the hand-written commands of
 * custom.c and the few renames where xapi's xe differs from the wire
 * names.
 *
 * Files: main.c (options, connection, dispatch), cmdtab.c (the table,
 * help, bash completion), records.c (fetching records, selectors, field
 * names and value text), print.c (xapi's layouts, JSON, errors),
 * generic.c (list, param-*, one command per message), custom.c
 * (vm-install, import/export, event-wait...), errtext.c (xapi's error
 * texts). */
#ifndef XE_H
#define XE_H

#include <stdbool.h>
#include <stdio.h>

#include "client.h"
#include "error.h"
#include "schema.h"
#include "util.h"
#include "value.h"

/* One "key=value" argument (flags "--x" arrive as x=true).  'used' marks
 * arguments some part of the command consumed, so that the rest can be
 * treated as selectors. */
struct xe_arg {
    char *key; /* owned */
    char *val; /* owned */
    bool used;
};

/* A class as xe sees it: "vm", "template" and "snapshot" are three views
 * of the class VM, told apart by a filter on is_a_template and
 * is_a_snapshot. */
struct xe_class {
    char *name;                      /* "vm", "host-cpu"; owned */
    const struct xa_class_desc *cls; /* its API class */
    const char *filter_field;        /* wire field fixed for this view */
    bool filter_value;
    const char *const *list_fields; /* default params= of -list, wire */
    bool primary;                   /* the view carrying message commands */
};

enum xe_cmd_kind {
    XE_CMD_LIST,
    XE_CMD_PARAM_LIST,
    XE_CMD_PARAM_GET,
    XE_CMD_PARAM_SET,
    XE_CMD_PARAM_ADD,
    XE_CMD_PARAM_REMOVE,
    XE_CMD_PARAM_CLEAR,
    XE_CMD_MESSAGE, /* one API message, generic argument mapping */
    XE_CMD_CUSTOM,  /* hand-written, custom.c */
    XE_CMD_HELP,
};

struct xe;
struct xe_cmd;
typedef int (*xe_run_fn)(struct xe *xe, const struct xe_cmd *cmd);

struct xe_cmd {
    char *name; /* "vm-start"; owned */
    enum xe_cmd_kind kind;
    const struct xe_class *xc;         /* class commands; may be NULL */
    const struct xa_message_desc *msg; /* XE_CMD_MESSAGE */
    xe_run_fn run;                     /* XE_CMD_CUSTOM */
    char *reqd;                        /* help: required args; owned */
    char *optn;                        /* help: optional args; owned */
    char *help;                        /* one-line description; owned */
    bool selectors;                    /* acts on objects chosen by k=v */
    bool hidden;                       /* left out of plain 'help' */
};

/* Hand-written commands (custom.c); 'reqd'/'optn' are for help. */
struct xe_custom {
    const char *name;
    xe_run_fn run;
    const char *cls; /* xe class name of its selectors, or NULL */
    const char *reqd;
    const char *optn;
    const char *help;
};
extern const struct xe_custom xe_custom_cmds[];
extern const size_t xe_n_custom_cmds;

/* Everything a running command needs. */
struct xe {
    struct xa_client *c;
    struct xe_arg *args;
    size_t n_args;
    bool minimal;              /* --minimal */
    bool json;                 /* --output json */
    bool json_single;          /* the command prints one value: no JSON array */
    bool multiple;             /* --multiple */
    bool progress;             /* stderr is a terminal: draw progress bars */
    struct xa_buf minimal_out; /* comma-separated names, --minimal */
    bool minimal_any;
    struct xa_value *uuid_cache; /* ref -> uuid text, filled lazily */
    struct xa_value *name_cache; /* ref -> name_label */
};

/* ---- cmdtab.c ---- */
void xe_cmdtab_build(void);
const struct xe_cmd *xe_cmd_find(const char *name);
const struct xe_class *xe_class_find(const char *name);
const struct xe_class *xe_class_of(const struct xa_class_desc *cls);
int xe_help(struct xe *xe, const struct xe_cmd *cmd);
void xe_print_bash_completion(FILE *f);
/* "a_b_c" -> "a-b-c" (caller frees). */
char *xe_dashed(const char *wire);

/* ---- args (main.c) ---- */
/* The value of argument 'key' (marked used), or NULL. */
const char *xe_arg(struct xe *xe, const char *key);
/* Like xe_arg but reports "Required parameter not found" when absent. */
const char *xe_arg_req(struct xe *xe, const char *key);
bool xe_arg_bool(struct xe *xe, const char *key, bool dflt);
/* A pinned connection to another server ("host" or "host:port"), made
 * as the main one was (vm-migrate remote-master=); not logged in. */
struct xe_remote;
struct xe_remote *xe_remote_open(const char *server);
struct xa_client *xe_remote_client(struct xe_remote *r);
void xe_remote_close(struct xe_remote *r); /* logs out; accepts NULL */
/* Marks every argument 'prefix:...' used and returns them as a map
 * (new reference; empty when none). */
struct xa_value *xe_arg_map(struct xe *xe, const char *prefix);
/* A new array holding one string, 'ref'. */
struct xa_value *xe_ref_array(const char *ref);
/* Parses "10GiB"-style sizes; false when malformed. */
bool xe_parse_size(const char *s, int64_t *out);

/* ---- records.c ---- */
/* The CLI name of a field: dashed wire name, or "<class>-uuid" for a
 * ref to the class it is named after (VBD.VM -> vm-uuid). Caller frees. */
char *xe_field_cli_name(const struct xa_field_desc *f);
const struct xa_field_desc *xe_field_by_cli_name(const struct xa_class_desc *c,
                                                 const char *name);
/* Whether the class has a set_<field> message. */
bool xe_field_settable(const struct xa_class_desc *c,
                       const struct xa_field_desc *f);
const char *xe_field_tag(const struct xa_class_desc *c,
                         const struct xa_field_desc *f);
/* Text of a value of type 't' as xe prints it (caller frees). */
char *xe_value_text(struct xe *xe, const struct xa_type *t,
                    const struct xa_value *v);
/* Converts the CLI text of a value into one of type 't' (refs from
 * uuids); NULL with '*err' set when it does not parse. */
struct xa_value *xe_value_parse(struct xe *xe, const struct xa_type *t,
                                const char *text, struct xa_error **err);
/* Resolves a uuid, name or ref of class 'cls' to a ref (caller frees). */
struct xa_error *xe_resolve_ref(struct xe *xe, const struct xa_class_desc *cls,
                                const char *text, char **ret_ref);
char *xe_ref_uuid(struct xe *xe, const struct xa_class_desc *cls,
                  const char *ref);
/* get_all_records of the class view, filtered by the selectors left in
 * the arguments (unused k=v); '*ret' is a map ref -> record. */
struct xa_error *xe_select(struct xe *xe, const struct xe_class *xc,
                           bool list_mode, struct xa_value **ret);
/* Whether record 'rec' of 'xc' passes selector 'key=want' (1 or 0), or
 * -1 when 'key' names no field. */
int xe_record_matches(struct xe *xe, const struct xe_class *xc,
                      const struct xa_value *rec, const char *key,
                      const char *want);
struct xa_error *xe_call(struct xe *xe, const char *method,
                         struct xa_value *params, struct xa_value **ret);
/* Runs an Async. call and waits for its task, drawing progress. */
struct xa_error *xe_call_async(struct xe *xe, const char *method,
                               struct xa_value *params, struct xa_value **ret);

/* ---- print.c ---- */
/* One record: (key, value) pairs in xapi's block layout, or as a JSON
 * object (collected until xe_print_end). */
struct xe_rec {
    char **keys;
    char **vals;
    size_t n, cap;
};
void xe_rec_add(struct xe_rec *r, const char *key, const char *val);
void xe_rec_free(struct xe_rec *r);
void xe_print_record(struct xe *xe, const struct xe_rec *r);
void xe_print_line(struct xe *xe, const char *s);
/* Flushes --minimal and JSON output; call once at the end. */
void xe_print_end(struct xe *xe);
/* Prints an API error the way xapi's xe does (stderr). */
void xe_print_error(struct xe *xe, const struct xa_error *e);
/* "Error: <msg>" on stderr. */
int xe_fail(const char *fmt, ...) XA_PRINTF(1, 2);
int xe_param_error(const char *what, const char *name);

/* ---- errtext.c ---- */
struct xe_errtext {
    const char *code;
    const char *text;
    const char *const *params; /* NULL-ended */
};
const struct xe_errtext *xe_errtext_find(const char *code);

/* ---- generic.c ---- */
int xe_run_generic(struct xe *xe, const struct xe_cmd *cmd);
/* Runs message 'm' on every selected object (or once when it takes no
 * object), mapping the other parameters from arguments. */
int xe_run_message(struct xe *xe, const struct xe_cmd *cmd,
                   const struct xa_message_desc *m);
const char *xe_param_cli_name(const struct xa_message_desc *m, size_t i,
                              char *buf, size_t len);

#endif
