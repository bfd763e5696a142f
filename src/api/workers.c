/* Workers: registration with the cluster token, status reports, the watch
 * stream of desired state, liveness (missed reports, server->worker probes),
 * listing and removal. Identity is persisted at once; observed state (last
 * report, last seen) is flushed periodically. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checks/report.h"
#include "api/internal.h"
#include <sodium.h>

#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "checks/checks.h"
#include "http/probe.h"
#include "store/store.h"

#define DEFAULT_STATUS_INTERVAL 5
#define MAX_REPORT (256 << 10)

const char *cr_worker_state_name(enum cr_worker_state s)
{
	switch (s) {
	case CR_W_READY: return "ready";
	case CR_W_UNREACHABLE: return "unreachable";
	default: return "not_ready";
	}
}

static struct cr_worker *worker_new(struct cr_app *app, const char *id, const char *name)
{
	struct cr_worker *w = cr_xcalloc(1, sizeof(*w));
	w->id = cr_xstrdup(id);
	w->name = cr_xstrdup(name);
	w->status_interval_s = DEFAULT_STATUS_INTERVAL;
	w->report_base = -1;
	w->state = CR_W_NOT_READY;
	w->state_message = cr_xstrdup("registered, waiting for the first status report");
	w->state_since_mono = cr_mono_ms();
	cr_map_put(&app->workers, w->id, w);
	cr_map_put(&app->worker_names, w->name, w);
	return w;
}

static void worker_free(struct cr_worker *w)
{
	if (!w)
		return;
	cr_probe_free(w->probe);
	if (w->watch)
		cr_stream_close(w->watch);
	free(w->id);
	free(w->name);
	free(w->secret_hash);
	free(w->labels_json);
	free(w->address);
	free(w->address_seen);
	json_decref(w->files);
	json_decref(w->failing_checks);
	json_decref(w->cache);
	free(w->report_json);
	free(w->dynamic_json);
	json_decref(w->report);
	free(w->state_message);
	free(w->probe_error);
	free(w->watch_stored);
	free(w);
}

struct cr_worker *cr_worker_find(struct cr_app *app, const char *id_or_name)
{
	struct cr_worker *w = cr_map_get(&app->workers, id_or_name);
	return w ? w : cr_map_get(&app->worker_names, id_or_name);
}

static void load_worker(const struct cr_worker_rec *r, void *arg)
{
	struct cr_app *app = arg;
	struct cr_worker *w = worker_new(app, r->id, r->name);
	w->secret_hash = cr_xstrdup(r->secret_hash);
	w->labels_json = cr_xstrdup(r->labels_json);
	w->address = cr_xstrdup(r->address);
	w->port = r->port;
	w->created_ms = r->created_ms;
	w->last_seen_ms = r->last_seen_ms;
	w->report_json = cr_xstrdup(r->report_json);
	w->dynamic_json = cr_xstrdup(r->dynamic_json);
	w->report = w->report_json ? json_loads(w->report_json, 0, NULL) : NULL;
	json_t *dynamic = w->dynamic_json ? json_loads(w->dynamic_json, 0, NULL) : NULL;
	if (w->report && dynamic)
		cr_report_merge(w->report, dynamic);
	json_decref(dynamic);
	w->report_base = -1;
	w->cordoned = r->cordoned;
	w->draining = r->draining;
	cr_str_replace(&w->state_message, "waiting for a status report since the server started");
}

int cr_workers_load(struct cr_app *app, struct cr_err *err)
{
	return app->store->ops->worker_list(app->store, load_worker, app, err);
}

/* ---- several servers: what the others wrote ---- */

struct worker_sync {
	struct cr_app *app;
	bool observed;
	struct cr_map seen; /* id -> itself */
};

/* A follower's view of w from what the leader last stored (it flushes
 * every --flush-interval): ready while that is recent. No events: the
 * leader tells those. */
static void follower_state(struct cr_app *app, struct cr_worker *w)
{
	int64_t age = cr_wall_ms() - w->last_seen_ms;
	int64_t limit = (int64_t)app->cfg.missed_status_limit * w->status_interval_s * 1000 +
			(int64_t)app->cfg.flush_interval_s * 1000;
	enum cr_worker_state st = w->last_seen_ms && age <= limit ? CR_W_READY : CR_W_NOT_READY;
	char msg[200] = "";
	if (st != CR_W_READY)
		snprintf(msg, sizeof(msg), "no status report stored for %lld s (this server follows; the leader keeps "
			 "the live state)", (long long)(age / 1000));
	if (st != w->state)
		w->state_since_mono = cr_mono_ms();
	w->state = st;
	cr_str_replace(&w->state_message, msg);
}

static void sync_worker(const struct cr_worker_rec *r, void *arg)
{
	struct worker_sync *ws = arg;
	struct cr_worker *w = cr_map_get(&ws->app->workers, r->id);
	if (!w) {
		load_worker(r, ws->app);
		w = cr_map_get(&ws->app->workers, r->id);
	} else {
		if (strcmp(w->secret_hash ? w->secret_hash : "", r->secret_hash ? r->secret_hash : ""))
			cr_str_replace(&w->secret_hash, r->secret_hash); /* registered again on another server */
		if (strcmp(w->name, r->name) && !cr_map_get(&ws->app->worker_names, r->name)) {
			cr_map_del(&ws->app->worker_names, w->name);
			cr_str_replace(&w->name, r->name);
			cr_map_put(&ws->app->worker_names, w->name, w);
		}
		if (strcmp(w->labels_json ? w->labels_json : "", r->labels_json ? r->labels_json : ""))
			cr_str_replace(&w->labels_json, r->labels_json);
		if (strcmp(w->address ? w->address : "", r->address ? r->address : ""))
			cr_str_replace(&w->address, r->address);
		w->port = r->port;
		w->cordoned = r->cordoned;
		w->draining = r->draining;
		if (ws->observed && r->last_seen_ms != w->last_seen_ms) {
			w->last_seen_ms = r->last_seen_ms;
			if (r->report_json && strcmp(w->report_json ? w->report_json : "", r->report_json)) {
				cr_str_replace(&w->report_json, r->report_json);
				json_decref(w->report);
				w->report = json_loads(w->report_json, 0, NULL);
			}
			cr_str_replace(&w->dynamic_json, r->dynamic_json);
			json_t *dynamic = w->dynamic_json ? json_loads(w->dynamic_json, 0, NULL) : NULL;
			if (w->report && dynamic)
				cr_report_merge(w->report, dynamic);
			json_decref(dynamic);
		}
	}
	if (ws->observed)
		follower_state(ws->app, w);
	cr_map_put(&ws->seen, r->id, ws);
}

int cr_workers_sync_one(struct cr_app *app, const char *id, struct cr_err *err)
{
	struct worker_sync ws = { app, false, CR_MAP_INIT };
	int rc = app->store->ops->worker_get(app->store, id, sync_worker, &ws, err);
	cr_map_release(&ws.seen);
	return rc;
}

int cr_workers_sync(struct cr_app *app, bool observed, struct cr_err *err)
{
	struct worker_sync ws = { app, observed, CR_MAP_INIT };
	int rc = app->store->ops->worker_list(app->store, sync_worker, &ws, err);
	size_t it = 0;
	void *v;
	const char *k;
	while (!rc && cr_map_next(&app->workers, &it, &k, &v))
		if (!cr_map_get(&ws.seen, k)) { /* removed on another server */
			struct cr_worker *w = v;
			cr_map_del(&app->worker_names, w->name);
			cr_map_del(&app->workers, k);
			worker_free(w);
		}
	cr_map_release(&ws.seen);
	return rc;
}

