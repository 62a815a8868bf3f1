/* cmdtab.c - xe's command table, built at start-up from the schema.
 *
 * For every class with records (a get_all_records message) xe offers
 * <class>-list and <class>-param-{list,get,set,add,remove,clear}; for
 * every public message (explicit ones, plus the implicit create and
 * destroy) one command named <class>-<message, dashed>.  The hand-written
 * commands of custom.c come first and win over a generated command of the
 * same name (vm-shutdown chooses between clean_ and hard_shutdown, for
 * instance).  Class names follow xapi's xe: the class's lower-case name
 * with '-' for '_', "appliance" for VM_appliance, and "template" and
 * "snapshot" as views of VM.  help and bash completion read this table. */
#include <stdlib.h>
#include <string.h>

#include "xe.h"

static struct xe_class *classes;
static size_t n_classes;
static struct xe_cmd *cmds;
static size_t n_cmds, cap_cmds;

char *
xe_dashed(const char *wire)
{
    char *s = xa_strdup(wire);
    for (char *p = s; *p; p++) {
        if (*p == '_') {
            *p = '-';
        }
    }
    return s;
}

#define F(...) ((const char *const[]){__VA_ARGS__, NULL})

/* xapi's default columns of <class>-list, by wire field name. */
static const struct {
    const char *cls;
    const char *const *fields;
} list_defaults[] = {
    {"VM", F("uuid", "name_label", "power_state")},
    {"host", F("uuid", "name_label", "name_description")},
    {"SR", F("uuid", "name_label", "name_description", "type", "content_type")},
    {"VDI", F("uuid", "name_label", "name_description", "SR", "virtual_size",
              "sharable", "read_only")},
    {"network", F("uuid", "name_label", "name_description", "bridge")},
    {"PIF", F("uuid", "device", "currently_attached", "VLAN", "network")},
    {"VBD", F("uuid", "VM", "VDI", "empty", "userdevice")},
    {"VIF", F("uuid", "VM", "device", "network")},
    {"PBD", F("uuid", "host", "SR", "device_config", "currently_attached")},
    {"task", F("uuid", "name_label", "name_description", "status", "progress")},
    {"pool",
     F("uuid", "name_label", "name_description", "master", "default_SR")},
    {"message",
     F("uuid", "name", "priority", "cls", "obj_uuid", "timestamp", "body")},
};

static const char *const *
default_list_fields(const struct xa_class_desc *c)
{
    for (size_t i = 0; i < XA_ARRAY_SIZE(list_defaults); i++) {
        if (strcmp(list_defaults[i].cls, c->name) == 0) {
            return list_defaults[i].fields;
        }
    }
    return NULL; /* uuid, name-label, name-description: see generic.c */
}

static bool
has_message(const struct xa_class_desc *c, const char *name)
{
    char *w = xa_asprintf("%s.%s", c->name, name);
    bool ok = xa_schema_message(w) != NULL;
    free(w);
    return ok;
}

static void
add_class(const struct xa_class_desc *c, const char *name,
          const char *filter_field, bool filter_value, bool primary)
{
    classes = xa_realloc(classes, (n_classes + 1) * sizeof *classes);
    struct xe_class *x = &classes[n_classes++];
    x->name = xa_strdup(name);
    x->cls = c;
    x->filter_field = filter_field;
    x->filter_value = filter_value;
    x->list_fields = default_list_fields(c);
    x->primary = primary;
}

const struct xe_class *
xe_class_find(const char *name)
{
    for (size_t i = 0; i < n_classes; i++) {
        if (strcmp(classes[i].name, name) == 0) {
            return &classes[i];
        }
    }
    return NULL;
}

const struct xe_class *
xe_class_of(const struct xa_class_desc *cls)
{
    for (size_t i = 0; i < n_classes; i++) {
        if (classes[i].cls == cls && classes[i].primary) {
            return &classes[i];
        }
    }
    return NULL;
}

const struct xe_cmd *
xe_cmd_find(const char *name)
{
    for (size_t i = 0; i < n_cmds; i++) {
        if (strcmp(cmds[i].name, name) == 0) {
            return &cmds[i];
        }
    }
    return NULL;
}

/* Adds a command unless one of that name exists; takes 'name'. */
static struct xe_cmd *
add_cmd(char *name, enum xe_cmd_kind kind, const struct xe_class *xc)
{
    if (xe_cmd_find(name)) {
        free(name);
        return NULL;
    }
    if (n_cmds == cap_cmds) {
        cap_cmds = cap_cmds ? 2 * cap_cmds : 512;
        cmds = xa_realloc(cmds, cap_cmds * sizeof *cmds);
    }
    struct xe_cmd *c = &cmds[n_cmds++];
    memset(c, 0, sizeof *c);
    c->name = name;
    c->kind = kind;
    c->xc = xc;
    return c;
}

