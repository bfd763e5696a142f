/* GET /metrics: the server's Prometheus metrics (docs/metrics.md): workers,
 * GPUs, models and instances from memory, the scheduler's and the store's
 * timings, and what other components add (the gateway's counters). Open
 * unless --metrics-token is set. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/internal.h"
#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
#include "base/mem.h"
#include "base/prom.h"
#include "base/secret.h"
#include "base/util.h"
#include "checks/checks.h"
#include "http/server.h"

static const double sched_bounds[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1 };
static const double flush_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5 };

void cr_metrics_init(struct cr_app *app)
{
	cr_prom_hist_init(&app->metrics.place_s, sched_bounds, (int)(sizeof(sched_bounds) / sizeof(sched_bounds[0])));
	for (int i = 0; i < 2; i++)
		cr_prom_hist_init(&app->metrics.flush_s[i], flush_bounds, (int)(sizeof(flush_bounds) / sizeof(flush_bounds[0])));
}

static const char *const refusal_names[CR_REFUSAL_KINDS] = { "no_fit", "invalid", "file_unknown",
										       "group_check" };

void cr_metrics_placement(struct cr_app *app, int64_t started_ns, int refusal)
{
	cr_prom_observe(&app->metrics.place_s, (double)(cr_mono_ns() - started_ns) / 1e9);
	if (refusal < 0)
		app->metrics.placements++;
	else if (refusal < CR_REFUSAL_KINDS)
		app->metrics.refusals[refusal]++;
}

void cr_metrics_flush(struct cr_app *app, int what, int64_t started_ns)
{
	cr_prom_observe(&app->metrics.flush_s[what], (double)(cr_mono_ns() - started_ns) / 1e9);
}

void cr_app_add_metrics(struct cr_app *app, cr_app_metrics_cb cb, void *arg)
{
	if (app->metrics.n_extra == (int)(sizeof(app->metrics.extra) / sizeof(app->metrics.extra[0])))
		abort(); /* a programming error: more components than the server has */
	app->metrics.extra[app->metrics.n_extra] = cb;
	app->metrics.extra_arg[app->metrics.n_extra++] = arg;
}

static double num(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_number(v) ? json_number_value(v) : -1;
}

/* What the placements of all instances claim per GPU ("worker id\x1findex"
 * -> double), and the engines' pids per worker ("worker id\x1fpid"), built
 * once per scrape. */
struct claims {
	struct cr_map claimed, pids;
	double *sums;
	size_t n, cap;
};

static void claims_build(struct cr_app *app, struct claims *c)
{
	memset(c, 0, sizeof(*c));
	size_t it = 0, k, g;
	void *v;
	json_t *pw, *gj;
	char key[160];
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		json_array_foreach(json_object_get(i->placement, "workers"), k, pw) {
			const char *wid = cr_json_get_str(pw, "id", "");
			json_array_foreach(json_object_get(pw, "gpus"), g, gj) {
				snprintf(key, sizeof(key), "%s\x1f%lld", wid, (long long)cr_json_get_int(gj, "index", -1));
				size_t idx = (size_t)(uintptr_t)cr_map_get(&c->claimed, key); /* index + 1 */
				if (!idx) {
					if (c->n == c->cap) {
						c->cap = c->cap ? c->cap * 2 : 64;
						c->sums = cr_xrealloc(c->sums, c->cap * sizeof(double));
					}
					c->sums[c->n++] = 0;
					idx = c->n;
					cr_map_put(&c->claimed, key, (void *)(uintptr_t)idx);
				}
				double claim = json_number_value(json_object_get(gj, "claim"));
				c->sums[idx - 1] += claim > 0 ? claim : 0;
			}
		}
		const char *wid;
		json_t *m;
		json_object_foreach(i->members, wid, m) {
			snprintf(key, sizeof(key), "%s\x1f%lld", wid, (long long)cr_json_get_int(m, "pid", -1));
			cr_map_put(&c->pids, key, (void *)1);
		}
	}
}

