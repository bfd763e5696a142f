/* Instances: their state (derived from what their workers' engines report),
 * their JSON views, where their engines serve, and their logs. The
 * controller (models.c) decides which instances exist; this file keeps
 * each one's state and tells its workers (cr_workers_push). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/secret.h"
#include "base/util.h"
#include "checks/checks.h"
#include "http/fetch.h"
#include "store/store.h"

void cr_instance_free(struct cr_instance *i)
{
	if (!i)
		return;
	free(i->id);
	free(i->model_id);
	json_decref(i->placement);
	json_decref(i->members);
	free(i->endpoint);
	free(i->replace_why);
	free(i->probe_error);
	free(i->message);
	free(i);
}

bool cr_placement_has(json_t *placement, const char *worker_id)
{
	size_t k;
	json_t *w;
	json_array_foreach(json_object_get(placement, "workers"), k, w)
		if (!strcmp(cr_json_get_str(w, "id", ""), worker_id))
			return true;
	return false;
}

/* The other ready workers whose caches hold every file of the url source
 * src (none partial), as the downloading worker may fetch them instead of
 * the internet: [{"name", "base": "http://ADDRESS:PORT", "token"}], the
 * token good for that source on that peer only (a MAC under the key the
 * server gave the peer). NULL when none. */
static json_t *file_peers(struct cr_app *app, const char *worker_id, const char *src)
{
	json_t *out = NULL;
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (!strcmp(w->id, worker_id) || w->state != CR_W_READY || !w->address || !*w->address || w->port <= 0)
			continue;
		size_t k;
		json_t *e;
		int whole = 0, partial = 0;
		json_array_foreach(w->cache, k, e) {
			if (strcmp(cr_json_get_str(e, "source", ""), src) != 0)
				continue;
			if (json_is_true(json_object_get(e, "partial")))
				partial++;
			else
				whole++;
		}
		if (!whole || partial)
			continue;
		char key[CR_HASH_HEX], token[CR_HASH_HEX];
		cr_worker_server_key(app, w->id, key);
		char *msg = cr_xasprintf("cache:%s", src);
		cr_secret_mac(key, msg, token);
		free(msg);
		char *base = cr_xasprintf(strchr(w->address, ':') ? "http://[%s]:%d" : "http://%s:%d", w->address, w->port);
		if (!out)
			out = json_array();
		json_array_append_new(out, json_pack("{s:s,s:s,s:s}", "name", w->name, "base", base, "token", token));
		free(base);
		if (json_array_size(out) >= 3)
			break;
	}
	return out;
}

json_t *cr_instances_for_worker(struct cr_app *app, const char *worker_id)
{
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		if (!cr_placement_has(i->placement, worker_id))
			continue;
		json_t *o = cr_instance_json(app, i);
		json_t *key = json_object_get(i->placement, "engine_key");
		if (key) /* for its engines: what they ask of every request */
			json_object_set(o, "engine_key", key);
		const char *src = cr_json_get_str(o, "source", NULL);
		json_t *peers = src && !strncmp(src, "http", 4) ? file_peers(app, worker_id, src) : NULL;
		if (peers)
			json_object_set_new(o, "peers", peers);
		json_array_append_new(arr, o);
	}
	return json_pack("{s:o}", "instances", arr);
}

void cr_instances_push(struct cr_app *app, json_t *placement)
{
	size_t k;
	json_t *w;
	json_array_foreach(json_object_get(placement, "workers"), k, w) {
		struct cr_worker *x = cr_map_get(&app->workers, cr_json_get_str(w, "id", ""));
		if (x)
			cr_workers_push(app, x);
	}
}

void cr_instances_push_all(struct cr_app *app)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v))
		cr_workers_push(app, v);
}

/* The running RPC followers of a distributed instance, for its leader:
 * [{"worker","host","port"}], the host being the worker's address. */
