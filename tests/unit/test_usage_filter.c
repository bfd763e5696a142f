/* The gateway's usage filter over SSE streams: the usage chunk is counted
 * and removed when the client did not ask for it, kept when it did; events
 * split anywhere across reads come out whole and in order. */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/usage_filter.h"

#define EV(s) "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" s "\"}}]}\n\n"
#define USAGE "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":56,\"completion_tokens\":3}}\n\n"
#define DONE "data: [DONE]\n\n"

/* Feed text in pieces of at most step bytes; the concatenated output. */
static char *run(struct cr_usage_filter *f, const char *text, size_t step)
{
	struct evbuffer *chunk = evbuffer_new(), *out = evbuffer_new();
	size_t n = strlen(text);
	for (size_t at = 0; at < n; at += step) {
		evbuffer_add(chunk, text + at, at + step <= n ? step : n - at);
		cr_usage_filter_feed(f, chunk, false);
		evbuffer_add_buffer(out, chunk);
	}
	cr_usage_filter_feed(f, chunk, true);
	evbuffer_add_buffer(out, chunk);
	size_t len = evbuffer_get_length(out);
	char *s = malloc(len + 1);
	evbuffer_remove(out, s, len);
	s[len] = 0;
	evbuffer_free(chunk);
	evbuffer_free(out);
	cr_usage_filter_release(f);
	return s;
}

Test(usage_filter, usage_chunk_is_counted_and_removed_however_the_stream_is_split)
{
	const char *in = EV("a") EV("b c") USAGE DONE;
	for (size_t step = 1; step <= strlen(in); step++) {
		struct cr_usage_filter f = { 0 };
		char *out = run(&f, in, step);
		cr_assert_str_eq(out, EV("a") EV("b c") DONE, "step %zu", step);
		cr_assert_eq(f.prompt_tokens, 56);
		cr_assert_eq(f.completion_tokens, 3);
		free(out);
	}
}

Test(usage_filter, a_client_that_asked_for_usage_keeps_it)
{
	const char *in = EV("a") USAGE DONE;
	for (size_t step = 1; step <= strlen(in); step += 7) {
		struct cr_usage_filter f = { .client_wants = true };
		char *out = run(&f, in, step);
		cr_assert_str_eq(out, in);
		cr_assert_eq(f.completion_tokens, 3);
		free(out);
	}
}

Test(usage_filter, usage_inside_a_choice_chunk_is_kept_and_counted)
{
	/* llama-server's /v1/completions puts usage in its last choice chunk */
	const char *in = "data: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}],\"usage\":"
			 "{\"prompt_tokens\":6,\"completion_tokens\":9}}\n\n" DONE;
	struct cr_usage_filter f = { 0 };
	char *out = run(&f, in, 5);
	cr_assert_str_eq(out, in);
	cr_assert_eq(f.prompt_tokens, 6);
	cr_assert_eq(f.completion_tokens, 9);
	free(out);
}

Test(usage_filter, crlf_separated_events_and_the_word_usage_in_content)
{
	const char *in = "data: {\"choices\":[{\"delta\":{\"content\":\"the \\\"usage\\\" word\"}}]}\r\n\r\n"
			 "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n"
			 "data: [DONE]\r\n\r\n";
	struct cr_usage_filter f = { 0 };
	char *out = run(&f, in, 3);
	cr_assert_str_eq(out, "data: {\"choices\":[{\"delta\":{\"content\":\"the \\\"usage\\\" word\"}}]}\r\n\r\n"
			      "data: [DONE]\r\n\r\n");
	cr_assert_eq(f.completion_tokens, 2);
	free(out);
}

Test(usage_filter, an_unfinished_last_event_goes_out_at_the_end_as_it_is)
{
	const char *in = EV("a") "data: {\"choices\":[],\"usa";
	struct cr_usage_filter f = { 0 };
	char *out = run(&f, in, 4);
	cr_assert_str_eq(out, in);
	cr_assert_eq(f.prompt_tokens, 0);
	free(out);
}

Test(usage_filter, a_non_streamed_answer_gives_its_usage)
{
	struct cr_usage_filter f = { 0 };
	json_t *o = json_loads("{\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7}}", 0, NULL);
	cr_usage_filter_take(&f, o);
	json_decref(o);
	cr_assert_eq(f.prompt_tokens + f.completion_tokens, 19);
}

