/* SQLite backend of the store: WAL journal, synchronous=NORMAL, foreign keys
 * on, migrations from schema_sqlite.c recorded in PRAGMA user_version. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/err.h"
#include "base/mem.h"
#include "store/schema.h"
#include "store/store.h"

struct sqlite_store {
	struct cr_store base;
	sqlite3 *db;
	char *path;
};

static sqlite3 *db_of(struct cr_store *s)
{
	return ((struct sqlite_store *)s)->db;
}

static int db_error(struct cr_store *s, struct cr_err *err, const char *what)
{
	sqlite3 *db = db_of(s);
	int ext = sqlite3_extended_errcode(db);
	if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
		return cr_err_set(err, CR_ECONFLICT, "choose another name", "%s: %s", what, sqlite3_errmsg(db));
	if ((ext & 0xff) == SQLITE_FULL || (ext == SQLITE_IOERR_WRITE && errno == ENOSPC))
		return cr_err_set(err, -ENOSPC, "free space on the data directory's disk; nothing was written, and the "
						"server goes on from where it was once there is room",
				  "the data directory's disk is full (%s): %s", what, sqlite3_errmsg(db));
	return cr_err_set(err, -EIO, "check the disk and the file's permissions in the data directory",
			  "sqlite %s failed: %s", what, sqlite3_errmsg(db));
}

static int prepare(struct cr_store *s, const char *sql, sqlite3_stmt **st, struct cr_err *err)
{
	if (sqlite3_prepare_v2(db_of(s), sql, -1, st, NULL) != SQLITE_OK)
		return db_error(s, err, "prepare");
	return 0;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? (const char *)t : NULL;
}

/* Run a statement that returns no rows; binds are done by the caller. */
static int step_done(struct cr_store *s, sqlite3_stmt *st, const char *what, struct cr_err *err)
{
	int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_error(s, err, what);
	sqlite3_finalize(st);
	return rc;
}

static int user_add(struct cr_store *s, struct cr_user_rec *u, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "INSERT INTO users (username, password_hash, role, created_ms) VALUES (?, ?, ?, ?)", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, u->username, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, u->password_hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, u->role, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, u->created_ms);
	rc = step_done(s, st, "insert user", err);
	if (!rc)
		u->id = sqlite3_last_insert_rowid(db_of(s));
	return rc;
}

static int user_list(struct cr_store *s, cr_store_user_cb cb, void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "SELECT id, username, password_hash, role, created_ms, limits FROM users ORDER BY id", &st,
			 err);
	if (rc)
		return rc;
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_user_rec u = {
			sqlite3_column_int64(st, 0), (char *)col_text(st, 1), (char *)col_text(st, 2),
			(char *)col_text(st, 3), sqlite3_column_int64(st, 4), (char *)col_text(st, 5),
		};
		cb(&u, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "list users");
	sqlite3_finalize(st);
	return rc;
}

static int user_del(struct cr_store *s, int64_t id, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "DELETE FROM users WHERE id = ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, id);
	return step_done(s, st, "delete user", err);
}

static int user_set_limits(struct cr_store *s, int64_t id, const char *limits_json, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "UPDATE users SET limits = ? WHERE id = ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, limits_json, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, id);
	rc = step_done(s, st, "set a user's limits", err);
	if (!rc && sqlite3_changes(db_of(s)) == 0)
		rc = cr_err_set(err, CR_ENOTFOUND, "list the users with 'corral users'", "no user %lld", (long long)id);
	return rc;
}

static int user_set_password(struct cr_store *s, int64_t id, const char *password_hash, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "UPDATE users SET password_hash = ? WHERE id = ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, password_hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, id);
	rc = step_done(s, st, "change a password", err);
	if (!rc && sqlite3_changes(db_of(s)) == 0)
		rc = cr_err_set(err, CR_ENOTFOUND, "list the users with 'corral users'", "no user %lld", (long long)id);
	return rc;
}

