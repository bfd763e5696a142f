/* Engines' own metrics (llama.cpp's llamacpp:*, vLLM's vllm:*, SGLang's
 * sglang:*) read from their /metrics text and put under one vocabulary, which
 * the worker's GET /metrics re-exports per model and instance. */
#ifndef CR_AGENT_EMETRICS_H
#define CR_AGENT_EMETRICS_H

#include <stddef.h>

struct cr_buf;

enum cr_em {
	CR_EM_KV_CACHE_USAGE,   /* corral_engine_kv_cache_usage_ratio, 0..1 */
	CR_EM_RUNNING,          /* corral_engine_requests_running */
	CR_EM_WAITING,          /* corral_engine_requests_waiting */
	CR_EM_PROMPT_TOKENS,    /* corral_engine_prompt_tokens_total */
	CR_EM_GENERATION_TOKENS, /* corral_engine_generation_tokens_total */
	CR_EM_COUNT
};

struct cr_engine_stats {
	double v[CR_EM_COUNT];
	unsigned has;           /* bit (1 << enum cr_em) when the engine gave it */
};

/* Read an engine's /metrics text (untrusted) into st. Samples with labels
 * are summed (vLLM labels by model_name). Returns the number of values
 * found. */
int cr_engine_stats_parse(const char *text, size_t len, struct cr_engine_stats *st);

/* One engine of the worker for cr_engine_stats_write. */
struct cr_engine_stats_row {
	const char *model, *instance;
	struct cr_engine_stats stats;
};

/* The families of the vocabulary with a sample per row that has the value. */
void cr_engine_stats_write(struct cr_buf *b, const struct cr_engine_stats_row *rows, size_t n);

#endif