static void claims_release(struct claims *c)
{
	cr_map_release(&c->claimed);
	cr_map_release(&c->pids);
	free(c->sums);
}

static double claimed(const struct claims *c, const char *wid, json_int_t gpu)
{
	char key[160];
	snprintf(key, sizeof(key), "%s\x1f%lld", wid, (long long)gpu);
	size_t idx = (size_t)(uintptr_t)cr_map_get(&c->claimed, key);
	return idx ? c->sums[idx - 1] : 0;
}

/* Bytes on a GPU used by the engines of Corral's instances on worker wid:
 * the GPU's processes whose pids are those engines'; -1 when the report
 * lists no processes. */
static double engines_used(const struct claims *c, const char *wid, json_t *gpu)
{
	json_t *procs = json_object_get(gpu, "processes");
	if (!json_is_array(procs))
		return -1;
	double sum = 0;
	size_t i;
	json_t *p;
	char key[160];
	json_array_foreach(procs, i, p) {
		snprintf(key, sizeof(key), "%s\x1f%lld", wid, (long long)cr_json_get_int(p, "pid", -1));
		if (cr_map_get(&c->pids, key))
			sum += num(p, "memory") > 0 ? num(p, "memory") : 0;
	}
	return sum;
}

static void workers_metrics(struct cr_app *app, struct cr_buf *b)
{
	int counts[3] = { 0, 0, 0 };
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v))
		counts[((struct cr_worker *)v)->state]++;
	cr_prom_family(b, "corral_workers", "gauge", "Workers by state.");
	for (int s = 0; s < 3; s++) {
		const char *l[] = { "state", cr_worker_state_name((enum cr_worker_state)s), NULL };
		cr_prom_sample(b, "corral_workers", l, counts[s]);
	}
	cr_prom_family(b, "corral_worker_checks", "gauge", "Checks of each worker that fail or warn (corral doctor).");
	it = 0;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		int warns = 0, fails = 0;
		cr_checks_worst(json_object_get(w->report, "checks"), &warns, &fails);
		const char *lf[] = { "worker", w->name, "level", "fail", NULL }, *lw[] = { "worker", w->name, "level", "warn", NULL };
		cr_prom_sample(b, "corral_worker_checks", lf, fails);
		cr_prom_sample(b, "corral_worker_checks", lw, warns);
	}
	/* every GPU read once, then written family by family */
	struct gpu_row {
		const char *worker;
		char idx[24];
		double v[7]; /* total, used, claimed, foreign, utilisation, temperature, power; < 0: unknown */
	};
	size_t cap = 0, n = 0;
	it = 0;
	while (cr_map_next(&app->workers, &it, NULL, &v))
		cap += json_array_size(json_object_get(((struct cr_worker *)v)->report, "gpus"));
	struct gpu_row *rows = cr_xcalloc(cap + 1, sizeof(*rows));
	struct claims cl_map;
	claims_build(app, &cl_map);
	it = 0;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		size_t i;
		json_t *g;
		json_array_foreach(json_object_get(w->report, "gpus"), i, g) {
			if (n == cap)
				break;
			struct gpu_row *r = &rows[n++];
			/* one pass over the GPU's fields: 8,000 GPUs make hash lookups the cost */
			enum { INDEX, TOTAL, USED, FREE, UTIL, TEMP, POWER, N };
			static const char *const names[N] = { "index", "memory_total", "memory_used", "memory_free",
							      "utilization", "temperature", "power_draw_w" };
			double f[N] = { (double)i, -1, -1, -1, -1, -1, -1 };
			json_t *procs = NULL;
			const char *key;
			json_t *val;
			json_object_foreach(g, key, val) {
				if (!strcmp(key, "processes")) {
					procs = val;
					continue;
				}
				for (int k = 0; k < N; k++)
					if (json_is_number(val) && !strcmp(key, names[k])) {
						f[k] = json_number_value(val);
						break;
					}
			}
			json_int_t index = (json_int_t)f[INDEX];
			r->worker = w->name;
			snprintf(r->idx, sizeof(r->idx), "%lld", (long long)index);
			double total = f[TOTAL], used = f[USED];
			if (used < 0 && total >= 0 && f[FREE] >= 0)
				used = total - f[FREE];
			double cl = claimed(&cl_map, w->id, index), eng = procs ? engines_used(&cl_map, w->id, g) : -1;
			double foreign = used < 0 ? -1 : eng >= 0 ? used - eng : used - (cl < used ? cl : used);
			r->v[0] = total;
			r->v[1] = used;
			r->v[2] = cl;
			r->v[3] = foreign < 0 && used >= 0 ? 0 : foreign;
			r->v[4] = f[UTIL] < 0 ? -1 : f[UTIL] / 100.0;
			r->v[5] = f[TEMP];
			r->v[6] = f[POWER];
		}
	}
	claims_release(&cl_map);
	static const struct {
		const char *name, *help;
	} fam[] = {
		{ "corral_gpu_memory_bytes",
		  "GPU memory: total, used (all processes), claimed (by Corral's placements), foreign (used by processes "
		  "that are not Corral's engines)." },
		{ "corral_gpu_utilization_ratio", "GPU utilisation, 0 to 1." },
		{ "corral_gpu_temperature_celsius", "GPU temperature." },
		{ "corral_gpu_power_watts", "GPU power draw." },
	};
	static const char *const kinds[] = { "total", "used", "claimed", "foreign" };
	for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		cr_prom_family(b, fam[f].name, "gauge", fam[f].help);
		for (size_t r = 0; r < n; r++) {
			for (int k = f ? (int)f + 3 : 0; k < (f ? (int)f + 4 : 4); k++) {
				if (rows[r].v[k] < 0)
					continue;
				const char *l[] = { "worker", rows[r].worker, "gpu", rows[r].idx, f ? NULL : "kind", kinds[k & 3],
						    NULL };
				cr_prom_sample(b, fam[f].name, l, rows[r].v[k]);
			}
		}
	}
	free(rows);
}

