/* Models: the API, the snapshot the scheduler sees, and the controller that
 * keeps each model at its replica count (placing, scaling, moving instances
 * off lost workers, end-to-end probes). Desired state (models, instances) is
 * written to the store before it is acknowledged. Each instance's own state,
 * views and logs are in instances.c, which tells workers theirs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "api/model_spec.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "checks/checks.h"
#include "http/fetch.h"
#include "sched/place.h"
#include "store/store.h"

#define REPORT_WAIT_MS 10000 /* how long a new model waits for workers to inspect its file */
#define PROBE_SOURCE_TTL_MS 600000

/* ---- memory ---- */

static void model_free(struct cr_model *m)
{
	if (!m)
		return;
	free(m->id);
	free(m->name);
	json_decref(m->spec);
	json_decref(m->built);
	free(m->status);
	free(m->logged);
	json_decref(m->reasons);
	free(m->format_shared);
	free(m);
}


/* The model file's format as the workers found it (a follower, which keeps
 * no workers' file reports, shows the leader's), or NULL. */
static const char *model_format(struct cr_app *app, const struct cr_model *m)
{
	const char *format = NULL;
	size_t it = 0;
	void *v;
	while (!format && cr_map_next(&app->workers, &it, NULL, &v))
		format = cr_json_get_str(json_object_get(((struct cr_worker *)v)->files, cr_model_spec_source(m->spec)),
					 "format", NULL);
	return format ? format : m->format_shared;
}

static struct cr_model *model_add(struct cr_app *app, const char *id, const char *name, json_t *spec)
{
	struct cr_model *m = cr_xcalloc(1, sizeof(*m));
	m->id = cr_xstrdup(id);
	m->name = cr_xstrdup(name);
	m->spec = spec;
	m->built = cr_model_spec_built(spec);
	m->created_mono = cr_mono_ms();
	cr_map_put(&app->models, m->id, m);
	cr_map_put(&app->model_names, m->name, m);
	return m;
}

static void load_model(const struct cr_model_rec *r, void *arg)
{
	struct cr_app *app = arg;
	json_t *spec = json_loads(r->spec_json, 0, NULL);
	if (!json_is_object(spec)) {
		cr_warn("model '%s': stored spec is not valid JSON; skipped", r->name);
		json_decref(spec);
		return;
	}
	struct cr_model *m = model_add(app, r->id, r->name, spec);
	m->created_ms = r->created_ms;
	m->updated_ms = r->updated_ms;
	m->created_mono -= REPORT_WAIT_MS; /* workers report again as they reconnect */
}

static void load_instance(const struct cr_instance_rec *r, void *arg)
{
	struct cr_app *app = arg;
	if (!cr_map_get(&app->models, r->model_id))
		return;
	struct cr_instance *i = cr_xcalloc(1, sizeof(*i));
	i->id = cr_xstrdup(r->id);
	i->model_id = cr_xstrdup(r->model_id);
	i->placement = json_loads(r->placement_json, 0, NULL);
	if (!i->placement)
		i->placement = json_object();
	i->state = cr_instance_state_parse(r->state);
	i->message = cr_xstrdup(r->message ? r->message : "");
	i->created_ms = r->created_ms;
	i->updated_ms = r->updated_ms;
	i->endpoint = r->endpoint && *r->endpoint ? cr_xstrdup(r->endpoint) : NULL;
	cr_map_put(&app->instances, i->id, i);
}

int cr_models_load(struct cr_app *app, struct cr_err *err)
{
	app->probe_sources = json_object();
	app->sched_dirty = true;
	int rc = app->store->ops->model_list(app->store, load_model, app, err);
	if (!rc)
		rc = app->store->ops->instance_list(app->store, load_instance, app, err);
	return rc;
}

/* ---- several servers: what the other servers wrote ---- */

static json_t *drop_instances(struct cr_app *app, struct cr_model *m);

struct model_sync {
	struct cr_app *app;
	struct cr_map seen, seen_i; /* model / instance id -> itself */
	bool changed;               /* the leader: a model was made or changed elsewhere */
};

/* A stored model into memory: its spec replaced in place when it changed
 * (the gateway looks models up by name on every request). On the leader, a
 * model made or changed on a follower is placed as if made here: its source
 * is sent to the workers to inspect, and a changed spec replaces the
 * instances one by one. */
static void sync_model(const struct cr_model_rec *r, void *arg)
{
	struct model_sync *ms = arg;
	struct cr_app *app = ms->app;
	struct cr_model *m = cr_map_get(&app->models, r->id);
	if (!m) {
		load_model(r, app);
		m = cr_map_get(&app->models, r->id);
		if (m && app->leading) {
			m->created_mono = cr_mono_ms(); /* workers inspect it first, as for one made here */
			ms->changed = true;
		}
	} else if (m->updated_ms != r->updated_ms) { /* names never change */
		json_t *spec = json_loads(r->spec_json, 0, NULL);
		if (json_is_object(spec)) {
			json_t *built = cr_model_spec_built(spec);
			if (app->leading && !json_equal(m->built, built)) {
				cr_info("model '%s': spec changed on another server; its instances are replaced one by one",
					r->name);
				m->created_mono = cr_mono_ms();
				ms->changed = true;
			}
			json_decref(m->spec);
			json_decref(m->built);
			m->spec = spec;
			m->built = built;
		} else {
			json_decref(spec);
		}
		m->updated_ms = r->updated_ms;
	}
	cr_map_put(&ms->seen, r->id, ms);
}

/* A stored instance into memory: state, message, endpoint and placement as
 * the leader wrote them (what the gateway routes by). */
static void sync_instance(const struct cr_instance_rec *r, void *arg)
{
	struct model_sync *ms = arg;
	struct cr_instance *i = cr_map_get(&ms->app->instances, r->id);
	if (!i) {
		load_instance(r, ms->app);
	} else {
		i->state = cr_instance_state_parse(r->state);
		if (strcmp(i->message ? i->message : "", r->message ? r->message : ""))
			cr_str_replace(&i->message, r->message ? r->message : "");
		const char *ep = r->endpoint && *r->endpoint ? r->endpoint : NULL;
		if (!ep != !i->endpoint || (ep && strcmp(ep, i->endpoint)))
			cr_str_replace(&i->endpoint, ep);
		if (i->updated_ms != r->updated_ms) {
			json_t *p = json_loads(r->placement_json, 0, NULL);
			if (p) {
				json_decref(i->placement);
				i->placement = p;
			}
			i->updated_ms = r->updated_ms;
		}
	}
	cr_map_put(&ms->seen_i, r->id, ms);
}

int cr_models_sync(struct cr_app *app, struct cr_err *err)
{
	struct model_sync ms = { app, CR_MAP_INIT, CR_MAP_INIT, false };
	int rc = app->store->ops->model_list(app->store, sync_model, &ms, err);
	if (!rc && !app->leading) /* the leader's instances are its own */
		rc = app->store->ops->instance_list(app->store, sync_instance, &ms, err);
	size_t it = 0;
	void *v;
	const char *k;
	/* removed since (only after whole lists): instances first, as a removed
	 * model's instances went with it */
	while (!rc && !app->leading && cr_map_next(&app->instances, &it, &k, &v))
		if (!cr_map_get(&ms.seen_i, k)) {
			cr_map_del(&app->instances, k);
			cr_instance_free(v);
		}
	it = 0;
	while (!rc && cr_map_next(&app->models, &it, &k, &v))
		if (!cr_map_get(&ms.seen, k)) {
			struct cr_model *m = v;
			if (app->leading) { /* deleted on a follower: its instances stop */
				json_t *gone = drop_instances(app, m);
				cr_info("model '%s' deleted on another server with %zu instance(s)", m->name,
					json_array_size(gone));
				json_decref(gone);
				ms.changed = true;
			}
			cr_map_del(&app->model_names, m->name);
			cr_map_del(&app->models, k);
			model_free(m);
		}
	cr_map_release(&ms.seen);
	cr_map_release(&ms.seen_i);
	if (ms.changed) {
		cr_instances_push_all(app); /* sources to inspect, instances to stop */
		app->sched_dirty = true;
	}
	return rc;
}

