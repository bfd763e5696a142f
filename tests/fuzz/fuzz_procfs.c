/* Fuzz target: the parsers of /proc and /etc text used by node detection. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "agent/detect.h"
#include "base/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = cr_xstrndup((const char *)data, size);
	struct cr_meminfo mi;
	char out[256];
	int lo, hi;
	double up;
	cr_parse_meminfo(text, &mi);
	cr_parse_cpu_model(text, out, sizeof(out));
	cr_parse_port_range(text, &lo, &hi);
	cr_parse_uptime(text, &up);
	cr_parse_os_release(text, out, sizeof(out));
	free(text);
	return 0;
}
