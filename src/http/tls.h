/* TLS for the server's port and for clients that must pin the server's CA:
 * OpenSSL contexts, the self-signed CA of --tls-self-signed, and the
 * public-key hash a join command carries (--ca-hash sha256:HEX, the hash of
 * the DER SubjectPublicKeyInfo, as kubeadm's discovery hash). */
#ifndef CR_HTTP_TLS_H
#define CR_HTTP_TLS_H

#include <stddef.h>

struct cr_err;
typedef struct ssl_ctx_st SSL_CTX;

/* "sha256:" + 64 hex digits + NUL */
#define CR_TLS_HASH_LEN 72

/* A server context from a PEM certificate chain (leaf first) and its private
 * key. Errors (CR_EINPUT) name the file and the fix: unreadable, not PEM,
 * key not matching the certificate, certificate expired. The caller frees the
 * context with SSL_CTX_free. */
int cr_tls_server_ctx(const char *cert_file, const char *key_file, SSL_CTX **out, struct cr_err *err);

/* --tls-self-signed: make sure dir holds ca.pem and ca-key.pem (a CA created
 * once, 10 years) and write a fresh server.pem (server certificate then the
 * CA, 1 year) and server-key.pem for names, a comma-separated list of host
 * names and IP addresses. Keys are written 0600, dir is created 0700. On
 * success *cert_file and *key_file are new strings owned by the caller. */
int cr_tls_self_signed(const char *dir, const char *names, char **cert_file, char **key_file, struct cr_err *err);

/* The hash of the public key of the last certificate in a PEM file (the CA
 * of a chain; the certificate itself when there is one) into out. */
int cr_tls_file_hash(const char *pem_file, char out[CR_TLS_HASH_LEN], struct cr_err *err);

/* The hash of the first certificate in PEM text of len bytes. */
int cr_tls_pem_hash(const char *pem, size_t len, char out[CR_TLS_HASH_LEN], struct cr_err *err);

/* Check that text looks like "sha256:" and 64 hex digits (case folded to
 * lower in place). Returns 0 or CR_EINPUT with the expected form. */
int cr_tls_hash_check(char *text, struct cr_err *err);

/* The name this machine reaches a server presenting the certificate in
 * cert_file by: 127.0.0.1 or localhost when it carries one, else its first
 * DNS name that is no wildcard; NULL when none (caller frees). */
char *cr_tls_local_name(const char *cert_file);

#endif
