/* Memory estimates. llama.cpp's buffers were measured on real llama-server
 * logs (docs/internals/estimate.md): weights are the tensor bytes, the KV cache
 * is context x layers x (K + V row bytes), the output buffer holds one row of
 * logits per sequence, and the compute buffer is linear in the micro-batch. */
#include "sched/estimate.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

static bool arch_u32(const struct cr_gguf *g, const char *arch, const char *key, uint32_t *out)
{
	char k[128];
	uint64_t v;
	snprintf(k, sizeof(k), "%s.%s", arch, key);
	if (!cr_gguf_get_u64(g, k, &v) || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static void copy_str(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "");
}

/* The layer number of a "blk.N.*" tensor, or -1. */
static long layer_of(const char *name)
{
	if (strncmp(name, "blk.", 4) != 0)
		return -1;
	char *end;
	long n = strtol(name + 4, &end, 10);
	return end != name + 4 && *end == '.' ? n : -1;
}

/* Multi-head latent attention (DeepSeek V2/V3/R1): the cache holds one
 * compressed latent of kv_lora_rank plus the rotary part per token and
 * layer, shared by every head, instead of K and V per KV head. */
static void set_mla(struct cr_model_shape *s, uint32_t kv_lora_rank, uint32_t rope_dim)
{
	s->n_head_kv = 1;
	s->head_dim_k = kv_lora_rank + rope_dim;
	s->head_dim_v = 0;
}

/* Adds g's tensors to the shape: per layer, input or output. A tied output
 * (no output.weight) loads the embeddings again; a later part of a split
 * GGUF that holds output.weight takes that back. */
static void add_tensors(struct cr_model_shape *s, const struct cr_gguf *g)
{
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct cr_gguf_tensor *t = &g->tensors[i];
		long l = layer_of(t->name);
		if (l >= 0 && l < (long)s->n_layer) {
			s->layer_bytes[l] += t->bytes;
		} else if (strncmp(t->name, "output", 6) == 0 && (t->name[6] == '.' || t->name[6] == '_')) {
			s->output_bytes += t->bytes;
			if (strcmp(t->name, "output.weight") == 0 && !s->untied) {
				s->untied = true;
				s->output_bytes -= s->tied_bytes;
				s->tied_bytes = 0;
			}
		} else {
			s->input_bytes += t->bytes;
			if (strcmp(t->name, "token_embd.weight") == 0 && !s->untied) {
				s->tied_bytes += t->bytes;
				s->output_bytes += t->bytes; /* llama.cpp loads the tied projection again for the output device */
			}
		}
	}
	s->weight_bytes += g->data_bytes;
}

int cr_shape_from_gguf(const struct cr_gguf *g, uint64_t file_bytes, struct cr_model_shape *s, struct cr_err *err)
{
	static const char fix[] = "the file lacks what llama.cpp needs to load it; re-convert it with a current llama.cpp";
	const char *arch = cr_gguf_get_str(g, "general.architecture");
	cr_shape_release(s);
	memset(s, 0, sizeof(*s));
	if (!arch)
		return cr_err_set(err, CR_EINPUT, fix, "GGUF metadata has no 'general.architecture'");
	copy_str(s->format, sizeof(s->format), "gguf");
	copy_str(s->arch, sizeof(s->arch), arch);
	s->file_bytes = file_bytes;
	if (!arch_u32(g, arch, "block_count", &s->n_layer) || s->n_layer == 0 || s->n_layer > 4096)
		return cr_err_set(err, CR_EINPUT, fix, "GGUF metadata has no valid '%s.block_count'", arch);
	if (!arch_u32(g, arch, "embedding_length", &s->n_embd) || s->n_embd == 0)
		return cr_err_set(err, CR_EINPUT, fix, "GGUF metadata has no valid '%s.embedding_length'", arch);
	if (!arch_u32(g, arch, "attention.head_count", &s->n_head) || s->n_head == 0)
		return cr_err_set(err, CR_EINPUT, fix, "GGUF metadata has no scalar '%s.attention.head_count'", arch);
	if (!arch_u32(g, arch, "attention.head_count_kv", &s->n_head_kv))
		s->n_head_kv = s->n_head;
	if (!arch_u32(g, arch, "attention.key_length", &s->head_dim_k))
		s->head_dim_k = s->n_embd / s->n_head;
	if (!arch_u32(g, arch, "attention.value_length", &s->head_dim_v))
		s->head_dim_v = s->head_dim_k;
	uint32_t lora = 0, rope = 0;
	if (arch_u32(g, arch, "attention.kv_lora_rank", &lora) && lora) {
		if (!arch_u32(g, arch, "rope.dimension_count", &rope) || !rope)
			rope = 64;
		set_mla(s, lora, rope);
	}
	arch_u32(g, arch, "feed_forward_length", &s->n_ff);
	if (!arch_u32(g, arch, "context_length", &s->n_ctx_train))
		s->n_ctx_train = 4096;
	if (!arch_u32(g, arch, "vocab_size", &s->n_vocab)) {
		const struct cr_gguf_kv *tok = cr_gguf_find(g, "tokenizer.ggml.tokens");
		const struct cr_gguf_tensor *emb = cr_gguf_tensor(g, "token_embd.weight");
		s->n_vocab = tok && tok->type == CR_GGUF_ARRAY ? (uint32_t)tok->arr_len : emb && emb->n_dims > 1 ? (uint32_t)emb->ne[1] : 0;
	}
	s->layer_bytes = cr_xcalloc(s->n_layer, sizeof(*s->layer_bytes));
	add_tensors(s, g);
	return 0;
}

