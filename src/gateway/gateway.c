/* The OpenAI-compatible gateway: POST /v1/chat/completions, /v1/completions,
 * /v1/embeddings and /v1/rerank, checked just enough to route (JSON, a model
 * the key may use), then relayed to a running instance: least outstanding
 * requests first, ties by round robin; another instance when the first cannot
 * be reached. When none runs, the answer says why, per replica. Every request
 * is metered: tokens from the answer's usage (for streams the final usage
 * chunk, asked for with stream_options.include_usage and removed again when
 * the client did not ask for it), errors and latency. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/gateway.h"

#include "api/cluster.h"
#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "base/mem.h"
#include "base/prom.h"
#include "base/util.h"
#include "http/relay.h"
#include "http/server.h"
#include "gateway/usage_filter.h"

#define CHECK_LIMIT (8u << 20) /* non-streamed answers above this are relayed unchecked, unmetered */

/* Counters of one model's /v1 requests for GET /metrics ("" for requests
 * that named no model the cluster has). */
struct model_stats {
	struct {
		int status;
		uint64_t n;
	} codes[16];
	int ncodes;
	uint64_t prompt_tokens, completion_tokens;
	struct cr_prom_hist ttft, duration;
};

struct cr_gateway {
	struct cr_app *app;              /* the cluster (api/cluster.h) */
	struct cr_map stats;             /* model name -> model_stats */
	int inflight;                    /* requests being relayed */
	struct cr_gateway_config cfg;
	struct cr_relay_pool *pool;      /* keep-alive connections to engines */
	struct cr_buf alog;              /* whole access lines not written yet */
	struct event *alog_timer;        /* writes them each second */
};

#define ALOG_FLUSH_BYTES 32768 /* written at once past this much */

struct call {
	struct cr_gateway *gw;
	struct cr_app *app;
	char *model_id, *model_name, *key_hash;
	char *tried[8];
	int n_tried;
	char *current;        /* instance id being tried */
	int64_t t_start, ttft_ms;
	int64_t reserved;     /* tokens held against the key's tpm until the answer's count is known */
	bool stream, sse;
	struct cr_usage_filter filter; /* tokens, and the usage chunk the client did not ask for */
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
	struct cr_instance *i = cr_cluster_instance(c->app, c->current);
	if (i)
		cr_cluster_request_done(c->app, i);
	free(c->current);
	c->current = NULL;
}

json_t *cr_gateway_error(int status, const char *code, const char *message, const char *fix)
{
	const char *type = status == 504 ? "timeout" : status == 503 ? "service_unavailable"
			   : status == 429 ? "requests" : status >= 500 ? "server_error" : "invalid_request_error";
	const char *oc = status == 401 ? "invalid_api_key" : status == 404 ? "model_not_found"
			 : status == 429 ? "rate_limit_exceeded" : status == 413 ? "request_too_large" : code;
	char *msg = fix && *fix ? cr_xasprintf("%s; %s", message, fix) : cr_xstrdup(message);
	json_t *e = json_pack("{s:{s:s,s:s,s:s?,s:n}}", "error", "message", msg, "type", type, "code", oc, "param");
	free(msg);
	return e;
}

#define SHUN_MS 10000 /* how long an instance that could not be reached is tried last */

static int rank_of(const struct cr_instance *i, int64_t now)
{
	return (i->shunned_until > now ? 2 : 0) + (i->state != CR_I_RUNNING);
}

