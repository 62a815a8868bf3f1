/* rbac.c - see rbac.h. */
#include "rbac.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

char *
xa_rbac_permission(const struct xa_message_desc *m)
{
    char *p = xa_strdup(m->wire);
    for (char *c = p; *c; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    return p;
}

unsigned
xa_rbac_role_bit(const char *name)
{
    for (int i = 0; i < XA_ROLE__MAX; i++) {
        if (strcmp(xa_role_names[i], name) == 0) {
            return 1u << i;
        }
    }
    return 0;
}

struct xa_error *
xa_rbac_check(const struct xa_call *call, const struct xa_message_desc *m)
{
    if (call->is_superuser || (call->roles & m->roles)) {
        return NULL;
    }
    struct xa_buf b = {0};
    xa_buf_puts(&b, "No permission in user session. (Roles with this "
                    "permission: ");
    bool first = true;
    for (int i = 0; i < XA_ROLE__MAX; i++) {
        if (m->roles & (1u << i) && i != XA_ROLE_CLIENT_CERT) {
            xa_buf_printf(&b, "%s%s", first ? "" : ", ", xa_role_names[i]);
            first = false;
        }
    }
    xa_buf_puts(&b, ")");
    char *perm = xa_rbac_permission(m);
    struct xa_error *e =
        xa_error_new("RBAC_PERMISSION_DENIED", 2, perm, b.data);
    free(perm);
    xa_buf_free(&b);
    return e;
}
