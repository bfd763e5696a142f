/* Server application lifecycle: open the store, bootstrap, load state, run
 * the periodic timers (liveness, flush, keepalive), serve /healthz. */
#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/internal.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "store/store.h"

void cr_app_config_defaults(struct cr_app_config *c)
{
	memset(c, 0, sizeof(*c));
	c->probe_interval_s = 10;
	c->probe_timeout_s = 3;
	c->flush_interval_s = 30;
	c->usage_interval_s = 1;
	c->audit_days = 90;
	c->events_days = 7;
	c->keepalive_s = 15;
	c->missed_status_limit = 3;
	c->session_ttl_s = 7 * 24 * 3600;
	c->max_body = 1 << 20;
	c->max_headers = 16 << 10;
	c->header_timeout_s = 10;
	c->body_timeout_s = 60;
	c->reschedule_grace_s = 300;
	c->gpu_reserve = 512ull << 20;
	c->ram_reserve = 1ull << 30;
	c->health_probe_interval_s = 30;
	c->rtt_limit_tp_ms = 2;
	c->rtt_limit_rpc_ms = 20;
}

static void healthz(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	/* "leading": a load balancer may send what only the leader serves (changes to workers) there */
	cr_reply_json(req, 200, json_pack("{s:s,s:s,s:b}", "status", "ok", "role", "server", "leading", app->leading));
}

static const struct cr_http_route app_routes[] = {
	{ CR_GET, "/healthz", CR_AUTH_NONE, healthz },
	{ 0, NULL, 0, NULL },
};

#define LOCK_RETRY_MS 3000 /* how often a server that lost the lock asks for it again */
#define SYNC_MS 1000        /* how often accounts (and a follower's models and instances) are read back */
#define SYNC_WORKERS_MS 5000 /* a follower's view of the workers is read again when older than this */
#define MISS_SYNC_MS 250    /* reads for unknown keys or sessions, at most this often */
#define FOLLOWER_POLL_MS 250 /* how often a follower asks for the lock */

/* The server that leads now, as the servers list each other ("another
 * server" when none is seen). Caller frees. */
static char *leader_name(struct cr_app *app)
{
	json_t *servers = cr_pg_lock_servers(app->lock);
	char *name = NULL;
	size_t i;
	json_t *v;
	json_array_foreach(servers, i, v)
		if (!name && json_is_true(json_object_get(v, "leader")))
			name = cr_xstrdup(cr_json_get_str(v, "name", "?"));
	json_decref(servers);
	return name ? name : cr_xstrdup("another server");
}

/* What other servers wrote, read back: accounts and models (every server
 * may change them); instances on a follower (the leader's own). */
static int sync_all(struct cr_app *app, struct cr_err *err)
{
	int rc = cr_auth_sync(app, err);
	if (!rc)
		rc = cr_keys_sync(app, err);
	if (!rc)
		rc = cr_models_sync(app, err);
	if (!rc && !app->leading)
		rc = cr_models_read_summary(app, err);
	return rc;
}

static void sync_tick(struct cr_app *app)
{
	int64_t now = cr_mono_ms();
	if (!app->lock || now - app->synced_ms < SYNC_MS - 100)
		return;
	app->synced_ms = now;
	struct cr_err err = CR_ERR_INIT;
	bool failed = sync_all(app, &err) != 0;
	if (!failed && cr_app_follows(app))
		failed = cr_workers_read_wanted(app, &err) != 0;
	long long epoch = 0;
	if (!failed && cr_app_follows(app) && !cr_pg_lock_epoch(app->lock, false, &epoch, &err)) {
		if (app->seen_epoch && epoch != app->seen_epoch)
			cr_workers_leader_changed(app);
		app->seen_epoch = epoch;
	}
	if (app->leading)
		cr_models_share_summary(app);
	cr_events_poll(app);
	if (failed && !app->sync_failing)
		cr_warn("cannot read what the other servers wrote (serving what this one knows; tried every second): %s",
			err.message);
	else if (!failed && app->sync_failing)
		cr_info("reading what the other servers write again");
	app->sync_failing = failed;
}

bool cr_app_follows(const struct cr_app *app)
{
	return app->lock && !app->leading && !app->led;
}

bool cr_app_sync_worker_on_miss(struct cr_app *app, const char *id)
{
	return cr_app_follows(app) && id && cr_workers_sync_one(app, id, NULL) == 0;
}