static json_t *followers_of(struct cr_app *app, struct cr_instance *i)
{
	json_t *arr = json_array();
	const char *leader = cr_json_get_str(i->placement, "leader", "");
	size_t k;
	json_t *pw;
	json_array_foreach(json_object_get(i->placement, "workers"), k, pw) {
		const char *id = cr_json_get_str(pw, "id", "");
		json_t *r = json_object_get(i->members, id);
		struct cr_worker *w = cr_map_get(&app->workers, id);
		if (!strcmp(id, leader) || !w || !r || strcmp(cr_json_get_str(r, "state", ""), "running") != 0 ||
		    strcmp(cr_json_get_str(r, "role", ""), "follower") != 0)
			continue; /* RPC followers only */
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:I}", "id", id, "worker", w->name, "host",
						     w->address ? w->address : "", "port", (json_int_t)cr_json_get_int(r, "port", 0)));
	}
	return arr;
}

/* The Ray head of a vLLM-over-Ray instance once it runs: {"host","port"}, else null. */
static json_t *ray_head_of(struct cr_app *app, struct cr_instance *i)
{
	const char *leader = cr_json_get_str(i->placement, "leader", "");
	char key[200];
	snprintf(key, sizeof(key), "%s#ray", leader);
	json_t *r = json_object_get(i->members, key);
	struct cr_worker *w = cr_map_get(&app->workers, leader);
	if (!r || !w || strcmp(cr_json_get_str(r, "state", ""), "running") != 0)
		return json_null();
	return json_pack("{s:s,s:I}", "host", w->address ? w->address : "", "port", (json_int_t)cr_json_get_int(r, "port", 0));
}

/* vLLM's own multi-node launcher: where the leader's master listens, once
 * its engine reported the port: {"host","port"}, else null. */
static json_t *master_of(struct cr_app *app, struct cr_instance *i)
{
	const char *leader = cr_json_get_str(i->placement, "leader", "");
	json_t *r = json_object_get(i->members, leader);
	struct cr_worker *w = cr_map_get(&app->workers, leader);
	if (!r || !w || !cr_json_get_int(r, "master_port", 0))
		return json_null();
	return json_pack("{s:s,s:I}", "host", w->address ? w->address : "", "port",
			 (json_int_t)cr_json_get_int(r, "master_port", 0));
}

/* The spec i was built from: the one kept with it (a rolling update leaves
 * the old instances as they were), else its model's (m may be NULL). */
static json_t *built_spec(const struct cr_instance *i, const struct cr_model *m)
{
	json_t *kept = json_object_get(i->placement, "spec");
	return kept ? kept : m ? m->spec : NULL;
}

json_t *cr_instance_json(struct cr_app *app, struct cr_instance *i)
{
	struct cr_model *m = cr_map_get(&app->models, i->model_id);
	char created[40], updated[40];
	cr_time_format(i->created_ms, created, sizeof(created));
	cr_time_format(i->updated_ms, updated, sizeof(updated));
	json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:O,s:s,s:s}", "id", i->id, "model", m ? m->name : "", "model_id",
			      i->model_id, "state", cr_instance_state_name(i->state), "message", i->message, "placement", i->placement,
			      "created_at", created, "updated_at", updated);
	if (json_object_get(i->placement, "engine_key")) { /* the engines' secret is not for the API's readers */
		json_t *pl = json_copy(i->placement);
		json_object_del(pl, "engine_key");
		json_object_set_new(o, "placement", pl);
	}
	if (m) {
		json_t *spec = built_spec(i, m);
		json_object_set(o, "source", json_object_get(spec, "path") ? json_object_get(spec, "path")
									 : json_object_get(spec, "url"));
		json_t *sha = json_object_get(spec, "sha256");
		if (sha)
			json_object_set(o, "sha256", sha);
		/* from the hub's listing: a split GGUF's parts, a safetensors model's files */
		json_t *hub = json_object_get(m->spec, "hub");
		bool same = json_equal(json_object_get(m->spec, "url"), json_object_get(spec, "url"));
		if (same && json_object_get(hub, "parts_sha256"))
			json_object_set(o, "parts_sha256", json_object_get(hub, "parts_sha256"));
		if (same && json_object_get(hub, "files"))
			json_object_set(o, "files", json_object_get(hub, "files"));
		json_object_set(o, "engine_args", json_object_get(spec, "engine_args"));
		const char *url = cr_json_get_str(spec, "url", NULL);
		json_t *w0 = json_array_get(json_object_get(i->placement, "workers"), 0);
		struct cr_worker *w = url ? cr_map_get(&app->workers, cr_json_get_str(w0, "id", "")) : NULL;
		json_t *dl = w ? json_object_get(json_object_get(w->files, url), "download") : NULL;
		if (dl) /* the leader's download of the model, as it last reported */
			json_object_set(o, "download", dl);
	}
	json_object_set_new(o, "outdated", json_boolean(m && cr_instance_outdated(i, m)));
	json_object_set_new(o, "members", i->members ? json_incref(i->members) : json_object());
	json_object_set_new(o, "endpoint", i->endpoint ? json_string(i->endpoint) : json_null());
	json_object_set_new(o, "inflight", json_integer(i->inflight));
	json_object_set_new(o, "requests", json_integer(i->requests));
	json_object_set_new(o, "followers", followers_of(app, i));
	json_object_set_new(o, "ray_head", ray_head_of(app, i));
	json_object_set_new(o, "master", master_of(app, i));
	json_t *addrs = json_object();
	size_t k;
	json_t *pw;
	json_array_foreach(json_object_get(i->placement, "workers"), k, pw) {
		struct cr_worker *w = cr_map_get(&app->workers, cr_json_get_str(pw, "id", ""));
		if (w && w->address)
			json_object_set_new(addrs, w->id, json_string(w->address));
	}
	json_object_set_new(o, "addresses", addrs);
	return o;
}

