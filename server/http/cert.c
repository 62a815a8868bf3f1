/* cert.c - see cert.h.  Generation uses OpenSSL 3; the result is loaded
 * by libmicrohttpd's GnuTLS, which reads the PKCS#8 "PRIVATE KEY" PEM
 * that PEM_write_PrivateKey() produces for EC keys. */
#include "cert.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "util.h"

#define XA_CERT_MODULE     "cert"
#define XA_CERT_DAYS       3650
#define XA_CERT_SKEW_SECS  (24L * 3600) /* tolerate pool members' clocks */
#define XA_CERT_MAX_SAN_IP 64           /* bound a host with many addresses */

/* The OpenSSL error queue as text, for error details; empties it. */
static char *
ssl_errors(void)
{
    struct xa_buf b = {0};
    unsigned long e;
    char line[256];

    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, line, sizeof(line));
        if (b.len) {
            xa_buf_puts(&b, "; ");
        }
        xa_buf_puts(&b, line);
    }
    if (!b.len) {
        xa_buf_puts(&b, "unknown OpenSSL error");
    }
    return xa_buf_steal(&b);
}

static struct xa_error *
ssl_fail(const char *what)
{
    char *msg = ssl_errors();
    struct xa_error *e = xa_error_internal("%s: %s", what, msg);

    free(msg);
    return e;
}

/* Host names are spliced into an OpenSSL config string, so accept only
 * what a DNS name may hold (and nothing that separates list items). */
static bool
hostname_ok(const char *h)
{
    if (!*h || strlen(h) > 253) {
        return false;
    }
    for (const char *p = h; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
              *p == '_')) {
            return false;
        }
    }
    return true;
}

static void
san_add_ip(struct xa_buf *san, const char *ip, size_t *count)
{
    /* The list is comma separated and every item starts with "IP:", so
     * searching for ",IP:<ip>," in ",<list>," finds exact duplicates. */
    char *hay = xa_asprintf(",%s,", san->data ? san->data : "");
    char *needle = xa_asprintf(",IP:%s,", ip);
    bool dup = strstr(hay, needle) != NULL;

    free(hay);
    free(needle);
    if (dup || *count >= XA_CERT_MAX_SAN_IP) {
        return;
    }
    xa_buf_printf(san, "%sIP:%s", san->len ? "," : "", ip);
    (*count)++;
}

/* "DNS:<host>,DNS:localhost,IP:127.0.0.1,IP:::1,IP:<each address>". */
static char *
build_san(const char *host)
{
    struct xa_buf san = {0};
    struct ifaddrs *ifs = NULL;
    size_t count = 0;

    if (host && !xa_str_eq(host, "localhost")) {
        xa_buf_printf(&san, "DNS:%s,", host);
    }
    xa_buf_puts(&san, "DNS:localhost");
    san_add_ip(&san, "127.0.0.1", &count);
    san_add_ip(&san, "::1", &count);
    if (getifaddrs(&ifs) != 0) {
        xa_log_warn(XA_CERT_MODULE, "getifaddrs: %s", strerror(errno));
        return xa_buf_steal(&san);
    }
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        char text[INET6_ADDRSTRLEN];
        const void *addr;

        if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK)) {
            continue;
        }
        if (i->ifa_addr->sa_family == AF_INET) {
            addr = &((const struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr;
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            addr =
                &((const struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr;
        } else {
            continue;
        }
        if (inet_ntop(i->ifa_addr->sa_family, addr, text, sizeof(text))) {
            san_add_ip(&san, text, &count);
        }
    }
    freeifaddrs(ifs);
    return xa_buf_steal(&san);
}

static struct xa_error *
add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;

    /* Self-signed: the certificate is its own issuer, which is what lets
     * the authority key identifier be derived from it. */
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!ext) {
        return ssl_fail(OBJ_nid2sn(nid));
    }
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? NULL : ssl_fail(OBJ_nid2sn(nid));
}

static struct xa_error *
set_serial(X509 *x)
{
    unsigned char raw[16];
    BIGNUM *bn;
    ASN1_INTEGER *serial;

    /* 127 random bits: unique enough, and positive as RFC 5280 wants. */
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return ssl_fail("RAND_bytes");
    }
    raw[0] &= 0x7f;
    bn = BN_bin2bn(raw, sizeof(raw), NULL);
    serial = bn ? BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) : NULL;
    BN_free(bn);
    return serial ? NULL : ssl_fail("serial number");
}

/* Builds and signs the certificate for 'key'; '*ret' on success. */
static struct xa_error *
make_cert(EVP_PKEY *key, const char *host, X509 **ret)
{
    X509 *x = X509_new();
    X509_NAME *name;
    struct xa_error *err = NULL;
    char *san = NULL;

    *ret = NULL;
    if (!x || !X509_set_version(x, 2 /* v3 */)) {
        err = ssl_fail("X509_new");
        goto out;
    }
    err = set_serial(x);
    if (err) {
        goto out;
    }
    if (!X509_gmtime_adj(X509_getm_notBefore(x), -XA_CERT_SKEW_SECS) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), XA_CERT_DAYS, 0, NULL)) {
        err = ssl_fail("validity");
        goto out;
    }
    name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const unsigned char *)host, -1, -1, 0) ||
        !X509_set_issuer_name(x, name) || !X509_set_pubkey(x, key)) {
        err = ssl_fail("subject");
        goto out;
    }
    san = build_san(host);
    if ((err = add_ext(x, NID_basic_constraints, "critical,CA:FALSE")) ||
        (err = add_ext(x, NID_key_usage, "critical,digitalSignature")) ||
        (err = add_ext(x, NID_ext_key_usage, "serverAuth,clientAuth")) ||
        (err = add_ext(x, NID_subject_key_identifier, "hash")) ||
        (err = add_ext(x, NID_authority_key_identifier, "keyid:always")) ||
        (err = add_ext(x, NID_subject_alt_name, san))) {
        goto out;
    }
    if (X509_sign(x, key, EVP_sha256()) <= 0) {
        err = ssl_fail("X509_sign");
        goto out;
    }
    *ret = x;
    x = NULL;
