/* rpc.h - the API endpoints: XML-RPC on every POST path but /jsonrpc,
 * JSON-RPC on /jsonrpc, plus the route table other HTTP handlers
 * (import/export, console) register with. */
#ifndef XA_RPC_H
#define XA_RPC_H

#include "http/http.h"

/* The libmicrohttpd handler for every request (ctx unused). */
void xa_rpc_http_handler(struct xa_http_request *req, void *ctx);

/* Registers a handler for 'method' + exact 'path' (not the RPC ones). */
void xa_rpc_add_route(const char *method, const char *path, xa_http_handler fn,
                      void *ctx);

/* Drops this thread's memo of the last encoded shared result (see
 * rpc.c); threads that answer many calls with one value call it when a
 * batch is done. */
void xa_rpc_forget_memo(void);

#endif
