/* Token usage in OpenAI-style answers as they pass the gateway: counted from
 * a JSON answer's "usage" or from a stream's usage chunk, and that chunk
 * dropped again when the client did not ask for it (the gateway asks engines
 * for it with stream_options.include_usage). Pure byte handling over
 * evbuffers; no I/O. */
#ifndef CR_GATEWAY_USAGE_FILTER_H
#define CR_GATEWAY_USAGE_FILTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct evbuffer;

/* Where a stream's bytes stand between events (see usage_filter.c); all
 * false at the start. */
struct cr_sse_scan {
	bool in_line; /* a character on the current line */
	bool cr;      /* the last byte was '\r' */
	bool ended;   /* and it ended an event */
};

struct cr_usage_filter {
	bool client_wants;       /* set by the caller: keep usage-only chunks */
	int64_t prompt_tokens;   /* the last usage seen, 0 until then */
	int64_t completion_tokens;
	struct evbuffer *hold;   /* an event not complete yet; owned */
	struct cr_sse_scan scan;
};

/* The most tokens one answer is counted for: engines' numbers are clamped to
 * 0..CR_TOKENS_MAX, so that summing them per key, model and day cannot
 * overflow. */
#define CR_TOKENS_MAX (1LL << 40)

/* Take prompt_tokens and completion_tokens from o's "usage" when present
 * (integers only, clamped to 0..CR_TOKENS_MAX). */
void cr_usage_filter_take(struct cr_usage_filter *f, json_t *o);

/* Pass the next bytes of an SSE stream through f: chunk is rewritten in
 * place to what may go to the client now. Complete events go out unchanged,
 * except a usage chunk ("choices":[] with "usage") the client did not want;
 * an incomplete last event is held back until its end arrives. end = true
 * (with an empty or final chunk) releases whatever is held, as it is. */
void cr_usage_filter_feed(struct cr_usage_filter *f, struct evbuffer *chunk, bool end);

/* Free what f holds; f may be fed again afterwards. */
void cr_usage_filter_release(struct cr_usage_filter *f);

#endif