#define SUMMARY_KEY "model_summaries"

void cr_models_share_summary(struct cr_app *app)
{
	json_t *all = json_object();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->models, &it, NULL, &v)) {
		struct cr_model *m = v;
		const char *format = model_format(app, m);
		if (m->status || format)
			json_object_set_new(all, m->id, json_pack("{s:s?,s:O?,s:s?}", "status", m->status, "reasons",
								  m->reasons, "format", format));
	}
	char *text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(all);
	if (!text)
		abort();
	struct cr_err err = CR_ERR_INIT;
	if (app->summary_shared && !strcmp(app->summary_shared, text))
		free(text);
	else if (app->store->ops->setting_put(app->store, SUMMARY_KEY, text, &err) != 0) {
		cr_debug("models' scheduling summaries not stored (tried again in a second): %s", err.message);
		free(text);
	} else {
		free(app->summary_shared);
		app->summary_shared = text;
	}
}

int cr_models_read_summary(struct cr_app *app, struct cr_err *err)
{
	char *text = NULL;
	struct cr_err e = CR_ERR_INIT;
	int rc = app->store->ops->setting_get(app->store, SUMMARY_KEY, &text, &e);
	if (rc && rc != CR_ENOTFOUND) { /* not stored yet: no summaries */
		if (err)
			*err = e;
		return rc;
	}
	json_t *all = text && *text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->models, &it, NULL, &v)) {
		struct cr_model *m = v;
		json_t *one = json_object_get(all, m->id), *reasons = json_object_get(one, "reasons");
		const char *status = cr_json_get_str(one, "status", NULL), *format = cr_json_get_str(one, "format", NULL);
		if (strcmp(m->status ? m->status : "", status ? status : ""))
			cr_str_replace(&m->status, status);
		if (strcmp(m->format_shared ? m->format_shared : "", format ? format : ""))
			cr_str_replace(&m->format_shared, format);
		json_decref(m->reasons);
		m->reasons = json_is_array(reasons) ? json_incref(reasons) : NULL;
	}
	json_decref(all);
	return 0;
}

void cr_models_free_all(struct cr_app *app)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v))
		cr_instance_free(v);
	it = 0;
	while (cr_map_next(&app->models, &it, NULL, &v))
		model_free(v);
	cr_map_release(&app->instances);
	cr_map_release(&app->models);
	cr_map_release(&app->model_names);
	json_decref(app->probe_sources);
	app->probe_sources = NULL;
}

/* ---- what workers are told ---- */

json_t *cr_models_sources(struct cr_app *app)
{
	json_t *seen = json_object(), *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->models, &it, NULL, &v)) {
		struct cr_model *m = v;
		const char *src = cr_model_spec_source(m->spec);
		if (json_object_get(seen, src))
			continue;
		json_object_set_new(seen, src, json_true());
		json_t *o = json_pack("{s:s,s:s}", "source", src, "kind", cr_json_get_str(m->spec, "path", NULL) ? "path" : "url");
		const char *sha = cr_json_get_str(m->spec, "sha256", NULL);
		if (sha)
			json_object_set_new(o, "sha256", json_string(sha));
		json_array_append_new(arr, o);
	}
	const char *src;
	json_t *when;
	json_object_foreach(app->probe_sources, src, when) {
		if (json_object_get(seen, src))
			continue;
		json_object_set_new(seen, src, json_true());
		json_array_append_new(arr, json_pack("{s:s,s:s}", "source", src, "kind",
						     strncmp(src, "http", 4) == 0 ? "url" : "path"));
	}
	json_decref(seen);
	return json_pack("{s:o}", "sources", arr);
}





/* ---- JSON views ---- */





static int count_instances(struct cr_app *app, const char *model_id, int *scheduled, int *running)
{
	int n = 0;
	size_t it = 0;
	void *v;
	*scheduled = *running = 0;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		if (strcmp(i->model_id, model_id) != 0)
			continue;
		n++;
		*running += i->state == CR_I_RUNNING;
		*scheduled += i->state == CR_I_SCHEDULED;
	}
	return n;
}

static int find_shape(struct cr_app *app, const char *source, struct cr_model_shape *shape);

/* What the spec asks that will work, but badly: a context longer than the
 * model was trained for (answers past it degrade). Known once a worker has
 * inspected the file. */
static json_t *spec_warnings(struct cr_app *app, json_t *spec)
{
	json_t *w = json_array();
	struct cr_model_shape shape = CR_MODEL_SHAPE_INIT;
	long long ctx = cr_json_get_int(spec, "ctx", 0);
	if (ctx > 0 && find_shape(app, cr_model_spec_source(spec), &shape) == 0 && shape.n_ctx_train &&
	    ctx > (long long)shape.n_ctx_train)
		json_array_append_new(w, json_sprintf("--ctx %lld exceeds the model's trained context of %u tokens: answers "
						      "past it degrade; use --ctx %u or less",
						      ctx, shape.n_ctx_train, shape.n_ctx_train));
	cr_shape_release(&shape);
	return w;
}

static json_t *model_json(struct cr_app *app, struct cr_model *m)
{
	json_t *o = json_deep_copy(m->spec);
	char created[40];
	cr_time_format(m->created_ms, created, sizeof(created));
	int scheduled, running, total = count_instances(app, m->id, &scheduled, &running);
	json_object_set_new(o, "id", json_string(m->id));
	json_object_set_new(o, "created_at", json_string(created));
	json_object_set_new(o, "replicas_status", json_pack("{s:I,s:i,s:i,s:i}", "desired",
							    (json_int_t)cr_json_get_int(m->spec, "replicas", 0), "total",
							    total, "scheduled", scheduled, "running", running));
	json_object_set_new(o, "status", m->status ? json_string(m->status) : json_null());
	const char *format = model_format(app, m);
	json_object_set_new(o, "format", format ? json_string(format) : json_null());
	json_object_set_new(o, "reasons", m->reasons ? json_incref(m->reasons) : json_array());
	json_object_set_new(o, "warnings", spec_warnings(app, m->spec));
	/* the worst replica, so that no failure hides behind a model's "ok" */
	const struct cr_instance *worst = cr_instances_worst(app, m->id);
	json_object_set_new(o, "worst_replica",
			    worst ? json_pack("{s:s,s:s,s:s}", "id", worst->id, "state", cr_instance_state_name(worst->state),
					      "message", worst->message)
				  : json_null());
	/* memory per replica: the claim of one of its instances */
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		if (!strcmp(i->model_id, m->id)) {
			json_object_set(o, "memory_per_replica", json_object_get(i->placement, "vram"));
			json_object_set(o, "ram_per_replica", json_object_get(i->placement, "ram"));
			json_object_set(o, "engine_resolved", json_object_get(i->placement, "engine"));
			break;
		}
	}
	return o;
}

/* ---- the snapshot ---- */

struct snap {
	struct cr_sched_snapshot s;
	struct cr_worker **src;  /* the app's worker behind each snapshot entry */
	char **strs;             /* owned strings the snapshot points to */
	size_t n_strs, alloc_strs;
	const char ***lists;     /* owned arrays of labels / engines */
	size_t n_lists;
	json_t *reports;         /* the workers' merged reports the snapshot points to */
};

static const char *keep(struct snap *sn, char *s)
{
	if (sn->n_strs == sn->alloc_strs) {
		sn->alloc_strs = sn->alloc_strs ? sn->alloc_strs * 2 : 64;
		sn->strs = cr_xrealloc(sn->strs, sn->alloc_strs * sizeof(char *));
	}
	sn->strs[sn->n_strs++] = s;
	return s;
}

static const char **list(struct snap *sn, size_t n)
{
	sn->lists = cr_xrealloc(sn->lists, (sn->n_lists + 1) * sizeof(*sn->lists));
	return sn->lists[sn->n_lists++] = cr_xcalloc(n + 1, sizeof(char *));
}