int cr_instance_save(struct cr_app *app, struct cr_instance *i, struct cr_err *err)
{
	char *pj = cr_json_dump(i->placement);
	struct cr_instance_rec r = { i->id, i->model_id, pj, (char *)cr_instance_state_name(i->state), i->message, i->created_ms, i->updated_ms,
				     i->endpoint };
	int rc = app->store->ops->instance_put(app->store, &r, err);
	free(pj);
	return rc;
}

void cr_instance_set_state(struct cr_app *app, struct cr_instance *i, enum cr_instance_state state,
			       const char *msg)
{
	if (i->state == state && !strcmp(i->message, msg))
		return;
	if (state == CR_I_RUNNING && i->state != CR_I_RUNNING)
		app->sched_dirty = true; /* replaced instances may stop now (rolling update, drain) */
	if (state != i->state) {
		struct cr_model *m = cr_map_get(&app->models, i->model_id);
		char kind[40];
		snprintf(kind, sizeof(kind), "instance.%s", cr_instance_state_name(state));
		cr_event(app, kind, i->id, json_pack("{s:s,s:s}", "model", m ? m->name : "", "from",
						   cr_instance_state_name(i->state)),
			 "instance %s of '%s' is %s: %s", i->id, m ? m->name : "?", cr_instance_state_name(state), msg);
	}
	i->state = state;
	cr_str_replace(&i->message, msg);
	i->updated_ms = cr_wall_ms();
	struct cr_err err = CR_ERR_INIT;
	if (cr_instance_save(app, i, &err))
		cr_warn("instance %s: %s", i->id, err.message);
	cr_instances_push(app, i->placement);
}

void cr_instance_remove(struct cr_app *app, struct cr_instance *i, const char *why)
{
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->instance_del(app->store, i->id, &err)) {
		cr_warn("instance %s: %s", i->id, err.message);
		return;
	}
	cr_info("instance %s removed: %s", i->id, why);
	cr_event(app, "instance.removed", i->id, NULL, "instance %s removed: %s", i->id, why);
	cr_map_del(&app->instances, i->id);
	cr_instances_push(app, i->placement);
	cr_instance_free(i);
}

static void list_instances(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const char *model = cr_req_query(req, "model");
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		struct cr_model *m = cr_map_get(&app->models, i->model_id);
		if (model && (!m || strcmp(m->name, model) != 0))
			continue;
		json_array_append_new(arr, cr_instance_json(app, i));
	}
	cr_json_sort(arr, "model", "created_at");
	cr_reply_json(req, 200, json_pack("{s:o}", "instances", arr));
}

