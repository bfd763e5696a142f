/* Fuzz target: GGUF headers as workers read them from model files: the whole
 * input as a file, then as a prefix of a longer file (the incremental path),
 * and on success the shape extraction, the same header added again as a later
 * part of a split GGUF, and both estimators; and the input as a file name or
 * URL (hub listings name split parts). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "sched/estimate.h"
#include "sched/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void use(const struct cr_gguf *g, uint64_t file)
{
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	struct cr_err err = CR_ERR_INIT;
	if (cr_shape_from_gguf(g, file, &s, &err) == 0) {
		cr_shape_add_gguf_part(&s, g, file, &err); /* its tensors once more, as part 2 */
		struct cr_est_params p = CR_EST_PARAMS_INIT;
		struct cr_estimate e;
		double split[2] = { 1, 3 };
		p.n_ctx = 4096;
		cr_estimate_llama(&s, &p, 2, split, &e, &err);
		cr_estimate_llama(&s, &p, 0, NULL, &e, &err);
		cr_estimate_vllm(&s, &p, 2, 1, &e, &err);
		json_t *j = cr_shape_to_json(&s);
		struct cr_model_shape back = CR_MODEL_SHAPE_INIT;
		cr_shape_from_json(j, &back, &err);
		cr_shape_release(&back);
		json_decref(j);
	}
	cr_shape_release(&s);
}

static void as_name(const uint8_t *data, size_t size)
{
	char name[4097];
	size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;
	memcpy(name, data, n);
	name[n] = '\0';
	unsigned no, count;
	if (cr_gguf_split_name(name, &no, &count)) {
		char *first = cr_gguf_split_sibling(name, 1), *last = cr_gguf_split_sibling(name, count);
		if (!first || !last || cr_gguf_split_sibling(name, count + 1))
			abort(); /* every part in 1..count has a name, none past it */
		free(first);
		free(last);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	as_name(data, size);
	struct cr_gguf *g = NULL;
	struct cr_err err = CR_ERR_INIT;
	uint64_t need = 0;
	if (cr_gguf_parse(data, size, size, &g, &need, &err) == 0) {
		use(g, size);
		cr_gguf_free(g);
	}
	g = NULL;
	if (cr_gguf_parse(data, size, (uint64_t)size * 4 + 4096, &g, &need, &err) == 0) {
		use(g, (uint64_t)size * 4 + 4096);
		cr_gguf_free(g);
	}
	/* a claimed size far beyond the input (a lying server, a sparse file):
	 * memory must follow the bytes given, never the counts claimed */
	g = NULL;
	if (cr_gguf_parse(data, size, 1ull << 50, &g, &need, &err) == 0) {
		use(g, 1ull << 50);
		cr_gguf_free(g);
	}
	return 0;
}