bool cr_app_sync_on_miss(struct cr_app *app, bool limited)
{
	int64_t now = cr_mono_ms();
	if (!app->lock || (limited && now - app->miss_synced_ms < MISS_SYNC_MS))
		return false;
	app->miss_synced_ms = now;
	return cr_auth_sync(app, NULL) == 0 && cr_keys_sync(app, NULL) == 0;
}

/* A follower took the lock: the state as stored becomes this server's to
 * lead (accounts, models, instances, workers' identities); workers report to
 * it as they fail over, and their instances keep their stored state until
 * they do, as after a restart. */
static int take_over(struct cr_app *app, struct cr_err *err)
{
	long long epoch = 0;
	int rc = cr_pg_lock_epoch(app->lock, true, &epoch, err);
	if (!rc)
		rc = sync_all(app, err); /* still a follower's read: models and instances too */
	if (!rc)
		rc = cr_workers_sync(app, false, err);
	if (rc)
		return rc;
	cr_workers_leader_changed(app); /* its engine reports went to the old leader: sent again */
	int64_t now = cr_mono_ms();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		w->state = CR_W_NOT_READY;
		w->state_since_mono = now;
		cr_str_replace(&w->state_message, "waiting for a status report since this server took the lead");
	}
	app->started_mono = now;
	app->sched_dirty = true;
	app->leading = app->led = true;
	cr_info("leading the servers on this PostgreSQL now (leader epoch %lld)", epoch);
	cr_event(app, "server.leading", app->server_name, NULL, "server %s leads now (leader epoch %lld)",
		 app->server_name, epoch);
	return 0;
}

/* Whether this server does the leader's work now. With several servers on
 * one PostgreSQL, a follower asks for the lock 4 times a second (on_lock_poll)
 * and takes over when it gets it. A leader that loses the lock stops that work at once (the
 * controller, the scheduler, the periodic jobs; /v1 and reads go on from
 * memory); taken back with no other leader in between, the work resumes; if
 * another server led meanwhile, this one's memory is behind it: it exits
 * (status 75) for its supervisor to start it again, as a follower. */
static bool lead(struct cr_app *app)
{
	if (!app->lock)
		return true;
	if (app->leading) {
		if (cr_pg_lock_held(app->lock))
			return true;
		app->leading = false;
		cr_error("lost the leader lock (its PostgreSQL connection ended): leader work stops now; /v1 and reads go on "
			 "from memory; the lock is asked for again every %d s", LOCK_RETRY_MS / 1000);
		cr_event(app, "server.lost_lead", app->server_name, NULL, "server %s lost the leader lock", app->server_name);
		return false;
	}
	/* asking connects first, on the event loop: a PostgreSQL that does not
	 * answer at all is asked less and less often, up to every 12 s */
	int64_t now = cr_mono_ms(), wait = app->led ? LOCK_RETRY_MS : FOLLOWER_POLL_MS - 50;
	for (int k = 0; k < app->lock_fails && wait < 12000; k++)
		wait *= 2;
	if (now - app->lock_tried_ms < (wait < 12000 ? wait : 12000))
		return false;
	app->lock_tried_ms = now;
	bool got = false;
	long long epoch = 0;
	struct cr_err err = CR_ERR_INIT;
	if (cr_pg_lock_try(app->lock, &got, &err)) {
		app->lock_fails++;
		return false;
	}
	app->lock_fails = 0;
	if (!got && !app->led)
		return false;
	if (!app->led) {
		if (take_over(app, &err) == 0)
			return true;
		cr_error("took the leader lock but could not read the state to lead: %s; leaving the lead to another "
			 "server", err.message);
		cr_pg_lock_release(app->lock);
		return false;
	}
	if (cr_pg_lock_epoch(app->lock, false, &epoch, &err))
		return false;
	if (epoch != cr_pg_lock_my_epoch(app->lock)) {
		cr_error("another server %s while this one had lost the lock (epoch %lld, ours %lld): exiting so that "
			 "a restart loads the current state, as a follower", got ? "led" : "leads", epoch,
			 cr_pg_lock_my_epoch(app->lock));
		cr_usage_flush(app, NULL);
		exit(75);
	}
	if (!got) /* the lock is held by a server that has not bumped the epoch yet */
		return false;
	app->leading = true;
	cr_info("leading again (no other server led meanwhile)");
	return true;
}