static void models_metrics(struct cr_app *app, struct cr_buf *b)
{
	cr_prom_family(b, "corral_model_replicas_desired", "gauge", "Replicas each model asks for.");
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->models, &it, NULL, &v)) {
		struct cr_model *m = v;
		const char *l[] = { "model", m->name, NULL };
		cr_prom_sample(b, "corral_model_replicas_desired", l, (double)cr_json_get_int(m->spec, "replicas", 1));
	}
	cr_prom_family(b, "corral_model_replicas_running", "gauge", "Instances of each model that are running.");
	it = 0;
	while (cr_map_next(&app->models, &it, NULL, &v)) {
		struct cr_model *m = v;
		int running = 0;
		size_t jt = 0;
		void *iv;
		while (cr_map_next(&app->instances, &jt, NULL, &iv))
			running += !strcmp(((struct cr_instance *)iv)->model_id, m->id) &&
				   ((struct cr_instance *)iv)->state == CR_I_RUNNING;
		const char *l[] = { "model", m->name, NULL };
		cr_prom_sample(b, "corral_model_replicas_running", l, running);
	}
	/* instances by model and state: every state of every model, zeros included */
	cr_prom_family(b, "corral_instances", "gauge", "Instances by model and state.");
	it = 0;
	while (cr_map_next(&app->models, &it, NULL, &v)) {
		struct cr_model *m = v;
		int by_state[CR_I_CRASH_LOOP + 1] = { 0 };
		size_t jt = 0;
		void *iv;
		while (cr_map_next(&app->instances, &jt, NULL, &iv))
			if (!strcmp(((struct cr_instance *)iv)->model_id, m->id))
				by_state[((struct cr_instance *)iv)->state]++;
		for (int s = 0; s <= CR_I_CRASH_LOOP; s++) {
			const char *l[] = { "model", m->name, "state", cr_instance_state_name((enum cr_instance_state)s), NULL };
			cr_prom_sample(b, "corral_instances", l, by_state[s]);
		}
	}
	cr_prom_family(b, "corral_instance_restarts_total", "counter",
		       "Engine restarts of each instance, as its workers count them.");
	it = 0;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		struct cr_model *m = cr_map_get(&app->models, i->model_id);
		double restarts = 0;
		const char *k;
		json_t *mr;
		json_object_foreach(i->members, k, mr)
			restarts += num(mr, "restarts") > 0 ? num(mr, "restarts") : 0;
		const char *l[] = { "model", m ? m->name : "", "instance", i->id, NULL };
		cr_prom_sample(b, "corral_instance_restarts_total", l, restarts);
	}
}