/* Where the instance's engine serves (NULL: it does not), kept in the store
 * so that a restarted server routes to it before its worker reports again. */
static void set_endpoint(struct cr_app *app, struct cr_instance *i, const char *ep)
{
	if ((!ep && !i->endpoint) || (ep && i->endpoint && !strcmp(ep, i->endpoint)))
		return;
	cr_str_replace(&i->endpoint, ep);
	struct cr_err err = CR_ERR_INIT;
	if (cr_instance_save(app, i, &err))
		cr_warn("instance %s: %s", i->id, err.message);
}

static const char *const instance_states[] = { "pending", "scheduled", "starting", "running", "error",
					       "restarting", "unreachable", "stopping", "crash_loop" };

const char *cr_instance_state_name(enum cr_instance_state s)
{
	return (unsigned)s < sizeof(instance_states) / sizeof(instance_states[0]) ? instance_states[s] : "?";
}

enum cr_instance_state cr_instance_state_parse(const char *name)
{
	for (size_t k = 0; name && k < sizeof(instance_states) / sizeof(instance_states[0]); k++)
		if (!strcmp(name, instance_states[k]))
			return (enum cr_instance_state)k;
	return CR_I_STARTING;
}

bool cr_instance_is_routable(const struct cr_instance *i)
{
	return i->endpoint && i->state != CR_I_ERROR && i->state != CR_I_CRASH_LOOP && i->state != CR_I_STOPPING;
}

/* True, with the cause in msg, when a worker of i failed to download its
 * url source: what the instance says, whichever of the worker's file and
 * engine reports came last. */
static bool download_failed(struct cr_app *app, struct cr_instance *i, char *msg, size_t n)
{
	struct cr_model *m = cr_map_get(&app->models, i->model_id);
	const char *url = cr_json_get_str(built_spec(i, m), "url", NULL);
	size_t k;
	json_t *pw;
	json_array_foreach(url ? json_object_get(i->placement, "workers") : NULL, k, pw) {
		struct cr_worker *w = cr_map_get(&app->workers, cr_json_get_str(pw, "id", ""));
		json_t *dl = w ? json_object_get(json_object_get(w->files, url), "download") : NULL;
		if (w && !strcmp(cr_json_get_str(dl, "state", ""), "error")) {
			snprintf(msg, n, "download failed on %s: %s", w->name, cr_json_get_str(dl, "message", "?"));
			return true;
		}
	}
	return false;
}

/* The instance's state from its members' engine reports: an error anywhere
 * is the instance's error; otherwise the leader's state. */
