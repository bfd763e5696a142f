/* Worker agent runtime. Threads: the main thread runs the event loop that
 * serves /healthz; a reporter thread registers and sends status; a watcher
 * thread holds the watch stream. They share the identity under a mutex. */
#include "agent/agent.h"

#include <ctype.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <unistd.h>

#include "agent/detect.h"
#include "agent/engines.h"
#include "agent/files.h"
#include "agent/peers.h"
#include "agent/supervise.h"
#include "checks/report.h"
#include "checks/checks.h"
#include "base/engine_kind.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/prom.h"
#include "base/buf.h"
#include "base/secret.h"
#include "base/sse.h"
#include "base/util.h"
#include "http/client.h"
#include "http/server.h"

struct agent {
	const struct cr_agent_config *cfg;
	/* --server-url URL1,URL2,...: the servers, and the one in use (an index,
	 * moved on when it cannot be reached) */
	char **urls;          /* the servers to report to: --server-url's, a name of several addresses once per address */
	char **via;           /* per entry of urls: the address of its name to connect to, or NULL (cr_http_addresses) */
	int n_urls;
	atomic_int url_i;
	char *name;
	json_t *labels;
	char *identity_path;
	struct event_base *base;
	pthread_mutex_t mu;
	pthread_cond_t wake;
	bool stopping;
	/* identity, under mu */
	char *id, *secret;
	char *server_key;       /* what the server sends with its requests here (logs); from its answers */
	unsigned generation;    /* bumped at each registration */
	/* reports: a full one when the static half changes or every FULL_EVERY */
	char *last_static;
	long long report_base;
	int light_sent;
	bool force_full;
	/* connection state, for logging once per change */
	char *last_problem;
	bool watch_up;
	/* model files: reported when they change, again after reconnecting */
	struct cr_files *files;
	char *files_sent;       /* reporter thread */
	bool files_pending;     /* under mu: wake the reporter */
	bool files_resend;      /* under mu */
	/* engines: discovered again every ENGINES_EVERY_MS (reporter thread) */
	struct cr_engine_catalog catalog;
	struct cr_supervisor *sup;
	char *instances_sent;   /* reporter thread */
	json_t *engines, *engine_notes;
	json_t *node_now;       /* under mu: the last report's gpus and system, for GET /metrics */
	int64_t engines_at;
	/* node checks: run at start and every CHECKS_EVERY_MS (reporter thread) */
	json_t *checks;
	int64_t checks_at;
	struct cr_peers *peers; /* probes of the other workers */
	char *python_version;   /* where vLLM, SGLang or Ray is installed */
	long long clock_offset_ms;
	bool clock_known, clock_checked;
};

#define CHECKS_EVERY_MS 300000

#define ENGINES_EVERY_MS 60000

/* ---- identity ---- */

static void load_identity(struct agent *a)
{
	char *text = NULL;
	size_t len;
	if (cr_file_read(a->identity_path, 1 << 16, &text, &len, NULL) != 0)
		return;
	json_t *j = cr_json_parse_object(text, len, NULL);
	free(text);
	const char *id = cr_json_get_str(j, "id", NULL), *secret = cr_json_get_str(j, "secret", NULL);
	if (id && secret) {
		a->id = cr_xstrdup(id);
		a->secret = cr_xstrdup(secret);
	} else {
		cr_warn("ignoring '%s': it has no id and secret; the worker registers as new", a->identity_path);
	}
	json_decref(j);
}

/* Each --server-url whose name has several addresses (one DNS name for
 * several servers) becomes one entry per address, so that the worker moves
 * from one server of the name to the next as from one URL to the next. */
static void expand_urls(struct agent *a)
{
	int n = 0, cap = a->n_urls;
	char **urls = cr_xcalloc((size_t)cap + 1, sizeof(*urls)), **via = cr_xcalloc((size_t)cap + 1, sizeof(*via));
	for (int i = 0; i < a->n_urls; i++) {
		int k = 0;
		char **addrs = cr_http_addresses(a->urls[i], &k);
		if (k > 1) {
			cap += k - 1;
			urls = cr_xrealloc(urls, ((size_t)cap + 1) * sizeof(*urls));
			via = cr_xrealloc(via, ((size_t)cap + 1) * sizeof(*via));
			cr_info("server %s has %d addresses: each is a server to report to", a->urls[i], k);
		}
		for (int j = 0; j < (k > 1 ? k : 1); j++) {
			urls[n] = j ? cr_xstrdup(a->urls[i]) : a->urls[i];
			via[n++] = k > 1 ? addrs[j] : NULL;
		}
		free(addrs);
	}
	free(a->urls);
	a->urls = urls;
	a->via = via;
	a->n_urls = n;
}

/* The server in use now: its entry. */
static int srv_i(struct agent *a)
{
	return atomic_load(&a->url_i) % a->n_urls;
}

static const char *srv(struct agent *a)
{
	return a->urls[srv_i(a)];
}

/* Entry i as the log names it: the URL, and the address when its name has several. */
static char *srv_name(struct agent *a, int i)
{
	const char *via = a->via[i];
	return via ? cr_xasprintf("%s (at %.*s)", a->urls[i], (int)strlen(via) - 3, via + 2) : cr_xstrdup(a->urls[i]);
}

