/* Incremental parser of server-sent events (text/event-stream): feed bytes
 * as they arrive, get one callback per complete event. Comments (keepalives)
 * produce no event. Lines are capped so a hostile stream cannot grow memory. */
#ifndef CR_BASE_SSE_H
#define CR_BASE_SSE_H

#include <stddef.h>

#include "base/buf.h"

/* event is "message" when the stream named none; data lines are joined with
 * '\n'. Both borrowed for the call. Return nonzero to stop parsing. */
typedef int (*cr_sse_event_cb)(const char *event, const char *data, void *arg);

struct cr_sse {
	struct cr_buf line;  /* partial line */
	struct cr_buf event;
	struct cr_buf data;
	int has_data;
	int skip_lf;         /* last line ended with '\r' */
};

/* max: the largest line or event data in bytes. */
void cr_sse_init(struct cr_sse *p, size_t max);

/* Feed bytes. Returns 0, CR_ETOOBIG when a line or event is over the limit
 * (the parser must then be released), or the callback's nonzero value. */
int cr_sse_feed(struct cr_sse *p, const char *data, size_t len, cr_sse_event_cb cb, void *arg);

void cr_sse_release(struct cr_sse *p);

#endif
