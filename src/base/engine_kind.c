/* The engine names Corral knows, see engine_kind.h. */
#include "base/engine_kind.h"

#include <stddef.h>
#include <string.h>

static const struct {
	const char *name;
	enum cr_engine_kind kind;
} known[] = {
	{ "llama.cpp", CR_ENGINE_LLAMA },
	{ "vllm", CR_ENGINE_VLLM_LIKE },
	{ "sglang", CR_ENGINE_VLLM_LIKE },
	{ "ray", CR_ENGINE_RAY },
};

enum cr_engine_kind cr_engine_kind(const char *name)
{
	for (size_t i = 0; name && i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(name, known[i].name))
			return known[i].kind;
	return CR_ENGINE_CUSTOM;
}

bool cr_engine_vllm_like(const char *name)
{
	return cr_engine_kind(name) == CR_ENGINE_VLLM_LIKE;
}

bool cr_engine_on_python(const char *name)
{
	enum cr_engine_kind k = cr_engine_kind(name);
	return k == CR_ENGINE_VLLM_LIKE || k == CR_ENGINE_RAY;
}
