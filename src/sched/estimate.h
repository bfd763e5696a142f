/* Model shapes and memory estimates (pure). A shape is what the estimator
 * needs to know about a model, taken from a GGUF header or from a safetensors
 * model's config.json and headers; it travels from workers to the server as
 * JSON. Estimates follow llama.cpp's and vLLM's own allocations; the formulas
 * and the measurements behind them are in docs/internals/estimate.md. */
#ifndef CR_SCHED_ESTIMATE_H
#define CR_SCHED_ESTIMATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "sched/gguf.h"

#define CR_EST_MAX_DEV 64
#define CR_MIB (1024ull * 1024ull)
#define CR_GIB (1024ull * CR_MIB)

struct cr_model_shape {
	char format[16];   /* "gguf" or "safetensors" */
	char arch[32];     /* general.architecture or config.json model_type */
	char dtype[16];    /* safetensors torch_dtype; GGUF: "" */
	uint64_t file_bytes;
	uint32_t n_layer, n_embd, n_head, n_head_kv, head_dim_k, head_dim_v, n_ff, n_vocab, n_ctx_train;
	uint64_t weight_bytes; /* all weights */
	uint64_t input_bytes;  /* token embeddings: llama.cpp keeps them in host memory */
	uint64_t output_bytes; /* output norm + projection (the embeddings again when tied) */
	uint64_t *layer_bytes; /* n_layer entries, owned */
	/* GGUF reading state: the embeddings counted again as a tied output,
	 * until a tensor output.weight (in any part) says it is not tied */
	uint64_t tied_bytes;
	bool untied;
};

#define CR_MODEL_SHAPE_INIT { "", "", "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, 0, false }

/* Fill shape from a parsed GGUF header of a file of file_bytes. Returns 0, or
 * CR_EINPUT naming the missing key (architecture, block count, embedding
 * length, head count) with a fix. Release the shape with cr_shape_release. */
int cr_shape_from_gguf(const struct cr_gguf *g, uint64_t file_bytes, struct cr_model_shape *shape,
		       struct cr_err *err);

/* Add the tensors of a later part of a split GGUF (file_bytes long) to a
 * shape filled from the first part. */
int cr_shape_add_gguf_part(struct cr_model_shape *shape, const struct cr_gguf *g, uint64_t file_bytes,
			   struct cr_err *err);

/* Reads the GGUF header at source (a path or URL): *g (free with
 * cr_gguf_free) and the file's size. -ENOENT or CR_ENOTFOUND when absent. */
typedef int (*cr_gguf_reader)(const char *source, struct cr_gguf **g, uint64_t *size, void *arg, struct cr_err *err);

/* The shape of the GGUF model at source, read with read: a single file, or
 * the first part of a split GGUF whose other parts (named like it, see
 * cr_gguf_split_sibling) are read too and added. A later part given alone,
 * a missing part or one with the wrong split.no is CR_EINPUT with the fix. */
int cr_shape_from_gguf_source(const char *source, cr_gguf_reader read, void *arg, struct cr_model_shape *shape,
			      struct cr_err *err);

/* Fill shape from a Hugging Face config.json object and the total bytes and
 * dtype of its safetensors weights. CR_EINPUT names a missing field. */
int cr_shape_from_config(json_t *config, uint64_t weight_bytes, struct cr_model_shape *shape, struct cr_err *err);

/* Free what a shape owns; it can be filled again afterwards. */
void cr_shape_release(struct cr_model_shape *shape);

/* JSON round trip of a shape (what workers report and the API shows). */
json_t *cr_shape_to_json(const struct cr_model_shape *shape);
int cr_shape_from_json(json_t *j, struct cr_model_shape *shape, struct cr_err *err);

/* Engine parameters an estimate depends on. */
struct cr_est_params {
	uint32_t n_ctx;      /* total context; 0 = the model's training context */
	uint32_t n_parallel; /* slots / sequences; 0 = 1 */
	int cache_type_k;    /* ggml type of the KV cache; -1 = F16 */
	int cache_type_v;
	int n_gpu_layers;    /* llama.cpp -ngl; -1 = all layers and the output */
	uint32_t n_ubatch;   /* 0 = 512 */
	bool no_flash_attn;  /* llama.cpp -fa off */
};

#define CR_EST_PARAMS_INIT { 0, 0, -1, -1, -1, 0, false }

/* Per-device share of an instance: what the scheduler claims on that GPU. */
struct cr_est_device {
	uint32_t layers;
	bool output;        /* holds the output layer */
	uint64_t weights, kv, compute, overhead;
	uint64_t total;
};

struct cr_estimate {
	uint32_t n_ctx;          /* resolved context */
	uint32_t layers_offloaded;
	uint64_t weights, kv, compute, output; /* whole-instance totals */
	uint64_t ram;            /* host memory: CPU weights, CPU KV, host buffers */
	uint64_t vram;           /* sum over devices */
	int n_dev;
	struct cr_est_device dev[CR_EST_MAX_DEV];
};

/* CUDA/ROCm context and runtime cost per GPU and process, not visible in
 * llama.cpp's own buffer log. */
#define CR_EST_GPU_RUNTIME (320ull * CR_MIB)

/* Estimate llama.cpp memory for shape on n_dev GPUs (0 = CPU only) with the
 * offloaded layers divided by split (n_dev weights, NULL = equal), the way
 * llama.cpp assigns layers (contiguous ranges, output on the last device).
 * Returns 0 or CR_EINPUT for impossible parameters (context above 16M, more
 * devices than CR_EST_MAX_DEV, unknown cache type). */
int cr_estimate_llama(const struct cr_model_shape *s, const struct cr_est_params *p, int n_dev, const double *split,
		      struct cr_estimate *out, struct cr_err *err);

/* Estimate vLLM/SGLang memory per GPU for tp x pp GPUs: weights and KV cache
 * (n_ctx x n_parallel tokens) divided across them, plus activations and the
 * runtime. dev[i].total is the claim per GPU. */
int cr_estimate_vllm(const struct cr_model_shape *s, const struct cr_est_params *p, int tp, int pp,
		     struct cr_estimate *out, struct cr_err *err);

/* The --gpu-memory-utilization that gives an instance claim bytes of a GPU
 * with total bytes: rounded up to 0.01, at most 0.95. */
double cr_estimate_gpu_util(uint64_t claim, uint64_t total);

#endif
