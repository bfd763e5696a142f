/* OpenSSL glue, see tls.h. */
#include "http/tls.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/err.h"
#include "base/mem.h"
#include "base/util.h"

/* The last OpenSSL error in words, or what when there is none. */
static const char *ossl_why(const char *what)
{
	static _Thread_local char buf[256];
	unsigned long e = ERR_peek_last_error();
	if (!e)
		return what;
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

int cr_tls_server_ctx(const char *cert_file, const char *key_file, SSL_CTX **out, struct cr_err *err)
{
	*out = NULL;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		abort();
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		cr_err_set(err, CR_EINPUT, "give a readable PEM file with the server certificate first, then its CA chain",
			   "cannot load --tls-cert '%s': %s", cert_file, ossl_why("not a PEM certificate"));
		SSL_CTX_free(ctx);
		return CR_EINPUT;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 &&
	    ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
		cr_err_set(err, CR_EINPUT, "give the PEM private key of the certificate (unencrypted, mode 0600)",
			   "cannot load --tls-key '%s': %s", key_file, ossl_why("not a PEM private key"));
		SSL_CTX_free(ctx);
		return CR_EINPUT;
	}
	if (ERR_peek_last_error() || SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		cr_err_set(err, CR_EINPUT, "pass the key that belongs to the certificate",
			   "--tls-key '%s' does not match the certificate in '%s'", key_file, cert_file);
		SSL_CTX_free(ctx);
		return CR_EINPUT;
	}
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	if (leaf && X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0) {
		cr_err_set(err, CR_EINPUT, "renew the certificate, or use --tls-self-signed",
			   "the certificate in --tls-cert '%s' has expired", cert_file);
		SSL_CTX_free(ctx);
		return CR_EINPUT;
	}
	*out = ctx;
	return 0;
}

/* ---- the self-signed CA ---- */

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	if (!k)
		abort();
	return k;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext || !X509_add_ext(cert, ext, -1))
		abort(); /* our own constant extension texts */
	X509_EXTENSION_free(ext);
}

/* A certificate for key named cn, signed by issuer_key (issuer NULL: self). */
static X509 *new_cert(EVP_PKEY *key, const char *cn, X509 *issuer, long days)
{
	X509 *x = X509_new();
	if (!x)
		abort();
	X509_set_version(x, 2);
	unsigned char serial[16];
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		abort();
	serial[0] &= 0x7f; /* positive */
	BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600); /* clocks a little behind */
	X509_gmtime_adj(X509_getm_notAfter(x), days * 86400);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"Corral", -1, -1, 0);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash");
	add_ext(x, issuer ? issuer : x, NID_authority_key_identifier, "keyid:always");
	return x;
}

static void sign(X509 *x, EVP_PKEY *key)
{
	if (!X509_sign(x, key, EVP_sha256()))
		abort();
}

static char *pem_of(X509 *cert, X509 *chain, EVP_PKEY *key, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	if (!b)
		abort();
	if (cert)
		PEM_write_bio_X509(b, cert);
	if (chain)
		PEM_write_bio_X509(b, chain);
	if (key)
		PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
	char *data;
	long n = BIO_get_mem_data(b, &data);
	char *copy = cr_xstrndup(data, (size_t)n);
	*len = (size_t)n;
	BIO_free(b);
	return copy;
}

static int write_pem(const char *path, X509 *cert, X509 *chain, EVP_PKEY *key, struct cr_err *err)
{
	size_t len;
	char *text = pem_of(cert, chain, key, &len);
	int rc = cr_file_write(path, text, len, key ? 0600 : 0644, err);
	OPENSSL_cleanse(text, len);
	free(text);
	return rc;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return x;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return k;
}

/* "a,b,c" -> "DNS:a,IP:b,..." for subjectAltName. */
static char *san_of(const char *names)
{
	char *list = cr_xstrdup(names), *save = NULL, *out = cr_xstrdup("");
	for (char *n = strtok_r(list, ",", &save); n; n = strtok_r(NULL, ",", &save)) {
		n = cr_trim(n);
		if (!*n)
			continue;
		bool ip = strspn(n, "0123456789.") == strlen(n) || strchr(n, ':');
		char *next = cr_xasprintf("%s%s%s:%s", out, *out ? "," : "", ip ? "IP" : "DNS", n);
		free(out);
		out = next;
	}
	free(list);
	return out;
}

