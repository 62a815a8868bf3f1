/* rbac_api.c - the role and subject messages.
 *
 * xapi models each permission as a role of its own; here permissions are
 * the messages' wire names in lower case and which roles hold them comes
 * straight from the schema, so the answers cannot drift from what
 * dispatch enforces. */
#include <string.h>
#include <strings.h>

#include "call.h"
#include "db/db.h"
#include "rbac.h"
#include "xa-impl.h"

extern const struct xa_class_desc xa_cls_role;
extern const struct xa_class_desc xa_cls_subject;

/* The role bit of a role row (from its name), or 0. */
static unsigned
role_bit(struct xa_txn *t, const char *ref)
{
    const struct xa_value *name =
        xa_db_peek_field(t, &xa_cls_role, ref, xa_cls_role.name_label_field);
    return name ? xa_rbac_role_bit(name->u.str.s) : 0;
}

/* Every permission granted by any role in 'mask', as a string set. */
static struct xa_value *
permissions_of(unsigned mask)
{
    struct xa_value *out = xa_array();
    for (size_t i = 0; i < xa_schema_n_messages; i++) {
        const struct xa_message_desc *m = &xa_schema_messages[i];
        if (!m->hidden && m->session && (m->roles & mask)) {
            xa_array_append(out, xa_string_take(xa_rbac_permission(m)));
        }
    }
    return out;
}

struct xa_error *
xa_impl_role_get_permissions_name_label(struct xa_call *call, const char *self,
                                        struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    unsigned bit = role_bit(t, self);
    xa_db_end(t);
    *ret = permissions_of(bit);
    return NULL;
}

struct xa_error *
xa_impl_role_get_permissions(struct xa_call *call, const char *self,
                             struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(self);
    /* Permissions are not rows here, so there are no refs to list. */
    *ret = xa_array();
    return NULL;
}

struct roles_ctx {
    struct xa_txn *t;
    unsigned mask;
    struct xa_value *out;
};

static bool
add_if_holds(const char *ref, void *ctx)
{
    struct roles_ctx *c = ctx;
    if (role_bit(c->t, ref) & c->mask) {
        xa_array_append(c->out, xa_string(ref));
    }
    return true;
}

struct xa_error *
xa_impl_role_get_by_permission_name_label(struct xa_call *call,
                                          const char *label,
                                          struct xa_value **ret)
{
    XA_UNUSED(call);
    unsigned mask = 0;
    for (size_t i = 0; i < xa_schema_n_messages; i++) {
        const struct xa_message_desc *m = &xa_schema_messages[i];
        if (strcasecmp(m->wire, label) == 0) {
            mask = m->roles;
            break;
        }
    }
    struct roles_ctx c = {xa_db_begin_read(), mask, xa_array()};
    if (mask) {
        xa_db_foreach(c.t, &xa_cls_role, add_if_holds, &c);
    }
    xa_db_end(c.t);
    *ret = c.out;
    return NULL;
}

struct xa_error *
xa_impl_role_get_by_permission(struct xa_call *call, const char *permission,
                               struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(permission);
    /* No role is a permission of another here (see get_permissions). */
    *ret = xa_array();
    return NULL;
}

static int
roles_field(void)
{
    return xa_schema_field_index(&xa_cls_subject, "roles");
}

/* Adds or removes one role of a subject. */
static struct xa_error *
change_roles(const char *subject, const char *role, bool add)
{
    struct xa_txn *t = xa_db_begin_write();
    if (!role_bit(t, role)) {
        xa_db_abort(t);
        return xa_error_new("ROLE_NOT_FOUND", 0);
    }
    const struct xa_value *cur =
        xa_db_peek_field(t, &xa_cls_subject, subject, roles_field());
    if (!cur) {
        xa_db_abort(t);
        return xa_error_handle_invalid("subject", subject);
    }
    struct xa_value *next = xa_array();
    bool present = false;
    for (size_t i = 0; i < cur->u.arr.n; i++) {
        if (strcmp(cur->u.arr.items[i]->u.str.s, role) == 0) {
            present = true;
            if (!add) {
                continue;
            }
        }
        xa_array_append(next, xa_value_ref(cur->u.arr.items[i]));
    }
    if (add && present) {
        xa_value_unref(next);
        xa_db_abort(t);
        return xa_error_new("ROLE_ALREADY_EXISTS", 0);
    }
    if (!add && !present) {
        xa_value_unref(next);
        xa_db_abort(t);
        return xa_error_new("ROLE_NOT_FOUND", 0);
    }
    if (add) {
        xa_array_append(next, xa_string(role));
    }
    struct xa_error *err =
        xa_db_set_field(t, &xa_cls_subject, subject, roles_field(), next);
    if (err) {
        xa_db_abort(t);
        return err;
    }
    return xa_db_commit(t);
}

struct xa_error *
xa_impl_subject_add_to_roles(struct xa_call *call, const char *self,
                             const char *role)
{
    XA_UNUSED(call);
    return change_roles(self, role, true);
}

struct xa_error *
xa_impl_subject_remove_from_roles(struct xa_call *call, const char *self,
                                  const char *role)
{
    XA_UNUSED(call);
    return change_roles(self, role, false);
}

struct xa_error *
xa_impl_subject_get_permissions_name_label(struct xa_call *call,
                                           const char *self,
                                           struct xa_value **ret)
{
    XA_UNUSED(call);
    struct xa_txn *t = xa_db_begin_read();
    const struct xa_value *roles =
        xa_db_peek_field(t, &xa_cls_subject, self, roles_field());
    unsigned mask = 0;
    for (size_t i = 0; roles && i < roles->u.arr.n; i++) {
        mask |= role_bit(t, roles->u.arr.items[i]->u.str.s);
    }
    xa_db_end(t);
    *ret = permissions_of(mask);
    return NULL;
}
