/* Small helpers without dependencies: clocks, files, numbers, labels. */
#ifndef CR_BASE_UTIL_H
#define CR_BASE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct cr_err;
struct cr_buf;

/* Milliseconds: monotonic (for intervals) and wall clock (for timestamps). */
int64_t cr_mono_ms(void);
/* The same clock in nanoseconds, for timings. */
int64_t cr_mono_ns(void);
int64_t cr_wall_ms(void);

/* Format a wall-clock millisecond time as RFC 3339 UTC into out (>= 32 bytes). */
void cr_time_format(int64_t wall_ms, char *out, size_t n);

/* Read a whole file of at most cap bytes into a new NUL-terminated string
 * owned by the caller. Errors: negated errno, CR_ETOOBIG. */
int cr_file_read(const char *path, size_t cap, char **out, size_t *len, struct cr_err *err);

/* Write data to path atomically (temporary file + rename) with the given
 * mode, e.g. 0600 for secrets. Returns 0 or a negated errno. */
int cr_file_write(const char *path, const char *data, size_t len, mode_t mode, struct cr_err *err);

/* mkdir -p with the given mode for created directories. */
int cr_mkdir_p(const char *path, mode_t mode, struct cr_err *err);

/* Parse a whole decimal integer in [min, max]; false on any junk. */
bool cr_parse_int(const char *s, long long min, long long max, long long *out);

/* A size like 500M, 50G, 1.5T, 2GiB or plain bytes (K, M, G, T are powers of
 * 1024) into *out; false when it is not one. */
bool cr_parse_bytes(const char *s, uint64_t *out);

/* Format a byte count for people: "23.5 GiB". */
void cr_bytes_human(uint64_t bytes, char *out, size_t n);

/* Trim ASCII whitespace at both ends, in place; returns s. */
char *cr_trim(char *s);

/* A --server-url value: one URL or several separated by commas (servers of
 * one cluster, tried in turn), each trimmed of blanks and trailing slashes.
 * Returns n >= 1 strings (caller frees each and the array). */
char **cr_server_urls(const char *list, int *n);

#endif