static int pick(void *arg, int attempt, bool unreachable, struct cr_relay_target *out)
{
	struct call *c = arg;
	int64_t now = cr_mono_ms();
	if (attempt > 0 && unreachable && c->current) { /* it could not be reached: others first for a while */
		struct cr_instance *failed = cr_cluster_instance(c->app, c->current);
		if (failed)
			failed->shunned_until = now + SHUN_MS;
	} else if (attempt > 0 && c->current && c->n_tried) {
		/* a kept-alive connection the engine had closed (llama-server closes
		 * one after a number of requests): the instance itself is fine, and
		 * the relay's next try uses a new connection */
		free(c->tried[--c->n_tried]);
	}
	release_current(c);
	struct cr_instance *best = NULL;
	int n_best = 0;
	size_t it = 0;
	struct cr_instance *i;
	while (cr_cluster_next_instance(c->app, &it, &i)) {
		if (strcmp(i->model_id, c->model_id) != 0 || !cr_instance_is_routable(i) || tried(c, i->id))
			continue;
		/* running ones first, then those whose worker is not heard from
		 * (their engine may still answer); any that just failed to
		 * connect go last */
		int rank = rank_of(i, now), best_rank = best ? rank_of(best, now) : 0;
		if (best && rank != best_rank) {
			if (rank < best_rank) {
				best = i;
				n_best = 1;
			}
			continue;
		}
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
	snprintf(out->key, sizeof(out->key), "%s", cr_json_get_str(best->placement, "engine_key", ""));
	c->tried[c->n_tried++] = cr_xstrdup(best->id);
	c->current = cr_xstrdup(best->id);
	best->inflight++;
	best->requests++;
	return 0;
}

/* Non-streamed answers are read whole and checked (see check_answer);
 * streams go out as they come. */
static bool on_head(void *arg, int status, const char *content_type)
{
	struct call *c = arg;
	c->ttft_ms = c->stream ? cr_mono_ms() - c->t_start : -1;
	c->sse = content_type && strstr(content_type, "event-stream");
	return !c->sse && status == 200;
}

/* A whole 200 answer: valid JSON (else the client gets a 502 naming the
 * problem rather than a body its SDK cannot parse), and its usage. */
static int check_answer(void *arg, struct evbuffer *whole, char *msg, size_t n)
{
	struct call *c = arg;
	json_error_t je;
	size_t len = evbuffer_get_length(whole);
	json_t *o = json_loadb((const char *)evbuffer_pullup(whole, -1), len, 0, &je);
	if (!json_is_object(o)) {
		snprintf(msg, n, "the engine answered 200 with %s (%s at byte %d); see 'corral logs' for the instance",
			 o ? "JSON that is not an object" : "a body that is not JSON", o ? "type" : je.text, je.position);
		json_decref(o);
		return -1;
	}
	cr_usage_filter_take(&c->filter, o);
	json_decref(o);
	return 0;
}

static void on_data(void *arg, struct evbuffer *chunk, bool end)
{
	struct call *c = arg;
	if (c->sse)
		cr_usage_filter_feed(&c->filter, chunk, end);
}

static void access_line(struct cr_gateway *gw, const char *key, const char *model, int status,
			const struct cr_usage_sample *s);
static void settle(struct cr_apikey *k, int64_t reserved, int64_t used);

static void finished(void *arg, int status, uint64_t bytes, const char *error)
{
	struct call *c = arg;
	(void)bytes;
	if (error && status != 200)
		cr_debug("gateway: %s", error);
	release_current(c);
	c->gw->inflight--;
	struct cr_apikey *k = cr_cluster_key(c->app, c->key_hash); /* NULL when revoked meanwhile */
	struct cr_usage_sample s = { status >= 400 || (error && status != 0), c->filter.prompt_tokens,
				     c->filter.completion_tokens, c->ttft_ms, cr_mono_ms() - c->t_start };
	access_line(c->gw, k ? k->name : NULL, c->model_name, status, &s);
	if (k) {
		cr_usage_record(c->app, k, c->model_name, &s);
		settle(k, c->reserved, c->filter.prompt_tokens + c->filter.completion_tokens);
	}
	cr_usage_filter_release(&c->filter);
	for (int i = 0; i < c->n_tried; i++)
		free(c->tried[i]);
	free(c->model_id);
	free(c->model_name);
	free(c->key_hash);
	free(c);
}

/* Why no replica of m runs, e.g. "model 'q' has 0/2 replicas running: 1 starting
 * (loading the model), 1 error: ...". Sets *starting when one is on its way. */
static void why_none(struct cr_app *app, struct cr_model *m, char *out, size_t n, bool *starting)
{
	size_t len = 0, total = 0, it = 0;
	struct cr_instance *i;
	char parts[1024] = "";
	*starting = false;
	while (cr_cluster_next_instance(app, &it, &i)) {
		if (strcmp(i->model_id, m->id) != 0)
			continue;
		total++;
		bool unreported = i->state == CR_I_RUNNING && !i->endpoint;
		*starting |= i->state == CR_I_STARTING || i->state == CR_I_SCHEDULED || unreported;
		len += (size_t)snprintf(parts + len, len < sizeof(parts) ? sizeof(parts) - len : 0, "%s1 %s (%.160s)",
					len ? ", " : ": ", cr_instance_state_name(i->state),
					unreported ? "its worker has not reported the engine's address since the server "
						     "started" : i->message);
	}
	snprintf(out, n, "model '%s' has 0/%lld replicas running%s%s%s", m->name, cr_json_get_int(m->spec, "replicas", 0),
		 total ? parts : "", !total && m->status ? ": " : "", !total && m->status ? m->status : "");
}

/* Writes the access lines held so far with one write(). */
static void alog_flush(struct cr_gateway *gw)
{
	if (!gw->alog.len || !gw->cfg.access_log)
		return;
	const char *p = cr_buf_str(&gw->alog);
	size_t left = gw->alog.len;
	int fd = fileno(gw->cfg.access_log);
	while (left) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break; /* a full disk: the lines are dropped, not the server */
		p += w;
		left -= (size_t)w;
	}
	cr_buf_reset(&gw->alog);
}

