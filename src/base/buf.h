/* Growable byte buffers with a size cap (curl's dynbuf), always NUL-terminated
 * so their contents can be used as C strings. */
#ifndef CR_BASE_BUF_H
#define CR_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct cr_buf {
	char *data;   /* owned; NULL until the first append */
	size_t len;
	size_t alloc;
	size_t cap;   /* appends that would pass this fail with CR_ETOOBIG */
};

#define CR_BUF_INIT(cap_) { NULL, 0, 0, (cap_) }

/* Append bytes; returns 0 or CR_ETOOBIG (the buffer is unchanged then). */
int cr_buf_add(struct cr_buf *b, const void *p, size_t n);
int cr_buf_adds(struct cr_buf *b, const char *s);
/* Room for n bytes in all (at most the cap) without growing again. */
void cr_buf_reserve(struct cr_buf *b, size_t n);
int cr_buf_addf(struct cr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Contents as a string ("" when empty); borrowed, valid until the next append. */
const char *cr_buf_str(const struct cr_buf *b);

/* Take ownership of the contents (never NULL) and reset the buffer. */
char *cr_buf_detach(struct cr_buf *b);

void cr_buf_reset(struct cr_buf *b);
/* Free the contents; the buffer may be reused afterwards. */
void cr_buf_release(struct cr_buf *b);

#endif
