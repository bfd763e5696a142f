/* Placements that learn: once an instance has run for a while, what its
 * engine really holds (on each GPU: the engine's process memory from the
 * worker's NVML report; on CPU: the engine's resident memory) is compared with
 * the estimate its placement claimed. The difference is kept per engine,
 * engine version, model file and device model, in the store, and the next
 * placements of the same model file with the same engine claim the estimate
 * plus that difference (within bounds, see sched/place.c). The dry run and
 * the placement say so; GET /api/learned (corral inspect --learned) lists them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "api/model_spec.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "sched/place.h"
#include "store/store.h"

#define SETTLE_MS 10000 /* running this long before its memory is taken as what it needs */

static void save(struct cr_app *app)
{
	char *text = cr_json_dump(app->learned);
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->setting_put(app->store, "learned", text, &err))
		cr_warn("learned memory not stored: %s", err.message);
	free(text);
}

void cr_learn_load(struct cr_app *app)
{
	char *text = NULL;
	app->learned = NULL;
	if (app->store->ops->setting_get(app->store, "learned", &text, NULL) == 0)
		app->learned = json_loads(text, 0, NULL);
	free(text);
	if (!json_is_object(app->learned)) {
		json_decref(app->learned);
		app->learned = json_object();
	}
	app->learned_seen = json_object();
}

void cr_learn_free(struct cr_app *app)
{
	json_decref(app->learned);
	json_decref(app->learned_seen);
}

/* The version of engine on worker w, as it reported it. */
static const char *engine_version(struct cr_worker *w, const char *engine)
{
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(w->report, "engines"), i, e)
		if (!strcmp(cr_json_get_str(e, "name", ""), engine))
			return cr_json_get_str(e, "version", "?");
	return "?";
}

static json_t *gpu_of(struct cr_worker *w, json_int_t index)
{
	size_t i;
	json_t *g;
	json_array_foreach(json_object_get(w->report, "gpus"), i, g)
		if (cr_json_get_int(g, "index", -1) == index)
			return g;
	return NULL;
}

/* Measure i: true with *est and *real (bytes, per GPU for GPU placements, or
 * RAM) and the device model, when every part of it could be measured. */
static bool measure(struct cr_app *app, struct cr_instance *i, struct cr_worker **leader, double *est, double *real,
		    int *n_gpu, char *device, size_t n)
{
	size_t k, g;
	json_t *pw, *gj;
	*est = *real = 0;
	*n_gpu = 0;
	device[0] = '\0';
	json_array_foreach(json_object_get(i->placement, "workers"), k, pw) {
		struct cr_worker *w = cr_map_get(&app->workers, cr_json_get_str(pw, "id", ""));
		json_t *m = json_object_get(i->members, cr_json_get_str(pw, "id", ""));
		if (!w || !m)
			return false;
		if (json_is_true(json_object_get(pw, "leader")) || !*leader)
			*leader = w;
		json_int_t pid = cr_json_get_int(m, "pid", -1);
		json_t *gpus = json_object_get(pw, "gpus");
		if (!json_array_size(gpus)) { /* on CPU: the engine's resident memory */
			json_int_t rss = cr_json_get_int(m, "rss", 0);
			if (rss <= 0)
				return false;
			*est += (double)cr_json_get_int(pw, "ram", 0);
			*real += (double)rss;
			if (!device[0])
				snprintf(device, n, "cpu");
			continue;
		}
		json_array_foreach(gpus, g, gj) {
			json_t *gpu = gpu_of(w, cr_json_get_int(gj, "index", -1)), *procs = json_object_get(gpu, "processes");
			bool found = false;
			size_t p;
			json_t *pj;
			json_array_foreach(procs, p, pj)
				if (cr_json_get_int(pj, "pid", -2) == pid) {
					*real += (double)cr_json_get_int(pj, "memory", 0);
					found = true;
				}
			if (!found)
				return false; /* no per-process memory from this driver */
			*est += (double)cr_json_get_int(gj, "claim", 0);
			(*n_gpu)++;
			if (!device[0])
				snprintf(device, n, "%s", cr_json_get_str(gpu, "name", "gpu"));
		}
	}
	return *est > 0 && *real > 0;
}