int cr_shape_add_gguf_part(struct cr_model_shape *s, const struct cr_gguf *g, uint64_t file_bytes, struct cr_err *err)
{
	if (!s->layer_bytes || strcmp(s->format, "gguf") != 0)
		return cr_err_set(err, CR_EINPUT, "inspect the first part first", "no GGUF shape to add a part to");
	s->file_bytes += file_bytes;
	add_tensors(s, g);
	return 0;
}

int cr_shape_from_gguf_source(const char *source, cr_gguf_reader read, void *arg, struct cr_model_shape *s,
			      struct cr_err *err)
{
	struct cr_gguf *g = NULL;
	uint64_t size = 0, count = 0, idx = 0;
	unsigned no = 0, named = 0;
	int rc = read(source, &g, &size, arg, err);
	if (rc)
		return rc;
	if (!cr_gguf_get_u64(g, "split.count", &count) || count <= 1) {
		rc = cr_shape_from_gguf(g, size, s, err);
		cr_gguf_free(g);
		return rc;
	}
	cr_gguf_get_u64(g, "split.no", &idx);
	bool first = cr_gguf_split_name(source, &no, &named) && no == 1 && named == count && idx == 0;
	if (!first) {
		char *one = cr_gguf_split_sibling(source, 1);
		rc = cr_err_set(err, CR_EINPUT, NULL, "'%s' is part %llu of a split GGUF of %llu parts", source,
				(unsigned long long)idx + 1, (unsigned long long)count);
		if (err)
			snprintf(err->fix, sizeof(err->fix), "give the first part%s%s, with the other parts beside it",
				 one ? ", " : " (PREFIX-00001-of-N.gguf)", one ? one : "");
		free(one);
		cr_gguf_free(g);
		return rc;
	}
	rc = cr_shape_from_gguf(g, size, s, err);
	cr_gguf_free(g);
	for (unsigned k = 2; rc == 0 && k <= count; k++) {
		char *part = cr_gguf_split_sibling(source, k);
		g = NULL;
		rc = read(part, &g, &size, arg, err);
		if (rc == -ENOENT || rc == CR_ENOTFOUND) {
			rc = cr_err_set(err, CR_EINPUT, NULL, "part %u of %llu of the split GGUF is missing: %s", k,
					(unsigned long long)count, part);
			if (err)
				snprintf(err->fix, sizeof(err->fix), "put every part beside the first, named "
								   "PREFIX-0000K-of-%05llu.gguf (llama.cpp looks for them there)",
					 (unsigned long long)count);
		} else if (rc == 0) {
			uint64_t pno = 0;
			if (!cr_gguf_get_u64(g, "split.no", &pno) || pno != k - 1)
				rc = cr_err_set(err, CR_EINPUT, "re-download or re-split the model (llama-gguf-split)",
						"'%s' is not part %u of this split GGUF (its split.no is %llu)", part, k,
						(unsigned long long)pno + 1);
			else
				rc = cr_shape_add_gguf_part(s, g, size, err);
		}
		cr_gguf_free(g);
		free(part);
	}
	if (rc)
		cr_shape_release(s);
	return rc;
}

