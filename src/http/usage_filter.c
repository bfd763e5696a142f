/* Usage in OpenAI-style answers: token counts from a response's "usage",
 * and for server-sent-event streams the same from the usage chunk, which is
 * removed when the client did not ask for it. See usage_filter.h. */
#include "http/usage_filter.h"

#include <event2/buffer.h>
#include <string.h>

#include "base/json.h"

/* Token counts from a response object's "usage". */
void cr_usage_filter_take(struct cr_usage_filter *c, json_t *o)
{
	json_t *u = json_object_get(o, "usage");
	if (!json_is_object(u))
		return;
	c->prompt_tokens = cr_json_get_int(u, "prompt_tokens", c->prompt_tokens);
	c->completion_tokens = cr_json_get_int(u, "completion_tokens", c->completion_tokens);
}

/* One complete SSE event (text, n bytes) carrying "usage": count it, and say
 * whether to drop it (a usage-only chunk the client did not ask for). */
static bool usage_event(struct cr_usage_filter *c, const char *text, size_t n)
{
	bool drop = false;
	const char *data = memmem(text, n, "data:", 5);
	json_t *o = data ? json_loadb(data + 5, n - (size_t)(data + 5 - text), JSON_DISABLE_EOF_CHECK, NULL) : NULL;
	if (json_is_object(o)) {
		cr_usage_filter_take(c, o);
		json_t *choices = json_object_get(o, "choices");
		drop = !c->client_wants && json_is_array(choices) && json_array_size(choices) == 0;
	}
	json_decref(o);
	return drop;
}

/* SSE events end with a blank line: "\n\n" or "\n\r\n". The offset just past
 * the first one in t[from, n), or 0 when there is none. */
static size_t next_boundary(const char *t, size_t from, size_t n)
{
	for (const char *q = t + from; q < t + n; q++) {
		q = memchr(q, '\n', (size_t)(t + n - q));
		if (!q)
			return 0;
		if (q + 1 < t + n && q[1] == '\n')
			return (size_t)(q - t) + 2;
		if (q + 2 < t + n && q[1] == '\r' && q[2] == '\n')
			return (size_t)(q - t) + 3;
	}
	return 0;
}

/* The offset just past the last blank line at or before n, or 0. */
static size_t last_boundary(const char *t, size_t n)
{
	for (size_t i = n; i >= 2; i--) {
		if (t[i - 1] == '\n' && t[i - 2] == '\n')
			return i;
		if (i >= 3 && t[i - 1] == '\n' && t[i - 2] == '\r' && t[i - 3] == '\n')
			return i;
	}
	return 0;
}

/* Whether b holds "usage" (with its quotes) anywhere: memmem over its
 * segments, with the few bytes around each seam checked apart. Much cheaper
 * than evbuffer_search on JSON, where '"' is everywhere. */
static bool has_usage_key(struct evbuffer *b)
{
	static const char key[] = "\"usage\"";
	const size_t kl = sizeof(key) - 1;
	struct evbuffer_iovec v[32];
	int n = evbuffer_peek(b, -1, NULL, v, 32);
	if (n > 32)
		return evbuffer_search(b, key, kl, NULL).pos >= 0;
	char seam[2 * sizeof(key)]; /* the last kl - 1 bytes seen, then the next segment's head */
	size_t seam_len = 0;
	for (int i = 0; i < n; i++) {
		const char *seg = v[i].iov_base;
		size_t len = v[i].iov_len, head = len < kl - 1 ? len : kl - 1;
		if (memmem(seg, len, key, kl))
			return true;
		memcpy(seam + seam_len, seg, head);
		if (memmem(seam, seam_len + head, key, kl))
			return true;
		if (len >= kl - 1) {
			memcpy(seam, seg + len - (kl - 1), kl - 1);
			seam_len = kl - 1;
		} else {
			size_t total = seam_len + len, keep = total < kl - 1 ? total : kl - 1;
			memmove(seam, seam + total - keep, keep);
			seam_len = keep;
		}
	}
	return false;
}

void cr_usage_filter_feed(struct cr_usage_filter *c, struct evbuffer *chunk, bool end)
{
	if (!c->hold)
		c->hold = evbuffer_new();
	if (evbuffer_get_length(c->hold))
		evbuffer_prepend_buffer(chunk, c->hold);
	if (end) { /* whatever was held goes out as it is */
		return;
	}
	bool u = has_usage_key(chunk);
	size_t len = evbuffer_get_length(chunk);
	char last[3] = { 0, 0, 0 };
	if (len >= 3) {
		struct evbuffer_ptr p;
		evbuffer_ptr_set(chunk, &p, len - 3, EVBUFFER_PTR_SET);
		evbuffer_copyout_from(chunk, &p, last, 3);
	}
	if (!u && last[2] == '\n' && (last[1] == '\n' || (last[1] == '\r' && last[0] == '\n')))
		return; /* the common case: whole events, no usage */
	/* the batch in one piece: forward its complete events, less a usage
	 * chunk the client did not ask for, and hold back an incomplete last one */
	const char *t = (const char *)evbuffer_pullup(chunk, -1);
	size_t complete = last_boundary(t, len), drop_from = 0, drop_to = 0;
	for (size_t at = 0; u && at < complete;) {
		const char *k = memmem(t + at, complete - at, "\"usage\"", 7);
		if (!k)
			break;
		size_t start = last_boundary(t, (size_t)(k - t)), stop = next_boundary(t, (size_t)(k - t), complete);
		if (!stop)
			break;
		if (usage_event(c, t + start, stop - start) && drop_to == 0) {
			drop_from = start;
			drop_to = stop;
		}
		at = stop;
	}
	struct evbuffer *out = evbuffer_new();
	if (drop_to) {
		evbuffer_remove_buffer(chunk, out, drop_from);
		evbuffer_drain(chunk, drop_to - drop_from);
		evbuffer_remove_buffer(chunk, out, complete - drop_to);
	} else {
		evbuffer_remove_buffer(chunk, out, complete);
	}
	evbuffer_add_buffer(c->hold, chunk); /* the incomplete rest */
	evbuffer_add_buffer(chunk, out);
	evbuffer_free(out);
}

void cr_usage_filter_release(struct cr_usage_filter *c)
{
	if (c->hold)
		evbuffer_free(c->hold);
	c->hold = NULL;
}
