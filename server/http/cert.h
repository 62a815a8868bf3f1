/* cert.h - the host's TLS certificate.
 *
 * xapid serves HTTPS with a self-signed certificate that it creates at
 * first start, like xapi's host certificate: an ECDSA P-256 key (cheap
 * handshakes) and an X.509v3 certificate valid for ten years whose
 * subjectAltName lists the host name, localhost, the loopback addresses
 * and every other address of the host at the time it was made.  Pool
 * members pin each other's certificates by SHA-256 fingerprint. */
#ifndef XA_CERT_H
#define XA_CERT_H

#include "error.h"

/* Makes sure '<dir>/<cert_name>' and '<dir>/<key_name>' exist, creating
 * 'dir' (mode 0700) and generating both files when either is missing or
 * the key is not the certificate's; otherwise they are used as they are.  The
 * key is written with mode 0600 and both files appear atomically (written under
 * a temporary name, then renamed), so a crash never leaves half a key.  On
 * success the paths are returned in '*ret_cert_path' and '*ret_key_path'
 * (caller frees; either pointer may be NULL if not wanted). */
struct xa_error *xa_cert_ensure(const char *dir, const char *cert_name,
                                const char *key_name, char **ret_cert_path,
                                char **ret_key_path);

/* Replaces '<dir>/<cert_name>' and '<dir>/<key_name>' with a new key and
 * certificate (`xapid --regenerate-cert`), each file atomically.  A
 * running server keeps serving the pair it loaded at start.  Should a
 * crash fall between the two renames, the key no longer matches the
 * certificate, and xa_cert_ensure() makes a new pair at the next start. */
struct xa_error *xa_cert_regenerate(const char *dir, const char *cert_name,
                                    const char *key_name);

/* SHA-256 fingerprint of the (first) certificate in a PEM file, as
 * uppercase hex pairs joined by colons ("AB:CD:..."), or NULL if the file
 * cannot be read or parsed.  The caller frees the result. */
char *xa_cert_fingerprint_sha256(const char *cert_path);

#endif
