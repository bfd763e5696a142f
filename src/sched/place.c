/* Placement: filter workers, then try the fits in order and keep the best
 * candidate of the first fit that has any. Every worker that is ruled out, or
 * that nothing fits on, gets a reason; the summary counts them by reason. */
#include "sched/place.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/engine_kind.h"
#include "base/json.h"
#include "base/mem.h"
#include "base/util.h"

static bool eq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

bool cr_sched_engine_distributes(const char *engine)
{
	enum cr_engine_kind k = cr_engine_kind(engine);
	return k == CR_ENGINE_LLAMA || k == CR_ENGINE_VLLM_LIKE;
}

bool cr_sched_engine_uses(const char *engine, const char *device)
{
	if (cr_engine_vllm_like(engine))
		return eq(device, "nvidia") || eq(device, "amd");
	return true; /* llama.cpp runs on every backend; custom engines are trusted */
}

uint64_t cr_sched_gpu_free(const struct cr_sched_gpu *g, uint64_t reserve)
{
	uint64_t used = g->claimed + reserve;
	uint64_t by_claims = g->total > used ? g->total - used : 0;
	uint64_t by_measure = g->free + g->ours_used;
	return by_claims < by_measure ? by_claims : by_measure;
}

static uint64_t ram_free(const struct cr_sched_worker *w, uint64_t reserve)
{
	uint64_t used = w->ram_claimed + reserve;
	uint64_t by_claims = w->ram_total > used ? w->ram_total - used : 0;
	uint64_t by_measure = w->ram_available + w->ram_claimed;
	return by_claims < by_measure ? by_claims : by_measure;
}

static void gib(uint64_t b, char *out, size_t n)
{
	cr_bytes_human(b, out, n);
}

/* ---- the working state of one placement ---- */

/* One GPU of the snapshot: worker index, index into its gpus, free bytes. */
struct gref {
	int w, g;
	uint64_t free;
};

struct ctx {
	const struct cr_sched_snapshot *snap;
	const struct cr_sched_request *req;
	struct cr_sched_result *out;
	bool *eligible;      /* per worker: passed the filters */
	bool *fitted;        /* per worker: took part in the chosen placement */
	uint64_t need1;      /* claim on one GPU for the whole model */
	uint64_t need1_raw;  /* the same before learned corrections (each GPU model has its own) */
	const struct gref *cur; /* the GPUs an estimate is for, when known: their models' corrections */
	int n_cur;
	uint64_t per_dev;    /* the part of it every device pays again (compute, runtime) */
	bool llama;
	char **keys;         /* per worker: its group key (versions that must match), made when first needed */
	bool *bad;           /* per worker: scratch for try_vllm_group */
	struct cr_group_limits limits;
	/* rules that decided, for the refusal to name them */
	int heads_tp, heads_worker; /* a tensor-parallel size that would fit, refused by the heads */
	bool offload_tried;         /* a partial or CPU offload was tried and did not fit */
	uint64_t offload_ram, offload_free; /* the try closest to fitting: RAM needed, free */
	int offload_worker;
};

