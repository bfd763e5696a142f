/* Fuzz target: the server-sent-events parser, fed in two pieces split at a
 * data-dependent point so that partial lines are exercised. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_event(const char *event, const char *d, void *arg)
{
	size_t *n = arg;
	*n += strlen(event) + strlen(d);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cr_sse p;
	size_t n = 0;
	cr_sse_init(&p, 4096);
	size_t cut = size ? data[0] % size : 0;
	if (cr_sse_feed(&p, (const char *)data, cut, on_event, &n) == 0)
		cr_sse_feed(&p, (const char *)data + cut, size - cut, on_event, &n);
	cr_sse_release(&p);
	return 0;
}