/* Lines may end with "\r" alone (the SSE grammar allows CR, LF and CRLF):
 * such events go out as they complete, not held to the end of the stream,
 * and their usage chunk is found and removed too. */
Test(usage_filter, cr_only_and_crlf_streams_go_out_event_by_event)
{
	static const char *const ends[] = { "\r\r", "\r\n\r\n", "\n\r\n", "\r\n\n" };
	for (size_t k = 0; k < sizeof(ends) / sizeof(ends[0]); k++) {
		char a[128], u[160], d[64];
		snprintf(a, sizeof(a), "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}%s", ends[k]);
		snprintf(u, sizeof(u), "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}%s",
			 ends[k]);
		snprintf(d, sizeof(d), "data: [DONE]%s", ends[k]);
		struct cr_usage_filter f = { 0 };
		struct evbuffer *chunk = evbuffer_new();
		evbuffer_add(chunk, a, strlen(a));
		cr_usage_filter_feed(&f, chunk, false);
		cr_assert_eq(evbuffer_get_length(chunk), strlen(a), "the first event goes out at once (ending %zu)", k);
		evbuffer_drain(chunk, evbuffer_get_length(chunk));
		evbuffer_add(chunk, u, strlen(u));
		evbuffer_add(chunk, d, strlen(d));
		cr_usage_filter_feed(&f, chunk, false);
		size_t n = evbuffer_get_length(chunk);
		char *out = calloc(1, n + 1);
		evbuffer_remove(chunk, out, n);
		cr_assert_str_eq(out, d, "the usage chunk removed, [DONE] out (ending %zu)", k);
		cr_assert_eq(f.completion_tokens, 2);
		free(out);
		cr_usage_filter_feed(&f, chunk, true);
		cr_assert_eq(evbuffer_get_length(chunk), 0, "nothing was held");
		evbuffer_free(chunk);
		cr_usage_filter_release(&f);
	}
}

/* An event split into many pieces is held whole and goes out once, intact,
 * when its end arrives; the held bytes are not scanned again each time. */
Test(usage_filter, a_long_event_in_small_pieces_comes_out_whole)
{
	size_t big = 300000;
	size_t cap = big + 128;
	char *in = malloc(cap);
	size_t n = (size_t)snprintf(in, cap, "data: {\"choices\":[{\"delta\":{\"content\":\"");
	memset(in + n, 'x', big);
	n += big;
	n += (size_t)snprintf(in + n, cap - n, "\"}}]}\n\n");
	struct cr_usage_filter f = { 0 };
	struct evbuffer *chunk = evbuffer_new();
	for (size_t at = 0; at < n; at += 3) {
		evbuffer_add(chunk, in + at, at + 3 <= n ? 3 : n - at);
		cr_usage_filter_feed(&f, chunk, false);
		if (at + 3 < n)
			cr_assert_eq(evbuffer_get_length(chunk), 0, "held until complete");
	}
	cr_assert_eq(evbuffer_get_length(chunk), n);
	cr_assert(!memcmp(evbuffer_pullup(chunk, -1), in, n));
	evbuffer_free(chunk);
	cr_usage_filter_release(&f);
	free(in);
}

/* An engine's token counts are clamped: negative ones count 0, absurd ones
 * CR_TOKENS_MAX, non-integers are ignored; the sums they go into cannot
 * overflow. */
Test(usage_filter, hostile_token_counts_are_clamped)
{
	struct cr_usage_filter f = { 0 };
	json_t *o = json_loads("{\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":9223372036854775807}}", 0, NULL);
	cr_usage_filter_take(&f, o);
	cr_assert_eq(f.prompt_tokens, 0);
	cr_assert_eq(f.completion_tokens, CR_TOKENS_MAX);
	json_decref(o);
	o = json_loads("{\"usage\":{\"prompt_tokens\":1.5e300,\"completion_tokens\":\"7\"}}", 0, NULL);
	cr_usage_filter_take(&f, o);
	cr_assert_eq(f.prompt_tokens, 0, "a real number is not a count: the last value stays");
	cr_assert_eq(f.completion_tokens, CR_TOKENS_MAX);
	json_decref(o);
}