static void on_alog_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	alog_flush(arg);
}

/* The access log's line for one /v1 request. Names from the request are
 * written with anything but printable ASCII as '?', so that one request is
 * always one line. */
static const double latency_bounds[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120 };

/* One finished /v1 request into the model's counters. */
static void observe(struct cr_gateway *gw, const char *model, int status, const struct cr_usage_sample *s)
{
	if (!model || !cr_cluster_model(gw->app, model))
		model = ""; /* names clients make up are not labels */
	struct model_stats *st = cr_map_get(&gw->stats, model);
	if (!st) {
		st = cr_xcalloc(1, sizeof(*st));
		int n = (int)(sizeof(latency_bounds) / sizeof(latency_bounds[0]));
		cr_prom_hist_init(&st->ttft, latency_bounds, n);
		cr_prom_hist_init(&st->duration, latency_bounds, n);
		cr_map_put(&gw->stats, model, st);
	}
	int c = 0;
	while (c < st->ncodes && st->codes[c].status != status)
		c++;
	if (c == st->ncodes && st->ncodes < (int)(sizeof(st->codes) / sizeof(st->codes[0])))
		st->codes[st->ncodes++].status = status;
	if (c < st->ncodes)
		st->codes[c].n++;
	st->prompt_tokens += (uint64_t)(s->prompt_tokens > 0 ? s->prompt_tokens : 0);
	st->completion_tokens += (uint64_t)(s->completion_tokens > 0 ? s->completion_tokens : 0);
	if (s->ttft_ms >= 0)
		cr_prom_observe(&st->ttft, (double)s->ttft_ms / 1000.0);
	cr_prom_observe(&st->duration, (double)s->latency_ms / 1000.0);
}

