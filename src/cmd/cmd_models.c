/* Model commands: inspect (a model file's shape and memory estimate on this
 * node, without a server), deploy, models, instances, rm, engines, logs
 * (through the API). The gateway's commands are in cmd_gateway.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/fetch.h"
#include "agent/modelfile.h"
#include "base/engine_kind.h"
#include "base/err.h"
#include "base/json.h"
#include "base/mem.h"
#include "http/client.h"
#include "base/util.h"
#include "cmd/cli.h"
#include "cmd/cmd.h"
#include "sched/estimate.h"

static const char inspect_usage[] =
	"usage: corral inspect PATH|URL [--ctx N] [--parallel N] [--gpus N] [--ngl N]\n"
	"                      [--cache-type-k T] [--cache-type-v T] [--ubatch N] [--no-flash-attn]\n"
	"                      [--engine llama.cpp|vllm] [--json]\n"
	"       corral inspect --learned [--json] [--server-url URL]\n"
	"\n"
	"--learned lists what the cluster learned: per engine, version, model file and\n"
	"device, the memory an instance really held against its estimate; the next\n"
	"placements of that file claim the difference too.\n"
	"\n"
	"Read a model's header (a .gguf file, the first part of a split GGUF, or a\n"
	"directory with config.json and .safetensors files) and print its shape and\n"
	"the memory an instance needs: weights, KV cache, compute buffers, per GPU and\n"
	"in host memory. A URL (a GGUF file's, or a safetensors model's config.json)\n"
	"is read with range requests: headers only, never the weights.\n"
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

/* corral inspect --learned: what engines really held against the estimates. */
static int inspect_learned(const char *url, bool as_json)
{
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(&cl, "GET", "/api/learned", NULL, &err);
	cr_cli_release(&cl);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(ans);
	struct cr_table t = { .ncols = 7, .rows = json_array() };
	const char *head[] = { "ENGINE", "VERSION", "DEVICE", "ESTIMATE", "REAL", "ERROR", "SOURCE" };
	cr_table_row(&t, head);
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(ans, "learned"), i, e) {
		char est[32], real[32], error[32];
		double ev = (double)cr_json_get_int(e, "estimate", 0), rv = (double)cr_json_get_int(e, "real", 0);
		cr_bytes_human((uint64_t)ev, est, sizeof(est));
		cr_bytes_human((uint64_t)rv, real, sizeof(real));
		snprintf(error, sizeof(error), "%+.1f%%", rv > 0 ? 100.0 * (ev - rv) / rv : 0.0);
		const char *row[] = { cr_json_get_str(e, "engine", ""), cr_json_get_str(e, "version", ""),
				      cr_json_get_str(e, "device", ""), est, real, error, cr_json_get_str(e, "source", "") };
		cr_table_row(&t, row);
	}
	cr_table_print(&t);
	if (!json_array_size(json_object_get(ans, "learned")))
		puts("nothing learned yet: instances are measured after running for 10 s");
	json_decref(ans);
	return 0;
}