/* The server in use could not be reached: the next one of the list. */
static void next_server(struct agent *a, const char *why)
{
	if (a->n_urls < 2)
		return;
	int from = srv_i(a), to = (from + 1) % a->n_urls;
	atomic_store(&a->url_i, to);
	char *f = srv_name(a, from), *t = srv_name(a, to);
	cr_warn("server %s cannot be reached (%s); trying %s", f, why, t);
	free(f);
	free(t);
}

static bool nap(struct agent *a, int64_t ms);

/* Tries after a follower's not_leader, and the pause before each: random,
 * so that the tries do not fall in step with other clients of a load
 * balancer that deals connections in turn (and reach the same follower each
 * time). */
#define FOLLOWER_TRIES 20
static int64_t follower_nap_ms(int tries)
{
	/* after the quick tries, about a second: a leader exists, so no outage backoff */
	return tries < FOLLOWER_TRIES ? 50 + randombytes_uniform(200) : 500 + randombytes_uniform(1000);
}

/* cr_http_call to path on the server in use. A follower of several servers
 * answers not_leader to what only the leader takes: the next server of the
 * list is tried at once, or, with one name for several servers (a load
 * balancer), a new connection, up to FOLLOWER_TRIES times. */
static int server_call(struct agent *a, const char *path, const char *secret, const char *body,
		       struct cr_http_resp *resp, struct cr_err *err)
{
	for (int i = 0;; i++) {
		int at = srv_i(a);
		char *url = cr_xasprintf("%s%s", a->urls[at], path);
		int rc = cr_http_call_via(a->via[at], "POST", url, secret, body, 10000, resp, err);
		free(url);
		if (rc || resp->status != 503 || i >= FOLLOWER_TRIES)
			return rc;
		struct cr_err e = CR_ERR_INIT;
		if (cr_http_error_from(resp, &e) != CR_ENOTLEADER)
			return 0;
		cr_http_resp_release(resp);
		if (a->n_urls > 1)
			next_server(a, e.message);
		else if (!nap(a, follower_nap_ms(i)))
			return cr_err_set(err, CR_EUNAVAILABLE, NULL, "stopping");
	}
}

static void save_identity(struct agent *a)
{
	json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "id", a->id, "name", a->name, "secret", a->secret, "server_url",
			      srv(a));
	char *text = json_dumps(j, JSON_INDENT(2));
	struct cr_err err = CR_ERR_INIT;
	if (cr_file_write(a->identity_path, text, strlen(text), 0600, &err) != 0)
		cr_warn("cannot keep the worker identity: %s; a restart will register a new worker", err.message);
	free(text);
	json_decref(j);
}

/* ---- connection state and backoff ---- */

/* Whether two problem texts differ only in their numbers (curl says
 * "after 4 ms", then "after 0 ms", for one and the same refusal). */
static bool same_but_numbers(const char *x, const char *y)
{
	while (*x && *y) {
		if (isdigit((unsigned char)*x) && isdigit((unsigned char)*y)) {
			while (isdigit((unsigned char)*x))
				x++;
			while (isdigit((unsigned char)*y))
				y++;
			continue;
		}
		if (*x++ != *y++)
			return false;
	}
	return !*x && !*y;
}

static void problem(struct agent *a, const char *what)
{
	if (a->last_problem && same_but_numbers(a->last_problem, what))
		return;
	cr_warn("%s", what);
	cr_str_replace(&a->last_problem, what);
}

static void recovered(struct agent *a, const char *what)
{
	if (a->last_problem) {
		cr_info("%s", what);
		free(a->last_problem);
		a->last_problem = NULL;
	}
}

/* Sleep ms unless stopping (or, with files, until model files changed);
 * returns false when stopping. */
static bool nap_until(struct agent *a, int64_t ms, bool files)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&a->mu);
	while (!a->stopping && !(files && a->files_pending) && pthread_cond_timedwait(&a->wake, &a->mu, &until) == 0)
		;
	bool go = !a->stopping;
	pthread_mutex_unlock(&a->mu);
	return go;
}

static bool nap(struct agent *a, int64_t ms)
{
	return nap_until(a, ms, false);
}

static int64_t backoff_ms(int attempt)
{
	int64_t ms = 1000;
	for (int i = 0; i < attempt && ms < 30000; i++)
		ms *= 2;
	if (ms > 30000)
		ms = 30000;
	/* jitter of +-25% so that many workers do not retry in step */
	return ms * 3 / 4 + randombytes_uniform((uint32_t)(ms / 2) + 1);
}

/* ---- registration and status ---- */

