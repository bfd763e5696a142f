/* bench/sched: time per placement on synthetic clusters of 100, 1,000 and
 * 10,000 workers with 8 GPUs each and about three instances per worker
 * already claiming memory. Three requests: a model that fits one GPU, one
 * that needs several GPUs of a worker, and one that needs several workers.
 * Prints the median and p90 of many placements for each, and the ratio to
 * the smallest cluster (how the cost grows). Then the cost of the group
 * checks: the distributed placements at 1,000 workers again with every
 * worker's report attached (drivers, engines, /dev/shm, 64 measured peers),
 * so that every multi-worker candidate runs its checks, against the same
 * placements without reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "sched/place.h"

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static uint32_t rng = 12345;
static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

static const char *const engines[] = { "llama.cpp", "vllm" };
static const char *const labels[] = { "zone=eu" };

static struct cr_sched_worker *cluster(int n)
{
	static const struct { const char *name; uint64_t gib; } kinds[] = { { "H100", 80 }, { "A100", 40 }, { "L4", 24 } };
	struct cr_sched_worker *ws = calloc((size_t)n, sizeof(*ws));
	char (*names)[16] = calloc((size_t)n, 16);
	for (int i = 0; i < n; i++) {
		struct cr_sched_worker *w = &ws[i];
		snprintf(names[i], 16, "w%d", i);
		w->name = w->id = names[i];
		w->state = next() % 50 ? "ready" : "not_ready";
		w->engines = engines;
		w->n_engines = 2;
		w->labels = labels;
		w->n_labels = 1;
		w->file = CR_FILE_PRESENT;
		w->ram_total = 512 * CR_GIB;
		w->ram_available = 400 * CR_GIB;
		w->n_gpus = 8;
		int k = (int)(next() % 3);
		for (int g = 0; g < 8; g++) {
			struct cr_sched_gpu *x = &w->gpus[g];
			x->index = g;
			snprintf(x->vendor, sizeof(x->vendor), "nvidia");
			snprintf(x->name, sizeof(x->name), "%s", kinds[k].name);
			x->total = kinds[k].gib * CR_GIB;
			x->free = x->total;
		}
		for (int j = 0; j < 3; j++) { /* about three running instances per worker */
			struct cr_sched_gpu *x = &w->gpus[next() % 8];
			uint64_t claim = (uint64_t)(next() % 20 + 4) * CR_GIB;
			if (claim + CR_GIB < x->free) {
				x->claimed += claim;
				x->free -= claim;
				x->instances++;
			}
		}
		w->replicas = (int)(next() % 2);
	}
	return ws;
}

static void shape(struct cr_model_shape *s, uint32_t layers, uint32_t embd, uint32_t ff, double layer_gib)
{
	memset(s, 0, sizeof(*s));
	s->n_layer = layers;
	s->n_embd = embd;
	s->n_head = embd / 128;
	s->n_head_kv = 8;
	s->head_dim_k = s->head_dim_v = 128;
	s->n_ff = ff;
	s->n_vocab = 128256;
	s->n_ctx_train = 131072;
	snprintf(s->format, sizeof(s->format), "gguf");
	s->layer_bytes = calloc(layers, sizeof(uint64_t));
	for (uint32_t l = 0; l < layers; l++)
		s->layer_bytes[l] = (uint64_t)(layer_gib * (double)CR_GIB);
	s->input_bytes = s->output_bytes = CR_GIB;
	s->weight_bytes = s->layer_bytes[0] * layers + 2 * CR_GIB;
}

/* A worker report as workers send it, with what the group checks read. */
static json_t *report_for(const struct cr_sched_worker *ws, int n, int i, bool mixed)
{
	json_t *gpus = json_array(), *peers = json_object();
	for (int g = 0; g < ws[i].n_gpus; g++)
		json_array_append_new(gpus, json_pack("{s:s,s:s,s:s}", "vendor", "nvidia", "name", ws[i].gpus[g].name,
						      "compute_capability", "9.0"));
	for (int k = 1; k <= 64 && k < n; k++)
		json_object_set_new(peers, ws[(i + k) % n].id, json_pack("{s:s,s:f}", "name", ws[(i + k) % n].name, "rtt_ms",
									 0.2 + (double)(next() % 100) / 1000));
	return json_pack("{s:{s:{s:s,s:s}},s:o,s:[{s:s,s:s},{s:s,s:s},{s:s,s:s}],s:{s:I},s:o}", "drivers", "nvidia",
			 "driver_version", mixed && i % 2 ? "535.104.05" : "550.54.15", "cuda_driver_version", "12.4", "gpus", gpus, "engines", "name",
			 "llama.cpp", "version", "b4000", "name", "vllm", "version", "0.6.3", "name", "ray", "version", "2.40.0",
			 "system", "shm_bytes", (json_int_t)(64 * CR_GIB), "peers", peers);
}