static int session_add(struct cr_store *s, const struct cr_session_rec *r, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "INSERT INTO sessions (token_hash, user_id, created_ms, expires_ms) VALUES (?, ?, ?, ?)", &st,
			 err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, r->token_hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, r->user_id);
	sqlite3_bind_int64(st, 3, r->created_ms);
	sqlite3_bind_int64(st, 4, r->expires_ms);
	return step_done(s, st, "insert session", err);
}

static int delete_by(struct cr_store *s, const char *sql, const char *key, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, sql, &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	return step_done(s, st, "delete", err);
}

static int session_del(struct cr_store *s, const char *token_hash, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM sessions WHERE token_hash = ?", token_hash, err);
}

static int session_list(struct cr_store *s, int64_t now_ms, cr_store_session_cb cb, void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "DELETE FROM sessions WHERE expires_ms <= ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, now_ms);
	rc = step_done(s, st, "expire sessions", err);
	if (rc)
		return rc;
	rc = prepare(s, "SELECT token_hash, user_id, created_ms, expires_ms FROM sessions", &st, err);
	if (rc)
		return rc;
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_session_rec rec = { (char *)col_text(st, 0), sqlite3_column_int64(st, 1),
					      sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3) };
		cb(&rec, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "list sessions");
	sqlite3_finalize(st);
	return rc;
}

static int worker_put(struct cr_store *s, const struct cr_worker_rec *w, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s,
			 "INSERT INTO workers (id, name, secret_hash, labels, address, port, created_ms, last_seen_ms, cordoned)"
			 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name,"
			 " secret_hash = excluded.secret_hash, labels = excluded.labels, address = excluded.address,"
			 " port = excluded.port, cordoned = excluded.cordoned",
			 &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, w->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, w->secret_hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, w->labels_json ? w->labels_json : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, w->address ? w->address : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 6, w->port);
	sqlite3_bind_int64(st, 7, w->created_ms);
	sqlite3_bind_int64(st, 8, w->last_seen_ms);
	sqlite3_bind_int(st, 9, w->draining ? 2 : w->cordoned ? 1 : 0);
	return step_done(s, st, "save worker", err);
}

static int worker_del(struct cr_store *s, const char *id, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM workers WHERE id = ?", id, err);
}

#define WORKER_SELECT \
	"SELECT id, name, secret_hash, labels, address, port, created_ms, last_seen_ms, report, report_dynamic, " \
	"cordoned FROM workers "

/* Every worker, or the one with id (CR_ENOTFOUND when none). */
static int workers_read(struct cr_store *s, const char *id, cr_store_worker_cb cb, void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, id ? WORKER_SELECT "WHERE id = ?" : WORKER_SELECT "ORDER BY name", &st, err);
	if (rc)
		return rc;
	if (id)
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	int r, n = 0;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		n++;
		struct cr_worker_rec w = {
			(char *)col_text(st, 0), (char *)col_text(st, 1), (char *)col_text(st, 2),
			(char *)col_text(st, 3), (char *)col_text(st, 4), sqlite3_column_int(st, 5),
			sqlite3_column_int64(st, 6), sqlite3_column_int64(st, 7), (char *)col_text(st, 8),
			(char *)col_text(st, 9), sqlite3_column_int(st, 10) != 0, sqlite3_column_int(st, 10) == 2,
		};
		cb(&w, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "list workers");
	sqlite3_finalize(st);
	if (!rc && id && !n)
		rc = cr_err_set(err, CR_ENOTFOUND, NULL, "no worker %s", id);
	return rc;
}

static int worker_list(struct cr_store *s, cr_store_worker_cb cb, void *arg, struct cr_err *err)
{
	return workers_read(s, NULL, cb, arg, err);
}

static int worker_get(struct cr_store *s, const char *id, cr_store_worker_cb cb, void *arg, struct cr_err *err)
{
	return workers_read(s, id, cb, arg, err);
}

