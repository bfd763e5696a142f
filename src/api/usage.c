/* Gateway metering: counters per day, key and model kept in memory as deltas
 * since the last flush, added to the store's rows at each flush (and at
 * shutdown), and summed back by GET /api/usage. Users see their own usage;
 * admins anyone's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/internal.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "store/store.h"

static void day_of(int64_t wall_ms, char out[11])
{
	time_t t = (time_t)(wall_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 11, "%Y-%m-%d", &tm);
}

static void rec_free(struct cr_usage_rec *r)
{
	free(r->day);
	free(r->key_id);
	free(r->key_name);
	free(r->username);
	free(r->model);
	free(r);
}

void cr_usage_record(struct cr_app *app, const struct cr_apikey *k, const char *model,
		     const struct cr_usage_sample *s)
{
	char day[11], key[512];
	day_of(cr_wall_ms(), day);
	snprintf(key, sizeof(key), "%s\x1f%s\x1f%s", day, k->id, model);
	struct cr_usage_rec *r = cr_map_get(&app->usage, key);
	if (!r) {
		r = cr_xcalloc(1, sizeof(*r));
		r->day = cr_xstrdup(day);
		r->key_id = cr_xstrdup(k->id);
		r->key_name = cr_xstrdup(k->name);
		r->user_id = k->user->id;
		r->username = cr_xstrdup(k->user->username);
		r->model = cr_xstrdup(model);
		cr_map_put(&app->usage, key, r);
	}
	r->requests++;
	r->errors += s->error;
	r->prompt_tokens += s->prompt_tokens;
	r->completion_tokens += s->completion_tokens;
	if (s->ttft_ms >= 0) {
		r->ttft_ms_sum += s->ttft_ms;
		r->ttft_count++;
	}
	r->latency_ms_sum += s->latency_ms;
}

int cr_usage_flush(struct cr_app *app, struct cr_err *err)
{
	if (!app->usage.count)
		return 0;
	const struct cr_usage_rec **rows = cr_xcalloc(app->usage.count, sizeof(*rows));
	size_t n = 0, it = 0;
	void *v;
	while (cr_map_next(&app->usage, &it, NULL, &v))
		rows[n++] = v;
	int rc = app->store->ops->usage_add(app->store, rows, n, err);
	free(rows);
	if (rc)
		return rc; /* kept for the next flush */
	it = 0;
	while (cr_map_next(&app->usage, &it, NULL, &v))
		rec_free(v);
	cr_map_release(&app->usage);
	return 0;
}

void cr_usage_free_all(struct cr_app *app)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->usage, &it, NULL, &v))
		rec_free(v);
	cr_map_release(&app->usage);
}

/* "YYYY-MM-DD", or "Nd" for the last N days including today. */
static int parse_day(const char *name, const char *v, char out[11], struct cr_err *err)
{
	char *end;
	long days = strtol(v, &end, 10);
	if (end != v && !strcmp(end, "d") && days >= 1 && days <= 36600) {
		day_of(cr_wall_ms() - (int64_t)(days - 1) * 86400000, out);
		return 0;
	}
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *rest = strptime(v, "%Y-%m-%d", &tm);
	if (!rest || *rest || strlen(v) != 10)
		return cr_err_set(err, CR_EINPUT, "give a date as YYYY-MM-DD or a number of days like 7d",
				  "'%s' is not a day: '%.40s'", name, v);
	snprintf(out, 11, "%s", v);
	return 0;
}

struct query_out {
	json_t *rows;
	struct cr_usage_rec total;
};

static json_t *counters(const struct cr_usage_rec *u)
{
	json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I}", "requests", (json_int_t)u->requests, "errors",
			      (json_int_t)u->errors, "prompt_tokens", (json_int_t)u->prompt_tokens, "completion_tokens",
			      (json_int_t)u->completion_tokens, "total_tokens",
			      (json_int_t)(u->prompt_tokens + u->completion_tokens));
	json_object_set_new(o, "ttft_ms_avg", u->ttft_count ? json_integer(u->ttft_ms_sum / u->ttft_count) : json_null());
	json_object_set_new(o, "latency_ms_avg", u->requests ? json_integer(u->latency_ms_sum / u->requests) : json_null());
	return o;
}