static void snap_release(struct snap *sn)
{
	for (size_t i = 0; i < sn->n_strs; i++)
		free(sn->strs[i]);
	for (size_t i = 0; i < sn->n_lists; i++)
		free(sn->lists[i]);
	free(sn->strs);
	free(sn->lists);
	free(sn->s.workers);
	free(sn->src);
	json_decref(sn->reports);
}

/* The worker's report as last received (a new reference to the one kept:
 * parsed once when it arrived). */
static json_t *merged_report(struct cr_worker *w)
{
	return w->report ? json_incref(w->report) : json_object();
}

static uint64_t u64(json_t *o, const char *k)
{
	json_int_t v = json_integer_value(json_object_get(o, k));
	return v > 0 ? (uint64_t)v : 0;
}

/* a + b, at most UINT64_MAX: claims from stored placements are summed */
static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void fill_worker(struct snap *sn, struct cr_sched_worker *x, struct cr_worker *w, const char *source)
{
	x->id = w->id;
	x->name = w->name;
	x->state = cr_worker_state_name(w->state);
	x->cordoned = w->cordoned;
	json_t *labels = json_loads(w->labels_json ? w->labels_json : "{}", 0, NULL);
	const char **ls = list(sn, json_object_size(labels));
	const char *k;
	json_t *v;
	json_object_foreach(labels, k, v)
		ls[x->n_labels++] = keep(sn, cr_xasprintf("%s=%s", k, json_string_value(v) ? json_string_value(v) : ""));
	x->labels = ls;
	json_decref(labels);
	json_t *r = merged_report(w);
	json_t *engines = json_object_get(r, "engines");
	const char **es = list(sn, json_array_size(engines));
	size_t i;
	json_array_foreach(engines, i, v)
		es[x->n_engines++] = keep(sn, cr_xstrdup(cr_json_get_str(v, "name", "")));
	x->engines = es;
	json_array_foreach(json_object_get(r, "gpus"), i, v) {
		if (x->n_gpus >= CR_SCHED_MAX_GPUS)
			break;
		struct cr_sched_gpu *g = &x->gpus[x->n_gpus++];
		g->index = (int)cr_json_get_int(v, "index", (long long)i);
		snprintf(g->vendor, sizeof(g->vendor), "%s", cr_json_get_str(v, "vendor", ""));
		snprintf(g->name, sizeof(g->name), "%s", cr_json_get_str(v, "name", ""));
		g->total = u64(v, "memory_total");
		g->free = json_object_get(v, "memory_free") ? u64(v, "memory_free") : g->total;
	}
	json_t *mem = json_object_get(json_object_get(r, "system"), "memory");
	x->ram_total = u64(mem, "total");
	x->ram_available = u64(mem, "available");
	if (!sn->reports)
		sn->reports = json_array();
	json_array_append_new(sn->reports, r); /* kept for the group checks */
	x->report = r;
	json_t *f = json_object_get(w->files, source);
	if (!f)
		x->file = CR_FILE_UNKNOWN;
	else if (!json_is_true(json_object_get(f, "exists")))
		x->file = CR_FILE_MISSING;
	else if (json_object_get(f, "error")) {
		x->file = CR_FILE_INVALID;
		x->file_error = keep(sn, cr_xstrdup(cr_json_get_str(json_object_get(f, "error"), "message", "invalid")));
	} else
		x->file = CR_FILE_PRESENT;
}

/* Claims of every instance go into the snapshot (but those of skip's outdated
 * instances, when skip is given); replicas counts the instances of model_id
 * per worker. */
static void add_claims(struct cr_app *app, struct snap *sn, const char *model_id, const struct cr_model *skip)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *inst = v;
		if (skip && !strcmp(inst->model_id, skip->id) && cr_instance_outdated(inst, skip))
			continue;
		size_t k;
		json_t *pw;
		json_array_foreach(json_object_get(inst->placement, "workers"), k, pw) {
			const char *id = cr_json_get_str(pw, "id", "");
			for (int i = 0; i < sn->s.n_workers; i++) {
				struct cr_sched_worker *x = &sn->s.workers[i];
				if (strcmp(x->id, id) != 0)
					continue;
				x->ram_claimed = sat_add(x->ram_claimed, u64(pw, "ram"));
				x->replicas += model_id && !strcmp(inst->model_id, model_id);
				size_t gi;
				json_t *g;
				json_array_foreach(json_object_get(pw, "gpus"), gi, g)
					for (int n = 0; n < x->n_gpus; n++)
						if (x->gpus[n].index == cr_json_get_int(g, "index", -1)) {
							x->gpus[n].claimed = sat_add(x->gpus[n].claimed, u64(g, "claim"));
							x->gpus[n].instances++;
						}
			}
		}
	}
}

static void snap_build(struct cr_app *app, struct snap *sn, const char *source, const char *model_id,
		       const struct cr_model *skip)
{
	memset(sn, 0, sizeof(*sn));
	size_t n = app->workers.count, it = 0;
	void *v;
	sn->s.workers = cr_xcalloc(n + 1, sizeof(*sn->s.workers));
	sn->src = cr_xcalloc(n + 1, sizeof(*sn->src));
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		int i = sn->s.n_workers++;
		sn->src[i] = w;
		fill_worker(sn, &sn->s.workers[i], w, source);
	}
	/* a stable order: by name, so explanations and ties do not depend on hashing */
	for (int i = 1; i < sn->s.n_workers; i++)
		for (int j = i; j > 0 && strcmp(sn->s.workers[j - 1].name, sn->s.workers[j].name) > 0; j--) {
			struct cr_sched_worker t = sn->s.workers[j];
			sn->s.workers[j] = sn->s.workers[j - 1];
			sn->s.workers[j - 1] = t;
			struct cr_worker *tw = sn->src[j];
			sn->src[j] = sn->src[j - 1];
			sn->src[j - 1] = tw;
		}
	sn->s.gpu_reserve = app->cfg.gpu_reserve;
	sn->s.ram_reserve = app->cfg.ram_reserve;
	add_claims(app, sn, model_id, skip);
}

/* The model's shape from the first worker that parsed its file. */
static int find_shape(struct cr_app *app, const char *source, struct cr_model_shape *shape)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		json_t *f = json_object_get(w->files, source);
		json_t *sj = json_object_get(f, "shape");
		if (sj && cr_shape_from_json(sj, shape, NULL) == 0)
			return 0;
	}
	return -1;
}

/* Ready workers with a watch stream that have not reported source yet. */
static json_t *waiting_for(struct cr_app *app, const char *source)
{
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (w->state == CR_W_READY && w->watch && !json_object_get(w->files, source))
			json_array_append_new(arr, json_string(w->name));
	}
	return arr;
}

/* Why a shape is missing: counts of workers without the file, and the first error. */
static void no_shape_summary(struct cr_app *app, const char *name, const char *source, char *out, size_t n)
{
	int missing = 0, invalid = 0, unknown = 0;
	const char *gone = NULL, *bad = NULL; /* what a worker said: HTTP 404, not a GGUF file, ... */
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		json_t *f = json_object_get(w->files, source);
		const char *said = cr_json_get_str(json_object_get(f, "error"), "message", NULL);
		if (!f) {
			unknown++;
		} else if (!json_is_true(json_object_get(f, "exists"))) {
			missing++;
			gone = gone ? gone : said;
		} else {
			invalid++;
			bad = bad ? bad : said;
		}
	}
	char why_gone[300] = "", why_bad[300] = "";
	if (gone)
		snprintf(why_gone, sizeof(why_gone), " (%s)", gone);
	if (bad)
		snprintf(why_bad, sizeof(why_bad), " (%s)", bad);
	snprintf(out, n, "no worker can read '%s' for '%s': %d do not have it%s, %d cannot parse it%s, %d have not reported it",
		 source, name, missing, why_gone, invalid, why_bad, unknown);
}

/* ---- placement -> instance ---- */

