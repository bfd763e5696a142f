/* API keys for the gateway: created by users for themselves (admins for
 * anyone), shown once, kept as BLAKE2b hashes, with an optional expiry, model
 * list and per-minute limits; and GET /v1/models, the first gateway route. */
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

static void key_free(struct cr_apikey *k)
{
	if (!k)
		return;
	free(k->id);
	free(k->name);
	free(k->prefix);
	json_decref(k->models);
	free(k);
}

static void load_key(const struct cr_key_rec *r, void *arg)
{
	struct cr_app *app = arg;
	struct cr_user *u = cr_user_by_id(app, r->user_id);
	if (!u)
		return;
	struct cr_apikey *k = cr_xcalloc(1, sizeof(*k));
	k->id = cr_xstrdup(r->id);
	k->name = cr_xstrdup(r->name);
	k->prefix = cr_xstrdup(r->prefix);
	snprintf(k->hash, sizeof(k->hash), "%s", r->hash);
	k->user = u;
	k->models = json_loads(r->models_json, 0, NULL);
	if (!json_is_array(k->models)) {
		json_decref(k->models);
		k->models = json_array();
	}
	k->rpm = r->rpm;
	k->tpm = r->tpm;
	json_t *q = json_loads(r->quotas_json ? r->quotas_json : "{}", 0, NULL);
	k->daily_tokens = cr_json_get_int(q, "daily_tokens", 0);
	k->monthly_tokens = cr_json_get_int(q, "monthly_tokens", 0);
	json_decref(q);
	k->expires_ms = r->expires_ms;
	k->created_ms = r->created_ms;
	cr_map_put(&app->keys, k->hash, k);
}

struct meter_load {
	struct cr_map by_id; /* key id -> key, for the usage rows */
	char day[11], month[8];
};

/* A stored day of a key's usage, into its and its user's meters. */
static void meter_row(const struct cr_usage_rec *r, void *arg)
{
	struct meter_load *ml = arg;
	int64_t tokens = r->prompt_tokens + r->completion_tokens;
	struct cr_apikey *k = cr_map_get(&ml->by_id, r->key_id);
	for (struct cr_meter *mt = k ? &k->meter : NULL; mt; mt = mt == &k->meter ? &k->user->meter : NULL) {
		snprintf(mt->day, sizeof(mt->day), "%s", ml->day);
		snprintf(mt->month, sizeof(mt->month), "%s", ml->month);
		mt->month_tokens += tokens;
		if (!strcmp(r->day, ml->day))
			mt->day_tokens += tokens;
	}
}

int cr_keys_load(struct cr_app *app, struct cr_err *err)
{
	int rc = app->store->ops->key_list(app->store, load_key, app, err);
	if (rc)
		return rc;
	/* what keys and users used today and this month, for their quotas */
	struct meter_load ml = { CR_MAP_INIT, "", "" };
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->keys, &it, NULL, &v))
		cr_map_put(&ml.by_id, ((struct cr_apikey *)v)->id, v);
	time_t now = (time_t)(cr_wall_ms() / 1000);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(ml.day, sizeof(ml.day), "%Y-%m-%d", &tm);
	strftime(ml.month, sizeof(ml.month), "%Y-%m", &tm);
	char since[11];
	snprintf(since, sizeof(since), "%s-01", ml.month);
	struct cr_usage_query q = { since, NULL, 0, NULL, NULL, true, true, false, false };
	rc = app->store->ops->usage_query(app->store, &q, meter_row, &ml, err);
	cr_map_release(&ml.by_id);
	return rc;
}

struct key_sync {
	struct cr_app *app;
	struct cr_map seen; /* hash -> itself */
};

static void sync_key(const struct cr_key_rec *r, void *arg)
{
	struct key_sync *ks = arg;
	if (!cr_map_get(&ks->app->keys, r->hash))
		load_key(r, ks->app); /* keys never change: made on another server */
	cr_map_put(&ks->seen, r->hash, ks);
}

int cr_keys_sync(struct cr_app *app, struct cr_err *err)
{
	struct key_sync ks = { app, CR_MAP_INIT };
	int rc = app->store->ops->key_list(app->store, sync_key, &ks, err);
	size_t it = 0;
	void *v;
	const char *k;
	while (!rc && cr_map_next(&app->keys, &it, &k, &v))
		if (!cr_map_get(&ks.seen, k)) { /* revoked on another server */
			cr_map_del(&app->keys, k);
			key_free(v);
		}
	cr_map_release(&ks.seen);
	return rc;
}

void cr_keys_free_all(struct cr_app *app)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->keys, &it, NULL, &v))
		key_free(v);
	cr_map_release(&app->keys);
}