void cr_gateway_metrics(struct cr_buf *b, void *arg)
{
	struct cr_gateway *gw = arg;
	static const char *const fams[][3] = {
		{ "corral_gateway_requests_total", "counter", "Requests to /v1 by model and HTTP status." },
		{ "corral_gateway_prompt_tokens_total", "counter", "Prompt tokens the engines counted, by model." },
		{ "corral_gateway_completion_tokens_total", "counter", "Completion tokens the engines counted, by model." },
		{ "corral_gateway_time_to_first_token_seconds", "histogram", "Streamed requests: time to the first token." },
		{ "corral_gateway_request_duration_seconds", "histogram", "Requests to /v1: time to the end of the answer." },
	};
	cr_prom_family(b, "corral_gateway_requests_in_flight", "gauge", "Requests being relayed to engines.");
	cr_prom_sample(b, "corral_gateway_requests_in_flight", NULL, gw->inflight);
	for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
		cr_prom_family(b, fams[f][0], fams[f][1], fams[f][2]);
		size_t it = 0;
		const char *model;
		void *v;
		while (cr_map_next(&gw->stats, &it, &model, &v)) {
			struct model_stats *st = v;
			const char *l[] = { "model", model, NULL, NULL, NULL };
			if (f == 0) {
				for (int c = 0; c < st->ncodes; c++) {
					char code[8];
					snprintf(code, sizeof(code), "%d", st->codes[c].status);
					l[2] = "code";
					l[3] = code;
					cr_prom_sample(b, fams[f][0], l, (double)st->codes[c].n);
				}
			} else if (f < 3) {
				cr_prom_sample(b, fams[f][0], l, (double)(f == 1 ? st->prompt_tokens : st->completion_tokens));
			} else {
				cr_prom_hist_write(b, fams[f][0], l, f == 3 ? &st->ttft : &st->duration);
			}
		}
	}
}

static void access_line(struct cr_gateway *gw, const char *key, const char *model, int status,
			const struct cr_usage_sample *s)
{
	observe(gw, model, status, s);
	if (!gw->cfg.access_log)
		return;
	char when[40], safe[2][104];
	const char *in[2] = { key ? key : "-", model && *model ? model : "-" };
	for (int f = 0; f < 2; f++) {
		size_t n = 0;
		for (const unsigned char *c = (const unsigned char *)in[f]; *c && n < sizeof(safe[f]) - 1; c++)
			safe[f][n++] = *c > ' ' && *c < 0x7f ? (char)*c : '?';
		safe[f][n] = 0;
	}
	cr_log_time(when, sizeof(when));
	char line[512], ttft[32] = "";
	if (s->ttft_ms >= 0)
		snprintf(ttft, sizeof(ttft), " ttft_ms=%lld", (long long)s->ttft_ms);
	int n = snprintf(line, sizeof(line),
			 "%s access key=%s model=%s status=%d prompt_tokens=%lld completion_tokens=%lld latency_ms=%lld%s\n",
			 when, safe[0], safe[1], status, (long long)s->prompt_tokens, (long long)s->completion_tokens,
			 (long long)s->latency_ms, ttft);
	/* whole lines, written together each second (or past 32 KiB): one
	 * write() for many requests, and never part of a line */
	cr_buf_add(&gw->alog, line, n > 0 && (size_t)n < sizeof(line) ? (size_t)n : strlen(line));
	if (gw->alog.len >= ALOG_FLUSH_BYTES)
		alog_flush(gw);
}

/* An error answer to a /v1 request before any engine saw it, logged. */
static void reply_logged(struct cr_req *req, const struct cr_apikey *k, const char *model, int code, const char *msg,
			 const char *fix, int retry_s)
{
	struct cr_usage_sample s = { true, 0, 0, -1, 0 };
	access_line(cr_req_ctx(req), k ? k->name : NULL, model, cr_http_status(code), &s);
	if (retry_s)
		cr_reply_error_retry(req, code, msg, retry_s);
	else
		cr_reply_error(req, code, msg, fix);
}

/* A gateway refusal after the key and model are known: counted as an error. */
static void refuse(struct cr_req *req, const struct cr_apikey *k, const char *model, int code, const char *msg,
		   int retry_s)
{
	struct cr_usage_sample s = { true, 0, 0, -1, 0 };
	cr_usage_record(((struct cr_gateway *)cr_req_ctx(req))->app, k, model, &s);
	reply_logged(req, k, model, code, msg, NULL, retry_s);
}

/* Text a request sends the model: its length in bytes. */
static size_t text_bytes(json_t *v)
{
	if (json_is_string(v))
		return json_string_length(v);
	size_t n = 0, i;
	json_t *x;
	const char *k;
	if (json_is_array(v))
		json_array_foreach(v, i, x)
			n += text_bytes(x) + 32; /* each message or item: the chat template's text around it */
	else if (json_is_object(v))
		json_object_foreach(v, k, x)
			if (!strcmp(k, "content") || !strcmp(k, "text"))
				n += text_bytes(x);
	return n;
}

