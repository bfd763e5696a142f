/* Users, sessions and the cluster token: first-start bootstrap, login with
 * argon2id verification off the event loop, and the auth hook that every
 * protected route passes through. Tokens are kept only as BLAKE2b hashes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/internal.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "http/workpool.h"
#include "store/store.h"

/* u's limits from their JSON ({"models", "rpm", "tpm", "daily_tokens",
 * "monthly_tokens"}, each optional). */
static void set_limits_from(struct cr_user *u, json_t *lim)
{
	json_decref(u->models);
	json_t *models = json_object_get(lim, "models");
	u->models = json_is_array(models) ? json_deep_copy(models) : json_array();
	u->rpm = cr_json_get_int(lim, "rpm", 0);
	u->tpm = cr_json_get_int(lim, "tpm", 0);
	u->daily_tokens = cr_json_get_int(lim, "daily_tokens", 0);
	u->monthly_tokens = cr_json_get_int(lim, "monthly_tokens", 0);
}

json_t *cr_user_limits_json(const struct cr_user *u)
{
	json_t *o = json_pack("{s:O,s:I,s:I,s:I,s:I}", "models", u->models, "rpm", (json_int_t)u->rpm, "tpm",
			      (json_int_t)u->tpm, "daily_tokens", (json_int_t)u->daily_tokens, "monthly_tokens",
			      (json_int_t)u->monthly_tokens);
	return o;
}

static struct cr_user *user_cache(struct cr_app *app, const struct cr_user_rec *r)
{
	struct cr_user *u = cr_xcalloc(1, sizeof(*u));
	u->id = r->id;
	u->username = cr_xstrdup(r->username);
	u->password_hash = cr_xstrdup(r->password_hash);
	u->admin = !strcmp(r->role, "admin");
	json_t *lim = json_loads(r->limits_json ? r->limits_json : "{}", 0, NULL);
	set_limits_from(u, lim);
	json_decref(lim);
	cr_map_put(&app->users, u->username, u);
	return u;
}

static void load_user(const struct cr_user_rec *r, void *arg)
{
	user_cache(arg, r);
}

struct cr_user *cr_user_by_id(struct cr_app *app, int64_t id)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->users, &it, NULL, &v)) {
		struct cr_user *u = v;
		if (u->id == id)
			return u;
	}
	return NULL;
}

static void load_session(const struct cr_session_rec *r, void *arg)
{
	struct cr_app *app = arg;
	struct cr_user *u = cr_user_by_id(app, r->user_id);
	if (!u)
		return;
	struct cr_session *s = cr_xcalloc(1, sizeof(*s));
	snprintf(s->hash, sizeof(s->hash), "%s", r->token_hash);
	s->user = u;
	s->created_ms = r->created_ms;
	s->expires_ms = r->expires_ms;
	cr_map_put(&app->sessions, s->hash, s);
}

/* A deleted user out of memory, with their sessions and keys. Frees u. */
static void user_forget(struct cr_app *app, struct cr_user *u)
{
	size_t it = 0;
	void *v;
	const char *k;
	while (cr_map_next(&app->sessions, &it, &k, &v))
		if (((struct cr_session *)v)->user == u) {
			cr_map_del(&app->sessions, k);
			free(v);
		}
	cr_keys_forget_user(app, u);
	cr_map_del(&app->users, u->username);
	free(u->username);
	free(u->password_hash);
	json_decref(u->models);
	free(u);
}

/* ---- several servers: what the others wrote ---- */

struct user_sync {
	struct cr_app *app;
	struct cr_map seen; /* username / session hash -> itself */
};

/* A stored user into memory: changed in place (pointers to it stay good),
 * added when new, and a name taken by a new id (deleted and made again)
 * forgotten first. */
static void sync_user(const struct cr_user_rec *r, void *arg)
{
	struct user_sync *us = arg;
	struct cr_user *u = cr_map_get(&us->app->users, r->username);
	if (u && u->id != r->id) {
		user_forget(us->app, u);
		u = NULL;
	}
	if (!u) {
		u = user_cache(us->app, r);
	} else {
		if (strcmp(u->password_hash, r->password_hash))
			cr_str_replace(&u->password_hash, r->password_hash);
		u->admin = !strcmp(r->role, "admin");
		json_t *lim = json_loads(r->limits_json ? r->limits_json : "{}", 0, NULL);
		set_limits_from(u, lim);
		json_decref(lim);
	}
	cr_map_put(&us->seen, u->username, u);
}

static void sync_session(const struct cr_session_rec *r, void *arg)
{
	struct user_sync *us = arg;
	if (!cr_map_get(&us->app->sessions, r->token_hash))
		load_session(r, us->app);
	cr_map_put(&us->seen, r->token_hash, us);
}

