/* message.h - raising XenAPI messages (the message class) from inside
 * xapid: the notifications clients list with message.get_all_records
 * and follow as "message" events (HA_HOST_FAILED, ...). */
#ifndef XA_API_MESSAGE_H
#define XA_API_MESSAGE_H

#include <stdint.h>

#include "error.h"

/* Records a message about the object 'obj_uuid' of class 'cls' (an
 * "enum cls" value: "VM", "Host", "SR", "Pool", ...) with xapi's
 * 'priority' (1 most urgent .. 5 informational).  '*ref' (may be NULL)
 * receives the new message's ref, which the caller frees.  Opens its
 * own write transaction: not to be called with one held. */
struct xa_error *xa_message_emit(const char *name, int64_t priority,
                                 const char *cls, const char *obj_uuid,
                                 const char *body, char **ref) XA_WARN_UNUSED;

#endif
