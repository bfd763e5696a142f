/* Unit tests of model shapes and memory estimates: shapes from GGUF headers
 * and config.json, the KV cache formula with cache types, how llama.cpp's
 * layers are split over devices, and vLLM's per-GPU claim and utilisation. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sched/estimate.h"
#include "gguf_write.h"

/* A llama-shaped header: L layers of E dims, H heads, K KV heads, F FFN;
 * with parts > 1, part `part` (0-based) of it split as llama-gguf-split does
 * (metadata in the first, tensors shared out in order). */
static struct cr_gguf *llama_part(uint32_t L, uint64_t E, uint32_t H, uint32_t K, uint64_t F, uint64_t V, int tied,
				  unsigned part, unsigned parts)
{
	struct cr_gguf_writer *w = cr_gguf_writer_new(3);
	if (part == 0) {
		cr_gguf_w_str(w, "general.architecture", "llama");
		cr_gguf_w_u32(w, "llama.block_count", L);
		cr_gguf_w_u32(w, "llama.embedding_length", (uint32_t)E);
		cr_gguf_w_u32(w, "llama.attention.head_count", H);
		cr_gguf_w_u32(w, "llama.attention.head_count_kv", K);
		cr_gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)F);
		cr_gguf_w_u32(w, "llama.context_length", 4096);
	}
	if (parts > 1) {
		cr_gguf_w_scalar(w, "split.no", CR_GGUF_U16, part);
		cr_gguf_w_scalar(w, "split.count", CR_GGUF_U16, parts);
	}
	unsigned n = 0, total = 2 + L * 8 + !tied;
	uint64_t ev[2] = { E, V }, ee[2] = { E, E }, ek[2] = { E, E / H * K }, ef[2] = { E, F }, fe[2] = { F, E }, e1[1] = { E };
#define MINE() (n++ * parts / total == part)
	if (MINE())
		cr_gguf_w_tensor(w, "token_embd.weight", 2, ev, 1);
	for (uint32_t l = 0; l < L; l++) {
		char nm[64];
#define T(suffix, nd, ne, ty) \
	if (MINE()) (snprintf(nm, sizeof(nm), "blk.%u.%s", l, suffix), cr_gguf_w_tensor(w, nm, nd, ne, ty))
		T("attn_norm.weight", 1, e1, 0);
		T("attn_q.weight", 2, ee, 8);
		T("attn_k.weight", 2, ek, 8);
		T("attn_v.weight", 2, ek, 8);
		T("attn_output.weight", 2, ee, 8);
		T("ffn_gate.weight", 2, ef, 8);
		T("ffn_up.weight", 2, ef, 8);
		T("ffn_down.weight", 2, fe, 8);
#undef T
	}
	if (MINE())
		cr_gguf_w_tensor(w, "output_norm.weight", 1, e1, 0);
	if (!tied && MINE())
		cr_gguf_w_tensor(w, "output.weight", 2, ev, 8);
#undef MINE
	size_t len;
	uint8_t *h = cr_gguf_writer_header(w, &len);
	struct cr_gguf *g = NULL;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_gguf_parse(h, len, len + cr_gguf_writer_data_size(w), &g, NULL, &err), 0, "%s", err.message);
	free(h);
	cr_gguf_writer_free(w);
	return g;
}

static struct cr_gguf *llama_header(uint32_t L, uint64_t E, uint32_t H, uint32_t K, uint64_t F, uint64_t V, int tied)
{
	return llama_part(L, E, H, K, F, V, tied, 0, 1);
}