static int exec(struct cr_store *s, const char *sql, struct cr_err *err)
{
	char *msg = NULL;
	if (sqlite3_exec(db_of(s), sql, NULL, NULL, &msg) != SQLITE_OK) {
		int full = (sqlite3_extended_errcode(db_of(s)) & 0xff) == SQLITE_FULL;
		cr_err_set(err, full ? -ENOSPC : -EIO,
			   full ? "free space on the data directory's disk; nothing was written"
				: "check the disk and the data directory",
			   "sqlite '%.60s' failed: %s", sql, msg ? msg : "?");
		sqlite3_free(msg);
		return full ? -ENOSPC : -EIO;
	}
	return 0;
}

static int worker_observed(struct cr_store *s, const struct cr_worker_rec *const *w, size_t n, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = exec(s, "BEGIN", err);
	if (rc)
		return rc;
	rc = prepare(s,
		     "UPDATE workers SET last_seen_ms = ?, report = COALESCE(?, report), report_dynamic = ? WHERE id = ?",
		     &st, err);
	if (!rc) {
		for (size_t i = 0; !rc && i < n; i++) {
			sqlite3_bind_int64(st, 1, w[i]->last_seen_ms);
			sqlite3_bind_text(st, 2, w[i]->report_json, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 3, w[i]->dynamic_json, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 4, w[i]->id, -1, SQLITE_STATIC);
			if (sqlite3_step(st) != SQLITE_DONE)
				rc = db_error(s, err, "update worker status");
			sqlite3_reset(st);
		}
		sqlite3_finalize(st);
	}
	if (rc) {
		exec(s, "ROLLBACK", NULL);
		return rc;
	}
	return exec(s, "COMMIT", err);
}

static int model_put(struct cr_store *s, const struct cr_model_rec *m, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s,
			 "INSERT INTO models (id, name, spec, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?) "
			 "ON CONFLICT(id) DO UPDATE SET name = excluded.name, spec = excluded.spec, "
			 "updated_ms = excluded.updated_ms",
			 &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, m->spec_json, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, m->created_ms);
	sqlite3_bind_int64(st, 5, m->updated_ms);
	int r = sqlite3_step(st);
	if (r == SQLITE_CONSTRAINT) {
		sqlite3_finalize(st);
		return cr_err_set(err, CR_ECONFLICT, "choose another name, or update the existing model",
				  "a model named '%s' already exists", m->name);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "save model");
	sqlite3_finalize(st);
	return rc;
}

static int model_del(struct cr_store *s, const char *id, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM models WHERE id = ?", id, err);
}

static int model_list(struct cr_store *s, cr_store_model_cb cb, void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "SELECT id, name, spec, created_ms, updated_ms FROM models ORDER BY created_ms, id", &st, err);
	if (rc)
		return rc;
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_model_rec m = { (char *)col_text(st, 0), (char *)col_text(st, 1), (char *)col_text(st, 2),
					  sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4) };
		cb(&m, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "list models");
	sqlite3_finalize(st);
	return rc;
}

static int instance_put(struct cr_store *s, const struct cr_instance_rec *i, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s,
			 "INSERT INTO instances (id, model_id, placement, state, message, created_ms, updated_ms, endpoint) "
			 "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET placement = excluded.placement, "
			 "state = excluded.state, message = excluded.message, updated_ms = excluded.updated_ms, "
			 "endpoint = excluded.endpoint",
			 &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, i->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, i->model_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, i->placement_json, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, i->state, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, i->message ? i->message : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, i->created_ms);
	sqlite3_bind_int64(st, 7, i->updated_ms);
	if (i->endpoint)
		sqlite3_bind_text(st, 8, i->endpoint, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 8);
	return step_done(s, st, "save instance", err);
}

static int instance_del(struct cr_store *s, const char *id, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM instances WHERE id = ?", id, err);
}

static int instance_list(struct cr_store *s, cr_store_instance_cb cb, void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s,
			 "SELECT id, model_id, placement, state, message, created_ms, updated_ms, endpoint FROM instances "
			 "ORDER BY created_ms, id",
			 &st, err);
	if (rc)
		return rc;
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_instance_rec i = { (char *)col_text(st, 0), (char *)col_text(st, 1), (char *)col_text(st, 2),
					     (char *)col_text(st, 3), (char *)col_text(st, 4), sqlite3_column_int64(st, 5),
					     sqlite3_column_int64(st, 6), (char *)col_text(st, 7) };
		cb(&i, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "list instances");
	sqlite3_finalize(st);
	return rc;
}