/* The most tokens a request may cost, known before it runs: what it asks
 * for (max_tokens, else a default) and its text counted a token per byte (a
 * tokenizer never makes more tokens than bytes; real ones make about a
 * quarter as many). Held against the key's tpm while it runs, so that
 * concurrent requests cannot all pass a limit none has reached yet; the
 * count replaces it when the answer ends. */
static int64_t token_estimate(json_t *body)
{
	json_t *mt = json_object_get(body, "max_completion_tokens");
	if (!json_is_integer(mt))
		mt = json_object_get(body, "max_tokens");
	const char *fields[] = { "messages", "prompt", "input", "query", "documents" };
	size_t bytes = 0;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		bytes += text_bytes(json_object_get(body, fields[i]));
	int64_t out = json_is_integer(mt) && json_integer_value(mt) > 0 ? json_integer_value(mt) : 256;
	if (json_object_get(body, "input") || json_object_get(body, "documents"))
		out = 0; /* embeddings and rerank generate nothing */
	return (int64_t)bytes + 32 + out;
}

/* Today and this month in UTC ("2026-11-30", "2026-11"), and the seconds
 * until each ends. */
struct period {
	char day[11], month[8];
	int to_midnight, to_month_end;
};

static void utc_period(struct period *p)
{
	time_t now = (time_t)(cr_wall_ms() / 1000);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(p->day, sizeof(p->day), "%Y-%m-%d", &tm);
	strftime(p->month, sizeof(p->month), "%Y-%m", &tm);
	p->to_midnight = 86400 - (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec);
	struct tm next = { .tm_year = tm.tm_mon == 11 ? tm.tm_year + 1 : tm.tm_year, .tm_mon = (tm.tm_mon + 1) % 12,
			   .tm_mday = 1 };
	p->to_month_end = (int)(timegm(&next) - now);
}

/* Whether a quota (0: none) would be passed by a request of need tokens,
 * with used counted and reserved held by requests in flight. */
static bool quota_passed(int64_t used, int64_t reserved, int64_t need, int64_t quota)
{
	return quota && (used >= quota || used + reserved + need > quota);
}

/* One account's limits (a key's or its user's; 0: none) against its meter,
 * for a request that may take need tokens: 0, or the seconds to wait with
 * msg filled. Changes nothing but the meter's periods. */
static int over(const char *who, int64_t rpm, int64_t tpm, int64_t daily, int64_t monthly, struct cr_meter *mt,
		const struct period *pd, int64_t need, char *msg, size_t n)
{
	int64_t now = cr_mono_ms();
	if (now - mt->window_start_ms >= 60000) {
		mt->window_start_ms = now;
		mt->window_requests = 0;
		mt->window_tokens = 0;
	}
	if (strcmp(mt->day, pd->day) != 0) {
		snprintf(mt->day, sizeof(mt->day), "%s", pd->day);
		mt->day_tokens = 0;
	}
	if (strcmp(mt->month, pd->month) != 0) {
		snprintf(mt->month, sizeof(mt->month), "%s", pd->month);
		mt->month_tokens = 0;
	}
	int to_midnight = pd->to_midnight, to_month_end = pd->to_month_end;
	int retry = (int)((mt->window_start_ms + 60000 - now + 999) / 1000);
	if (rpm && mt->window_requests >= rpm) {
		snprintf(msg, n, "Rate limit reached for %s: %lld requests per minute. Try again in %d s.", who,
			 (long long)rpm, retry);
		return retry;
	}
	/* tokens: those counted, those the requests in flight may still use, and
	 * this one's; a first request in an idle minute always goes (a limit below
	 * one request still lets requests through, slowly) */
	int64_t held = mt->window_tokens + mt->reserved_tokens;
	if (tpm && (mt->window_tokens >= tpm || (held > 0 && held + need > tpm))) {
		snprintf(msg, n, "Rate limit reached for %s: %lld tokens per minute (%lld used, %lld held by requests in "
				 "flight, this one may take %lld). Try again in %d s.",
			 who, (long long)tpm, (long long)mt->window_tokens, (long long)mt->reserved_tokens, (long long)need,
			 retry);
		return retry;
	}
	/* quotas: the same, over the day and the month */
	if (quota_passed(mt->day_tokens, mt->reserved_tokens, need, daily)) {
		snprintf(msg, n, "Daily token quota of %s reached: %lld of %lld tokens used today (this request may take "
				 "%lld). It resets at 00:00 UTC, in %d h %02d min.",
			 who, (long long)mt->day_tokens, (long long)daily, (long long)need, to_midnight / 3600,
			 to_midnight % 3600 / 60);
		return to_midnight;
	}
	if (quota_passed(mt->month_tokens, mt->reserved_tokens, need, monthly)) {
		snprintf(msg, n, "Monthly token quota of %s reached: %lld of %lld tokens used this month (this request may "
				 "take %lld). It resets on the 1st at 00:00 UTC, in %d days %d h.",
			 who, (long long)mt->month_tokens, (long long)monthly, (long long)need, to_month_end / 86400,
			 to_month_end % 86400 / 3600);
		return to_month_end;
	}
	return 0;
}