static const char *kind_name(enum cr_sched_kind k)
{
	static const char *const names[] = { "single_gpu", "multi_gpu", "distributed", "partial_offload", "cpu", "manual" };
	return names[k];
}

static json_t *placement_json(const struct snap *sn, const struct cr_sched_result *r, const char *engine,
			      const struct cr_est_params *p, const struct cr_model_shape *shape)
{
	json_t *workers = json_array(), *split = json_array();
	uint64_t vram = 0, ram = 0, gpu_total = 0;
	for (int m = 0; m < r->n_members; m++) {
		const struct cr_sched_member *x = &r->members[m];
		const struct cr_sched_worker *w = &sn->s.workers[x->worker];
		json_t *entry = NULL;
		size_t k;
		json_t *e;
		json_array_foreach(workers, k, e)
			if (!strcmp(cr_json_get_str(e, "id", ""), w->id))
				entry = e;
		if (!entry) {
			entry = json_pack("{s:s,s:s,s:b,s:[],s:I}", "id", w->id, "name", w->name, "leader",
					  x->worker == r->leader, "gpus", "ram", (json_int_t)0);
			json_array_append_new(workers, entry);
		}
		if (x->gpu >= 0) {
			const char *vendor = "nvidia";
			for (int g = 0; g < w->n_gpus; g++)
				if (w->gpus[g].index == x->gpu)
					vendor = w->gpus[g].vendor;
			json_array_append_new(json_object_get(entry, "gpus"),
					      json_pack("{s:i,s:I,s:i,s:s,s:f}", "index", x->gpu, "claim", (json_int_t)x->claim,
							"layers", (int)x->layers, "vendor", vendor, "split", x->split));
			vram += x->claim;
			json_array_append_new(split, json_real(x->split));
			for (int g = 0; g < w->n_gpus; g++)
				if (w->gpus[g].index == x->gpu && !gpu_total)
					gpu_total = w->gpus[g].total;
		} else {
			json_object_set_new(entry, "ram", json_integer((json_int_t)x->claim));
			ram += x->claim;
		}
	}
	if (!ram && r->ram_claim)
		ram = r->ram_claim;
	if (!ram && strcmp(engine, "llama.cpp") == 0) { /* host memory for the embeddings and buffers */
		struct cr_estimate e;
		struct cr_est_params q = *p;
		if (cr_estimate_llama(shape, &q, 1, NULL, &e, NULL) == 0)
			ram = e.ram;
		json_object_set_new(json_array_get(workers, 0), "ram", json_integer((json_int_t)ram));
	}
	json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:i,s:o,s:I,s:I,s:i,s:i,s:i}", "kind", kind_name(r->kind), "summary",
			      r->summary, "engine", engine, "n_ctx", p->n_ctx ? (int)p->n_ctx : (int)shape->n_ctx_train,
			      "parallel", p->n_parallel ? (int)p->n_parallel : 1, "workers", workers, "vram",
			      (json_int_t)vram, "ram", (json_int_t)ram, "ngl", (int)r->ngl, "tp", r->tp, "pp", r->pp);
	if (json_array_size(split) > 1 && !strcmp(engine, "llama.cpp"))
		json_object_set_new(o, "tensor_split", split);
	else
		json_decref(split);
	if (strcmp(engine, "llama.cpp") != 0 && r->n_members && gpu_total)
		json_object_set_new(o, "gpu_memory_utilization",
				    json_real(cr_estimate_gpu_util(r->members[0].claim, gpu_total)));
	if (r->warning[0])
		json_object_set_new(o, "warning", json_string(r->warning));
	if (r->checks)
		json_object_set_new(o, "checks", json_incref(r->checks));
	json_object_set_new(o, "leader", json_string(r->n_members ? sn->s.workers[r->leader].id : ""));
	return o;
}

/* What to do about a worker's refusal, by its code: every reason carries its fix. */
static const char *reason_fix(const char *code)
{
	static const struct {
		const char *code, *fix;
	} fixes[] = {
		{ "no_gpu", "deploy with --allow-cpu-offload to run on its CPU and RAM" },
		{ "no_engine", "install the engine on that worker (for llama.cpp: make engines, then put its bin/ on "
			       "PATH or in CORRAL_ENGINE_PATH) and restart 'corral worker'" },
		{ "engine_devices", "choose an engine that runs on that worker's devices, or another worker" },
		{ "no_ray", "install Ray on that worker, or deploy on GPUs of one worker" },
		{ "insufficient_vram", "use a smaller --ctx or --parallel, a smaller quantisation, --allow-distributed, or "
				       "--allow-cpu-offload (llama.cpp)" },
		{ "insufficient_ram", "use a smaller --ctx or --parallel, or a worker with more free memory" },
		{ "file_missing", "put the file at the same path on that worker, or deploy with --url" },
		{ "file_invalid", "check the file with 'corral inspect FILE'; re-download or re-convert it" },
		{ "selector", "change --selector, or the worker's --labels" },
		{ "not_ready", "see 'corral workers' for why the worker is not ready" },
		{ "cordoned", "run 'corral workers uncordon NAME' when the worker may take models again" },
		{ "group_check", "see the group's checks in 'corral deploy ... --dry-run' and their fixes" },
	};
	for (size_t k = 0; k < sizeof(fixes) / sizeof(fixes[0]); k++)
		if (!strcmp(code, fixes[k].code))
			return fixes[k].fix;
	return "see docs/internals/scheduler.md for the placement rules";
}

static json_t *reasons_json(const struct snap *sn, const struct cr_sched_result *r)
{
	json_t *arr = json_array();
	for (int i = 0; i < r->n_reasons; i++)
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s}", "worker", sn->s.workers[r->reasons[i].worker].name,
						     "code", r->reasons[i].code, "message", r->reasons[i].message, "fix",
						     reason_fix(r->reasons[i].code)));
	return arr;
}

static void request_from(json_t *spec, const char *name, const char *engine, const struct cr_model_shape *shape,
			 struct cr_sched_request *q, const char ***sel_out, struct cr_sched_manual **man_out,
			 char ***owned, size_t *n_owned)
{
	memset(q, 0, sizeof(*q));
	q->model = name;
	q->engine = engine;
	q->shape = shape;
	cr_model_spec_params(spec, &q->params);
	q->policy = !strcmp(cr_json_get_str(spec, "policy", "spread"), "binpack") ? CR_SCHED_BINPACK : CR_SCHED_SPREAD;
	json_t *sel = json_object_get(spec, "selector"), *gpus = json_object_get(spec, "gpus");
	const char **s = cr_xcalloc(json_object_size(sel) + 1, sizeof(char *));
	struct cr_sched_manual *man = cr_xcalloc(json_array_size(gpus) + 1, sizeof(*man));
	*owned = cr_xcalloc(json_object_size(sel) + json_array_size(gpus) + 1, sizeof(char *));
	*n_owned = 0;
	const char *k;
	json_t *v;
	json_object_foreach(sel, k, v)
		s[q->n_selector++] = (*owned)[(*n_owned)++] = cr_xasprintf("%s=%s", k, json_string_value(v));
	size_t i;
	json_array_foreach(gpus, i, v) {
		char *item = (*owned)[(*n_owned)++] = cr_xstrdup(json_string_value(v));
		char *colon = strrchr(item, ':');
		*colon = '\0';
		man[q->n_manual].worker = item;
		man[q->n_manual++].index = strcmp(colon + 1, "cpu") ? (int)strtol(colon + 1, NULL, 10) : -1;
	}
	q->selector = s;
	q->manual = man;
	q->allow_cpu_offload = json_is_true(json_object_get(spec, "allow_cpu_offload"));
	q->allow_distributed = json_is_true(json_object_get(spec, "allow_distributed"));
	q->downloadable = json_object_get(spec, "url") != NULL;
	json_t *args = json_object_get(spec, "engine_args");
	for (size_t a = 0; a + 1 < json_array_size(args); a++)
		if (!strcmp(json_string_value(json_array_get(args, a)), "--distributed-executor-backend") &&
		    !strcmp(json_string_value(json_array_get(args, a + 1)), "mp"))
			q->no_ray = true; /* vLLM's own multi-node launcher: Ray not needed */
	*sel_out = s;
	*man_out = man;
}