void cr_workers_free_all(struct cr_app *app)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v))
		worker_free(v);
	cr_map_release(&app->workers);
	cr_map_release(&app->worker_names);
}

/* ---- liveness ---- */

static void set_state(struct cr_app *app, struct cr_worker *w, enum cr_worker_state s, const char *msg)
{
	if (w->state == s && w->state_message && !strcmp(w->state_message, msg))
		return;
	if (w->state != s) {
		cr_info("worker '%s' is %s%s%s", w->name, cr_worker_state_name(s), *msg ? ": " : "", msg);
		char kind[32];
		snprintf(kind, sizeof(kind), "worker.%s", cr_worker_state_name(s));
		cr_event(app, kind, w->name, NULL, "worker '%s' is %s%s%s", w->name, cr_worker_state_name(s),
			 *msg ? ": " : "", msg);
	}
	if (w->state != s)
		w->state_since_mono = cr_mono_ms();
	w->state = s;
	cr_str_replace(&w->state_message, msg);
}

static void judge_state(struct cr_app *app, struct cr_worker *w, int64_t now)
{
	int64_t limit_ms = (int64_t)app->cfg.missed_status_limit * w->status_interval_s * 1000;
	char msg[512];
	if (!w->last_status_mono) {
		if (now - app->started_mono > limit_ms && w->state != CR_W_NOT_READY)
			set_state(app, w, CR_W_NOT_READY, "no status report since the server started");
		return;
	}
	int64_t silent = now - w->last_status_mono;
	if (silent > limit_ms) {
		snprintf(msg, sizeof(msg),
			 "no status report for %lld s (expected every %d s); check that 'corral worker' is running on "
			 "'%s' and can reach the server",
			 (long long)(silent / 1000), w->status_interval_s, w->address);
		set_state(app, w, CR_W_NOT_READY, msg);
	} else if (w->probe_failed) {
		snprintf(msg, sizeof(msg),
			 "status reports arrive, but the server cannot reach the worker: GET http://%s:%d/healthz: %s; "
			 "check that port %d on %s is reachable from the server (firewall, NAT) or set "
			 "--advertise-address",
			 w->address, w->port, w->probe_error ? w->probe_error : "failed", w->port, w->address);
		set_state(app, w, CR_W_UNREACHABLE, msg);
	} else {
		set_state(app, w, CR_W_READY, "");
	}
}

/* Set the worker's state from what was seen; a change reruns the scheduler. */
static void update_state(struct cr_app *app, struct cr_worker *w, int64_t now)
{
	enum cr_worker_state before = w->state;
	judge_state(app, w, now);
	if (w->state != before)
		app->sched_dirty = true;
}

static void probe_done(int status, const char *error, void *arg)
{
	struct cr_worker *w = arg;
	w->probe_pending = false;
	w->probe_failed = status != 200;
	if (status != 200 && status != 0) {
		char why[64];
		snprintf(why, sizeof(why), "answered HTTP %d", status);
		cr_str_replace(&w->probe_error, why);
	} else {
		cr_str_replace(&w->probe_error, status ? NULL : error);
	}
}

/* Probes per second the server allows itself in total: a large cluster is
 * probed less often per worker instead of costing more CPU. */
#define PROBES_PER_SECOND 100

/* The next probe time: one interval away (longer when the cluster is larger
 * than PROBES_PER_SECOND x interval), +-25%, so that workers that came up
 * together (or a restarted server's whole cluster) are not probed in one burst. */
static int64_t next_probe_time(const struct cr_app *app, int64_t now)
{
	int64_t ms = (int64_t)app->cfg.probe_interval_s * 1000;
	int64_t floor_ms = (int64_t)app->workers.count * 1000 / PROBES_PER_SECOND;
	if (ms < floor_ms)
		ms = floor_ms;
	return now + ms * 3 / 4 + (int64_t)randombytes_uniform((uint32_t)(ms / 2) + 1);
}

static void start_probe(struct cr_app *app, struct cr_worker *w, int64_t now)
{
	if (!w->probe)
		w->probe = cr_probe_new(app->base, w->address, w->port);
	w->probe_pending = true;
	w->next_probe_mono = next_probe_time(app, now);
	cr_probe_get(w->probe, "/healthz", app->cfg.probe_timeout_s, probe_done, w);
}

void cr_workers_tick(struct cr_app *app)
{
	int64_t now = cr_mono_ms();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		update_state(app, w, now);
		if (w->probe && !w->probe_pending) { /* idle between probes: keep no connection */
			cr_probe_free(w->probe);
			w->probe = NULL;
		}
		if (app->cfg.probe_interval_s > 0 && w->state != CR_W_NOT_READY && !w->probe_pending &&
		    now >= w->next_probe_mono && w->port > 0)
			start_probe(app, w, now);
	}
}

void cr_workers_flush(struct cr_app *app)
{
	size_t n = 0, it = 0;
	void *v;
	struct cr_worker_rec *recs = cr_xcalloc(app->workers.count + 1, sizeof(*recs));
	const struct cr_worker_rec **ptrs = cr_xcalloc(app->workers.count + 1, sizeof(*ptrs));
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (!w->dirty)
			continue;
		recs[n].id = w->id;
		recs[n].last_seen_ms = w->last_seen_ms;
		recs[n].report_json = w->report_dirty ? w->report_json : NULL;
		recs[n].dynamic_json = w->dynamic_json;
		ptrs[n] = &recs[n];
		n++;
		w->dirty = w->report_dirty = false;
	}
	struct cr_err err = CR_ERR_INIT;
	if (n && app->store->ops->worker_observed(app->store, ptrs, n, &err) != 0)
		cr_warn("flushing the status of %zu workers failed: %s", n, err.message);
	free(ptrs);
	free(recs);
	/* Reports are replaced every interval; give the pages their churn frees back. */
	malloc_trim(0);
}

void cr_workers_keepalive(struct cr_app *app)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (w->watch)
			cr_stream_comment(w->watch, "keepalive");
	}
}

/* ---- JSON views ---- */

/* o[key] = report[key], or def when the report has none; takes def. */
static void set_or_default(json_t *o, json_t *report, const char *key, json_t *def)
{
	json_t *v = json_object_get(report, key);
	if (v) {
		json_object_set(o, key, v);
		json_decref(def);
	} else {
		json_object_set_new(o, key, def);
	}
}

static json_t *worker_json(struct cr_worker *w)
{
	char seen[40] = "", created[40];
	if (w->last_seen_ms)
		cr_time_format(w->last_seen_ms, seen, sizeof(seen));
	cr_time_format(w->created_ms, created, sizeof(created));
	json_t *labels = json_loads(w->labels_json ? w->labels_json : "{}", 0, NULL);
	json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:o,s:o,s:s,s:i,s:b}", "id", w->id, "name", w->name,
			      "state", cr_worker_state_name(w->state), "state_message", w->state_message, "address",
			      w->address ? w->address : "", "port", w->port, "address_seen",
			      w->address_seen ? w->address_seen : "", "labels", labels ? labels : json_object(),
			      "last_seen", w->last_seen_ms ? json_string(seen) : json_null(), "registered_at", created,
			      "status_interval_s", w->status_interval_s, "watch_connected", w->watch != NULL);
	json_t *report = w->report; /* borrowed */
	set_or_default(o, report, "system", json_object());
	set_or_default(o, report, "gpus", json_array());
	set_or_default(o, report, "drivers", json_object());
	set_or_default(o, report, "notes", json_array());
	set_or_default(o, report, "engines", json_array());
	set_or_default(o, report, "peers", json_object());
	/* the worker's own checks, and the server's view of its address */
	json_t *reported = json_object_get(report, "checks");
	json_t *checks = json_is_array(reported) ? json_deep_copy(reported) : json_array();
	if (w->state != CR_W_NOT_READY)
		cr_checks_address(w->address, w->address_seen, w->state != CR_W_UNREACHABLE, w->probe_error, checks);
	int warns, fails;
	cr_checks_worst(checks, &warns, &fails);
	json_object_set_new(o, "checks", checks);
	json_object_set_new(o, "checks_summary", json_pack("{s:i,s:i}", "warn", warns, "fail", fails));
	/* which full report the view is built on (the worker counts them), and
	 * whether a light report (the dynamic half alone) came since */
	json_object_set_new(o, "report", json_pack("{s:I,s:b}", "base", (json_int_t)w->report_base, "light",
						   w->dynamic_json != NULL));
	json_object_set_new(o, "cordoned", json_boolean(w->cordoned));
	json_object_set_new(o, "draining", json_boolean(w->draining));
	return o;
}

