/* Allocation helpers that abort on out-of-memory. */
#include "base/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
	fprintf(stderr, "corral: out of memory allocating %zu bytes\n", n);
	abort();
}

void *cr_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *cr_xcalloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);
	if (!p)
		oom(count * size);
	return p;
}

void *cr_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *cr_xstrdup(const char *s)
{
	if (!s)
		return NULL;
	return cr_xstrndup(s, strlen(s));
}

char *cr_xstrndup(const char *s, size_t n)
{
	char *p = cr_xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *cr_xvasprintf(const char *fmt, va_list ap)
{
	va_list cp;
	va_copy(cp, ap);
	int n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		oom(0);
	char *p = cr_xmalloc((size_t)n + 1);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

char *cr_xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *p = cr_xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

void cr_str_replace(char **slot, const char *s)
{
	char *copy = cr_xstrdup(s);
	free(*slot);
	*slot = copy;
}
