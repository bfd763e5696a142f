/* corral inspect: a model file's shape and memory estimate on this node,
 * without a server (what workers report, and what the scheduler would claim). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/modelfile.h"
#include "base/err.h"
#include "base/util.h"
#include "cmd/cli.h"
#include "cmd/cmd.h"
#include "sched/estimate.h"

static const char inspect_usage[] =
	"usage: corral inspect PATH [--ctx N] [--parallel N] [--gpus N] [--ngl N]\n"
	"                      [--cache-type-k T] [--cache-type-v T] [--ubatch N] [--no-flash-attn]\n"
	"                      [--engine llama.cpp|vllm] [--json]\n"
	"\n"
	"Read a model's header (a .gguf file, or a directory with config.json and\n"
	".safetensors files) and print its shape and the memory an instance needs:\n"
	"weights, KV cache, compute buffers, per GPU and in host memory.\n"
	"\n"
	"  --ctx N            total context (default: the model's training context)\n"
	"  --parallel N       slots / concurrent sequences (default 1)\n"
	"  --gpus N           split over N equal GPUs (default 0: CPU only)\n"
	"  --ngl N            llama.cpp layers on the GPUs (default all)\n"
	"  --cache-type-k T   KV cache type, e.g. f16 (default), q8_0, q4_0\n"
	"  --json             machine-readable output\n";

static json_t *estimate_json(const struct cr_estimate *e)
{
	json_t *devs = json_array();
	for (int d = 0; d < e->n_dev; d++) {
		const struct cr_est_device *x = &e->dev[d];
		json_array_append_new(devs, json_pack("{s:i,s:b,s:I,s:I,s:I,s:I,s:I}", "layers", (int)x->layers, "output",
						      x->output, "weights", (json_int_t)x->weights, "kv", (json_int_t)x->kv,
						      "compute", (json_int_t)x->compute, "overhead", (json_int_t)x->overhead,
						      "total", (json_int_t)x->total));
	}
	return json_pack("{s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "n_ctx", (int)e->n_ctx, "layers_offloaded",
			 (int)e->layers_offloaded, "weights", (json_int_t)e->weights, "kv", (json_int_t)e->kv, "compute",
			 (json_int_t)e->compute, "output", (json_int_t)e->output, "ram", (json_int_t)e->ram, "vram",
			 (json_int_t)e->vram, "devices", devs);
}

static void human(uint64_t b, char *out, size_t n)
{
	cr_bytes_human(b, out, n);
}

static void print_estimate(const char *path, const struct cr_model_shape *s, const struct cr_estimate *e)
{
	char a[32], b[32], c[32], d[32];
	human(s->file_bytes, a, sizeof(a));
	printf("%s: %s %s, %u layers, embd %u, heads %u/%u kv, ffn %u, vocab %u, trained ctx %u, %s\n", path,
	       s->format, s->arch, s->n_layer, s->n_embd, s->n_head, s->n_head_kv, s->n_ff, s->n_vocab, s->n_ctx_train, a);
	human(e->weights, a, sizeof(a));
	human(e->kv, b, sizeof(b));
	human(e->compute, c, sizeof(c));
	human(e->output, d, sizeof(d));
	printf("ctx %u: weights %s, KV cache %s, compute %s, output %s\n", e->n_ctx, a, b, c, d);
	human(e->ram, a, sizeof(a));
	human(e->vram, b, sizeof(b));
	printf("host memory %s, GPU memory %s", a, b);
	if (e->n_dev)
		printf(" (%u/%u layers offloaded)", e->layers_offloaded, s->n_layer + 1);
	printf("\n");
	for (int i = 0; i < e->n_dev; i++) {
		human(e->dev[i].total, a, sizeof(a));
		printf("  gpu %d: %u layers%s, %s\n", i, e->dev[i].layers, e->dev[i].output ? " + output" : "", a);
	}
}

static int parse_u(const char *s, const char *flag, long long max, long long *out)
{
	if (cr_parse_int(s, 0, max, out))
		return 0;
	fprintf(stderr, "corral: %s wants a number from 0 to %lld, not '%s'\n", flag, max, s);
	return -1;
}

int cr_cmd_inspect(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "ctx", 1, 0, 'c' },          { "parallel", 1, 0, 'p' },  { "gpus", 1, 0, 'g' },
		{ "ngl", 1, 0, 'n' },          { "cache-type-k", 1, 0, 'k' }, { "cache-type-v", 1, 0, 'v' },
		{ "ubatch", 1, 0, 'b' },       { "no-flash-attn", 0, 0, 'F' }, { "engine", 1, 0, 'e' },
		{ "json", 0, 0, 'j' },         { "help", 0, 0, 'h' },       { 0, 0, 0, 0 },
	};
	struct cr_est_params p = CR_EST_PARAMS_INIT;
	long long v, gpus = 0;
	bool as_json = false, vllm = false;
	int ch, bad = 0;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'c': bad |= parse_u(optarg, "--ctx", 1 << 24, &v); p.n_ctx = (uint32_t)v; break;
		case 'p': bad |= parse_u(optarg, "--parallel", 4096, &v); p.n_parallel = (uint32_t)v; break;
		case 'g': bad |= parse_u(optarg, "--gpus", CR_EST_MAX_DEV, &gpus); break;
		case 'n': bad |= parse_u(optarg, "--ngl", 100000, &v); p.n_gpu_layers = (int)v; break;
		case 'b': bad |= parse_u(optarg, "--ubatch", 1 << 16, &v); p.n_ubatch = (uint32_t)v; break;
		case 'k':
		case 'v':
			v = cr_ggml_type_from_name(optarg);
			if (v < 0) {
				fprintf(stderr, "corral: unknown cache type '%s' (use f16, q8_0, q4_0, ...)\n", optarg);
				bad = -1;
			}
			*(ch == 'k' ? &p.cache_type_k : &p.cache_type_v) = (int)v;
			break;
		case 'F': p.no_flash_attn = true; break;
		case 'e': vllm = strcmp(optarg, "vllm") == 0 || strcmp(optarg, "sglang") == 0; break;
		case 'j': as_json = true; break;
		case 'h': fputs(inspect_usage, stdout); return 0;
		default: fputs(inspect_usage, stderr); return 2;
		}
	}
	if (bad || optind + 1 != argc) {
		fputs(inspect_usage, stderr);
		return 2;
	}
	const char *path = argv[optind];
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	struct cr_err err = CR_ERR_INIT;
	struct cr_estimate e;
	int rc = cr_modelfile_inspect(path, &s, &err);
	if (!rc && (vllm || !strcmp(s.format, "safetensors")))
		rc = cr_estimate_vllm(&s, &p, gpus ? (int)gpus : 1, 1, &e, &err);
	else if (!rc)
		rc = cr_estimate_llama(&s, &p, (int)gpus, NULL, &e, &err);
	if (rc) {
		cr_shape_release(&s);
		return cr_cmd_fail(&err);
	}
	if (as_json)
		cr_cli_print_json(json_pack("{s:s,s:o,s:o}", "path", path, "shape", cr_shape_to_json(&s), "estimate",
					    estimate_json(&e)));
	else
		print_estimate(path, &s, &e);
	cr_shape_release(&s);
	return 0;
}