struct plan {
	int placed;            /* replicas placed */
	json_t *placements;    /* array of placement objects */
	json_t *reasons;       /* when short */
	json_t *groups;        /* multi-worker groups refused by their checks, when short */
	json_t *learned;       /* the learned corrections the placements used, or NULL */
	char summary[600];
	int rc;                /* 0, CR_ENOTFOUND, CR_EINPUT */
	struct cr_err err;
};

/* Place `want` replicas of spec on the current cluster (without storing);
 * with skip, as if its outdated instances were gone. */
static void plan_replicas(struct cr_app *app, json_t *spec, const char *name, const char *model_id, int want,
			  const struct cr_model *skip, struct plan *pl)
{
	const char *source = cr_model_spec_source(spec);
	struct cr_model_shape shape = CR_MODEL_SHAPE_INIT;
	memset(pl, 0, sizeof(*pl));
	pl->placements = json_array();
	int64_t t0 = cr_mono_ns();
	if (find_shape(app, source, &shape) != 0) {
		no_shape_summary(app, name, source, pl->summary, sizeof(pl->summary));
		pl->rc = CR_ENOTFOUND;
		cr_metrics_placement(app, t0, CR_REFUSAL_FILE_UNKNOWN);
		return;
	}
	const char *format = shape.format;
	const char *engine = cr_model_spec_engine(spec, format);
	if (!strcmp(engine, "llama.cpp") && strcmp(format, "gguf") != 0) {
		cr_err_set(&pl->err, CR_EINPUT, "use engine vllm or sglang for safetensors models, or give a .gguf file",
			   "engine 'llama.cpp' needs a GGUF file, but '%s' is a %s model", source, format);
		pl->rc = CR_EINPUT;
		cr_shape_release(&shape);
		cr_metrics_placement(app, t0, CR_REFUSAL_INVALID);
		return;
	}
	struct snap sn;
	snap_build(app, &sn, source, model_id, skip);
	struct cr_sched_request q;
	const char **sel;
	struct cr_sched_manual *man;
	char **owned;
	size_t n_owned;
	request_from(spec, name, engine, &shape, &q, &sel, &man, &owned, &n_owned);
	struct cr_sched_learned *per_gpu = NULL;
	pl->learned = cr_learn_for(app, engine, source, &q.vram_delta, &q.ram_delta, &per_gpu, &q.n_learned);
	q.learned = per_gpu;
	struct cr_group_limits limits = { app->cfg.rtt_limit_tp_ms, app->cfg.rtt_limit_rpc_ms };
	q.limits = &limits;
	for (int r = 0; r < want; r++) {
		struct cr_sched_result res;
		if (r)
			t0 = cr_mono_ns();
		int rc = cr_sched_place(&sn.s, &q, &res, &pl->err);
		cr_metrics_placement(app, t0, !rc ? -1 : rc != CR_ENOTFOUND ? CR_REFUSAL_INVALID
							 : json_array_size(res.groups) ? CR_REFUSAL_GROUP_CHECK : CR_REFUSAL_NO_FIT);
		if (rc) {
			pl->rc = rc;
			snprintf(pl->summary, sizeof(pl->summary), "%s", rc == CR_ENOTFOUND ? res.summary : pl->err.message);
			if (rc == CR_ENOTFOUND && want > 1)
				snprintf(pl->summary, sizeof(pl->summary), "replica %d of %d: %.480s", r + 1, want, res.summary);
			pl->reasons = reasons_json(&sn, &res);
			pl->groups = res.groups ? json_incref(res.groups) : NULL;
			cr_sched_result_release(&res);
			break;
		}
		json_array_append_new(pl->placements, placement_json(&sn, &res, engine, &q.params, &shape));
		cr_sched_apply(&sn.s, &res);
		cr_sched_result_release(&res);
		pl->placed++;
	}
	for (size_t i = 0; i < n_owned; i++)
		free(owned[i]);
	free(owned);
	free(sel);
	free(man);
	free(per_gpu);
	snap_release(&sn);
	cr_shape_release(&shape);
}

/* ---- the controller ---- */




/* The model's status; a refusal is logged once, not again on every worker
 * event that re-runs the scheduler, until the model is placed or the refusal
 * changes. Waiting notes are not logged. */
static void set_status_quiet(struct cr_app *app, struct cr_model *m, const char *status, json_t *reasons, bool quiet)
{
	if (status && !quiet && (!m->logged || strcmp(m->logged, status) != 0)) {
		cr_info("model '%s': %s", m->name, status);
		cr_event(app, "placement.refused", m->name, json_pack("{s:O?}", "reasons", reasons), "%s", status);
		cr_str_replace(&m->logged, status);
	} else if (!status) {
		cr_str_replace(&m->logged, NULL);
	}
	cr_str_replace(&m->status, status);
	json_decref(m->reasons);
	m->reasons = reasons;
}

static void set_status(struct cr_app *app, struct cr_model *m, const char *status, json_t *reasons)
{
	set_status_quiet(app, m, status, reasons, false);
}

static size_t model_instances(struct cr_app *app, struct cr_model *m, struct cr_instance ***out)
{
	size_t n = 0, it = 0;
	void *v;
	*out = cr_xcalloc(app->instances.count + 1, sizeof(**out));
	while (cr_map_next(&app->instances, &it, NULL, &v))
		if (!strcmp(((struct cr_instance *)v)->model_id, m->id))
			(*out)[n++] = v;
	return n;
}

/* Instances whose workers are gone or down: unreachable now, removed after
 * the grace period. Returns true when one was removed. */
static bool check_members(struct cr_app *app, struct cr_instance *i, int64_t now)
{
	size_t k;
	json_t *pw;
	json_array_foreach(json_object_get(i->placement, "workers"), k, pw) {
		struct cr_worker *w = cr_map_get(&app->workers, cr_json_get_str(pw, "id", ""));
		char msg[600];
		if (!w) {
			snprintf(msg, sizeof(msg), "worker '%s' was removed from the cluster", cr_json_get_str(pw, "name", "?"));
			cr_instance_remove(app, i, msg);
			return true;
		}
		if (w->state == CR_W_READY)
			continue;
		if (w->state == CR_W_NOT_READY && now - w->state_since_mono > (int64_t)app->cfg.reschedule_grace_s * 1000) {
			snprintf(msg, sizeof(msg), "worker '%s' has been not_ready for more than %d s; placing it elsewhere",
				 w->name, app->cfg.reschedule_grace_s);
			cr_instance_remove(app, i, msg);
			return true;
		}
		snprintf(msg, sizeof(msg), "worker '%s' is %s: %s", w->name, cr_worker_state_name(w->state),
			 w->state_message ? w->state_message : "");
		cr_instance_set_state(app, i, CR_I_UNREACHABLE, msg);
		return false;
	}
	if (i->state == CR_I_UNREACHABLE) { /* its workers are back */
		if (json_object_get(i->members, cr_json_get_str(i->placement, "leader", "")))
			cr_instance_derive_state(app, i); /* what the engines last said, kept meanwhile */
		else
			cr_instance_set_state(app, i, CR_I_SCHEDULED, "its workers are back; waiting for the engine's state");
	}
	return false;
}

/* The least valuable instance: not running first, then on the busiest GPU,
 * then the newest. */
