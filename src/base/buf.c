/* Capped growable buffers, see buf.h. */
#include "base/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/mem.h"

int cr_buf_add(struct cr_buf *b, const void *p, size_t n)
{
	if (n > b->cap || b->len > b->cap - n)
		return CR_ETOOBIG;
	if (b->len + n + 1 > b->alloc) {
		size_t want = b->alloc ? b->alloc : 256;
		while (want < b->len + n + 1)
			want *= 2;
		b->data = cr_xrealloc(b->data, want);
		b->alloc = want;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

void cr_buf_reserve(struct cr_buf *b, size_t n)
{
	if (n > b->cap)
		n = b->cap;
	if (n + 1 > b->alloc) {
		b->data = cr_xrealloc(b->data, n + 1);
		b->alloc = n + 1;
		b->data[b->len] = '\0';
	}
}

int cr_buf_adds(struct cr_buf *b, const char *s)
{
	return cr_buf_add(b, s, strlen(s));
}

int cr_buf_addf(struct cr_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = cr_xvasprintf(fmt, ap);
	va_end(ap);
	int rc = cr_buf_adds(b, s);
	free(s);
	return rc;
}

const char *cr_buf_str(const struct cr_buf *b)
{
	return b->data ? b->data : "";
}

char *cr_buf_detach(struct cr_buf *b)
{
	char *p = b->data ? b->data : cr_xstrdup("");
	b->data = NULL;
	b->len = b->alloc = 0;
	return p;
}

void cr_buf_reset(struct cr_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void cr_buf_release(struct cr_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->alloc = 0;
}
