/* Engine metrics under one vocabulary, see emetrics.h. */
#include "agent/emetrics.h"

#include <string.h>

#include "base/buf.h"
#include "base/prom.h"

static const struct {
	const char *engine_name;
	enum cr_em what;
	double scale;
} map[] = {
	{ "llamacpp:kv_cache_usage_ratio", CR_EM_KV_CACHE_USAGE, 1 },
	{ "llamacpp:requests_processing", CR_EM_RUNNING, 1 },
	{ "llamacpp:requests_deferred", CR_EM_WAITING, 1 },
	{ "llamacpp:prompt_tokens_total", CR_EM_PROMPT_TOKENS, 1 },
	{ "llamacpp:tokens_predicted_total", CR_EM_GENERATION_TOKENS, 1 },
	{ "vllm:kv_cache_usage_perc", CR_EM_KV_CACHE_USAGE, 1 }, /* a ratio despite its name */
	{ "vllm:gpu_cache_usage_perc", CR_EM_KV_CACHE_USAGE, 1 },
	{ "vllm:num_requests_running", CR_EM_RUNNING, 1 },
	{ "vllm:num_requests_waiting", CR_EM_WAITING, 1 },
	{ "vllm:prompt_tokens_total", CR_EM_PROMPT_TOKENS, 1 },
	{ "vllm:generation_tokens_total", CR_EM_GENERATION_TOKENS, 1 },
	{ "sglang:token_usage", CR_EM_KV_CACHE_USAGE, 1 },
	{ "sglang:num_running_reqs", CR_EM_RUNNING, 1 },
	{ "sglang:num_queue_reqs", CR_EM_WAITING, 1 },
	{ "sglang:prompt_tokens_total", CR_EM_PROMPT_TOKENS, 1 },
	{ "sglang:generation_tokens_total", CR_EM_GENERATION_TOKENS, 1 },
};

static const struct {
	const char *name, *type, *help;
} fams[CR_EM_COUNT] = {
	{ "corral_engine_kv_cache_usage_ratio", "gauge", "Share of the engine's KV cache in use, 0 to 1." },
	{ "corral_engine_requests_running", "gauge", "Requests the engine is processing." },
	{ "corral_engine_requests_waiting", "gauge", "Requests queued in the engine." },
	{ "corral_engine_prompt_tokens_total", "counter", "Prompt tokens the engine processed." },
	{ "corral_engine_generation_tokens_total", "counter", "Tokens the engine generated." },
};

struct parse_ctx {
	struct cr_engine_stats *st;
	int found;
};

static void on_sample(const char *name, const char *labels, double value, void *arg)
{
	struct parse_ctx *c = arg;
	(void)labels;
	if (value != value || value < 0 || value > 1e18) /* NaN, or nothing an engine counts */
		return;
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(name, map[i].engine_name) != 0)
			continue;
		unsigned bit = 1u << map[i].what;
		if (!(c->st->has & bit)) {
			c->st->v[map[i].what] = 0;
			c->found++;
		}
		c->st->has |= bit;
		c->st->v[map[i].what] += value * map[i].scale;
		return;
	}
}

int cr_engine_stats_parse(const char *text, size_t len, struct cr_engine_stats *st)
{
	memset(st, 0, sizeof(*st));
	struct parse_ctx c = { st, 0 };
	cr_prom_parse(text, len, on_sample, &c);
	return c.found;
}

void cr_engine_stats_write(struct cr_buf *b, const struct cr_engine_stats_row *rows, size_t n)
{
	for (int f = 0; f < CR_EM_COUNT; f++) {
		cr_prom_family(b, fams[f].name, fams[f].type, fams[f].help);
		for (size_t r = 0; r < n; r++) {
			if (!(rows[r].stats.has & (1u << f)))
				continue;
			const char *l[] = { "model", rows[r].model, "instance", rows[r].instance, NULL };
			cr_prom_sample(b, fams[f].name, l, rows[r].stats.v[f]);
		}
	}
}