static struct cr_instance *least_valuable(struct cr_app *app, struct cr_instance **is, size_t n)
{
	struct cr_instance *best = NULL;
	double best_busy = -1;
	for (size_t k = 0; k < n; k++) {
		struct cr_instance *i = is[k];
		double busy = 0;
		json_t *w0 = json_array_get(json_object_get(i->placement, "workers"), 0);
		struct cr_worker *w = cr_map_get(&app->workers, cr_json_get_str(w0, "id", ""));
		if (w && w->gpu_count) {
			json_t *r = merged_report(w);
			json_t *g0 = json_array_get(json_object_get(w0, "gpus"), 0);
			size_t gi;
			json_t *g;
			json_array_foreach(json_object_get(r, "gpus"), gi, g)
				if (g0 && cr_json_get_int(g, "index", -1) == cr_json_get_int(g0, "index", -2) && u64(g, "memory_total"))
					busy = 1.0 - (double)u64(g, "memory_free") / (double)u64(g, "memory_total");
			json_decref(r);
		}
		bool running = i->state == CR_I_RUNNING;
		double score = (running ? 0 : 10) + busy;
		if (!best || score > best_busy || (score == best_busy && i->created_ms >= best->created_ms)) {
			best = i;
			best_busy = score;
		}
	}
	return best;
}

/* Places up to want new instances of m: how many were placed, or -1 while
 * workers are still inspecting its file. */
static int scale_up(struct cr_app *app, struct cr_model *m, int want, int64_t now)
{
	const char *source = cr_model_spec_source(m->spec);
	json_t *wait = waiting_for(app, source);
	if (json_array_size(wait) && now - m->created_mono < REPORT_WAIT_MS) {
		char msg[300];
		snprintf(msg, sizeof(msg), "waiting for %zu worker(s) to inspect '%s'", json_array_size(wait), source);
		set_status_quiet(app, m, msg, NULL, true);
		json_decref(wait);
		return -1;
	}
	json_decref(wait);
	struct plan pl;
	plan_replicas(app, m->spec, m->name, m->id, want, NULL, &pl);
	size_t k;
	json_t *p;
	json_array_foreach(pl.placements, k, p) {
		struct cr_instance *i = cr_xcalloc(1, sizeof(*i));
		char *rand = cr_secret_id();
		i->id = cr_xasprintf("%s-%.8s", m->name, rand);
		free(rand);
		i->model_id = cr_xstrdup(m->id);
		json_object_set(p, "spec", m->built); /* what it is built from, kept (never changed in place) */
		if (pl.learned) /* its claims include what engines of this model really held */
			json_object_set(p, "learned", pl.learned);
		/* the instance's own secret: its engines answer only who sends it
		 * (the gateway, the end-to-end probe), never the network at large */
		char *key = cr_secret_token("cre");
		json_object_set_new(p, "engine_key", json_string(key));
		free(key);
		i->placement = json_incref(p);
		i->state = CR_I_SCHEDULED;
		const char *warn = cr_json_get_str(p, "warning", NULL);
		i->message = warn ? cr_xasprintf("placed, %s", warn)
				  : cr_xstrdup("placed; waiting for the worker to start the engine");
		i->created_ms = i->updated_ms = cr_wall_ms();
		struct cr_err err = CR_ERR_INIT;
		if (cr_instance_save(app, i, &err)) {
			cr_warn("model '%s': cannot save instance: %s", m->name, err.message);
			cr_instance_free(i);
			break;
		}
		cr_map_put(&app->instances, i->id, i);
		cr_info("instance %s of '%s': %s", i->id, m->name, cr_json_get_str(p, "summary", ""));
		cr_event(app, "placement.decided", m->name, json_pack("{s:s,s:O?}", "instance", i->id, "workers",
								      json_object_get(p, "workers")),
			 "instance %s: %s", i->id, cr_json_get_str(p, "summary", "placed"));
		cr_instances_push(app, p);
	}
	if (pl.rc)
		set_status(app, m, pl.rc == CR_EINPUT ? pl.err.message : pl.summary, pl.reasons ? json_incref(pl.reasons) : NULL);
	else
		set_status(app, m, NULL, NULL);
	int placed = pl.placed;
	json_decref(pl.placements);
	json_decref(pl.reasons);
	json_decref(pl.groups);
	json_decref(pl.learned);
	return placed;
}

/* The draining worker an instance has a member on, or NULL. */
static struct cr_worker *draining_member(struct cr_app *app, struct cr_instance *i)
{
	size_t k;
	json_t *pw;
	json_array_foreach(json_object_get(i->placement, "workers"), k, pw) {
		struct cr_worker *w = cr_map_get(&app->workers, cr_json_get_str(pw, "id", ""));
		if (w && w->draining)
			return w;
	}
	return NULL;
}

#define RETIRE_WAIT_MS 120000 /* longest wait for a replaced instance's requests in flight */

/* Stop i, which has been replaced: at once when no request is in flight,
 * else it takes no new ones and stops when they end (or after
 * RETIRE_WAIT_MS), so that no answer is cut. */
static void retire(struct cr_app *app, struct cr_instance *i, const char *why, int64_t now)
{
	if (!i->inflight) {
		cr_instance_remove(app, i, why);
		return;
	}
	char msg[400];
	snprintf(msg, sizeof(msg), "%s; stopping once its %d request(s) in flight end", why, i->inflight);
	i->retire_at = now;
	cr_instance_set_state(app, i, CR_I_STOPPING, msg);
}

/* Keeps the model at its replicas. Instances on draining workers, and those
 * built from an older spec, are "leaving": each stops only once enough
 * replacements run, so neither a drain nor an update drops a model's
 * capacity while there is room. Without room, an update goes one at a time:
 * an old instance stops only when every new one runs and its room would let
 * the next be placed. */
static void reconcile(struct cr_app *app, struct cr_model *m, int64_t now)
{
	struct cr_instance **is;
	size_t n = model_instances(app, m, &is);
	struct cr_instance **go = cr_xcalloc(n ? n : 1, sizeof(*go));
	size_t staying = 0, leaving = 0;
	for (size_t k = 0; k < n; k++) {
		if (is[k]->retire_at) { /* replaced: gone when its last request ends */
			if (!is[k]->inflight || now - is[k]->retire_at > RETIRE_WAIT_MS)
				cr_instance_remove(app, is[k], is[k]->message);
			continue;
		}
		if (check_members(app, is[k], now))
			continue;
		if (draining_member(app, is[k]) || cr_instance_outdated(is[k], m))
			go[leaving++] = is[k];
		else
			is[staying++] = is[k];
	}
	for (size_t k = 1; k < leaving; k++) /* running ones first: they are kept longest */
		for (size_t j = k; j > 0 && go[j]->state == CR_I_RUNNING && go[j - 1]->state != CR_I_RUNNING; j--) {
			struct cr_instance *t = go[j];
			go[j] = go[j - 1];
			go[j - 1] = t;
		}
	int want = (int)cr_json_get_int(m->spec, "replicas", 0);
	while ((int)staying > want) {
		struct cr_instance *x = least_valuable(app, is, staying);
		for (size_t k = 0; k < staying; k++)
			if (is[k] == x)
				is[k] = is[--staying];
		cr_instance_remove(app, x, "scaled down");
	}
	int running = 0;
	for (size_t k = 0; k < staying; k++)
		running += is[k]->state == CR_I_RUNNING;
	int keep = want - running; /* leaving instances still needed until replacements run */
	size_t kept = 0;
	for (size_t k = 0; k < leaving; k++) {
		if ((int)k < keep) {
			go[kept++] = go[k];
			continue;
		}
		struct cr_worker *dw = draining_member(app, go[k]);
		char msg[300];
		if (dw)
			snprintf(msg, sizeof(msg), "worker '%s' is draining; a replacement runs elsewhere", dw->name);
		else
			snprintf(msg, sizeof(msg), "replaced: an instance with the model's new spec runs");
		retire(app, go[k], msg, now);
	}
	int placed = 0;
	if ((int)staying < want)
		placed = scale_up(app, m, want - (int)staying, now);
	else
		set_status(app, m, NULL, NULL);
	if (placed == 0 && (int)staying < want && running == (int)staying) {
		/* no room for a new instance while the old ones run: make room with
		 * one outdated instance, if its room is enough for the next one */
		struct cr_instance *old = NULL;
		for (size_t k = kept; k-- > 0;)
			if (!draining_member(app, go[k]) && cr_instance_outdated(go[k], m))
				old = go[k];
		struct plan pl;
		if (old) {
			plan_replicas(app, m->spec, m->name, m->id, 1, m, &pl);
			if (pl.placed)
				retire(app, old, "replaced one at a time: stopped to make room for an instance with the "
						 "model's new spec", now);
			json_decref(pl.placements);
			json_decref(pl.reasons);
			json_decref(pl.groups);
			json_decref(pl.learned);
		}
	}
	free(go);
	free(is);
}