struct cr_apikey *cr_key_check(struct cr_app *app, const char *token)
{
	char hash[CR_HASH_HEX];
	cr_secret_hash(token, hash);
	struct cr_apikey *k = cr_map_get(&app->keys, hash);
	if (!k || (k->expires_ms && k->expires_ms <= cr_wall_ms()))
		return NULL;
	return k;
}

static bool list_allows(json_t *models, const char *model)
{
	if (!json_array_size(models))
		return true;
	size_t i;
	json_t *m;
	json_array_foreach(models, i, m)
		if (!strcmp(json_string_value(m), model))
			return true;
	return false;
}

bool cr_key_allows(const struct cr_apikey *key, const char *model)
{
	return list_allows(key->models, model) && list_allows(key->user->models, model);
}

static json_t *key_json(const struct cr_apikey *k)
{
	char created[40], expires[40] = "";
	cr_time_format(k->created_ms, created, sizeof(created));
	if (k->expires_ms)
		cr_time_format(k->expires_ms, expires, sizeof(expires));
	return json_pack("{s:s,s:s,s:s,s:s,s:O,s:I,s:I,s:I,s:I,s:s,s:o}", "id", k->id, "name", k->name, "owner",
			 k->user->username, "prefix", k->prefix, "models", k->models, "rpm", (json_int_t)k->rpm, "tpm",
			 (json_int_t)k->tpm, "daily_tokens", (json_int_t)k->daily_tokens, "monthly_tokens",
			 (json_int_t)k->monthly_tokens, "created_at", created, "expires_at",
			 k->expires_ms ? json_string(expires) : json_null());
}

/* A key limit within its owner's: an unset one takes the owner's, a larger
 * one is refused. 0 when it fits (*v set), else the error. */
static int within(const char *field, long long *v, int64_t user_limit, const char *owner, struct cr_err *err)
{
	if (!user_limit)
		return 0;
	if (*v > user_limit)
		return cr_err_set(err, CR_EINPUT, "ask an admin to raise the user's limit ('corral users limits')",
				  "%s %lld is over the limit of %lld an admin set for user '%s'", field, *v,
				  (long long)user_limit, owner);
	if (!*v)
		*v = user_limit;
	return 0;
}

/* POST /api/keys {"name", "models"?, "rpm"?, "tpm"?, "daily_tokens"?,
 * "monthly_tokens"?, "expires_days"?, "owner"? (admins)}: within the owner's
 * limits. */