static uint32_t cfg_u32(json_t *c, const char *k)
{
	json_t *v = json_object_get(c, k);
	return json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= UINT32_MAX
		       ? (uint32_t)json_integer_value(v)
		       : 0;
}

int cr_shape_from_config(json_t *config, uint64_t weight_bytes, struct cr_model_shape *s, struct cr_err *err)
{
	static const char fix[] = "the model directory needs the config.json it was published with";
	cr_shape_release(s);
	memset(s, 0, sizeof(*s));
	/* the language model's part of multimodal configs */
	json_t *thinker = json_object_get(config, "thinker_config");
	json_t *c = json_object_get(config, "text_config");
	if (!json_is_object(c) && json_is_object(thinker))
		c = json_is_object(json_object_get(thinker, "text_config")) ? json_object_get(thinker, "text_config")
									      : thinker;
	if (!json_is_object(c))
		c = json_object_get(config, "llm_config");
	if (!json_is_object(c))
		c = config;
	copy_str(s->format, sizeof(s->format), "safetensors");
	copy_str(s->arch, sizeof(s->arch), json_string_value(json_object_get(config, "model_type")));
	const char *dtype = json_string_value(json_object_get(c, "torch_dtype"));
	if (!dtype)
		dtype = json_string_value(json_object_get(config, "torch_dtype"));
	copy_str(s->dtype, sizeof(s->dtype), dtype ? dtype : "bfloat16");
	s->n_layer = cfg_u32(c, "num_hidden_layers");
	s->n_embd = cfg_u32(c, "hidden_size");
	s->n_head = cfg_u32(c, "num_attention_heads");
	if (!s->n_layer || !s->n_embd || !s->n_head)
		return cr_err_set(err, CR_EINPUT, fix,
				  "config.json lacks num_hidden_layers, hidden_size or num_attention_heads");
	if (s->n_layer > 4096) /* as for GGUF: a hostile config must not size an allocation */
		return cr_err_set(err, CR_EINPUT, fix, "config.json claims %" PRIu32 " hidden layers; at most 4096 are possible",
				  s->n_layer);
	s->n_head_kv = cfg_u32(c, "num_key_value_heads");
	if (!s->n_head_kv)
		s->n_head_kv = s->n_head;
	s->head_dim_k = cfg_u32(c, "head_dim");
	if (!s->head_dim_k)
		s->head_dim_k = s->n_embd / s->n_head;
	s->head_dim_v = s->head_dim_k;
	if (cfg_u32(c, "kv_lora_rank"))
		set_mla(s, cfg_u32(c, "kv_lora_rank"), cfg_u32(c, "qk_rope_head_dim") ? cfg_u32(c, "qk_rope_head_dim") : 64);
	s->n_ff = cfg_u32(c, "intermediate_size");
	s->n_vocab = cfg_u32(c, "vocab_size");
	s->n_ctx_train = cfg_u32(c, "max_position_embeddings");
	if (!s->n_ctx_train)
		s->n_ctx_train = 4096;
	s->weight_bytes = s->file_bytes = weight_bytes;
	s->layer_bytes = cr_xcalloc(s->n_layer, sizeof(*s->layer_bytes));
	for (uint32_t l = 0; l < s->n_layer; l++)
		s->layer_bytes[l] = weight_bytes / s->n_layer;
	return 0;
}

void cr_shape_release(struct cr_model_shape *s)
{
	free(s->layer_bytes);
	s->layer_bytes = NULL;
}