static void e2e_probes(struct cr_app *app, int64_t now);

void cr_models_tick(struct cr_app *app)
{
	if (!app->leading) /* a follower of several servers: the leader places (a change made here reaches it via the store) */
		return;
	int64_t now = cr_mono_ms();
	struct cr_instance **gone = cr_xcalloc(app->instances.count + 1, sizeof(*gone));
	size_t n_gone = 0, git = 0;
	void *iv;
	while (cr_map_next(&app->instances, &git, NULL, &iv)) /* out of memory: placed again (learn.c) */
		if (((struct cr_instance *)iv)->replace_why)
			gone[n_gone++] = iv;
	for (size_t k = 0; k < n_gone; k++) {
		char *why = gone[k]->replace_why;
		gone[k]->replace_why = NULL;
		cr_instance_remove(app, gone[k], why);
		free(why);
	}
	free(gone);
	const char *src;
	json_t *when;
	void *tmp;
	json_object_foreach_safe(app->probe_sources, tmp, src, when)
		if (now - json_integer_value(when) > PROBE_SOURCE_TTL_MS)
			json_object_del(app->probe_sources, src);
	e2e_probes(app, now);
	if (!app->sched_dirty && now < app->next_sched_mono)
		return;
	app->sched_dirty = false;
	app->next_sched_mono = now + 5000;
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->models, &it, NULL, &v))
		reconcile(app, v, now);
}

/* ---- handlers ---- */

static struct cr_model *model_or_reply(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const char *key = cr_req_param(req, 0);
	struct cr_model *m = cr_map_get(&app->model_names, key);
	if (!m)
		m = cr_map_get(&app->models, key);
	if (!m) {
		char msg[200];
		snprintf(msg, sizeof(msg), "no model '%.100s'", key);
		cr_reply_error(req, CR_ENOTFOUND, msg, "list the models with 'corral models'");
	}
	return m;
}

static int save_model(struct cr_app *app, const char *id, const char *name, json_t *spec, int64_t created,
		      struct cr_err *err)
{
	char *sj = cr_json_dump(spec);
	struct cr_model_rec r = { (char *)id, (char *)name, sj, created, cr_wall_ms() };
	int rc = app->store->ops->model_put(app->store, &r, err);
	free(sj);
	return rc;
}

static void create_with_spec(struct cr_req *req, json_t *spec, json_t *ctx);

static void create_model(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err), *spec = NULL;
	if (!body || cr_model_spec_parse(body, NULL, &spec, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	if (cr_map_get(&app->model_names, cr_json_get_str(spec, "name", "")) ||
	    !cr_hub_resolve(app, req, spec, create_with_spec, NULL))
		create_with_spec(req, spec, NULL);
}

/* The rest of POST /api/models, once the source is known (a hub's file chosen). */
static void create_with_spec(struct cr_req *req, json_t *spec, json_t *ctx)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_err err = CR_ERR_INIT;
	(void)ctx;
	const char *name = cr_json_get_str(spec, "name", "");
	if (cr_map_get(&app->model_names, name)) {
		json_decref(spec);
		cr_err_set(&err, CR_ECONFLICT, "choose another name, change it with PATCH, or 'corral rm' it first",
			   "a model named '%s' already exists", name);
		cr_reply_err(req, &err);
		return;
	}
	char *id = cr_secret_id();
	int64_t now = cr_wall_ms();
	if (save_model(app, id, name, spec, now, &err)) {
		free(id);
		json_decref(spec);
		cr_reply_err(req, &err);
		return;
	}
	struct cr_model *m = model_add(app, id, name, spec);
	m->created_ms = m->updated_ms = now;
	free(id);
	cr_info("model '%s' created (%s)", m->name, cr_model_spec_source(spec));
	cr_audit(app, req, NULL, "model.create", m->name, json_incref(spec));
	cr_event(app, "model.deployed", m->name, json_pack("{s:O}", "spec", spec), "model '%s' deployed by %s", m->name,
		 cr_req_principal(req)->username ? cr_req_principal(req)->username : "-");
	cr_instances_push_all(app); /* workers inspect the new source */
	app->sched_dirty = true;
	cr_models_tick(app);
	cr_reply_json(req, 201, model_json(app, m));
}

static void list_models(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->models, &it, NULL, &v))
		json_array_append_new(arr, model_json(app, v));
	cr_json_sort(arr, "name", NULL);
	cr_reply_json(req, 200, json_pack("{s:o}", "models", arr));
}

static void get_model(struct cr_req *req)
{
	struct cr_model *m = model_or_reply(req);
	if (m)
		cr_reply_json(req, 200, model_json(cr_req_app(req), m));
}

static void patch_with_spec(struct cr_req *req, json_t *spec, json_t *ctx);

static void patch_model(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_model *m = model_or_reply(req);
	if (!m)
		return;
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err), *spec = NULL;
	if (!body || cr_model_spec_parse(body, m->spec, &spec, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	json_t *ctx = json_pack("{s:s,s:O}", "id", m->id, "body", body);
	if (!cr_hub_resolve(app, req, spec, patch_with_spec, ctx)) {
		patch_with_spec(req, spec, ctx);
		json_decref(ctx);
	}
}

/* The rest of PATCH /api/models/{name}, once the source is known. */
static void patch_with_spec(struct cr_req *req, json_t *spec, json_t *ctx)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_model *m = cr_map_get(&app->models, cr_json_get_str(ctx, "id", ""));
	json_t *body = json_object_get(ctx, "body");
	struct cr_err err = CR_ERR_INIT;
	if (!m) {
		json_decref(spec);
		cr_reply_error(req, CR_ENOTFOUND, "the model was deleted meanwhile", "deploy it again");
		return;
	}
	if (save_model(app, m->id, m->name, spec, m->created_ms, &err)) {
		json_decref(spec);
		cr_reply_err(req, &err);
		return;
	}
	json_t *built = cr_model_spec_built(spec);
	bool placement_changed = !json_equal(m->built, built);
	json_decref(m->spec);
	json_decref(m->built);
	m->spec = spec;
	m->built = built;
	m->updated_ms = cr_wall_ms();
	cr_audit(app, req, NULL, "model.update", m->name, json_incref(body));
	cr_event(app, "model.updated", m->name, json_pack("{s:O}", "changes", body), "model '%s' changed by %s", m->name,
		 cr_req_principal(req)->username ? cr_req_principal(req)->username : "-");
	if (placement_changed) { /* a rolling update: reconcile replaces the outdated instances */
		cr_info("model '%s': spec changed; its instances are replaced one by one, each new one running first",
			m->name);
		struct cr_instance **is;
		size_t n = model_instances(app, m, &is);
		for (size_t k = 0; k < n && app->leading; k++) /* placed before specs were kept with them: cannot be compared */
			if (!json_object_get(is[k]->placement, "spec"))
				cr_instance_remove(app, is[k], "the model's spec changed");
		free(is);
		m->created_mono = cr_mono_ms();
		cr_instances_push_all(app);
	}
	app->sched_dirty = true;
	cr_models_tick(app);
	json_t *o = model_json(app, m);
	size_t it = 0, replacing = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v))
		replacing += !strcmp(((struct cr_instance *)v)->model_id, m->id) && cr_instance_outdated(v, m);
	json_object_set_new(o, "replacing", json_integer((json_int_t)replacing));
	cr_reply_json(req, 200, o);
}

/* The model's instances out of memory (the store cascaded the model's
 * deletion to them); their workers are told, and stop them. Their ids. */
