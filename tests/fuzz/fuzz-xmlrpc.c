/* fuzz-xmlrpc.c - the server's XML-RPC request decoder
 * (xa_xmlrpc_parse_call).  Whatever parses is written back out with
 * both codecs' writers, so arbitrary value trees reach them too. */
#include <stdlib.h>

#include "fuzz.h"
#include "rpc/jsonrpc.h"
#include "rpc/xmlrpc.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *method = NULL;
    struct xa_value *params = NULL;
    struct xa_error *e =
        xa_xmlrpc_parse_call((const char *)data, size, &method, &params);
    if (e) {
        if (method || params) {
            abort(); /* the contract: outputs are NULL on failure */
        }
        xa_error_free(e);
        return 0;
    }
    struct xa_buf out = {0};
    xa_xmlrpc_write_call(&out, method, params);
    xa_xmlrpc_write_success(&out, params);
    xa_jsonrpc_write_value(&out, params);
    xa_buf_free(&out);
    free(method);
    xa_value_unref(params);
    return 0;
}
