/* ceiling: the fastest answer libmicrohttpd can give, for comparison.
 *
 * A minimal server with the same libmicrohttpd setup as xapid's plain
 * HTTP listener (internal polling thread, epoll, a thread pool of one
 * thread per CPU, suspend/resume allowed) that reads each POST body and
 * answers it with a fixed success reply: an XML-RPC struct like xapid's
 * for any path, or a JSON-RPC result for paths ending in "jsonrpc".  What
 * xapid achieves against the same load, divided by what this achieves,
 * shows how much of the HTTP layer's limit xapid leaves unused.
 *
 * Usage: ceiling [--port N] [--threads N] [--body-xml FILE]
 *                [--body-json FILE]
 * Prints "port N" on stdout once it listens; stops on SIGTERM or SIGINT.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BODY (64u * 1024 * 1024)

static const char default_xml[] =
    "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct>"
    "<member><name>Status</name><value>Success</value></member>"
    "<member><name>Value</name><value>"
    "OpaqueRef:86c410f6-dd41-4942-b14a-21f9621bee87</value></member>"
    "</struct></value></param></params></methodResponse>";

static const char default_json[] =
    "{\"jsonrpc\":\"2.0\",\"result\":"
    "[\"OpaqueRef:86c410f6-dd41-4942-b14a-21f9621bee87\"],\"id\":1}";

static char *xml_body = (char *)default_xml;
static size_t xml_len = sizeof(default_xml) - 1;
static char *json_body = (char *)default_json;
static size_t json_len = sizeof(default_json) - 1;

/* Per request: how many body bytes came (they are read, not kept, as the
 * point is the HTTP layer's cost, not ours). */
struct req {
    size_t got;
};

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *c, const char *url,
          const char *method, const char *version, const char *upload_data,
          size_t *upload_data_size, void **con_cls)
{
    struct req *r = *con_cls;
    struct MHD_Response *resp;
    enum MHD_Result ret;
    size_t ulen = strlen(url);
    bool json = ulen >= 7 && strcmp(url + ulen - 7, "jsonrpc") == 0;

    (void)cls;
    (void)method;
    (void)version;
    if (!r) {
        /* xapid allocates a request record here too; keep it comparable. */
        r = calloc(1, sizeof(*r));
        if (!r) {
            return MHD_NO;
        }
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size) {
        (void)upload_data;
        r->got += *upload_data_size;
        *upload_data_size = 0;
        return r->got > MAX_BODY ? MHD_NO : MHD_YES;
    }
    /* A fresh copy per response, freed by MHD, as xapid does with the
     * body its codec produced. */
    {
        size_t len = json ? json_len : xml_len;
        char *body = malloc(len);
        if (!body) {
            return MHD_NO;
        }
        memcpy(body, json ? json_body : xml_body, len);
        resp =
            MHD_create_response_from_buffer_with_free_callback(len, body, free);
    }
    if (!resp) {
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            json ? "application/json" : "text/xml");
    ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    free(*con_cls);
    *con_cls = NULL;
}

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *b;
    long n;

    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        perror(path);
        exit(2);
    }
    b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

int
main(int argc, char **argv)
{
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    unsigned port = 0;
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem opts[8];
    struct sockaddr_in sin;
    size_t n = 0;
    sigset_t set;
    int sig;

    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "ceiling: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--port") == 0) {
            port = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--threads") == 0) {
            threads = strtol(v, NULL, 10);
        } else if (strcmp(a, "--body-xml") == 0) {
            xml_body = slurp(v, &xml_len);
        } else if (strcmp(a, "--body-json") == 0) {
            json_body = slurp(v, &json_len);
        } else {
            fprintf(stderr, "ceiling: unknown option %s\n", a);
            return 2;
        }
    }
    if (threads < 1) {
        threads = sysconf(_SC_NPROCESSORS_ONLN);
    }

    /* Block the stop signals before MHD's threads start, so they inherit
     * the mask and only sigwait() below sees them. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The same options xapid's plain listener gives MHD (server/http/http.c
     * listener_start), minus its logger and connection limit. */
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
#define OPT(o, v, p) \
    (opts[n++] = (struct MHD_OptionItem){(o), (intptr_t)(v), (void *)(p)})
    OPT(MHD_OPTION_SOCK_ADDR, 0, &sin);
    OPT(MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL);
    OPT(MHD_OPTION_CONNECTION_TIMEOUT, 300, NULL);
    OPT(MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096, NULL);
    if (threads > 1) {
        OPT(MHD_OPTION_THREAD_POOL_SIZE, threads, NULL);
    }
    OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
    d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_access, NULL,
                         MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "ceiling: cannot start on port %u\n", port);
        return 1;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("port %u\n", info ? (unsigned)info->port : port);
    fflush(stdout);
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}