static int key_add(struct cr_store *s, const struct cr_key_rec *k, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s,
			 "INSERT INTO api_keys (id, name, user_id, hash, prefix, models, rpm, tpm, expires_ms, created_ms, "
			 "quotas) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			 &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, k->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, k->user_id);
	sqlite3_bind_text(st, 4, k->hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, k->prefix, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, k->models_json, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, k->rpm);
	sqlite3_bind_int64(st, 8, k->tpm);
	sqlite3_bind_int64(st, 9, k->expires_ms);
	sqlite3_bind_int64(st, 10, k->created_ms);
	sqlite3_bind_text(st, 11, k->quotas_json ? k->quotas_json : "{}", -1, SQLITE_STATIC);
	return step_done(s, st, "save API key", err);
}

static int key_del(struct cr_store *s, const char *id, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM api_keys WHERE id = ?", id, err);
}

static int key_list(struct cr_store *s, cr_store_key_cb cb, void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s,
			 "SELECT id, name, user_id, hash, prefix, models, rpm, tpm, expires_ms, created_ms, quotas FROM api_keys "
			 "ORDER BY created_ms, id",
			 &st, err);
	if (rc)
		return rc;
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_key_rec k = { (char *)col_text(st, 0), (char *)col_text(st, 1), sqlite3_column_int64(st, 2),
					(char *)col_text(st, 3), (char *)col_text(st, 4), (char *)col_text(st, 5),
					sqlite3_column_int64(st, 6), sqlite3_column_int64(st, 7), sqlite3_column_int64(st, 8),
					sqlite3_column_int64(st, 9), (char *)col_text(st, 10) };
		cb(&k, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "list API keys");
	sqlite3_finalize(st);
	return rc;
}

static int usage_add(struct cr_store *s, const struct cr_usage_rec *const *rows, size_t n, struct cr_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc = exec(s, "BEGIN", err);
	if (rc)
		return rc;
	rc = prepare(s,
		     "INSERT INTO usage (day, key_id, key_name, user_id, username, model, requests, errors, prompt_tokens, "
		     "completion_tokens, ttft_ms_sum, ttft_count, latency_ms_sum) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
		     "ON CONFLICT(day, key_id, model) DO UPDATE SET key_name = excluded.key_name, "
		     "username = excluded.username, requests = requests + excluded.requests, "
		     "errors = errors + excluded.errors, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
		     "completion_tokens = completion_tokens + excluded.completion_tokens, "
		     "ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum, ttft_count = ttft_count + excluded.ttft_count, "
		     "latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum",
		     &st, err);
	for (size_t i = 0; !rc && i < n; i++) {
		const struct cr_usage_rec *u = rows[i];
		sqlite3_bind_text(st, 1, u->day, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, u->key_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, u->key_name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, u->user_id);
		sqlite3_bind_text(st, 5, u->username, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, u->model, -1, SQLITE_STATIC);
		int64_t v[7] = { u->requests, u->errors, u->prompt_tokens, u->completion_tokens, u->ttft_ms_sum,
				 u->ttft_count, u->latency_ms_sum };
		for (int j = 0; j < 7; j++)
			sqlite3_bind_int64(st, 7 + j, v[j]);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = db_error(s, err, "record usage");
		sqlite3_reset(st);
	}
	if (st)
		sqlite3_finalize(st);
	if (rc) {
		exec(s, "ROLLBACK", NULL);
		return rc;
	}
	return exec(s, "COMMIT", err);
}