void cr_instance_derive_state(struct cr_app *app, struct cr_instance *i)
{
	if (i->retire_at)
		return; /* stopping: its engine's reports no longer change that */
	const char *leader = cr_json_get_str(i->placement, "leader", "");
	json_t *lr = json_object_get(i->members, leader);
	const char *wid;
	json_t *r;
	char msg[1200];
	json_object_foreach(i->members, wid, r) {
		enum cr_instance_state failed = cr_instance_state_parse(cr_json_get_str(r, "state", ""));
		if (failed == CR_I_RESTARTING || failed == CR_I_ERROR || failed == CR_I_CRASH_LOOP)
			cr_learn_oom(app, i, r); /* out of GPU memory: placed again with what it needed */
		if (failed != CR_I_ERROR && failed != CR_I_CRASH_LOOP)
			continue;
		struct cr_worker *w = cr_map_get(&app->workers, wid);
		const char *fix = cr_json_get_str(r, "fix", NULL);
		int len = snprintf(msg, sizeof(msg), "%s%s%s%s%s", strcmp(wid, leader) ? (w ? w->name : wid) : "",
				   strcmp(wid, leader) ? " (RPC follower): " : "", cr_json_get_str(r, "message", "engine failed"),
				   fix ? "; fix: " : "", fix ? fix : "");
		/* what the node's own checks say may be the cause (small /dev/shm, old driver, ...) */
		char hint[600];
		cr_checks_summary(json_object_get(w ? w->report : NULL, "checks"), CR_CHECK_WARN, hint, sizeof(hint));
		if (w && *hint && len > 0 && (size_t)len < sizeof(msg))
			snprintf(msg + len, sizeof(msg) - (size_t)len, " [node checks on %s: %s]", w->name, hint);
		set_endpoint(app, i, NULL);
		cr_instance_set_state(app, i, failed, msg);
		return;
	}
	if (strcmp(cr_json_get_str(lr, "state", ""), "running") != 0 && download_failed(app, i, msg, sizeof(msg))) {
		set_endpoint(app, i, NULL);
		cr_instance_set_state(app, i, CR_I_ERROR, msg);
		return;
	}
	if (!lr)
		return;
	const char *state = cr_json_get_str(lr, "state", "starting");
	struct cr_worker *w = cr_map_get(&app->workers, leader);
	size_t members = json_array_size(json_object_get(i->placement, "workers")), up = 0, k;
	json_t *pw;
	json_array_foreach(json_object_get(i->placement, "workers"), k, pw) { /* every member's processes */
		const char *id = cr_json_get_str(pw, "id", "");
		char key[200];
		snprintf(key, sizeof(key), "%s#ray", id);
		json_t *main_r = json_object_get(i->members, id), *ray_r = json_object_get(i->members, key);
		bool ok = (main_r || ray_r) && (!main_r || !strcmp(cr_json_get_str(main_r, "state", ""), "running")) &&
			  (!ray_r || !strcmp(cr_json_get_str(ray_r, "state", ""), "running"));
		up += ok;
	}
	if (!strcmp(state, "running") && up < members) {
		snprintf(msg, sizeof(msg), "the leader runs; %zu of %zu members are up", up, members);
		cr_instance_set_state(app, i, CR_I_STARTING, msg);
		return;
	}
	if (!strcmp(state, "starting") && i->state == CR_I_RUNNING && i->endpoint &&
	    strstr(cr_json_get_str(lr, "message", ""), "adopted")) /* a restarted worker checks the engine it */
		return; /* adopted, which ran and serves on meanwhile: it stays routable until the check says */
	if (!strcmp(state, "running") && w) {
		char *ep = cr_xasprintf("%s:%lld", w->address ? w->address : "127.0.0.1", cr_json_get_int(lr, "port", 0));
		set_endpoint(app, i, ep);
		free(ep);
	} else {
		set_endpoint(app, i, NULL);
	}
	if (!strcmp(state, "running") && i->probe_failures >= CR_E2E_FAILS) { /* runs, but does not answer right */
		snprintf(msg, sizeof(msg), "the end-to-end probe failed %d times in a row: %s; see 'corral logs %s'",
			 i->probe_failures, i->probe_error ? i->probe_error : "?", i->id);
		cr_instance_set_state(app, i, CR_I_ERROR, msg);
		return;
	}
	cr_instance_set_state(app, i, cr_instance_state_parse(state), cr_json_get_str(lr, "message", ""));
}

static int engines_list(json_t *body, json_t **list, struct cr_err *err)
{
	if (cr_json_arr(body, "instances", list, err))
		return -1;
	if (!*list)
		return cr_err_set(err, CR_EINPUT, "send {\"instances\":[...]}", "field 'instances' is required");
	return 0;
}

