/* Secrets: random tokens, their stored hashes (BLAKE2b), constant-time
 * comparison and argon2id password hashing. Wraps libsodium. */
#ifndef CR_BASE_SECRET_H
#define CR_BASE_SECRET_H

#include <stdbool.h>
#include <stddef.h>

/* Hex digest length of cr_secret_hash, plus NUL. */
#define CR_HASH_HEX 65

/* Initialise libsodium; call once at start. Returns 0 or -1. */
int cr_secret_init(void);

/* A new random token "<prefix>_<43 url-safe base64 chars>", owned by the caller. */
char *cr_secret_token(const char *prefix);

/* A random identifier of 32 hex characters, owned by the caller. */
char *cr_secret_id(void);

/* A random password of n characters from an unambiguous alphabet. */
char *cr_secret_password(size_t n);

/* BLAKE2b-256 of a token as 64 hex characters into out. Tokens are stored
 * only as this hash. */
void cr_secret_hash(const char *token, char out[CR_HASH_HEX]);

/* Keyed BLAKE2b-256 of msg under key (any string), as 64 hex characters:
 * a secret derived from a secret, e.g. one per worker. */
void cr_secret_mac(const char *key, const char *msg, char out[CR_HASH_HEX]);

/* Constant-time equality of two NUL-terminated strings of equal length. */
bool cr_secret_equal(const char *a, const char *b);

/* argon2id hash of a password (slow: tens of milliseconds, never call on the
 * event loop). Returns a new string owned by the caller, or NULL on failure. */
char *cr_password_hash(const char *password);

/* Verify a password against an argon2id hash string (slow, as above). */
bool cr_password_verify(const char *hash, const char *password);

#endif