static int usage_query(struct cr_store *s, const struct cr_usage_query *q, cr_store_usage_cb cb, void *arg,
		       struct cr_err *err)
{
	/* grouping columns come from this fixed list only; values are bound */
	char sql[1200], group[64] = "";
	const char *cols[] = { q->by_day ? "day" : NULL, q->by_key ? "key_id" : NULL,
			       q->by_user || q->by_key ? "user_id" : NULL, q->by_model ? "model" : NULL };
	for (int i = 0; i < 4; i++)
		if (cols[i])
			snprintf(group + strlen(group), sizeof(group) - strlen(group), "%s%s", *group ? ", " : " GROUP BY ",
				 cols[i]);
	snprintf(sql, sizeof(sql),
		 "SELECT %s, %s, %s, %s, %s, %s, SUM(requests), SUM(errors), SUM(prompt_tokens), "
		 "SUM(completion_tokens), SUM(ttft_ms_sum), SUM(ttft_count), SUM(latency_ms_sum) FROM usage "
		 "WHERE (?1 = '' OR day >= ?1) AND (?2 = '' OR day <= ?2) AND (?3 = 0 OR user_id = ?3) "
		 "AND (?4 = '' OR key_id = ?4) AND (?5 = '' OR model = ?5)%s ORDER BY 1, 5, 3, 6",
		 q->by_day ? "day" : "''", q->by_key ? "key_id" : "''", q->by_key ? "MAX(key_name)" : "''",
		 q->by_user || q->by_key ? "user_id" : "0", q->by_user || q->by_key ? "MAX(username)" : "''",
		 q->by_model ? "model" : "''", group);
	sqlite3_stmt *st;
	int rc = prepare(s, sql, &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, q->since ? q->since : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, q->until ? q->until : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, q->user_id);
	sqlite3_bind_text(st, 4, q->key_id ? q->key_id : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, q->model ? q->model : "", -1, SQLITE_STATIC);
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_type(st, 6) == SQLITE_NULL)
			continue; /* no rows at all */
		struct cr_usage_rec u = { (char *)col_text(st, 0), (char *)col_text(st, 1), (char *)col_text(st, 2),
					  sqlite3_column_int64(st, 3), (char *)col_text(st, 4), (char *)col_text(st, 5),
					  sqlite3_column_int64(st, 6), sqlite3_column_int64(st, 7),
					  sqlite3_column_int64(st, 8), sqlite3_column_int64(st, 9),
					  sqlite3_column_int64(st, 10), sqlite3_column_int64(st, 11),
					  sqlite3_column_int64(st, 12) };
		cb(&u, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "query usage");
	sqlite3_finalize(st);
	return rc;
}

static int audit_add(struct cr_store *s, const struct cr_audit_rec *a, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "INSERT INTO audit (at_ms, actor, address, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
			 &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, a->at_ms);
	sqlite3_bind_text(st, 2, a->actor ? a->actor : "-", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, a->address ? a->address : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, a->action, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, a->target ? a->target : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, a->detail ? a->detail : "", -1, SQLITE_STATIC);
	return step_done(s, st, "add an audit entry", err);
}

static int audit_list(struct cr_store *s, int64_t since_ms, const char *action_prefix, int limit, cr_store_audit_cb cb,
		      void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "SELECT id, at_ms, actor, address, action, target, detail FROM audit WHERE at_ms >= ?1 AND "
			    "(?2 = '' OR substr(action, 1, length(?2)) = ?2) ORDER BY id DESC LIMIT ?3", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, since_ms);
	sqlite3_bind_text(st, 2, action_prefix ? action_prefix : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, limit);
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_audit_rec a = { sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), (char *)col_text(st, 2),
					  (char *)col_text(st, 3), (char *)col_text(st, 4), (char *)col_text(st, 5),
					  (char *)col_text(st, 6) };
		cb(&a, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "list the audit trail");
	sqlite3_finalize(st);
	return rc;
}

static int audit_purge(struct cr_store *s, int64_t before_ms, int64_t *deleted, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "DELETE FROM audit WHERE at_ms < ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, before_ms);
	rc = step_done(s, st, "trim the audit trail", err);
	if (deleted)
		*deleted = rc ? 0 : sqlite3_changes(db_of(s));
	return rc;
}

static int event_add(struct cr_store *s, struct cr_event_rec *e, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "INSERT INTO events (at_ms, kind, subject, message, detail) VALUES (?, ?, ?, ?, ?)", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, e->at_ms);
	sqlite3_bind_text(st, 2, e->kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, e->subject ? e->subject : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, e->message ? e->message : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, e->detail ? e->detail : "", -1, SQLITE_STATIC);
	rc = step_done(s, st, "add an event", err);
	if (!rc)
		e->id = sqlite3_last_insert_rowid(db_of(s));
	return rc;
}