int cr_cmd_inspect(int argc, char **argv)
{
	struct cr_est_params p = CR_EST_PARAMS_INIT;
	long long ctx = 0, parallel = 0, gpus = 0, ngl = -1, ubatch = 0;
	const char *ctk = NULL, *ctv = NULL, *engine = NULL;
	bool as_json = false, no_fa = false, learned = false;
	const char *url = NULL;
	const struct cr_opt opts[] = {
		{ "learned", 0, CR_OPT_FLAG, &learned, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ "ctx", 0, CR_OPT_COUNT, &ctx, NULL, 1 << 24 },
		{ "parallel", 0, CR_OPT_COUNT, &parallel, NULL, 4096 },
		{ "gpus", 0, CR_OPT_COUNT, &gpus, NULL, CR_EST_MAX_DEV },
		{ "ngl", 0, CR_OPT_COUNT, &ngl, NULL, 100000 },
		{ "ubatch", 0, CR_OPT_COUNT, &ubatch, NULL, 1 << 16 },
		{ "cache-type-k", 0, CR_OPT_STR, &ctk, NULL, 0 },
		{ "cache-type-v", 0, CR_OPT_STR, &ctv, NULL, 0 },
		{ "no-flash-attn", 0, CR_OPT_FLAG, &no_fa, NULL, 0 },
		{ "engine", 0, CR_OPT_STR, &engine, NULL, 0 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, inspect_usage, opts);
	if (prc >= 0)
		return prc;
	if (learned)
		return inspect_learned(url, as_json);
	int bad = 0;
	p.n_ctx = (uint32_t)ctx;
	p.n_parallel = (uint32_t)parallel;
	p.n_gpu_layers = (int)ngl;
	p.n_ubatch = (uint32_t)ubatch;
	p.no_flash_attn = no_fa;
	bool vllm = engine && cr_engine_vllm_like(engine);
	const char *types[2] = { ctk, ctv };
	for (int t = 0; t < 2; t++) {
		if (!types[t])
			continue;
		int v = cr_ggml_type_from_name(types[t]);
		if (v < 0) {
			fprintf(stderr, "corral: unknown cache type '%s' (use f16, q8_0, q4_0, ...)\n", types[t]);
			bad = -1;
		}
		*(t ? &p.cache_type_v : &p.cache_type_k) = v;
	}
	if (bad || optind + 1 != argc) {
		fputs(inspect_usage, stderr);
		return 2;
	}
	const char *path = argv[optind];
	struct cr_model_shape s = CR_MODEL_SHAPE_INIT;
	struct cr_err err = CR_ERR_INIT;
	struct cr_estimate e;
	bool remote = !strncmp(path, "http://", 7) || !strncmp(path, "https://", 8);
	int rc = remote ? cr_fetch_inspect(path, &s, &err) : cr_modelfile_inspect(path, &s, &err);
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

/* ---- deploy, models, instances, rm (through the server's API) ---- */

static const char deploy_usage[] =
	"usage: corral deploy NAME (--path FILE | --url URL [--sha256 HEX] | --hf OWNER/REPO[:QUANT][@REV]\n"
	"                           [--hf-file FILE] | --ms OWNER/REPO[:QUANT][@REV] [--ms-file FILE])\n"
	"                           [options] [-- ENGINE_ARGS...]\n"
	"\n"
	"Deploy a model: the scheduler places its replicas on the cluster's GPUs and explains\n"
	"any refusal. Arguments after -- are passed to the engine (e.g. -- -ctk q8_0).\n"
	"\n"
	"  --path FILE            model file (.gguf) or safetensors directory, present on the workers\n"
	"  --url URL              or an HTTP(S) URL each chosen worker downloads into its cache\n"
	"  --sha256 HEX           checksum the download must match\n"
	"  --hf OWNER/REPO[:QUANT][@REV]  a Hugging Face repository ($HF_ENDPOINT, $HF_TOKEN on the\n"
	"                         server and workers): the file with that quant, else the largest\n"
	"                         that fits; the server says which it chose and why\n"
	"  --hf-file FILE         that file of the repository\n"
	"  --ms, --ms-file        the same from ModelScope ($MODELSCOPE_ENDPOINT, $MODELSCOPE_API_TOKEN)\n"
	"  --engine E             auto (default: llama.cpp for GGUF, vllm otherwise), llama.cpp, vllm,\n"
	"                         sglang or a custom engine\n"
	"  --ctx N                total context (default: the model's)\n"
	"  --parallel N           parallel slots (default 1)\n"
	"  --replicas N           instances to keep (default 1)\n"
	"  --policy P             spread (default) or binpack\n"
	"  --selector K=V,...     only workers with all these labels\n"
	"  --gpus W:I,...         place on exactly these GPUs (overcommit is allowed, with a warning)\n"
	"  --allow-cpu-offload    llama.cpp may keep layers in RAM, or run on CPU-only workers\n"
	"  --allow-distributed    one instance may span several workers (groups must pass the checks)\n"
	"  --health-probe         probe each instance end to end with a one-token completion\n"
	"  --dry-run              show the placement and reasons; store nothing\n"
	"  --wait                 wait until every replica runs; fail with the cause if one fails\n"
	"  --timeout S            how long to wait for the placement (default 15), or with --wait\n"
	"                         for every replica to run (default 300)\n"
	"  --json                 print the API's answer\n"
	"  --server-url URL       the server (default $CORRAL_SERVER_URL or the saved one)\n"
	"\n"
	"Exit status: 0 deployed (with --wait: every replica runs); 1 an error, a replica that\n"
	"failed, or the timeout; 2 a usage error; 3 no replica could be placed (the reasons are\n"
	"printed; the model is kept and placed when the cluster changes).\n";

/* Which file of a hub repository was chosen, and why. */
static void print_hub(json_t *hub)
{
	if (!hub)
		return;
	char size[32];
	cr_bytes_human((uint64_t)cr_json_get_int(hub, "size", 0), size, sizeof(size));
	printf("  %s %s: %s (%s), %s, commit %.12s\n", cr_json_get_str(hub, "kind", ""), cr_json_get_str(hub, "repo", ""),
	       cr_json_get_str(hub, "file", ""), size, cr_json_get_str(hub, "why", ""), cr_json_get_str(hub, "commit", ""));
}

static void print_placement(json_t *p, int n)
{
	char mem[32], ram[32];
	cr_bytes_human((uint64_t)json_integer_value(json_object_get(p, "vram")), mem, sizeof(mem));
	cr_bytes_human((uint64_t)json_integer_value(json_object_get(p, "ram")), ram, sizeof(ram));
	printf("  replica %d: %s, %s VRAM, %s RAM\n", n, json_string_value(json_object_get(p, "summary")), mem, ram);
	size_t i;
	json_t *w;
	json_array_foreach(json_object_get(p, "workers"), i, w) {
		printf("    %s%s:", json_string_value(json_object_get(w, "name")),
		       json_is_true(json_object_get(w, "leader")) && json_array_size(json_object_get(p, "workers")) > 1 ? " (leader)" : "");
		size_t k;
		json_t *g;
		json_array_foreach(json_object_get(w, "gpus"), k, g) {
			cr_bytes_human((uint64_t)json_integer_value(json_object_get(g, "claim")), mem, sizeof(mem));
			printf(" gpu %lld %s (%lld layers)", (long long)json_integer_value(json_object_get(g, "index")), mem,
			       (long long)json_integer_value(json_object_get(g, "layers")));
		}
		if (json_integer_value(json_object_get(w, "ram"))) {
			cr_bytes_human((uint64_t)json_integer_value(json_object_get(w, "ram")), mem, sizeof(mem));
			printf(" ram %s", mem);
		}
		printf("\n");
	}
	const char *warn = json_string_value(json_object_get(p, "warning"));
	if (warn)
		printf("    warning: %s\n", warn);
	cr_cli_print_checks(json_object_get(p, "checks"), "    ");
}

static void print_reasons(json_t *reasons)
{
	size_t i;
	json_t *r;
	json_array_foreach(reasons, i, r) {
		char *msg = cr_cli_safe(json_string_value(json_object_get(r, "message")));
		printf("  %-16s %-18s %s\n", json_string_value(json_object_get(r, "worker")),
		       json_string_value(json_object_get(r, "code")), msg);
		free(msg);
		const char *fix = json_string_value(json_object_get(r, "fix"));
		if (fix)
			printf("  %-16s %-18s fix: %s\n", "", "", fix);
	}
}

static int run_plan(struct cr_cli *cl, const char *body, bool as_json, int wait_s)
{
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = NULL;
	int64_t deadline = cr_mono_ms() + (int64_t)(wait_s > 0 ? wait_s : 0) * 1000;
	for (;;) {
		json_decref(ans);
		ans = cr_cli_api(cl, "POST", "/api/models/plan", body, &err);
		if (!ans)
			return cr_cmd_fail(&err);
		if (!json_array_size(json_object_get(ans, "waiting_for")) || cr_mono_ms() > deadline)
			break;
		usleep(300 * 1000); /* workers are inspecting the file */
	}
	if (as_json)
		return cr_cli_print_json(ans);
	bool placed = json_is_true(json_object_get(ans, "placed"));
	size_t i;
	json_t *p;
	int over = 0; /* placed by hand beyond the GPUs' free memory */
	json_array_foreach(json_object_get(ans, "instances"), i, p)
		over += json_object_get(p, "warning") != NULL;
	if (placed && over)
		printf("dry run: placed as chosen, but %d replica(s) overcommit their GPUs (see the warnings)\n", over);
	else
		printf("dry run: %s\n", placed ? "every replica fits" : json_string_value(json_object_get(ans, "summary")));
	print_hub(json_object_get(ans, "hub"));
	json_array_foreach(json_object_get(ans, "instances"), i, p)
		print_placement(p, (int)i + 1);
	if (!placed)
		print_reasons(json_object_get(ans, "reasons"));
	json_array_foreach(json_object_get(ans, "groups_refused"), i, p) {
		char names[512] = "";
		size_t k, len = 0;
		json_t *w;
		json_array_foreach(json_object_get(p, "workers"), k, w)
			if (len < sizeof(names))
				len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", k ? ", " : "", json_string_value(w));
		printf("  group %s refused:\n", names);
		cr_cli_print_checks(json_object_get(p, "checks"), "    ");
	}
	size_t wi;
	json_t *wv;
	json_array_foreach(json_object_get(ans, "warnings"), wi, wv)
		printf("warning: %s\n", json_string_value(wv));
	json_t *wait = json_object_get(ans, "waiting_for");
	if (json_array_size(wait))
		printf("  (%zu worker(s) had not inspected the file yet)\n", json_array_size(wait));
	json_decref(ans);
	return placed ? 0 : 3; /* as a deploy that places nothing */
}

/* Download progress while --wait waits: on a terminal one line redrawn in
 * place with a bar; otherwise a plain line every 10% or 5 s. */
struct progress {
	bool tty, drawn;   /* a bar line is on the screen, not ended yet */
	double shown;      /* percent last printed as a plain line */
	int64_t shown_ms;
};

static void progress_end(struct progress *pr)
{
	if (pr->drawn)
		fputs("\n", stdout);
	pr->drawn = false;
	fflush(stdout);
}

static void progress_show(struct progress *pr, const char *id, json_t *dl)
{
	char text[200];
	cr_cli_download_text(dl, text, sizeof(text));
	double total = (double)json_integer_value(json_object_get(dl, "total"));
	double pct = total > 0 ? 100.0 * (double)json_integer_value(json_object_get(dl, "bytes")) / total : 0;
	char *safe = cr_cli_safe(id);
	if (pr->tty) {
		char bar[40];
		cr_cli_download_bar(dl, 30, bar, sizeof(bar));
		printf("\r\033[Kdownloading %s %s %s", safe, bar, text);
		pr->drawn = true;
	} else if (pct >= pr->shown + 10 || cr_mono_ms() - pr->shown_ms >= 5000) {
		printf("downloading %s: %s\n", safe, text);
		pr->shown = pct;
		pr->shown_ms = cr_mono_ms();
	}
	free(safe);
	fflush(stdout);
}

/* --wait: until want instances of model run (0), one fails (1, with its
 * cause), or timeout_s pass (1). */
static int wait_running(struct cr_cli *cl, const char *model, int want, long long timeout_s)
{
	char *path = cr_xasprintf("/api/instances?model=%s", model);
	int64_t deadline = cr_mono_ms() + timeout_s * 1000;
	int rc = 1;
	char last[600] = "";
	struct progress pr = { isatty(STDOUT_FILENO) == 1, false, -100, 0 };
	for (;;) {
		struct cr_err err = CR_ERR_INIT;
		json_t *ans = cr_cli_api(cl, "GET", path, NULL, &err);
		if (!ans) {
			rc = cr_cmd_fail(&err);
			break;
		}
		int running = 0, old = 0;
		size_t i;
		json_t *x;
		const char *failed = NULL;
		json_array_foreach(json_object_get(ans, "instances"), i, x) {
			const char *st = cr_json_get_str(x, "state", "");
			if (json_is_true(json_object_get(x, "outdated"))) { /* a rolling update's old ones */
				old++;
				if (!failed)
					snprintf(last, sizeof(last), "instance %s (old spec) is %s: %s",
						 cr_json_get_str(x, "id", "?"), st, cr_json_get_str(x, "message", ""));
				continue;
			}
			running += !strcmp(st, "running");
			json_t *d = json_object_get(x, "download");
			if (!strcmp(st, "error") && !strcmp(cr_json_get_str(d, "state", ""), "error") &&
			    strstr(cr_json_get_str(d, "message", ""), "stopped after")) {
				/* a transfer cut mid-way: the worker tries again from where it stopped */
				const char *m = cr_json_get_str(d, "message", "");
				if (!strstr(last, m)) {
					progress_end(&pr);
					printf("instance %s: %s (the download resumes by itself)\n", cr_json_get_str(x, "id", "?"), m);
					fflush(stdout);
				}
				snprintf(last, sizeof(last), "instance %s: %s", cr_json_get_str(x, "id", "?"), m);
				continue;
			}
			if ((!strcmp(st, "error") || !strcmp(st, "crash_loop")) && !failed) {
				snprintf(last, sizeof(last), "instance %s failed: %s", cr_json_get_str(x, "id", "?"),
					 cr_json_get_str(x, "message", ""));
				failed = last;
			} else if (strcmp(st, "running") != 0 && !failed) { /* the failure's message is kept */
				snprintf(last, sizeof(last), "instance %s is %s: %s", cr_json_get_str(x, "id", "?"), st,
					 cr_json_get_str(x, "message", ""));
			}
		}
		json_t *dl = NULL; /* the first download in progress */
		const char *dl_id = NULL;
		json_array_foreach(json_object_get(ans, "instances"), i, x) {
			json_t *d = json_object_get(x, "download");
			if (!dl && !strcmp(cr_json_get_str(d, "state", ""), "downloading")) {
				dl = d;
				dl_id = cr_json_get_str(x, "id", "?");
			}
		}
		if (dl)
			progress_show(&pr, dl_id, dl);
		else
			progress_end(&pr);
		json_decref(ans);
		if (running >= want && !old) {
			printf("every replica runs (%d/%d)\n", running, want);
			rc = 0;
			break;
		}
		if (failed || cr_mono_ms() > deadline) {
			progress_end(&pr);
			fprintf(stderr, "corral: %s%s\nfix: see 'corral logs %s' and 'corral instances --model %s'\n",
				failed ? "" : "timed out waiting for every replica to run; ", last, model, model);
			break;
		}
		usleep(300 * 1000);
	}
	free(path);
	return rc;
}

/* The flags of deploy and update: spec fields go into body, the rest here. */
struct spec_flags {
	const char *url;
	bool dry, as_json, wait;
	long long wait_s; /* -1: not given */
};

static int parse_spec_flags(int argc, char **argv, const char *usage, json_t *body, struct spec_flags *f)
{
	const char **url = &f->url;
	bool *dry = &f->dry, *as_json = &f->as_json, *wait = &f->wait;
	long long *wait_s = &f->wait_s;
	const struct cr_opt opts[] = {
		{ "path", 0, CR_OPT_FIELD_STR, body, "path", 0 },
		{ "url", 0, CR_OPT_FIELD_STR, body, "url", 0 },
		{ "sha256", 0, CR_OPT_FIELD_STR, body, "sha256", 0 },
		{ "hf", 0, CR_OPT_FIELD_STR, body, "hf", 0 },
		{ "hf-file", 0, CR_OPT_FIELD_STR, body, "hf_file", 0 },
		{ "ms", 0, CR_OPT_FIELD_STR, body, "ms", 0 },
		{ "ms-file", 0, CR_OPT_FIELD_STR, body, "ms_file", 0 },
		{ "engine", 0, CR_OPT_FIELD_STR, body, "engine", 0 },
		{ "policy", 0, CR_OPT_FIELD_STR, body, "policy", 0 },
		{ "selector", 0, CR_OPT_FIELD_STR, body, "selector", 0 },
		{ "gpus", 0, CR_OPT_FIELD_CSV, body, "gpus", 0 },
		{ "ctx", 0, CR_OPT_FIELD_COUNT, body, "ctx", 1 << 24 },
		{ "parallel", 0, CR_OPT_FIELD_COUNT, body, "parallel", 1 << 24 },
		{ "replicas", 0, CR_OPT_FIELD_COUNT, body, "replicas", 1 << 24 },
		{ "allow-cpu-offload", 0, CR_OPT_FIELD_TRUE, body, "allow_cpu_offload", 0 },
		{ "allow-distributed", 0, CR_OPT_FIELD_TRUE, body, "allow_distributed", 0 },
		{ "health-probe", 0, CR_OPT_FIELD_TRUE, body, "health_probe", 0 },
		{ "dry-run", 0, CR_OPT_FLAG, dry, NULL, 0 },
		{ "wait", 0, CR_OPT_FLAG, wait, NULL, 0 },
		{ "timeout", 0, CR_OPT_COUNT, wait_s, NULL, 86400 },
		{ "json", 0, CR_OPT_FLAG, as_json, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int rc = cr_cli_parse(argc, argv, usage, opts);
	if (rc >= 0)
		return rc;
	if (optind >= argc || argv[optind][0] == '-') {
		fputs(usage, stderr);
		return 2;
	}
	json_object_set_new(body, "name", json_string(argv[optind++]));
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	json_t *args = json_array();
	for (; optind < argc; optind++)
		json_array_append_new(args, json_string(argv[optind]));
	if (json_array_size(args))
		json_object_set_new(body, "engine_args", args);
	else
		json_decref(args);
	return -1;
}

int cr_cmd_deploy(int argc, char **argv)
{
	json_t *body = json_object();
	struct spec_flags f = { NULL, false, false, false, -1 };
	int rc = parse_spec_flags(argc, argv, deploy_usage, body, &f);
	if (rc >= 0) {
		json_decref(body);
		return rc;
	}
	rc = 0;
	const char *url = f.url;
	bool dry = f.dry, as_json = f.as_json, wait = f.wait;
	long long wait_s = f.wait_s;
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	char *text = cr_json_dump(body);
	struct cr_err err = CR_ERR_INIT;
	long long run_s = wait_s >= 0 ? wait_s : 300;
	if (wait_s < 0)
		wait_s = 15;
	if (dry) {
		rc = run_plan(&cl, text, as_json, (int)wait_s);
		goto out;
	}
	json_t *ans = cr_cli_api(&cl, "POST", "/api/models", text, &err);
	if (!ans) {
		rc = cr_cmd_fail(&err);
		goto out;
	}
	char *path = cr_xasprintf("/api/models/%s", json_string_value(json_object_get(body, "name")));
	int64_t deadline = cr_mono_ms() + wait_s * 1000;
	for (;;) { /* until every replica is placed, or the scheduler says why not */
		json_t *rs = json_object_get(ans, "replicas_status");
		const char *status = json_string_value(json_object_get(ans, "status"));
		bool done = json_integer_value(json_object_get(rs, "total")) >= json_integer_value(json_object_get(rs, "desired"));
		if (done || (status && strncmp(status, "waiting", 7) != 0) || cr_mono_ms() > deadline)
			break;
		usleep(300 * 1000);
		json_t *next = cr_cli_api(&cl, "GET", path, NULL, &err);
		if (!next)
			break;
		json_decref(ans);
		ans = next;
	}
	free(path);
	json_t *rs = json_object_get(ans, "replicas_status");
	if (as_json) {
		bool nothing = json_integer_value(json_object_get(rs, "total")) == 0 &&
			       json_integer_value(json_object_get(rs, "desired")) > 0;
		rc = cr_cli_print_json(ans);
		if (!rc && nothing)
			rc = 3;
		goto out;
	}
	printf("model '%s' deployed: %lld/%lld replicas placed\n", json_string_value(json_object_get(ans, "name")),
	       (long long)json_integer_value(json_object_get(rs, "total")),
	       (long long)json_integer_value(json_object_get(rs, "desired")));
	print_hub(json_object_get(ans, "hub"));
	const char *status = json_string_value(json_object_get(ans, "status"));
	if (status) {
		printf("  %s\n", status);
		print_reasons(json_object_get(ans, "reasons"));
	}
	size_t wi;
	json_t *wv;
	json_array_foreach(json_object_get(ans, "warnings"), wi, wv)
		printf("warning: %s\n", json_string_value(wv));
	long long placed = json_integer_value(json_object_get(rs, "total"));
	bool none = placed == 0 && json_integer_value(json_object_get(rs, "desired")) > 0;
	if (none) /* kept: placed by itself when the cluster changes */
		rc = 3;
	else if (wait)
		rc = wait_running(&cl, json_string_value(json_object_get(ans, "name")),
				  (int)json_integer_value(json_object_get(rs, "desired")), run_s);
	if (!wait || none)
		printf("see 'corral instances --model %s'\n", json_string_value(json_object_get(ans, "name")));
	json_decref(ans);
out:
	free(text);
	json_decref(body);
	cr_cli_release(&cl);
	return rc;
}

static int simple_opts(int argc, char **argv, const char *usage, const char **url, bool *as_json, const char **model)
{
	const struct cr_opt opts[] = {
		{ "server-url", 0, CR_OPT_STR, url, NULL, 0 },
		{ "json", 0, CR_OPT_FLAG, as_json, NULL, 0 },
		{ model ? "model" : NULL, 'm', CR_OPT_STR, model, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	return cr_cli_parse(argc, argv, usage, opts);
}

/* Options of a listing command, then GET path: the answer, or NULL with
 * *rc the exit status (help printed, usage error, or the API's error). */
static json_t *get_once(int argc, char **argv, const char *usage, const char *path, bool *as_json, int *rc)
{
	const char *url = NULL;
	*rc = simple_opts(argc, argv, usage, &url, as_json, NULL);
	if (*rc >= 0)
		return NULL;
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(&cl, "GET", path, NULL, &err);
	cr_cli_release(&cl);
	if (!ans)
		*rc = cr_cmd_fail(&err);
	return ans;
}

int cr_cmd_models(int argc, char **argv)
{
	static const char usage[] = "usage: corral models [--json] [--server-url URL]\n"
				    "\n"
				    "List deployed models: engine, replicas (running/desired, with how many are placed),\n"
				    "memory per replica, and why replicas are missing when they are.\n";
	bool as_json = false;
	int rc;
	json_t *ans = get_once(argc, argv, usage, "/api/models", &as_json, &rc);
	if (!ans)
		return rc;
	if (as_json)
		return cr_cli_print_json(json_incref(json_object_get(ans, "models"))), json_decref(ans), 0;
	struct cr_table t = { .ncols = 6, .rows = json_array() };
	const char *head[] = { "NAME", "ENGINE", "REPLICAS", "MEMORY/REPLICA", "SOURCE", "STATUS" };
	cr_table_row(&t, head);
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(ans, "models"), i, m) {
		json_t *rs = json_object_get(m, "replicas_status");
		char reps[64], mem[48] = "-";
		snprintf(reps, sizeof(reps), "%lld/%lld (%lld placed)", (long long)json_integer_value(json_object_get(rs, "running")),
			 (long long)json_integer_value(json_object_get(rs, "desired")),
			 (long long)json_integer_value(json_object_get(rs, "total")));
		json_t *vram = json_object_get(m, "memory_per_replica");
		if (json_integer_value(vram))
			cr_bytes_human((uint64_t)json_integer_value(vram), mem, sizeof(mem));
		else if (json_integer_value(json_object_get(m, "ram_per_replica"))) {
			char r[32];
			cr_bytes_human((uint64_t)json_integer_value(json_object_get(m, "ram_per_replica")), r, sizeof(r));
			snprintf(mem, sizeof(mem), "%s RAM", r);
		}
		const char *engine = json_string_value(json_object_get(m, "engine_resolved"));
		const char *src = json_string_value(json_object_get(m, "path"));
		const char *status = json_string_value(json_object_get(m, "status"));
		json_t *worst = json_object_get(m, "worst_replica");
		char health[300] = "ok";
		if (status)
			snprintf(health, sizeof(health), "%s", status);
		else if (json_is_object(worst))
			snprintf(health, sizeof(health), "%s: %.240s", cr_json_get_str(worst, "state", "?"),
				 cr_json_get_str(worst, "message", ""));
		const char *row[] = { json_string_value(json_object_get(m, "name")),
				      engine ? engine : json_string_value(json_object_get(m, "engine")), reps, mem,
				      src ? src : json_string_value(json_object_get(m, "url")), health };
		cr_table_row(&t, row);
	}
	cr_table_print(&t);
	json_decref(ans);
	return 0;
}

static void where(json_t *placement, char *out, size_t n)
{
	size_t len = 0, i;
	json_t *w;
	out[0] = '\0';
	json_array_foreach(json_object_get(placement, "workers"), i, w) {
		const char *name = json_string_value(json_object_get(w, "name"));
		json_t *gpus = json_object_get(w, "gpus");
		if (!json_array_size(gpus))
			len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%s:cpu", len ? "," : "", name);
		size_t k;
		json_t *g;
		json_array_foreach(gpus, k, g)
			len += (size_t)snprintf(out + len, len < n ? n - len : 0, "%s%s:%lld", len ? "," : "", name,
						(long long)json_integer_value(json_object_get(g, "index")));
		if (len >= n)
			break;
	}
}

int cr_cmd_instances(int argc, char **argv)
{
	static const char usage[] = "usage: corral instances [--model NAME] [--json] [--server-url URL]\n"
				    "\n"
				    "List instances (replicas): where each runs (worker:gpu), its memory claim, its state\n"
				    "and message, and download progress for url models.\n";
	const char *url = NULL, *model = NULL;
	bool as_json = false;
	int rc = simple_opts(argc, argv, usage, &url, &as_json, &model);
	if (rc >= 0)
		return rc;
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	char *path = model ? cr_xasprintf("/api/instances?model=%s", model) : cr_xstrdup("/api/instances");
	json_t *ans = cr_cli_api(&cl, "GET", path, NULL, &err);
	free(path);
	cr_cli_release(&cl);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(json_incref(json_object_get(ans, "instances"))), json_decref(ans), 0;
	struct cr_table t = { .ncols = 6, .rows = json_array() };
	const char *head[] = { "INSTANCE", "MODEL", "STATE", "WHERE", "CLAIM", "MESSAGE" };
	cr_table_row(&t, head);
	size_t i;
	json_t *x;
	json_array_foreach(json_object_get(ans, "instances"), i, x) {
		json_t *p = json_object_get(x, "placement");
		char at[256], claim[64], msg[512];
		where(p, at, sizeof(at));
		uint64_t vram = (uint64_t)json_integer_value(json_object_get(p, "vram"));
		cr_bytes_human(vram ? vram : (uint64_t)json_integer_value(json_object_get(p, "ram")), claim, sizeof(claim));
		if (!vram)
			snprintf(claim + strlen(claim), sizeof(claim) - strlen(claim), " RAM");
		json_t *dl = json_object_get(x, "download");
		const char *dls = cr_json_get_str(dl, "state", ""), *imsg = cr_json_get_str(x, "message", "");
		snprintf(msg, sizeof(msg), "%s", imsg);
		if (!strcmp(dls, "error")) /* the cause, not the progress it had made */
			snprintf(msg, sizeof(msg), "download failed: %s", cr_json_get_str(dl, "message", "?"));
		else if (!strcmp(dls, "done"))
			snprintf(msg, sizeof(msg), "download done%s%s", *imsg ? "; " : "", imsg);
		else if (dl) {
			char prog[160];
			cr_cli_download_text(dl, prog, sizeof(prog));
			snprintf(msg, sizeof(msg), "download %s: %s", dls, prog);
		}
		char state[64];
		snprintf(state, sizeof(state), "%s%s", cr_json_get_str(x, "state", ""),
			 json_is_true(json_object_get(x, "outdated")) ? " (old spec)" : "");
		const char *row[] = { json_string_value(json_object_get(x, "id")), json_string_value(json_object_get(x, "model")),
				      state, at, claim, msg };
		cr_table_row(&t, row);
	}
	cr_table_print(&t);
	json_decref(ans);
	return 0;
}

int cr_cmd_scale(int argc, char **argv)
{
	static const char usage[] = "usage: corral scale NAME N [--server-url URL]\n"
				    "\n"
				    "Keep N replicas of a model (0 stops them all and keeps the model). Scaling down\n"
				    "removes the least valuable replicas first: not running, then on the busiest GPU,\n"
				    "then the newest; scaling up places new ones, or says why they cannot be.\n";
	const char *url = NULL;
	bool as_json = false;
	int rc = simple_opts(argc, argv, usage, &url, &as_json, NULL);
	if (rc >= 0)
		return rc;
	long long n;
	if (optind + 2 != argc || cr_cli_parse_count(argv[optind + 1], "N", 64, &n)) {
		fputs(usage, stderr);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	char *path = cr_xasprintf("/api/models/%s", argv[optind]);
	char *body = cr_xasprintf("{\"replicas\":%lld}", n);
	json_t *ans = cr_cli_api(&cl, "PATCH", path, body, &err);
	free(path);
	free(body);
	cr_cli_release(&cl);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(ans);
	json_t *rs = json_object_get(ans, "replicas_status");
	printf("model '%s' keeps %lld replica(s): %lld placed, %lld running\n", json_string_value(json_object_get(ans, "name")),
	       n, (long long)json_integer_value(json_object_get(rs, "total")),
	       (long long)json_integer_value(json_object_get(rs, "running")));
	const char *status = json_string_value(json_object_get(ans, "status"));
	if (status)
		printf("  %s\n", status);
	json_decref(ans);
	return 0;
}

int cr_cmd_rm(int argc, char **argv)
{
	static const char usage[] = "usage: corral rm NAME... [--server-url URL]\n"
				    "\n"
				    "Delete models and all their instances; their memory claims are released at once.\n"
				    "Each name is removed on its own: one that fails is reported, the others go on\n"
				    "(exit 1 when any failed).\n";
	const char *url = NULL;
	bool as_json = false;
	int rc = simple_opts(argc, argv, usage, &url, &as_json, NULL);
	if (rc >= 0)
		return rc;
	if (optind >= argc) {
		fputs(usage, stderr);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	rc = 0;
	for (int k = optind; k < argc; k++) {
		struct cr_err err = CR_ERR_INIT;
		char *path = cr_xasprintf("/api/models/%s", argv[k]);
		json_t *ans = cr_cli_api(&cl, "DELETE", path, NULL, &err);
		free(path);
		if (!ans) {
			rc = cr_cmd_fail(&err);
			continue;
		}
		printf("removed model '%s' and %zu instance(s)\n", json_string_value(json_object_get(ans, "name")),
		       json_array_size(json_object_get(ans, "instances")));
		json_decref(ans);
	}
	cr_cli_release(&cl);
	return rc;
}

int cr_cmd_engines(int argc, char **argv)
{
	static const char usage[] = "usage: corral engines [--json] [--server-url URL]\n"
				    "\n"
				    "The inference engines each worker found, with their versions and paths. An engine\n"
				    "that is missing or whose version command fails is not listed; 'corral workers show\n"
				    "NAME' has a note saying why.\n";
	bool as_json = false;
	int rc;
	json_t *ans = get_once(argc, argv, usage, "/api/workers", &as_json, &rc);
	if (!ans)
		return rc;
	json_t *rows = json_array();
	size_t i, k;
	json_t *w, *e;
	json_array_foreach(json_object_get(ans, "workers"), i, w)
		json_array_foreach(json_object_get(w, "engines"), k, e)
			json_array_append_new(rows, json_pack("{s:O,s:O,s:O,s:O}", "worker", json_object_get(w, "name"), "name",
							      json_object_get(e, "name"), "version", json_object_get(e, "version"),
							      "path", json_object_get(e, "path")));
	json_decref(ans);
	if (as_json)
		return cr_cli_print_json(rows);
	struct cr_table t = { .ncols = 4, .rows = json_array() };
	const char *head[] = { "WORKER", "ENGINE", "VERSION", "PATH" };
	cr_table_row(&t, head);
	json_array_foreach(rows, i, e) {
		const char *row[] = { cr_json_get_str(e, "worker", "?"), cr_json_get_str(e, "name", "?"),
				      cr_json_get_str(e, "version", "?"), cr_json_get_str(e, "path", "?") };
		cr_table_row(&t, row);
	}
	cr_table_print(&t);
	json_decref(rows);
	return 0;
}

int cr_cmd_logs(int argc, char **argv)
{
	static const char usage[] = "usage: corral logs INSTANCE|MODEL [-f] [--tail N] [--worker NAME] [--server-url URL]\n"
				    "\n"
				    "Print an instance's engine log (its leader's; --worker for a follower), read\n"
				    "through the server from the worker that runs it. A model's name stands for its\n"
				    "instance when it has one. -f keeps following it.\n";
	const char *url = NULL, *worker = NULL;
	bool follow = false;
	long long tail = 100;
	const struct cr_opt opts[] = {
		{ "follow", 'f', CR_OPT_FLAG, &follow, NULL, 0 },
		{ "tail", 0, CR_OPT_COUNT, &tail, NULL, 100000 },
		{ "worker", 0, CR_OPT_STR, &worker, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	if (optind + 1 != argc) {
		fputs(usage, stderr);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	char *path = cr_xasprintf("/api/instances/%s/logs?tail=%lld%s%s", argv[optind], tail, worker ? "&worker=" : "",
				  worker ? worker : "");
	int rc = 0;
	for (;;) {
		json_t *ans = cr_cli_api(&cl, "GET", path, NULL, &err);
		free(path);
		if (!ans) {
			rc = cr_cmd_fail(&err);
			break;
		}
		fputs(json_string_value(json_object_get(ans, "data")) ? json_string_value(json_object_get(ans, "data")) : "",
		      stdout);
		fflush(stdout);
		long long off = json_integer_value(json_object_get(ans, "offset"));
		json_decref(ans);
		if (!follow)
			break;
		usleep(500 * 1000);
		path = cr_xasprintf("/api/instances/%s/logs?offset=%lld%s%s", argv[optind], off, worker ? "&worker=" : "",
				    worker ? worker : "");
	}
	cr_cli_release(&cl);
	return rc;
}

static const char update_usage[] =
	"usage: corral update NAME [deploy options] [--dry-run] [--wait [--timeout S]] [-- ENGINE_ARGS...]\n"
	"\n"
	"Change a deployed model with any of deploy's options (see 'corral deploy --help');\n"
	"what is not given stays. A change of what instances are built from (source, engine,\n"
	"engine arguments, --ctx, --parallel, placement rules) is a rolling update: each new\n"
	"instance runs before an old one stops, and an old one stops only once its requests in\n"
	"flight end. Without room for the new instances beside the old ones, they are replaced\n"
	"one at a time; a new instance that fails stops the update with the old ones serving.\n"
	"\n"
	"  --dry-run              show where the new instances go (beside the old ones); change nothing\n"
	"  --wait                 wait until every new instance runs and the old ones are gone\n"
	"  --timeout S            with --wait, how long (default 300)\n"
	"\n"
	"Exit status: 0 updated (with --wait: replaced); 1 an error, a new instance that failed,\n"
	"or the timeout; 2 a usage error; 3 (--dry-run) the new instances do not fit beside the old.\n";

/* The model's spec as deploy takes it: its JSON less what the server adds. */
static json_t *spec_of(json_t *model)
{
	static const char *const fields[] = { "name", "path", "url", "sha256", "engine", "engine_args", "ctx", "parallel",
					      "replicas", "policy", "selector", "gpus", "allow_cpu_offload",
					      "allow_distributed", "health_probe", NULL };
	json_t *o = json_object();
	for (size_t k = 0; fields[k]; k++) {
		json_t *v = json_object_get(model, fields[k]);
		if (v && !json_is_null(v))
			json_object_set(o, fields[k], v);
	}
	return o;
}

int cr_cmd_update(int argc, char **argv)
{
	json_t *body = json_object();
	struct spec_flags f = { NULL, false, false, false, -1 };
	int rc = parse_spec_flags(argc, argv, update_usage, body, &f);
	if (rc >= 0) {
		json_decref(body);
		return rc;
	}
	rc = 0;
	char *name = cr_xstrdup(json_string_value(json_object_get(body, "name")));
	json_object_del(body, "name");
	if (!json_object_size(body)) {
		fprintf(stderr, "corral update: nothing to change: give a deploy option, e.g. --ctx 4096\n");
		json_decref(body);
		free(name);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, f.url);
	struct cr_err err = CR_ERR_INIT;
	char *path = cr_xasprintf("/api/models/%s", name);
	json_t *ans = NULL;
	if (f.dry) {
		ans = cr_cli_api(&cl, "GET", path, NULL, &err);
		if (!ans) {
			rc = cr_cmd_fail(&err);
		} else {
			json_t *spec = spec_of(ans);
			json_object_update(spec, body);
			char *text = cr_json_dump(spec);
			printf("the new instances of '%s', placed beside the old ones:\n", name);
			rc = run_plan(&cl, text, f.as_json, 15);
			if (rc == 3 && !f.as_json)
				printf("no room beside the old instances: the update would replace them one at a time\n");
			free(text);
			json_decref(spec);
		}
		goto out;
	}
	char *text = cr_json_dump(body);
	ans = cr_cli_api(&cl, "PATCH", path, text, &err);
	free(text);
	if (!ans) {
		rc = cr_cmd_fail(&err);
		goto out;
	}
	if (f.as_json) {
		rc = cr_cli_print_json(json_incref(ans));
		goto out;
	}
	long long replacing = json_integer_value(json_object_get(ans, "replacing"));
	long long want = json_integer_value(json_object_get(json_object_get(ans, "replicas_status"), "desired"));
	if (replacing)
		printf("model '%s' updated: its %lld instance(s) are replaced one by one, each new one running before "
		       "an old one stops\n", name, replacing);
	else
		printf("model '%s' updated\n", name);
	const char *status = json_string_value(json_object_get(ans, "status"));
	if (status) {
		printf("  %s\n", status);
		print_reasons(json_object_get(ans, "reasons"));
	}
	if (f.wait)
		rc = wait_running(&cl, name, (int)want, f.wait_s >= 0 ? f.wait_s : 300);
	else
		printf("follow it with 'corral instances --model %s'\n", name);
out:
	json_decref(ans);
	free(path);
	free(name);
	json_decref(body);
	cr_cli_release(&cl);
	return rc;
}