int cr_auth_sync(struct cr_app *app, struct cr_err *err)
{
	struct user_sync us = { app, CR_MAP_INIT };
	int rc = app->store->ops->user_list(app->store, sync_user, &us, err);
	size_t it = 0;
	void *v;
	const char *k;
	while (!rc && cr_map_next(&app->users, &it, &k, &v)) /* only after a whole list: deleted since */
		if (!cr_map_get(&us.seen, k))
			user_forget(app, v);
	cr_map_release(&us.seen);
	if (!rc)
		rc = app->store->ops->session_list(app->store, cr_wall_ms(), sync_session, &us, err);
	it = 0;
	while (!rc && cr_map_next(&app->sessions, &it, &k, &v))
		if (!cr_map_get(&us.seen, k)) { /* logged out or revoked on another server */
			cr_map_del(&app->sessions, k);
			free(v);
		}
	cr_map_release(&us.seen);
	return rc;
}

static int create_admin(struct cr_app *app, struct cr_err *err)
{
	char *password = cr_secret_password(20);
	char *hash = cr_password_hash(password);
	if (!hash)
		abort();
	struct cr_user_rec rec = { 0, "admin", hash, "admin", cr_wall_ms(), NULL };
	char *path = cr_xasprintf("%s/initial_admin_password", app->data_dir);
	char *line = cr_xasprintf("%s\n", password);
	int rc = cr_file_write(path, line, strlen(line), 0600, err);
	if (!rc)
		rc = app->store->ops->user_add(app->store, &rec, err);
	if (!rc) {
		user_cache(app, &rec);
		printf("corral: created user 'admin' with password %s (kept in %s)\n", password, path);
		fflush(stdout);
	}
	memset(password, 0, strlen(password));
	free(password);
	free(line);
	free(path);
	free(hash);
	return rc;
}

/* Cluster token: --token wins, then DATA_DIR/token, else a new one. The
 * clear token lives only in that 0600 file; the store keeps its hash. */
static int bootstrap_token(struct cr_app *app, struct cr_err *err)
{
	char *path = cr_xasprintf("%s/token", app->data_dir);
	int rc = 0;
	bool created = false;
	if (!app->cluster_token) {
		char *text = NULL;
		if (cr_file_read(path, 4096, &text, NULL, NULL) == 0 && *cr_trim(text)) {
			app->cluster_token = cr_xstrdup(cr_trim(text));
		} else {
			char *known = NULL;
			if (app->store->ops->setting_get(app->store, "cluster_token_hash", &known, NULL) == 0 && *known) {
				/* another server of this cluster made it: a new one would lock its workers out */
				free(known);
				free(text);
				rc = cr_err_set(err, CR_EINPUT, NULL, "the store belongs to a cluster whose registration token "
								     "this data directory lacks (%s)", path);
				if (err)
					snprintf(err->fix, sizeof(err->fix), "copy DATA_DIR/token from a server of the cluster "
									      "to %s (mode 0600), or pass --token", path);
				free(path);
				return rc;
			}
			free(known);
			app->cluster_token = cr_secret_token("crt");
			created = true;
		}
		free(text);
	}
	char *line = cr_xasprintf("%s\n", app->cluster_token);
	rc = cr_file_write(path, line, strlen(line), 0600, err);
	free(line);
	cr_secret_hash(app->cluster_token, app->cluster_token_hash);
	if (!rc)
		rc = app->store->ops->setting_put(app->store, "cluster_token_hash", app->cluster_token_hash, err);
	if (!rc && created) {
		printf("corral: cluster registration token %s (kept in %s)\n", app->cluster_token, path);
		fflush(stdout);
	}
	free(path);
	return rc;
}

/* The secret the server's requests to workers are signed with: each worker
 * gets its own key derived from it (cr_worker_server_key), so that the
 * cluster token, which every node holds, opens no worker's endpoints. Kept in
 * the store, made once. */
static int bootstrap_peer_secret(struct cr_app *app, struct cr_err *err)
{
	char *v = NULL;
	int rc = app->store->ops->setting_get(app->store, "peer_secret", &v, err);
	if (rc == CR_ENOTFOUND) {
		*err = (struct cr_err)CR_ERR_INIT;
	} else if (rc) {
		return -1;
	}
	if (!v || !*v) {
		free(v);
		v = cr_secret_token("crp");
		if (app->store->ops->setting_put(app->store, "peer_secret", v, err) != 0) {
			free(v);
			return -1;
		}
	}
	app->peer_secret = v;
	return 0;
}

void cr_worker_server_key(struct cr_app *app, const char *worker_id, char out[CR_HASH_HEX])
{
	cr_secret_mac(app->peer_secret, worker_id, out);
}

int cr_auth_bootstrap(struct cr_app *app, struct cr_err *err)
{
	int rc = app->store->ops->user_list(app->store, load_user, app, err);
	if (!rc && app->users.count == 0)
		rc = create_admin(app, err);
	if (!rc)
		rc = app->store->ops->session_list(app->store, cr_wall_ms(), load_session, app, err);
	if (!rc)
		rc = bootstrap_token(app, err);
	if (!rc)
		rc = bootstrap_peer_secret(app, err);
	/* Unknown users are checked against this so they cost as much as known ones. */
	app->dummy_hash = cr_password_hash("corral-unknown-user");
	/* each argon2id check takes 64 MiB and a core for tens of milliseconds:
	 * half the cores hash, the rest serve the loop; the queue is short so
	 * that a flood is answered 503 at once instead of piling up */
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int threads = cores > 1 ? (int)(cores / 2) : 1;
	app->hash_pool = cr_workpool_new(app->base, threads, 8 * threads);
	return rc;
}