/* The limits of key k and of its user for a request of need tokens: 0, or
 * the seconds to wait with msg filled. When it goes, both count it and hold
 * need tokens until it ends (settle). */
static int over_limit(struct cr_apikey *k, int64_t need, char *msg, size_t n)
{
	char who[200];
	struct period pd; /* once per request, for both accounts */
	utc_period(&pd);
	snprintf(who, sizeof(who), "key '%s'", k->name);
	int retry = over(who, k->rpm, k->tpm, k->daily_tokens, k->monthly_tokens, &k->meter, &pd, need, msg, n);
	struct cr_user *u = k->user;
	snprintf(who, sizeof(who), "user '%s'", u->username);
	if (!retry)
		retry = over(who, u->rpm, u->tpm, u->daily_tokens, u->monthly_tokens, &u->meter, &pd, need, msg, n);
	if (retry)
		return retry;
	for (struct cr_meter *mt = &k->meter; mt; mt = mt == &k->meter ? &u->meter : NULL) {
		mt->window_requests++;
		mt->reserved_tokens += need;
	}
	return 0;
}

/* A request of k that held reserved tokens ended having used used. */
static void settle(struct cr_apikey *k, int64_t reserved, int64_t used)
{
	for (struct cr_meter *mt = &k->meter; mt; mt = mt == &k->meter ? &k->user->meter : NULL) {
		mt->reserved_tokens -= reserved; /* the estimate gives way to the count */
		if (mt->reserved_tokens < 0)
			mt->reserved_tokens = 0;
		mt->window_tokens += used;
		mt->day_tokens += used;
		mt->month_tokens += used;
	}
}

/* Ask a streaming request for the final usage chunk. Returns the body to
 * send (body itself, or a new string in *owned) and whether the client had
 * asked for usage. The raw text is kept when possible: only the member is
 * added in front. */
static const char *with_usage(const char *raw, size_t len, json_t *body, char **owned, size_t *out_len,
			      bool *client_usage)
{
	json_t *so = json_object_get(body, "stream_options");
	*owned = NULL;
	*out_len = len;
	*client_usage = json_is_true(json_object_get(so, "include_usage"));
	if (*client_usage)
		return raw;
	if (!so) {
		static const char member[] = "\"stream_options\":{\"include_usage\":true}";
		const char *brace = memchr(raw, '{', len);
		size_t head = (size_t)(brace - raw) + 1;
		const char *rest = brace + 1;
		while (rest < raw + len && (*rest == ' ' || *rest == '\t' || *rest == '\r' || *rest == '\n'))
			rest++;
		bool empty = rest < raw + len && *rest == '}';
		*owned = cr_xasprintf("%.*s%s%s%.*s", (int)head, raw, member, empty ? "" : ",", (int)(len - head),
				      raw + head);
		*out_len = strlen(*owned);
		return *owned;
	}
	json_t *copy = json_deep_copy(body);
	json_t *so2 = json_object_get(copy, "stream_options");
	if (!json_is_object(so2)) {
		so2 = json_object();
		json_object_set_new(copy, "stream_options", so2);
	}
	json_object_set_new(so2, "include_usage", json_true());
	*owned = json_dumps(copy, JSON_COMPACT);
	json_decref(copy);
	*out_len = strlen(*owned);
	return *owned;
}

