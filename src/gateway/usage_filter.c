/* Usage in OpenAI-style answers: token counts from a response's "usage",
 * and for server-sent-event streams the same from the usage chunk, which is
 * removed when the client did not ask for it. See usage_filter.h. */
#include "gateway/usage_filter.h"

#include <event2/buffer.h>
#include <string.h>

#include "base/json.h"

/* Token counts from a response object's "usage". */
/* A token count as an engine reported it, kept within what a count can be:
 * the counters it is added to (per key, model and day) must never overflow. */
static int64_t tokens(json_t *u, const char *key, int64_t old)
{
	json_t *v = json_object_get(u, key);
	if (!json_is_integer(v))
		return old;
	json_int_t n = json_integer_value(v);
	return n < 0 ? 0 : n > CR_TOKENS_MAX ? CR_TOKENS_MAX : n;
}

void cr_usage_filter_take(struct cr_usage_filter *c, json_t *o)
{
	json_t *u = json_object_get(o, "usage");
	if (!json_is_object(u))
		return;
	c->prompt_tokens = tokens(u, "prompt_tokens", c->prompt_tokens);
	c->completion_tokens = tokens(u, "completion_tokens", c->completion_tokens);
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

/* SSE events end with a blank line; lines end with "\r\n", "\n" or "\r".
 * Feed bytes to the detector: it returns the offset just past the last
 * event end in t[0, n), or with first the first one (0: none), and keeps
 * its state for the next bytes, so that a stream's bytes are looked at once. */
static size_t scan(struct cr_sse_scan *st, const char *t, size_t n, bool first)
{
	size_t last = 0;
	for (size_t i = 0; i < n; i++) {
		char ch = t[i];
		if (st->cr && ch == '\n') { /* the rest of a "\r\n" */
			st->cr = false;
			if (st->ended)
				last = i + 1;
			continue;
		}
		st->cr = ch == '\r';
		st->ended = false;
		if (ch != '\r' && ch != '\n') {
			st->in_line = true;
			continue;
		}
		if (!st->in_line) { /* a blank line: the event ends here */
			last = i + 1;
			st->ended = true;
			if (first)
				return ch == '\r' && i + 1 < n && t[i + 1] == '\n' ? i + 2 : i + 1;
		}
		st->in_line = false;
	}
	return last;
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

/* The offset just past the last event end among chunk's bytes (0: none),
 * looked at in place, segment by segment. */
static size_t scan_new(struct cr_usage_filter *c, struct evbuffer *chunk)
{
	struct evbuffer_ptr p;
	if (evbuffer_ptr_set(chunk, &p, 0, EVBUFFER_PTR_SET) != 0)
		return 0;
	struct evbuffer_iovec v[16];
	size_t last = 0, at = 0;
	for (;;) {
		int n = evbuffer_peek(chunk, -1, &p, v, 16);
		if (n <= 0)
			break;
		int got = n < 16 ? n : 16;
		for (int i = 0; i < got; i++) {
			size_t e = scan(&c->scan, v[i].iov_base, v[i].iov_len, false);
			if (e)
				last = at + e;
			at += v[i].iov_len;
		}
		if (n <= 16 || evbuffer_ptr_set(chunk, &p, at, EVBUFFER_PTR_SET) != 0)
			break;
	}
	return last;
}

/* Keep chunk's bytes for later: small pieces are copied, so that an event
 * arriving a few bytes at a time is held in few chains, not one per read. */
static void hold(struct cr_usage_filter *c, struct evbuffer *chunk)
{
	size_t n = evbuffer_get_length(chunk);
	if (n < 4096) {
		char tmp[4096];
		evbuffer_remove(chunk, tmp, n);
		evbuffer_add(c->hold, tmp, n);
	} else {
		evbuffer_add_buffer(c->hold, chunk);
	}
}

void cr_usage_filter_feed(struct cr_usage_filter *c, struct evbuffer *chunk, bool end)
{
	if (!c->hold)
		c->hold = evbuffer_new();
	size_t held = evbuffer_get_length(c->hold);
	if (end) { /* whatever was held goes out as it is */
		if (held)
			evbuffer_prepend_buffer(chunk, c->hold);
		return;
	}
	/* the held bytes were looked at already: only the new ones are */
	size_t e = scan_new(c, chunk);
	if (!e) {
		hold(c, chunk);
		return;
	}
	if (held)
		evbuffer_prepend_buffer(chunk, c->hold);
	size_t complete = held + e;
	size_t len = evbuffer_get_length(chunk);
	bool u = has_usage_key(chunk);
	if (!u && complete == len)
		return; /* the common case: whole events, no usage */
	size_t drop_from = 0, drop_to = 0;
	if (u) { /* the complete events in one piece: count usage, maybe drop its chunk */
		const char *t = (const char *)evbuffer_pullup(chunk, (ev_ssize_t)complete);
		for (size_t at = 0, stop; at < complete; at = stop) {
			struct cr_sse_scan st = { 0 };
			size_t one = scan(&st, t + at, complete - at, true);
			if (!one)
				break;
			stop = at + one;
			if (memmem(t + at, stop - at, "\"usage\"", 7) && usage_event(c, t + at, stop - at) && !drop_to) {
				drop_from = at;
				drop_to = stop;
			}
		}
	}
	struct evbuffer *out = evbuffer_new();
	if (drop_to) {
		evbuffer_remove_buffer(chunk, out, drop_from);
		evbuffer_drain(chunk, drop_to - drop_from);
		evbuffer_remove_buffer(chunk, out, complete - drop_to);
	} else {
		evbuffer_remove_buffer(chunk, out, complete);
	}
	hold(c, chunk); /* the incomplete rest */
	evbuffer_add_buffer(chunk, out);
	evbuffer_free(out);
}

void cr_usage_filter_release(struct cr_usage_filter *c)
{
	if (c->hold)
		evbuffer_free(c->hold);
	c->hold = NULL;
	memset(&c->scan, 0, sizeof(c->scan));
}