out:
    free(san);
    X509_free(x);
    return err;
}

/* Writes 'path' atomically with 'mode' through a temporary file in the
 * same directory.  Exactly one of 'key' and 'cert' is given. */
static struct xa_error *
write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    char *tmp = xa_asprintf("%s.tmp.XXXXXX", path);
    struct xa_error *err = NULL;
    FILE *f = NULL;
    int fd;
    int ok;

    /* mkstemp creates the file 0600, so the key is never readable by
     * others, not even briefly. */
    fd = mkstemp(tmp);
    if (fd < 0) {
        err = xa_error_internal("cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return err;
    }
    if (fchmod(fd, mode) != 0 || !(f = fdopen(fd, "w"))) {
        err = xa_error_internal("cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        goto fail;
    }
    ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
             : PEM_write_X509(f, cert);
    if (!ok) {
        err = ssl_fail(path);
        fclose(f);
        goto fail;
    }
    /* Data on disk before the rename makes it visible. */
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        err = xa_error_internal("cannot write %s: %s", tmp, strerror(errno));
        fclose(f);
        goto fail;
    }
    if (fclose(f) != 0) {
        err = xa_error_internal("cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        err = xa_error_internal("cannot rename %s to %s: %s", tmp, path,
                                strerror(errno));
        goto fail;
    }
    free(tmp);
    return NULL;
fail:
    unlink(tmp);
    free(tmp);
    return err;
}

static bool
is_file(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

static struct xa_error *
generate(const char *cert_path, const char *key_path)
{
    char host[HOST_NAME_MAX + 1] = "";
    const char *cn;
    EVP_PKEY *key;
    X509 *x = NULL;
    struct xa_error *err;

    if (gethostname(host, sizeof(host)) != 0) {
        host[0] = '\0';
    }
    host[sizeof(host) - 1] = '\0';
    cn = hostname_ok(host) ? host : "localhost";
    key = EVP_EC_gen("P-256");
    if (!key) {
        return ssl_fail("EC key generation");
    }
    err = make_cert(key, cn, &x);
    /* Key first: a certificate without its key would be taken as done. */
    if (!err) {
        err = write_pem(key_path, 0600, key, NULL);
    }
    if (!err) {
        err = write_pem(cert_path, 0644, NULL, x);
    }
    if (!err) {
        xa_log_info(XA_CERT_MODULE, "generated certificate %s for %s",
                    cert_path, cn);
    }
    X509_free(x);
    EVP_PKEY_free(key);
    return err;
}

/* False only when both files parse and the key is not the certificate's
 * (an interrupted regeneration); files OpenSSL cannot read are left for
 * the TLS library to judge. */
static bool
pair_matches(const char *cert_path, const char *key_path)
{
    FILE *f = fopen(cert_path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = NULL;
    bool ok = true;

    if (f) {
        fclose(f);
    }
    f = fopen(key_path, "r");
    if (f) {
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (x && key) {
        ok = X509_check_private_key(x, key) == 1;
    }
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(key);
    return ok;
}

struct xa_error *
xa_cert_regenerate(const char *dir, const char *cert_name, const char *key_name)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return xa_error_internal("cannot create %s: %s", dir, strerror(errno));
    }
    char *cert_path = xa_asprintf("%s/%s", dir, cert_name);
    char *key_path = xa_asprintf("%s/%s", dir, key_name);
    struct xa_error *err = generate(cert_path, key_path);
    free(cert_path);
    free(key_path);
    return err;
}

struct xa_error *
xa_cert_ensure(const char *dir, const char *cert_name, const char *key_name,
               char **ret_cert_path, char **ret_key_path)
{
    char *cert_path, *key_path;
    struct xa_error *err = NULL;

    if (ret_cert_path) {
        *ret_cert_path = NULL;
    }
    if (ret_key_path) {
        *ret_key_path = NULL;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return xa_error_internal("cannot create %s: %s", dir, strerror(errno));
    }
    cert_path = xa_asprintf("%s/%s", dir, cert_name);
    key_path = xa_asprintf("%s/%s", dir, key_name);
    if (!is_file(cert_path) || !is_file(key_path)) {
        err = generate(cert_path, key_path);
    } else if (!pair_matches(cert_path, key_path)) {
        xa_log_warn(XA_CERT_MODULE, "%s does not match %s: regenerating",
                    key_path, cert_path);
        err = generate(cert_path, key_path);
    }
    if (err) {
        free(cert_path);
        free(key_path);
        return err;
    }
    if (ret_cert_path) {
        *ret_cert_path = cert_path;
    } else {
        free(cert_path);
    }
    if (ret_key_path) {
        *ret_key_path = key_path;
    } else {
        free(key_path);
    }
    return NULL;
}

char *
xa_cert_fingerprint_sha256(const char *cert_path)
{
    FILE *f = fopen(cert_path, "r");
    X509 *x;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    struct xa_buf out = {0};

    if (!f) {
        return NULL;
    }
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x) {
        ERR_clear_error();
        return NULL;
    }
    if (!X509_digest(x, EVP_sha256(), md, &n)) {
        ERR_clear_error();
        X509_free(x);
        return NULL;
    }
    X509_free(x);
    for (unsigned int i = 0; i < n; i++) {
        xa_buf_printf(&out, "%s%02X", i ? ":" : "", md[i]);
    }
    return xa_buf_steal(&out);
}
