/* libsodium-backed secrets, see secret.h. */
#include "base/secret.h"

#include <sodium.h>
#include <string.h>

#include "base/mem.h"

int cr_secret_init(void)
{
	return sodium_init() < 0 ? -1 : 0;
}

char *cr_secret_token(const char *prefix)
{
	unsigned char raw[32];
	randombytes_buf(raw, sizeof(raw));
	char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
	sodium_bin2base64(b64, sizeof(b64), raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return cr_xasprintf("%s_%s", prefix, b64);
}

char *cr_secret_id(void)
{
	unsigned char raw[16];
	randombytes_buf(raw, sizeof(raw));
	char *hex = cr_xmalloc(33);
	sodium_bin2hex(hex, 33, raw, sizeof(raw));
	return hex;
}

char *cr_secret_password(size_t n)
{
	static const char alphabet[] = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
	char *p = cr_xmalloc(n + 1);
	for (size_t i = 0; i < n; i++)
		p[i] = alphabet[randombytes_uniform(sizeof(alphabet) - 1)];
	p[n] = '\0';
	return p;
}

void cr_secret_hash(const char *token, char out[CR_HASH_HEX])
{
	unsigned char digest[32];
	crypto_generichash(digest, sizeof(digest), (const unsigned char *)token, strlen(token), NULL, 0);
	sodium_bin2hex(out, CR_HASH_HEX, digest, sizeof(digest));
}

void cr_secret_mac(const char *key, const char *msg, char out[CR_HASH_HEX])
{
	unsigned char k[crypto_generichash_KEYBYTES], digest[32];
	crypto_generichash(k, sizeof(k), (const unsigned char *)key, strlen(key), NULL, 0); /* any length -> 32 bytes */
	crypto_generichash(digest, sizeof(digest), (const unsigned char *)msg, strlen(msg), k, sizeof(k));
	sodium_bin2hex(out, CR_HASH_HEX, digest, sizeof(digest));
	sodium_memzero(k, sizeof(k));
}

bool cr_secret_equal(const char *a, const char *b)
{
	size_t n = strlen(a);
	if (n != strlen(b))
		return false;
	return sodium_memcmp(a, b, n) == 0;
}

char *cr_password_hash(const char *password)
{
	char out[crypto_pwhash_STRBYTES];
	if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
			      crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
		return NULL;
	return cr_xstrdup(out);
}

bool cr_password_verify(const char *hash, const char *password)
{
	return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}
