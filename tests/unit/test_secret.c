/* Unit tests of token hashing and password hashing. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "base/secret.h"

static void init(void)
{
	cr_assert_eq(cr_secret_init(), 0);
}

TestSuite(secret, .init = init);

Test(secret, tokens_are_random_prefixed_and_urlsafe)
{
	char *a = cr_secret_token("crt"), *b = cr_secret_token("crt");
	cr_assert_eq(strncmp(a, "crt_", 4), 0);
	cr_assert_eq(strlen(a), 4 + 43);
	cr_assert_str_neq(a, b);
	cr_assert_eq(strspn(a + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), 43);
	free(a);
	free(b);
}

Test(secret, hash_is_stable_and_distinguishes)
{
	char h1[CR_HASH_HEX], h2[CR_HASH_HEX], h3[CR_HASH_HEX];
	cr_secret_hash("crw_abc", h1);
	cr_secret_hash("crw_abc", h2);
	cr_secret_hash("crw_abd", h3);
	cr_assert_eq(strlen(h1), 64);
	cr_assert(cr_secret_equal(h1, h2));
	cr_assert_not(cr_secret_equal(h1, h3));
	cr_assert_not(cr_secret_equal(h1, "short"));
	cr_assert(strstr(h1, "abc") == NULL, "the hash does not contain the token");
}

Test(secret, argon2id_password_roundtrip)
{
	char *h = cr_password_hash("correct horse");
	cr_assert_not_null(h);
	cr_assert_eq(strncmp(h, "$argon2id$", 10), 0, "argon2id: %s", h);
	cr_assert(cr_password_verify(h, "correct horse"));
	cr_assert_not(cr_password_verify(h, "correct horsE"));
	cr_assert_not(cr_password_verify("not a hash", "x"));
	free(h);
}

Test(secret, generated_passwords_use_the_alphabet)
{
	char *p = cr_secret_password(20);
	cr_assert_eq(strlen(p), 20);
	cr_assert_eq(strspn(p, "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"), 20);
	free(p);
}
