/* api.c - see api.h. */
#include "api/api.h"

#include "api/vm.h"
#include "api/vm_migrate.h"

void
xa_api_init(void)
{
    /* Class modules add their registration calls here as they land. */
    xa_vm_startup();
    xa_console_http_init();
    xa_mig_stream_init();
}