static void relay_v1(struct cr_req *req)
{
	struct cr_gateway *gw = cr_req_ctx(req);
	struct cr_app *app = gw->app;
	struct cr_apikey *k = (struct cr_apikey *)cr_req_principal(req)->key;
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err);
	if (!body) {
		reply_logged(req, k, NULL, err.code, err.message, err.fix, 0);
		return;
	}
	const char *model = cr_json_get_str(body, "model", NULL);
	if (!model) {
		reply_logged(req, k, NULL, CR_EINPUT, "you must provide a model parameter", NULL, 0);
		return;
	}
	struct cr_model *m = cr_cluster_model(app, model);
	if (!m || !cr_key_allows(k, model)) {
		char msg[256];
		snprintf(msg, sizeof(msg), "The model '%.100s' does not exist or you do not have access to it.", model);
		reply_logged(req, k, model, CR_ENOTFOUND, msg, NULL, 0);
		return;
	}
	char msg[1400];
	int64_t need = token_estimate(body);
	bool any = false;
	size_t it = 0;
	struct cr_instance *i;
	while (!any && cr_cluster_next_instance(app, &it, &i))
		any = !strcmp(i->model_id, m->id) && cr_instance_is_routable(i);
	int retry = any ? over_limit(k, need, msg, sizeof(msg)) : 0;
	if (retry) {
		refuse(req, k, m->name, CR_ELIMIT, msg, retry);
		return;
	}
	if (!any) {
		bool starting;
		why_none(app, m, msg, sizeof(msg), &starting);
		refuse(req, k, m->name, CR_EUNAVAILABLE, msg, starting ? 5 : 0);
		return;
	}
	size_t len;
	const char *raw = cr_req_body(req, &len);
	struct call *c = cr_xcalloc(1, sizeof(*c));
	c->gw = gw;
	c->app = app;
	c->model_id = cr_xstrdup(m->id);
	c->model_name = cr_xstrdup(m->name);
	c->key_hash = cr_xstrdup(k->hash);
	c->reserved = need;
	gw->inflight++;
	c->t_start = cr_mono_ms();
	c->ttft_ms = -1;
	c->stream = json_is_true(json_object_get(body, "stream"));
	char *owned = NULL;
	const char *path = cr_req_uri(req);
	size_t plen = strcspn(path, "?");
	if (c->stream && ((plen == 20 && !strncmp(path, "/v1/chat/completions", 20)) ||
			  (plen == 15 && !strncmp(path, "/v1/completions", 15))))
		raw = with_usage(raw, len, body, &owned, &len, &c->filter.client_wants);
	struct cr_relay_opts o = { gw->pool, gw->cfg.connect_timeout_ms, gw->cfg.first_byte_timeout_ms,
				   gw->cfg.idle_timeout_ms, pick, on_head, check_answer, CHECK_LIMIT, on_data,
				   finished, cr_gateway_error, c };
	cr_relay(req, path, raw, len, &o);
	free(owned);
}

/* Whether m has an instance that serves or is on its way to (a model that
 * nothing could place, or whose every instance failed, cannot run). */
static bool can_run(struct cr_app *app, const struct cr_model *m)
{
	size_t it = 0;
	struct cr_instance *i;
	while (cr_cluster_next_instance(app, &it, &i))
		if (!strcmp(i->model_id, m->id) && i->state != CR_I_ERROR && i->state != CR_I_CRASH_LOOP &&
		    i->state != CR_I_STOPPING)
			return true;
	return false;
}

