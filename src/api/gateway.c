/* The OpenAI-compatible gateway: POST /v1/chat/completions, /v1/completions,
 * /v1/embeddings and /v1/rerank, checked just enough to route (JSON, a model
 * the key may use), then relayed to a running instance: least outstanding
 * requests first, ties by round robin; another instance when the first cannot
 * be reached before any byte was answered. When none runs, the answer says
 * why, per replica. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"

struct call {
	struct cr_app *app;
	char *model_id;
	char *tried[8];
	int n_tried;
	char *current; /* instance id being tried */
};

static unsigned long round_robin;

static bool tried(struct call *c, const char *id)
{
	for (int i = 0; i < c->n_tried; i++)
		if (!strcmp(c->tried[i], id))
			return true;
	return false;
}

static void release_current(struct call *c)
{
	if (!c->current)
		return;
	struct cr_instance *i = cr_map_get(&c->app->instances, c->current);
	if (i && i->inflight > 0)
		i->inflight--;
	free(c->current);
	c->current = NULL;
}

static int pick(void *arg, int attempt, struct cr_relay_target *out)
{
	struct call *c = arg;
	(void)attempt;
	release_current(c);
	struct cr_instance *best = NULL;
	int n_best = 0;
	size_t it = 0;
	void *v;
	while (cr_map_next(&c->app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		if (strcmp(i->model_id, c->model_id) != 0 || strcmp(i->state, "running") != 0 || !i->endpoint ||
		    tried(c, i->id))
			continue;
		if (!best || i->inflight < best->inflight) {
			best = i;
			n_best = 1;
		} else if (i->inflight == best->inflight && (round_robin % (unsigned long)++n_best) == 0) {
			best = i; /* spread ties */
		}
	}
	round_robin++;
	if (!best || c->n_tried == 8)
		return -1;
	const char *colon = strrchr(best->endpoint, ':');
	snprintf(out->host, sizeof(out->host), "%.*s", (int)(colon - best->endpoint), best->endpoint);
	out->port = (int)strtol(colon + 1, NULL, 10);
	c->tried[c->n_tried++] = cr_xstrdup(best->id);
	c->current = cr_xstrdup(best->id);
	best->inflight++;
	return 0;
}

static void finished(void *arg, int status, uint64_t bytes, const char *error)
{
	struct call *c = arg;
	(void)bytes;
	if (error && status != 200)
		cr_debug("gateway: %s", error);
	release_current(c);
	for (int i = 0; i < c->n_tried; i++)
		free(c->tried[i]);
	free(c->model_id);
	free(c);
}

/* Why no replica of m runs, e.g. "model 'q' has 0/2 replicas running: 1 starting
 * (loading the model), 1 error: ...". Sets *starting when one is on its way. */
static void why_none(struct cr_app *app, struct cr_model *m, char *out, size_t n, bool *starting)
{
	size_t len = 0, total = 0, it = 0;
	void *v;
	char parts[1024] = "";
	*starting = false;
	while (cr_map_next(&app->instances, &it, NULL, &v)) {
		struct cr_instance *i = v;
		if (strcmp(i->model_id, m->id) != 0)
			continue;
		total++;
		*starting |= !strcmp(i->state, "starting") || !strcmp(i->state, "scheduled");
		len += (size_t)snprintf(parts + len, len < sizeof(parts) ? sizeof(parts) - len : 0, "%s1 %s (%.160s)",
					len ? ", " : ": ", i->state, i->message);
	}
	snprintf(out, n, "model '%s' has 0/%lld replicas running%s%s%s", m->name, cr_json_get_int(m->spec, "replicas", 0),
		 total ? parts : "", !total && m->status ? ": " : "", !total && m->status ? m->status : "");
}

static void relay_v1(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const struct cr_apikey *k = cr_req_principal(req)->key;
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err);
	if (!body) {
		cr_reply_err(req, &err);
		return;
	}
	const char *model = cr_json_get_str(body, "model", NULL);
	if (!model) {
		cr_reply_error(req, CR_EINPUT, "you must provide a model parameter", NULL);
		return;
	}
	struct cr_model *m = cr_map_get(&app->model_names, model);
	if (!m || !cr_key_allows(k, model)) {
		char msg[256];
		snprintf(msg, sizeof(msg), "The model '%.100s' does not exist or you do not have access to it.", model);
		cr_reply_error(req, CR_ENOTFOUND, msg, NULL);
		return;
	}
	if (k->rpm) { /* requests per minute, in fixed one-minute windows */
		struct cr_apikey *key = (struct cr_apikey *)k;
		int64_t now = cr_mono_ms();
		if (now - key->window_start_ms >= 60000) {
			key->window_start_ms = now;
			key->window_requests = 0;
		}
		if (key->window_requests >= key->rpm) {
			char msg[200];
			int retry = (int)((key->window_start_ms + 60000 - now + 999) / 1000);
			snprintf(msg, sizeof(msg), "Rate limit reached for key '%s': %lld requests per minute. Try again in %d s.",
				 key->name, (long long)key->rpm, retry);
			cr_reply_error_retry(req, CR_ELIMIT, msg, retry);
			return;
		}
		key->window_requests++;
	}
	bool any = false;
	size_t it = 0;
	void *v;
	while (!any && cr_map_next(&app->instances, &it, NULL, &v))
		any = !strcmp(((struct cr_instance *)v)->model_id, m->id) && !strcmp(((struct cr_instance *)v)->state, "running");
	if (!any) {
		char msg[1400];
		bool starting;
		why_none(app, m, msg, sizeof(msg), &starting);
		cr_reply_error_retry(req, CR_EUNAVAILABLE, msg, starting ? 5 : 0);
		return;
	}
	size_t len;
	const char *raw = cr_req_body(req, &len);
	struct call *c = cr_xcalloc(1, sizeof(*c));
	c->app = app;
	c->model_id = cr_xstrdup(m->id);
	cr_relay(req, cr_req_uri(req), raw, len, 600, pick, finished, c);
}

const struct cr_http_route cr_api_gateway_routes[] = {
	{ CR_POST, "/v1/chat/completions", CR_AUTH_KEY, relay_v1 },
	{ CR_POST, "/v1/completions", CR_AUTH_KEY, relay_v1 },
	{ CR_POST, "/v1/embeddings", CR_AUTH_KEY, relay_v1 },
	{ CR_POST, "/v1/rerank", CR_AUTH_KEY, relay_v1 },
	{ 0, NULL, 0, NULL },
};