static int do_register(struct agent *a, struct cr_err *err)
{
	json_t *body = json_pack("{s:s,s:i,s:i,s:O}", "name", a->name, "port", a->cfg->worker_port,
				 "status_interval_s", a->cfg->status_interval_s, "labels", a->labels);
	pthread_mutex_lock(&a->mu);
	if (a->id && a->secret) {
		json_object_set_new(body, "id", json_string(a->id));
		json_object_set_new(body, "secret", json_string(a->secret));
	}
	pthread_mutex_unlock(&a->mu);
	if (a->cfg->advertise_address)
		json_object_set_new(body, "address", json_string(a->cfg->advertise_address));
	char *text = cr_json_dump(body);
	json_decref(body);
	struct cr_http_resp resp;
	int rc = server_call(a, "/api/workers/register", a->cfg->token, text, &resp, err);
	free(text);
	if (rc)
		return rc;
	if (resp.status != 200 && resp.status != 201) {
		rc = cr_http_error_from(&resp, err);
		cr_http_resp_release(&resp);
		return rc;
	}
	json_t *j = cr_json_parse_object(resp.body, resp.len, err);
	cr_http_resp_release(&resp);
	const char *id = cr_json_get_str(j, "id", NULL), *secret = cr_json_get_str(j, "secret", NULL);
	const char *skey = cr_json_get_str(j, "server_key", NULL);
	if (!id) {
		json_decref(j);
		return cr_err_set(err, CR_EUPSTREAM, "check that --server-url points at a corral server",
				  "registration answer has no worker id");
	}
	pthread_mutex_lock(&a->mu);
	cr_str_replace(&a->id, id);
	if (secret)
		cr_str_replace(&a->secret, secret);
	if (skey)
		cr_str_replace(&a->server_key, skey);
	a->generation++;
	pthread_mutex_unlock(&a->mu);
	cr_info("registered with %s as worker '%s' (%s)", srv(a), a->name, id);
	if (secret)
		save_identity(a);
	json_decref(j);
	pthread_cond_broadcast(&a->wake);
	return 0;
}

#define FULL_EVERY 12

/* The next status body: a light report when the static half is unchanged
 * since the last full report, else (or every FULL_EVERY reports) a full one. */
static json_t *build_report(struct agent *a)
{
	struct cr_detect_opts o = { a->cfg->data_dir, a->cfg->resources_file, NULL, NULL, NULL };
	json_t *full = cr_detect_node(&o);
	int64_t now = cr_mono_ms();
	if (!a->engines || now - a->engines_at > ENGINES_EVERY_MS) {
		json_decref(a->engines);
		json_decref(a->engine_notes);
		a->engine_notes = json_array();
		a->engines = cr_engines_discover(&a->catalog, a->engine_notes);
		a->engines_at = now;
		free(a->python_version); /* Ray groups need one Python version: said where Python engines run */
		a->python_version = NULL;
		for (size_t i = 0; i < json_array_size(a->engines) && !a->python_version; i++) {
			const char *n = cr_json_get_str(json_array_get(a->engines, i), "name", "");
			char *argv[] = { (char *)"python3", (char *)"--version", NULL }, *out = NULL;
			if (cr_engine_on_python(n) &&
			    cr_run_output(argv, 5000, &out) == 0 && out && !strncmp(out, "Python ", 7)) {
				out[strcspn(out, "\r\n")] = 0;
				a->python_version = cr_xstrdup(out + 7);
			}
			free(out);
		}
		for (size_t i = 0; a->cfg->no_ray && i < json_array_size(a->engines); i++)
			if (!strcmp(cr_json_get_str(json_array_get(a->engines, i), "name", ""), "ray")) {
				json_array_remove(a->engines, i);
				json_array_append_new(a->engine_notes, json_string("Ray is not offered: this worker runs "
										   "inside the server, which never joins a Ray cluster"));
				break;
			}
	}
	json_t *now_copy = json_pack("{s:O?,s:O?}", "gpus", json_object_get(full, "gpus"), "system",
				     json_object_get(full, "system"));
	json_t *node_now = json_deep_copy(now_copy);
	json_decref(now_copy);
	pthread_mutex_lock(&a->mu);
	json_decref(a->node_now);
	a->node_now = node_now;
	pthread_mutex_unlock(&a->mu);
	json_object_set(full, "engines", a->engines);
	if (a->python_version)
		json_object_set_new(full, "python_version", json_string(a->python_version));
	json_t *notes = json_object_get(full, "notes");
	if (json_is_array(notes))
		json_array_extend(notes, a->engine_notes);
	if (!a->checks || now - a->checks_at > CHECKS_EVERY_MS || (a->clock_known && !a->clock_checked)) {
		/* what only the checks read is gathered only for them; the clock offset
		 * changes a little every time, so reports stay light between checks */
		json_t *facts = json_deep_copy(full);
		cr_detect_check_facts(facts, a->cfg->port_lo ? a->cfg->port_lo : 20000,
				      a->cfg->port_hi ? a->cfg->port_hi : 20999);
		if (a->clock_known)
			json_object_set_new(facts, "clock_offset_ms", json_integer(a->clock_offset_ms));
		json_decref(a->checks);
		a->checks = json_array();
		cr_checks_node(facts, cr_files_largest_download(a->files), a->checks);
		json_decref(facts);
		a->checks_at = now;
		a->clock_checked = a->clock_known;
	}
	json_object_set(full, "checks", a->checks);
	if (a->peers)
		json_object_set_new(full, "peers", cr_peers_results(a->peers));
	json_t *stat = json_deep_copy(full);
	json_t *dyn = cr_report_split(stat);
	char *text = cr_json_dump(stat);
	json_decref(stat);
	json_t *body;
	if (!a->force_full && a->last_static && !strcmp(text, a->last_static) && a->light_sent < FULL_EVERY - 1) {
		body = json_pack("{s:I,s:o}", "base", (json_int_t)a->report_base, "dynamic", dyn);
		json_decref(full);
		free(text);
		a->light_sent++;
	} else {
		json_decref(dyn);
		body = full;
		json_object_set_new(body, "base", json_integer(++a->report_base));
		free(a->last_static);
		a->last_static = text;
		a->light_sent = 0;
		a->force_full = false;
	}
	json_object_set_new(body, "status_interval_s", json_integer(a->cfg->status_interval_s));
	return body;
}

