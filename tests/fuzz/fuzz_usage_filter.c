/* Fuzz target: the gateway's SSE usage filter, fed engine output in pieces
 * at data-dependent points. With the client asking for usage nothing may be
 * dropped or reordered: the output must equal the input byte for byte. */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/usage_filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t pass(const uint8_t *data, size_t size, bool keep, struct evbuffer *out)
{
	struct cr_usage_filter f = { .client_wants = keep };
	struct evbuffer *chunk = evbuffer_new();
	size_t step = size ? (size_t)data[0] % 64 + 1 : 1;
	for (size_t at = 0; at < size; at += step) {
		evbuffer_add(chunk, data + at, at + step <= size ? step : size - at);
		cr_usage_filter_feed(&f, chunk, false);
		evbuffer_add_buffer(out, chunk);
	}
	cr_usage_filter_feed(&f, chunk, true);
	evbuffer_add_buffer(out, chunk);
	evbuffer_free(chunk);
	cr_usage_filter_release(&f);
	return evbuffer_get_length(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evbuffer *out = evbuffer_new();
	size_t n = pass(data, size, true, out);
	if (n != size || (size && memcmp(evbuffer_pullup(out, -1), data, size) != 0))
		abort(); /* a client that asked for usage gets the stream unchanged */
	evbuffer_drain(out, n);
	if (pass(data, size, false, out) > size)
		abort(); /* removing a chunk never adds bytes */
	evbuffer_free(out);
	return 0;
}