int cr_instances_take_report(struct cr_app *app, const char *wid, json_t *body, struct cr_err *err)
{
	json_t *list = NULL;
	if (engines_list(body, &list, err))
		return -1;
	struct cr_worker *w = cr_map_get(&app->workers, wid);
	if (w && cr_workers_report_stale(body, &w->engines_sent_ms))
		return 0;
	size_t k;
	json_t *r;
	json_array_foreach(list, k, r) {
		char id[200];
		snprintf(id, sizeof(id), "%s", cr_json_get_str(r, "id", ""));
		bool ray = strlen(id) > 4 && !strcmp(id + strlen(id) - 4, "#ray");
		if (ray)
			id[strlen(id) - 4] = '\0';
		struct cr_instance *i = cr_map_get(&app->instances, id);
		if (!i || !cr_placement_has(i->placement, wid))
			continue; /* an instance that was removed meanwhile: the worker stops it */
		if (!i->members)
			i->members = json_object();
		if (ray) { /* a Ray node of the instance: kept beside the worker's engine report */
			char key[200];
			snprintf(key, sizeof(key), "%s#ray", wid);
			json_t *old_head = ray_head_of(app, i);
			json_object_set(i->members, key, r);
			cr_instance_derive_state(app, i);
			json_t *new_head = ray_head_of(app, i);
			if (!json_equal(old_head, new_head))
				cr_instances_push(app, i->placement); /* followers learn where the head listens */
			json_decref(old_head);
			json_decref(new_head);
			continue;
		}
		json_t *old = json_pack("{s:o,s:o}", "f", followers_of(app, i), "m", master_of(app, i));
		json_object_set(i->members, wid, r);
		cr_instance_derive_state(app, i);
		json_t *now = json_pack("{s:o,s:o}", "f", followers_of(app, i), "m", master_of(app, i));
		if (!json_equal(old, now)) /* the leader learns where its followers listen, or they where it does */
			cr_instances_push(app, i->placement);
		json_decref(old);
		json_decref(now);
	}
	return 0;
}

/* POST /api/workers/{id}/instances {"instances":[...]}: the worker's engines
 * (a follower checks them and leaves them to the leader as mail). */
static void engines_report(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const char *wid = cr_req_principal(req)->worker_id;
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err), *list = NULL;
	int rc = -1;
	if (body && cr_app_follows(app)) {
		size_t len;
		const char *raw = cr_req_body(req, &len);
		rc = engines_list(body, &list, &err) || cr_workers_mail(app, wid, "instances", raw, len, &err);
	} else if (body) {
		rc = cr_instances_take_report(app, wid, body, &err);
	}
	if (rc) {
		cr_reply_err(req, &err);
		return;
	}
	list = json_object_get(body, "instances");
	cr_reply_json(req, 200, json_pack("{s:I}", "instances", (json_int_t)json_array_size(list)));
}

static void log_fetched(int status, const char *body, size_t len, const char *error, void *arg)
{
	struct cr_req *req = arg;
	if (status == 0) {
		char msg[300];
		snprintf(msg, sizeof(msg), "the worker did not answer: %s", error);
		cr_reply_error(req, CR_EUPSTREAM, msg, "check the worker with 'corral workers'");
		return;
	}
	struct cr_err err = CR_ERR_INIT;
	json_t *j = cr_json_parse_object(body, len, &err);
	if (!j) {
		cr_reply_error(req, CR_EUPSTREAM, "the worker answered something that is not JSON", "update the worker");
		return;
	}
	cr_reply_json(req, status, j);
}

/* GET /api/instances/{id}/logs?offset=N|tail=LINES[&worker=NAME]: the
 * engine log of an instance (its leader's by default), from its worker. */