void cr_auth_free_all(struct cr_app *app)
{
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->sessions, &it, NULL, &v))
		free(v);
	cr_map_release(&app->sessions);
	it = 0;
	while (cr_map_next(&app->users, &it, NULL, &v)) {
		struct cr_user *u = v;
		free(u->username);
		free(u->password_hash);
		json_decref(u->models);
		free(u);
	}
	cr_map_release(&app->users);
	free(app->dummy_hash);
	cr_workpool_free(app->hash_pool);
	it = 0;
	while (cr_map_next(&app->login_fails, &it, NULL, &v))
		free(v);
	cr_map_release(&app->login_fails);
}

static const char *bearer(struct cr_req *req)
{
	const char *h = cr_req_header(req, "Authorization");
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h ? h : NULL;
}

static int check_worker(struct cr_req *req, const char *token, struct cr_err *err)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_worker *w = cr_map_get(&app->workers, cr_req_param(req, 0));
	char hash[CR_HASH_HEX];
	cr_secret_hash(token, hash);
	if ((!w || !cr_secret_equal(hash, w->secret_hash)) && cr_app_sync_worker_on_miss(app, cr_req_param(req, 0)))
		w = cr_map_get(&app->workers, cr_req_param(req, 0)); /* registered on another server a moment ago? */
	if (!w || !cr_secret_equal(hash, w->secret_hash))
		return cr_err_set(err, CR_EUNAUTH,
				  "the worker registers again by itself; if this repeats, remove worker.json from its "
				  "data directory and restart it",
				  "unknown worker or wrong worker secret");
	cr_req_principal(req)->worker_id = w->id;
	return 0;
}

int cr_auth_check(struct cr_req *req, enum cr_auth_need need, struct cr_err *err)
{
	struct cr_app *app = cr_req_app(req);
	const char *token = bearer(req);
	if (!token && need == CR_AUTH_KEY)
		return cr_err_set(err, CR_EUNAUTH, "send 'Authorization: Bearer KEY' with an API key from 'corral keys "
				  "create NAME'", "missing API key");
	if (!token)
		return cr_err_set(err, CR_EUNAUTH, "log in with 'corral login', or send 'Authorization: Bearer TOKEN'",
				  "missing bearer token");
	if (need == CR_AUTH_WORKER)
		return check_worker(req, token, err);
	if (need == CR_AUTH_KEY) {
		struct cr_apikey *k = cr_key_check(app, token);
		if (!k && cr_app_sync_on_miss(app, true)) /* made on another server a moment ago? */
			k = cr_key_check(app, token);
		if (!k)
			return cr_err_set(err, CR_EUNAUTH, "create one with 'corral keys create NAME'",
					  "Incorrect API key provided, or the key expired or was revoked.");
		struct cr_principal *p = cr_req_principal(req);
		p->user_id = k->user->id;
		p->username = k->user->username;
		p->admin = false;
		p->key = k;
		return 0;
	}
	char hash[CR_HASH_HEX];
	cr_secret_hash(token, hash);
	struct cr_session *s = cr_map_get(&app->sessions, hash);
	if (!s && cr_app_sync_on_miss(app, true))
		s = cr_map_get(&app->sessions, hash);
	if (!s || s->expires_ms <= cr_wall_ms())
		return cr_err_set(err, CR_EUNAUTH, "log in again with 'corral login'",
				  s ? "session expired" : "invalid or revoked token");
	if (need == CR_AUTH_ADMIN && !s->user->admin)
		return cr_err_set(err, CR_EFORBID, "ask an admin to do this", "user '%s' is not an admin",
				  s->user->username);
	struct cr_principal *p = cr_req_principal(req);
	p->user_id = s->user->id;
	p->username = s->user->username;
	p->admin = s->user->admin;
	return 0;
}

/* ---- failed logins ----
 * Failures are counted per client address and per username in a one-minute
 * window; past the limit, logins from that address or for that user are
 * refused with 429 before any hashing until the window ends: 10 a minute
 * each, so that guesses spread over many addresses are limited too. The
 * price: ten wrong guesses lock the name out for everyone for the rest of
 * that minute (never longer). */

#define FAIL_WINDOW_MS 60000
#define FAIL_LIMIT_ADDR 10
#define FAIL_LIMIT_USER 10
#define FAIL_MAP_MAX 20000 /* entries kept before stale ones are swept */

struct login_fail {
	int64_t window_start_ms;
	int count;
};