static void reason(struct ctx *c, int w, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void reason(struct ctx *c, int w, const char *code, const char *fmt, ...)
{
	struct cr_sched_result *r = c->out;
	r->reasons = cr_xrealloc(r->reasons, (size_t)(r->n_reasons + 1) * sizeof(*r->reasons));
	struct cr_sched_reason *x = &r->reasons[r->n_reasons++];
	x->worker = w;
	x->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(x->message, sizeof(x->message), fmt, ap);
	va_end(ap);
}

static bool has_label(const struct cr_sched_worker *w, const char *kv)
{
	for (int i = 0; i < w->n_labels; i++)
		if (eq(w->labels[i], kv))
			return true;
	return false;
}

static bool has_engine(const struct cr_sched_worker *w, const char *engine)
{
	for (int i = 0; i < w->n_engines; i++)
		if (eq(w->engines[i], engine))
			return true;
	return false;
}

static int usable_gpus(const struct ctx *c, const struct cr_sched_worker *w)
{
	int n = 0;
	for (int g = 0; g < w->n_gpus; g++)
		n += cr_sched_engine_uses(c->req->engine, w->gpus[g].vendor);
	return n;
}

static void filter(struct ctx *c)
{
	const struct cr_sched_request *q = c->req;
	for (int i = 0; i < c->snap->n_workers; i++) {
		const struct cr_sched_worker *w = &c->snap->workers[i];
		int sel_miss = -1;
		for (int s = 0; s < q->n_selector && sel_miss < 0; s++)
			if (!has_label(w, q->selector[s]))
				sel_miss = s;
		if (!eq(w->state, "ready"))
			reason(c, i, "not_ready", "%s is %s", w->name, w->state ? w->state : "unknown");
		else if (w->cordoned)
			reason(c, i, "cordoned", "%s is cordoned", w->name);
		else if (sel_miss >= 0)
			reason(c, i, "selector", "%s does not have label %s", w->name, q->selector[sel_miss]);
		else if (!has_engine(w, q->engine))
			reason(c, i, "no_engine", "%s has no engine '%s' installed", w->name, q->engine);
		else if (w->file == CR_FILE_INVALID)
			reason(c, i, "file_invalid", "%s: %s", w->name, w->file_error ? w->file_error : "invalid model file");
		else if (w->file == CR_FILE_MISSING && !q->downloadable)
			reason(c, i, "file_missing", "%s does not have the model file", w->name);
		else if (w->file == CR_FILE_UNKNOWN && !q->downloadable)
			reason(c, i, "file_missing", "%s has not reported the model file yet", w->name);
		else if (!usable_gpus(c, w) && cr_engine_vllm_like(q->engine))
			reason(c, i, "engine_devices", "%s has no GPU that '%s' can use (%s)", w->name, q->engine,
			       w->n_gpus ? "unsupported vendor" : "CPU only");
		else
			c->eligible[i] = true;
	}
}

/* ---- estimates ---- */

/* A learned correction, kept within [-half, +the estimate or 2 GiB]: one odd
 * measure never removes most of a claim or multiplies it. */
static uint64_t corrected(uint64_t bytes, int64_t delta)
{
	if (!delta || !bytes)
		return bytes;
	int64_t lo = -(int64_t)(bytes / 2), hi = (int64_t)(bytes > (2ull << 30) ? bytes : (2ull << 30));
	delta = delta < lo ? lo : delta > hi ? hi : delta;
	return (uint64_t)((int64_t)bytes + delta);
}

/* The correction learned on GPUs of this product name, else the general one. */
static int64_t delta_for(const struct ctx *c, const char *device)
{
	for (int i = 0; device && i < c->req->n_learned; i++)
		if (c->req->learned[i].device && !strcmp(c->req->learned[i].device, device))
			return c->req->learned[i].delta;
	return c->req->vram_delta;
}

static const char *gpu_name(const struct ctx *c, int d)
{
	if (!c->cur || d >= c->n_cur)
		return NULL;
	return c->snap->workers[c->cur[d].w].gpus[c->cur[d].g].name;
}

static void learn(const struct ctx *c, struct cr_estimate *e)
{
	e->vram = 0;
	for (int d = 0; d < e->n_dev; d++) {
		e->dev[d].total = corrected(e->dev[d].total, delta_for(c, gpu_name(c, d)));
		e->vram += e->dev[d].total;
	}
	e->ram = corrected(e->ram, c->req->ram_delta);
}

static int est_llama(struct ctx *c, int n_dev, const double *split, int ngl, struct cr_estimate *e)
{
	struct cr_est_params p = c->req->params;
	p.n_gpu_layers = ngl;
	int rc = cr_estimate_llama(c->req->shape, &p, n_dev, split, e, NULL);
	if (!rc)
		learn(c, e);
	return rc;
}

static int est_vllm(struct ctx *c, int tp, int pp, struct cr_estimate *e)
{
	int rc = cr_estimate_vllm(c->req->shape, &c->req->params, tp, pp, e, NULL);
	if (!rc)
		learn(c, e);
	return rc;
}

/* ---- candidates ---- */

static int cmp_gref(const void *a, const void *b)
{
	const struct gref *x = a, *y = b;
	if (x->free != y->free)
		return x->free > y->free ? -1 : 1;
	if (x->w != y->w)
		return x->w - y->w;
	return x->g - y->g;
}

/* Is (score, tie) better than the best so far under the policy? Lower wins. */
struct best {
	bool any;
	long long k1;
	long long k2;
	int w;
};

static bool better(struct best *b, long long k1, long long k2, int w)
{
	if (b->any && (k1 > b->k1 || (k1 == b->k1 && (k2 > b->k2 || (k2 == b->k2 && w >= b->w)))))
		return false;
	b->any = true;
	b->k1 = k1;
	b->k2 = k2;
	b->w = w;
	return true;
}

/* Spread: fewest replicas here, then most free. Binpack: least left over. */
static void keys(struct ctx *c, const struct cr_sched_worker *w, uint64_t free, uint64_t claim, long long *k1,
		 long long *k2)
{
	if (c->req->policy == CR_SCHED_BINPACK) {
		*k1 = (long long)((free - claim) >> 20);
		*k2 = w->replicas;
	} else {
		*k1 = w->replicas;
		*k2 = -(long long)(free >> 20);
	}
}

static void member(struct cr_sched_result *r, int w, int g, uint64_t claim, double split, uint32_t layers)
{
	struct cr_sched_member *m = &r->members[r->n_members++];
	m->worker = w;
	m->gpu = g;
	m->claim = claim;
	m->split = split;
	m->layers = layers;
}

/* The whole model's claim on one GPU of g's model. */
static uint64_t need_on(const struct ctx *c, const struct cr_sched_gpu *g)
{
	return c->req->n_learned ? corrected(c->need1_raw, delta_for(c, g->name)) : c->need1;
}

static bool fit_single_gpu(struct ctx *c)
{
	const struct cr_sched_snapshot *s = c->snap;
	struct best b = { 0 };
	int bw = -1, bg = -1;
	for (int i = 0; i < s->n_workers; i++) {
		if (!c->eligible[i])
			continue;
		const struct cr_sched_worker *w = &s->workers[i];
		for (int g = 0; g < w->n_gpus; g++) {
			uint64_t free = cr_sched_gpu_free(&w->gpus[g], s->gpu_reserve);
			uint64_t need = need_on(c, &w->gpus[g]);
			if (!cr_sched_engine_uses(c->req->engine, w->gpus[g].vendor) || free < need)
				continue;
			long long k1, k2;
			keys(c, w, free, need, &k1, &k2);
			if (c->req->policy == CR_SCHED_BINPACK)
				k2 = k2 * 1000 + w->gpus[g].instances * -1;
			if (better(&b, k1, k2, i * CR_SCHED_MAX_GPUS + g)) {
				bw = i;
				bg = g;
			}
		}
	}
	if (bw < 0)
		return false;
	struct cr_sched_result *r = c->out;
	r->kind = CR_PLACE_SINGLE_GPU;
	r->leader = bw;
	member(r, bw, bg, need_on(c, &s->workers[bw].gpus[bg]), 1.0, c->req->shape->n_layer);
	r->tp = r->pp = 1;
	return true;
}

/* llama.cpp over the given GPUs, split in proportion to their free memory:
 * true when every device's claim fits. Fills claims into r when it does. */
static bool try_llama_split(struct ctx *c, const struct gref *gs, int k, struct cr_sched_result *r)
{
	double split[CR_SCHED_MAX_MEMBERS] = { 0 };
	struct cr_estimate e;
	if (k > CR_SCHED_MAX_MEMBERS || k > CR_EST_MAX_DEV)
		return false;
	/* start in proportion to what each GPU has left after its fixed costs */
	for (int i = 0; i < k; i++)
		split[i] = gs[i].free > c->per_dev ? (double)(gs[i].free - c->per_dev) : 1.0;
	bool fits = false;
	c->cur = gs; /* each GPU's model has its own learned correction */
	c->n_cur = k;
	/* whole layers do not divide evenly: shift share away from a GPU that overflows */
	for (int iter = 0; iter < 16 && !fits; iter++) {
		if (est_llama(c, k, split, -1, &e)) {
			c->cur = NULL;
			return false;
		}
		fits = true;
		for (int i = 0; i < k; i++) {
			if (e.dev[i].total <= gs[i].free)
				continue;
			fits = false;
			double f = (double)gs[i].free / (double)e.dev[i].total;
			split[i] *= f < 0.95 ? f : 0.95;
		}
	}
	c->cur = NULL;
	if (!fits)
		return false;
	if (r) {
		double sum = 0;
		for (int i = 0; i < k; i++)
			sum += split[i];
		r->n_members = 0;
		for (int i = 0; i < k; i++)
			member(r, gs[i].w, c->snap->workers[gs[i].w].gpus[gs[i].g].index, e.dev[i].total, split[i] / sum,
			       e.dev[i].layers);
	}
	return true;
}

/* Smallest prefix of gs (sorted by free, descending) that holds the model. */
static int llama_prefix(struct ctx *c, const struct gref *gs, int n)
{
	uint64_t per_dev = c->per_dev, body = c->need1 - per_dev, sum = 0;
	for (int k = 1; k <= n && k <= CR_SCHED_MAX_MEMBERS; k++) {
		sum += gs[k - 1].free;
		if (k < 2 || sum < body + per_dev * (uint64_t)k)
			continue;
		/* the proportional split can miss by rounding; try a few more GPUs */
		for (int extra = 0; extra < 4 && k + extra <= n && k + extra <= CR_SCHED_MAX_MEMBERS; extra++)
			if (try_llama_split(c, gs, k + extra, NULL))
				return k + extra;
		return 0;
	}
	return 0;
}

static int collect(struct ctx *c, int only_worker, const char *gpu_name, uint64_t min_free, struct gref *gs)
{
	int n = 0, from = only_worker >= 0 ? only_worker : 0;
	int to = only_worker >= 0 ? only_worker + 1 : c->snap->n_workers;
	for (int i = from; i < to; i++) {
		if (!c->eligible[i])
			continue;
		const struct cr_sched_worker *w = &c->snap->workers[i];
		for (int g = 0; g < w->n_gpus; g++) {
			uint64_t free = cr_sched_gpu_free(&w->gpus[g], c->snap->gpu_reserve);
			if (!cr_sched_engine_uses(c->req->engine, w->gpus[g].vendor) || free < min_free ||
			    (gpu_name && !eq(gpu_name, w->gpus[g].name)))
				continue;
			gs[n++] = (struct gref){ i, g, free };
		}
	}
	qsort(gs, (size_t)n, sizeof(*gs), cmp_gref);
	return n;
}

static bool tp_ok(struct ctx *c, int tp)
{
	return c->req->shape->n_head % (uint32_t)tp == 0;
}

static bool fit_multi_gpu(struct ctx *c)
{
	const struct cr_sched_snapshot *s = c->snap;
	struct gref gs[CR_SCHED_MAX_GPUS];
	struct best b = { 0 };
	struct cr_sched_result cand;
	bool found = false;
	for (int i = 0; i < s->n_workers; i++) {
		if (!c->eligible[i] || s->workers[i].n_gpus < 2)
			continue;
		const struct cr_sched_worker *w = &s->workers[i];
		memset(&cand, 0, sizeof(cand));
		int k = 0;
		if (c->llama) {
			int n = collect(c, i, NULL, 1, gs);
			k = llama_prefix(c, gs, n);
			if (k)
				try_llama_split(c, gs, k, &cand);
			cand.tp = cand.pp = 1;
		} else {
			for (int tp = 2; tp <= w->n_gpus && !k; tp *= 2) {
				struct cr_estimate e;
				if (est_vllm(c, tp, 1, &e))
					continue;
				if (!tp_ok(c, tp)) { /* say so when the GPUs are there: the rule decided, not memory */
					if (!c->heads_tp && collect(c, i, NULL, e.dev[0].total, gs) >= tp) {
						c->heads_tp = tp;
						c->heads_worker = i;
					}
					continue;
				}
				for (int g = 0; g < w->n_gpus && !k; g++) { /* one GPU model per group */
					int n = collect(c, i, w->gpus[g].name, e.dev[0].total, gs);
					if (n < tp)
						continue;
					k = tp;
					cand.tp = tp;
					cand.pp = 1;
					for (int m = 0; m < tp; m++)
						member(&cand, i, w->gpus[gs[m].g].index, e.dev[0].total, 1.0 / tp,
						       e.dev[0].layers);
				}
			}
		}
		if (!k)
			continue;
		uint64_t free = 0, claim = 0;
		for (int m = 0; m < cand.n_members; m++) {
			free += gs[m].free;
			claim += cand.members[m].claim;
		}
		long long k1, k2;
		keys(c, w, free, claim, &k1, &k2);
		if (better(&b, k1, k2, i)) {
			memcpy(c->out->members, cand.members, sizeof(cand.members));
			c->out->n_members = cand.n_members;
			c->out->tp = cand.tp;
			c->out->pp = cand.pp;
			c->out->leader = i;
			found = true;
		}
	}
	if (found)
		c->out->kind = CR_PLACE_MULTI_GPU;
	return found;
}

/* Put the leader's members first: the leader is the worker with the
 * largest share of the claim. */
static void order_leader(struct cr_sched_result *r, int n_workers)
{
	uint64_t *share = cr_xcalloc((size_t)n_workers, sizeof(*share));
	int leader = r->members[0].worker;
	for (int m = 0; m < r->n_members; m++) {
		share[r->members[m].worker] += r->members[m].claim;
		if (share[r->members[m].worker] > share[leader])
			leader = r->members[m].worker;
	}
	struct cr_sched_member tmp[CR_SCHED_MAX_MEMBERS];
	int n = 0;
	for (int pass = 0; pass < 2; pass++)
		for (int m = 0; m < r->n_members; m++)
			if ((r->members[m].worker == leader) == (pass == 0))
				tmp[n++] = r->members[m];
	memcpy(r->members, tmp, (size_t)n * sizeof(*tmp));
	r->leader = leader;
	free(share);
}

/* ---- group checks ---- */

static const char *group_key(struct ctx *c, int w)
{
	if (!c->keys[w]) {
		char k[512];
		cr_checks_group_key(c->snap->workers[w].report, c->req->engine, !c->req->no_ray, k, sizeof(k));
		c->keys[w] = cr_xstrdup(k);
	}
	return c->keys[w];
}

/* Run the group checks on workers ws[0..n) (ws[0] the leader) into list;
 * the worst level. */
static enum cr_check_level run_group_checks(struct ctx *c, const int *ws, int n, const int *gpu, json_t *list)
{
	struct cr_group_member ms[CR_SCHED_MAX_MEMBERS];
	json_t *empty = json_object();
	for (int i = 0; i < n; i++) {
		const struct cr_sched_worker *w = &c->snap->workers[ws[i]];
		/* llama.cpp RPC followers get the weights over the network */
		ms[i] = (struct cr_group_member){ w->id, w->name, w->report ? w->report : empty, !c->llama || i == 0,
						  (int)w->file, gpu ? gpu[i] : -1 };
	}
	enum cr_check_level l = cr_checks_group(ms, n, c->req->engine, !c->llama && !c->req->no_ray,
						 c->req->downloadable, &c->limits, list);
	json_decref(empty);
	return l;
}

/* Record a refused group with its failed checks (once per set of workers). */
static void refuse_group(struct ctx *c, const int *ws, int n, json_t *list)
{
	struct cr_sched_result *r = c->out;
	if (!r->groups)
		r->groups = json_array();
	json_t *names = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(names, json_string(c->snap->workers[ws[i]].name));
	size_t i;
	json_t *g;
	json_array_foreach(r->groups, i, g)
		if (json_equal(json_object_get(g, "workers"), names)) {
			json_decref(names);
			return;
		}
	json_t *failed = json_array(), *ch;
	json_array_foreach(list, i, ch)
		if (!strcmp(cr_json_get_str(ch, "level", ""), "fail"))
			json_array_append(failed, ch);
	json_array_append_new(r->groups, json_pack("{s:o,s:o}", "workers", names, "checks", failed));
}

/* The distinct workers of a placement, leader first. */
static int group_of(const struct cr_sched_result *r, int *ws)
{
	int n = 0;
	ws[n++] = r->leader;
	for (int m = 0; m < r->n_members; m++) {
		bool seen = false;
		for (int k = 0; k < n; k++)
			seen |= ws[k] == r->members[m].worker;
		if (!seen && n < CR_SCHED_MAX_MEMBERS)
			ws[n++] = r->members[m].worker;
	}
	return n;
}

/* Whether the placement in c->out passes its group checks; keeps them in
 * c->out->checks when it does, records the group when not. */
static bool group_passes(struct ctx *c)
{
	int ws[CR_SCHED_MAX_MEMBERS];
	int n = group_of(c->out, ws);
	for (int i = 0; i < n; i++)
		if (!c->snap->workers[ws[i]].report)
			return true; /* no reports (the scheduler's own tests): nothing to check against */
	if (n < 2)
		return true;
	int gpu[CR_SCHED_MAX_MEMBERS]; /* each worker's first chosen GPU */
	for (int i = 0; i < n; i++) {
		gpu[i] = -1;
		for (int m = 0; m < c->out->n_members && gpu[i] < 0; m++)
			if (c->out->members[m].worker == ws[i])
				gpu[i] = c->out->members[m].gpu;
	}
	json_t *list = json_array();
	if (run_group_checks(c, ws, n, gpu, list) == CR_CHECK_FAIL) {
		refuse_group(c, ws, n, list);
		json_decref(list);
		return false;
	}
	json_decref(c->out->checks);
	c->out->checks = list;
	return true;
}

static bool fit_distributed_llama_once(struct ctx *c)
{
	int total = 0;
	for (int i = 0; i < c->snap->n_workers; i++)
		total += c->eligible[i] ? c->snap->workers[i].n_gpus : 0;
	if (total < 2)
		return false;
	struct gref *gs = cr_xcalloc((size_t)total, sizeof(*gs));
	int n = collect(c, -1, NULL, 1, gs);
	int k = llama_prefix(c, gs, n);
	if (k)
		try_llama_split(c, gs, k, c->out);
	free(gs);
	if (!k)
		return false;
	c->out->tp = c->out->pp = 1;
	order_leader(c->out, c->snap->n_workers);
	return true;
}

/* llama.cpp RPC across workers: the split, then its group checks; a member
 * that fails them together with the leader (another llama.cpp build, no
 * route, no file) is left out and the split made again without it. */
static bool fit_distributed_llama(struct ctx *c)
{
	for (int round = 0; round < c->snap->n_workers; round++) {
		if (!fit_distributed_llama_once(c))
			return false;
		if (group_passes(c))
			return true;
		int ws[CR_SCHED_MAX_MEMBERS], n = group_of(c->out, ws), dropped = 0;
		for (int i = 1; i < n; i++) {
			int pair[2] = { ws[0], ws[i] };
			json_t *list = json_array();
			if (run_group_checks(c, pair, 2, NULL, list) == CR_CHECK_FAIL) {
				char why[256];
				cr_checks_summary(list, CR_CHECK_FAIL, why, sizeof(why));
				reason(c, ws[i], "group_check", "%s: cannot join an RPC group led by %s: %s",
				       c->snap->workers[ws[i]].name, c->snap->workers[ws[0]].name, why);
				c->eligible[ws[i]] = false;
				dropped++;
			}
			json_decref(list);
		}
		if (!dropped) /* the leader itself is the problem (its file): no other split helps */
			return false;
	}
	return false;
}

/* Workers of ws[1..n) that fail the group checks together with ws[0]. */
static int pairwise_failures(struct ctx *c, const int *ws, int n, bool *bad)
{
	int found = 0;
	for (int i = 1; i < n; i++) {
		int pair[2] = { ws[0], ws[i] };
		json_t *list = json_array();
		if (run_group_checks(c, pair, 2, NULL, list) == CR_CHECK_FAIL) {
			bad[ws[i]] = true;
			found++;
		}
		json_decref(list);
	}
	return found;
}

/* One vLLM/SGLang group led by worker i0 on GPUs named name: pp workers with
 * tp such GPUs free enough each, whose versions match i0's; a group that
 * fails its checks is recorded and tried again without the members that fail
 * them with the leader (unreachable, too far), while there are others. */
static int try_vllm_group(struct ctx *c, int i0, const char *name, int tp, int pp, uint64_t claim, uint32_t layers)
{
	const struct cr_sched_snapshot *s = c->snap;
	bool *bad = c->bad; /* all false on entry and on return */
	bool placed = false, exhausted = false;
	for (int round = 0; round < s->n_workers && !placed; round++) {
		/* picked: matching versions; naive: any with the GPUs */
		int picked[16] = { 0 }, np = 0, naive[16] = { 0 }, nn = 0;
		for (int i = i0; i < s->n_workers && np < pp; i++) {
			if (!c->eligible[i] || bad[i])
				continue;
			int ok = 0;
			if (!c->req->no_ray && !has_engine(&s->workers[i], "ray")) /* each node joins the Ray cluster */
				continue;
			for (int g = 0; g < s->workers[i].n_gpus; g++)
				ok += eq(s->workers[i].gpus[g].name, name) &&
				      cr_sched_gpu_free(&s->workers[i].gpus[g], s->gpu_reserve) >= claim;
			if (ok < tp)
				continue;
			if (nn < 16 && nn < pp)
				naive[nn++] = i;
			if (np == 0 || !strcmp(group_key(c, i), group_key(c, picked[0])))
				picked[np++] = i;
		}
		if (np < pp) {
			exhausted = nn < pp && round == 0; /* not enough such GPUs from i0 on, whatever the versions */
			if (nn == pp && s->workers[naive[0]].report) { /* enough GPUs, not of matching nodes: say why */
				json_t *list = json_array();
				if (run_group_checks(c, naive, nn, NULL, list) == CR_CHECK_FAIL)
					refuse_group(c, naive, nn, list);
				json_decref(list);
			}
			break;
		}
		struct cr_sched_result *r = c->out;
		r->n_members = 0;
		for (int p = 0; p < pp; p++) {
			struct gref gs[CR_SCHED_MAX_GPUS] = { { 0, 0, 0 } };
			int n = collect(c, picked[p], name, claim, gs);
			for (int t = 0; t < tp && t < n; t++)
				member(r, picked[p], s->workers[picked[p]].gpus[gs[t].g].index, claim, 1.0 / (tp * pp),
				       layers);
		}
		r->tp = tp;
		r->pp = pp;
		r->leader = picked[0];
		placed = group_passes(c);
		if (!placed && !pairwise_failures(c, picked, np, bad))
			break; /* the group fails as a whole (the leader's file, shm): others will not help */
	}
	for (int i = 0; i < s->n_workers; i++)
		bad[i] = false;
	return placed ? 1 : exhausted ? -1 : 0;
}

/* vLLM/SGLang across workers: tp GPUs of one model on each of pp workers. */
static bool fit_distributed_vllm(struct ctx *c)
{
	const struct cr_sched_snapshot *s = c->snap;
	int max_pp = s->n_workers < 16 ? s->n_workers : 16;
	for (int pp = 2; pp <= max_pp; pp++) {
		if ((uint32_t)pp > c->req->shape->n_layer)
			break;
		for (int tp = 1; tp <= 8; tp *= 2) {
			struct cr_estimate e;
			if (!tp_ok(c, tp) || est_vllm(c, tp, pp, &e))
				continue;
			uint64_t claim = e.dev[0].total;
			/* per GPU model: the workers with tp GPUs of it that hold a claim; a
			 * model with too few such workers from some worker on has too few
			 * from every later one too */
			const char *exhausted[32];
			int n_ex = 0;
			for (int i0 = 0; i0 < s->n_workers; i0++) {
				if (!c->eligible[i0])
					continue;
				for (int g0 = 0; g0 < s->workers[i0].n_gpus; g0++) {
					const char *name = s->workers[i0].gpus[g0].name;
					bool skip = false;
					for (int g = 0; g < g0 && !skip; g++) /* one try per GPU model of the worker */
						skip = eq(s->workers[i0].gpus[g].name, name);
					for (int x = 0; x < n_ex && !skip; x++)
						skip = eq(exhausted[x], name);
					if (skip)
						continue;
					int r = try_vllm_group(c, i0, name, tp, pp, claim, e.dev[0].layers);
					if (r > 0)
						return true;
					if (r < 0 && n_ex < 32)
						exhausted[n_ex++] = name;
				}
			}
		}
	}
	return false;
}

/* The largest llama.cpp -ngl at which the estimate fits the GPUs gs[0..n)
 * (the layers split over them in proportion to their free memory, as
 * --tensor-split does), with *out its estimate; 0 when not even one block
 * fits. -ngl counts the output layer: -ngl N puts it and the last N-1 blocks
 * on the GPUs, so N starts at 2 (one block), never 1 (the output alone).
 * GPU memory grows with N, so the largest fitting N is found by bisection. */
static uint32_t ngl_fitting(struct ctx *c, const struct gref *gs, int n, struct cr_estimate *out)
{
	double split[CR_SCHED_MAX_MEMBERS];
	for (int m = 0; m < n; m++)
		split[m] = (double)(gs[m].free ? gs[m].free : 1);
	uint32_t lo = 2, hi = c->req->shape->n_layer + 1, best = 0;
	c->cur = gs; /* each GPU's model has its own learned correction */
	c->n_cur = n;
	while (n > 0 && lo <= hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		struct cr_estimate e;
		bool fits = est_llama(c, n, split, (int)mid, &e) == 0;
		for (int m = 0; fits && m < n; m++)
			fits = e.dev[m].total <= gs[m].free;
		if (fits) {
			best = mid;
			*out = e;
			lo = mid + 1;
		} else {
			hi = mid - 1;
		}
	}
	c->cur = NULL;
	return best;
}

/* The members of a partial offload: each GPU with its share, then the CPU
 * with the blocks left there. */
static void offload_members(struct ctx *c, int w, const struct gref *gs, int n, uint32_t ngl,
			    const struct cr_estimate *e)
{
	struct cr_sched_result *r = c->out;
	const struct cr_sched_worker *wk = &c->snap->workers[w];
	uint32_t on_gpu = 0;
	uint64_t total = 0;
	for (int m = 0; m < n; m++)
		total += gs[m].free ? gs[m].free : 1;
	r->n_members = 0;
	r->leader = w;
	r->ngl = ngl;
	r->ram_claim = e->ram;
	for (int m = 0; m < n; m++) {
		if (!e->dev[m].layers && !e->dev[m].output)
			continue;
		member(r, w, wk->gpus[gs[m].g].index, e->dev[m].total, (double)(gs[m].free ? gs[m].free : 1) / (double)total,
		       e->dev[m].layers);
		on_gpu += e->dev[m].layers;
	}
	member(r, w, -1, e->ram, 0.0, c->req->shape->n_layer - on_gpu);
}

static bool fit_offload(struct ctx *c)
{
	const struct cr_sched_snapshot *s = c->snap;
	struct best b = { 0 };
	bool found = false;
	for (int i = 0; i < s->n_workers; i++) {
		if (!c->eligible[i])
			continue;
		const struct cr_sched_worker *w = &s->workers[i];
		uint64_t rfree = ram_free(w, s->ram_reserve);
		/* every GPU of the worker that the engine can use, plus its RAM */
		struct gref gs[CR_SCHED_MAX_MEMBERS];
		int n = 0;
		for (int g = 0; g < w->n_gpus && n < CR_SCHED_MAX_MEMBERS; g++)
			if (cr_sched_engine_uses(c->req->engine, w->gpus[g].vendor))
				gs[n++] = (struct gref){ i, g, cr_sched_gpu_free(&w->gpus[g], s->gpu_reserve) };
		struct cr_estimate e;
		uint32_t ngl = ngl_fitting(c, gs, n, &e);
		if (!ngl && est_llama(c, 0, NULL, 0, &e)) /* not one block on a GPU: all on the CPU */
			continue;
		if (e.ram > rfree) {
			if (!c->offload_tried || e.ram - rfree < c->offload_ram - c->offload_free) {
				c->offload_ram = e.ram;
				c->offload_free = rfree;
				c->offload_worker = i;
			}
			c->offload_tried = true;
			continue;
		}
		long long k1, k2;
		keys(c, w, rfree, e.ram, &k1, &k2);
		if (!better(&b, k1, k2, i))
			continue;
		found = true;
		struct cr_sched_result *r = c->out;
		if (ngl) {
			offload_members(c, i, gs, n, ngl, &e);
			r->kind = CR_PLACE_PARTIAL_OFFLOAD;
		} else {
			r->n_members = 0;
			r->leader = i;
			r->ngl = 0;
			r->ram_claim = e.ram;
			member(r, i, -1, e.ram, 1.0, c->req->shape->n_layer);
			r->kind = CR_PLACE_CPU;
		}
	}
	return found;
}

/* ---- manual choice ---- */

static int find_worker(const struct cr_sched_snapshot *s, const char *key)
{
	for (int i = 0; i < s->n_workers; i++)
		if (eq(s->workers[i].name, key) || eq(s->workers[i].id, key))
			return i;
	return -1;
}

static int place_manual(struct ctx *c, struct cr_err *err)
{
	const struct cr_sched_request *q = c->req;
	const struct cr_sched_snapshot *s = c->snap;
	struct cr_sched_result *r = c->out;
	struct gref gs[CR_SCHED_MAX_MEMBERS];
	int n = 0, workers = 0;
	int per_worker[CR_SCHED_MAX_MEMBERS] = { 0 }; /* chosen GPUs of each distinct worker, in order */
	int which[CR_SCHED_MAX_MEMBERS];
	if (q->n_manual < 1 || q->n_manual > CR_SCHED_MAX_MEMBERS)
		return cr_err_set(err, CR_EINPUT, "choose 1 to 64 GPUs", "%d GPUs in gpus", q->n_manual);
	for (int m = 0; m < q->n_manual; m++) {
		int i = find_worker(s, q->manual[m].worker);
		if (i < 0)
			return cr_err_set(err, CR_EINPUT, "list workers with 'corral workers'",
					  "gpus: no worker '%s'", q->manual[m].worker);
		int g = -1;
		for (int x = 0; x < s->workers[i].n_gpus; x++)
			if (s->workers[i].gpus[x].index == q->manual[m].index)
				g = x;
		if (g < 0 && q->manual[m].index >= 0)
			return cr_err_set(err, CR_EINPUT, "list GPUs with 'corral gpus'", "gpus: worker '%s' has no GPU %d",
					  s->workers[i].name, q->manual[m].index);
		if (!eq(s->workers[i].state, "ready")) {
			reason(c, i, "not_ready", "%s is %s", s->workers[i].name, s->workers[i].state);
			snprintf(r->summary, sizeof(r->summary), "cannot place '%s' on the chosen GPUs: %s is %s", q->model,
				 s->workers[i].name, s->workers[i].state);
			return CR_ENOTFOUND;
		}
		if (s->workers[i].cordoned) {
			reason(c, i, "cordoned", "%s is cordoned", s->workers[i].name);
			snprintf(r->summary, sizeof(r->summary), "cannot place '%s' on the chosen GPUs: %s is cordoned", q->model,
				 s->workers[i].name);
			return CR_ENOTFOUND;
		}
		int k = 0; /* distinct workers, however the list interleaves them */
		while (k < workers && which[k] != i)
			k++;
		if (k == workers)
			which[workers++] = i;
		per_worker[k]++;
		gs[n++] = (struct gref){ i, g, g >= 0 ? cr_sched_gpu_free(&s->workers[i].gpus[g], s->gpu_reserve)
						       : ram_free(&s->workers[i], s->ram_reserve) };
	}
	if (workers > 1 && !q->allow_distributed)
		return cr_err_set(err, CR_EINPUT, "add --allow-distributed, or choose GPUs of one worker",
				  "gpus: the chosen GPUs are on %d workers", workers);
	if (!c->llama) { /* tensor parallel within a worker, pipeline parallel across: an even shape */
		for (int k = 1; k < workers; k++)
			if (per_worker[k] != per_worker[0]) {
				char counts[256] = "";
				size_t len = 0;
				for (int x = 0; x < workers && len < sizeof(counts); x++)
					len += (size_t)snprintf(counts + len, sizeof(counts) - len, "%s%d on %s", x ? ", " : "",
								per_worker[x], s->workers[which[x]].name);
				return cr_err_set(err, CR_EINPUT,
						  "choose the same number of GPUs on every worker (e.g. one each), or let the "
						  "scheduler choose",
						  "gpus: %s splits a model into tensor-parallel x pipeline-parallel equal parts, "
						  "so every worker needs the same number of chosen GPUs, not %s",
						  q->engine, counts);
			}
	}
	struct cr_estimate e;
	bool cpu = n == 1 && gs[0].g < 0;
	int rc;
	if (c->llama) {
		double split[CR_SCHED_MAX_MEMBERS] = { 0 };
		for (int m = 0; m < n; m++)
			split[m] = (double)(gs[m].free ? gs[m].free : 1);
		rc = est_llama(c, cpu ? 0 : n, split, -1, &e);
	} else {
		rc = est_vllm(c, n / workers, workers, &e);
	}
	if (rc)
		return cr_err_set(err, CR_EINPUT, "check the model's context and cache settings", "cannot estimate '%s'",
				  q->model);
	bool over = false;
	for (int m = 0; m < n && !cpu; m++)
		over |= e.dev[m].total > gs[m].free;
	if (over && c->llama && q->allow_cpu_offload && workers == 1 && gs[0].g >= 0) {
		/* the chosen GPUs are too small for every layer: as many as fit, the rest in RAM */
		struct cr_estimate pe;
		uint32_t ngl = ngl_fitting(c, gs, n, &pe);
		if (ngl && pe.ram <= ram_free(&s->workers[gs[0].w], s->ram_reserve)) {
			offload_members(c, gs[0].w, gs, n, ngl, &pe);
			r->kind = CR_PLACE_PARTIAL_OFFLOAD;
			order_leader(r, s->n_workers);
			return 0;
		}
	}
	r->kind = CR_PLACE_MANUAL;
	r->tp = c->llama ? 1 : n / workers;
	r->pp = c->llama ? 1 : workers;
	for (int m = 0; m < n; m++) {
		uint64_t claim = cpu ? e.ram : e.dev[m].total;
		const struct cr_sched_worker *w = &s->workers[gs[m].w];
		member(r, gs[m].w, gs[m].g >= 0 ? w->gpus[gs[m].g].index : -1, claim, 1.0 / n, cpu ? c->req->shape->n_layer : e.dev[m].layers);
		if (claim > gs[m].free && !r->warning[0]) {
			char a[32], b[32];
			gib(claim, a, sizeof(a));
			gib(gs[m].free, b, sizeof(b));
			char where[16] = "cpu";
			if (gs[m].g >= 0)
				snprintf(where, sizeof(where), "%d", w->gpus[gs[m].g].index);
			snprintf(r->warning, sizeof(r->warning), "overcommit: %s:%s needs %s but has %s free", w->name, where,
				 a, b);
		}
	}
	if (cpu)
		r->ram_claim = e.ram;
	order_leader(r, s->n_workers);
	if (!group_passes(c)) { /* chosen by hand, refused by the checks: say which and why */
		char why[400];
		cr_checks_summary(json_object_get(json_array_get(r->groups, 0), "checks"), CR_CHECK_FAIL, why, sizeof(why));
		snprintf(r->summary, sizeof(r->summary), "the chosen workers cannot run '%s' together: %s", c->req->model,
			 why);
		return CR_ENOTFOUND;
	}
	return 0;
}

/* ---- explanations ---- */

static void no_fit_reasons(struct ctx *c)
{
	const struct cr_sched_snapshot *s = c->snap;
	char need[32], have[32];
	gib(c->need1, need, sizeof(need));
	for (int i = 0; i < s->n_workers; i++) {
		if (!c->eligible[i])
			continue;
		const struct cr_sched_worker *w = &s->workers[i];
		uint64_t best = 0;
		int bg = -1;
		for (int g = 0; g < w->n_gpus; g++) {
			uint64_t f = cr_sched_gpu_free(&w->gpus[g], s->gpu_reserve);
			if (cr_sched_engine_uses(c->req->engine, w->gpus[g].vendor) && (bg < 0 || f > best)) {
				best = f;
				bg = g;
			}
		}
		if (bg >= 0 && !c->llama && c->req->allow_distributed && !c->req->no_ray && !has_engine(w, "ray")) {
			gib(best, have, sizeof(have));
			reason(c, i, "no_ray", "%s: needs %s, largest free %s on %s:%d, and it has no 'ray' to join a "
			       "multi-worker group", w->name, need, have, w->name, w->gpus[bg].index);
		} else if (bg >= 0) {
			gib(best, have, sizeof(have));
			reason(c, i, "insufficient_vram", "%s: needs %s, largest free %s on %s:%d", w->name, need, have,
			       w->name, w->gpus[bg].index);
		} else if (c->llama && c->req->allow_cpu_offload) {
			struct cr_estimate e;
			est_llama(c, 0, NULL, 0, &e);
			gib(e.ram, need, sizeof(need));
			gib(ram_free(w, s->ram_reserve), have, sizeof(have));
			reason(c, i, "insufficient_ram", "%s: needs %s RAM, %s free", w->name, need, have);
			gib(c->need1, need, sizeof(need));
		} else {
			reason(c, i, "no_gpu", "%s has no GPU and CPU offload is not allowed", w->name);
		}
	}
}

static const struct {
	const char *code;
	const char *phrase; /* %s: the engine */
} phrases[] = {
	{ "insufficient_vram", "insufficient VRAM" },
	{ "insufficient_ram", "insufficient RAM" },
	{ "no_gpu", "have no GPU (CPU offload not allowed)" },
	{ "no_engine", "have no engine '%s'" },
	{ "no_ray", "too small alone and without 'ray' for a multi-worker group" },
	{ "engine_devices", "have no GPU that '%s' can use" },
	{ "file_missing", "lack the model file" },
	{ "file_invalid", "have an invalid model file" },
	{ "selector", "do not match the selector" },
	{ "not_ready", "not ready" },
	{ "cordoned", "cordoned" },
	{ "group_check", "failed the group checks with the leader" },
};

static void summarise(struct ctx *c)
{
	struct cr_sched_result *r = c->out;
	const struct cr_sched_snapshot *s = c->snap;
	char need[32], buf[512];
	int len;
	bool ram = false;
	for (int i = 0; i < r->n_reasons; i++)
		ram |= eq(r->reasons[i].code, "insufficient_ram");
	for (int i = 0; i < r->n_reasons; i++)
		ram &= !eq(r->reasons[i].code, "insufficient_vram");
	gib(c->need1, need, sizeof(need));
	if (ram) {
		struct cr_estimate e;
		est_llama(c, 0, NULL, 0, &e);
		gib(e.ram, need, sizeof(need));
	}
	len = snprintf(buf, sizeof(buf), "0/%d workers fit '%s' (needs %s %s at ctx %u)", s->n_workers, c->req->model,
		       need, ram ? "RAM" : "VRAM", c->req->params.n_ctx ? c->req->params.n_ctx : c->req->shape->n_ctx_train);
	int counts[sizeof(phrases) / sizeof(phrases[0])] = { 0 };
	for (int i = 0; i < r->n_reasons; i++)
		for (size_t p = 0; p < sizeof(phrases) / sizeof(phrases[0]); p++)
			counts[p] += eq(r->reasons[i].code, phrases[p].code);
	bool first = true;
	for (;;) { /* by count, largest first */
		size_t top = 0;
		for (size_t p = 1; p < sizeof(phrases) / sizeof(phrases[0]); p++)
			if (counts[p] > counts[top])
				top = p;
		if (!counts[top])
			break;
		char phrase[96];
		snprintf(phrase, sizeof(phrase), phrases[top].phrase, c->req->engine);
		len += snprintf(buf + len, sizeof(buf) - (size_t)len, "%s %d %s", first ? ":" : ",", counts[top], phrase);
		if (eq(phrases[top].code, "insufficient_vram")) {
			uint64_t best = 0;
			int bw = -1, bg = -1;
			for (int i = 0; i < s->n_workers; i++)
				for (int g = 0; c->eligible[i] && g < s->workers[i].n_gpus; g++) {
					uint64_t f = cr_sched_gpu_free(&s->workers[i].gpus[g], s->gpu_reserve);
					if (cr_sched_engine_uses(c->req->engine, s->workers[i].gpus[g].vendor) && (bw < 0 || f > best)) {
						best = f;
						bw = i;
						bg = g;
					}
				}
			char have[32];
			gib(best, have, sizeof(have));
			if (bw >= 0)
				len += snprintf(buf + len, sizeof(buf) - (size_t)len, " (largest free %s on %s:%d)", have,
						s->workers[bw].name, s->workers[bw].gpus[bg].index);
		}
		if (eq(phrases[top].code, "insufficient_ram")) {
			uint64_t best = 0;
			int bw = -1;
			for (int i = 0; i < s->n_workers; i++)
				if (c->eligible[i] && !s->workers[i].n_gpus && (bw < 0 || ram_free(&s->workers[i], s->ram_reserve) > best)) {
					best = ram_free(&s->workers[i], s->ram_reserve);
					bw = i;
				}
			char have[32];
			gib(best, have, sizeof(have));
			if (bw >= 0)
				len += snprintf(buf + len, sizeof(buf) - (size_t)len, " (largest free %s on %s)", have,
						s->workers[bw].name);
		}
		if (len >= (int)sizeof(buf))
			len = (int)sizeof(buf) - 1;
		counts[top] = 0;
		first = false;
	}
	if (c->heads_tp && len < (int)sizeof(buf)) {
		len += snprintf(buf + len, sizeof(buf) - (size_t)len,
				"; %d GPUs of %s would hold it, but %s needs the tensor-parallel size to divide the %u attention "
				"heads, and %d does not", c->heads_tp, s->workers[c->heads_worker].name, c->req->engine,
				c->req->shape->n_head, c->heads_tp);
		if (len >= (int)sizeof(buf))
			len = (int)sizeof(buf) - 1;
	}
	if (c->offload_tried && !ram && len < (int)sizeof(buf)) {
		char a[32], b[32];
		gib(c->offload_ram, a, sizeof(a));
		gib(c->offload_free, b, sizeof(b));
		len += snprintf(buf + len, sizeof(buf) - (size_t)len,
				"; CPU offload was tried too: the closest needs %s RAM beside its GPU layers, %s free on %s", a,
				b, s->workers[c->offload_worker].name);
		if (len >= (int)sizeof(buf))
			len = (int)sizeof(buf) - 1;
	}
	if (json_array_size(r->groups) && len < (int)sizeof(buf)) {
		json_t *g = json_array_get(r->groups, 0);
		char why[300];
		cr_checks_summary(json_object_get(g, "checks"), CR_CHECK_FAIL, why, sizeof(why));
		snprintf(buf + len, sizeof(buf) - (size_t)len, "; %zu multi-worker group(s) refused by checks, e.g. %s",
			 json_array_size(r->groups), why);
	}
	snprintf(r->summary, sizeof(r->summary), "%s", buf);
}

static void describe(struct ctx *c)
{
	struct cr_sched_result *r = c->out;
	const struct cr_sched_snapshot *s = c->snap;
	char claim[32];
	uint64_t total = 0;
	int workers = 0;
	for (int m = 0; m < r->n_members; m++) {
		total += r->members[m].claim;
		workers += m == 0 || r->members[m].worker != r->members[m - 1].worker;
	}
	r->n_workers_used = workers;
	gib(total, claim, sizeof(claim));
	static const char *const kinds[] = { "one GPU", "several GPUs of one worker", "several workers",
					     "partial offload", "CPU", "the chosen GPUs" };
	int len = snprintf(r->summary, sizeof(r->summary), "'%s' on %s: ", c->req->model, kinds[r->kind]);
	for (int m = 0; m < r->n_members && len < (int)sizeof(r->summary); m++) {
		const struct cr_sched_member *x = &r->members[m];
		if (x->gpu >= 0)
			len += snprintf(r->summary + len, sizeof(r->summary) - (size_t)len, "%s%s:%d", m ? "," : "",
					s->workers[x->worker].name, x->gpu);
		else
			len += snprintf(r->summary + len, sizeof(r->summary) - (size_t)len, "%s%s:cpu", m ? "," : "",
					s->workers[x->worker].name);
	}
	if (len < (int)sizeof(r->summary))
		snprintf(r->summary + len, sizeof(r->summary) - (size_t)len, " (%s)", claim);
}

int cr_sched_place(const struct cr_sched_snapshot *snap, const struct cr_sched_request *req,
		   struct cr_sched_result *out, struct cr_err *err)
{
	memset(out, 0, sizeof(*out));
	struct ctx c = { .snap = snap, .req = req, .out = out };
	c.llama = !cr_engine_vllm_like(req->engine);
	struct cr_estimate e;
	int rc = c.llama ? cr_estimate_llama(req->shape, &req->params, 1, NULL, &e, err)
			 : cr_estimate_vllm(req->shape, &req->params, 1, 1, &e, err);
	if (rc)
		return rc;
	c.need1_raw = e.dev[0].total;
	learn(&c, &e);
	c.need1 = out->need_vram = e.dev[0].total;
	c.per_dev = e.dev[0].compute + e.dev[0].overhead;
	c.eligible = cr_xcalloc((size_t)snap->n_workers + 1, sizeof(bool));
	c.keys = cr_xcalloc((size_t)snap->n_workers + 1, sizeof(char *));
	c.bad = cr_xcalloc((size_t)snap->n_workers + 1, sizeof(bool));
	if (req->limits)
		c.limits = *req->limits;
	else
		cr_group_limits_defaults(&c.limits);
	if (req->n_manual) {
		rc = place_manual(&c, err);
		goto done;
	}
	filter(&c);
	bool ok = fit_single_gpu(&c) || fit_multi_gpu(&c);
	if (!ok && req->allow_distributed && cr_sched_engine_distributes(req->engine)) {
		ok = c.llama ? fit_distributed_llama(&c) : fit_distributed_vllm(&c);
		if (ok)
			out->kind = CR_PLACE_DISTRIBUTED;
	}
	if (!ok && c.llama && req->allow_cpu_offload)
		ok = fit_offload(&c);
	if (!ok) {
		no_fit_reasons(&c);
		summarise(&c);
		rc = CR_ENOTFOUND;
	}
done:
	if (rc == 0) {
		out->placed = true;
		if (!c.llama)
			out->gpu_util = 0; /* set by the caller from the GPU's total */
		if (out->kind != CR_PLACE_PARTIAL_OFFLOAD && out->kind != CR_PLACE_CPU)
			out->ngl = c.llama ? req->shape->n_layer + 1 : 0;
		if (!out->tp)
			out->tp = out->pp = 1;
		describe(&c);
	}
	free(c.eligible);
	for (int i = 0; i < snap->n_workers; i++)
		free(c.keys[i]);
	free(c.keys);
	free(c.bad);
	return rc;
}

void cr_sched_apply(struct cr_sched_snapshot *snap, const struct cr_sched_result *res)
{
	for (int m = 0; m < res->n_members; m++) {
		const struct cr_sched_member *x = &res->members[m];
		struct cr_sched_worker *w = &snap->workers[x->worker];
		if (x->gpu < 0) {
			w->ram_claimed += x->claim;
		} else {
			for (int g = 0; g < w->n_gpus; g++)
				if (w->gpus[g].index == x->gpu) {
					w->gpus[g].claimed += x->claim;
					w->gpus[g].instances++;
				}
		}
		bool seen = false;
		for (int k = 0; k < m; k++)
			seen |= res->members[k].worker == x->worker;
		if (!seen)
			w->replicas++;
	}
}

void cr_sched_result_release(struct cr_sched_result *res)
{
	json_decref(res->checks);
	json_decref(res->groups);
	res->checks = res->groups = NULL;
	free(res->reasons);
	res->reasons = NULL;
	res->n_reasons = 0;
}
