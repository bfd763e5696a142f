/* Engine discovery by executable name; versions and health come with the
 * supervisor. */
#include "agent/engines.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/mem.h"

static const struct {
	const char *engine;
	const char *exe;
} known[] = {
	{ "llama.cpp", "llama-server" },
	{ "llama.cpp-rpc", "ggml-rpc-server" },
	{ "llama.cpp-rpc", "rpc-server" },
	{ "vllm", "vllm" },
	{ "sglang", "sglang" },
};

static char *find_in(const char *dirs, const char *exe)
{
	if (!dirs || !*dirs)
		return NULL;
	char *copy = cr_xstrdup(dirs), *save = NULL, *found = NULL;
	for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		char *p = cr_xasprintf("%s/%s", d, exe);
		if (access(p, X_OK) == 0)
			found = p;
		else
			free(p);
	}
	free(copy);
	return found;
}

json_t *cr_engines_detect(void)
{
	json_t *out = json_array();
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		bool have = false;
		size_t k;
		json_t *e;
		json_array_foreach(out, k, e)
			have |= strcmp(json_string_value(json_object_get(e, "name")), known[i].engine) == 0;
		if (have)
			continue;
		char *path = find_in(getenv("CORRAL_ENGINE_PATH"), known[i].exe);
		if (!path)
			path = find_in(getenv("PATH"), known[i].exe);
		if (path)
			json_array_append_new(out, json_pack("{s:s,s:s}", "name", known[i].engine, "path", path));
		free(path);
	}
	return out;
}
