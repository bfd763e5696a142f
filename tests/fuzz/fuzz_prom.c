/* Fuzz target: the Prometheus text parser (an engine's /metrics answer) and
 * the label lookup on what it hands over. */
#include <stddef.h>
#include <stdint.h>

#include "base/prom.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_sample(const char *name, const char *labels, double value, void *arg)
{
	char out[64];
	size_t *n = arg;
	*n += (size_t)name[0] + (value > 0);
	if (cr_prom_label(labels, "model", out, sizeof(out)) == 0)
		*n += out[0];
	cr_prom_label(labels, "", out, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n = 0;
	cr_prom_parse((const char *)data, size, on_sample, &n);
	return 0;
}