Test(estimate, shape_from_gguf_counts_layers_input_and_output)
{
	struct cr_gguf *g = llama_header(4, 256, 8, 2, 512, 1000, 0);
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	cr_assert_eq(cr_shape_from_gguf(g, 123, &s, NULL), 0);
	cr_assert_eq(s.n_layer, 4);
	cr_assert_eq(s.n_head_kv, 2);
	cr_assert_eq(s.head_dim_k, 32);
	cr_assert_eq(s.n_ctx_train, 4096);
	uint64_t q8 = 256 / 32 * 34; /* one Q8_0 row of 256 */
	uint64_t layer = 256 * 4 + q8 * (256 + 64 + 64 + 256 + 512 + 512) + 512 / 32 * 34 * 256;
	cr_assert_eq(s.layer_bytes[0], layer);
	cr_assert_eq(s.input_bytes, 256 * 1000 * 2, "F16 embeddings stay in host memory");
	cr_assert_eq(s.output_bytes, 256 * 4 + q8 * 1000);
	json_t *j = cr_shape_to_json(&s);
	struct cr_model_shape back = CR_MODEL_SHAPE_INIT;
	cr_assert_eq(cr_shape_from_json(j, &back, NULL), 0);
	cr_assert_eq(back.layer_bytes[3], layer);
	cr_assert_eq(back.output_bytes, s.output_bytes);
	json_object_set_new(j, "layer_bytes", json_array());
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_shape_from_json(j, &back, &err), CR_EINPUT, "a short layer list is refused");
	json_decref(j);
	cr_shape_release(&back);
	cr_shape_release(&s);
	cr_gguf_free(g);
	g = llama_header(2, 64, 4, 4, 128, 100, 1);
	cr_assert_eq(cr_shape_from_gguf(g, 1, &s, NULL), 0);
	cr_assert_eq(s.output_bytes, 64 * 4 + 64 * 100 * 2, "tied: the embeddings again for the output device");
	cr_shape_release(&s);
	cr_gguf_free(g);
}

Test(estimate, shape_needs_the_architecture_keys)
{
	struct cr_gguf_writer *w = cr_gguf_writer_new(3);
	cr_gguf_w_str(w, "general.architecture", "qwen2");
	cr_gguf_w_u32(w, "qwen2.embedding_length", 64);
	size_t len;
	uint8_t *h = cr_gguf_writer_header(w, &len);
	struct cr_gguf *g = NULL;
	cr_assert_eq(cr_gguf_parse(h, len, len, &g, NULL, NULL), 0);
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_shape_from_gguf(g, len, &s, &err), CR_EINPUT);
	cr_assert_str_eq(err.message, "GGUF metadata has no valid 'qwen2.block_count'");
	cr_assert(err.fix[0]);
	cr_gguf_free(g);
	free(h);
	cr_gguf_writer_free(w);
}

static struct cr_model_shape flat(uint32_t L, uint64_t layer_bytes)
{
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	s.n_layer = L;
	s.n_embd = 4096;
	s.n_head = 32;
	s.n_head_kv = 8;
	s.head_dim_k = s.head_dim_v = 128;
	s.n_ff = 14336;
	s.n_vocab = 32000;
	s.n_ctx_train = 8192;
	s.layer_bytes = calloc(L, sizeof(uint64_t));
	for (uint32_t l = 0; l < L; l++)
		s.layer_bytes[l] = layer_bytes;
	s.input_bytes = s.output_bytes = 100 * CR_MIB;
	s.weight_bytes = L * layer_bytes + 200 * CR_MIB;
	snprintf(s.format, sizeof(s.format), "gguf");
	return s;
}

Test(estimate, kv_cache_follows_context_layers_and_cache_type)
{
	struct cr_model_shape s = flat(32, 100 * CR_MIB);
	struct cr_est_params p = CR_EST_PARAMS_INIT;
	struct cr_estimate e;
	p.n_ctx = 8192;
	cr_assert_eq(cr_estimate_llama(&s, &p, 1, NULL, &e, NULL), 0);
	cr_assert_eq(e.kv, 8192ull * 32 * (1024 + 1024) * 2, "n_ctx x n_layer x (k + v) x f16");
	p.cache_type_k = p.cache_type_v = cr_ggml_type_from_name("q8_0");
	cr_assert_eq(cr_estimate_llama(&s, &p, 1, NULL, &e, NULL), 0);
	cr_assert_eq(e.kv, 8192ull * 32 * 2 * (1024 / 32 * 34));
	p.cache_type_k = 99;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_estimate_llama(&s, &p, 1, NULL, &e, &err), CR_EINPUT);
	p.cache_type_k = -1;
	p.n_ctx = 0;
	cr_assert_eq(cr_estimate_llama(&s, &p, 1, NULL, &e, NULL), 0);
	cr_assert_eq(e.n_ctx, 8192, "0 = the model's training context");
	cr_shape_release(&s);
}

