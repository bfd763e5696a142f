/* Allocation helpers: every allocation in Corral goes through these, and
 * running out of memory aborts the process with a message (style.md). */
#ifndef CR_BASE_MEM_H
#define CR_BASE_MEM_H

#include <stdarg.h>
#include <stddef.h>

/* malloc/calloc/realloc/strdup that never return NULL: they abort on
 * out-of-memory. cr_xstrdup(NULL) returns NULL. The caller owns the result. */
void *cr_xmalloc(size_t n);
void *cr_xcalloc(size_t count, size_t size);
void *cr_xrealloc(void *p, size_t n);
char *cr_xstrdup(const char *s);
char *cr_xstrndup(const char *s, size_t n);

/* printf into a new heap string owned by the caller; aborts on OOM. */
char *cr_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *cr_xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* Replace *slot with a copy of s (NULL allowed), freeing the old value. */
void cr_str_replace(char **slot, const char *s);

#endif
