/* vm_startup.c - start-up of the VM, device and minimal-storage modules:
 * picks the hypervisor backend, registers the overrides of implicit
 * messages, makes sure a local SR exists and reconciles the database with
 * the running domains.  Called from xa_api_init(), after bootstrap. */
#include <stdlib.h>
#include <string.h>

#include "api/vm.h"
#include "hypervisor/hv.h"
#include "log.h"
#include "self.h"

/* The backend bootstrap recorded for this host: software_version:xen
 * carries it as a suffix ("4.17.0-sim", "4.17.0-kvm"); a bare version is
 * the real Xen. */
static char *
configured_hypervisor(void)
{
    struct xa_txn *t = xa_db_begin_read();
    const char *v =
        xa_api_map_get(t, &xa_cls_host, xa_self_host(),
                       XA_F(xa_cls_host, "software_version"), "xen");
    const char *dash = v ? strrchr(v, '-') : NULL;
    char *name = xa_strdup(dash ? dash + 1 : v ? "xen" : "sim");
    xa_db_end(t);
    return name;
}

void
xa_vm_startup(void)
{
    xa_vm_lifecycle_init();
    xa_vm_copy_init();
    xa_vm_config_init();
    xa_vbd_init();
    xa_vif_init();
    xa_console_init();
    xa_sr_minimal_init();
    if (!xa_hv_name()) {
        char *name = configured_hypervisor();
        struct xa_error *err = xa_hv_select(name);
        if (err) {
            /* Power operations will answer NOT_IMPLEMENTED. */
            xa_log_err("hv", "no hypervisor driver '%s': %s", name, err->code);
            xa_error_free(err);
        }
        free(name);
    }
    struct xa_error *err = xa_sr_ensure_local();
    if (err) {
        xa_log_err("storage", "cannot create the local SR: %s", err->code);
        xa_error_free(err);
    }
    err = xa_hv_reconcile();
    if (err) {
        xa_log_err("hv", "reconciliation failed: %s", err->code);
        xa_error_free(err);
    }
}