Test(estimate, layers_split_like_llama_cpp)
{
	struct cr_model_shape s = flat(8, 100 * CR_MIB);
	struct cr_est_params p = CR_EST_PARAMS_INIT;
	struct cr_estimate e;
	p.n_ctx = 1024;
	double split[2] = { 1, 1 };
	cr_assert_eq(cr_estimate_llama(&s, &p, 2, split, &e, NULL), 0);
	/* 9 units (8 layers + output) cut at 1/2: units 0-4 on the first GPU */
	cr_assert_eq(e.dev[0].layers, 5);
	cr_assert_eq(e.dev[1].layers, 3);
	cr_assert(e.dev[1].output && !e.dev[0].output, "the output layer goes to the last device");
	cr_assert_eq(e.dev[0].weights, 500 * CR_MIB);
	cr_assert_eq(e.dev[1].weights, 400 * CR_MIB, "3 layers + the output layer");
	cr_assert_eq(e.dev[0].overhead, CR_EST_GPU_RUNTIME);
	cr_assert_eq(e.vram, e.dev[0].total + e.dev[1].total);
	p.n_gpu_layers = 4; /* the last 4 units: layers 5-7 and the output */
	cr_assert_eq(cr_estimate_llama(&s, &p, 1, NULL, &e, NULL), 0);
	cr_assert_eq(e.dev[0].layers, 3);
	cr_assert(e.dev[0].output);
	cr_assert_geq(e.ram, 100 * CR_MIB + 5 * 100 * CR_MIB, "embeddings and 5 layers stay in RAM");
	cr_assert_eq(cr_estimate_llama(&s, &p, 0, NULL, &e, NULL), 0);
	cr_assert_eq(e.vram, 0);
	cr_assert_geq(e.ram, s.weight_bytes, "CPU only: everything in RAM");
	cr_shape_release(&s);
}

Test(estimate, vllm_claim_per_gpu_and_utilisation)
{
	json_t *cfg = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:s}", "model_type", "llama", "num_hidden_layers", 32,
				"hidden_size", 4096, "num_attention_heads", 32, "num_key_value_heads", 8, "intermediate_size",
				14336, "vocab_size", 128256, "torch_dtype", "bfloat16");
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	cr_assert_eq(cr_shape_from_config(cfg, 16 * CR_GIB, &s, NULL), 0);
	cr_assert_eq(s.head_dim_k, 128);
	struct cr_est_params p = CR_EST_PARAMS_INIT;
	p.n_ctx = 8192;
	p.n_parallel = 4;
	struct cr_estimate one, two;
	cr_assert_eq(cr_estimate_vllm(&s, &p, 1, 1, &one, NULL), 0);
	cr_assert_eq(one.kv, 2ull * 32 * 8 * 128 * 2 * 8192 * 4, "KV per token x context x sequences");
	cr_assert_eq(cr_estimate_vllm(&s, &p, 2, 1, &two, NULL), 0);
	cr_assert_eq(two.n_dev, 2);
	cr_assert_eq(two.dev[0].weights, 8 * CR_GIB, "weights split over the tensor-parallel group");
	cr_assert_lt(two.dev[0].total, one.dev[0].total);
	double u = cr_estimate_gpu_util(one.dev[0].total, 80 * CR_GIB);
	cr_assert_geq(u * 80 * (double)CR_GIB, (double)one.dev[0].total, "the utilisation covers the claim");
	cr_assert_lt((u - 0.01) * 80 * (double)CR_GIB, (double)one.dev[0].total, "rounded up by at most 0.01");
	cr_assert_float_eq(cr_estimate_gpu_util(100 * CR_GIB, 80 * CR_GIB), 0.95, 1e-9, "capped at 0.95");
	json_t *bad = json_pack("{s:i}", "hidden_size", 64);
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_shape_from_config(bad, 1, &s, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "num_hidden_layers"), "%s", err.message);
	json_decref(bad);
	json_decref(cfg);
	cr_shape_release(&s);
}

