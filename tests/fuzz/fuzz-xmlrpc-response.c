/* fuzz-xmlrpc-response.c - the client's XML-RPC response decoder
 * (xa_xmlrpc_parse_response): what xe and the C client read from a
 * server they may not trust. */
#include <stdlib.h>

#include "fuzz.h"
#include "rpc/xmlrpc.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct xa_value *v = NULL;
    struct xa_error *e = xa_xmlrpc_parse_response((const char *)data, size, &v);
    if (e) {
        if (v) {
            abort(); /* the contract: no value on failure */
        }
        xa_error_free(e);
        return 0;
    }
    struct xa_buf out = {0};
    xa_xmlrpc_write_value(&out, v);
    xa_buf_free(&out);
    xa_value_unref(v);
    return 0;
}