json_t *cr_shape_to_json(const struct cr_model_shape *s)
{
	json_t *layers = json_array();
	for (uint32_t l = 0; s->layer_bytes && l < s->n_layer; l++)
		json_array_append_new(layers, json_integer((json_int_t)s->layer_bytes[l]));
	return json_pack("{s:s,s:s,s:s,s:I,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:I,s:I,s:o}", "format", s->format,
			 "arch", s->arch, "dtype", s->dtype, "file_bytes", (json_int_t)s->file_bytes, "n_layer",
			 (int)s->n_layer, "n_embd", (int)s->n_embd, "n_head", (int)s->n_head, "n_head_kv",
			 (int)s->n_head_kv, "head_dim_k", (int)s->head_dim_k, "head_dim_v", (int)s->head_dim_v, "n_ff",
			 (int)s->n_ff, "n_vocab", (int)s->n_vocab, "n_ctx_train", (int)s->n_ctx_train, "weight_bytes",
			 (json_int_t)s->weight_bytes, "input_bytes", (json_int_t)s->input_bytes, "output_bytes",
			 (json_int_t)s->output_bytes, "layer_bytes", layers);
}

static int get_u(json_t *j, const char *k, uint64_t max, uint64_t *out, struct cr_err *err)
{
	json_t *v = json_object_get(j, k);
	if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
		return cr_err_set(err, CR_EINPUT, "report the model again from an up-to-date worker",
				  "model shape field '%s' is missing or out of range", k);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int cr_shape_from_json(json_t *j, struct cr_model_shape *s, struct cr_err *err)
{
	static const char *const u32_keys[] = { "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim_k",
						"head_dim_v", "n_ff", "n_vocab", "n_ctx_train" };
	uint32_t *u32_slots[] = { &s->n_layer, &s->n_embd, &s->n_head, &s->n_head_kv, &s->head_dim_k,
				  &s->head_dim_v, &s->n_ff, &s->n_vocab, &s->n_ctx_train };
	cr_shape_release(s);
	memset(s, 0, sizeof(*s));
	copy_str(s->format, sizeof(s->format), json_string_value(json_object_get(j, "format")));
	copy_str(s->arch, sizeof(s->arch), json_string_value(json_object_get(j, "arch")));
	copy_str(s->dtype, sizeof(s->dtype), json_string_value(json_object_get(j, "dtype")));
	uint64_t v;
	for (size_t i = 0; i < sizeof(u32_keys) / sizeof(u32_keys[0]); i++) {
		if (get_u(j, u32_keys[i], UINT32_MAX, &v, err))
			return err ? err->code : CR_EINPUT;
		*u32_slots[i] = (uint32_t)v;
	}
	if (get_u(j, "file_bytes", INT64_MAX, &s->file_bytes, err) ||
	    get_u(j, "weight_bytes", INT64_MAX, &s->weight_bytes, err) ||
	    get_u(j, "input_bytes", INT64_MAX, &s->input_bytes, err) ||
	    get_u(j, "output_bytes", INT64_MAX, &s->output_bytes, err))
		return CR_EINPUT;
	json_t *layers = json_object_get(j, "layer_bytes");
	if (!s->n_layer || s->n_layer > 4096 || !s->n_head || !json_is_array(layers) ||
	    json_array_size(layers) != s->n_layer)
		return cr_err_set(err, CR_EINPUT, "report the model again from an up-to-date worker",
				  "model shape has no layers, no heads or a layer_bytes list of the wrong length");
	s->layer_bytes = cr_xcalloc(s->n_layer, sizeof(*s->layer_bytes));
	for (uint32_t l = 0; l < s->n_layer; l++) {
		json_int_t b = json_integer_value(json_array_get(layers, l));
		s->layer_bytes[l] = b > 0 ? (uint64_t)b : 0;
	}
	return 0;
}

/* Bytes of one KV row of n elements of a cache type, rounded up to blocks. */
static uint64_t kv_row(int type, uint64_t n)
{
	uint32_t block, bytes;
	if (!cr_ggml_type_info((uint32_t)type, NULL, &block, &bytes))
		return n * 2;
	return (n + block - 1) / block * bytes;
}

struct resolved {
	uint64_t n_ctx, n_seq, n_ubatch, kv_per_layer, compute, host_compute, output_buf;
};

static int resolve(const struct cr_model_shape *s, const struct cr_est_params *p, struct resolved *r,
		   struct cr_err *err)
{
	int tk = p->cache_type_k < 0 ? 1 : p->cache_type_k, tv = p->cache_type_v < 0 ? 1 : p->cache_type_v;
	if (!cr_ggml_type_info((uint32_t)tk, NULL, NULL, NULL) || !cr_ggml_type_info((uint32_t)tv, NULL, NULL, NULL))
		return cr_err_set(err, CR_EINPUT, "use f16, q8_0 or q4_0", "unknown KV cache type");
	r->n_ctx = p->n_ctx ? p->n_ctx : s->n_ctx_train;
	if (r->n_ctx > (1u << 24))
		return cr_err_set(err, CR_EINPUT, "use a context of at most 16777216 tokens",
				  "context %" PRIu64 " is too large", r->n_ctx);
	r->n_seq = p->n_parallel ? p->n_parallel : 1;
	r->n_ubatch = p->n_ubatch ? p->n_ubatch : 512;
	uint64_t E = s->n_embd, F = s->n_ff, ctx_seq = r->n_ctx / r->n_seq;
	if (ctx_seq == 0)
		ctx_seq = 1;
	r->kv_per_layer = r->n_ctx * (kv_row(tk, (uint64_t)s->head_dim_k * s->n_head_kv) +
				      kv_row(tv, (uint64_t)s->head_dim_v * s->n_head_kv));
	if (p->no_flash_attn) /* KQ scores per head and an f32 mask, plus the residual stream */
		r->compute = r->n_ubatch * 4 * (ctx_seq * (s->n_head + 1ull) + 6 * E);
	else /* FFN and attention activations, plus an f16 mask of the sequence's context */
		r->compute = r->n_ubatch * 4 * (4 * E + 3 * F) + ctx_seq * r->n_ubatch * 2;
	r->host_compute = r->n_ubatch * 4 * 2 * E;
	r->output_buf = (uint64_t)s->n_vocab * 4 * r->n_seq;
	return 0;
}

int cr_estimate_llama(const struct cr_model_shape *s, const struct cr_est_params *p, int n_dev, const double *split,
		      struct cr_estimate *out, struct cr_err *err)
{
	struct resolved r;
	memset(out, 0, sizeof(*out));
	if (n_dev < 0 || n_dev > CR_EST_MAX_DEV)
		return cr_err_set(err, CR_EINPUT, "split the model over fewer GPUs", "%d devices are too many", n_dev);
	int rc = resolve(s, p, &r, err);
	if (rc)
		return rc;
	uint32_t n_layer = s->n_layer;
	uint32_t ngl = n_dev == 0 ? 0 : p->n_gpu_layers < 0 || (uint32_t)p->n_gpu_layers > n_layer + 1 ? n_layer + 1 : (uint32_t)p->n_gpu_layers;
	uint32_t gpu_start = n_layer + 1 - ngl;
	double cum[CR_EST_MAX_DEV], sum = 0;
	for (int d = 0; d < n_dev; d++)
		sum += split && split[d] > 0 ? split[d] : split ? 0 : 1;
	double acc = 0;
	for (int d = 0; d < n_dev; d++) {
		acc += split && split[d] > 0 ? split[d] : split ? 0 : 1;
		cum[d] = sum > 0 ? acc / sum : (double)(d + 1) / n_dev;
	}
	out->n_ctx = (uint32_t)r.n_ctx;
	out->n_dev = n_dev;
	out->layers_offloaded = ngl;
	out->kv = r.kv_per_layer * n_layer;
	out->output = r.output_buf;
	out->weights = s->input_bytes + s->output_bytes;
	for (uint32_t l = 0; l < n_layer; l++)
		out->weights += s->layer_bytes[l];
	uint64_t cpu_weights = s->input_bytes, cpu_kv = 0;
	bool cpu_layers = gpu_start > 0;
	for (uint32_t il = 0; il <= n_layer; il++) {
		uint64_t w = il < n_layer ? s->layer_bytes[il] : s->output_bytes;
		uint64_t kv = il < n_layer ? r.kv_per_layer : 0;
		if (il < gpu_start) {
			cpu_weights += w;
			cpu_kv += kv;
			continue;
		}
		double frac = (double)(il - gpu_start) / ngl;
		int d = 0;
		while (d < n_dev - 1 && frac >= cum[d])
			d++;
		struct cr_est_device *dev = &out->dev[d];
		dev->weights += w;
		dev->kv += kv;
		if (il < n_layer)
			dev->layers++;
		else
			dev->output = true;
	}
	if (s->output_bytes && gpu_start > 0 && s->input_bytes && cpu_weights > s->weight_bytes)
		cpu_weights = s->weight_bytes; /* tied output on the CPU shares the embeddings' memory */
	for (int d = 0; d < n_dev; d++) {
		struct cr_est_device *dev = &out->dev[d];
		if (!dev->layers && !dev->output)
			continue;
		dev->compute = r.compute;
		dev->overhead = CR_EST_GPU_RUNTIME;
		dev->total = dev->weights + dev->kv + dev->compute + dev->overhead;
		out->vram += dev->total;
		out->compute += dev->compute;
	}
	uint64_t host_compute = n_dev == 0 || cpu_layers ? r.compute : r.host_compute;
	out->compute += host_compute;
	out->ram = cpu_weights + cpu_kv + host_compute + r.output_buf;
	if (n_dev == 0) /* CPU only: the weights are mapped once, tied output included */
		out->ram = s->weight_bytes + cpu_kv + host_compute + r.output_buf;
	return 0;
}

static uint64_t dtype_bytes(const char *dtype)
{
	if (strstr(dtype, "float32") || strcmp(dtype, "fp32") == 0)
		return 4;
	if (strstr(dtype, "int8") || strstr(dtype, "fp8") || strstr(dtype, "float8"))
		return 1;
	return 2;
}

#define VLLM_RUNTIME (1024ull * CR_MIB)   /* CUDA context, CUDA graphs, NCCL buffers */
#define VLLM_BATCH_TOKENS 2048ull          /* profiling batch (max_num_batched_tokens) */

int cr_estimate_vllm(const struct cr_model_shape *s, const struct cr_est_params *p, int tp, int pp,
		     struct cr_estimate *out, struct cr_err *err)
{
	struct resolved r;
	memset(out, 0, sizeof(*out));
	if (tp < 1 || pp < 1 || tp * pp > CR_EST_MAX_DEV)
		return cr_err_set(err, CR_EINPUT, "use at most 64 GPUs in one instance",
				  "tensor x pipeline parallel %d x %d is out of range", tp, pp);
	int rc = resolve(s, p, &r, err);
	if (rc)
		return rc;
	uint64_t el = dtype_bytes(s->dtype);
	uint64_t kv_token = (uint64_t)s->n_layer * s->n_head_kv * ((uint64_t)s->head_dim_k + s->head_dim_v) * el;
	int n = tp * pp;
	out->n_ctx = (uint32_t)r.n_ctx;
	out->n_dev = n;
	out->layers_offloaded = s->n_layer;
	out->weights = s->weight_bytes;
	out->kv = kv_token * r.n_ctx * r.n_seq;
	uint64_t act = VLLM_BATCH_TOKENS * (8ull * s->n_embd + 4ull * s->n_ff) * el / (uint64_t)tp +
		       r.n_seq * (uint64_t)s->n_vocab * 4;
	for (int d = 0; d < n; d++) {
		struct cr_est_device *dev = &out->dev[d];
		dev->layers = s->n_layer / (uint32_t)pp;
		dev->output = d == n - 1;
		dev->weights = (out->weights + (uint64_t)n - 1) / (uint64_t)n;
		dev->kv = (out->kv + (uint64_t)n - 1) / (uint64_t)n;
		dev->compute = act;
		dev->overhead = VLLM_RUNTIME;
		dev->total = dev->weights + dev->kv + dev->compute + dev->overhead;
		out->vram += dev->total;
		out->compute += act;
	}
	out->ram = 2 * CR_GIB;
	return 0;
}

double cr_estimate_gpu_util(uint64_t claim, uint64_t total)
{
	if (total == 0)
		return 0.95;
	double u = ceil((double)claim * 100.0 / (double)total) / 100.0;
	return u > 0.95 ? 0.95 : u < 0.01 ? 0.01 : u;
}