static void fail_sweep(struct cr_map *m, int64_t now)
{
	size_t it = 0;
	const char *k;
	void *v;
	while (cr_map_next(m, &it, &k, &v)) {
		struct login_fail *f = v;
		if (now - f->window_start_ms >= FAIL_WINDOW_MS)
			free(cr_map_del(m, k));
	}
}

/* Seconds until key may try again, or 0. */
static int fail_wait_s(struct cr_map *m, const char *key, int limit, int64_t now)
{
	struct login_fail *f = cr_map_get(m, key);
	if (!f || f->count < limit || now - f->window_start_ms >= FAIL_WINDOW_MS)
		return 0;
	return (int)((FAIL_WINDOW_MS - (now - f->window_start_ms) + 999) / 1000);
}

static void fail_count(struct cr_map *m, const char *key, int64_t now)
{
	if (m->count >= FAIL_MAP_MAX)
		fail_sweep(m, now);
	struct login_fail *f = cr_map_get(m, key);
	if (!f) {
		f = cr_xcalloc(1, sizeof(*f));
		cr_map_put(m, key, f);
	}
	if (now - f->window_start_ms >= FAIL_WINDOW_MS) {
		f->window_start_ms = now;
		f->count = 0;
	}
	f->count++;
}

static void fail_keys(const char *peer, const char *username, char *a, size_t an, char *u, size_t un)
{
	snprintf(a, an, "a\x1f%s", peer);
	snprintf(u, un, "u\x1f%.200s", username);
}

/* ---- routes ---- */

/* A new session for u, stored, answered as {"token", "expires_at", "user"}. */
static void reply_new_session(struct cr_req *req, struct cr_app *app, struct cr_user *u)
{
	char *token = cr_secret_token("crs");
	struct cr_session *s = cr_xcalloc(1, sizeof(*s));
	cr_secret_hash(token, s->hash);
	s->user = u;
	int64_t now = cr_wall_ms();
	s->created_ms = now;
	s->expires_ms = now + (int64_t)app->cfg.session_ttl_s * 1000;
	struct cr_session_rec rec = { s->hash, u->id, now, s->expires_ms };
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->session_add(app->store, &rec, &err) != 0) {
		free(s);
		cr_reply_err(req, &err);
	} else {
		cr_map_put(&app->sessions, s->hash, s);
		char when[40];
		cr_time_format(s->expires_ms, when, sizeof(when));
		cr_reply_json(req, 200,
			      json_pack("{s:s,s:s,s:{s:s,s:s}}", "token", token, "expires_at", when, "user", "username",
					u->username, "role", u->admin ? "admin" : "user"));
	}
	memset(token, 0, strlen(token));
	free(token);
}

struct login {
	struct cr_req *req;
	struct cr_app *app;
	char *username, *password, *hash;
	char peer[64];
	bool ok;
};

static void login_work(void *arg)
{
	struct login *l = arg;
	l->ok = cr_password_verify(l->hash, l->password);
}

static void login_done(void *arg)
{
	struct login *l = arg;
	struct cr_app *app = l->app;
	struct cr_user *u = cr_map_get(&app->users, l->username);
	if (!l->ok || !u) {
		char ka[128], ku[256];
		int64_t now = cr_mono_ms();
		fail_keys(l->peer, l->username, ka, sizeof(ka), ku, sizeof(ku));
		fail_count(&app->login_fails, ka, now);
		fail_count(&app->login_fails, ku, now);
		cr_audit(app, l->req, l->username, "login.fail", l->username, NULL);
		cr_reply_error(l->req, CR_EUNAUTH, "wrong username or password",
			       "check the credentials; the first admin password is in DATA_DIR/initial_admin_password");
		goto out;
	}
	cr_audit(app, l->req, u->username, "login", u->username, NULL);
	reply_new_session(l->req, app, u);
out:
	memset(l->password, 0, strlen(l->password));
	free(l->password);
	free(l->username);
	free(l->hash);
	free(l);
}

