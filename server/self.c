/* self.c - see self.h. */
#include "self.h"

#include <stdlib.h>

#include "util.h"

static char *host_ref;
static char *state_dir;

const char *
xa_self_host(void)
{
    return host_ref ? host_ref : "OpaqueRef:NULL";
}

void
xa_self_set_host(const char *ref)
{
    free(host_ref);
    host_ref = xa_strdup(ref);
}

const char *
xa_self_state_dir(void)
{
    return state_dir ? state_dir : ".";
}

void
xa_self_set_state_dir(const char *dir)
{
    free(state_dir);
    state_dir = xa_strdup(dir);
}