/* Several servers: what a follower does not serve: changes to workers,
 * instances, cached files and the token (models, accounts, reads, /v1 and
 * workers' own routes are served by every server). */
static bool leader_only(const struct cr_http_route *r)
{
	static const char *const prefixes[] = { "/api/workers", "/api/instances", "/api/files", "/api/token" };
	/* workers' own routes are served everywhere: reports become mail for the leader */
	if (r->auth == CR_AUTH_WORKER || !strcmp(r->pattern, "/api/workers/register"))
		return false;
	if (r->method == CR_GET)
		return false;
	for (size_t k = 0; k < sizeof(prefixes) / sizeof(prefixes[0]); k++)
		if (!strncmp(r->pattern, prefixes[k], strlen(prefixes[k])))
			return true;
	return false;
}

/* Routes that show workers: a follower reads their stored reports first
 * when what it has is older than SYNC_WORKERS_MS (only when asked: at 10,000
 * workers a read is tens of megabytes). */
static bool shows_workers(const struct cr_http_route *r)
{
	static const char *const prefixes[] = { "/api/workers", "/api/health", "/api/files", "/metrics", "/api/models/plan" };
	if (r->auth == CR_AUTH_WORKER) /* of the workers' own routes, the peers they probe */
		return strstr(r->pattern, "/peers") != NULL;
	for (size_t k = 0; k < sizeof(prefixes) / sizeof(prefixes[0]); k++)
		if (!strncmp(r->pattern, prefixes[k], strlen(prefixes[k])))
			return true;
	return false;
}

static int follower_guard(struct cr_req *req, const struct cr_http_route *r, struct cr_err *err)
{
	struct cr_app *app = cr_req_app(req);
	/* a leader that lost its lock keeps its workers' reports until it gets
	 * the lock back, or learns that another server leads (lead()) */
	if (!app->lock || app->leading || app->led)
		return 0;
	if (!leader_only(r)) {
		int64_t now = cr_mono_ms();
		if (shows_workers(r) && now - app->synced_workers_ms >= SYNC_WORKERS_MS) {
			app->synced_workers_ms = now;
			struct cr_err e = CR_ERR_INIT;
			if (cr_workers_sync(app, true, &e))
				cr_warn("workers' reports not read (showing what this server last read): %s", e.message);
		}
		return 0;
	}
	int64_t now = cr_mono_ms();
	if (!app->leader_name || now - app->leader_named_ms >= 1000) { /* asked at most once a second, whatever comes */
		free(app->leader_name);
		app->leader_name = leader_name(app);
		app->leader_named_ms = now;
	}
	const char *leader = app->leader_name;
	int rc = cr_err_set(err, CR_ENOTLEADER,
			    "send it to the leader, or list every server in --server-url URL1,URL2,... (the CLI moves "
			    "on to the next)",
			    "this server (%s) follows; only the leader (%s) changes workers, instances, files and the "
			    "token", app->server_name, leader);
	return rc;
}

/* Usage counts to the store every every_ms: a kill -9 loses at most that
 * much of them. */
static void flush_usage(struct cr_app *app, int64_t every_ms)
{
	int64_t now = cr_mono_ms();
	if (now - app->usage_flushed_ms < every_ms - 100)
		return;
	app->usage_flushed_ms = now;
	struct cr_err err = CR_ERR_INIT;
	int64_t t0 = cr_mono_ns();
	bool failed = cr_usage_flush(app, &err) != 0;
	cr_metrics_flush(app, 1, t0);
	if (failed && !app->usage_failing)
		cr_warn("usage not saved yet (kept in memory, retried every second): %s", err.message);
	else if (!failed && app->usage_failing)
		cr_info("usage saved again");
	app->usage_failing = failed;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct cr_app *app = arg;
	bool leading = lead(app);
	sync_tick(app);
	if (leading) {
		cr_workers_tick(app);
		cr_models_tick(app);
		cr_learn_tick(app);
	}
	if (!app->lock)
		flush_usage(app, (int64_t)app->cfg.usage_interval_s * 1000);
}