/* POST one status report. Returns 0, CR_EUNAUTH/CR_ENOTFOUND when the server
 * no longer knows this worker, or another error. */
static int send_status(struct agent *a, struct cr_err *err)
{
	json_t *report = build_report(a);
	char *text = cr_json_dump(report);
	json_decref(report);
	pthread_mutex_lock(&a->mu);
	char *url = cr_xasprintf("/api/workers/%s/status", a->id);
	char *secret = cr_xstrdup(a->secret);
	pthread_mutex_unlock(&a->mu);
	struct cr_http_resp resp;
	int64_t sent = cr_wall_ms();
	int rc = server_call(a, url, secret, text, &resp, err);
	int64_t back = cr_wall_ms();
	if (!rc && resp.status != 200)
		rc = cr_http_error_from(&resp, err);
	if (!rc) { /* the server's clock at the middle of the round trip */
		json_t *ans = json_loadb(resp.body, resp.len, 0, NULL);
		json_t *t = json_object_get(ans, "server_time_ms");
		if (json_is_integer(t) && back - sent < 2000) {
			a->clock_offset_ms = (long long)(json_integer_value(t) - (sent + back) / 2);
			a->clock_known = true;
		}
		const char *skey = cr_json_get_str(ans, "server_key", NULL);
		if (skey) {
			pthread_mutex_lock(&a->mu);
			if (!a->server_key || strcmp(a->server_key, skey) != 0)
				cr_str_replace(&a->server_key, skey);
			pthread_mutex_unlock(&a->mu);
		}
		json_decref(ans);
	}
	cr_http_resp_release(&resp); /* whatever the status: a 5xx answer's body too */
	free(secret);
	free(url);
	free(text);
	return rc;
}

static void sup_changed(void *arg)
{
	struct agent *a = arg; /* called under the supervisor's lock: take only ours */
	pthread_mutex_lock(&a->mu);
	a->files_pending = true;
	pthread_cond_broadcast(&a->wake);
	pthread_mutex_unlock(&a->mu);
}

/* POST body to the worker's path under /api/workers/{id}/ and keep what was
 * sent in *sent; skipped when unchanged unless resend. */
static void post_if_changed(struct agent *a, const char *what, json_t *report, char **sent, bool resend)
{
	char *text = cr_json_dump(report);
	if (!resend && *sent && !strcmp(text, *sent)) {
		free(text);
		return;
	}
	pthread_mutex_lock(&a->mu);
	char *url = cr_xasprintf("/api/workers/%s/%s", a->id, what);
	char *secret = cr_xstrdup(a->secret);
	pthread_mutex_unlock(&a->mu);
	/* when it was made: with several servers, a report taken by a follower
	 * reaches the leader later, and must not undo a newer one sent to it */
	json_object_set_new(report, "sent_ms", json_integer(cr_wall_ms()));
	char *body = cr_json_dump(report);
	struct cr_http_resp resp;
	struct cr_err err = CR_ERR_INIT;
	int rc = server_call(a, url, secret, body, &resp, &err);
	free(body);
	if (!rc && resp.status != 200)
		rc = cr_http_error_from(&resp, &err);
	cr_http_resp_release(&resp); /* whatever the status: a 5xx answer's body too */
	if (rc) {
		cr_warn("%s report failed: %s", what, err.message);
		free(text);
	} else {
		free(*sent);
		*sent = text;
	}
	free(secret);
	free(url);
}

/* POST the model-file and engine reports when they differ from the last ones sent. */
static void send_reports(struct agent *a)
{
	pthread_mutex_lock(&a->mu);
	a->files_pending = false;
	bool resend = a->files_resend;
	a->files_resend = false;
	pthread_mutex_unlock(&a->mu);
	cr_files_retry(a->files);
	cr_files_evict(a->files); /* --cache-max */
	cr_files_take_changed(a->files);
	cr_supervisor_take_changed(a->sup);
	json_t *files = cr_files_report(a->files);
	post_if_changed(a, "files", files, &a->files_sent, resend);
	json_decref(files);
	json_t *inst = cr_supervisor_report(a->sup);
	post_if_changed(a, "instances", inst, &a->instances_sent, resend);
	json_decref(inst);
}

/* Engine ports inside the kernel's ephemeral range can be taken by any
 * outgoing connection; say so once at start. */
static void warn_port_overlap(int lo, int hi)
{
	char *text = NULL;
	size_t len;
	int elo, ehi;
	if (cr_file_read("/proc/sys/net/ipv4/ip_local_port_range", 256, &text, &len, NULL) == 0 &&
	    sscanf(text, "%d %d", &elo, &ehi) == 2 && lo <= ehi && hi >= elo)
		cr_warn("engine ports %d-%d overlap the kernel's ephemeral range %d-%d: outgoing connections may take "
			"them; choose --port-range outside it", lo, hi, elo, ehi);
	free(text);
}