static void login(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_err err = CR_ERR_INIT;
	const char *username = NULL, *password = NULL;
	json_t *body = cr_req_json(req, &err);
	if (!body || cr_json_req_str(body, "username", &username, &err) ||
	    cr_json_req_str(body, "password", &password, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	char ka[128], ku[256];
	int64_t now = cr_mono_ms();
	fail_keys(cr_req_peer(req), username, ka, sizeof(ka), ku, sizeof(ku));
	int wait_a = fail_wait_s(&app->login_fails, ka, FAIL_LIMIT_ADDR, now);
	int wait_u = fail_wait_s(&app->login_fails, ku, FAIL_LIMIT_USER, now);
	if (wait_a || wait_u) {
		char msg[200];
		snprintf(msg, sizeof(msg), "too many failed logins %s; try again in %d s",
			 wait_a ? "from this address" : "for this user", wait_a > wait_u ? wait_a : wait_u);
		cr_reply_error_retry(req, CR_ELIMIT, msg, wait_a > wait_u ? wait_a : wait_u);
		return;
	}
	struct cr_user *u = cr_map_get(&app->users, username);
	/* made on another server a moment ago? (not rate limited: failed logins are) */
	if (!u && cr_app_sync_on_miss(app, false))
		u = cr_map_get(&app->users, username);
	struct login *l = cr_xcalloc(1, sizeof(*l));
	l->req = req;
	l->app = app;
	l->username = cr_xstrdup(username);
	l->password = cr_xstrdup(password);
	l->hash = cr_xstrdup(u ? u->password_hash : app->dummy_hash);
	snprintf(l->peer, sizeof(l->peer), "%s", cr_req_peer(req));
	if (cr_workpool_submit(app->hash_pool, login_work, login_done, l) != 0) {
		memset(l->password, 0, strlen(l->password));
		free(l->password);
		free(l->username);
		free(l->hash);
		free(l);
		cr_reply_error_retry(req, CR_EUNAVAILABLE, "too many logins are being checked right now; try again in 1 s",
				     1);
	}
}

static void logout(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	char hash[CR_HASH_HEX];
	cr_secret_hash(bearer(req), hash);
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->session_del(app->store, hash, &err) != 0) {
		cr_reply_err(req, &err);
		return;
	}
	free(cr_map_del(&app->sessions, hash));
	cr_reply_json(req, 200, json_pack("{s:b}", "logged_out", 1));
}

static void me(struct cr_req *req)
{
	struct cr_principal *p = cr_req_principal(req);
	cr_reply_json(req, 200, json_pack("{s:s,s:s}", "username", p->username, "role", p->admin ? "admin" : "user"));
}

/* ---- users (admins) ---- */

struct newuser {
	struct cr_req *req;
	struct cr_app *app;
	char *username, *password, *role, *hash;
};

static void newuser_work(void *arg)
{
	struct newuser *n = arg;
	n->hash = cr_password_hash(n->password);
}

static void newuser_done(void *arg)
{
	struct newuser *n = arg;
	struct cr_app *app = n->app;
	struct cr_user_rec rec = { 0, n->username, n->hash, n->role, cr_wall_ms(), NULL };
	struct cr_err err = CR_ERR_INIT;
	if (cr_map_get(&app->users, n->username)) /* created meanwhile */
		cr_err_set(&err, CR_ECONFLICT, "choose another name", "user '%s' already exists", n->username);
	else
		app->store->ops->user_add(app->store, &rec, &err);
	if (err.code) {
		cr_reply_err(n->req, &err);
	} else {
		user_cache(app, &rec);
		cr_info("user '%s' (%s) created", n->username, n->role);
		cr_audit(app, n->req, NULL, "user.create", n->username, json_pack("{s:s}", "role", n->role));
		cr_reply_json(n->req, 201, json_pack("{s:s,s:s}", "username", n->username, "role", n->role));
	}
	memset(n->password, 0, strlen(n->password));
	free(n->password);
	free(n->username);
	free(n->role);
	free(n->hash);
	free(n);
}

static void create_user(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_err err = CR_ERR_INIT;
	const char *username = NULL, *password = NULL, *role = NULL;
	json_t *body = cr_req_json(req, &err);
	if (!body || cr_json_req_str(body, "username", &username, &err) ||
	    cr_json_req_str(body, "password", &password, &err) || cr_json_str(body, "role", &role, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	bool ok = *username && strlen(username) <= 32;
	for (const char *c = username; ok && *c; c++)
		ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr("._-", *c);
	if (!ok) {
		cr_reply_error(req, CR_EINPUT, "username must be 1 to 32 of a-z, 0-9, '.', '_', '-'", "choose another name");
		return;
	}
	if (strlen(password) < 8) {
		cr_reply_error(req, CR_EINPUT, "password must have at least 8 characters", "choose a longer password");
		return;
	}
	if (role && strcmp(role, "user") != 0 && strcmp(role, "admin") != 0) {
		cr_reply_error(req, CR_EINPUT, "role must be 'user' or 'admin'", "leave it out for 'user'");
		return;
	}
	if (cr_map_get(&app->users, username)) {
		cr_reply_error(req, CR_ECONFLICT, "a user with that name already exists", "choose another name");
		return;
	}
	struct newuser *n = cr_xcalloc(1, sizeof(*n));
	n->req = req;
	n->app = app;
	n->username = cr_xstrdup(username);
	n->password = cr_xstrdup(password);
	n->role = cr_xstrdup(role ? role : "user");
	if (cr_workpool_submit(app->hash_pool, newuser_work, newuser_done, n) != 0) { /* argon2id off the loop */
		memset(n->password, 0, strlen(n->password));
		free(n->password);
		free(n->username);
		free(n->role);
		free(n);
		cr_reply_error_retry(req, CR_EUNAVAILABLE, "too many passwords are being hashed right now; try again in 1 s",
				     1);
	}
}

static void list_users(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->users, &it, NULL, &v)) {
		struct cr_user *u = v;
		json_array_append_new(arr, json_pack("{s:s,s:s,s:o}", "username", u->username, "role",
						     u->admin ? "admin" : "user", "limits", cr_user_limits_json(u)));
	}
	cr_json_sort(arr, "username", NULL);
	cr_reply_json(req, 200, json_pack("{s:o}", "users", arr));
}

static void delete_user(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_user *u = cr_map_get(&app->users, cr_req_param(req, 0));
	if (!u) {
		cr_reply_error(req, CR_ENOTFOUND, "no such user", "list users with 'corral users'");
		return;
	}
	if (!strcmp(u->username, cr_req_principal(req)->username)) {
		cr_reply_error(req, CR_ECONFLICT, "you cannot delete yourself", "log in as another admin to do it");
		return;
	}
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->user_del(app->store, u->id, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	cr_audit(app, req, NULL, "user.delete", u->username, NULL);
	json_t *o = json_pack("{s:s}", "deleted", u->username);
	user_forget(app, u); /* the store dropped their sessions and keys; so does memory */
	cr_reply_json(req, 200, o);
}

/* PATCH /api/users/{name} (admin) {"models"?, "rpm"?, "tpm"?,
 * "daily_tokens"?, "monthly_tokens"?}: the user's limits (0 or []: none). The
 * gateway applies them to all the user's keys together, and the user's new
 * keys cannot ask for more. */
static void set_user_limits(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_user *u = cr_map_get(&app->users, cr_req_param(req, 0));
	if (!u) {
		cr_reply_error(req, CR_ENOTFOUND, "no such user", "list the users with 'corral users'");
		return;
	}
	struct cr_err err = CR_ERR_INIT;
	json_t *body = cr_req_json(req, &err), *models = NULL;
	long long v[4];
	const char *const names[4] = { "rpm", "tpm", "daily_tokens", "monthly_tokens" };
	const long long max[4] = { 1000000, 1000000000, 1LL << 50, 1LL << 50 };
	if (!body || cr_json_arr(body, "models", &models, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	json_t *lim = cr_user_limits_json(u);
	for (int i = 0; i < 4; i++) {
		if (cr_json_int(body, names[i], 0, max[i], &v[i], &err)) {
			json_decref(lim);
			cr_reply_err(req, &err);
			return;
		}
		if (json_object_get(body, names[i]))
			json_object_set_new(lim, names[i], json_integer(v[i]));
	}
	size_t k;
	json_t *m;
	json_array_foreach(models, k, m)
		if (!json_is_string(m)) {
			json_decref(lim);
			cr_reply_error(req, CR_EINPUT, "field 'models' must be a list of model names", "e.g. [\"qwen-7b\"]");
			return;
		}
	if (models)
		json_object_set(lim, "models", models);
	char *text = cr_json_dump(lim);
	if (app->store->ops->user_set_limits(app->store, u->id, text, &err)) {
		free(text);
		json_decref(lim);
		cr_reply_err(req, &err);
		return;
	}
	set_limits_from(u, lim);
	cr_info("limits of user '%s': %s", u->username, text);
	cr_audit(app, req, NULL, "user.limits", u->username, json_incref(lim));
	free(text);
	cr_reply_json(req, 200, json_pack("{s:s,s:o}", "username", u->username, "limits", lim));
}

/* ---- passwords and sessions ---- */

/* Ends u's sessions, all but keep (a session hash, or NULL), in the store
 * and here. Returns how many ended. */
static int end_sessions(struct cr_app *app, struct cr_user *u, const char *keep)
{
	int n = 0;
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->sessions, &it, NULL, &v)) {
		struct cr_session *s = v;
		if (s->user != u || (keep && !strcmp(s->hash, keep)))
			continue;
		struct cr_err err = CR_ERR_INIT;
		if (app->store->ops->session_del(app->store, s->hash, &err))
			cr_warn("session of '%s' not deleted from the store: %s", u->username, err.message);
		cr_map_del(&app->sessions, s->hash);
		free(s);
		n++;
	}
	return n;
}

/* The first admin's password file says what a fresh server made; once that
 * password is changed it is only a stale secret on disk. */
static void drop_initial_password(struct cr_app *app, struct cr_user *u)
{
	char *path = cr_xasprintf("%s/initial_admin_password", app->data_dir);
	if (u->admin && !strcmp(u->username, "admin") && unlink(path) == 0)
		cr_info("%s deleted: the first admin's password was changed", path);
	free(path);
}

struct pwchange {
	struct cr_req *req;
	struct cr_app *app;
	char *username, *current, *next, *old_hash, *new_hash;
	bool by_admin, ok;
	char peer[64];
};

static void pwchange_free(struct pwchange *c)
{
	for (char **p = (char *[]){ c->current, c->next, NULL }; *p; p++)
		memset(*p, 0, strlen(*p));
	free(c->current);
	free(c->next);
	free(c->username);
	free(c->old_hash);
	free(c->new_hash);
	free(c);
}

static void pwchange_work(void *arg)
{
	struct pwchange *c = arg;
	c->ok = c->by_admin || cr_password_verify(c->old_hash, c->current);
	if (c->ok)
		c->new_hash = cr_password_hash(c->next);
}

static void pwchange_done(void *arg)
{
	struct pwchange *c = arg;
	struct cr_app *app = c->app;
	struct cr_user *u = cr_map_get(&app->users, c->username);
	struct cr_err err = CR_ERR_INIT;
	if (!u) {
		cr_reply_error(c->req, CR_ENOTFOUND, "that user was deleted meanwhile", "list the users with 'corral users'");
	} else if (!c->ok) {
		char ka[128], ku[256];
		fail_keys(c->peer, c->username, ka, sizeof(ka), ku, sizeof(ku));
		fail_count(&app->login_fails, ka, cr_mono_ms()); /* a guess at the current password is a failed login */
		fail_count(&app->login_fails, ku, cr_mono_ms());
		cr_audit(app, c->req, NULL, "password.change.fail", c->username, NULL);
		cr_reply_error(c->req, CR_EUNAUTH, "the current password is wrong", "give the password you log in with");
	} else if (!c->new_hash) {
		cr_reply_error(c->req, CR_EUNAVAILABLE, "the new password could not be hashed", "try again");
	} else if (app->store->ops->user_set_password(app->store, u->id, c->new_hash, &err) != 0) {
		cr_reply_err(c->req, &err);
	} else {
		cr_str_replace(&u->password_hash, c->new_hash);
		int ended = end_sessions(app, u, NULL); /* every session, this one too: the caller gets a new one */
		drop_initial_password(app, u);
		cr_info("password of '%s' changed%s; %d session(s) ended", u->username, c->by_admin ? " by an admin" : "",
			ended);
		cr_audit(app, c->req, NULL, c->by_admin ? "user.password.reset" : "password.change", u->username,
			 json_pack("{s:i}", "sessions_ended", ended));
		if (c->by_admin)
			cr_reply_json(c->req, 200, json_pack("{s:s,s:i}", "username", u->username, "sessions_ended", ended));
		else
			reply_new_session(c->req, app, u);
	}
	pwchange_free(c);
}

static void start_pwchange(struct cr_req *req, struct cr_user *u, const char *current, const char *next, bool by_admin)
{
	struct cr_app *app = cr_req_app(req);
	if (strlen(next) < 8) {
		cr_reply_error(req, CR_EINPUT, "password must have at least 8 characters", "choose a longer password");
		return;
	}
	struct pwchange *c = cr_xcalloc(1, sizeof(*c));
	c->req = req;
	c->app = app;
	c->username = cr_xstrdup(u->username);
	c->current = cr_xstrdup(current ? current : "");
	c->next = cr_xstrdup(next);
	c->old_hash = cr_xstrdup(u->password_hash);
	c->by_admin = by_admin;
	snprintf(c->peer, sizeof(c->peer), "%s", cr_req_peer(req));
	if (cr_workpool_submit(app->hash_pool, pwchange_work, pwchange_done, c) != 0) { /* argon2id off the loop */
		pwchange_free(c);
		cr_reply_error_retry(req, CR_EUNAVAILABLE, "too many passwords are being checked right now; try again in 1 s",
				     1);
	}
}

/* POST /api/auth/password {"current", "new"}: the caller's own password. All
 * their sessions end; the answer is a new one. */
static void change_password(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_err err = CR_ERR_INIT;
	const char *current = NULL, *next = NULL;
	json_t *body = cr_req_json(req, &err);
	if (!body || cr_json_req_str(body, "current", &current, &err) || cr_json_req_str(body, "new", &next, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	struct cr_user *u = cr_map_get(&app->users, cr_req_principal(req)->username);
	char ka[128], ku[256];
	fail_keys(cr_req_peer(req), u->username, ka, sizeof(ka), ku, sizeof(ku));
	int64_t now = cr_mono_ms();
	int wait = fail_wait_s(&app->login_fails, ku, FAIL_LIMIT_USER, now);
	if (!wait)
		wait = fail_wait_s(&app->login_fails, ka, FAIL_LIMIT_ADDR, now);
	if (wait) {
		char msg[120];
		snprintf(msg, sizeof(msg), "too many wrong passwords; try again in %d s", wait);
		cr_reply_error_retry(req, CR_ELIMIT, msg, wait);
		return;
	}
	start_pwchange(req, u, current, next, false);
}

/* POST /api/users/{name}/password {"password"} (admin): a reset. The user's
 * sessions end. */
static void reset_password(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_err err = CR_ERR_INIT;
	const char *next = NULL;
	json_t *body = cr_req_json(req, &err);
	if (!body || cr_json_req_str(body, "password", &next, &err)) {
		cr_reply_err(req, &err);
		return;
	}
	struct cr_user *u = cr_map_get(&app->users, cr_req_param(req, 0));
	if (!u) {
		cr_reply_error(req, CR_ENOTFOUND, "no such user", "list the users with 'corral users'");
		return;
	}
	start_pwchange(req, u, NULL, next, true);
}

/* GET /api/auth/sessions: the caller's sessions; the id is the start of the
 * token's hash (the token itself is never kept). */
static void list_sessions(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_user *u = cr_map_get(&app->users, cr_req_principal(req)->username);
	char mine[CR_HASH_HEX];
	cr_secret_hash(bearer(req), mine);
	json_t *arr = json_array();
	size_t it = 0;
	void *v;
	while (cr_map_next(&app->sessions, &it, NULL, &v)) {
		struct cr_session *s = v;
		if (s->user != u)
			continue;
		char created[40], expires[40], id[17];
		cr_time_format(s->created_ms, created, sizeof(created));
		cr_time_format(s->expires_ms, expires, sizeof(expires));
		snprintf(id, sizeof(id), "%.16s", s->hash);
		json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:b}", "id", id, "created_at", created, "expires_at",
						     expires, "current", !strcmp(s->hash, mine)));
	}
	cr_json_sort(arr, "created_at", NULL);
	cr_reply_json(req, 200, json_pack("{s:o}", "sessions", arr));
}

/* DELETE /api/auth/sessions/{id}: end one of the caller's sessions. */
static void revoke_session(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	struct cr_user *u = cr_map_get(&app->users, cr_req_principal(req)->username);
	const char *id = cr_req_param(req, 0);
	size_t it = 0;
	void *v;
	while (strlen(id) == 16 && cr_map_next(&app->sessions, &it, NULL, &v)) {
		struct cr_session *s = v;
		if (s->user != u || strncmp(s->hash, id, 16) != 0)
			continue;
		struct cr_err err = CR_ERR_INIT;
		if (app->store->ops->session_del(app->store, s->hash, &err)) {
			cr_reply_err(req, &err);
			return;
		}
		cr_map_del(&app->sessions, s->hash);
		free(s);
		cr_audit(app, req, NULL, "session.revoke", u->username, json_pack("{s:s}", "id", id));
		cr_reply_json(req, 200, json_pack("{s:s}", "revoked", id));
		return;
	}
	cr_reply_error(req, CR_ENOTFOUND, "no session of yours with that id", "list them with 'corral sessions'");
}

/* POST /api/token/rotate (admin): a new cluster registration token, in
 * DATA_DIR/token and (hashed) in the store; the old one registers nothing
 * more. Registered workers keep working: they prove themselves with their
 * own secrets, also when they register again. */
static void rotate_token(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	char *old = app->cluster_token, old_hash[CR_HASH_HEX];
	memcpy(old_hash, app->cluster_token_hash, sizeof(old_hash));
	app->cluster_token = cr_secret_token("crt");
	bool flag = app->token_from_flag;
	app->token_from_flag = false; /* kept in the file from now on */
	struct cr_err err = CR_ERR_INIT;
	if (bootstrap_token(app, &err) != 0) { /* nothing changed: the old token stays */
		free(app->cluster_token);
		app->cluster_token = old;
		memcpy(app->cluster_token_hash, old_hash, sizeof(old_hash));
		app->token_from_flag = flag;
		cr_reply_err(req, &err);
		return;
	}
	free(old);
	cr_info("cluster registration token rotated by '%s'; the old one registers no worker any more",
		cr_req_principal(req)->username);
	cr_audit(app, req, NULL, "token.rotate", "cluster", NULL);
	char *path = cr_xasprintf("%s/token", app->data_dir);
	json_t *o = json_pack("{s:s,s:s}", "token", app->cluster_token, "path", path);
	if (flag)
		json_object_set_new(o, "warning", json_string("the server was started with --token: start it without it "
								 "(it reads DATA_DIR/token) or the old token returns"));
	free(path);
	cr_reply_json(req, 200, o);
}

const struct cr_http_route cr_api_auth_routes[] = {
	{ CR_POST, "/api/token/rotate", CR_AUTH_ADMIN, rotate_token },
	{ CR_POST, "/api/auth/password", CR_AUTH_USER, change_password },
	{ CR_POST, "/api/users/{}/password", CR_AUTH_ADMIN, reset_password },
	{ CR_GET, "/api/auth/sessions", CR_AUTH_USER, list_sessions },
	{ CR_DELETE, "/api/auth/sessions/{}", CR_AUTH_USER, revoke_session },
	{ CR_POST, "/api/users", CR_AUTH_ADMIN, create_user },
	{ CR_GET, "/api/users", CR_AUTH_ADMIN, list_users },
	{ CR_DELETE, "/api/users/{}", CR_AUTH_ADMIN, delete_user },
	{ CR_PATCH, "/api/users/{}", CR_AUTH_ADMIN, set_user_limits },
	{ CR_POST, "/api/auth/login", CR_AUTH_NONE, login },
	{ CR_POST, "/api/auth/logout", CR_AUTH_USER, logout },
	{ CR_GET, "/api/auth/me", CR_AUTH_USER, me },
	{ 0, NULL, 0, NULL },
};
