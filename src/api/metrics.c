/* GET /metrics: the server's Prometheus metrics (docs/metrics.md): workers,
 * GPUs, models and instances from memory, the scheduler's and the store's
 * timings, and what other components add (the gateway's counters). Open
 * unless --metrics-token is set. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "api/internal.h"
#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
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

/* Claimed bytes of GPU index gpu on worker wid by the placements of all instances. */
static double claimed(struct cr_app *app, const char *wid, json_int_t gpu)
{
	double sum = 0;
	size_t it = 0, k, g;
	void *v;
	json_t *pw, *gj;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		json_array_foreach(json_object_get(((struct cr_instance *)v)->placement, "workers"), k, pw) {
			if (strcmp(cr_json_get_str(pw, "id", ""), wid) != 0)
				continue;
			json_array_foreach(json_object_get(pw, "gpus"), g, gj)
				if (cr_json_get_int(gj, "index", -1) == gpu)
					sum += num(gj, "claim") > 0 ? num(gj, "claim") : 0;
		}
	}
	return sum;
}

/* Bytes on a GPU used by the engines of Corral's instances on worker wid:
 * the GPU's processes whose pids are those engines'; -1 when the report
 * lists no processes. */
static double engines_used(struct cr_app *app, const char *wid, json_t *gpu)
{
	json_t *procs = json_object_get(gpu, "processes");
	if (!json_is_array(procs))
		return -1;
	double sum = 0;
	size_t i;
	json_t *p;
	json_array_foreach(procs, i, p) {
		json_int_t pid = cr_json_get_int(p, "pid", -1);
		size_t it = 0;
		void *v;
		while (cr_map_next(&app->instances, &it, NULL, &v)) {
			json_t *m = json_object_get(((struct cr_instance *)v)->members, wid);
			if (m && cr_json_get_int(m, "pid", -2) == pid) {
				sum += num(p, "memory") > 0 ? num(p, "memory") : 0;
				break;
			}
		}
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
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "corral_gpu_memory_bytes", "gauge",
		  "GPU memory: total, used (all processes), claimed (by Corral's placements), foreign (used by processes "
		  "that are not Corral's engines)." },
		{ "corral_gpu_utilization_ratio", "gauge", "GPU utilisation, 0 to 1." },
		{ "corral_gpu_temperature_celsius", "gauge", "GPU temperature." },
		{ "corral_gpu_power_watts", "gauge", "GPU power draw." },
	};
	for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		cr_prom_family(b, fam[f].name, fam[f].type, fam[f].help);
		it = 0;
		while (cr_map_next(&app->workers, &it, NULL, &v)) {
			struct cr_worker *w = v;
			size_t i;
			json_t *g;
			json_array_foreach(json_object_get(w->report, "gpus"), i, g) {
				char idx[24];
				json_int_t index = cr_json_get_int(g, "index", (json_int_t)i);
				snprintf(idx, sizeof(idx), "%lld", (long long)index);
				if (f == 0) {
					double total = num(g, "memory_total"), used = num(g, "memory_used");
					double cl = claimed(app, w->id, index), eng = engines_used(app, w->id, g);
					if (used < 0 && total >= 0 && num(g, "memory_free") >= 0)
						used = total - num(g, "memory_free");
					double foreign = used < 0 ? -1 : eng >= 0 ? used - eng : used - (cl < used ? cl : used);
					const char *kinds[] = { "total", "used", "claimed", "foreign" };
					double vals[] = { total, used, cl, foreign < 0 ? 0 : foreign };
					for (int k = 0; k < 4; k++) {
						if (vals[k] < 0)
							continue;
						const char *l[] = { "worker", w->name, "gpu", idx, "kind", kinds[k], NULL };
						cr_prom_sample(b, fam[f].name, l, vals[k]);
					}
					continue;
				}
				double val = f == 1 ? num(g, "utilization") : f == 2 ? num(g, "temperature") : num(g, "power_draw_w");
				if (val < 0)
					continue;
				const char *l[] = { "worker", w->name, "gpu", idx, NULL };
				cr_prom_sample(b, fam[f].name, l, f == 1 ? val / 100.0 : val);
			}
		}
	}
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
	cr_metrics_render(app, &b);
	cr_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len);
	cr_buf_release(&b);
}

const struct cr_http_route cr_api_metrics_routes[] = {
	{ CR_GET, "/metrics", CR_AUTH_NONE, get_metrics },
	{ 0, NULL, 0, NULL },
};