/* The help template with its "%s" replaced by the class name (the
 * templates are data, so printf must not interpret them). */
static char *
subst_class(const char *tmpl, const char *name)
{
    const char *p = strstr(tmpl, "%s");
    if (!p) {
        return xa_strdup(tmpl);
    }
    struct xa_buf b = {0};
    xa_buf_append(&b, tmpl, (size_t)(p - tmpl));
    xa_buf_puts(&b, name);
    xa_buf_puts(&b, p + 2);
    return xa_buf_steal(&b);
}

static void
add_class_cmds(const struct xe_class *xc)
{
    static const struct {
        const char *suffix;
        enum xe_cmd_kind kind;
        const char *reqd, *optn, *help;
    } gen[] = {
        {"list", XE_CMD_LIST, "", "params, <field>=<value>",
         "Lists the %s objects matching the given field values (all of "
         "them without selectors)."},
        {"param-list", XE_CMD_PARAM_LIST, "uuid", "",
         "Lists every field of one %s object."},
        {"param-get", XE_CMD_PARAM_GET, "uuid, param-name", "param-key",
         "Prints one field of a %s object, or one key of a map field."},
        {"param-set", XE_CMD_PARAM_SET, "uuid",
         "<field>=<value>, "
         "<map-field>:<key>=<value>",
         "Sets fields of a %s object."},
        {"param-add", XE_CMD_PARAM_ADD, "uuid, param-name",
         "<key>=<value>, param-key",
         "Adds keys to a map field or a value to a set field of a %s "
         "object."},
        {"param-remove", XE_CMD_PARAM_REMOVE, "uuid, param-name, param-key", "",
         "Removes a key from a map field or a value from a set field of "
         "a %s object."},
        {"param-clear", XE_CMD_PARAM_CLEAR, "uuid, param-name", "",
         "Clears a field of a %s object."},
    };
    bool listable = has_message(xc->cls, "get_all_records");
    bool gettable = has_message(xc->cls, "get_record") &&
                    has_message(xc->cls, "get_by_uuid");
    for (size_t i = 0; i < XA_ARRAY_SIZE(gen); i++) {
        if (gen[i].kind == XE_CMD_LIST ? !listable : !gettable) {
            continue;
        }
        struct xe_cmd *c = add_cmd(
            xa_asprintf("%s-%s", xc->name, gen[i].suffix), gen[i].kind, xc);
        if (c) {
            c->reqd = xa_strdup(gen[i].reqd);
            c->optn = xa_strdup(gen[i].optn);
            c->help = subst_class(gen[i].help, xc->name);
        }
    }
}

const char *
xe_param_cli_name(const struct xa_message_desc *m, size_t i, char *buf,
                  size_t len)
{
    const struct xa_param_desc *p = &m->params[i];
    /* xapi's xe spells these two the same way for every command. */
    if (strcmp(p->name, "new_name") == 0) {
        return "new-name-label";
    }
    if (strcmp(p->name, "start_paused") == 0) {
        return "paused";
    }
    char *d = xe_dashed(p->name);
    if (p->type->kind == XA_T_REF) {
        snprintf(buf, len, "%s-uuid", d);
    } else {
        snprintf(buf, len, "%s", d);
    }
    free(d);
    return buf;
}

/* Whether parameter 0 is the object the message acts on. */
static bool
takes_self(const struct xa_message_desc *m)
{
    return m->n_params > 0 && m->params[0].type->kind == XA_T_REF &&
           m->params[0].type->cls == m->cls;
}