static int event_list(struct cr_store *s, int64_t after_id, int limit, bool newest, cr_store_event_cb cb, void *arg,
		      struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, newest ? "SELECT * FROM (SELECT id, at_ms, kind, subject, message, detail FROM events WHERE "
				     "id > ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id"
				   : "SELECT id, at_ms, kind, subject, message, detail FROM events WHERE id > ?1 ORDER BY id "
				     "LIMIT ?2",
			 &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, after_id);
	sqlite3_bind_int(st, 2, limit);
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_event_rec e = { sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), (char *)col_text(st, 2),
					  (char *)col_text(st, 3), (char *)col_text(st, 4), (char *)col_text(st, 5) };
		cb(&e, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "list events");
	sqlite3_finalize(st);
	return rc;
}

static int event_purge(struct cr_store *s, int64_t before_ms, int64_t *deleted, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "DELETE FROM events WHERE at_ms < ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, before_ms);
	rc = step_done(s, st, "trim the events", err);
	if (deleted)
		*deleted = rc ? 0 : sqlite3_changes(db_of(s));
	return rc;
}

static int mail_put(struct cr_store *s, const struct cr_mail_rec *m, size_t n, struct cr_err *err)
{
	sqlite3_stmt *st = NULL;
	int rc = exec(s, "BEGIN", err);
	if (rc)
		return rc;
	rc = prepare(s, "INSERT INTO worker_mail (at_ms, worker_id, kind, body, server) VALUES (?, ?, ?, ?, ?)", &st, err);
	for (size_t i = 0; !rc && i < n; i++) {
		sqlite3_bind_int64(st, 1, m[i].at_ms);
		sqlite3_bind_text(st, 2, m[i].worker_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, m[i].kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, m[i].body, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, m[i].server ? m[i].server : "", -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = db_error(s, err, "keep workers' messages");
		sqlite3_reset(st);
	}
	sqlite3_finalize(st); /* a no-op on NULL */
	if (rc) {
		exec(s, "ROLLBACK", NULL);
		return rc;
	}
	return exec(s, "COMMIT", err);
}

/* One writer at a time here: ids are visible in the order they were given,
 * so "up to the last one read" is exactly what was read. */
static int mail_take(struct cr_store *s, int limit, cr_store_mail_cb cb, void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "SELECT id, at_ms, worker_id, kind, body, server FROM worker_mail ORDER BY id LIMIT ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int(st, 1, limit);
	int r;
	int64_t last = 0;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_mail_rec m = { sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), (char *)col_text(st, 2),
					 (char *)col_text(st, 3), (char *)col_text(st, 4), (char *)col_text(st, 5) };
		last = m.id;
		cb(&m, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "read workers' messages");
	sqlite3_finalize(st);
	if (rc || !last)
		return rc;
	rc = prepare(s, "DELETE FROM worker_mail WHERE id <= ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, last);
	return step_done(s, st, "remove workers' messages", err);
}

static int watch_put(struct cr_store *s, const char *worker_id, const char *body, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "INSERT INTO worker_watch (worker_id, seq, body) VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 "
			    "FROM worker_watch), ?2) ON CONFLICT(worker_id) DO UPDATE SET seq = excluded.seq, body = "
			    "excluded.body",
			 &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, worker_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, body, -1, SQLITE_STATIC);
	return step_done(s, st, "keep a watch payload", err);
}

static int watch_list(struct cr_store *s, int64_t after_seq, cr_store_watch_cb cb, void *arg, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "SELECT seq, worker_id, body FROM worker_watch WHERE seq > ? ORDER BY seq", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_int64(st, 1, after_seq);
	int r;
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		struct cr_watch_rec w = { sqlite3_column_int64(st, 0), (char *)col_text(st, 1), (char *)col_text(st, 2) };
		cb(&w, arg);
	}
	rc = r == SQLITE_DONE ? 0 : db_error(s, err, "read watch payloads");
	sqlite3_finalize(st);
	return rc;
}

