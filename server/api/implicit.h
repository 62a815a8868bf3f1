/* implicit.h - one generic implementation for every implicit message
 * (get_record, get_<field>, set_<field>, add_to_<map>, get_all_records,
 * create, destroy, ...), driven by the message's descriptor. */
#ifndef XA_IMPLICIT_H
#define XA_IMPLICIT_H

#include "schema.h"

struct xa_error *xa_implicit_call(struct xa_call *call,
                                  struct xa_value *const *args,
                                  struct xa_value **ret);

/* Replaces the generic implementation of one implicit message (e.g.
 * "VM.destroy", which must also remove the VM's devices).  Call at
 * start-up, before serving. */
void xa_implicit_override(const char *wire, xa_thunk fn);

/* The generic bodies, callable from overrides that add checks around
 * them.  'ret' as for any implementation. */
struct xa_error *xa_implicit_generic(struct xa_call *call,
                                     struct xa_value *const *args,
                                     struct xa_value **ret);

#endif