static void
add_message_cmd(const struct xa_message_desc *m)
{
    if (m->hidden || !(m->explicit || m->implicit == XA_MSG_CREATE ||
                       m->implicit == XA_MSG_DESTROY)) {
        return;
    }
    const struct xe_class *xc = xe_class_of(m->cls);
    char *cname = xc ? xa_strdup(xc->name) : xe_dashed(m->cls->lname);
    char *mname = xe_dashed(m->name);
    struct xe_cmd *c =
        add_cmd(xa_asprintf("%s-%s", cname, mname), XE_CMD_MESSAGE, xc);
    free(mname);
    if (!c) {
        free(cname);
        return;
    }
    c->msg = m;
    c->selectors = takes_self(m) && xc;
    struct xa_buf reqd = {0}, optn = {0};
    if (m->implicit == XA_MSG_CREATE && m->cls) {
        /* create takes one record: its fields become arguments. */
        for (size_t i = 0; i < m->cls->n_fields; i++) {
            const struct xa_field_desc *f = &m->cls->fields[i];
            if (f->qual == XA_Q_RO_RUNTIME) {
                continue;
            }
            char *n = xe_field_cli_name(f);
            struct xa_buf *b = f->dflt || f->type->kind == XA_T_MAP ||
                                       f->type->kind == XA_T_SET
                                   ? &optn
                                   : &reqd;
            xa_buf_printf(b, "%s%s%s", b->len ? ", " : "", n,
                          f->type->kind == XA_T_MAP ? ":" : "");
            free(n);
        }
    } else {
        for (size_t i = c->selectors ? 1 : 0; i < m->n_params; i++) {
            char buf[128];
            const char *n = xe_param_cli_name(m, i, buf, sizeof buf);
            const struct xa_type *t = m->params[i].type;
            struct xa_buf *b = m->params[i].dflt || t->kind == XA_T_MAP ||
                                       t->kind == XA_T_SET ||
                                       t->kind == XA_T_BOOL
                                   ? &optn
                                   : &reqd;
            xa_buf_printf(b, "%s%s%s", b->len ? ", " : "", n,
                          t->kind == XA_T_MAP ? ":" : "");
        }
    }
    if (c->selectors) {
        xa_buf_printf(&optn, "%s<%s-selectors>", optn.len ? ", " : "", cname);
    }
    c->reqd = xa_buf_steal(&reqd);
    c->optn = xa_buf_steal(&optn);
    c->help = xa_asprintf("Calls %s%s.", m->wire,
                          c->selectors ? " on every selected object" : "");
    free(cname);
}

void
xe_cmdtab_build(void)
{
    for (size_t i = 0; i < xa_schema_n_classes; i++) {
        const struct xa_class_desc *c = xa_schema_classes[i];
        if (strcmp(c->name, "VM") == 0) {
            add_class(c, "vm", "is_a_template", false, true);
            add_class(c, "template", "is_a_template", true, false);
            add_class(c, "snapshot", "is_a_snapshot", true, false);
        } else if (strcmp(c->name, "VM_appliance") == 0) {
            add_class(c, "appliance", NULL, false, true);
        } else {
            char *d = xe_dashed(c->lname);
            add_class(c, d, NULL, false, true);
            free(d);
        }
    }
    struct xe_cmd *h = add_cmd(xa_strdup("help"), XE_CMD_HELP, NULL);
    h->reqd = xa_strdup("");
    h->optn = xa_strdup("<command>, --all");
    h->help = xa_strdup("Prints help on a command, or lists the commands.");
    for (size_t i = 0; i < xe_n_custom_cmds; i++) {
        const struct xe_custom *cc = &xe_custom_cmds[i];
        struct xe_cmd *c = add_cmd(xa_strdup(cc->name), XE_CMD_CUSTOM,
                                   cc->cls ? xe_class_find(cc->cls) : NULL);
        c->run = cc->run;
        c->reqd = xa_strdup(cc->reqd);
        c->optn = xa_strdup(cc->optn);
        c->help = xa_strdup(cc->help);
        c->selectors = cc->cls != NULL;
    }
    for (size_t i = 0; i < n_classes; i++) {
        add_class_cmds(&classes[i]);
    }
    for (size_t i = 0; i < xa_schema_n_messages; i++) {
        add_message_cmd(&xa_schema_messages[i]);
    }
}

/* ---- help ------------------------------------------------------------ */

