/* Table-driven scheduler cases: each builds a snapshot from a compact worker
 * description, places one model, and checks the kind of placement, the GPUs
 * chosen, and for refusals the exact explanation a user reads. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "sched/place.h"

#define GIB_F(x) ((uint64_t)((x) * (double)CR_GIB))

/* ---- model shapes ---- */

static void shape(struct cr_model_shape *s, const char *which)
{
	memset(s, 0, sizeof(*s));
	double layer_gib, io_gib;
	if (!strcmp(which, "1b")) {
		*s = (struct cr_model_shape){ .n_layer = 16, .n_embd = 2048, .n_head = 32, .n_head_kv = 8, .n_ff = 8192 };
		layer_gib = 0.03, io_gib = 0.13;
	} else if (!strcmp(which, "7b") || !strcmp(which, "8b-st")) {
		*s = (struct cr_model_shape){ .n_layer = 32, .n_embd = 4096, .n_head = 32, .n_head_kv = 8, .n_ff = 14336 };
		layer_gib = !strcmp(which, "7b") ? 0.12 : 0.45, io_gib = !strcmp(which, "7b") ? 0.26 : 1.0;
	} else if (!strcmp(which, "big-28h-st")) { /* 28 heads, as Qwen2.5-7B: no tensor parallelism over 8 */
		*s = (struct cr_model_shape){ .n_layer = 80, .n_embd = 3584, .n_head = 28, .n_head_kv = 4, .n_ff = 18944 };
		layer_gib = 1.8, io_gib = 1.0;
	} else { /* 70b, 70b-st */
		*s = (struct cr_model_shape){ .n_layer = 80, .n_embd = 8192, .n_head = 64, .n_head_kv = 8, .n_ff = 28672 };
		layer_gib = !strcmp(which, "70b") ? 0.5 : 1.6, io_gib = !strcmp(which, "70b") ? 0.5 : 2.0;
	}
	bool st = strstr(which, "-st") != NULL;
	snprintf(s->format, sizeof(s->format), "%s", st ? "safetensors" : "gguf");
	snprintf(s->arch, sizeof(s->arch), "llama");
	snprintf(s->dtype, sizeof(s->dtype), "%s", st ? "bfloat16" : "");
	s->head_dim_k = s->head_dim_v = s->n_embd / s->n_head;
	s->n_vocab = 128256;
	s->n_ctx_train = 131072;
	s->layer_bytes = calloc(s->n_layer, sizeof(uint64_t));
	for (uint32_t l = 0; l < s->n_layer; l++)
		s->layer_bytes[l] = GIB_F(layer_gib);
	s->input_bytes = s->output_bytes = GIB_F(io_gib);
	s->weight_bytes = s->file_bytes = GIB_F(layer_gib) * s->n_layer + 2 * GIB_F(io_gib);
}

/* ---- snapshot from text ----
 * "name; state; vendor:Model:total:free[:claimed[:ours]], ...; engines; labels; ram_total:ram_avail; file; replicas"
 * sizes in GiB; empty fields take defaults (ready, no GPUs, llama.cpp+vllm+sglang, no labels, 64:60,
 * present, 0). */

struct wstore {
	char *fields;
	char *engines_buf;
	const char *labels[8];
	const char *engines[8];
};

static char *field(char **p)
{
	char *f = strsep(p, ";");
	if (!f)
		return (char *)"";
	while (*f == ' ')
		f++;
	size_t n = strlen(f);
	while (n && f[n - 1] == ' ')
		f[--n] = '\0';
	return f;
}