/* GET /v1/models: the models this key may use and that can run, in OpenAI's
 * shape. The others are in 'corral models' with their cause. */
static void v1_models(struct cr_req *req)
{
	struct cr_gateway *gw = cr_req_ctx(req);
	const struct cr_apikey *k = cr_req_principal(req)->key;
	json_t *data = json_array();
	size_t it = 0;
	struct cr_model *m;
	while (cr_cluster_next_model(gw->app, &it, &m))
		if (cr_key_allows(k, m->name) && can_run(gw->app, m))
			json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s}", "id", m->name, "object", "model", "created",
							      (json_int_t)(m->created_ms / 1000), "owned_by", "corral"));
	cr_reply_json(req, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

/* GET /v1/models/{model} */
static void v1_model(struct cr_req *req)
{
	struct cr_gateway *gw = cr_req_ctx(req);
	const struct cr_apikey *k = cr_req_principal(req)->key;
	struct cr_model *m = cr_cluster_model(gw->app, cr_req_param(req, 0));
	if (!m || !cr_key_allows(k, m->name)) {
		char msg[200];
		snprintf(msg, sizeof(msg), "The model '%.100s' does not exist or you do not have access to it.",
			 cr_req_param(req, 0));
		cr_reply_error(req, CR_ENOTFOUND, msg, NULL);
		return;
	}
	cr_reply_json(req, 200, json_pack("{s:s,s:s,s:I,s:s}", "id", m->name, "object", "model", "created",
					   (json_int_t)(m->created_ms / 1000), "owned_by", "corral"));
}

static const struct cr_http_route routes[] = {
	{ CR_POST, "/v1/chat/completions", CR_AUTH_KEY, relay_v1 },
	{ CR_POST, "/v1/completions", CR_AUTH_KEY, relay_v1 },
	{ CR_POST, "/v1/embeddings", CR_AUTH_KEY, relay_v1 },
	{ CR_POST, "/v1/rerank", CR_AUTH_KEY, relay_v1 },
	{ CR_GET, "/v1/models", CR_AUTH_KEY, v1_models },
	{ CR_GET, "/v1/models/{}", CR_AUTH_KEY, v1_model },
	{ 0, NULL, 0, NULL },
};

void cr_gateway_config_defaults(struct cr_gateway_config *c)
{
	c->connect_timeout_ms = 5000;
	c->first_byte_timeout_ms = 600000;
	c->idle_timeout_ms = 300000;
	c->pool_idle = 16;
	c->access_log = stderr;
}

struct cr_gateway *cr_gateway_new(struct event_base *base, struct cr_app *app, const struct cr_gateway_config *cfg)
{
	struct cr_gateway *gw = cr_xcalloc(1, sizeof(*gw));
	gw->app = app;
	gw->cfg = *cfg;
	/* idle connections go before engines close them (llama-server: 5 s), so
	 * that a request never races an engine's close of an idle connection */
	gw->pool = cr_relay_pool_new(base, cfg->pool_idle, 4);
	gw->alog = (struct cr_buf)CR_BUF_INIT(16 << 20);
	if (cfg->access_log) {
		gw->alog_timer = event_new(base, -1, EV_PERSIST, on_alog_timer, gw);
		struct timeval second = { 1, 0 };
		event_add(gw->alog_timer, &second);
	}
	return gw;
}

void cr_gateway_attach(struct cr_gateway *gw, struct cr_http_server *http)
{
	cr_http_server_add_routes_ctx(http, routes, gw);
	cr_http_server_set_error_style(http, "/v1/", cr_gateway_error);
}

void cr_gateway_free(struct cr_gateway *gw)
{
	if (!gw)
		return;
	cr_relay_pool_free(gw->pool);
	alog_flush(gw);
	if (gw->alog_timer)
		event_free(gw->alog_timer);
	cr_buf_release(&gw->alog);
	size_t it = 0;
	void *v;
	while (cr_map_next(&gw->stats, &it, NULL, &v))
		free(v);
	cr_map_release(&gw->stats);
	free(gw);
}