static double median_place(struct cr_sched_snapshot *snap, struct cr_sched_request *q, int iters, char *summary,
			   size_t n)
{
	double *t = calloc((size_t)iters, sizeof(double));
	for (int i = 0; i < iters; i++) {
		struct cr_sched_result res;
		double t0 = now_us();
		int rc = cr_sched_place(snap, q, &res, NULL);
		t[i] = (now_us() - t0) / 1000.0;
		snprintf(summary, n, "%s%.100s%s", rc ? "refused: " : "", res.summary,
			 res.checks ? " (checks run)" : "");
		cr_sched_result_release(&res);
	}
	qsort(t, (size_t)iters, sizeof(double), cmp_d);
	double med = t[iters / 2];
	free(t);
	return med;
}

static void group_checks_cost(bool quick)
{
	int n = 1000;
	struct cr_sched_worker *ws = cluster(n);
	static const char *const with_ray[] = { "llama.cpp", "vllm", "ray" };
	struct cr_model_shape huge;
	shape(&huge, 126, 16384, 53248, 6.0);
	struct cr_sched_snapshot snap = { ws, n, 512 * CR_MIB, 8 * CR_GIB };
	printf("\ngroup checks in distributed placements at %d workers (median ms):\n", n);
	printf("%-10s %14s %14s %10s  %s\n", "engine", "no_reports", "with_checks", "added", "result");
	const char *engs[] = { "llama.cpp", "vllm", "vllm" };
	for (int e = 0; e < 3; e++) {
		bool mixed = e == 2; /* every other worker on another driver: groups of one kind only */
		struct cr_sched_request q = { .model = "huge", .engine = engs[e], .shape = &huge, .params = CR_EST_PARAMS_INIT,
					      .allow_distributed = true };
		q.params.n_ctx = 8192;
		for (int i = 0; i < n; i++) {
			ws[i].report = NULL;
			ws[i].engines = with_ray;
			ws[i].n_engines = 3;
		}
		char s1[200], s2[200];
		int iters = quick ? 5 : 41;
		double without = median_place(&snap, &q, iters, s1, sizeof(s1));
		json_t **reports = calloc((size_t)n, sizeof(json_t *));
		for (int i = 0; i < n; i++)
			ws[i].report = reports[i] = report_for(ws, n, i, mixed);
		double with = median_place(&snap, &q, iters, s2, sizeof(s2));
		printf("%-10s %14.3f %14.3f %10.3f  %s\n", mixed ? "vllm-mixed" : engs[e], without, with, with - without, s2);
		for (int i = 0; i < n; i++) {
			json_decref(reports[i]);
			ws[i].report = NULL;
		}
		free(reports);
	}
	cr_shape_release(&huge);
	free((void *)ws[0].name);
	free(ws);
}

int main(int argc, char **argv)
{
	bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
	int sizes[] = { 100, 1000, 10000 };
	struct cr_model_shape small, big, huge;
	shape(&small, 32, 4096, 14336, 0.12);  /* 7B q4: one GPU */
	shape(&big, 80, 8192, 28672, 1.0);     /* 70B q8: several GPUs of one worker */
	shape(&huge, 126, 16384, 53248, 6.0);  /* 405B f16: several workers */
	struct { const char *what; struct cr_model_shape *s; bool dist; } reqs[] = {
		{ "single GPU", &small, false }, { "multi-GPU", &big, false }, { "distributed", &huge, true } };
	double base[3] = { 0 };
	printf("%-8s %-12s %10s %10s %8s  %s\n", "workers", "placement", "median_ms", "p90_ms", "growth", "result");
	for (int si = 0; si < 3; si++) {
		int n = sizes[si];
		struct cr_sched_worker *ws = cluster(n);
		struct cr_sched_snapshot snap = { ws, n, 512 * CR_MIB, 8 * CR_GIB };
		for (int r = 0; r < 3; r++) {
			struct cr_sched_request q = { .model = reqs[r].what, .engine = "llama.cpp", .shape = reqs[r].s,
						      .params = CR_EST_PARAMS_INIT, .allow_distributed = reqs[r].dist };
			q.params.n_ctx = 8192;
			int iters = quick ? 5 : (n >= 10000 ? 21 : 101);
			double *t = calloc((size_t)iters, sizeof(double));
			char summary[160] = "";
			for (int i = 0; i < iters; i++) {
				struct cr_sched_result res;
				double t0 = now_us();
				int rc = cr_sched_place(&snap, &q, &res, NULL);
				t[i] = (now_us() - t0) / 1000.0;
				snprintf(summary, sizeof(summary), "%s%.100s", rc ? "refused: " : "", res.summary);
				cr_sched_result_release(&res);
			}
			qsort(t, (size_t)iters, sizeof(double), cmp_d);
			double med = t[iters / 2], p90 = t[iters * 9 / 10];
			if (si == 0)
				base[r] = med;
			printf("%-8d %-12s %10.3f %10.3f %7.1fx  %s\n", n, reqs[r].what, med, p90, med / base[r], summary);
			free(t);
		}
		free((void *)ws[0].name); /* the names array */
		free(ws);
	}
	cr_shape_release(&small);
	cr_shape_release(&big);
	cr_shape_release(&huge);
	group_checks_cost(quick);
	return 0;
}
