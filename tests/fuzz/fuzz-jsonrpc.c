/* fuzz-jsonrpc.c - the server's JSON-RPC request decoder
 * (xa_jsonrpc_parse_call).  A parsed request is answered with both
 * versions' writers, echoing its id and params. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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
        /* the contract: no method or params on failure; the id and version
         * only when the request itself was well formed */
        bool parse = strcmp(e->code, "JSONRPC_PARSE_ERROR") == 0;
        if (method || params || (parse && (id || version != 0)) ||
            (!parse && (!id || (version != 1 && version != 2)))) {
            abort();
        }
        xa_value_unref(id);
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