void cr_learn_tick(struct cr_app *app)
{
	int64_t now = cr_wall_ms();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		if (i->state != CR_I_RUNNING || now - i->updated_ms < SETTLE_MS || json_object_get(app->learned_seen, i->id))
			continue;
		struct cr_worker *leader = NULL;
		double est, real;
		int n_gpu;
		char device[128];
		if (!measure(app, i, &leader, &est, &real, &n_gpu, device, sizeof(device)))
			continue;
		json_object_set_new(app->learned_seen, i->id, json_true());
		const char *engine = cr_json_get_str(i->placement, "engine", "llama.cpp");
		const char *source = cr_model_spec_source(json_object_get(i->placement, "spec"));
		if (!*source) {
			struct cr_model *m = cr_map_get(&app->models, i->model_id);
			source = m ? cr_model_spec_source(m->spec) : "";
		}
		const char *version = engine_version(leader, engine);
		char *key = cr_xasprintf("%s|%s|%s|%s", engine, version, source, device);
		json_t *old = json_object_get(app->learned, key);
		int64_t per = (int64_t)((real - est) / (n_gpu ? n_gpu : 1));
		char when[40];
		cr_time_format(now, when, sizeof(when));
		json_object_set_new(app->learned, key,
				    json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:s,s:s}", "engine", engine, "version", version,
					      "source", source, "device", device, "estimate", (json_int_t)est, "real",
					      (json_int_t)real, "delta", (json_int_t)per, "samples",
					      cr_json_get_int(old, "samples", 0) + 1, "instance", i->id, "at", when));
		cr_info("learned: %s of '%s' on %s held %.1f MiB against an estimate of %.1f MiB", engine, source, device,
			real / 1048576.0, est / 1048576.0);
		free(key);
		save(app);
	}
}

json_t *cr_learn_for(struct cr_app *app, const char *engine, const char *source, int64_t *vram_delta,
		     int64_t *ram_delta, struct cr_sched_learned **table, int *n_table)
{
	*vram_delta = *ram_delta = 0;
	*table = NULL;
	*n_table = 0;
	json_t *gpu = NULL, *cpu = NULL, *per_device = json_object();
	const char *key;
	json_t *e;
	json_object_foreach(app->learned, key, e) { /* the latest of each kind, and per GPU model */
		if (strcmp(cr_json_get_str(e, "engine", ""), engine) != 0 || strcmp(cr_json_get_str(e, "source", ""), source) != 0)
			continue;
		const char *device = cr_json_get_str(e, "device", "");
		json_t **slot = !strcmp(device, "cpu") ? &cpu : &gpu;
		if (!*slot || strcmp(cr_json_get_str(e, "at", ""), cr_json_get_str(*slot, "at", "")) > 0)
			*slot = e;
		json_t *mine = json_object_get(per_device, device);
		if (strcmp(device, "cpu") != 0 &&
		    (!mine || strcmp(cr_json_get_str(e, "at", ""), cr_json_get_str(mine, "at", "")) > 0))
			json_object_set(per_device, device, e);
	}
	if (gpu)
		*vram_delta = cr_json_get_int(gpu, "delta", 0);
	if (cpu)
		*ram_delta = cr_json_get_int(cpu, "delta", 0);
	json_t *out = NULL;
	if (gpu || cpu) {
		out = json_array();
		*table = cr_xcalloc(json_object_size(per_device) + 1, sizeof(**table));
		json_object_foreach(per_device, key, e) {
			/* e is app->learned's: its strings stay while the placement runs */
			(*table)[*n_table].device = cr_json_get_str(e, "device", "");
			(*table)[(*n_table)++].delta = cr_json_get_int(e, "delta", 0);
			json_array_append(out, e);
		}
		if (cpu)
			json_array_append(out, cpu);
	}
	json_decref(per_device);
	return out;
}

/* GET /api/learned: every correction, newest first. */
static void list_learned(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	json_t *arr = json_array();
	const char *key;
	json_t *e;
	json_object_foreach(app->learned, key, e)
		json_array_append(arr, e);
	cr_reply_json(req, 200, json_pack("{s:o}", "learned", arr));
}

const struct cr_http_route cr_api_learn_routes[] = {
	{ CR_GET, "/api/learned", CR_AUTH_USER, list_learned },
	{ 0, NULL, 0, NULL },
};

/* The extra bytes an out-of-memory log asked for: llama.cpp's "allocating
 * 1500.00 MiB on device 0: cudaMalloc failed", PyTorch's "Tried to allocate
 * 2.00 GiB"; 0 when the log does not say. */
static double oom_bytes(const char *log)
{
	static const char *const marks[] = { "allocating ", "Tried to allocate ", "tried to allocate " };
	double best = 0;
	for (size_t m = 0; m < sizeof(marks) / sizeof(marks[0]); m++) {
		for (const char *p = strstr(log, marks[m]); p; p = strstr(p + 1, marks[m])) {
			char *end;
			double v = strtod(p + strlen(marks[m]), &end);
			while (*end == ' ')
				end++;
			double unit = !strncmp(end, "GiB", 3) ? 1073741824.0 : !strncmp(end, "MiB", 3) ? 1048576.0
				    : !strncmp(end, "KiB", 3) ? 1024.0 : 0;
			if (unit && v * unit > best)
				best = v * unit;
		}
	}
	return best;
}