static json_t *drop_instances(struct cr_app *app, struct cr_model *m)
{
	struct cr_instance **is;
	size_t n = model_instances(app, m, &is);
	json_t *gone = json_array();
	for (size_t k = 0; k < n; k++) {
		json_array_append_new(gone, json_string(is[k]->id));
		cr_map_del(&app->instances, is[k]->id);
		cr_instances_push(app, is[k]->placement);
		cr_instance_free(is[k]);
	}
	free(is);
	return gone;
}

static void delete_model(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_model *m = model_or_reply(req);
	if (!m)
		return;
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->model_del(app->store, m->id, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	json_t *gone = drop_instances(app, m);
	size_t n = json_array_size(gone);
	cr_info("model '%s' deleted with %zu instance(s)", m->name, n);
	cr_audit(app, req, NULL, "model.delete", m->name, json_pack("{s:I}", "instances", (json_int_t)n));
	cr_event(app, "model.deleted", m->name, NULL, "model '%s' deleted by %s; %zu instance(s) stop", m->name,
		 cr_req_principal(req)->username ? cr_req_principal(req)->username : "-", n);
	json_t *body = json_pack("{s:s,s:s,s:o}", "deleted", m->id, "name", m->name, "instances", gone);
	cr_map_del(&app->models, m->id);
	cr_map_del(&app->model_names, m->name);
	model_free(m);
	cr_instances_push_all(app);
	cr_reply_json(req, 200, body);
}

/* POST /api/models/plan: the placement of every replica and the reasons,
 * nothing stored. Workers that have not inspected the source yet are asked
 * to and listed in "waiting_for"; clients ask again shortly. */
static void plan_with_spec(struct cr_req *req, json_t *spec, json_t *ctx);

static void plan_model(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err), *spec = NULL;
	if (body && !json_object_get(body, "name"))
		json_object_set_new(body, "name", json_string("plan"));
	if (!body || cr_model_spec_parse(body, NULL, &spec, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	if (!cr_hub_resolve(app, req, spec, plan_with_spec, NULL))
		plan_with_spec(req, spec, NULL);
}

/* The rest of POST /api/models/plan, once the source is known. */
static void plan_with_spec(struct cr_req *req, json_t *spec, json_t *ctx)
{
	struct cr_app *app = cr_req_app(req);
	(void)ctx;
	const char *source = cr_model_spec_source(spec), *name = cr_json_get_str(spec, "name", "plan");
	bool known = json_object_get(app->probe_sources, source) != NULL;
	json_object_set_new(app->probe_sources, source, json_integer(cr_mono_ms()));
	if (!known)
		cr_instances_push_all(app);
	json_t *wait = waiting_for(app, source);
	int want = (int)cr_json_get_int(spec, "replicas", 1);
	struct plan pl;
	plan_replicas(app, spec, name, NULL, want ? want : 1, NULL, &pl);
	if (pl.rc == CR_EINPUT) {
		cr_reply_err(req, &pl.err);
	} else {
		json_t *o = json_pack("{s:s,s:b,s:i,s:i,s:O,s:s,s:o,s:o}", "model", name, "placed", pl.rc == 0, "replicas",
				      want, "placed_replicas", pl.placed, "instances", pl.placements, "summary",
				      pl.rc ? pl.summary : "", "reasons", pl.reasons ? json_incref(pl.reasons) : json_array(),
				      "waiting_for", json_incref(wait));
		json_object_set_new(o, "groups_refused", pl.groups ? json_incref(pl.groups) : json_array());
		json_object_set_new(o, "warnings", spec_warnings(app, spec));
		if (pl.learned) /* the estimate was corrected by what engines really held */
			json_object_set(o, "learned", pl.learned);
		if (json_object_get(spec, "hub")) /* which file of the repository, and why */
			json_object_set(o, "hub", json_object_get(spec, "hub"));
		cr_reply_json(req, 200, o);
	}
	json_decref(wait);
	json_decref(pl.placements);
	json_decref(pl.reasons);
	json_decref(pl.groups);
	json_decref(pl.learned);
	json_decref(spec);
}







/* ---- end-to-end probes ---- */

struct e2e {
	struct cr_app *app;
	char *instance_id;
};

static void e2e_done(int status, const char *body, size_t len, const char *error, void *arg)
{
	struct e2e *e = arg;
	struct cr_instance *i = cr_map_get(&e->app->instances, e->instance_id); /* gone meanwhile: nothing to do */
	if (i) {
		char why[400] = "";
		i->probe_inflight = false;
		if (status == 0) {
			snprintf(why, sizeof(why), "no answer (%s)", error);
		} else if (status != 200) {
			snprintf(why, sizeof(why), "answered %d: %.200s", status, body);
		} else {
			json_t *o = json_loadb(body, len, 0, NULL);
			if (!json_is_array(json_object_get(o, "choices")))
				snprintf(why, sizeof(why), "answered 200 with %s", o ? "JSON that is not a completion"
										: "a body that is not JSON");
			json_decref(o);
		}
		if (!*why) {
			bool was_failing = i->probe_failures >= CR_E2E_FAILS;
			i->probe_failures = 0;
			if (was_failing) {
				cr_info("instance %s answers its end-to-end probe again", i->id);
				cr_instance_derive_state(e->app, i);
			}
		} else {
			cr_str_replace(&i->probe_error, why);
			if (++i->probe_failures == CR_E2E_FAILS) {
				cr_warn("instance %s: end-to-end probe failed %d times: %s", i->id, CR_E2E_FAILS, why);
				cr_instance_derive_state(e->app, i);
			}
		}
	}
	free(e->instance_id);
	free(e);
}

/* A one-token completion to every running instance of the models deployed
 * with health_probe, every --health-probe-interval seconds. */
static void e2e_probes(struct cr_app *app, int64_t now)
{
	if (now < app->next_e2e_mono)
		return;
	app->next_e2e_mono = now + (int64_t)app->cfg.health_probe_interval_s * 1000;
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		struct cr_model *m = cr_map_get(&app->models, i->model_id);
		if (!m || !json_is_true(json_object_get(m->spec, "health_probe")) || !i->endpoint || i->probe_inflight ||
		    (i->state != CR_I_RUNNING && i->probe_failures < CR_E2E_FAILS))
			continue;
		const char *colon = strrchr(i->endpoint, ':');
		if (!colon)
			continue;
		char host[256];
		snprintf(host, sizeof(host), "%.*s", (int)(colon - i->endpoint), i->endpoint);
		json_t *req = json_pack("{s:s,s:s,s:i}", "model", m->name, "prompt", "ping", "max_tokens", 1);
		char *body = cr_json_dump(req);
		json_decref(req);
		struct e2e *e = cr_xcalloc(1, sizeof(*e));
		e->app = app;
		e->instance_id = cr_xstrdup(i->id);
		i->probe_inflight = true;
		cr_http_fetch_post(app->base, host, (int)strtol(colon + 1, NULL, 10), "/v1/completions",
				   cr_json_get_str(i->placement, "engine_key", NULL), body, 30, e2e_done, e);
		free(body);
	}
}


/* ---- logs: read through the worker that runs the engine ---- */



const struct cr_http_route cr_api_model_routes[] = {
	{ CR_POST, "/api/models/plan", CR_AUTH_ADMIN, plan_model },
	{ CR_POST, "/api/models", CR_AUTH_ADMIN, create_model },
	{ CR_GET, "/api/models", CR_AUTH_USER, list_models },
	{ CR_GET, "/api/models/{}", CR_AUTH_USER, get_model },
	{ CR_PATCH, "/api/models/{}", CR_AUTH_ADMIN, patch_model },
	{ CR_DELETE, "/api/models/{}", CR_AUTH_ADMIN, delete_model },
	{ 0, NULL, 0, NULL },
};

struct cr_model *cr_cluster_model(struct cr_app *app, const char *name)
{
	return cr_map_get(&app->model_names, name);
}

bool cr_cluster_next_model(struct cr_app *app, size_t *it, struct cr_model **m)
{
	void *v;
	if (!cr_map_next(&app->models, it, NULL, &v))
		return false;
	*m = v;
	return true;
}