static void list_workers(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v))
		json_array_append_new(arr, worker_json(v));
	cr_json_sort(arr, "name", NULL);
	cr_reply_json(req, 200, json_pack("{s:o}", "workers", arr));
}

static struct cr_worker *find_or_reply(struct cr_req *req)
{
	struct cr_worker *w = cr_worker_find(cr_req_app(req), cr_req_param(req, 0));
	if (!w) {
		char msg[200];
		snprintf(msg, sizeof(msg), "no worker '%.100s'", cr_req_param(req, 0));
		cr_reply_error(req, CR_ENOTFOUND, msg, "list the workers with 'corral workers'");
	}
	return w;
}

static void get_worker(struct cr_req *req)
{
	struct cr_worker *w = find_or_reply(req);
	if (w)
		cr_reply_json(req, 200, worker_json(w));
}

static size_t instances_on(struct cr_app *app, const char *worker_id)
{
	size_t n = 0, it = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v))
		n += cr_placement_has(((struct cr_instance *)v)->placement, worker_id);
	return n;
}

static void delete_worker(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_worker *w = find_or_reply(req);
	if (!w)
		return;
	const char *force = cr_req_query(req, "force");
	size_t n = instances_on(app, w->id);
	if (w->state == CR_W_READY && !(force && (!strcmp(force, "1") || !strcmp(force, "true")))) {
		char msg[300], fix[300];
		snprintf(msg, sizeof(msg), "worker '%s' is ready and runs %zu instance(s); removing it restarts their "
			 "engines on other workers", w->name, n);
		snprintf(fix, sizeof(fix), "move them first with 'corral workers drain %s', or repeat with --force "
			 "(and stop the worker, or it registers again)", w->name);
		cr_reply_error(req, CR_ECONFLICT, msg, fix);
		return;
	}
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->worker_del(app->store, w->id, &err) != 0) {
		cr_reply_err(req, &err);
		return;
	}
	cr_info("worker '%s' (%s) deleted", w->name, w->id);
	cr_event(app, "worker.removed", w->name, NULL, "worker '%s' removed from the cluster by %s", w->name,
		 cr_req_principal(req)->username ? cr_req_principal(req)->username : "-");
	cr_audit(app, req, NULL, "worker.delete", w->name,
		 json_pack("{s:s,s:s}", "id", w->id, "was", cr_worker_state_name(w->state)));
	json_t *body = json_pack("{s:s,s:s}", "deleted", w->id, "name", w->name);
	cr_map_del(&app->workers, w->id);
	cr_map_del(&app->worker_names, w->name);
	worker_free(w);
	cr_reply_json(req, 200, body);
}

/* POST /api/workers/{id}/cordon, /uncordon, /drain: stop new placements on
 * the worker; drain also moves its instances elsewhere, each replacement
 * running before the old one stops (see reconcile in models.c). */
static void set_cordon(struct cr_req *req, bool cordoned, bool draining)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_worker *w = find_or_reply(req);
	if (!w)
		return;
	struct cr_worker_rec rec = { w->id, w->name, w->secret_hash, w->labels_json, w->address, w->port,
				     w->created_ms, w->last_seen_ms, NULL, NULL, cordoned, draining };
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->worker_put(app->store, &rec, &err) != 0) {
		cr_reply_err(req, &err);
		return;
	}
	if (w->cordoned != cordoned || w->draining != draining) {
		cr_info("worker '%s' %s", w->name, draining ? "draining" : cordoned ? "cordoned" : "uncordoned");
		cr_audit(app, req, NULL, draining ? "worker.drain" : cordoned ? "worker.cordon" : "worker.uncordon", w->name,
			 NULL);
	}
	w->cordoned = cordoned;
	w->draining = draining;
	app->sched_dirty = true;
	json_t *o = worker_json(w);
	json_object_set_new(o, "instances_here", json_integer((json_int_t)instances_on(app, w->id)));
	cr_reply_json(req, 200, o);
}

static void cordon(struct cr_req *req) { set_cordon(req, true, false); }
static void uncordon(struct cr_req *req) { set_cordon(req, false, false); }
static void drain(struct cr_req *req) { set_cordon(req, true, true); }

/* ---- registration ---- */

static int check_name(const char *name, struct cr_err *err)
{
	size_t n = strlen(name);
	bool ok = n > 0 && n <= 63;
	for (const char *c = name; ok && *c; c++)
		ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
		     *c == '_' || *c == '-';
	if (!ok)
		return cr_err_set(err, CR_EINPUT, "use 1-63 letters, digits, '.', '_' or '-' (worker --name)",
				  "worker name '%.80s' is not valid", name);
	return 0;
}

static int check_labels(json_t *labels, struct cr_err *err)
{
	const char *k;
	json_t *v;
	json_object_foreach(labels, k, v) {
		if (!json_is_string(v))
			return cr_err_set(err, CR_EINPUT, "give labels as strings: {\"gpu\": \"h100\"}",
					  "label '%.80s' must be a string", k);
	}
	return 0;
}

struct reg {
	const char *name, *id, *secret, *address;
	long long port, interval;
	json_t *labels;
};

static int parse_reg(json_t *body, struct reg *r, struct cr_err *err)
{
	memset(r, 0, sizeof(*r));
	r->interval = DEFAULT_STATUS_INTERVAL;
	int rc = cr_json_req_str(body, "name", &r->name, err);
	if (!rc)
		rc = check_name(r->name, err);
	if (!rc)
		rc = cr_json_str(body, "id", &r->id, err);
	if (!rc)
		rc = cr_json_str(body, "secret", &r->secret, err);
	if (!rc)
		rc = cr_json_str(body, "address", &r->address, err);
	if (!rc)
		rc = cr_json_int(body, "port", 1, 65535, &r->port, err);
	if (!rc && !r->port)
		rc = cr_err_set(err, CR_EINPUT, "send the worker's --worker-port", "field 'port' is required");
	if (!rc)
		rc = cr_json_int(body, "status_interval_s", 1, 3600, &r->interval, err);
	if (!rc)
		rc = cr_json_obj(body, "labels", &r->labels, err);
	if (!rc && r->labels)
		rc = check_labels(r->labels, err);
	return rc;
}

/* The existing worker this registration is, or NULL for a new one. Only
 * the worker's own secret proves that a registration is that worker: a name
 * in use is never taken over, however long its worker has been silent (the
 * cluster token is on every node; it must not let one node become another
 * and receive its users' prompts). A lost secret is replaced only after an
 * admin removes the worker. */
