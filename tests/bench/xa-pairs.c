/* xa-pairs: VM.create + VM.destroy pairs per second against xapid, on one
 * kept-alive HTTP/1.1 connection, one call at a time: the xapid side of
 * libvirt-peer's define + undefine pairs.
 *
 *   xa-pairs PORT SESSION CREATE_BODY_FILE SECONDS
 *
 * CREATE_BODY_FILE holds a VM.create XML-RPC call; the reference in each
 * answer is destroyed with VM.destroy straight away.  Prints one JSON
 * object; exits 1 at the first answer that is not a success.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MARKER "<name>Status</name><value>Success</value>"

struct buf {
    char *p;
    size_t len;
    size_t cap;
};

static void
die(const char *what)
{
    fprintf(stderr, "xa-pairs: %s\n", what);
    exit(1);
}

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
buf_reserve(struct buf *b, size_t more)
{
    if (b->len + more + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;

        while (b->len + more + 1 > cap) {
            cap *= 2;
        }
        b->p = realloc(b->p, cap);
        if (b->p == NULL) {
            die("out of memory");
        }
        b->cap = cap;
    }
}

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct buf b = {0};
    size_t n;

    if (f == NULL) {
        die("cannot open the body file");
    }
    do {
        buf_reserve(&b, 65536);
        n = fread(b.p + b.len, 1, 65536, f);
        b.len += n;
    } while (n > 0);
    fclose(f);
    b.p[b.len] = '\0';
    *len = b.len;
    return b.p;
}

static int
connect_to(int port)
{
    struct sockaddr_in sa = {0};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        die("cannot connect");
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void
send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w <= 0) {
            die("send failed");
        }
        p += w;
        n -= (size_t)w;
    }
}

static void
post(int fd, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: text/xml\r\nContent-Length: %zu\r\n\r\n",
                     len);

    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

static void
recv_more(int fd, struct buf *b)
{
    ssize_t r;

    buf_reserve(b, 65536);
    r = recv(fd, b->p + b->len, 65536, 0);
    if (r <= 0) {
        die("connection closed");
    }
    b->len += (size_t)r;
    b->p[b->len] = '\0';
}

/* Reads one response into 'b' (headers, then the body from b->p + *body);
 * handles Content-Length and chunked framing.  Returns the body length:
 * for chunked answers the chunks are joined in place. */
static size_t
read_response(int fd, struct buf *b, size_t *body)
{
    char *end, *cl, *te;
    size_t head, want;

    b->len = 0;
    for (;;) {
        if (b->len > 0 && (end = strstr(b->p, "\r\n\r\n")) != NULL) {
            break;
        }
        recv_more(fd, b);
    }
    head = (size_t)(end - b->p) + 4;
    *body = head;
    if (strncmp(b->p, "HTTP/1.1 200", 12) != 0) {
        die("not an HTTP 200 answer");
    }
    cl = strcasestr(b->p, "\r\nContent-Length:");
    te = strcasestr(b->p, "\r\nTransfer-Encoding: chunked");
    if (cl != NULL && cl < end) {
        want = strtoul(cl + 17, NULL, 10);
        while (b->len < head + want) {
            recv_more(fd, b);
        }
        return want;
    }
    if (te == NULL || te > end) {
        die("neither Content-Length nor chunked");
    }
    {
        size_t in = head, out = head;

        for (;;) {
            char *nl;
            size_t n;

            while ((nl = strstr(b->p + in, "\r\n")) == NULL) {
                recv_more(fd, b);
            }
            n = strtoul(b->p + in, NULL, 16);
            in = (size_t)(nl - b->p) + 2;
            while (b->len < in + n + 2) {
                recv_more(fd, b);
            }
            if (n == 0) {
                break;
            }
            memmove(b->p + out, b->p + in, n);
            out += n;
            in += n + 2;
        }
        b->p[out] = '\0';
        return out - head;
    }
}

static void
expect_success(const struct buf *b, size_t body)
{
    if (strstr(b->p + body, MARKER) == NULL) {
        fprintf(stderr, "xa-pairs: failed call: %.300s\n", b->p + body);
        exit(1);
    }
}

int
main(int argc, char **argv)
{
    struct buf b = {0};
    char *create, *destroy = NULL;
    size_t create_len, body;
    double t0, end, secs;
    long pairs = 0;
    int fd;

    if (argc != 5) {
        fputs("usage: xa-pairs PORT SESSION CREATE_BODY_FILE SECONDS\n",
              stderr);
        return 2;
    }
    create = read_file(argv[3], &create_len);
    secs = atof(argv[4]);
    fd = connect_to(atoi(argv[1]));
    t0 = now();
    end = t0 + secs;
    while (now() < end) {
        char *ref, *stop;
        int n;

        post(fd, create, create_len);
        read_response(fd, &b, &body);
        expect_success(&b, body);
        ref = strstr(b.p + body, "OpaqueRef:");
        stop = ref ? strchr(ref, '<') : NULL;
        if (stop == NULL) {
            die("no reference in VM.create's answer");
        }
        free(destroy);
        n = asprintf(&destroy,
                     "<?xml version='1.0'?><methodCall>"
                     "<methodName>VM.destroy</methodName><params>"
                     "<param><value><string>%s</string></value></param>"
                     "<param><value><string>%.*s</string></value></param>"
                     "</params></methodCall>",
                     argv[2], (int)(stop - ref), ref);
        if (n < 0) {
            die("out of memory");
        }
        post(fd, destroy, (size_t)n);
        read_response(fd, &b, &body);
        expect_success(&b, body);
        pairs++;
    }
    printf("{\"pairs\": %ld, \"pairs_per_s\": %.1f}\n", pairs,
           (double)pairs / (now() - t0));
    close(fd);
    free(destroy);
    free(create);
    free(b.p);
    return 0;
}