static void *reporter(void *arg)
{
	struct agent *a = arg;
	bool registered = false;
	int attempt = 0;
	for (;;) {
		struct cr_err err = CR_ERR_INIT;
		int rc = registered ? send_status(a, &err) : do_register(a, &err);
		if (rc == 0) {
			if (registered)
				recovered(a, "status reports reach the server again");
			registered = true;
			attempt = 0;
			send_reports(a);
			if (!nap_until(a, (int64_t)a->cfg->status_interval_s * 1000, true))
				break;
			/* woken early by a file or engine change: report it, then finish the interval */
			send_reports(a);
			continue;
		}
		if (registered && (rc == CR_EUNAUTH || rc == CR_ENOTFOUND)) {
			cr_info("the server does not know this worker any more (%s); registering again", err.message);
			registered = false;
			a->force_full = true;
			continue;
		}
		if (registered && rc == CR_ECONFLICT && !a->force_full) {
			/* the server lacks our full report (it restarted, or another server leads now) */
			cr_info("the server asks for a full status report (%s); sending one", err.message);
			a->force_full = true;
			continue;
		}
		char msg[1200];
		snprintf(msg, sizeof(msg), "%s failed: %s%s%s", registered ? "status report" : "registration",
			 err.message, err.fix[0] ? "; " : "", err.fix);
		problem(a, msg);
		/* not_leader was tried again by server_call already */
		if (rc == CR_ENOTLEADER) {
			if (!nap(a, follower_nap_ms(FOLLOWER_TRIES)))
				break;
			continue;
		}
		if (rc == CR_EUPSTREAM || rc == CR_EUNAVAILABLE) { /* another server of the list, at once */
			next_server(a, err.message);
			if (a->n_urls > 1 && attempt < a->n_urls) {
				attempt++;
				continue;
			}
		}
		if (!nap(a, backoff_ms(attempt++)))
			break;
	}
	return NULL;
}

/* ---- watch stream ---- */

static int on_event(const char *event, const char *data, void *arg)
{
	struct agent *a = arg;
	cr_debug("watch event '%s': %s", event, data);
	json_t *j = json_loads(data, 0, NULL);
	if (!json_is_object(j)) {
		cr_warn("watch event '%s' is not a JSON object; ignored", event);
		json_decref(j);
		return 0;
	}
	if (!strcmp(event, "sources"))
		cr_files_set_sources(a->files, j);
	else if (!strcmp(event, "cache")) /* corral files rm: {"remove": [names]} or {"remove_unused": true} */
		cr_files_remove(a->files, json_is_true(json_object_get(j, "remove_unused")) ? NULL : json_object_get(j, "remove"));
	else if (!strcmp(event, "snapshot")) {
		cr_files_set_instances(a->files, j);
		pthread_mutex_lock(&a->mu);
		char *id = cr_xstrdup(a->id ? a->id : "");
		pthread_mutex_unlock(&a->mu);
		cr_supervisor_set_desired(a->sup, id, j);
		free(id);
	}
	json_decref(j);
	pthread_mutex_lock(&a->mu);
	a->files_pending = true;
	pthread_cond_broadcast(&a->wake);
	pthread_mutex_unlock(&a->mu);
	return 0;
}

static int on_watch_data(const char *data, size_t len, void *arg)
{
	struct cr_sse *p = ((void **)arg)[0];
	struct agent *a = ((void **)arg)[1];
	if (!data) {
		pthread_mutex_lock(&a->mu);
		bool stop = a->stopping;
		pthread_mutex_unlock(&a->mu);
		return stop;
	}
	if (!a->watch_up) {
		a->watch_up = true;
		cr_info("watch stream connected");
		pthread_mutex_lock(&a->mu);
		a->files_resend = true; /* the server may have restarted and forgotten them */
		pthread_mutex_unlock(&a->mu);
	}
	pthread_mutex_lock(&a->mu);
	bool stop = a->stopping;
	pthread_mutex_unlock(&a->mu);
	return stop || cr_sse_feed(p, data, len, on_event, a) != 0;
}

static void *watcher(void *arg)
{
	struct agent *a = arg;
	int attempt = 0, followers = 0;
	for (;;) {
		pthread_mutex_lock(&a->mu);
		while (!a->stopping && !a->generation)
			pthread_cond_wait(&a->wake, &a->mu);
		bool stop = a->stopping;
		int at = srv_i(a);
		char *url = stop ? NULL : cr_xasprintf("%s/api/workers/%s/watch", a->urls[at], a->id);
		char *secret = stop ? NULL : cr_xstrdup(a->secret);
		pthread_mutex_unlock(&a->mu);
		if (stop)
			break;
		struct cr_sse parser;
		cr_sse_init(&parser, 1 << 20);
		void *ctx[2] = { &parser, a };
		long status = 0;
		struct cr_err err = CR_ERR_INIT;
		int64_t started = cr_mono_ms();
		cr_http_stream_via(a->via[at], url, secret, 60, on_watch_data, ctx, &status, &err);
		cr_sse_release(&parser);
		free(url);
		free(secret);
		if (a->watch_up)
			cr_info("watch stream ended%s%s; reconnecting", err.code ? ": " : "", err.message);
		if (a->watch_up)
			followers = 0;
		a->watch_up = false;
		if (err.code == CR_ENOTLEADER) {
			/* a follower of several servers: the next connection (another URL, or through a
			 * load balancer another server) may reach the leader */
			if (!nap(a, follower_nap_ms(followers++)))
				break;
			continue;
		}
		if (cr_mono_ms() - started > 60000)
			attempt = 0;
		if (!nap(a, backoff_ms(attempt++)))
			break;
	}
	return NULL;
}

/* ---- peers ---- */

