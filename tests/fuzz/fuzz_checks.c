/* Fuzz target: the compatibility checks over a worker report from the
 * network (any JSON): node checks, the group key, and group checks of the
 * report with itself and with an empty one, for each engine kind. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#include "checks/checks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *r = json_loadb((const char *)data, size, 0, NULL);
	if (!r)
		return 0;
	json_t *out = json_array(), *empty = json_object();
	cr_checks_node(r, (uint64_t)size << 20, out);
	static const char *const engines[] = { "vllm", "sglang", "llama.cpp", "custom" };
	struct cr_group_limits lim;
	cr_group_limits_defaults(&lim);
	for (int e = 0; e < 4; e++) {
		char key[512];
		cr_checks_group_key(r, engines[e], true, key, sizeof(key));
		struct cr_group_member ms[3] = { { "a", "a", r, true, 1, -1 }, { "b", "b", r, false, 2, -1 }, { "c", "c", empty, true, 0, -1 } };
		cr_checks_group(ms, 3, engines[e], e == 0, e == 1, &lim, out);
	}
	char line[256];
	cr_checks_summary(out, CR_CHECK_PASS, line, sizeof(line));
	int w, f;
	cr_checks_worst(out, &w, &f);
	if (w < 0 || f < 0)
		abort();
	json_decref(out);
	json_decref(empty);
	json_decref(r);
	return 0;
}
