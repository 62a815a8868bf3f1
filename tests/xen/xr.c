/* xr.c - a one-shot XML-RPC client for the in-dom0 Xen test.
 *
 *   xr [-a ADDR] [-p PORT] login USER PASSWORD    prints a session ref
 *   xr [-a ADDR] [-p PORT] METHOD ARG...          prints the Value
 *
 * Built statically by build-dom0.sh: in a PV dom0 under nested TCG every
 * exec of a dynamically linked program pays for relocating its libraries
 * (xe, with libcurl and GnuTLS, takes over 3 s a call there), and the
 * test makes dozens of calls.  Arguments "true" and "false" are sent as
 * booleans, everything else as strings (XenAPI sends int64 as strings).
 * A string Value prints as is, an array one item per line; a failure
 * prints the ErrorDescription on stderr and exits 1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Appends 's' to 'b' (of size 'cap' at 'len') with XML's three escapes. */
static size_t
put_escaped(char *b, size_t cap, size_t len, const char *s)
{
    for (; *s && len + 6 < cap; s++) {
        const char *e = *s == '&'   ? "&amp;"
                        : *s == '<' ? "&lt;"
                        : *s == '>' ? "&gt;"
                                    : NULL;
        if (e) {
            len += (size_t)snprintf(b + len, cap - len, "%s", e);
        } else {
            b[len++] = *s;
        }
    }
    b[len] = '\0';
    return len;
}

static char *
call(const char *addr, int port, const char *method, int argc, char **argv)
{
    static char body[65536];
    size_t n = (size_t)snprintf(body, sizeof body,
                                "<?xml version=\"1.0\"?><methodCall>"
                                "<methodName>%s</methodName><params>",
                                method);
    for (int i = 0; i < argc; i++) {
        bool b = strcmp(argv[i], "true") == 0 || strcmp(argv[i], "false") == 0;
        if (b) {
            n += (size_t)snprintf(body + n, sizeof body - n,
                                  "<param><value><boolean>%d</boolean>"
                                  "</value></param>",
                                  argv[i][0] == 't');
        } else {
            n += (size_t)snprintf(body + n, sizeof body - n,
                                  "<param><value><string>");
            n = put_escaped(body, sizeof body, n, argv[i]);
            n += (size_t)snprintf(body + n, sizeof body - n,
                                  "</string></value></param>");
        }
    }
    n += (size_t)snprintf(body + n, sizeof body - n, "</params></methodCall>");

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    if (fd < 0 || inet_pton(AF_INET, addr, &sa.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("xr: connect");
        exit(2);
    }
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: text/xml"
                      "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                      addr, n);
    if (write(fd, head, (size_t)hn) != hn || write(fd, body, n) != (ssize_t)n) {
        perror("xr: write");
        exit(2);
    }
    size_t cap = 1 << 16, len = 0;
    char *r = malloc(cap);
    ssize_t got;
    while (r && (got = read(fd, r + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (len + 1 == cap) {
            cap *= 2;
            char *bigger = realloc(r, cap);
            if (!bigger) {
                free(r);
            }
            r = bigger;
        }
    }
    close(fd);
    if (!r) {
        exit(2);
    }
    r[len] = '\0';
    return r;
}

/* The text of the <value> that starts at or after 'p', tags removed,
 * items of an array separated by 'sep'. */
static void
print_value(const char *p, FILE *out, const char *sep)
{
    const char *v = strstr(p, "<value>");
    if (!v) {
        return;
    }
    v += 7;
    bool array = strncmp(v, "<array>", 7) == 0;
    const char *stop = array ? strstr(v, "</array>") : strstr(v, "</value>");
    if (!stop) {
        return;
    }
    bool first = true;
    const char *q = v;
    while (q < stop) {
        const char *item = q;
        const char *item_end = stop;
        if (array) {
            item = strstr(q, "<value>");
            if (!item || item >= stop) {
                break;
            }
            item += 7;
            item_end = strstr(item, "</value>");
            if (!item_end) {
                break;
            }
        }
        if (!first) {
            fputs(sep, out);
        }
        first = false;
        bool in_tag = false;
        for (const char *c = item; c < item_end; c++) {
            if (*c == '<') {
                in_tag = true;
            } else if (*c == '>') {
                in_tag = false;
            } else if (!in_tag) {
                if (strncmp(c, "&amp;", 5) == 0) {
                    fputc('&', out), c += 4;
                } else if (strncmp(c, "&lt;", 4) == 0) {
                    fputc('<', out), c += 3;
                } else if (strncmp(c, "&gt;", 4) == 0) {
                    fputc('>', out), c += 3;
                } else {
                    fputc(*c, out);
                }
            }
        }
        if (!array) {
            break;
        }
        q = item_end + 8;
    }
    fputc('\n', out);
}

int
main(int argc, char **argv)
{
    const char *addr = "127.0.0.1";
    int port = 80, i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
        if (strcmp(argv[i], "-a") == 0) {
            addr = argv[i + 1];
        } else if (strcmp(argv[i], "-p") == 0) {
            port = atoi(argv[i + 1]);
        }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: xr [-a ADDR] [-p PORT] login USER PASSWORD\n"
                        "       xr [-a ADDR] [-p PORT] METHOD ARG...\n");
        return 2;
    }
    const char *method = argv[i];
    if (strcmp(method, "login") == 0) {
        method = "session.login_with_password";
    }
    char *r = call(addr, port, method, argc - i - 1, argv + i + 1);
    const char *status = strstr(r, "<name>Status</name>");
    if (status && strstr(status, "Success")) {
        const char *v = strstr(r, "<name>Value</name>");
        if (v) {
            print_value(v, stdout, "\n");
        }
        free(r);
        return 0;
    }
    const char *e = strstr(r, "<name>ErrorDescription</name>");
    if (e) {
        print_value(e, stderr, " ");
    } else {
        fprintf(stderr, "xr: unexpected answer: %.300s\n", r);
    }
    free(r);
    return 1;
}