static int setting_get(struct cr_store *s, const char *key, char **value, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "SELECT value FROM settings WHERE key = ?", &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int r = sqlite3_step(st);
	if (r == SQLITE_ROW)
		*value = cr_xstrdup(col_text(st, 0));
	else if (r == SQLITE_DONE)
		rc = cr_err_set(err, CR_ENOTFOUND, NULL, "setting '%s' is not set", key);
	else
		rc = db_error(s, err, "read setting");
	sqlite3_finalize(st);
	return rc;
}

static int setting_put(struct cr_store *s, const char *key, const char *value, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
			 &st, err);
	if (rc)
		return rc;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	return step_done(s, st, "save setting", err);
}

static int schema_version(struct cr_store *s, int *version, struct cr_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "PRAGMA user_version", &st, err);
	if (rc)
		return rc;
	*version = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	return 0;
}

static void sqlite_close(struct cr_store *s)
{
	struct sqlite_store *ss = (struct sqlite_store *)s;
	sqlite3_close(ss->db);
	free(ss->path);
	free(ss);
}

static const struct cr_store_ops sqlite_ops = {
	"sqlite", user_add, user_list, user_del, user_set_limits, user_set_password, session_add, session_del,
	session_list, worker_put, worker_del, worker_list, worker_get, worker_observed, model_put, model_del, model_list,
	instance_put, instance_del, instance_list, key_add, key_del, key_list, usage_add, usage_query, audit_add,
	audit_list, audit_purge, event_add, event_list, event_purge, mail_put, mail_take, watch_put, watch_list,
	setting_get, setting_put, schema_version, sqlite_close,
};

static int migrate(struct cr_store *s, struct cr_err *err)
{
	int have = 0, rc = schema_version(s, &have, err);
	int known = 0;
	while (cr_schema_sqlite[known])
		known++;
	if (rc)
		return rc;
	if (have > known)
		return cr_err_set(err, -EPROTO, "run the newer corral binary that created this store, or restore a backup",
				  "the store has schema version %d but this corral knows only up to %d", have, known);
	for (int v = have; v < known; v++) {
		char *sql = cr_xasprintf("BEGIN; %s PRAGMA user_version = %d; COMMIT;", cr_schema_sqlite[v], v + 1);
		rc = exec(s, sql, err);
		free(sql);
		if (rc) {
			exec(s, "ROLLBACK", NULL);
			return rc;
		}
	}
	return 0;
}

int cr_store_open_sqlite(const char *path, struct cr_store **out, struct cr_err *err)
{
	struct sqlite_store *ss = cr_xcalloc(1, sizeof(*ss));
	ss->base.ops = &sqlite_ops;
	ss->path = cr_xstrdup(path);
	int rc = 0;
	if (sqlite3_open_v2(path, &ss->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		rc = cr_err_set(err, -EIO, "check that the data directory exists and is writable",
				"cannot open the store '%s': %s", path, ss->db ? sqlite3_errmsg(ss->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(ss->db, 5000);
	/* users' hashes, keys and sessions: readable by the server's user only.
	 * The WAL and shared-memory files take the database file's mode. */
	chmod(path, 0600);
	rc = exec(&ss->base, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;", err);
	for (int i = 0; !rc && i < 2; i++) {
		char *side = cr_xasprintf("%s%s", path, i ? "-shm" : "-wal");
		chmod(side, 0600); /* made 0644 by an older version */
		free(side);
	}
	if (!rc)
		rc = migrate(&ss->base, err);
	if (rc)
		goto fail;
	*out = &ss->base;
	return 0;
fail:
	sqlite_close(&ss->base);
	return rc;
}

void cr_store_close(struct cr_store *s)
{
	if (s)
		s->ops->close(s);
}

void cr_user_rec_release(struct cr_user_rec *u)
{
	free(u->username);
	free(u->password_hash);
	free(u->role);
	memset(u, 0, sizeof(*u));
}