bool cr_learn_oom(struct cr_app *app, struct cr_instance *i, json_t *report)
{
	/* the worker's diagnosis (agent/diagnose.c): cuda_oom, alloc_failed */
	const char *cause = cr_json_get_str(report, "cause", "");
	if (!strstr(cause, "ran out of memory") && !strstr(cause, "could not allocate a device buffer"))
		return false;
	struct cr_model *m = cr_map_get(&app->models, i->model_id);
	if (!m || json_object_get(app->learned_seen, i->id))
		return false; /* once per instance */
	json_object_set_new(app->learned_seen, i->id, json_true());
	const char *policy = cr_json_get_str(m->spec, "on_oom", "replan");
	if (!strcmp(policy, "stop"))
		return false;
	json_t *pw = json_array_get(json_object_get(i->placement, "workers"), 0);
	json_t *g = json_array_get(json_object_get(pw, "gpus"), 0);
	struct cr_worker *w = cr_map_get(&app->workers, cr_json_get_str(pw, "id", ""));
	if (!g || !w)
		return false; /* not on a GPU */
	double claim = (double)cr_json_get_int(g, "claim", 0);
	double extra = oom_bytes(cr_json_get_str(report, "log_tail", ""));
	if (extra <= 0)
		extra = claim / 4; /* the log does not say: a quarter more */
	char extra_h[32], claim_h[32];
	cr_bytes_human((uint64_t)extra, extra_h, sizeof(extra_h));
	cr_bytes_human((uint64_t)claim, claim_h, sizeof(claim_h));
	if (!strcmp(policy, "reduce_ctx")) { /* the operator allowed a smaller context instead */
		long long ctx = cr_json_get_int(i->placement, "n_ctx", cr_json_get_int(m->spec, "ctx", 0));
		long long half = ctx / 2 < 512 ? 512 : ctx / 2;
		if (ctx <= 512)
			return false;
		json_object_set_new(m->spec, "ctx", json_integer(half));
		json_decref(m->built);
		m->built = cr_model_spec_built(m->spec);
		char *sj = cr_json_dump(m->spec);
		struct cr_model_rec r = { m->id, m->name, sj, m->created_ms, cr_wall_ms() };
		struct cr_err err = CR_ERR_INIT;
		if (app->store->ops->model_put(app->store, &r, &err))
			cr_warn("model '%s': %s", m->name, err.message);
		free(sj);
		cr_event(app, "instance.oom", i->id, json_pack("{s:s,s:I,s:I}", "model", m->name, "ctx_was", ctx, "ctx", half),
			 "instance %s of '%s' ran out of GPU memory on %s; on_oom is reduce_ctx: its context goes from %lld to "
			 "%lld and it is placed again", i->id, m->name, w->name, ctx, half);
	} else {
		const char *engine = cr_json_get_str(i->placement, "engine", "llama.cpp");
		const char *source = cr_model_spec_source(m->spec);
		json_t *gpu = gpu_of(w, cr_json_get_int(g, "index", -1));
		const char *device = cr_json_get_str(gpu, "name", "gpu"), *version = engine_version(w, engine);
		char *key = cr_xasprintf("%s|%s|%s|%s", engine, version, source, device);
		json_t *old = json_object_get(app->learned, key);
		json_int_t delta = cr_json_get_int(old, "delta", 0) + (json_int_t)extra;
		char when[40];
		cr_time_format(cr_wall_ms(), when, sizeof(when));
		json_object_set_new(app->learned, key,
				    json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:s,s:s,s:s}", "engine", engine, "version",
					      version, "source", source, "device", device, "estimate", (json_int_t)claim, "real",
					      (json_int_t)(claim + extra), "delta", delta, "samples",
					      cr_json_get_int(old, "samples", 0) + 1, "instance", i->id, "at", when, "from",
					      "out of memory"));
		free(key);
		save(app);
		cr_event(app, "instance.oom", i->id, json_pack("{s:s,s:f,s:f}", "model", m->name, "claim", claim, "extra", extra),
			 "instance %s of '%s' ran out of GPU memory on %s:%lld (it needed about %s more than its claim of %s); "
			 "it is placed again with that much more", i->id, m->name, w->name,
			 (long long)cr_json_get_int(g, "index", -1), extra_h, claim_h);
	}
	free(i->replace_why); /* the controller removes it at its next tick: callers may still hold it */
	i->replace_why = cr_xasprintf("it ran out of GPU memory on %s; placed again (on_oom: %s)", w->name, policy);
	app->sched_dirty = true;
	return true;
}
