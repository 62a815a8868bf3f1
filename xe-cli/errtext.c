/* errtext.c - the texts xapi's xe prints for common API errors.
 *
 * xapi's CLI prints an error it knows from its datamodel as the error's
 * description on one line, then one "name: value" line per parameter;
 * an error it does not know as "Error code:" / "Error parameters:"
 * lines.  Scripts and people match on these texts, so the ones below
 * reproduce xapi's wording exactly (wire-visible output, like the error
 * codes themselves); parameter names are those of api-schema/errors.json.
 * Errors not listed here fall back to the code-and-parameters form. */
#include <stddef.h>
#include <string.h>

#include "xe.h"

#define P(...) ((const char *const[]){__VA_ARGS__, NULL})

static const struct xe_errtext table[] = {
    {"CANNOT_CONTACT_HOST",
     "Cannot forward messages because the server cannot be contacted. The "
     "server may be switched off or there may be network connectivity "
     "problems.",
     P("host")},
    {"DEFAULT_SR_NOT_FOUND",
     "The default SR reference does not point to a valid SR", P("sr")},
    {"EVENTS_LOST",
     "Some events have been lost from the queue and cannot be retrieved.",
     (const char *const[]){NULL}},
    {"HANDLE_INVALID",
     "You gave an invalid object reference.  The object may have recently "
     "been deleted.  The class parameter gives the type of reference given, "
     "and the handle parameter echoes the bad value given.",
     P("class", "handle")},
    {"HOST_IS_SLAVE",
     "You cannot make regular API calls directly on a supporter. Please pass "
     "API calls via the coordinator host.",
     P("Master IP address")},
    {"HOST_NOT_ENOUGH_FREE_MEMORY",
     "Not enough server memory is available to perform this operation.",
     P("needed", "available")},
    {"INTERNAL_ERROR",
     "The server failed to handle your request, due to an internal error. "
     "The given message may give details useful for debugging the problem.",
     P("message")},
    {"INVALID_VALUE", "The value given is invalid", P("field", "value")},
    {"LICENCE_RESTRICTION",
     "This operation is not allowed because your license lacks a needed "
     "feature. Please contact your support representative.",
     P("feature")},
    {"MAP_DUPLICATE_KEY",
     "You tried to add a key-value pair to a map, but that key is already "
     "there.",
     P("type", "param_name", "uuid", "key")},
    {"MEMORY_CONSTRAINT_VIOLATION",
     "The dynamic memory range does not satisfy the following constraint.",
     P("constraint")},
    {"MESSAGE_METHOD_UNKNOWN",
     "You tried to call a method that does not exist.  The method name that "
     "you used is echoed.",
     P("method")},
    {"MESSAGE_PARAMETER_COUNT_MISMATCH",
     "You tried to call a method with the incorrect number of parameters.  "
     "The fully-qualified method name that you used, and the number of "
     "received and expected parameters are returned.",
     P("method", "expected", "received")},
    {"NO_HOSTS_AVAILABLE",
     "There were no servers available to complete the specified operation.",
     (const char *const[]){NULL}},
    {"NOT_IMPLEMENTED", "The function is not implemented", P("function")},
    {"OPERATION_NOT_ALLOWED",
     "You attempted an operation that was not allowed.", P("reason")},
    {"OTHER_OPERATION_IN_PROGRESS",
     "Another operation involving the object is currently in progress",
     P("class", "object")},
    {"SR_HAS_NO_PBDS", "The SR has no attached PBDs", P("sr")},
    {"SR_UNKNOWN_DRIVER",
     "The SR could not be connected because the driver was not recognised.",
     P("driver")},
    {"UUID_INVALID", "The uuid you supplied was invalid.", P("type", "uuid")},
    {"VALUE_NOT_SUPPORTED",
     "You attempted to set a value that is not supported by this "
     "implementation. The fully-qualified field name and the value that you "
     "tried to set are returned. Also returned is a developer-only "
     "diagnostic reason.",
     P("field", "value", "reason")},
    {"VBD_IS_EMPTY",
     "Operation could not be performed because the drive is "
     "empty",
     P("vbd")},
    {"VBD_NOT_EMPTY",
     "Operation could not be performed because the drive is not empty",
     P("vbd")},
    {"VBD_NOT_REMOVABLE_MEDIA",
     "Media could not be ejected because it is not removable", P("vbd")},
    {"VDI_IN_USE",
     "This operation cannot be performed because this VDI is in use by some "
     "other operation",
     P("vdi", "operation")},
    {"VM_BAD_POWER_STATE",
     "You attempted an operation on a VM that was not in an appropriate "
     "power state at the time; for example, you attempted to start a VM that "
     "was already running. The parameters returned are the VM's handle, and "
     "the expected and actual VM state at the time of the call.",
     P("vm", "expected", "actual")},
    {"VM_HVM_REQUIRED", "HVM is required for this operation", P("vm")},
    {"VM_IS_PART_OF_AN_APPLIANCE",
     "This operation is not allowed as the VM is part of an appliance.",
     P("vm", "appliance")},
    {"VM_IS_TEMPLATE", "The operation attempted is not valid for a template VM",
     P("vm")},
    {"VM_NO_EMPTY_CD_VBD", "The VM has no empty CD drive (VBD).", P("vm")},
    {"VM_REQUIRES_SR",
     "You attempted to run a VM on a host which doesn't have access to an SR "
     "needed by the VM. The VM has at least one VBD attached to a VDI in the "
     "SR.",
     P("vm", "sr")},
};

const struct xe_errtext *
xe_errtext_find(const char *code)
{
    for (size_t i = 0; i < XA_ARRAY_SIZE(table); i++) {
        if (strcmp(table[i].code, code) == 0) {
            return &table[i];
        }
    }
    return NULL;
}