static void internal_metrics(struct cr_app *app, struct cr_buf *b)
{
	cr_prom_family(b, "corral_scheduler_placements_total", "counter", "Replicas the scheduler placed (dry runs included).");
	cr_prom_sample(b, "corral_scheduler_placements_total", NULL, (double)app->metrics.placements);
	cr_prom_family(b, "corral_scheduler_refusals_total", "counter", "Replicas the scheduler could not place, by reason.");
	for (int r = 0; r < CR_REFUSAL_KINDS; r++) {
		const char *l[] = { "reason", refusal_names[r], NULL };
		cr_prom_sample(b, "corral_scheduler_refusals_total", l, (double)app->metrics.refusals[r]);
	}
	cr_prom_family(b, "corral_scheduler_placement_seconds", "histogram", "Time to place one replica.");
	cr_prom_hist_write(b, "corral_scheduler_placement_seconds", NULL, &app->metrics.place_s);
	cr_prom_family(b, "corral_store_flush_seconds", "histogram",
		       "Time to write observed state (what=state) or usage counts (what=usage) to the store.");
	static const char *const what[] = { "state", "usage" };
	for (int i = 0; i < 2; i++) {
		const char *l[] = { "what", what[i], NULL };
		cr_prom_hist_write(b, "corral_store_flush_seconds", l, &app->metrics.flush_s[i]);
	}
	cr_prom_family(b, "corral_server_uptime_seconds", "gauge", "Seconds since the server started.");
	cr_prom_sample(b, "corral_server_uptime_seconds", NULL, (double)(cr_mono_ms() - app->started_mono) / 1000.0);
}

void cr_metrics_render(struct cr_app *app, struct cr_buf *b)
{
	workers_metrics(app, b);
	models_metrics(app, b);
	internal_metrics(app, b);
	for (int i = 0; i < app->metrics.n_extra; i++)
		app->metrics.extra[i](b, app->metrics.extra_arg[i]);
}

static void get_metrics(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	if (app->cfg.metrics_token) {
		const char *h = cr_req_header(req, "Authorization");
		if (!h || strncmp(h, "Bearer ", 7) != 0 || !cr_secret_equal(h + 7, app->cfg.metrics_token)) {
			cr_reply_error(req, CR_EUNAUTH, "/metrics needs the bearer token set with --metrics-token",
				       "give Prometheus the token: authorization: {credentials: TOKEN} in its scrape config");
			return;
		}
	}
	struct cr_buf b = CR_BUF_INIT(256u << 20);
	cr_buf_reserve(&b, 65536 + app->workers.count * 8 * 600 + app->instances.count * 2048);
	cr_metrics_render(app, &b);
	size_t len = b.len;
	cr_reply_text_owned(req, 200, "text/plain; version=0.0.4; charset=utf-8", cr_buf_detach(&b), len);
}

const struct cr_http_route cr_api_metrics_routes[] = {
	{ CR_GET, "/metrics", CR_AUTH_NONE, get_metrics },
	{ 0, NULL, 0, NULL },
};