static void create_key(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_principal *p = cr_req_principal(req);
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err), *models = NULL;
	const char *name = NULL, *owner = NULL;
	long long rpm = 0, tpm = 0, days = 0, daily = 0, monthly = 0;
	if (!body || cr_json_req_str(body, "name", &name, &err) || cr_json_arr(body, "models", &models, &err) ||
	    cr_json_int(body, "rpm", 0, 1000000, &rpm, &err) || cr_json_int(body, "tpm", 0, 1000000000, &tpm, &err) ||
	    cr_json_int(body, "daily_tokens", 0, 1LL << 50, &daily, &err) ||
	    cr_json_int(body, "monthly_tokens", 0, 1LL << 50, &monthly, &err) ||
	    cr_json_int(body, "expires_days", 0, 3650, &days, &err) || cr_json_str(body, "owner", &owner, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	if (!*name || strlen(name) > 64) {
		cr_reply_error(req, CR_EINPUT, "key name must be 1 to 64 characters", "give --name a short label");
		return;
	}
	size_t i;
	json_t *m;
	json_array_foreach(models, i, m)
		if (!json_is_string(m)) {
			cr_reply_error(req, CR_EINPUT, "field 'models' must be a list of model names", "e.g. [\"qwen-7b\"]");
			return;
		}
	struct cr_user *u = cr_map_get(&app->users, p->username);
	if (owner && strcmp(owner, p->username) != 0) {
		if (!p->admin) {
			cr_reply_error(req, CR_EFORBID, "only admins create keys for other users", "leave out 'owner'");
			return;
		}
		u = cr_map_get(&app->users, owner);
		if (!u) {
			cr_reply_error(req, CR_ENOTFOUND, "no such user", "list users with 'corral users'");
			return;
		}
	}
	if (within("rpm", &rpm, u->rpm, u->username, &err) || within("tpm", &tpm, u->tpm, u->username, &err) ||
	    within("daily_tokens", &daily, u->daily_tokens, u->username, &err) ||
	    within("monthly_tokens", &monthly, u->monthly_tokens, u->username, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	json_array_foreach(models, i, m)
		if (json_array_size(u->models) && !list_allows(u->models, json_string_value(m))) {
			char msg[300];
			snprintf(msg, sizeof(msg), "model '%.100s' is not among the models an admin allowed user '%s'",
				 json_string_value(m), u->username);
			cr_reply_error(req, CR_EINPUT, msg, "leave it out, or ask an admin ('corral users limits')");
			return;
		}
	char *token = cr_secret_token("sk-corral");
	struct cr_apikey *k = cr_xcalloc(1, sizeof(*k));
	k->id = cr_secret_id();
	k->name = cr_xstrdup(name);
	k->prefix = cr_xstrndup(token, 14);
	cr_secret_hash(token, k->hash);
	k->user = u;
	k->models = models ? json_deep_copy(models) : json_array();
	k->rpm = rpm;
	k->tpm = tpm;
	k->daily_tokens = daily;
	k->monthly_tokens = monthly;
	k->created_ms = cr_wall_ms();
	k->expires_ms = days ? k->created_ms + days * 86400000LL : 0;
	char *mj = cr_json_dump(k->models);
	char *qj = cr_xasprintf("{\"daily_tokens\":%lld,\"monthly_tokens\":%lld}", daily, monthly);
	struct cr_key_rec rec = { k->id, k->name, u->id, k->hash, k->prefix, mj, rpm, tpm, k->expires_ms, k->created_ms,
				  qj };
	int rc = app->store->ops->key_add(app->store, &rec, &err);
	free(mj);
	free(qj);
	if (rc) {
		key_free(k);
		free(token);
		cr_reply_err(req, &err);
		return;
	}
	cr_map_put(&app->keys, k->hash, k);
	cr_info("API key '%s' (%s) created for '%s'", k->name, k->prefix, u->username);
	cr_audit(app, req, NULL, "key.create", k->name, json_pack("{s:s,s:s}", "prefix", k->prefix, "owner", u->username));
	json_t *o = key_json(k);
	json_object_set_new(o, "key", json_string(token)); /* shown this once */
	memset(token, 0, strlen(token));
	free(token);
	cr_reply_json(req, 201, o);
}

static void list_keys(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_principal *p = cr_req_principal(req);
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->keys, &it, NULL, &v)) {
		struct cr_apikey *k = v;
		if (p->admin || !strcmp(k->user->username, p->username))
			json_array_append_new(arr, key_json(k));
	}
	cr_json_sort(arr, "owner", "name");
	cr_reply_json(req, 200, json_pack("{s:o}", "keys", arr));
}

static void delete_key(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_principal *p = cr_req_principal(req);
	const char *id = cr_req_param(req, 0);
	size_t it = 0;
	void *v;
	struct cr_apikey *found = NULL;
	int by_name = 0;
	/* by id: any key the caller may see (admins: all); by name: only among
	 * the caller's own keys, where names are the caller's to choose */
	while (cr_map_next(&app->keys, &it, NULL, &v)) {
		struct cr_apikey *k = v;
		bool own = !strcmp(k->user->username, p->username);
		if (!strcmp(k->id, id) && (p->admin || own)) {
			found = k;
			by_name = 0;
			break;
		}
		if (own && !strcmp(k->name, id)) {
			found = k;
			by_name++;
		}
	}
	if (by_name > 1) {
		cr_reply_error(req, CR_ECONFLICT, "several of your keys have that name",
			       "revoke one by its id (see 'corral keys')");
		return;
	}
	if (!found) { /* other users' keys are not revealed */
		cr_reply_error(req, CR_ENOTFOUND, "no such key", "list your keys with 'corral keys'");
		return;
	}
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->key_del(app->store, found->id, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	cr_map_del(&app->keys, found->hash);
	cr_audit(app, req, NULL, "key.revoke", found->name,
		 json_pack("{s:s,s:s}", "prefix", found->prefix, "owner", found->user->username));
	json_t *o = json_pack("{s:s,s:s}", "deleted", found->id, "name", found->name);
	key_free(found);
	cr_reply_json(req, 200, o);
}

struct cr_apikey *cr_cluster_key(struct cr_app *app, const char *hash)
{
	return cr_map_get(&app->keys, hash);
}

const struct cr_http_route cr_api_key_routes[] = {
	{ CR_POST, "/api/keys", CR_AUTH_USER, create_key },
	{ CR_GET, "/api/keys", CR_AUTH_USER, list_keys },
	{ CR_DELETE, "/api/keys/{}", CR_AUTH_USER, delete_key },
	{ 0, NULL, 0, NULL },
};

void cr_keys_forget_user(struct cr_app *app, const struct cr_user *u)
{
	size_t it = 0;
	void *v;
	const char *k;
	while (cr_map_next(&app->keys, &it, &k, &v))
		if (((struct cr_apikey *)v)->user == u) {
			cr_map_del(&app->keys, k);
			key_free(v);
		}
}