/* GET /api/workers/{id}/peers: the workers to probe. */
static int list_peers(void *arg, json_t **list)
{
	struct agent *a = arg;
	pthread_mutex_lock(&a->mu);
	if (!a->id) {
		pthread_mutex_unlock(&a->mu);
		return -1;
	}
	int at = srv_i(a);
	char *url = cr_xasprintf("%s/api/workers/%s/peers", a->urls[at], a->id);
	char *secret = cr_xstrdup(a->secret);
	pthread_mutex_unlock(&a->mu);
	struct cr_http_resp resp;
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_http_call_via(a->via[at], "GET", url, secret, NULL, 5000, &resp, &err);
	if (!rc && resp.status == 200) {
		json_t *ans = json_loadb(resp.body, resp.len, 0, NULL);
		*list = json_incref(json_object_get(ans, "peers"));
		json_decref(ans);
	}
	cr_http_resp_release(&resp); /* whatever the status: a 5xx answer's body too */
	free(url);
	free(secret);
	return *list ? 0 : -1;
}

/* GET /probe: a short echo for other workers' round-trip measurements. */
static void probe(struct cr_req *req)
{
	const char *e = cr_req_query(req, "echo");
	cr_reply_json(req, 200, json_pack("{s:s}", "echo", e && strlen(e) < 64 ? e : ""));
}

/* ---- /healthz and signals ---- */

static void healthz(struct cr_req *req)
{
	struct agent *a = cr_req_app(req);
	pthread_mutex_lock(&a->mu);
	json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "status", "ok", "role", "worker", "name", a->name, "id",
			      a->id ? a->id : "");
	pthread_mutex_unlock(&a->mu);
	cr_reply_json(req, 200, j);
}

/* Replace bytes that are not valid UTF-8 with '?', so logs fit in JSON. */
static void clean_utf8(unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned char c = s[i];
		size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
		bool ok = n > 0 && i + n <= len && !(n == 1 && c == 0);
		for (size_t k = 1; ok && k < n; k++)
			ok = (s[i + k] & 0xC0) == 0x80;
		if (!ok) {
			s[i++] = '?';
			continue;
		}
		i += n;
	}
}

/* GET /instances/{id}/log?offset=N | ?tail=LINES, for the server (with the
 * key it gave this worker; the cluster token, which every node operator has,
 * does not open it): {"data", "offset" (where the next read starts),
 * "size"}. At most 256 KiB per call. */
static void instance_log(struct cr_req *req)
{
	struct agent *a = cr_req_app(req);
	const char *auth = cr_req_header(req, "Authorization");
	pthread_mutex_lock(&a->mu);
	bool ok = a->server_key && auth && !strncmp(auth, "Bearer ", 7) && cr_secret_equal(auth + 7, a->server_key);
	pthread_mutex_unlock(&a->mu);
	if (!ok) {
		cr_reply_error(req, CR_EUNAUTH, "this endpoint is for the server (with this worker's server key)",
			       "read engine logs with 'corral logs'");
		return;
	}
	char *path = cr_supervisor_log_path(a->sup, cr_req_param(req, 0));
	if (!path) {
		cr_reply_error(req, CR_ENOTFOUND, "no log for this instance on this worker", "check the instance id");
		return;
	}
	FILE *f = fopen(path, "r");
	free(path);
	if (!f) {
		cr_reply_error(req, CR_ENOTFOUND, "the instance's log cannot be opened", "check the worker's data directory");
		return;
	}
	fseek(f, 0, SEEK_END);
	long long size = ftell(f), from = 0, n;
	const char *off = cr_req_query(req, "offset"), *tail = cr_req_query(req, "tail");
	if (off && cr_parse_int(off, 0, size, &n))
		from = n;
	else if (tail && cr_parse_int(tail, 0, 100000, &n)) /* the last n lines, within 256 KiB */
		from = size > 262144 ? size - 262144 : 0;
	long long len = size - from > 262144 ? 262144 : size - from;
	char *buf = cr_xmalloc((size_t)len + 1);
	fseek(f, from, SEEK_SET);
	len = (long long)fread(buf, 1, (size_t)len, f);
	fclose(f);
	buf[len] = '\0';
	clean_utf8((unsigned char *)buf, (size_t)len);
	char *start = buf;
	if (!off && tail && cr_parse_int(tail, 0, 100000, &n)) {
		char *p = buf + len;
		long long lines = 0;
		while (p > buf && lines <= n)
			if (*--p == '\n' && p + 1 < buf + len)
				lines++;
		start = lines > n ? p + 1 : buf;
	}
	cr_reply_json(req, 200, json_pack("{s:s%,s:I,s:I}", "data", start, (size_t)(buf + len - start), "offset",
					   (json_int_t)(from + len), "size", (json_int_t)size));
	free(buf);
}

/* GET /metrics: this node's memory and GPUs as last detected, and its
 * engines' own metrics under Corral's vocabulary (docs/metrics.md). */