static struct cr_worker *match_existing(struct cr_app *app, const struct reg *r, struct cr_err *err)
{
	if (r->id && r->secret) {
		struct cr_worker *w = cr_map_get(&app->workers, r->id);
		char hash[CR_HASH_HEX];
		cr_secret_hash(r->secret, hash);
		if (w && cr_secret_equal(hash, w->secret_hash)) {
			struct cr_worker *other = cr_map_get(&app->worker_names, r->name);
			if (other && other != w) {
				cr_err_set(err, CR_ECONFLICT, "start it with another --name, or delete the other worker",
					   "worker name '%s' is taken by another worker (%s)", r->name, other->id);
				return NULL;
			}
			return w;
		}
	}
	struct cr_worker *same = cr_map_get(&app->worker_names, r->name);
	if (same) {
		cr_err_set(err, CR_ECONFLICT,
			   "a worker proves it is that worker with the secret kept in its --data-dir; start this one "
			   "with another --name, or, if it replaces that worker (its data dir was lost), have an admin "
			   "remove the old one first: 'corral workers rm NAME' (--force while it reports)",
			   "worker name '%s' is taken by worker %s, which is %s, and this registration does not carry "
			   "its secret", r->name, same->id, cr_worker_state_name(same->state));
		return NULL;
	}
	return NULL;
}

/* What a registration changes in memory, on the server that took it and,
 * from its mail, on the leader: w (NULL: a new worker) as rec says. */
static struct cr_worker *apply_registration(struct cr_app *app, struct cr_worker *w, const struct cr_worker_rec *rec,
					    const char *address_seen, int interval)
{
	bool fresh = !w;
	if (!w) {
		w = worker_new(app, rec->id, rec->name);
		w->created_ms = rec->created_ms;
	} else if (strcmp(w->name, rec->name)) {
		cr_map_del(&app->worker_names, w->name);
		cr_str_replace(&w->name, rec->name);
		cr_map_put(&app->worker_names, w->name, w);
	}
	cr_str_replace(&w->secret_hash, rec->secret_hash);
	cr_str_replace(&w->labels_json, rec->labels_json);
	/* a (re)registered worker is probed afresh: a probe in flight is dropped
	 * without its callback, and what earlier probes found is about the
	 * process that went away */
	cr_probe_free(w->probe);
	w->probe = NULL;
	w->probe_pending = false;
	w->probe_failed = false;
	cr_str_replace(&w->probe_error, NULL);
	cr_str_replace(&w->address, rec->address);
	cr_str_replace(&w->address_seen, address_seen);
	w->port = rec->port;
	w->status_interval_s = interval;
	w->next_probe_mono = 0;
	cr_info("worker '%s' registered (%s, %s:%d)%s", w->name, w->id, w->address, w->port, fresh ? "" : " again");
	return w;
}

static void register_worker(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_err err = CR_ERR_INIT;
	const char *auth = cr_req_header(req, "Authorization");
	char hash[CR_HASH_HEX] = "";
	if (auth && !strncasecmp(auth, "Bearer ", 7))
		cr_secret_hash(auth + 7, hash);
	bool token_ok = auth && cr_secret_equal(hash, app->cluster_token_hash);
	json_t *body = token_ok ? cr_req_json(req, &err) : cr_req_json(req, NULL);
	struct reg r;
	if (token_ok && (!body || parse_reg(body, &r, &err))) {
		cr_reply_err(req, &err);
		return;
	}
	if (!token_ok) { /* a registered worker proves itself with its own secret (the token may have been rotated) */
		struct cr_err ignored = CR_ERR_INIT;
		bool parsed = body && !parse_reg(body, &r, &ignored) && r.id && r.secret;
		struct cr_worker *known = parsed ? cr_map_get(&app->workers, r.id) : NULL;
		if (parsed && !known && cr_app_sync_worker_on_miss(app, r.id)) /* registered on another server? */
			known = cr_map_get(&app->workers, r.id);
		char sh[CR_HASH_HEX] = "";
		if (known)
			cr_secret_hash(r.secret, sh);
		if (!known || !cr_secret_equal(sh, known->secret_hash)) {
			cr_reply_error(req, CR_EUNAUTH, "missing or wrong cluster registration token",
				       "pass the token from the server's DATA_DIR/token file with 'corral worker "
				       "--token-file'");
			return;
		}
	}
	struct cr_worker *w = match_existing(app, &r, &err);
	if (err.code) {
		cr_warn("registration as worker '%s' from %s refused: %s", r.name, cr_req_peer(req), err.message);
		cr_audit(app, req, "-", "worker.register.refused", r.name, json_pack("{s:s}", "why", err.message));
		cr_reply_err(req, &err);
		return;
	}
	bool fresh = !w;
	char *secret = fresh ? cr_secret_token("crw") : NULL;
	char *id = w ? cr_xstrdup(w->id) : cr_secret_id();
	char *labels = r.labels ? cr_json_dump(r.labels) : cr_xstrdup("{}");
	const char *address = r.address && *r.address ? r.address : cr_req_peer(req);
	char secret_hash[CR_HASH_HEX];
	if (secret)
		cr_secret_hash(secret, secret_hash);
	struct cr_worker_rec rec = { id, (char *)r.name, secret ? secret_hash : w->secret_hash, labels,
				     (char *)address, (int)r.port, w ? w->created_ms : cr_wall_ms(),
				     w ? w->last_seen_ms : 0, NULL, NULL, w && w->cordoned,
				     w && w->draining };
	if (app->store->ops->worker_put(app->store, &rec, &err) != 0) {
		cr_reply_err(req, &err);
		goto out;
	}
	if (cr_app_follows(app)) { /* stored; the leader takes the rest from the mail */
		json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:I,s:i}", "id", id, "name", r.name, "secret_hash",
				      rec.secret_hash, "labels", labels, "address", address, "address_seen",
				      cr_req_peer(req), "port", (int)r.port, "created_ms", (json_int_t)rec.created_ms,
				      "interval", (int)r.interval);
		char *text = cr_json_dump(m);
		json_decref(m);
		int rc = cr_workers_mail(app, id, "register", text, strlen(text), &err);
		free(text);
		if (rc) {
			cr_reply_err(req, &err);
			goto out;
		}
	}
	w = apply_registration(app, w, &rec, cr_req_peer(req), (int)r.interval);
	if (fresh)
		cr_event(app, "worker.joined", w->name, json_pack("{s:s,s:s,s:i}", "id", w->id, "address", w->address, "port",
								  w->port),
			 "worker '%s' joined from %s", w->name, w->address);
	char skey[CR_HASH_HEX];
	cr_worker_server_key(app, w->id, skey);
	json_t *resp = json_pack("{s:s,s:s,s:s}", "id", w->id, "name", w->name, "server_key", skey);
	if (secret)
		json_object_set_new(resp, "secret", json_string(secret));
	cr_reply_json(req, fresh ? 201 : 200, resp);
out:
	free(secret);
	free(id);
	free(labels);
}