static void on_lock_poll(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct cr_app *app = arg;
	if (!app->leading && !app->led && lead(app)) /* a follower that just took over: its first tick now */
		event_active(app->tick, EV_TIMEOUT, 0);
	if (app->leading) /* what workers sent the followers */
		cr_workers_take_mail(app);
	else if (cr_app_follows(app)) { /* workers' status reports for the leader; what it sends them */
		cr_workers_mail_flush(app);
		cr_workers_watch_poll(app);
	}
	/* several servers behind one name: each writes its usage counts 4 times a
	 * second, so that a killed one takes less of them with it */
	int64_t every = (int64_t)app->cfg.usage_interval_s * 1000;
	flush_usage(app, every < FOLLOWER_POLL_MS + 100 ? every : FOLLOWER_POLL_MS + 100);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct cr_app *app = arg;
	int64_t t0 = cr_mono_ns();
	cr_workers_flush(app);
	cr_metrics_flush(app, 0, t0);
	if (lead(app) && cr_mono_ms() - app->audit_trimmed_ms >= 3600000) { /* the audit trail, hourly (and at the first flush) */
		app->audit_trimmed_ms = cr_mono_ms();
		cr_audit_trim(app);
		cr_events_trim(app);
	}
}

static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	cr_workers_keepalive(arg);
	cr_events_keepalive(arg);
}