static void metrics(struct cr_req *req)
{
	struct agent *a = cr_req_app(req);
	struct cr_buf b = CR_BUF_INIT(64u << 20);
	pthread_mutex_lock(&a->mu);
	json_t *node = json_incref(a->node_now);
	pthread_mutex_unlock(&a->mu);
	const char *w = a->name;
	json_t *sys = json_object_get(node, "system"), *mem = json_object_get(sys, "memory");
	cr_prom_family(&b, "corral_node_cpu_cores", "gauge", "CPU cores online.");
	if (json_object_get(json_object_get(sys, "cpu"), "cores")) {
		const char *l[] = { "worker", w, NULL };
		cr_prom_sample(&b, "corral_node_cpu_cores", l,
			       (double)cr_json_get_int(json_object_get(sys, "cpu"), "cores", 0));
	}
	cr_prom_family(&b, "corral_node_memory_bytes", "gauge", "Node memory: total and available.");
	for (int k = 0; mem && k < 2; k++) {
		const char *kind = k ? "available" : "total";
		const char *l[] = { "worker", w, "kind", kind, NULL };
		cr_prom_sample(&b, "corral_node_memory_bytes", l, (double)cr_json_get_int(mem, kind, 0));
	}
	static const char *const fam[][4] = {
		{ "corral_gpu_memory_bytes", "GPU memory: total and used (all processes).", NULL, NULL },
		{ "corral_gpu_utilization_ratio", "GPU utilisation, 0 to 1.", "utilization", NULL },
		{ "corral_gpu_temperature_celsius", "GPU temperature.", "temperature", NULL },
		{ "corral_gpu_power_watts", "GPU power draw.", "power_draw_w", NULL },
	};
	for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		cr_prom_family(&b, fam[f][0], "gauge", fam[f][1]);
		size_t i;
		json_t *g;
		json_array_foreach(json_object_get(node, "gpus"), i, g) {
			char idx[24];
			snprintf(idx, sizeof(idx), "%lld", (long long)cr_json_get_int(g, "index", (json_int_t)i));
			if (!f) {
				static const char *const kinds[][2] = { { "total", "memory_total" }, { "used", "memory_used" } };
				for (int k = 0; k < 2; k++) {
					json_t *v = json_object_get(g, kinds[k][1]);
					if (!json_is_number(v))
						continue;
					const char *l[] = { "worker", w, "gpu", idx, "kind", kinds[k][0], NULL };
					cr_prom_sample(&b, fam[f][0], l, json_number_value(v));
				}
				continue;
			}
			json_t *v = json_object_get(g, fam[f][2]);
			if (!json_is_number(v))
				continue;
			const char *l[] = { "worker", w, "gpu", idx, NULL };
			cr_prom_sample(&b, fam[f][0], l, json_number_value(v) / (f == 1 ? 100.0 : 1.0));
		}
	}
	json_decref(node);
	cr_supervisor_metrics(a->sup, &b);
	cr_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len);
	cr_buf_release(&b);
}

/* GET /cache/{entry}[/{file}] for peer workers: a finished file of this
 * worker's model cache, with Range. The bearer is a ticket from the server
 * for the file's source on this worker (a MAC under the key the server gave
 * this worker), so a worker fetches only what the server placed on it. */
static void cache_get(struct cr_req *req, const char *entry, const char *file)
{
	struct agent *a = cr_req_app(req);
	const char *auth = cr_req_header(req, "Authorization");
	if (!auth || strncmp(auth, "Bearer ", 7) != 0) {
		cr_reply_error(req, CR_EUNAUTH, "a peer's cache needs the server's ticket for the file",
			       "this route is for Corral workers fetching a model placed on them");
		return;
	}
	char *source = NULL;
	int fd = -1;
	uint64_t size = 0;
	if (cr_files_open_cached(a->files, entry, file, &source, &fd, &size) != 0) {
		cr_reply_error(req, CR_ENOTFOUND, "no such finished file in this worker's model cache",
			       "'corral files' lists what each worker has");
		return;
	}
	char want[CR_HASH_HEX];
	char *msg = cr_xasprintf("cache:%s", source);
	pthread_mutex_lock(&a->mu);
	bool ok = a->server_key != NULL;
	if (ok)
		cr_secret_mac(a->server_key, msg, want);
	pthread_mutex_unlock(&a->mu);
	free(msg);
	free(source);
	if (!ok || !cr_secret_equal(auth + 7, want)) {
		close(fd);
		cr_reply_error(req, CR_EUNAUTH, "the ticket is not for this file on this worker",
			       "peers fetch with the ticket the server sends with the instance");
		return;
	}
	uint64_t from = 0, to = size ? size - 1 : 0;
	const char *range = cr_req_header(req, "Range");
	unsigned long long x, y;
	int status = 200;
	char cr[96];
	cr_reply_header(req, "Accept-Ranges", "bytes");
	if (range && sscanf(range, "bytes=%llu-%llu", &x, &y) >= 1) {
		if (sscanf(range, "bytes=%llu-%llu", &x, &y) == 2 && y < to)
			to = y;
		from = x;
		if (from >= size || from > to) {
			close(fd);
			snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
			cr_reply_header(req, "Content-Range", cr);
			cr_reply_text(req, 416, "text/plain", "", 0);
			return;
		}
		status = 206;
		snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)from, (unsigned long long)to,
			 (unsigned long long)size);
		cr_reply_header(req, "Content-Range", cr);
	}
	cr_reply_file(req, status, "application/octet-stream", fd, from, size ? to - from + 1 : 0);
}

static void cache_entry(struct cr_req *req)
{
	cache_get(req, cr_req_param(req, 0), NULL);
}

static void cache_entry_file(struct cr_req *req)
{
	cache_get(req, cr_req_param(req, 0), cr_req_param(req, 1));
}