int cr_tls_self_signed(const char *dir, const char *names, char **cert_file, char **key_file, struct cr_err *err)
{
	*cert_file = *key_file = NULL;
	if (cr_mkdir_p(dir, 0700, err))
		return err ? err->code : -EIO;
	char *ca_path = cr_xasprintf("%s/ca.pem", dir), *ca_key_path = cr_xasprintf("%s/ca-key.pem", dir);
	char *crt_path = cr_xasprintf("%s/server.pem", dir), *key_path = cr_xasprintf("%s/server-key.pem", dir);
	X509 *ca = read_cert(ca_path);
	EVP_PKEY *ca_key = read_key(ca_key_path);
	int rc = 0;
	if ((ca != NULL) != (ca_key != NULL)) {
		ERR_clear_error();
		rc = cr_err_set(err, CR_EINPUT, "restore the missing file, or move both away to create a new CA (workers then need "
					       "the new --ca-hash)",
				"%s holds only one of ca.pem and ca-key.pem", dir);
		goto out;
	}
	if (!ca) {
		ERR_clear_error();
		ca_key = new_key();
		ca = new_cert(ca_key, "Corral cluster CA", NULL, 3650);
		add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
		add_ext(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign");
		sign(ca, ca_key);
		if ((rc = write_pem(ca_key_path, NULL, NULL, ca_key, err)) || (rc = write_pem(ca_path, ca, NULL, NULL, err)))
			goto out;
	} else if (X509_check_private_key(ca, ca_key) != 1) {
		ERR_clear_error();
		rc = cr_err_set(err, CR_EINPUT, "restore the pair, or move both away to create a new CA",
				"%s: ca-key.pem does not belong to ca.pem", dir);
		goto out;
	}
	/* a fresh server certificate on every start: it always names this
	 * host's current addresses; the CA, and so --ca-hash, stays */
	EVP_PKEY *key = new_key();
	X509 *crt = new_cert(key, "Corral server", ca, 365);
	char *san = san_of(names);
	add_ext(crt, ca, NID_basic_constraints, "critical,CA:FALSE");
	add_ext(crt, ca, NID_key_usage, "critical,digitalSignature,keyEncipherment");
	add_ext(crt, ca, NID_ext_key_usage, "serverAuth");
	if (*san)
		add_ext(crt, ca, NID_subject_alt_name, san);
	free(san);
	sign(crt, ca_key);
	if (!(rc = write_pem(key_path, NULL, NULL, key, err)))
		rc = write_pem(crt_path, crt, ca, NULL, err);
	X509_free(crt);
	EVP_PKEY_free(key);
	if (!rc) {
		*cert_file = crt_path;
		*key_file = key_path;
		crt_path = key_path = NULL;
	}
out:
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	free(ca_path);
	free(ca_key_path);
	free(crt_path);
	free(key_path);
	return rc;
}

/* ---- public-key hashes ---- */

static void hash_of(X509 *x, char out[CR_TLS_HASH_LEN])
{
	unsigned char *der = NULL;
	int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
	if (n <= 0)
		abort();
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
	OPENSSL_free(der);
	int at = snprintf(out, CR_TLS_HASH_LEN, "sha256:");
	for (unsigned i = 0; i < 32; i++)
		at += snprintf(out + at, (size_t)(CR_TLS_HASH_LEN - at), "%02x", md[i]);
}

int cr_tls_pem_hash(const char *pem, size_t len, char out[CR_TLS_HASH_LEN], struct cr_err *err)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	if (!b)
		abort();
	X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	if (!x) {
		ERR_clear_error();
		return cr_err_set(err, CR_EINPUT, "give a PEM certificate", "not a PEM certificate");
	}
	hash_of(x, out);
	X509_free(x);
	return 0;
}

int cr_tls_file_hash(const char *pem_file, char out[CR_TLS_HASH_LEN], struct cr_err *err)
{
	FILE *f = fopen(pem_file, "re");
	if (!f)
		return cr_err_set(err, -errno, "give a readable PEM file", "cannot open '%s': %s", pem_file, strerror(errno));
	X509 *last = NULL, *x;
	while ((x = PEM_read_X509(f, NULL, NULL, NULL))) {
		X509_free(last);
		last = x;
	}
	ERR_clear_error();
	fclose(f);
	if (!last)
		return cr_err_set(err, CR_EINPUT, "give a PEM certificate file", "'%s' holds no PEM certificate", pem_file);
	hash_of(last, out);
	X509_free(last);
	return 0;
}

int cr_tls_hash_check(char *text, struct cr_err *err)
{
	bool ok = !strncmp(text, "sha256:", 7) && strlen(text) == 7 + 64;
	for (size_t i = 7; ok && text[i]; i++) {
		text[i] = (char)tolower((unsigned char)text[i]);
		ok = isxdigit((unsigned char)text[i]);
	}
	if (!ok)
		return cr_err_set(err, CR_EINPUT, "copy --ca-hash from the join command the server prints at start",
				  "--ca-hash must be sha256: and 64 hex digits, not '%.80s'", text);
	return 0;
}

char *cr_tls_local_name(const char *cert_file)
{
	X509 *x = read_cert(cert_file);
	if (!x) {
		ERR_clear_error();
		return NULL;
	}
	char *name = NULL;
	if (X509_check_ip_asc(x, "127.0.0.1", 0) == 1)
		name = cr_xstrdup("127.0.0.1");
	else if (X509_check_host(x, "localhost", 0, 0, NULL) == 1)
		name = cr_xstrdup("localhost");
	GENERAL_NAMES *sans = name ? NULL : X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans && !name && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS)
			continue;
		const char *dns = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
		if (dns && !strchr(dns, '*'))
			name = cr_xstrdup(dns);
	}
	GENERAL_NAMES_free(sans);
	X509_free(x);
	return name;
}