static int split_list(char *s, const char **out, int max)
{
	int n = 0;
	char *tok, *save = NULL;
	for (tok = strtok_r(s, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		out[n++] = tok;
	}
	return n;
}

static void parse_worker(const char *spec, struct cr_sched_worker *w, struct wstore *st)
{
	memset(w, 0, sizeof(*w));
	st->fields = strdup(spec);
	char *p = st->fields;
	w->name = w->id = field(&p);
	char *state = field(&p), *gpus = field(&p), *engines = field(&p), *labels = field(&p), *ram = field(&p),
	     *file = field(&p), *replicas = field(&p);
	w->state = *state ? state : "ready";
	if (!strcmp(state, "cordoned")) { /* a ready worker taking no new placements */
		w->state = "ready";
		w->cordoned = true;
	}
	const char *g[CR_SCHED_MAX_GPUS];
	int ng = *gpus ? split_list(gpus, g, CR_SCHED_MAX_GPUS) : 0;
	for (int i = 0; i < ng; i++) {
		char vendor[16], name[64];
		double total, free, claimed = 0, ours = 0;
		int got = sscanf(g[i], "%15[^:]:%63[^:]:%lf:%lf:%lf:%lf", vendor, name, &total, &free, &claimed, &ours);
		cr_assert_geq(got, 4, "gpu spec '%s'", g[i]);
		struct cr_sched_gpu *x = &w->gpus[w->n_gpus++];
		x->index = i;
		snprintf(x->vendor, sizeof(x->vendor), "%s", vendor);
		snprintf(x->name, sizeof(x->name), "%s", name);
		x->total = GIB_F(total);
		x->free = GIB_F(free);
		x->claimed = GIB_F(claimed);
		x->ours_used = GIB_F(ours);
	}
	static char all_engines[] = "llama.cpp,vllm,sglang,ray";
	st->engines_buf = *engines ? NULL : strdup(all_engines);
	w->n_engines = split_list(*engines ? engines : st->engines_buf, st->engines, 8);
	w->engines = st->engines;
	w->n_labels = *labels ? split_list(labels, st->labels, 8) : 0;
	w->labels = st->labels;
	double rt = 64, ra = 60;
	if (*ram)
		sscanf(ram, "%lf:%lf", &rt, &ra);
	w->ram_total = GIB_F(rt);
	w->ram_available = GIB_F(ra);
	w->file = !*file || !strcmp(file, "present") ? CR_FILE_PRESENT
		  : !strcmp(file, "missing")         ? CR_FILE_MISSING
		  : !strcmp(file, "unknown")         ? CR_FILE_UNKNOWN
						     : CR_FILE_INVALID;
	if (w->file == CR_FILE_INVALID)
		w->file_error = "not a GGUF file: magic is 0x4c4d4747";
	w->replicas = *replicas ? (int)strtol(replicas, NULL, 10) : 0;
}

struct scase {
	const char *name;
	const char *workers[16];
	const char *model;
	const char *engine;   /* default llama.cpp */
	const char *policy;   /* "binpack" or spread */
	const char *selector; /* "k=v,k=v" */
	const char *manual;   /* "w:i,w:i" */
	bool offload, distributed, url;
	int ctx;              /* default 8192 */
	/* expectations */
	int rc;               /* 0, CR_ENOTFOUND, CR_EINPUT */
	int kind;
	const char *members;  /* "a:0,b:1" (leader first), "a:cpu" */
	const char *text;     /* exact summary for refusals; substring of err for CR_EINPUT; warning for manual */
	int tp, pp;
};

struct built {
	struct cr_sched_snapshot snap;
	struct cr_sched_worker w[16];
	struct wstore st[16];
	struct cr_model_shape shape;
	struct cr_sched_request req;
	const char *sel[8];
	struct cr_sched_manual man[8];
	char *sel_buf, *man_buf;
};

static void build(const struct scase *c, struct built *b)
{
	memset(b, 0, sizeof(*b));
	int n = 0;
	while (n < 16 && c->workers[n]) {
		parse_worker(c->workers[n], &b->w[n], &b->st[n]);
		n++;
	}
	b->snap = (struct cr_sched_snapshot){ b->w, n, 512 * CR_MIB, 2 * CR_GIB };
	shape(&b->shape, c->model ? c->model : "7b");
	b->req.model = "m";
	b->req.engine = c->engine ? c->engine : "llama.cpp";
	b->req.shape = &b->shape;
	b->req.params = (struct cr_est_params)CR_EST_PARAMS_INIT;
	b->req.params.n_ctx = (uint32_t)(c->ctx ? c->ctx : 8192);
	b->req.policy = c->policy && !strcmp(c->policy, "binpack") ? CR_SCHED_BINPACK : CR_SCHED_SPREAD;
	if (c->selector) {
		b->sel_buf = strdup(c->selector);
		b->req.n_selector = split_list(b->sel_buf, b->sel, 8);
		b->req.selector = b->sel;
	}
	if (c->manual) {
		b->man_buf = strdup(c->manual);
		const char *items[8];
		int k = split_list(b->man_buf, items, 8);
		for (int i = 0; i < k; i++) {
			char *colon = strchr(items[i], ':');
			*colon = '\0';
			b->man[i].worker = items[i];
			b->man[i].index = strcmp(colon + 1, "cpu") ? (int)strtol(colon + 1, NULL, 10) : -1;
		}
		b->req.manual = b->man;
		b->req.n_manual = k;
	}
	b->req.allow_cpu_offload = c->offload;
	b->req.allow_distributed = c->distributed;
	b->req.downloadable = c->url;
}

static void unbuild(struct built *b)
{
	for (int i = 0; i < b->snap.n_workers; i++) {
		free(b->st[i].fields);
		free(b->st[i].engines_buf);
	}
	cr_shape_release(&b->shape);
	free(b->sel_buf);
	free(b->man_buf);
}

static void members_text(const struct built *b, const struct cr_sched_result *r, char *out, size_t n)
{
	size_t len = 0;
	out[0] = '\0';
	for (int m = 0; m < r->n_members; m++) {
		const struct cr_sched_member *x = &r->members[m];
		char g[16] = "cpu";
		if (x->gpu >= 0)
			snprintf(g, sizeof(g), "%d", x->gpu);
		len += (size_t)snprintf(out + len, n - len, "%s%s:%s", m ? "," : "", b->w[x->worker].name, g);
	}
}

static void run_case(const struct scase *c)
{
	struct built b;
	build(c, &b);
	struct cr_sched_result r;
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_sched_place(&b.snap, &b.req, &r, &err);
	char got[512];
	members_text(&b, &r, got, sizeof(got));
	if (rc != c->rc) {
		cr_expect_eq(rc, c->rc, "%s: rc %d, want %d (%s | %s | %s)", c->name, rc, c->rc, r.summary, err.message, got);
	} else if (rc == 0) {
		cr_expect(r.placed);
		cr_expect_eq((int)r.kind, c->kind, "%s: kind %d, want %d (%s)", c->name, (int)r.kind, c->kind, r.summary);
		if (c->members)
			cr_expect_str_eq(got, c->members, "%s: members", c->name);
		if (c->tp)
			cr_expect_eq(r.tp, c->tp, "%s: tp %d", c->name, r.tp);
		if (c->pp)
			cr_expect_eq(r.pp, c->pp, "%s: pp %d", c->name, r.pp);
		if (c->text)
			cr_expect(strstr(r.warning, c->text), "%s: warning '%s' lacks '%s'", c->name, r.warning, c->text);
		else
			cr_expect_str_empty(r.warning, "%s: unexpected warning %s", c->name, r.warning);
	} else if (rc == CR_ENOTFOUND) {
		cr_expect_not(r.placed);
		cr_expect_str_eq(r.summary, c->text, "%s: summary\n  got:  %s\n  want: %s", c->name, r.summary, c->text);
		int ruled_out = 0;
		for (int i = 0; i < r.n_reasons; i++)
			ruled_out += r.reasons[i].message[0] != '\0';
		cr_expect_geq(ruled_out, 1, "%s: every refusal names workers", c->name);
	} else {
		cr_expect(strstr(err.message, c->text), "%s: error '%s' lacks '%s'", c->name, err.message, c->text);
		cr_expect(err.fix[0], "%s: an error carries a fix", c->name);
	}
	cr_sched_result_release(&r);
	unbuild(&b);
}

enum { S = CR_PLACE_SINGLE_GPU, M = CR_PLACE_MULTI_GPU, D = CR_PLACE_DISTRIBUTED, P = CR_PLACE_PARTIAL_OFFLOAD,
       C = CR_PLACE_CPU, MAN = CR_PLACE_MANUAL };
#define NF CR_ENOTFOUND
#define BAD CR_EINPUT

#define H100 "nvidia:H100:80:80"
#define L4 "nvidia:L4:24:24"
#define L40 "nvidia:L40:48:48"

static const struct scase cases[] = {
	/* one GPU */
	{ "single gpu fits", { "a; ; " H100 }, .members = "a:0", .kind = S },
	{ "picks the gpu with room", { "a; ; nvidia:L4:24:2, nvidia:L4:24:24" }, .members = "a:1", .kind = S },
	{ "spread prefers a worker without a replica", { "a; ; " H100 "; ; ; ; ; 1", "b; ; nvidia:H100:80:40" },
	  .members = "b:0", .kind = S },
	{ "spread then most free", { "a; ; nvidia:H100:80:40", "b; ; nvidia:H100:80:70" }, .members = "b:0", .kind = S },
	{ "binpack takes the fullest gpu that fits", { "a; ; nvidia:H100:80:70", "b; ; nvidia:L4:24:12" },
	  .policy = "binpack", .members = "b:0", .kind = S },
	{ "binpack within one worker", { "a; ; nvidia:L4:24:24, nvidia:L4:24:10" }, .policy = "binpack",
	  .members = "a:1", .kind = S },
	{ "binpack skips a gpu that is too full", { "a; ; nvidia:L4:24:3, nvidia:L4:24:20" }, .policy = "binpack",
	  .members = "a:1", .kind = S },
	{ "memory of foreign processes counts", { "a; ; nvidia:H100:80:3" },
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 insufficient VRAM (largest free 3.0 GiB on a:0)",
	  .rc = NF },
	{ "claims count before the engine allocates", { "a; ; nvidia:L4:24:24:20" },
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 insufficient VRAM (largest free 3.5 GiB on a:0)",
	  .rc = NF },
	{ "our own use is not counted twice", { "a; ; nvidia:H100:80:10:60:60" }, .members = "a:0", .kind = S },
	{ "the reserve stays free", { "a; ; nvidia:T4:6:6" },
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 insufficient VRAM (largest free 5.5 GiB on a:0)",
	  .rc = NF },
	{ "amd gpu runs llama.cpp", { "a; ; amd:MI210:64:64" }, .members = "a:0", .kind = S },
	{ "amd gpu runs vllm", { "a; ; amd:MI210:64:64" }, .model = "8b-st", .engine = "vllm", .members = "a:0",
	  .kind = S },
	{ "smaller context fits a small gpu", { "a; ; nvidia:T4:6:6" }, .ctx = 2048, .members = "a:0", .kind = S },
	/* several GPUs of one worker */
	{ "multi gpu on one worker", { "a; ; " L4 ", " L4 ", " L4 ", " L4 }, .model = "70b", .members = "a:0,a:1",
	  .kind = M },
	{ "multi gpu prefers one gpu when it fits", { "a; ; " L4 ", " L4 }, .members = "a:0", .kind = S },
	{ "multi gpu over unequal gpus", { "a; ; nvidia:A6000:48:40, " L4 }, .model = "70b", .members = "a:0,a:1",
	  .kind = M },
	{ "vllm tensor parallel on equal gpus", { "a; ; " H100 ", " H100 ", " H100 ", " H100 }, .model = "70b-st",
	  .engine = "vllm", .members = "a:0,a:1", .kind = M, .tp = 2, .pp = 1 },
	{ "vllm tensor parallel of four", { "a; ; " L40 ", " L40 ", " L40 ", " L40 }, .model = "70b-st",
	  .engine = "vllm", .members = "a:0,a:1,a:2,a:3", .kind = M, .tp = 4, .pp = 1 },
	{ "vllm needs one gpu model per group", { "a; ; nvidia:A100:80:80, " H100 }, .model = "70b-st",
	  .engine = "vllm",
	  .text = "0/1 workers fit 'm' (needs 136.2 GiB VRAM at ctx 8192): 1 insufficient VRAM (largest free 79.5 GiB on a:0)",
	  .rc = NF },
	/* several workers */
	{ "distributed refused without the flag", { "a; ; " L4, "b; ; " L4 }, .model = "70b",
	  .text = "0/2 workers fit 'm' (needs 43.5 GiB VRAM at ctx 8192): 2 insufficient VRAM (largest free 23.5 GiB on a:0)",
	  .rc = NF },
	{ "llama.cpp rpc across workers", { "a; ; " L4, "b; ; nvidia:A6000:48:30" }, .model = "70b",
	  .distributed = true, .members = "b:0,a:0", .kind = D },
	{ "rpc mixes vendors", { "a; ; " L4, "b; ; amd:MI100:32:32" }, .model = "70b", .distributed = true,
	  .members = "b:0,a:0", .kind = D },
	{ "rpc takes the fewest gpus, largest first", { "a; ; " L4, "b; ; nvidia:A6000:48:30", "c; ; " L4 },
	  .model = "70b", .distributed = true, .members = "b:0,a:0", .kind = D },
	{ "vllm over workers: tp per node, pp across", { "a; ; nvidia:A100:40:40, nvidia:A100:40:40",
							  "b; ; nvidia:A100:40:40, nvidia:A100:40:40" },
	  .model = "70b-st", .engine = "vllm", .distributed = true, .members = "a:0,a:1,b:0,b:1", .kind = D, .tp = 2,
	  .pp = 2 },
	{ "vllm over workers needs ray on each", { "a; ; nvidia:A100:40:40, nvidia:A100:40:40; vllm",
						   "b; ; nvidia:A100:40:40, nvidia:A100:40:40; vllm" },
	  .model = "70b-st", .engine = "vllm", .distributed = true,
	  .text = "0/2 workers fit 'm' (needs 136.2 GiB VRAM at ctx 8192): 2 too small alone and without 'ray' for a "
		  "multi-worker group",
	  .rc = NF },
	{ "vllm over workers needs the same gpu model", { "a; ; nvidia:A100:40:40", "b; ; nvidia:L40:48:48" },
	  .model = "70b-st", .engine = "vllm", .distributed = true,
	  .text = "0/2 workers fit 'm' (needs 136.2 GiB VRAM at ctx 8192): 2 insufficient VRAM (largest free 47.5 GiB on b:0)",
	  .rc = NF },
	{ "a custom engine does not span workers", { "a; ; " L4 "; myeng", "b; ; " L4 "; myeng" }, .model = "70b",
	  .engine = "myeng", .distributed = true,
	  .text = "0/2 workers fit 'm' (needs 43.5 GiB VRAM at ctx 8192): 2 insufficient VRAM (largest free 23.5 GiB on a:0)",
	  .rc = NF },
	/* CPU and offload */
	{ "cpu-only worker without offload", { "cpu; ; ; ; ; 64:60" },
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 have no GPU (CPU offload not allowed)",
	  .rc = NF },
	{ "cpu-only worker with offload", { "cpu; ; ; ; ; 64:60" }, .offload = true, .members = "cpu:cpu", .kind = C },
	{ "partial offload", { "a; ; nvidia:T4:16:16; ; ; 128:120" }, .model = "70b", .offload = true,
	  .members = "a:0,a:cpu", .kind = P },
	{ "cpu offload short of ram", { "cpu; ; ; ; ; 16:12" }, .model = "70b", .offload = true,
	  .text = "0/1 workers fit 'm' (needs 43.7 GiB RAM at ctx 8192): 1 insufficient RAM (largest free 12.0 GiB on cpu)", .rc = NF },
	{ "cpu-only control plane next to a gpu worker", { "server; ; ; llama.cpp", "gpu-1; ; " H100 },
	  .model = "8b-st", .engine = "vllm", .members = "gpu-1:0", .kind = S },
	{ "vllm refuses a cpu-only worker", { "server; ; ; llama.cpp, vllm" }, .model = "8b-st", .engine = "vllm",
	  .text = "0/1 workers fit 'm' (needs 18.7 GiB VRAM at ctx 8192): 1 have no GPU that 'vllm' can use", .rc = NF },
	{ "gpu preferred over cpu offload", { "cpu; ; ; ; ; 256:250", "g; ; " L4 }, .offload = true,
	  .members = "g:0", .kind = S },
	/* filters */
	{ "not ready", { "a; not_ready; " H100 },
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 not ready", .rc = NF },
	{ "unreachable is not ready", { "a; unreachable; " H100, "b; ; " L4 }, .members = "b:0", .kind = S },
	{ "selector picks the labelled worker", { "a; ; " H100 "; ; gpu=h100", "b; ; " H100 "; ; gpu=l4" },
	  .selector = "gpu=l4", .members = "b:0", .kind = S },
	{ "selector: all pairs must match", { "a; ; " H100 "; ; gpu=h100", "b; ; " H100 "; ; gpu=h100,zone=eu" },
	  .selector = "gpu=h100,zone=eu", .members = "b:0", .kind = S },
	{ "selector matches nothing", { "a; ; " H100 "; ; gpu=h100" }, .selector = "zone=us",
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 do not match the selector", .rc = NF },
	{ "no engine", { "a; ; " H100 "; llama.cpp" }, .model = "8b-st", .engine = "vllm",
	  .text = "0/1 workers fit 'm' (needs 18.7 GiB VRAM at ctx 8192): 1 have no engine 'vllm'", .rc = NF },
	{ "file missing", { "a; ; " H100 "; ; ; ; missing", "b; ; " L4 }, .members = "b:0", .kind = S },
	{ "file missing everywhere", { "a; ; " H100 "; ; ; ; missing" },
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 lack the model file", .rc = NF },
	{ "url source is downloadable", { "a; ; " H100 "; ; ; ; unknown" }, .url = true, .members = "a:0", .kind = S },
	{ "invalid file", { "a; ; " H100 "; ; ; ; invalid" },
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 have an invalid model file", .rc = NF },
	{ "mixed reasons counted",
	  { "g1; ; nvidia:L4:24:10; vllm", "g2; ; nvidia:L4:24:8; vllm", "g3; ; nvidia:L4:24:12; vllm",
	    "g4; ; nvidia:L4:24:11; vllm", "g5; ; nvidia:L4:24:9; vllm", "g6; ; nvidia:L4:24:7; vllm",
	    "g7; ; nvidia:L4:24:6; vllm", "g8; ; nvidia:L4:24:23.5; vllm", "c1; ; " H100 "; llama.cpp",
	    "c2; ; " H100 "; llama.cpp", "c3; ; " H100 "; llama.cpp", "n1; not_ready; " H100 },
	  .model = "70b-st", .engine = "vllm",
	  .text = "0/12 workers fit 'm' (needs 136.2 GiB VRAM at ctx 8192): 8 insufficient VRAM (largest free 23.5 GiB "
		  "on g8:0), 3 have no engine 'vllm', 1 not ready",
	  .rc = NF },
	/* manual choice */
	{ "manual gpu", { "a; ; " H100 ", " H100 }, .manual = "a:1", .members = "a:1", .kind = MAN },
	{ "manual overcommit warns", { "a; ; nvidia:L4:24:2" }, .manual = "a:0", .members = "a:0", .kind = MAN,
	  .text = "overcommit: a:0 needs 5.5 GiB but has 2.0 GiB free" },
	{ "manual unknown worker", { "a; ; " H100 }, .manual = "zz:0", .text = "gpus: no worker 'zz'", .rc = BAD },
	{ "manual unknown gpu", { "a; ; " H100 }, .manual = "a:3", .text = "worker 'a' has no GPU 3", .rc = BAD },
	{ "manual across workers needs the flag", { "a; ; " H100, "b; ; " H100 }, .manual = "a:0,b:0",
	  .text = "the chosen GPUs are on 2 workers", .rc = BAD },
	{ "manual across workers with the flag", { "a; ; nvidia:L4:24:20", "b; ; nvidia:L4:24:20" }, .manual = "a:0,b:0", .model = "70b",
	  .distributed = true, .members = "a:0,b:0", .kind = MAN, .text = "overcommit" },
	{ "manual: workers are counted once however the list interleaves them", { "a; ; " H100 ", " H100, "b; ; " H100 },
	  .manual = "a:0,b:0,a:1", .text = "the chosen GPUs are on 2 workers", .rc = BAD },
	{ "manual vllm 2+1+1 is refused, not an impossible tp x pp",
	  { "a; ; " L4 ", " L4, "b; ; " L4, "c; ; " L4 }, .model = "8b-st", .engine = "vllm", .distributed = true,
	  .manual = "a:0,a:1,b:0,c:0", .text = "every worker needs the same number of chosen GPUs, not 2 on a, 1 on b, 1 on c",
	  .rc = BAD },
	{ "manual vllm 1+1 is pipeline parallel", { "a; ; " L4, "b; ; " L4 }, .model = "8b-st", .engine = "vllm",
	  .distributed = true, .manual = "a:0,b:0", .members = "a:0,b:0", .kind = MAN, .tp = 1, .pp = 2 },
	{ "manual too small with cpu offload: a partial offload on the chosen GPU", { "a; ; nvidia:T4:16:16, " H100 "; ; ; 128:120" },
	  .model = "70b", .offload = true, .manual = "a:0", .members = "a:0,a:cpu", .kind = P },
	{ "partial offload uses every GPU of the worker", { "a; ; nvidia:T4:16:16, nvidia:T4:16:16; ; ; 128:120" },
	  .model = "70b", .offload = true, .members = "a:0,a:1,a:cpu", .kind = P },
	{ "manual on a worker that is down", { "a; not_ready; " H100 }, .manual = "a:0",
	  .text = "cannot place 'm' on the chosen GPUs: a is not_ready", .rc = NF },
	{ "cordoned worker is skipped", { "a; cordoned; " H100, "b; ; " L4 }, .members = "b:0", .kind = S },
	{ "cordoned alone", { "a; cordoned; " H100 },
	  .text = "0/1 workers fit 'm' (needs 5.5 GiB VRAM at ctx 8192): 1 cordoned", .rc = NF },
	{ "manual on a cordoned worker", { "a; cordoned; " H100 }, .manual = "a:0",
	  .text = "cannot place 'm' on the chosen GPUs: a is cordoned", .rc = NF },
};

Test(place, table)
{
	size_t n = sizeof(cases) / sizeof(cases[0]);
	cr_assert_geq(n, 40);
	for (size_t i = 0; i < n; i++)
		run_case(&cases[i]);
}

static void place_and_apply(struct built *b, struct cr_sched_result *r)
{
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_sched_place(&b->snap, &b->req, r, &err), 0, "%s", r->summary);
	cr_sched_apply(&b->snap, r);
}

Test(place, replicas_spread_over_workers)
{
	struct scase c = { .name = "replicas", .workers = { "a; ; " H100, "b; ; nvidia:H100:80:60", "c; ; nvidia:H100:80:70" } };
	struct built b;
	build(&c, &b);
	struct cr_sched_result r[3];
	for (int i = 0; i < 3; i++)
		place_and_apply(&b, &r[i]);
	cr_assert_str_eq(b.w[r[0].members[0].worker].name, "a", "most free first");
	cr_assert_str_eq(b.w[r[1].members[0].worker].name, "c");
	cr_assert_str_eq(b.w[r[2].members[0].worker].name, "b");
	cr_assert_eq(b.w[0].gpus[0].claimed, r[0].members[0].claim, "apply records the claim");
	for (int i = 0; i < 3; i++)
		cr_sched_result_release(&r[i]);
	unbuild(&b);
}

Test(place, replicas_binpack_on_one_gpu_until_full)
{
	struct scase c = { .name = "binpack", .workers = { "a; ; nvidia:L4:24:24", "b; ; nvidia:H100:80:80" }, .policy = "binpack" };
	struct built b;
	build(&c, &b);
	struct cr_sched_result r;
	int on_a = 0;
	for (int i = 0; i < 5; i++) {
		place_and_apply(&b, &r);
		on_a += r.members[0].worker == 0;
		cr_sched_result_release(&r);
	}
	int fit = (int)((23 * CR_GIB + CR_GIB / 2) / r.need_vram);
	cr_assert_eq(on_a, fit, "%d replicas of %llu MiB fill the L4 before the H100 is used, got %d", fit,
		     (unsigned long long)(r.need_vram >> 20), on_a);
	unbuild(&b);
}

Test(place, same_snapshot_same_answer)
{
	struct scase c = { .name = "det", .workers = { "a; ; " L4, "b; ; nvidia:A6000:48:30", "c; ; " L4 }, .model = "70b",
			   .distributed = true };
	struct built b;
	build(&c, &b);
	struct cr_sched_result r1, r2;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_sched_place(&b.snap, &b.req, &r1, &err), 0);
	cr_assert_eq(cr_sched_place(&b.snap, &b.req, &r2, &err), 0);
	cr_assert_str_eq(r1.summary, r2.summary);
	double sum = 0;
	for (int m = 0; m < r1.n_members; m++)
		sum += r1.members[m].split;
	cr_assert_float_eq(sum, 1.0, 1e-9, "tensor split sums to 1");
	cr_assert_gt(r1.members[0].split, r1.members[1].split, "the larger GPU takes the larger share");
	cr_sched_result_release(&r1);
	cr_sched_result_release(&r2);
	unbuild(&b);
}

Test(place, free_memory_rule)
{
	struct cr_sched_gpu g = { .total = 80 * CR_GIB, .free = 10 * CR_GIB, .claimed = 60 * CR_GIB, .ours_used = 5 * CR_GIB };
	cr_assert_eq(cr_sched_gpu_free(&g, CR_GIB), 15 * CR_GIB, "measured free + our own use");
	g.ours_used = 60 * CR_GIB;
	cr_assert_eq(cr_sched_gpu_free(&g, CR_GIB), 19 * CR_GIB, "total - claims - reserve");
	g.claimed = 90 * CR_GIB;
	cr_assert_eq(cr_sched_gpu_free(&g, CR_GIB), 0, "never negative");
}

/* Reports for the group checks: a driver and the peers measured. */
static json_t *report(const char *driver, const char *peers)
{
	json_t *r = json_pack("{s:{s:{s:s}},s:[{s:s,s:s}],s:[{s:s,s:s},{s:s,s:s},{s:s,s:s}],s:{s:I}}", "drivers", "nvidia",
			      "driver_version", driver, "gpus", "vendor", "nvidia", "name", "H100", "engines", "name", "vllm",
			      "version", "0.6.3", "name", "ray", "version", "2.40.0", "name", "llama.cpp", "version", "b1",
			      "system", "shm_bytes", (json_int_t)(16 * CR_GIB));
	json_object_set_new(r, "peers", json_loads(peers, 0, NULL));
	return r;
}

#define OK3 "{\"a\":{\"rtt_ms\":0.2},\"b\":{\"rtt_ms\":0.2},\"c\":{\"rtt_ms\":0.2}}"

Test(place, vllm_groups_pass_the_group_checks_or_are_explained)
{
	/* 70b safetensors needs two 80 GiB GPUs: one on each of two workers */
	struct scase c = { .name = "groups", .workers = { "a; ; nvidia:H100:80:80", "b; ; nvidia:H100:80:80",
							 "c; ; nvidia:H100:80:80" },
			   .model = "70b-st", .engine = "vllm", .distributed = true };
	struct built b;
	build(&c, &b);
	json_t *ra = report("550.54.15", OK3), *rb = report("535.104.05", OK3), *rc = report("550.54.14", OK3);
	b.w[0].report = ra;
	b.w[1].report = rb;
	b.w[2].report = rc;
	struct cr_sched_result r;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_sched_place(&b.snap, &b.req, &r, &err), 0, "%s", r.summary);
	cr_assert_eq(r.n_members, 2);
	cr_assert_str_eq(b.w[r.members[0].worker].name, "a");
	cr_assert_str_eq(b.w[r.members[1].worker].name, "c", "b runs another driver: passed over");
	cr_assert(r.checks, "the chosen group's checks are kept");
	cr_sched_result_release(&r);
	/* with c unreachable from a, no group of matching nodes is left: refused, explained */
	json_decref(rc);
	b.w[2].report = rc = report("550.54.14", "{\"a\":{\"error\":\"connection refused\"}}");
	json_object_set_new(json_object_get(ra, "peers"), "c", json_pack("{s:s}", "error", "no route to host"));
	cr_assert_eq(cr_sched_place(&b.snap, &b.req, &r, &err), CR_ENOTFOUND);
	cr_assert(r.groups && json_array_size(r.groups) >= 1, "groups tried are listed");
	cr_assert(strstr(r.summary, "refused by checks"), "%s", r.summary);
	char all[2000] = "";
	size_t i;
	json_t *g;
	json_array_foreach(r.groups, i, g) {
		char one[600];
		cr_checks_summary(json_object_get(g, "checks"), CR_CHECK_FAIL, one, sizeof(one));
		strncat(all, one, sizeof(all) - strlen(all) - 1);
	}
	cr_assert(strstr(all, "a cannot reach c (no route to host)"), "%s", all);
	cr_assert(strstr(all, "driver-mismatch"), "%s", all);
	cr_sched_result_release(&r);
	json_decref(ra);
	json_decref(rb);
	json_decref(rc);
	unbuild(&b);
}

Test(place, a_hand_picked_vllm_group_with_a_cpu_only_node_is_refused)
{
	struct scase c = { .name = "manual", .workers = { "a; ; nvidia:H100:80:80", "cpu1; ; " },
			   .model = "7b", .engine = "vllm", .manual = "a:0,cpu1:cpu", .distributed = true };
	struct built b;
	build(&c, &b);
	json_t *ra = report("550.54.15", OK3), *rc = json_pack("{s:[],s:[{s:s,s:s}],s:{s:I},s:{}}", "gpus", "engines",
								"name", "vllm", "version", "0.6.3", "system",
								"shm_bytes", (json_int_t)CR_GIB, "peers");
	b.w[0].report = ra;
	b.w[1].report = rc;
	struct cr_sched_result r;
	struct cr_err err = CR_ERR_INIT;
	int rc_place = cr_sched_place(&b.snap, &b.req, &r, &err);
	cr_assert_eq(rc_place, CR_ENOTFOUND, "%s %s", r.summary, err.message);
	cr_assert(strstr(r.summary, "cpu1 has no GPU: vllm needs a GPU on every node"), "%s", r.summary);
	cr_sched_result_release(&r);
	json_decref(ra);
	json_decref(rc);
	unbuild(&b);
}

/* llama.cpp's -ngl counts the output layer: -ngl N is the output and N-1
 * blocks. A GPU with room for 4 blocks but not for 4 blocks and the output
 * gets -ngl 4 (3 blocks + output), claims no more than it has free, and a
 * GPU too small for even one block next to the output gets none: never an
 * "offload" of the output layer alone. */
Test(place, partial_offload_counts_the_output_layer_and_fits)
{
	for (int gib_free = 1; gib_free <= 16; gib_free++) {
		char w[128];
		snprintf(w, sizeof(w), "a; ; nvidia:T4:16:%d; ; ; 128:120", gib_free);
		struct scase c = { .name = "ngl", .workers = { w }, .model = "70b", .offload = true };
		struct built b;
		build(&c, &b);
		struct cr_sched_result r;
		struct cr_err err = CR_ERR_INIT;
		cr_assert_eq(cr_sched_place(&b.snap, &b.req, &r, &err), 0, "%d GiB: %s %s", gib_free, r.summary,
			     err.message);
		if (r.kind == CR_PLACE_PARTIAL_OFFLOAD) {
			cr_assert_geq(r.ngl, 2, "%d GiB: at least one block besides the output, -ngl %u", gib_free, r.ngl);
			cr_assert_eq(r.members[0].layers, r.ngl - 1, "%d GiB: -ngl %u is %u blocks and the output", gib_free,
				     r.ngl, r.members[0].layers);
			uint64_t free_b = cr_sched_gpu_free(&b.w[0].gpus[0], b.snap.gpu_reserve);
			cr_assert_leq(r.members[0].claim, free_b, "%d GiB: the claim fits what the scheduler sees free",
				      gib_free);
			/* one more block would not fit: the largest -ngl was chosen */
			struct cr_est_params p = b.req.params;
			p.n_gpu_layers = (int)r.ngl + 1;
			struct cr_estimate e;
			cr_assert_eq(cr_estimate_llama(&b.shape, &p, 1, NULL, &e, NULL), 0);
			cr_assert_gt(e.dev[0].total, free_b, "%d GiB", gib_free);
		} else {
			cr_assert_eq(r.kind, CR_PLACE_CPU, "%d GiB", gib_free);
			cr_assert_eq(r.ngl, 0);
		}
		cr_sched_result_release(&r);
		unbuild(&b);
	}
}

/* The group checks compare the GPUs the placement chose, not each worker's
 * first one: a worker whose GPU 0 is an L4 but whose chosen GPU 1 is an H100
 * joins a group of H100s. */
Test(place, vllm_group_checks_compare_the_chosen_gpus)
{
	struct scase c = { .name = "chosen", .workers = { "a; ; nvidia:L4:24:24, nvidia:H100:80:80", "b; ; nvidia:H100:80:80" },
			   .model = "70b-st", .engine = "vllm", .distributed = true };
	struct built b;
	build(&c, &b);
	const char *fmt = "{s:{s:{s:s}},s:[{s:i,s:s,s:s},{s:i,s:s,s:s}],s:[{s:s,s:s},{s:s,s:s}],s:{s:I},s:{s:{s:f},s:{s:f}}}";
	json_t *ra = json_pack(fmt, "drivers", "nvidia", "driver_version", "550.54.15", "gpus", "index", 0, "vendor", "nvidia",
			       "name", "L4", "index", 1, "vendor", "nvidia", "name", "H100", "engines", "name", "vllm", "version",
			       "0.6.3", "name", "ray", "version", "2.40.0", "system", "shm_bytes", (json_int_t)(16 * CR_GIB),
			       "peers", "a", "rtt_ms", 0.2, "b", "rtt_ms", 0.2);
	json_t *rb = json_pack("{s:{s:{s:s}},s:[{s:i,s:s,s:s}],s:[{s:s,s:s},{s:s,s:s}],s:{s:I},s:{s:{s:f},s:{s:f}}}",
			       "drivers", "nvidia", "driver_version", "550.54.15", "gpus", "index", 0, "vendor", "nvidia",
			       "name", "H100", "engines", "name", "vllm", "version", "0.6.3", "name", "ray", "version", "2.40.0",
			       "system", "shm_bytes", (json_int_t)(16 * CR_GIB), "peers", "a", "rtt_ms", 0.2, "b", "rtt_ms", 0.2);
	b.w[0].report = ra;
	b.w[1].report = rb;
	struct cr_sched_result r;
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_sched_place(&b.snap, &b.req, &r, &err);
	char got[256];
	members_text(&b, &r, got, sizeof(got));
	cr_assert_eq(rc, 0, "%s | %s", r.summary, err.message);
	cr_assert(strstr(got, "a:1") && strstr(got, "b:0"), "the two H100s: %s", got);
	char all[2048] = "";
	size_t i;
	json_t *ck;
	json_array_foreach(r.checks, i, ck)
		if (!strcmp(cr_json_get_str(ck, "id", ""), "gpu-mismatch"))
			snprintf(all, sizeof(all), "%s %s", cr_json_get_str(ck, "level", ""), cr_json_get_str(ck, "message", ""));
	cr_assert(strstr(all, "pass every node has H100"), "%s", all);
	cr_sched_result_release(&r);
	json_decref(ra);
	json_decref(rb);
	unbuild(&b);
}

/* A refusal names the rule that decided, not memory: eight L4s would hold
 * the model, but 28 heads do not split eight ways; and a refused llama.cpp
 * model says that CPU offload was tried too. */
static void expect_refusal(const struct scase *c, const char *needle)
{
	struct built b;
	build(c, &b);
	struct cr_sched_result r;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_sched_place(&b.snap, &b.req, &r, &err), CR_ENOTFOUND, "%s: %s %s", c->name, r.summary,
		     err.message);
	cr_assert(strstr(r.summary, needle), "%s:\n  %s\n  lacks: %s", c->name, r.summary, needle);
	cr_sched_result_release(&r);
	unbuild(&b);
}

Test(place, refusals_name_the_rule_and_the_offload_tried)
{
	struct scase heads = { .name = "heads", .workers = { "a; ; " L4 "," L4 "," L4 "," L4 "," L4 "," L4 "," L4 "," L4 },
			       .model = "big-28h-st", .engine = "vllm" };
	expect_refusal(&heads, "8 GPUs of a would hold it, but vllm needs the tensor-parallel size to divide the 28 "
			       "attention heads, and 8 does not");
	struct scase offload = { .name = "offload", .workers = { "a; ; nvidia:T4:16:16; ; ; 16:12" }, .model = "70b",
				 .offload = true };
	expect_refusal(&offload, "CPU offload was tried too: the closest needs");
}

Test(place, learned_corrections_change_claims_within_bounds)
{
	struct scase c = { .name = "learned", .workers = { "a; ; nvidia:L4:24:24" } };
	struct built b;
	build(&c, &b);
	struct cr_sched_result r;
	place_and_apply(&b, &r);
	uint64_t plain = r.need_vram;
	cr_sched_result_release(&r);
	b.req.vram_delta = 100 << 20; /* the engine held 100 MiB more than estimated */
	place_and_apply(&b, &r);
	cr_assert_eq(r.need_vram, plain + (100 << 20));
	cr_assert_eq(r.members[0].claim, plain + (100 << 20));
	cr_sched_result_release(&r);
	b.req.vram_delta = -(int64_t)plain * 10; /* an odd measure: at most half goes */
	place_and_apply(&b, &r);
	cr_assert_eq(r.need_vram, plain - plain / 2);
	cr_sched_result_release(&r);
	unbuild(&b);
}

Test(place, each_gpu_model_claims_what_was_learned_on_it)
{
	/* learned: +2 GiB on the L4, nothing on the A100 (the general figure is
	 * the latest of any GPU: here the L4's) */
	struct scase c = { .name = "learned per gpu", .workers = { "a; ; nvidia:L4:24:24", "b; ; nvidia:A100:24:24" } };
	struct built b;
	build(&c, &b);
	struct cr_sched_result r;
	place_and_apply(&b, &r);
	uint64_t plain = r.need_vram;
	cr_sched_result_release(&r);
	unbuild(&b);
	const struct cr_sched_learned table[] = { { "L4", 2ll << 30 }, { "A100", 0 } };
	for (int on = 0; on < 2; on++) { /* only the L4, then only the A100, has room */
		struct scase one = { .name = "learned per gpu",
				     .workers = { on ? "a; ; nvidia:L4:24:1" : "a; ; nvidia:L4:24:24",
						  on ? "b; ; nvidia:A100:24:24" : "b; ; nvidia:A100:24:1" } };
		build(&one, &b);
		b.req.vram_delta = 2ll << 30;
		b.req.learned = table;
		b.req.n_learned = 2;
		place_and_apply(&b, &r);
		cr_assert_eq(r.n_members, 1);
		cr_assert_eq(r.members[0].worker, on, "placed on %s", on ? "b" : "a");
		cr_assert_eq(r.members[0].claim, on ? plain : plain + (2ull << 30),
			     "the %s claims %s", on ? "A100" : "L4", on ? "the estimate" : "what was learned on it");
		cr_sched_result_release(&r);
		unbuild(&b);
	}
	/* a model with nothing learned on it takes the general figure */
	struct scase other = { .name = "learned elsewhere", .workers = { "a; ; nvidia:H100:80:80" } };
	build(&other, &b);
	b.req.vram_delta = 1ll << 30;
	b.req.learned = table;
	b.req.n_learned = 2;
	place_and_apply(&b, &r);
	cr_assert_eq(r.members[0].claim, plain + (1ull << 30));
	cr_sched_result_release(&r);
	unbuild(&b);
}