/* The leader: a registration a follower took and stored. */
static void mailed_registration(struct cr_app *app, json_t *m)
{
	struct cr_worker_rec rec = { (char *)cr_json_get_str(m, "id", ""), (char *)cr_json_get_str(m, "name", ""),
				     (char *)cr_json_get_str(m, "secret_hash", ""), (char *)cr_json_get_str(m, "labels", "{}"),
				     (char *)cr_json_get_str(m, "address", ""), (int)cr_json_get_int(m, "port", 0),
				     cr_json_get_int(m, "created_ms", 0), 0, NULL, NULL, false, false };
	if (!*rec.id || !*rec.name)
		return;
	struct cr_worker *w = cr_map_get(&app->workers, rec.id), *other = cr_map_get(&app->worker_names, rec.name);
	if (other && other != w) { /* the name changed hands meanwhile: the store says which worker holds it now */
		cr_warn("registration of worker '%s' (%s) taken by another server conflicts with worker %s; read from "
			"the store", rec.name, rec.id, other->id);
		cr_workers_sync(app, false, NULL);
		return;
	}
	apply_registration(app, w, &rec, cr_json_get_str(m, "address_seen", rec.address),
			   (int)cr_json_get_int(m, "interval", DEFAULT_STATUS_INTERVAL));
}

/* ---- status ---- */

static int check_report(json_t *body, struct cr_err *err)
{
	json_t *sys = NULL, *gpus = NULL, *notes = NULL, *drivers = NULL;
	int rc = cr_json_obj(body, "system", &sys, err);
	if (!rc)
		rc = cr_json_arr(body, "gpus", &gpus, err);
	if (!rc)
		rc = cr_json_arr(body, "notes", &notes, err);
	if (!rc)
		rc = cr_json_obj(body, "drivers", &drivers, err);
	if (rc)
		return rc;
	if (!sys)
		return cr_err_set(err, CR_EINPUT, "send the report produced by 'corral worker'", "field 'system' is required");
	size_t i;
	json_t *g;
	json_array_foreach(gpus, i, g) {
		if (!json_is_object(g) || !json_is_integer(json_object_get(g, "index")) ||
		    !json_is_string(json_object_get(g, "vendor")) || !json_is_integer(json_object_get(g, "memory_total")))
			return cr_err_set(err, CR_EINPUT, "each GPU needs integer 'index', string 'vendor' and integer "
							   "'memory_total'",
					  "gpus[%zu] is malformed", i);
	}
	json_array_foreach(notes, i, g) {
		if (!json_is_string(g))
			return cr_err_set(err, CR_EINPUT, "send notes as strings", "notes[%zu] must be a string", i);
	}
	return 0;
}

/* A light report: the dynamic half of the full report with the same base. */
static int accept_light(struct cr_worker *w, json_t *body, struct cr_err *err)
{
	long long base = -1;
	json_t *dyn = json_object_get(body, "dynamic"), *gpus = NULL;
	int rc = cr_json_int(body, "base", 0, INT64_MAX, &base, err);
	if (!rc && !json_is_object(dyn))
		rc = cr_err_set(err, CR_EINPUT, "send the report produced by 'corral worker'", "field 'dynamic' must be an object");
	if (!rc)
		rc = cr_json_arr(dyn, "gpus", &gpus, err);
	if (rc)
		return rc;
	if (!w->report_json || base != w->report_base || json_array_size(gpus) > w->gpu_count)
		return cr_err_set(err, CR_ECONFLICT, "send a full report; 'corral worker' does so by itself",
				  "light report for base %lld, but the server holds %s", base,
				  w->report_json ? "another base" : "no full report");
	size_t i;
	json_t *g;
	json_array_foreach(gpus, i, g) {
		if (!json_is_object(g))
			return cr_err_set(err, CR_EINPUT, "send GPU fields as objects", "dynamic.gpus[%zu] must be an object", i);
	}
	free(w->dynamic_json);
	w->dynamic_json = cr_json_dump(dyn);
	cr_report_merge(w->report, dyn); /* the parsed view follows, once */
	return 0;
}

static int accept_full(struct cr_worker *w, json_t *body, const char *raw, size_t len, struct cr_err *err)
{
	long long base = 0;
	int rc = check_report(body, err);
	if (!rc)
		rc = cr_json_int(body, "base", 0, INT64_MAX, &base, err);
	if (rc)
		return rc;
	if (len > MAX_REPORT)
		return cr_err_set(err, CR_ETOOBIG, "report fewer GPUs or notes", "status report is larger than 256 KiB");
	/* Kept as received (validated above): re-encoding would cost as much as parsing. */
	free(w->report_json);
	w->report_json = cr_xstrndup(raw, len);
	free(w->dynamic_json);
	w->dynamic_json = NULL;
	json_decref(w->report);
	w->report = json_incref(body); /* validated above; parsed once, here */
	w->report_base = base;
	w->gpu_count = json_array_size(json_object_get(body, "gpus"));
	w->report_dirty = true;
	return 0;
}

/* A check of w that starts failing, or that recovers, is an event (with
 * the check's message and fix). */
static void check_events(struct cr_app *app, struct cr_worker *w)
{
	json_t *checks = json_object_get(w->report, "checks"), *now_failing = json_object();
	size_t i;
	json_t *c;
	json_array_foreach(checks, i, c)
		if (!strcmp(cr_json_get_str(c, "level", ""), "fail"))
			json_object_set(now_failing, cr_json_get_str(c, "id", "?"), c);
	const char *id;
	json_object_foreach(now_failing, id, c)
		if (!json_object_get(w->failing_checks, id))
			cr_event(app, "worker.check_failed", w->name, json_pack("{s:s}", "check", id),
				 "worker '%s': check %s fails: %s%s%s", w->name, id, cr_json_get_str(c, "message", ""),
				 *cr_json_get_str(c, "fix", "") ? "; fix: " : "", cr_json_get_str(c, "fix", ""));
	json_object_foreach(w->failing_checks, id, c)
		if (!json_object_get(now_failing, id))
			cr_event(app, "worker.check_recovered", w->name, json_pack("{s:s}", "check", id),
				 "worker '%s': check %s passes again", w->name, id);
	json_decref(w->failing_checks);
	w->failing_checks = now_failing;
}

/* A status report taken: the worker is alive, its state judged again. */
static void seen(struct cr_app *app, struct cr_worker *w, int interval)
{
	w->status_interval_s = interval;
	w->last_seen_ms = cr_wall_ms();
	bool first = w->last_status_mono == 0;
	w->last_status_mono = cr_mono_ms();
	w->dirty = true;
	if (first) /* the first probe anywhere in one probe period: no burst */
		w->next_probe_mono = next_probe_time(app, w->last_status_mono) - (int64_t)app->cfg.probe_interval_s * 750;
	update_state(app, w, w->last_status_mono);
	check_events(app, w);
}

/* The report in body (raw: as sent) taken into w: light or full. */
static int take_report(struct cr_worker *w, json_t *body, const char *raw, size_t len, long long *interval,
		       struct cr_err *err)
{
	*interval = w->status_interval_s;
	if (cr_json_int(body, "status_interval_s", 1, 3600, interval, err))
		return -1;
	return json_object_get(body, "dynamic") ? accept_light(w, body, err) : accept_full(w, body, raw, len, err);
}

/* POST /api/workers/{id}/status: a follower checks the report against its
 * own copy of the worker's last full one (a light report whose base it
 * lacks is refused, so that the worker sends a full one) and leaves it to
 * the leader as mail. */
