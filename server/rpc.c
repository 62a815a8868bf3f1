/* rpc.c - see rpc.h. */
#include "rpc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "dispatch.h"
#include "log.h"
#include "rpc/jsonrpc.h"
#include "rpc/xmlrpc.h"

enum rpc_proto { RPC_XML, RPC_JSON };

/* The transport's state for one call in flight. */
struct rpc_request {
    struct xa_http_request *req;
    enum rpc_proto proto;
    int json_version;
    struct xa_value *json_id; /* owned */
    bool bare;
};

struct route {
    const char *method;
    char *path;
    xa_http_handler fn;
    void *ctx;
};

static struct route routes[32];
static size_t n_routes;

void
xa_rpc_add_route(const char *method, const char *path, xa_http_handler fn,
                 void *ctx)
{
    if (n_routes == XA_ARRAY_SIZE(routes)) {
        xa_log_err("rpc", "route table full, %s %s not added", method, path);
        return;
    }
    routes[n_routes++] = (struct route){method, xa_strdup(path), fn, ctx};
}

static void
respond_text(struct xa_http_request *req, int status, const char *text)
{
    xa_http_respond(req, status, "text/plain", xa_strdup(text), strlen(text));
}

/* The XML-RPC bytes of the last shared result this thread encoded.  When
 * the event thread answers thousands of event.from waiters with one
 * result value, the body is encoded once and copied for the rest; the
 * memo holds a reference, so the address cannot be reused by another
 * value while it is remembered.  Values are immutable once shared. */
static _Thread_local struct {
    struct xa_value *value;
    char *body;
    size_t len;
} memo;

void
xa_rpc_forget_memo(void)
{
    xa_value_unref(memo.value);
    free(memo.body);
    memo.value = NULL;
    memo.body = NULL;
    memo.len = 0;
}

/* The HTTP library's threads end without telling us, so a thread that
 * memoised something frees it at exit through a key's destructor. */
static pthread_key_t memo_key;
static pthread_once_t memo_key_once = PTHREAD_ONCE_INIT;

static void
memo_at_thread_exit(void *unused)
{
    XA_UNUSED(unused);
    xa_rpc_forget_memo();
}

static void
memo_key_create(void)
{
    pthread_key_create(&memo_key, memo_at_thread_exit);
}

static void
write_xml_success(struct xa_buf *out, struct xa_value *ret)
{
    if (ret && ret == memo.value) {
        xa_buf_append(out, memo.body, memo.len);
        return;
    }
    xa_xmlrpc_write_success(out, ret);
    if (ret && __atomic_load_n(&ret->refs, __ATOMIC_RELAXED) > 1) {
        xa_rpc_forget_memo();
        pthread_once(&memo_key_once, memo_key_create);
        pthread_setspecific(memo_key, &memo); /* non-NULL: run at exit */
        memo.value = xa_value_ref(ret);
        memo.body = xa_strndup(out->data, out->len);
        memo.len = out->len;
    }
}

static void
rpc_finish(struct xa_call *call, struct xa_error *err, struct xa_value *ret)
{
    struct rpc_request *r = call->owner;
    struct xa_buf out = {0};
    if (err && call->msg == NULL && !err->n_params) {
        xa_log_debug("rpc", "%s failed: %s", call->method, err->code);
    }
    if (r->proto == RPC_XML) {
        if (err) {
            xa_xmlrpc_write_failure(&out, err);
        } else if (r->bare) {
            xa_xmlrpc_write_bare(&out, ret);
        } else {
            write_xml_success(&out, ret);
        }
    } else {
        if (err) {
            xa_jsonrpc_write_failure(&out, r->json_version, r->json_id, err);
        } else {
            xa_jsonrpc_write_success(&out, r->json_version, r->json_id, ret);
        }
    }
    size_t len = out.len;
    xa_http_respond(r->req, 200,
                    r->proto == RPC_XML ? "text/xml" : "application/json",
                    xa_buf_steal(&out), len);
    xa_error_free(err);
    xa_value_unref(ret);
    xa_value_unref(r->json_id);
    free(r);
    xa_call_free(call);
}

static void
rpc_defer(struct xa_call *call)
{
    struct rpc_request *r = call->owner;
    xa_http_suspend(r->req);
}

static void
handle_rpc(struct xa_http_request *req, enum rpc_proto proto)
{
    size_t len = 0;
    const char *body = xa_http_body(req, &len);
    char *method = NULL;
    struct xa_value *params = NULL;
    struct xa_value *id = NULL;
    int version = 1;
    struct xa_error *err =
        proto == RPC_XML
            ? xa_xmlrpc_parse_call(body, len, &method, &params)
            : xa_jsonrpc_parse_call(body, len, &method, &params, &id, &version);
    if (err && (strcmp(err->code, "XMLRPC_PARSE_ERROR") == 0 ||
                strcmp(err->code, "JSONRPC_PARSE_ERROR") == 0)) {
        char *msg = xa_asprintf("Malformed request: %s\n",
                                err->n_params ? err->params[0] : "");
        respond_text(req, 400, msg);
        free(msg);
        xa_error_free(err);
        xa_value_unref(id);
        return;
    }
    struct rpc_request *r = xa_calloc(1, sizeof *r);
    r->req = req;
    r->proto = proto;
    r->json_version = version;
    r->json_id = id ? id : xa_nil();
    struct xa_call *call =
        xa_call_new(method ? method : "", xa_http_remote_addr(req));
    const char *task = xa_http_header(req, XA_CALL_TASK_HEADER);
    call->forwarded_task = task && *task ? xa_strdup(task) : NULL;
    call->owner = r;
    call->on_finish = rpc_finish;
    call->on_defer = rpc_defer;
    if (err) {
        rpc_finish(call, err, NULL);
    } else {
        xa_dispatch(call, params, &r->bare);
    }
    free(method);
    xa_value_unref(params);
}

void
xa_rpc_http_handler(struct xa_http_request *req, void *ctx)
{
    XA_UNUSED(ctx);
    const char *method = xa_http_method(req);
    const char *path = xa_http_path(req);
    for (size_t i = 0; i < n_routes; i++) {
        if (strcmp(routes[i].method, method) == 0 &&
            strcmp(routes[i].path, path) == 0) {
            routes[i].fn(req, routes[i].ctx);
            return;
        }
    }
    if (strcmp(method, "OPTIONS") == 0) {
        xa_http_add_header(req, "Access-Control-Allow-Methods",
                           "POST, GET, PUT, OPTIONS");
        xa_http_add_header(req, "Access-Control-Allow-Headers",
                           "Content-Type, Authorization");
        xa_http_respond(req, 200, NULL, NULL, 0);
        return;
    }
    if (strcmp(method, "POST") == 0) {
        bool json = strcmp(path, "/jsonrpc") == 0 || strcmp(path, "/json") == 0;
        handle_rpc(req, json ? RPC_JSON : RPC_XML);
        return;
    }
    if (strcmp(method, "GET") == 0 && strcmp(path, "/") == 0) {
        respond_text(req, 200,
                     "xapid: XenAPI on POST / (XML-RPC) and "
                     "POST /jsonrpc (JSON-RPC)\n");
        return;
    }
    respond_text(req, strcmp(method, "GET") == 0 ? 404 : 405, "Not found\n");
}
