/* fuzz-jsonrpc.c - the server's JSON-RPC request decoder
 * (xa_jsonrpc_parse_call).  A parsed request is answered with both
 * versions' writers, echoing its id and params. */
#include <stdlib.h>

#include "fuzz.h"
#include "rpc/jsonrpc.h"
#include "rpc/xmlrpc.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *method = NULL;
    struct xa_value *params = NULL, *id = NULL;
    int version = -1;
    struct xa_error *e = xa_jsonrpc_parse_call((const char *)data, size,
                                               &method, &params, &id, &version);
    if (e) {
        if (method || params || id || version != 0) {
            abort(); /* the contract: outputs are NULL and 0 on failure */
        }
        struct xa_buf out = {0};
        xa_jsonrpc_write_failure(&out, 1, NULL, e);
        xa_jsonrpc_write_failure(&out, 2, NULL, e);
        xa_buf_free(&out);
        xa_error_free(e);
        return 0;
    }
    if (version != 1 && version != 2) {
        abort();
    }
    struct xa_buf out = {0};
    xa_jsonrpc_write_success(&out, version, id, params);
    xa_xmlrpc_write_value(&out, params);
    xa_buf_free(&out);
    free(method);
    xa_value_unref(params);
    xa_value_unref(id);
    return 0;
}