/* DeepSeek V3's config.json: 61 layers, 128 heads of 56 by the naive
 * formula, but multi-head latent attention caches 512 + 64 values per token
 * and layer. The naive estimate was about 25 times too large. */
Test(estimate, mla_caches_one_latent_per_token_and_layer)
{
	json_t *cfg = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:s}", "model_type", "deepseek_v3",
				"num_hidden_layers", 61, "hidden_size", 7168, "num_attention_heads", 128,
				"num_key_value_heads", 128, "kv_lora_rank", 512, "qk_rope_head_dim", 64, "vocab_size",
				129280, "max_position_embeddings", 163840, "torch_dtype", "bfloat16");
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	cr_assert_eq(cr_shape_from_config(cfg, 600 * CR_GIB, &s, NULL), 0);
	struct cr_est_params p = CR_EST_PARAMS_INIT;
	p.n_ctx = 8192;
	struct cr_estimate e;
	cr_assert_eq(cr_estimate_vllm(&s, &p, 8, 1, &e, NULL), 0);
	cr_assert_eq(e.kv, 61ull * (512 + 64) * 2 * 8192, "one latent of 576 bf16 values per token and layer");
	uint64_t naive = 2ull * 61 * 128 * (7168 / 128) * 2 * 8192;
	cr_assert_gt(naive / e.kv, 20, "the old formula was %" PRIu64 "x too large", naive / e.kv);
	cr_shape_release(&s);
	json_decref(cfg);
}

/* Multimodal configs keep the language model's shape in a nested object. */
Test(estimate, nested_text_and_thinker_configs_are_read)
{
	json_t *inner = json_pack("{s:i,s:i,s:i,s:i}", "num_hidden_layers", 28, "hidden_size", 3584,
				  "num_attention_heads", 28, "num_key_value_heads", 4);
	json_t *omni = json_pack("{s:s,s:{s:O}}", "model_type", "qwen2_5_omni", "thinker_config", "text_config", inner);
	json_t *thinker_only = json_pack("{s:s,s:O}", "model_type", "x", "thinker_config", inner);
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	cr_assert_eq(cr_shape_from_config(omni, CR_GIB, &s, NULL), 0);
	cr_assert_eq(s.n_layer, 28);
	cr_assert_eq(s.n_head_kv, 4);
	cr_assert_eq(cr_shape_from_config(thinker_only, CR_GIB, &s, NULL), 0);
	cr_assert_eq(s.n_embd, 3584);
	cr_shape_release(&s);
	json_decref(inner);
	json_decref(omni);
	json_decref(thinker_only);
}

/* A hostile config.json must not size an allocation. */
Test(estimate, a_config_with_absurd_layers_is_refused)
{
	json_t *cfg = json_pack("{s:I,s:i,s:i}", "num_hidden_layers", (json_int_t)2000000000, "hidden_size", 64,
				"num_attention_heads", 4);
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_shape_from_config(cfg, CR_GIB, &s, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "at most 4096"), "%s", err.message);
	cr_shape_release(&s);
	json_decref(cfg);
}

/* A reader over made-up files: "m-0000K-of-0000N.gguf" is part K of a
 * split model (missing ones listed in arg), anything else the whole model. */