static struct event *every(struct cr_app *app, int seconds, event_callback_fn cb)
{
	struct event *ev = event_new(app->base, -1, EV_PERSIST, cb, app);
	struct timeval tv = { seconds, 0 };
	event_add(ev, &tv);
	return ev;
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* A data dir that was initialised (its token or first admin password is
 * there) but whose store is missing or empty lost its state: starting would
 * make a new admin, forget every user, key and model, and then stop the
 * workers' engines. Only a data dir with no prior state is initialised. */
static int check_prior_state(const char *dir, const char *db, struct cr_err *err)
{
	char *wal = cr_xasprintf("%s-wal", db);
	char *token = cr_xasprintf("%s/token", dir);
	char *pw = cr_xasprintf("%s/initial_admin_password", dir);
	bool has_state = file_size(db) > 0 || file_size(wal) > 0;
	bool initialised = file_size(token) >= 0 || file_size(pw) >= 0;
	int rc = 0;
	if (!has_state && initialised)
		rc = cr_err_set(err, -EIO,
				"restore corral.db (with its -wal file) from a backup; to start over with a new admin "
				"and no users, keys or models, move the data directory away",
				"the store '%s' is %s, but this data directory was set up before ('%s' exists): "
				"refusing to start with empty state",
				db, file_size(db) < 0 ? "missing" : "empty", file_size(token) >= 0 ? token : pw);
	free(wal);
	free(token);
	free(pw);
	return rc;
}

int cr_app_open(struct event_base *base, const struct cr_app_config *cfg, struct cr_app **out, struct cr_err *err)
{
	struct cr_app *app = cr_xcalloc(1, sizeof(*app));
	app->base = base;
	app->cfg = *cfg;
	app->lock = cfg->lock; /* ours from here on, freed with the app */
	app->leading = app->led = !app->lock || cr_pg_lock_held(app->lock); /* a follower otherwise */
	app->server_name = cr_xstrdup(app->lock ? cr_pg_lock_name(app->lock) : "");
	app->data_dir = cr_xstrdup(cfg->data_dir);
	app->cfg.data_dir = app->data_dir;
	app->cfg.cluster_token = NULL;
	app->started_mono = cr_mono_ms();
	cr_metrics_init(app);
	int rc = cr_mkdir_p(app->data_dir, 0700, err);
	if (rc)
		goto fail;
	if (cfg->store) {
		rc = cr_store_open_pg(cfg->store, &app->store, err);
	} else {
		char *db = cr_xasprintf("%s/corral.db", app->data_dir);
		rc = check_prior_state(app->data_dir, db, err);
		if (!rc)
			rc = cr_store_open_sqlite(db, &app->store, err);
		free(db);
	}
	if (!rc && app->lock && app->leading) { /* a new leader: the epoch says so to one that had lost the lock */
		long long epoch = 0;
		rc = cr_pg_lock_epoch(app->lock, true, &epoch, err);
		if (!rc)
			cr_info("leading the servers on this PostgreSQL (leader epoch %lld)", epoch);
	} else if (!rc && app->lock) {
		char *leader = leader_name(app);
		cr_info("following %s: serving /v1 and /api from the shared state; this server leads when it ends",
			leader);
		free(leader);
	}
	if (rc)
		goto fail;
	if (cfg->cluster_token) {
		app->cluster_token = cr_xstrdup(cfg->cluster_token);
		app->token_from_flag = true;
	}
	rc = cr_auth_bootstrap(app, err);
	if (!rc)
		rc = cr_workers_load(app, err);
	if (!rc)
		rc = cr_models_load(app, err);
	if (!rc)
		cr_learn_load(app);
	if (!rc)
		rc = cr_keys_load(app, err);
	if (rc)
		goto fail;
	struct cr_http_limits limits;
	cr_http_limits_defaults(&limits);
	limits.max_body = cfg->max_body;
	limits.max_headers = cfg->max_headers;
	limits.header_timeout_s = cfg->header_timeout_s;
	limits.body_timeout_s = cfg->body_timeout_s;
	if (cfg->max_connections > 0)
		limits.max_connections = cfg->max_connections;
	app->http = cr_http_server_new(base, &limits, cr_auth_check, app);
	cr_http_server_set_guard(app->http, follower_guard);
	cr_http_server_add_routes(app->http, app_routes);
	cr_http_server_add_routes(app->http, cr_api_auth_routes);
	cr_http_server_add_routes(app->http, cr_api_worker_routes);
	cr_http_server_add_routes(app->http, cr_api_model_routes);
	cr_http_server_add_routes(app->http, cr_api_instance_routes);
	cr_http_server_add_routes(app->http, cr_api_key_routes);
	cr_http_server_add_routes(app->http, cr_api_usage_routes);
	cr_http_server_add_routes(app->http, cr_api_metrics_routes);
	cr_http_server_add_routes(app->http, cr_api_event_routes);
	cr_http_server_add_routes(app->http, cr_api_learn_routes);
	cr_http_server_add_routes(app->http, cr_api_audit_routes);
	app->tick = every(app, 1, on_tick);
	if (app->cfg.flush_interval_s <= 0)
		app->cfg.flush_interval_s = 30;
	if (app->lock && app->cfg.flush_interval_s > SYNC_WORKERS_MS / 1000)
		app->cfg.flush_interval_s = SYNC_WORKERS_MS / 1000; /* what followers show of the workers is this fresh */
	app->flush = every(app, app->cfg.flush_interval_s, on_flush);
	app->keepalive = every(app, cfg->keepalive_s > 0 ? cfg->keepalive_s : 15, on_keepalive);
	if (app->lock) {
		app->lock_poll = event_new(base, -1, EV_PERSIST, on_lock_poll, app);
		struct timeval tv = { 0, FOLLOWER_POLL_MS * 1000 };
		event_add(app->lock_poll, &tv);
	}
	*out = app;
	return 0;
fail:
	cr_app_free(app);
	return rc;
}

int cr_app_listen(struct cr_app *app, const char *host, int port, int *bound, struct cr_err *err)
{
	return cr_http_server_listen(app->http, host, port, bound, err);
}

struct cr_http_server *cr_app_http(struct cr_app *app)
{
	return app->http;
}

const char *cr_app_cluster_token(const struct cr_app *app)
{
	return app->cluster_token;
}

void cr_app_free(struct cr_app *app)
{
	if (!app)
		return;
	if (app->store) {
		struct cr_err err = CR_ERR_INIT;
		cr_workers_flush(app);
		if (cr_usage_flush(app, &err))
			cr_warn("usage of the last %d s is lost: %s", app->cfg.usage_interval_s, err.message);
	}
	cr_pg_lock_free(app->lock); /* last: a follower leads once the state is written */
	if (app->tick)
		event_free(app->tick);
	if (app->flush)
		event_free(app->flush);
	if (app->keepalive)
		event_free(app->keepalive);
	if (app->lock_poll)
		event_free(app->lock_poll);
	cr_hub_free_all(app); /* lookups in flight finish first */
	cr_usage_free_all(app);
	cr_keys_free_all(app);
	cr_models_free_all(app);
	cr_learn_free(app);
	cr_workers_free_all(app);
	cr_events_free_all(app);
	/* Let the ends of closed watch streams go out, so that evhttp frees
	 * their requests before the server itself is freed. */
	for (int i = 0; i < 3 && app->http; i++)
		event_base_loop(app->base, EVLOOP_NONBLOCK);
	cr_http_server_free(app->http);
	cr_auth_free_all(app);
	cr_store_close(app->store);
	free(app->cluster_token);
	free(app->peer_secret);
	free(app->server_name);
	free(app->leader_name);
	free(app->summary_shared);
	json_decref(app->reports_wanted);
	cr_workers_mail_free(app);
	free(app->data_dir);
	free(app);
}