static void status(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_worker *w = cr_map_get(&app->workers, cr_req_principal(req)->worker_id);
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err);
	size_t len;
	const char *raw = cr_req_body(req, &len);
	long long interval;
	if (!body || take_report(w, body, raw, len, &interval, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	if (cr_app_follows(app)) {
		if (cr_workers_mail(app, w->id, "status", raw, len, &err)) {
			cr_reply_err(req, &err);
			return;
		}
		w->status_interval_s = (int)interval;
	} else {
		seen(app, w, (int)interval);
	}
	char skey[CR_HASH_HEX]; /* a worker registered before the server had one learns it here */
	cr_worker_server_key(app, w->id, skey);
	cr_reply_json(req, 200, json_pack("{s:s,s:I,s:s}", "state", cr_worker_state_name(w->state), "server_time_ms",
					   (json_int_t)cr_wall_ms(), "server_key", skey));
}

/* The leader: a status report a follower took. A light one whose base it
 * lacks (a report the follower took before this server led) still says the
 * worker is alive; the followers are told to ask it for a full one. */
static void mailed_status(struct cr_app *app, struct cr_worker *w, json_t *body, const char *raw)
{
	struct cr_err err = CR_ERR_INIT;
	long long interval;
	int rc = take_report(w, body, raw, strlen(raw), &interval, &err);
	if (rc == CR_ECONFLICT) {
		long long base = cr_json_get_int(body, "base", 0);
		if (cr_json_get_int(app->reports_wanted, w->id, -1) != base) {
			json_object_set_new(app->reports_wanted, w->id, json_integer(base));
			app->reports_wanted_dirty = true;
		}
	} else if (rc) {
		cr_warn("status report of worker '%s' taken by another server dropped: %s", w->name, err.message);
		return;
	} else if (!json_object_get(body, "dynamic") && json_object_get(app->reports_wanted, w->id)) {
		json_object_del(app->reports_wanted, w->id);
		app->reports_wanted_dirty = true;
	}
	seen(app, w, (int)interval);
}

/* ---- watch ---- */

static void watch_closed(struct cr_stream *s, void *arg)
{
	struct cr_worker *w = arg;
	if (w->watch == s)
		w->watch = NULL;
}

/* A stored watch payload ({"sources","snapshot"}) sent to w's stream. */
static void send_stored(struct cr_worker *w)
{
	json_t *p = w->watch && w->watch_stored ? json_loads(w->watch_stored, 0, NULL) : NULL;
	if (!p)
		return;
	char *a = cr_json_dump(json_object_get(p, "sources")), *b = cr_json_dump(json_object_get(p, "snapshot"));
	cr_stream_event(w->watch, "sources", a);
	cr_stream_event(w->watch, "snapshot", b);
	free(a);
	free(b);
	json_decref(p);
}

/* GET /api/workers/{id}/watch: on a follower, what the leader stored for
 * this worker (asked for by mail when none is stored yet), then each change
 * as the leader stores it. */
static void watch(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_worker *w = cr_map_get(&app->workers, cr_req_principal(req)->worker_id);
	if (w->watch)
		cr_stream_close(w->watch);
	w->watch = cr_stream_open(req, watch_closed, w);
	if (!cr_app_follows(app)) {
		cr_workers_push(app, w);
		return;
	}
	struct cr_err err = CR_ERR_INIT;
	if (w->watch_stored)
		send_stored(w);
	else if (cr_workers_mail(app, w->id, "watch", "{}", 2, &err))
		cr_warn("worker '%s' watches here, but the leader could not be asked for its instances (asked again "
			"when it reconnects): %s", w->name, err.message);
}

void cr_workers_push(struct cr_app *app, struct cr_worker *w)
{
	if (cr_app_follows(app) || (!w->watch && !app->lock))
		return;
	json_t *sources = cr_models_sources(app), *inst = cr_instances_for_worker(app, w->id);
	char *a = cr_json_dump(sources), *b = cr_json_dump(inst);
	if (w->watch) {
		cr_stream_event(w->watch, "sources", a);
		cr_stream_event(w->watch, "snapshot", b);
	}
	if (app->lock) { /* for a follower that holds the stream, now or after the worker moves */
		char *stored = cr_xasprintf("{\"sources\":%s,\"snapshot\":%s}", a, b);
		struct cr_err err = CR_ERR_INIT;
		if (w->watch_stored && !strcmp(stored, w->watch_stored))
			free(stored);
		else if (app->store->ops->watch_put(app->store, w->id, stored, &err) == 0) {
			free(w->watch_stored);
			w->watch_stored = stored;
		} else {
			cr_warn("instances for worker '%s' not stored for the other servers (stored at the next change): "
				"%s", w->name, err.message);
			free(stored);
		}
	}
	free(a);
	free(b);
	json_decref(sources);
	json_decref(inst);
}

/* ---- model files ---- */

/* Download milestones of a worker's new file report against its last one:
 * started, each quarter, done, failed. */
static void download_events(struct cr_app *app, struct cr_worker *w, json_t *before, json_t *after)
{
	const char *src;
	json_t *f;
	json_object_foreach(after, src, f) {
		json_t *dl = json_object_get(f, "download"), *old = json_object_get(json_object_get(before, src), "download");
		if (!dl)
			continue;
		const char *state = cr_json_get_str(dl, "state", ""), *was = cr_json_get_str(old, "state", "");
		double total = (double)cr_json_get_int(dl, "total", 0), bytes = (double)cr_json_get_int(dl, "bytes", 0);
		double before_bytes = (double)cr_json_get_int(old, "bytes", 0);
		int q = total > 0 ? (int)(bytes * 4 / total) : 0, q0 = total > 0 ? (int)(before_bytes * 4 / total) : 0;
		json_t *d = json_pack("{s:s,s:s,s:f,s:f}", "worker", w->name, "source", src, "bytes", bytes, "total", total);
		if (strcmp(state, was) != 0 && !strcmp(state, "error"))
			cr_event(app, "download.failed", src, d, "download of %s on %s failed: %s", src, w->name,
				 cr_json_get_str(dl, "message", "?"));
		else if (strcmp(state, was) != 0 && !strcmp(state, "done"))
			cr_event(app, "download.done", src, d, "download of %s on %s done (%.0f MiB)", src, w->name,
				 bytes / 1048576.0);
		else if (!strcmp(state, "downloading") && (strcmp(was, "downloading") != 0 || (q > q0 && q < 4)))
			cr_event(app, "download.progress", src, d, "download of %s on %s: %d%%", src, w->name,
				 strcmp(was, "downloading") != 0 && !q ? 0 : q * 25);
		else
			json_decref(d);
	}
}

/* body's files by source, or NULL with err set. */
static json_t *files_by_source(json_t *body, struct cr_err *err)
{
	json_t *files = NULL;
	if (cr_json_arr(body, "files", &files, err) != 0)
		return NULL;
	if (!files) {
		cr_err_set(err, CR_EINPUT, "send {\"files\":[...]}", "field 'files' is required");
		return NULL;
	}
	json_t *by_source = json_object();
	size_t i;
	json_t *f;
	json_array_foreach(files, i, f) {
		const char *src = cr_json_get_str(f, "source", NULL);
		if (!json_is_object(f) || !src || !*src) {
			json_decref(by_source);
			cr_err_set(err, CR_EINPUT, "update the worker", "every file report needs a 'source'");
			return NULL;
		}
		json_object_set(by_source, src, f);
	}
	return by_source;
}

bool cr_workers_report_stale(json_t *body, int64_t *last)
{
	int64_t at = cr_json_get_int(body, "sent_ms", 0);
	if (at && at < *last && *last - at < 10000)
		return true;
	if (at)
		*last = at;
	return false;
}

/* w's file report (body; by_source taken). */
static void take_files(struct cr_app *app, struct cr_worker *w, json_t *body, json_t *by_source)
{
	if (cr_workers_report_stale(body, &w->files_sent_ms)) {
		json_decref(by_source);
		return;
	}
	download_events(app, w, w->files, by_source);
	json_decref(w->files);
	w->files = by_source;
	if (json_is_array(json_object_get(body, "cache"))) {
		json_decref(w->cache);
		w->cache = json_incref(json_object_get(body, "cache"));
	}
	cr_instances_downloads(app, w); /* a failed download is its instances' error, with the cause */
	app->sched_dirty = true;
	cr_models_tick(app); /* a model waiting for this report is placed now, not at the next tick */
}

/* POST /api/workers/{id}/files {"files":[{"source", "exists", ...}]}: what the
 * worker found at each model source; replaces the previous report (a
 * follower checks it and leaves it to the leader as mail). */
static void files_report(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_worker *w = cr_map_get(&app->workers, cr_req_principal(req)->worker_id);
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err);
	json_t *by_source = body ? files_by_source(body, &err) : NULL;
	if (!by_source) {
		cr_reply_err(req, &err);
		return;
	}
	if (cr_app_follows(app)) {
		json_decref(by_source); /* checked; the leader reads it again from the mail */
		size_t len;
		const char *raw = cr_req_body(req, &len);
		if (cr_workers_mail(app, w->id, "files", raw, len, &err)) {
			cr_reply_err(req, &err);
			return;
		}
	} else {
		take_files(app, w, body, by_source);
	}
	cr_reply_json(req, 200, json_pack("{s:I}", "files", (json_int_t)json_array_size(json_object_get(body, "files"))));
}

