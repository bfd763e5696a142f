/* Unit tests of the self-signed CA and public-key hashes (http/tls.h). */
#include <criterion/criterion.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/util.h"
#include "http/tls.h"

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/corral-tls-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	const char *names[] = { "tls/ca.pem", "tls/ca-key.pem", "tls/server.pem", "tls/server-key.pem", "tls", NULL };
	for (int i = 0; names[i]; i++) {
		char p[128];
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		remove(p);
	}
	rmdir(dir);
}

TestSuite(tls, .init = setup, .fini = teardown);

Test(tls, ca_made_once_server_certificate_fresh_and_loadable)
{
	char d[96], *cert, *key, h1[CR_TLS_HASH_LEN], h2[CR_TLS_HASH_LEN];
	snprintf(d, sizeof(d), "%s/tls", dir);
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_tls_self_signed(d, "localhost,127.0.0.1,::1,node-a", &cert, &key, &err), 0, "%s", err.message);
	struct stat st;
	cr_assert_eq(stat(key, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	char ca[128];
	snprintf(ca, sizeof(ca), "%s/ca.pem", d);
	cr_assert_eq(cr_tls_file_hash(ca, h1, &err), 0);
	cr_assert_eq(cr_tls_file_hash(cert, h2, &err), 0, "the chain ends with the CA");
	cr_assert_str_eq(h1, h2);
	SSL_CTX *ctx = NULL;
	cr_assert_eq(cr_tls_server_ctx(cert, key, &ctx, &err), 0, "%s", err.message);
	SSL_CTX_free(ctx);
	char *name = cr_tls_local_name(cert);
	cr_assert_str_eq(name, "127.0.0.1");
	free(name);
	free(cert);
	free(key);
	/* a second start keeps the CA */
	cr_assert_eq(cr_tls_self_signed(d, "localhost", &cert, &key, &err), 0);
	cr_assert_eq(cr_tls_file_hash(ca, h2, &err), 0);
	cr_assert_str_eq(h1, h2);
	/* a key that is not the certificate's is refused */
	char other[128];
	snprintf(other, sizeof(other), "%s/ca-key.pem", d);
	cr_assert_eq(cr_tls_server_ctx(cert, other, &ctx, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "does not match"), "%s", err.message);
	free(cert);
	free(key);
}

Test(tls, hash_text_is_checked_and_folded)
{
	struct cr_err err = CR_ERR_INIT;
	char ok[] = "sha256:ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789";
	cr_assert_eq(cr_tls_hash_check(ok, &err), 0);
	cr_assert_str_eq(ok, "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
	char short_[] = "sha256:abc", nohex[] = "sha256:zzcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
	     md5[] = "md5:abc";
	cr_assert_eq(cr_tls_hash_check(short_, &err), CR_EINPUT);
	cr_assert_eq(cr_tls_hash_check(nohex, &err), CR_EINPUT);
	cr_assert_eq(cr_tls_hash_check(md5, &err), CR_EINPUT);
	cr_assert(strstr(err.fix, "join command"));
	cr_assert_eq(cr_tls_pem_hash("garbage", 7, ok, &err), CR_EINPUT);
}