static const struct cr_http_route agent_routes[] = {
	{ CR_GET, "/cache/{}", CR_AUTH_NONE, cache_entry },
	{ CR_GET, "/cache/{}/{}", CR_AUTH_NONE, cache_entry_file },
	{ CR_GET, "/metrics", CR_AUTH_NONE, metrics },
	{ CR_GET, "/healthz", CR_AUTH_NONE, healthz },
	{ CR_GET, "/probe", CR_AUTH_NONE, probe },
	{ CR_GET, "/instances/{}/log", CR_AUTH_NONE, instance_log },
	{ 0, NULL, 0, NULL },
};

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct agent *a = arg;
	(void)what;
	cr_info("signal %d: stopping", (int)sig);
	pthread_mutex_lock(&a->mu);
	a->stopping = true;
	pthread_cond_broadcast(&a->wake);
	pthread_mutex_unlock(&a->mu);
	event_base_loopbreak(a->base);
}

static char *default_name(void)
{
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	for (char *c = host; *c; c++) {
		if (*c == '.') {
			*c = '\0';
			break;
		}
	}
	return cr_xstrdup(host[0] ? host : "worker");
}

int cr_agent_run(const struct cr_agent_config *cfg, struct cr_err *err)
{
	struct agent *ap = cr_xcalloc(1, sizeof(*ap));
	ap->cfg = cfg;
	pthread_mutex_init(&ap->mu, NULL);
	pthread_cond_init(&ap->wake, NULL);
	ap->name = cfg->name ? cr_xstrdup(cfg->name) : default_name();
	ap->urls = cr_server_urls(cfg->server_url, &ap->n_urls);
	expand_urls(ap);
	int rc = cr_labels_parse(cfg->labels, &ap->labels, err);
	if (!rc)
		rc = cr_engines_load(cfg->engines_config, &ap->catalog, err);
	if (!rc)
		rc = cr_mkdir_p(cfg->data_dir, 0700, err);
	if (rc)
		goto out;
	ap->identity_path = cr_xasprintf("%s/worker.json", cfg->data_dir);
	load_identity(ap);
	char *cache = cr_xasprintf("%s/models", cfg->data_dir);
	ap->files = cr_files_new(cache);
	cr_files_set_cache_max(ap->files, cfg->cache_max);
	free(cache);
	struct cr_supervisor_config sc = { cfg->data_dir, cfg->listen_host ? cfg->listen_host : "0.0.0.0",
					   cfg->port_lo ? cfg->port_lo : 20000, cfg->port_hi ? cfg->port_hi : 20999,
					   cfg->restart_backoff_s, 10, &ap->catalog, ap->files, cfg->no_ray,
					   cfg->allow_args, sup_changed, ap };
	warn_port_overlap(sc.port_lo, sc.port_hi);
	ap->sup = cr_supervisor_start(&sc);

	cr_http_raise_fd_limit();
	evthread_use_pthreads();
	ap->base = event_base_new();
	struct cr_http_limits limits;
	cr_http_limits_defaults(&limits);
	limits.max_body = 64 << 10;
	limits.read_timeout_s = 30;
	struct cr_http_server *http = cr_http_server_new(ap->base, &limits, NULL, ap);
	cr_http_server_add_routes(http, agent_routes);
	int port = 0;
	rc = cr_http_server_listen(http, cfg->listen_host ? cfg->listen_host : "0.0.0.0", cfg->worker_port, &port, err);
	if (rc) {
		snprintf(err->fix, sizeof(err->fix), "stop the other process on port %d or pick another --worker-port",
			 cfg->worker_port);
		goto out_http;
	}
	cr_info("worker '%s' serving /healthz on port %d, reporting to %s every %d s", ap->name, port, cfg->server_url,
		cfg->status_interval_s);
	struct event *sigterm = evsignal_new(ap->base, SIGTERM, on_signal, ap);
	struct event *sigint = evsignal_new(ap->base, SIGINT, on_signal, ap);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	signal(SIGPIPE, SIG_IGN);

	int every = cfg->status_interval_s * 3 < 30 ? cfg->status_interval_s * 3 : 30;
	ap->peers = cr_peers_start(every, 1000, list_peers, ap);
	pthread_t rep, wat;
	pthread_create(&rep, NULL, reporter, ap);
	pthread_create(&wat, NULL, watcher, ap);
	event_base_dispatch(ap->base);
	pthread_join(rep, NULL);
	pthread_join(wat, NULL); /* the stream notices stopping within a second */
	cr_peers_stop(ap->peers);
	ap->peers = NULL;
	cr_supervisor_free(ap->sup); /* engines keep running; the next start adopts them */
	ap->sup = NULL;
	cr_files_free(ap->files);
	ap->files = NULL;
	event_free(sigterm);
	event_free(sigint);
out_http:
	cr_http_server_free(http);
	event_base_free(ap->base);
out:
	json_decref(ap->labels);
	free(ap->name);
	free(ap->identity_path);
	for (int i = 0; i < ap->n_urls; i++) {
		free(ap->urls[i]);
		free(ap->via[i]);
	}
	free(ap->urls);
	free(ap->via);
	free(ap->id);
	free(ap->secret);
	free(ap->server_key);
	free(ap->last_problem);
	free(ap->last_static);
	free(ap->files_sent);
	free(ap->instances_sent);
	cr_supervisor_free(ap->sup);
	cr_files_free(ap->files);
	cr_engines_release(&ap->catalog);
	json_decref(ap->engines);
	json_decref(ap->engine_notes);
	json_decref(ap->checks);
	json_decref(ap->node_now);
	free(ap->python_version);
	pthread_mutex_destroy(&ap->mu);
	pthread_cond_destroy(&ap->wake);
	free(ap);
	return rc;
}