/* ---- the workers' model caches ---- */

/* The models whose source is source (names, a new array). */
static json_t *models_using(struct cr_app *app, const char *source)
{
	json_t *names = json_array();
	size_t it = 0;
	void *v;
	while (source && *source && cr_map_next(&app->models, &it, NULL, &v)) {
		struct cr_model *m = v;
		if (!strcmp(cr_json_get_str(m->spec, "url", ""), source))
			json_array_append_new(names, json_string(m->name));
	}
	return names;
}

/* ?worker=W: *one gets it (NULL without the parameter). Returns nonzero
 * after answering 404 when there is no such worker. */
static int query_worker(struct cr_req *req, struct cr_worker **one)
{
	const char *only = cr_req_query(req, "worker");
	*one = only ? cr_worker_find(cr_req_app(req), only) : NULL;
	if (only && !*one) {
		cr_reply_error(req, CR_ENOTFOUND, "no such worker", "see 'corral workers'");
		return -1;
	}
	return 0;
}

/* GET /api/files[?worker=W]: each worker's cached model files with the
 * models that use them. */
static void list_files(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_worker *one;
	if (query_worker(req, &one))
		return;
	json_t *out = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (one && w != one)
			continue;
		json_t *files = json_array();
		json_int_t total = 0;
		size_t i;
		json_t *f;
		json_array_foreach(w->cache, i, f) {
			json_t *e = json_deep_copy(f);
			json_object_set_new(e, "models", models_using(app, cr_json_get_str(f, "source", "")));
			total += cr_json_get_int(f, "size", 0);
			json_array_append_new(files, e);
		}
		json_array_append_new(out, json_pack("{s:s,s:s,s:o,s:I}", "worker", w->name, "state",
						     cr_worker_state_name(w->state), "files", files, "total", total));
	}
	cr_reply_json(req, 200, json_pack("{s:o}", "workers", out));
}

/* DELETE /api/files?worker=W&file=NAME (admin): remove a cached file, or
 * without file every file no instance there uses, on one worker or all. A
 * file an instance on that worker uses is refused (delete the model first);
 * the workers remove the others unless an instance there still needs them
 * (checked again there), and report again. */
static void remove_files(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const char *file = cr_req_query(req, "file");
	struct cr_worker *one;
	if (query_worker(req, &one))
		return;
	json_t *asked = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (one && w != one)
			continue;
		json_t *names = json_array();
		size_t i;
		json_t *f;
		json_array_foreach(w->cache, i, f) {
			const char *name = cr_json_get_str(f, "file", "");
			if (file && strcmp(name, file) != 0)
				continue;
			/* in use: an instance on this worker needs it (the worker says so);
			 * a copy no instance here uses is only cache, fetched again if needed */
			bool used = json_is_true(json_object_get(f, "in_use"));
			json_t *users = models_using(app, cr_json_get_str(f, "source", ""));
			if (used && file) {
				char msg[400];
				snprintf(msg, sizeof(msg), "'%s' on %s is the file of model '%s', which runs there", name,
					 w->name, json_array_size(users) ? json_string_value(json_array_get(users, 0)) : "?");
				json_decref(users);
				json_decref(names);
				json_decref(asked);
				cr_reply_error(req, CR_ECONFLICT, msg, "delete the model first ('corral rm'), then the file");
				return;
			}
			if (!used)
				json_array_append_new(names, json_string(name));
			json_decref(users);
		}
		if (!json_array_size(names)) {
			json_decref(names);
			continue;
		}
		if (w->watch) {
			json_t *ev = json_pack("{s:O}", "remove", names);
			char *text = cr_json_dump(ev);
			cr_stream_event(w->watch, "cache", text);
			free(text);
			json_decref(ev);
		}
		json_array_append_new(asked, json_pack("{s:s,s:o,s:b}", "worker", w->name, "files", names, "sent",
						       w->watch != NULL));
	}
	if (file && !json_array_size(asked)) {
		json_decref(asked);
		cr_reply_error(req, CR_ENOTFOUND, "no worker has that cached file", "see 'corral files'");
		return;
	}
	cr_audit(app, req, NULL, "files.remove", file ? file : "unused", json_incref(asked));
	cr_reply_json(req, 202, json_pack("{s:o}", "removing", asked));
}

/* GET /api/workers/{id}/peers: the other workers this one should probe
 * (reachable or not, with an address), at most 64, by name. */
static void worker_peers(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const char *self = cr_req_principal(req)->worker_id;
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (!strcmp(w->id, self) || w->state == CR_W_NOT_READY || !w->address || !*w->address || !w->port)
			continue;
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:i}", "id", w->id, "name", w->name, "address",
						     w->address, "port", w->port));
	}
	while (json_array_size(arr) > 64)
		json_array_remove(arr, json_array_size(arr) - 1);
	cr_reply_json(req, 200, json_pack("{s:o}", "peers", arr));
}

/* GET /api/health: workers and instances by state, and every failing or
 * warning check with its fix; "status" is "ok", "degraded" (warnings, or
 * workers or instances not up) or "failing" (failed checks, instances in
 * error). */
static void health(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	json_t *workers = json_object(), *instances = json_object(), *problems = json_array();
	bool degraded = false, failing = false;
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		const char *st = cr_worker_state_name(w->state);
		json_object_set_new(workers, st, json_integer(cr_json_get_int(workers, st, 0) + 1));
		degraded |= w->state != CR_W_READY;
		json_t *o = worker_json(w);
		size_t i;
		json_t *c;
		json_array_foreach(json_object_get(o, "checks"), i, c) {
			const char *level = cr_json_get_str(c, "level", "pass");
			if (!strcmp(level, "pass"))
				continue;
			failing |= !strcmp(level, "fail");
			degraded = true;
			json_t *pr = json_deep_copy(c);
			json_object_set_new(pr, "worker", json_string(w->name));
			json_array_append_new(problems, pr);
		}
		json_decref(o);
	}
	it = 0;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		const char *name = cr_instance_state_name(i->state);
		json_object_set_new(instances, name, json_integer(cr_json_get_int(instances, name, 0) + 1));
		failing |= i->state == CR_I_ERROR || i->state == CR_I_CRASH_LOOP;
		degraded |= i->state != CR_I_RUNNING;
	}
	json_t *out = json_pack("{s:s,s:o,s:o,s:o,s:s}", "status", failing ? "failing" : degraded ? "degraded" : "ok",
				"workers", workers, "instances", instances, "checks", problems, "store",
				app->store->ops->name);
	if (app->lock) { /* several servers on one PostgreSQL: every one, and which leads */
		json_object_set_new(out, "servers", cr_pg_lock_servers(app->lock));
		json_object_set_new(out, "leading", json_boolean(app->leading));
	}
	cr_reply_json(req, 200, out);
}

