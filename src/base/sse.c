/* text/event-stream parser, see sse.h. Follows the WHATWG rules that matter
 * here: CR, LF or CRLF line ends; "field: value" with one optional space;
 * lines starting with ':' are comments; a blank line dispatches. */
#include "base/sse.h"

#include <string.h>

#include "base/err.h"

void cr_sse_init(struct cr_sse *p, size_t max)
{
	memset(p, 0, sizeof(*p));
	p->line.cap = max;
	p->event.cap = max;
	p->data.cap = max;
}

void cr_sse_release(struct cr_sse *p)
{
	cr_buf_release(&p->line);
	cr_buf_release(&p->event);
	cr_buf_release(&p->data);
}

static int dispatch(struct cr_sse *p, cr_sse_event_cb cb, void *arg)
{
	int rc = 0;
	if (p->has_data)
		rc = cb(p->event.len ? cr_buf_str(&p->event) : "message", cr_buf_str(&p->data), arg);
	cr_buf_reset(&p->event);
	cr_buf_reset(&p->data);
	p->has_data = 0;
	return rc;
}

static int field(struct cr_sse *p, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	size_t nlen = colon ? (size_t)(colon - line) : len;
	const char *value = colon ? colon + 1 : line + len;
	size_t vlen = colon ? len - nlen - 1 : 0;
	if (vlen && *value == ' ') {
		value++;
		vlen--;
	}
	if (nlen == 5 && !memcmp(line, "event", 5)) {
		cr_buf_reset(&p->event);
		return cr_buf_add(&p->event, value, vlen);
	}
	if (nlen == 4 && !memcmp(line, "data", 4)) {
		if (p->has_data && cr_buf_add(&p->data, "\n", 1))
			return CR_ETOOBIG;
		p->has_data = 1;
		return cr_buf_add(&p->data, value, vlen);
	}
	return 0; /* id, retry and unknown fields are ignored */
}

static int end_line(struct cr_sse *p, cr_sse_event_cb cb, void *arg)
{
	int rc;
	if (p->line.len == 0)
		rc = dispatch(p, cb, arg);
	else if (p->line.data[0] == ':')
		rc = 0;
	else
		rc = field(p, p->line.data, p->line.len);
	cr_buf_reset(&p->line);
	return rc;
}

int cr_sse_feed(struct cr_sse *p, const char *data, size_t len, cr_sse_event_cb cb, void *arg)
{
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (p->skip_lf) {
			p->skip_lf = 0;
			if (c == '\n')
				continue;
		}
		int rc = 0;
		if (c == '\r' || c == '\n') {
			p->skip_lf = c == '\r';
			rc = end_line(p, cb, arg);
		} else {
			rc = cr_buf_add(&p->line, &c, 1);
		}
		if (rc)
			return rc;
	}
	return 0;
}