static int fake_reader(const char *source, struct cr_gguf **g, uint64_t *size, void *arg, struct cr_err *err)
{
	unsigned no = 1, count = 1;
	const char *missing = arg;
	bool split = cr_gguf_split_name(source, &no, &count);
	if (missing && strstr(missing, source))
		return cr_err_set(err, -ENOENT, "x", "no %s", source);
	int tied = strstr(source, "tied") != NULL;
	*g = llama_part(3, 64, 4, 2, 128, 100, tied, split ? no - 1 : 0, split ? count : 1);
	*size = 1000;
	return 0;
}

Test(estimate, split_gguf_names)
{
	unsigned no, count;
	cr_assert(cr_gguf_split_name("/m/Qwen-Q4_K_M-00002-of-00003.gguf", &no, &count));
	cr_assert_eq(no, 2);
	cr_assert_eq(count, 3);
	cr_assert_not(cr_gguf_split_name("model.gguf", &no, &count));
	cr_assert_not(cr_gguf_split_name("m-00004-of-00003.gguf", &no, &count), "a part past the count");
	cr_assert_not(cr_gguf_split_name("m-0000x-of-00003.gguf", &no, &count));
	cr_assert_not(cr_gguf_split_name("m-00001-of-00003.bin", &no, &count));
	char *s = cr_gguf_split_sibling("http://h/r/resolve/abc/Q4/m-00001-of-00003.gguf", 3);
	cr_assert_str_eq(s, "http://h/r/resolve/abc/Q4/m-00003-of-00003.gguf");
	free(s);
	cr_assert_null(cr_gguf_split_sibling("m-00001-of-00003.gguf", 4));
	cr_assert_null(cr_gguf_split_sibling("m.gguf", 1));
}

Test(estimate, a_split_gguf_is_one_model_over_all_its_parts)
{
	struct cr_model_shape whole = CR_MODEL_SHAPE_INIT, split = CR_MODEL_SHAPE_INIT;
	struct cr_err err = CR_ERR_INIT;
	for (int tied = 0; tied <= 1; tied++) {
		const char *one = tied ? "tied.gguf" : "m.gguf", *first = tied ? "tied-00001-of-00004.gguf" : "m-00001-of-00003.gguf";
		cr_assert_eq(cr_shape_from_gguf_source(one, fake_reader, NULL, &whole, &err), 0, "%s", err.message);
		cr_assert_eq(cr_shape_from_gguf_source(first, fake_reader, NULL, &split, &err), 0, "%s", err.message);
		cr_assert_eq(split.weight_bytes, whole.weight_bytes);
		cr_assert_eq(split.input_bytes, whole.input_bytes);
		cr_assert_eq(split.output_bytes, whole.output_bytes, "tied %d: %llu vs %llu", tied,
			     (unsigned long long)split.output_bytes, (unsigned long long)whole.output_bytes);
		for (uint32_t l = 0; l < 3; l++)
			cr_assert_eq(split.layer_bytes[l], whole.layer_bytes[l]);
		cr_assert_eq(split.file_bytes, tied ? 4000 : 3000, "the size of every part");
		cr_assert_eq(whole.file_bytes, 1000);
	}
	cr_assert_eq(cr_shape_from_gguf_source("m-00002-of-00003.gguf", fake_reader, NULL, &split, &err), CR_EINPUT);
	cr_assert_str_eq(err.message, "'m-00002-of-00003.gguf' is part 2 of a split GGUF of 3 parts");
	cr_assert(strstr(err.fix, "m-00001-of-00003.gguf"), "%s", err.fix);
	cr_assert_eq(cr_shape_from_gguf_source("m-00001-of-00003.gguf", fake_reader, (void *)"m-00003-of-00003.gguf", &split,
					       &err),
		     CR_EINPUT);
	cr_assert_str_eq(err.message, "part 3 of 3 of the split GGUF is missing: m-00003-of-00003.gguf");
	cr_assert_null(split.layer_bytes, "nothing half-filled is left");
	cr_shape_release(&whole);
	cr_shape_release(&split);
}
