/* What Corral knows about engines by name, in one place: which ones are
 * vLLM-like (tensor x pipeline parallel, Ray or their own launcher, GPUs
 * only, Python), which one splits models over workers with RPC, which ones
 * run on Python. The commands that launch them live in the worker's catalog
 * (agent/engines.c); this is what the scheduler, the checks and the worker
 * all need to agree on. */
#ifndef CR_BASE_ENGINE_KIND_H
#define CR_BASE_ENGINE_KIND_H

#include <stdbool.h>

enum cr_engine_kind {
	CR_ENGINE_LLAMA,     /* llama.cpp: any device, layers split unevenly, RPC across workers */
	CR_ENGINE_VLLM_LIKE, /* vLLM, SGLang: GPUs only, tp x pp equal parts, Ray across workers */
	CR_ENGINE_RAY,       /* the Ray runtime the vLLM-like engines use */
	CR_ENGINE_CUSTOM,    /* a user's engine: one worker, trusted with any device */
};

/* The kind of an engine by name; NULL or unknown names are CR_ENGINE_CUSTOM. */
enum cr_engine_kind cr_engine_kind(const char *name);

/* vLLM or SGLang. */
bool cr_engine_vllm_like(const char *name);

/* Whether the engine runs on Python (its nodes report a Python version). */
bool cr_engine_on_python(const char *name);

#endif
