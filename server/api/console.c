/* console.c - console rows: made when a VM's domain starts, removed when
 * it stops, as xapi does.  A VM booted as HVM gets a graphical (rfb)
 * console; a PV guest gets its text console (vt100) and an rfb one.  The
 * location is the URL clients open on this host's console handler; the
 * driver's own endpoint stays internal (other_config is for users). */
#include <stdlib.h>
#include <string.h>

#include "api/implicit.h"
#include "api/vm.h"
#include "self.h"

static struct xa_error *
make_console(struct xa_txn *t, const char *vm, const char *protocol,
             const char *address)
{
    char uuid[37];
    xa_uuid_generate(uuid);
    char *ref = xa_ref_new();
    struct xa_value *rec = xa_struct();
    xa_struct_set(rec, "uuid", xa_string(uuid));
    xa_struct_set(rec, "protocol", xa_string(protocol));
    xa_struct_set(rec, "location",
                  xa_string_take(xa_asprintf("https://%s/console?uuid=%s",
                                             address, uuid)));
    xa_struct_set(rec, "VM", xa_string(vm));
    xa_struct_set(rec, "other_config", xa_struct());
    struct xa_error *err = xa_db_create(t, &xa_cls_console, ref, rec);
    free(ref);
    return err;
}

struct xa_error *
xa_console_create_for(struct xa_txn *t, const char *vm)
{
    struct xa_error *err = xa_console_destroy_for(t, vm);
    if (err) {
        return err;
    }
    char *address = xa_strdup(xa_api_str(t, &xa_cls_host, xa_self_host(),
                                         XA_F(xa_cls_host, "address")));
    bool hvm =
        *xa_api_str(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "HVM_boot_policy")) != 0;
    if (!hvm) {
        err = make_console(t, vm, "vt100", address);
    }
    if (!err) {
        err = make_console(t, vm, "rfb", address);
    }
    free(address);
    return err;
}

struct xa_error *
xa_console_destroy_for(struct xa_txn *t, const char *vm)
{
    struct xa_value *cs =
        xa_db_get_field(t, &xa_cls_VM, vm, XA_F(xa_cls_VM, "consoles"));
    struct xa_error *err = NULL;
    for (size_t i = 0; cs && i < cs->u.arr.n && !err; i++) {
        err = xa_db_destroy(t, &xa_cls_console, cs->u.arr.items[i]->u.str.s);
    }
    xa_value_unref(cs);
    return err;
}

/* Consoles belong to running domains; clients cannot make their own. */
static struct xa_error *
console_create(struct xa_call *call, struct xa_value *const *args,
               struct xa_value **ret)
{
    XA_UNUSED(call);
    XA_UNUSED(args);
    *ret = NULL;
    return xa_error_not_implemented("console.create");
}

void
xa_console_init(void)
{
    xa_implicit_override("console.create", console_create);
}