static void query_row(const struct cr_usage_rec *u, void *arg)
{
	struct query_out *q = arg;
	json_t *row = json_object();
	if (*u->day)
		json_object_set_new(row, "day", json_string(u->day));
	if (*u->key_id) {
		json_object_set_new(row, "key_id", json_string(u->key_id));
		json_object_set_new(row, "key", json_string(u->key_name));
	}
	if (*u->username)
		json_object_set_new(row, "user", json_string(u->username));
	if (*u->model)
		json_object_set_new(row, "model", json_string(u->model));
	json_object_update_new(row, counters(u));
	json_array_append_new(q->rows, row);
	q->total.requests += u->requests;
	q->total.errors += u->errors;
	q->total.prompt_tokens += u->prompt_tokens;
	q->total.completion_tokens += u->completion_tokens;
	q->total.ttft_ms_sum += u->ttft_ms_sum;
	q->total.ttft_count += u->ttft_count;
	q->total.latency_ms_sum += u->latency_ms_sum;
}

static void get_usage(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_principal *p = cr_req_principal(req);
	struct cr_err err = CR_ERR_INIT;
	char since[11], until[11];
	const char *v = cr_req_query(req, "since");
	if (parse_day("since", v ? v : "7d", since, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	v = cr_req_query(req, "until");
	if (v && parse_day("until", v, until, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	if (!v)
		day_of(cr_wall_ms(), until);
	struct cr_usage_query q = { since, until, p->admin ? 0 : p->user_id, NULL, cr_req_query(req, "model"), false,
				    false, false, false };
	const char *user = cr_req_query(req, "user");
	if (user && !p->admin && strcmp(user, p->username) != 0) {
		cr_reply_error(req, CR_EFORBID, "only admins can see another user's usage", "leave out 'user'");
		return;
	}
	if (user) {
		struct cr_user *u = cr_map_get(&app->users, user);
		if (!u) {
			cr_reply_error(req, CR_ENOTFOUND, "no such user", "see 'corral users'");
			return;
		}
		q.user_id = u->id;
	}
	const char *key = cr_req_query(req, "key");
	if (key) { /* a key's name (the caller's own first) or its id */
		struct cr_apikey *own = NULL, *other = NULL;
		size_t it = 0;
		void *kv;
		while (cr_map_next(&app->keys, &it, NULL, &kv)) {
			struct cr_apikey *k = kv;
			if (strcmp(k->name, key) != 0)
				continue;
			if (k->user->id == p->user_id)
				own = k;
			else if (!other)
				other = k;
		}
		q.key_id = own ? own->id : p->admin && other ? other->id : key;
	}
	char by[128];
	snprintf(by, sizeof(by), "%s", cr_req_query(req, "by") ? cr_req_query(req, "by") : "");
	char *save = NULL;
	for (char *t = strtok_r(by, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (!strcmp(t, "day"))
			q.by_day = true;
		else if (!strcmp(t, "key"))
			q.by_key = true;
		else if (!strcmp(t, "user"))
			q.by_user = true;
		else if (!strcmp(t, "model"))
			q.by_model = true;
		else {
			char msg[160];
			snprintf(msg, sizeof(msg), "'by' takes day, key, user or model, not '%.40s'", t);
			cr_reply_error(req, CR_EINPUT, msg, "e.g. by=key,model");
			return;
		}
	}
	if (cr_usage_flush(app, &err)) { /* answer with what was counted up to now */
		cr_reply_err(req, &err);
		return;
	}
	struct query_out out = { json_array(), { 0 } };
	out.total.day = out.total.key_id = out.total.key_name = out.total.username = out.total.model = "";
	if (app->store->ops->usage_query(app->store, &q, query_row, &out, &err)) {
		json_decref(out.rows);
		cr_reply_err(req, &err);
		return;
	}
	cr_reply_json(req, 200, json_pack("{s:s,s:s,s:o,s:o}", "since", since, "until", until, "rows", out.rows,
					   "total", counters(&out.total)));
}

const struct cr_http_route cr_api_usage_routes[] = {
	{ CR_GET, "/api/usage", CR_AUTH_USER, get_usage },
	{ 0, NULL, 0, NULL },
};