static int
cmp_cmd_names(const void *a, const void *b)
{
    const struct xe_cmd *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static const struct xe_cmd **
sorted_cmds(void)
{
    const struct xe_cmd **v = xa_calloc(n_cmds + 1, sizeof *v);
    for (size_t i = 0; i < n_cmds; i++) {
        v[i] = &cmds[i];
    }
    qsort(v, n_cmds, sizeof *v, cmp_cmd_names);
    return v;
}

static void
print_wrapped(const struct xe_cmd **v, bool (*want)(const struct xe_cmd *))
{
    size_t col = 0;
    bool first = true;
    for (size_t i = 0; v[i]; i++) {
        if (want && !want(v[i])) {
            continue;
        }
        size_t l = strlen(v[i]->name) + 2;
        if (!first) {
            fputs(",", stdout);
            if (col + l > 78) {
                fputs("\n", stdout);
                col = 0;
            } else {
                fputs(" ", stdout);
                col++;
            }
        }
        if (col == 0) {
            fputs("    ", stdout);
            col = 4;
        }
        fputs(v[i]->name, stdout);
        col += l - 1;
        first = false;
    }
    fputs("\n", stdout);
}

/* The common commands: everything on the main classes. */
static bool
is_common(const struct xe_cmd *c)
{
    static const char *const common[] = {
        "vm-",       "host-",    "sr-",  "vdi-",   "vbd-",
        "vif-",      "network-", "pif-", "pool-",  "template-",
        "snapshot-", "task-",    "pbd-", "event-", "help"};
    if (c->kind == XE_CMD_MESSAGE && c->msg && c->msg->explicit &&
        strstr(c->name, "-set-")) {
        return false;
    }
    for (size_t i = 0; i < XA_ARRAY_SIZE(common); i++) {
        if (xa_str_has_prefix(c->name, common[i])) {
            return true;
        }
    }
    return false;
}

int
xe_help(struct xe *xe, const struct xe_cmd *self)
{
    XA_UNUSED(self);
    const char *topic = NULL;
    bool all = false;
    for (size_t i = 0; i < xe->n_args; i++) {
        if (!xe->args[i].val) {
            topic = xe->args[i].key;
        } else if (strcmp(xe->args[i].key, "all") == 0) {
            all = true;
        }
        xe->args[i].used = true;
    }
    if (topic) {
        const struct xe_cmd *c = xe_cmd_find(topic);
        if (!c) {
            return xe_param_error("Unknown command", topic);
        }
        printf("command name            : %s\n", c->name);
        printf("        reqd params     : %s\n", c->reqd ? c->reqd : "");
        printf("        optional params : %s\n", c->optn ? c->optn : "");
        printf("        description     : %s\n", c->help ? c->help : "");
        return 0;
    }
    const struct xe_cmd **v = sorted_cmds();
    printf("Usage: xe <command> [-s server] [-pw passwd] [-p port] [-u user] "
           "[-pwf password-file]\n  [command specific arguments]\n\n"
           "To get help on a specific command: xe help <command>\n"
           "To get a full listing of commands: xe help --all\n\n");
    if (all) {
        printf("Full command list\n-----------------\n");
        print_wrapped(v, NULL);
    } else {
        printf("Common command list\n-------------------\n");
        print_wrapped(v, is_common);
    }
    free(v);
    return 0;
}

/* ---- bash completion ------------------------------------------------ */

static void
print_arg_words(FILE *f, const char *list)
{
    if (!list) {
        return;
    }
    char *dup = xa_strdup(list), *save = NULL;
    for (char *tok = strtok_r(dup, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        if (tok[0] == '<') {
            continue;
        }
        size_t l = strlen(tok);
        if (tok[0] == '-' && tok[1] == '-') {
            fprintf(f, " %s", tok);
        } else if (l > 0 && tok[l - 1] == ':') {
            fprintf(f, " %s", tok);
        } else {
            fprintf(f, " %s=", tok);
        }
    }
    free(dup);
}

void
xe_print_bash_completion(FILE *f)
{
    const struct xe_cmd **v = sorted_cmds();
    fprintf(f, "# bash completion for xe; generated by "
               "'xe --generate-bash-completion' from the command table.\n");
    fprintf(f, "_xe_commands=\"");
    for (size_t i = 0; v[i]; i++) {
        fprintf(f, "%s%s", i ? " " : "", v[i]->name);
    }
    fprintf(f, "\"\n\n_xe_args()\n{\n    case \"$1\" in\n");
    for (size_t i = 0; v[i]; i++) {
        fprintf(f, "    %s) echo \"", v[i]->name);
        print_arg_words(f, v[i]->reqd);
        print_arg_words(f, v[i]->optn);
        if (v[i]->selectors || v[i]->kind == XE_CMD_LIST) {
            fprintf(f, " uuid= --multiple");
        }
        fprintf(f, " --minimal\" ;;\n");
    }
    fprintf(f, "    esac\n}\n\n");
    fprintf(f,
            "_xe()\n{\n"
            "    local COMP_WORDBREAKS=${COMP_WORDBREAKS//=/}\n"
            "    local cur=${COMP_WORDS[COMP_CWORD]}\n"
            "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
            "        COMPREPLY=($(compgen -W \"$_xe_commands\" -- \"$cur\"))\n"
            "        return 0\n"
            "    fi\n"
            "    case \"$cur\" in\n"
            "    *=*) COMPREPLY=(); return 0 ;;\n"
            "    esac\n"
            "    COMPREPLY=($(compgen -W \"$(_xe_args \"${COMP_WORDS[1]}\") "
            "-s -p -u -pw -pwf --nossl\" -- \"$cur\"))\n"
            "    compopt -o nospace 2>/dev/null\n"
            "    return 0\n}\n"
            "complete -F _xe xe\n");
    free(v);
}