static void instance_logs(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const char *which = cr_req_param(req, 0);
	struct cr_instance *i = cr_map_get(&app->instances, which);
	struct cr_model *m = i ? NULL : cr_cluster_model(app, which);
	if (m) { /* a model's name: its instance, when it has one */
		char ids[400] = "";
		size_t len = 0, n = 0, it = 0;
		struct cr_instance *x;
		while (cr_cluster_next_instance(app, &it, &x))
			if (!strcmp(x->model_id, m->id)) {
				i = x;
				n++;
				len += (size_t)snprintf(ids + len, len < sizeof(ids) ? sizeof(ids) - len : 0, "%s%s",
							len ? ", " : "", x->id);
			}
		if (n > 1) {
			char msg[600];
			snprintf(msg, sizeof(msg), "model '%s' has %zu instances: %s", m->name, n, ids);
			cr_reply_error(req, CR_ECONFLICT, msg, "name one of them: corral logs INSTANCE");
			return;
		}
	}
	if (!i) {
		cr_reply_error(req, CR_ENOTFOUND, m ? "that model has no instance" : "no such instance or model",
			       "list instances with 'corral instances'");
		return;
	}
	const char *want = cr_req_query(req, "worker");
	struct cr_worker *w = NULL;
	size_t k;
	json_t *pw;
	json_array_foreach(json_object_get(i->placement, "workers"), k, pw) {
		struct cr_worker *x = cr_map_get(&app->workers, cr_json_get_str(pw, "id", ""));
		if (x && (want ? !strcmp(x->name, want) : !strcmp(x->id, cr_json_get_str(i->placement, "leader", ""))))
			w = x;
	}
	if (!w) {
		cr_reply_error(req, CR_ENOTFOUND, "that worker is not part of this instance", "see 'corral instances'");
		return;
	}
	const char *off = cr_req_query(req, "offset"), *tail = cr_req_query(req, "tail");
	long long n;
	char *path = off && cr_parse_int(off, 0, 1LL << 50, &n) ? cr_xasprintf("/instances/%s/log?offset=%lld", i->id, n)
		     : cr_xasprintf("/instances/%s/log?tail=%lld", i->id,
				    tail && cr_parse_int(tail, 0, 100000, &n) ? n : 100LL);
	char skey[CR_HASH_HEX]; /* the worker's own key from the server, not the cluster token every node has */
	cr_worker_server_key(app, w->id, skey);
	cr_http_fetch(app->base, w->address ? w->address : "127.0.0.1", w->port, path, skey, 10,
		      log_fetched, req);
	free(path);
}

const struct cr_http_route cr_api_instance_routes[] = {
	{ CR_GET, "/api/instances/{}/logs", CR_AUTH_USER, instance_logs },
	{ CR_POST, "/api/workers/{}/instances", CR_AUTH_WORKER, engines_report },
	{ CR_GET, "/api/instances", CR_AUTH_USER, list_instances },
	{ 0, NULL, 0, NULL },
};

bool cr_instance_outdated(const struct cr_instance *i, const struct cr_model *m)
{
	json_t *built = json_object_get(i->placement, "spec");
	return built && !json_equal(built, m->built);
}

struct cr_instance *cr_cluster_instance(struct cr_app *app, const char *id)
{
	return cr_map_get(&app->instances, id);
}

void cr_cluster_request_done(struct cr_app *app, struct cr_instance *i)
{
	if (i->inflight > 0)
		i->inflight--;
	if (i->retire_at && !i->inflight)
		app->sched_dirty = true; /* its last request ended: it stops at the next tick */
}

bool cr_cluster_next_instance(struct cr_app *app, size_t *it, struct cr_instance **i)
{
	void *v;
	if (!cr_map_next(&app->instances, it, NULL, &v))
		return false;
	*i = v;
	return true;
}

/* How bad a state is for a model's health: a failure above a lost worker
 * above one on its way above one that runs. */
static int badness(enum cr_instance_state s)
{
	switch (s) {
	case CR_I_ERROR: case CR_I_CRASH_LOOP: return 5;
	case CR_I_UNREACHABLE: return 4;
	case CR_I_RESTARTING: return 3;
	case CR_I_STOPPING: return 2;
	case CR_I_PENDING: case CR_I_SCHEDULED: case CR_I_STARTING: return 1;
	case CR_I_RUNNING: return 0;
	}
	return 1;
}

const struct cr_instance *cr_instances_worst(struct cr_app *app, const char *model_id)
{
	const struct cr_instance *worst = NULL;
	size_t it = 0;
	struct cr_instance *i;
	while (cr_cluster_next_instance(app, &it, &i))
		if (!strcmp(i->model_id, model_id) && (!worst || badness(i->state) > badness(worst->state)))
			worst = i;
	return worst && worst->state != CR_I_RUNNING ? worst : NULL;
}

void cr_instances_downloads(struct cr_app *app, struct cr_worker *w)
{
	size_t it = 0;
	struct cr_instance *i;
	while (cr_cluster_next_instance(app, &it, &i))
		if (i->state != CR_I_RUNNING && cr_placement_has(i->placement, w->id))
			cr_instance_derive_state(app, i);
}