/* ---- several servers: workers' mail and watch payloads ---- */

static void mail_release(struct cr_mail_rec *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(m[i].worker_id);
		free(m[i].kind);
		free(m[i].body);
	}
}

#define MAIL_PENDING_MAX 20000

void cr_workers_mail_flush(struct cr_app *app)
{
	if (!app->mail_n)
		return;
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->mail_put(app->store, app->mail, app->mail_n, &err))
		cr_warn("%zu status reports taken here not passed on to the leader (workers send theirs every "
			"interval): %s", app->mail_n, err.message);
	mail_release(app->mail, app->mail_n);
	app->mail_n = 0;
}

void cr_workers_mail_free(struct cr_app *app)
{
	mail_release(app->mail, app->mail_n);
	free(app->mail);
	app->mail = NULL;
	app->mail_n = app->mail_cap = 0;
}

int cr_workers_mail(struct cr_app *app, const char *worker_id, const char *kind, const char *body, size_t len,
		    struct cr_err *err)
{
	struct cr_mail_rec m = { 0, cr_wall_ms(), cr_xstrdup(worker_id), cr_xstrdup(kind), cr_xstrndup(body, len),
				 app->server_name };
	if (!strcmp(kind, "status")) { /* sent every interval: passed on in batches, 4 times a second */
		if (app->mail_n == app->mail_cap) {
			app->mail_cap = app->mail_cap ? app->mail_cap * 2 : 256;
			app->mail = cr_xrealloc(app->mail, app->mail_cap * sizeof(*app->mail));
		}
		app->mail[app->mail_n++] = m;
		if (app->mail_n >= MAIL_PENDING_MAX)
			cr_workers_mail_flush(app);
		return 0;
	}
	int rc = app->store->ops->mail_put(app->store, &m, 1, err);
	mail_release(&m, 1);
	if (rc && err) {
		char why[sizeof(err->message)];
		snprintf(why, sizeof(why), "%s", err->message);
		cr_err_set(err, CR_EUNAVAILABLE, "the worker sends it again by itself; if this lasts, check PostgreSQL",
			   "this server follows and keeps what workers send for the leader in the store, which failed: "
			   "%s", why);
	}
	return rc;
}

static void apply_mail(const struct cr_mail_rec *m, void *arg)
{
	struct cr_app *app = arg;
	json_t *body = json_loads(m->body, 0, NULL);
	struct cr_worker *w = cr_map_get(&app->workers, m->worker_id);
	if (body && !strcmp(m->kind, "register")) {
		mailed_registration(app, body);
	} else if (!body || !w) {
		/* a worker removed meanwhile; or what was checked before it was stored cannot be read back */
	} else if (!strcmp(m->kind, "status")) {
		mailed_status(app, w, body, m->body);
	} else if (!strcmp(m->kind, "instances")) {
		struct cr_err err = CR_ERR_INIT;
		if (cr_instances_take_report(app, w->id, body, &err))
			cr_warn("engine report of worker '%s' taken by another server dropped: %s", w->name, err.message);
	} else if (!strcmp(m->kind, "files")) {
		struct cr_err err = CR_ERR_INIT;
		json_t *by_source = files_by_source(body, &err);
		if (by_source)
			take_files(app, w, body, by_source);
	} else if (!strcmp(m->kind, "watch")) { /* stored again even when unchanged */
		free(w->watch_stored);
		w->watch_stored = NULL;
		cr_workers_push(app, w);
	}
	json_decref(body);
}

#define MAIL_BATCH 5000

void cr_workers_take_mail(struct cr_app *app)
{
	if (!app->lock || !app->leading)
		return;
	if (!app->reports_wanted)
		app->reports_wanted = json_object();
	cr_workers_mail_flush(app); /* what this server took while it followed */
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->mail_take(app->store, MAIL_BATCH, apply_mail, app, &err))
		cr_debug("workers' mail not read (read again in 250 ms): %s", err.message);
	if (!app->reports_wanted_dirty)
		return;
	char *text = cr_json_dump(app->reports_wanted);
	if (!app->store->ops->setting_put(app->store, "reports_wanted", text, &err))
		app->reports_wanted_dirty = false;
	free(text);
}

static void stored_watch(const struct cr_watch_rec *r, void *arg)
{
	struct cr_app *app = arg;
	if (r->seq > app->watch_seq)
		app->watch_seq = r->seq;
	struct cr_worker *w = cr_map_get(&app->workers, r->worker_id);
	if (!w)
		return;
	cr_str_replace(&w->watch_stored, r->body);
	send_stored(w);
}

void cr_workers_watch_poll(struct cr_app *app)
{
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->watch_list(app->store, app->watch_seq, stored_watch, app, &err))
		cr_debug("watch payloads not read (read again in 250 ms): %s", err.message);
}

void cr_workers_leader_changed(struct cr_app *app)
{
	size_t it = 0, n = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (w->watch) {
			cr_stream_close(w->watch);
			w->watch = NULL;
			n++;
		}
	}
	if (n)
		cr_info("a new leader: %zu workers that watch here connect again and report afresh", n);
}

int cr_workers_read_wanted(struct cr_app *app, struct cr_err *err)
{
	char *text = NULL;
	int rc = app->store->ops->setting_get(app->store, "reports_wanted", &text, err);
	if (rc == CR_ENOTFOUND) {
		*err = (struct cr_err)CR_ERR_INIT;
		return 0;
	}
	json_t *wanted = rc ? NULL : json_loads(text, 0, NULL);
	free(text);
	const char *id;
	json_t *base;
	json_object_foreach(wanted, id, base) { /* refused once: the next full report has a higher base */
		struct cr_worker *w = cr_map_get(&app->workers, id);
		if (w && w->report_base >= 0 && w->report_base <= json_integer_value(base))
			w->report_base = -1;
	}
	json_decref(wanted);
	return rc;
}

const struct cr_http_route cr_api_worker_routes[] = {
	{ CR_GET, "/api/health", CR_AUTH_USER, health },
	{ CR_GET, "/api/workers/{}/peers", CR_AUTH_WORKER, worker_peers },
	{ CR_POST, "/api/workers/register", CR_AUTH_NONE, register_worker },
	{ CR_GET, "/api/workers", CR_AUTH_USER, list_workers },
	{ CR_GET, "/api/workers/{}", CR_AUTH_USER, get_worker },
	{ CR_DELETE, "/api/workers/{}", CR_AUTH_ADMIN, delete_worker },
	{ CR_POST, "/api/workers/{}/cordon", CR_AUTH_ADMIN, cordon },
	{ CR_POST, "/api/workers/{}/uncordon", CR_AUTH_ADMIN, uncordon },
	{ CR_POST, "/api/workers/{}/drain", CR_AUTH_ADMIN, drain },
	{ CR_POST, "/api/workers/{}/status", CR_AUTH_WORKER, status },
	{ CR_GET, "/api/files", CR_AUTH_USER, list_files },
	{ CR_DELETE, "/api/files", CR_AUTH_ADMIN, remove_files },
	{ CR_GET, "/api/workers/{}/watch", CR_AUTH_WORKER, watch },
	{ CR_POST, "/api/workers/{}/files", CR_AUTH_WORKER, files_report },
	{ 0, NULL, 0, NULL },
};
