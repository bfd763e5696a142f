/* PostgreSQL backend of the store (libpq): the same tables as SQLite's,
 * migrations from schema_pg.c recorded in corral_schema and applied under an
 * advisory lock (several servers may start at once). A connection that
 * broke (PostgreSQL restarted) is reset and the statement tried once more. */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/err.h"
#include "base/mem.h"
#include "store/schema.h"
#include "store/store.h"

struct pg_store {
	struct cr_store base;
	PGconn *db;
	char *where; /* host:port/db, for messages (no password) */
	struct timespec last_reset; /* the last reconnection tried: at most one per RESET_EVERY_MS */
};

#define RESET_EVERY_MS 2000 /* a server that is away is not waited for at every statement */

#define MIGRATE_LOCK 0x636f7272616c31LL /* "corral1": held while migrating */

/* Text parameters of one statement: strings, numbers or NULL. */
struct params {
	const char *v[16];
	char num[16][24];
	int n;
};

static void p_s(struct params *p, const char *s)
{
	p->v[p->n++] = s;
}

static void p_i(struct params *p, int64_t x)
{
	snprintf(p->num[p->n], sizeof(p->num[0]), "%" PRId64, x);
	p->v[p->n] = p->num[p->n];
	p->n++;
}

static struct pg_store *pg(struct cr_store *s)
{
	return (struct pg_store *)s;
}

static int pg_error(struct cr_store *s, PGresult *r, struct cr_err *err, const char *what)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	char msg[400];
	snprintf(msg, sizeof(msg), "%s", r && *PQresultErrorMessage(r) ? PQresultErrorMessage(r) : PQerrorMessage(pg(s)->db));
	msg[strcspn(msg, "\n")] = '\0';
	int rc;
	if (state && !strcmp(state, "23505"))
		rc = cr_err_set(err, CR_ECONFLICT, "choose another name", "%s: %s", what, msg);
	else if (PQstatus(pg(s)->db) != CONNECTION_OK || (state && !strncmp(state, "08", 2)))
		rc = cr_err_set(err, CR_EUNAVAILABLE, "check that PostgreSQL runs and this server can reach it (--store)",
				"PostgreSQL at %s is unreachable (%s): %s", pg(s)->where, what, msg);
	else if (state && (!strcmp(state, "53100") || !strcmp(state, "53200")))
		rc = cr_err_set(err, -ENOSPC, "free space on PostgreSQL's disk", "PostgreSQL at %s is out of %s (%s): %s",
				pg(s)->where, !strcmp(state, "53100") ? "disk space" : "memory", what, msg);
	else
		rc = cr_err_set(err, -EIO, "check PostgreSQL's log and the role's privileges on the database",
				"PostgreSQL %s failed: %s", what, msg);
	PQclear(r);
	return rc;
}

/* Run sql with p's parameters; *out gets the result (rows or none). A broken
 * connection is reset and the statement tried once more. */
static int run(struct cr_store *s, const char *sql, const struct params *p, PGresult **out, const char *what,
	       struct cr_err *err)
{
	for (int attempt = 0;; attempt++) {
		PGresult *r = PQexecParams(pg(s)->db, sql, p ? p->n : 0, NULL, p ? p->v : NULL, NULL, NULL, 0);
		ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
			if (out)
				*out = r;
			else
				PQclear(r);
			return 0;
		}
		if (attempt == 0 && PQstatus(pg(s)->db) != CONNECTION_OK) {
			PQclear(r);
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			struct timespec *last = &pg(s)->last_reset;
			int64_t since = (int64_t)(now.tv_sec - last->tv_sec) * 1000 + (now.tv_nsec - last->tv_nsec) / 1000000;
			if (last->tv_sec && since < RESET_EVERY_MS)
				return pg_error(s, NULL, err, what);
			*last = now;
			PQreset(pg(s)->db);
			if (PQstatus(pg(s)->db) == CONNECTION_OK)
				continue;
			return pg_error(s, NULL, err, what);
		}
		return pg_error(s, r, err, what);
	}
}

static int exec_p(struct cr_store *s, const char *sql, const struct params *p, const char *what, struct cr_err *err)
{
	return run(s, sql, p, NULL, what, err);
}

/* Rows changed by the statement: run it and count. */
static int exec_count(struct cr_store *s, const char *sql, const struct params *p, int64_t *changed, const char *what,
		      struct cr_err *err)
{
	PGresult *r = NULL;
	int rc = run(s, sql, p, &r, what, err);
	if (!rc)
		*changed = strtoll(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return rc;
}

static const char *txt(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static int64_t num(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int user_add(struct cr_store *s, struct cr_user_rec *u, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, u->username);
	p_s(&p, u->password_hash);
	p_s(&p, u->role);
	p_i(&p, u->created_ms);
	PGresult *r = NULL;
	int rc = run(s, "INSERT INTO users (username, password_hash, role, created_ms) VALUES ($1, $2, $3, $4) RETURNING id",
		     &p, &r, "insert user", err);
	if (!rc)
		u->id = num(r, 0, 0);
	PQclear(r);
	return rc;
}

static int user_list(struct cr_store *s, cr_store_user_cb cb, void *arg, struct cr_err *err)
{
	PGresult *r = NULL;
	int rc = run(s, "SELECT id, username, password_hash, role, created_ms, limits FROM users ORDER BY id", NULL, &r,
		     "list users", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_user_rec u = { num(r, i, 0), (char *)txt(r, i, 1), (char *)txt(r, i, 2), (char *)txt(r, i, 3),
					 num(r, i, 4), (char *)txt(r, i, 5) };
		cb(&u, arg);
	}
	PQclear(r);
	return rc;
}

static int user_del(struct cr_store *s, int64_t id, struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, id);
	return exec_p(s, "DELETE FROM users WHERE id = $1", &p, "delete user", err);
}

static int user_update(struct cr_store *s, const char *sql, int64_t id, const char *value, const char *what,
		       struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, value);
	p_i(&p, id);
	int64_t n = 0;
	int rc = exec_count(s, sql, &p, &n, what, err);
	if (!rc && n == 0)
		rc = cr_err_set(err, CR_ENOTFOUND, "list the users with 'corral users'", "no user %lld", (long long)id);
	return rc;
}

static int user_set_limits(struct cr_store *s, int64_t id, const char *limits_json, struct cr_err *err)
{
	return user_update(s, "UPDATE users SET limits = $1 WHERE id = $2", id, limits_json, "set a user's limits", err);
}

static int user_set_password(struct cr_store *s, int64_t id, const char *password_hash, struct cr_err *err)
{
	return user_update(s, "UPDATE users SET password_hash = $1 WHERE id = $2", id, password_hash, "change a password",
			   err);
}

static int session_add(struct cr_store *s, const struct cr_session_rec *rec, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, rec->token_hash);
	p_i(&p, rec->user_id);
	p_i(&p, rec->created_ms);
	p_i(&p, rec->expires_ms);
	return exec_p(s, "INSERT INTO sessions (token_hash, user_id, created_ms, expires_ms) VALUES ($1, $2, $3, $4)", &p,
		      "insert session", err);
}

static int delete_by(struct cr_store *s, const char *sql, const char *key, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, key);
	return exec_p(s, sql, &p, "delete", err);
}

static int session_del(struct cr_store *s, const char *token_hash, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM sessions WHERE token_hash = $1", token_hash, err);
}

static int session_list(struct cr_store *s, int64_t now_ms, cr_store_session_cb cb, void *arg, struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, now_ms);
	int rc = exec_p(s, "DELETE FROM sessions WHERE expires_ms <= $1", &p, "expire sessions", err);
	PGresult *r = NULL;
	if (!rc)
		rc = run(s, "SELECT token_hash, user_id, created_ms, expires_ms FROM sessions", NULL, &r, "list sessions", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_session_rec rec = { (char *)txt(r, i, 0), num(r, i, 1), num(r, i, 2), num(r, i, 3) };
		cb(&rec, arg);
	}
	PQclear(r);
	return rc;
}

static int worker_put(struct cr_store *s, const struct cr_worker_rec *w, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, w->id);
	p_s(&p, w->name);
	p_s(&p, w->secret_hash);
	p_s(&p, w->labels_json ? w->labels_json : "{}");
	p_s(&p, w->address ? w->address : "");
	p_i(&p, w->port);
	p_i(&p, w->created_ms);
	p_i(&p, w->last_seen_ms);
	p_i(&p, w->draining ? 2 : w->cordoned ? 1 : 0);
	return exec_p(s,
		      "INSERT INTO workers (id, name, secret_hash, labels, address, port, created_ms, last_seen_ms, cordoned)"
		      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
		      " secret_hash = excluded.secret_hash, labels = excluded.labels, address = excluded.address,"
		      " port = excluded.port, cordoned = excluded.cordoned",
		      &p, "save worker", err);
}

static int worker_del(struct cr_store *s, const char *id, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM workers WHERE id = $1", id, err);
}

#define WORKER_SELECT \
	"SELECT id, name, secret_hash, labels, address, port, created_ms, last_seen_ms, report, report_dynamic, " \
	"cordoned FROM workers "

/* Every worker, or the one with id (CR_ENOTFOUND when none). */
static int workers_read(struct cr_store *s, const char *id, cr_store_worker_cb cb, void *arg, struct cr_err *err)
{
	struct params p = { 0 };
	if (id)
		p_s(&p, id);
	PGresult *r = NULL;
	int rc = run(s, id ? WORKER_SELECT "WHERE id = $1" : WORKER_SELECT "ORDER BY name", id ? &p : NULL, &r,
		     "list workers", err);
	if (!rc && id && PQntuples(r) == 0)
		rc = cr_err_set(err, CR_ENOTFOUND, NULL, "no worker %s", id);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_worker_rec w = {
			(char *)txt(r, i, 0), (char *)txt(r, i, 1), (char *)txt(r, i, 2), (char *)txt(r, i, 3),
			(char *)txt(r, i, 4), (int)num(r, i, 5), num(r, i, 6), num(r, i, 7), (char *)txt(r, i, 8),
			(char *)txt(r, i, 9), num(r, i, 10) != 0, num(r, i, 10) == 2,
		};
		cb(&w, arg);
	}
	PQclear(r);
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

/* BEGIN; each of n statements; COMMIT, or ROLLBACK at the first failure. */
typedef int (*step_fn)(struct cr_store *s, size_t i, const void *rows, struct cr_err *err);

static int in_transaction(struct cr_store *s, size_t n, const void *rows, step_fn step, struct cr_err *err)
{
	int rc = exec_p(s, "BEGIN", NULL, "begin", err);
	for (size_t i = 0; !rc && i < n; i++)
		rc = step(s, i, rows, err);
	if (rc) {
		exec_p(s, "ROLLBACK", NULL, "rollback", NULL);
		return rc;
	}
	return exec_p(s, "COMMIT", NULL, "commit", err);
}

static int observed_step(struct cr_store *s, size_t i, const void *rows, struct cr_err *err)
{
	const struct cr_worker_rec *const *w = rows;
	struct params p = { 0 };
	p_i(&p, w[i]->last_seen_ms);
	p_s(&p, w[i]->report_json);
	p_s(&p, w[i]->dynamic_json);
	p_s(&p, w[i]->id);
	return exec_p(s, "UPDATE workers SET last_seen_ms = $1, report = COALESCE($2, report), report_dynamic = $3 "
			 "WHERE id = $4",
		      &p, "update worker status", err);
}

static int worker_observed(struct cr_store *s, const struct cr_worker_rec *const *w, size_t n, struct cr_err *err)
{
	return in_transaction(s, n, w, observed_step, err);
}

static int model_put(struct cr_store *s, const struct cr_model_rec *m, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, m->id);
	p_s(&p, m->name);
	p_s(&p, m->spec_json);
	p_i(&p, m->created_ms);
	p_i(&p, m->updated_ms);
	int rc = exec_p(s,
			"INSERT INTO models (id, name, spec, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5) "
			"ON CONFLICT (id) DO UPDATE SET name = excluded.name, spec = excluded.spec, "
			"updated_ms = excluded.updated_ms",
			&p, "save model", err);
	if (rc == CR_ECONFLICT)
		return cr_err_set(err, CR_ECONFLICT, "choose another name, or update the existing model",
				  "a model named '%s' already exists", m->name);
	return rc;
}

static int model_del(struct cr_store *s, const char *id, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM models WHERE id = $1", id, err);
}

static int model_list(struct cr_store *s, cr_store_model_cb cb, void *arg, struct cr_err *err)
{
	PGresult *r = NULL;
	int rc = run(s, "SELECT id, name, spec, created_ms, updated_ms FROM models ORDER BY created_ms, id", NULL, &r,
		     "list models", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_model_rec m = { (char *)txt(r, i, 0), (char *)txt(r, i, 1), (char *)txt(r, i, 2), num(r, i, 3),
					  num(r, i, 4) };
		cb(&m, arg);
	}
	PQclear(r);
	return rc;
}

static int instance_put(struct cr_store *s, const struct cr_instance_rec *i, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, i->id);
	p_s(&p, i->model_id);
	p_s(&p, i->placement_json);
	p_s(&p, i->state);
	p_s(&p, i->message ? i->message : "");
	p_i(&p, i->created_ms);
	p_i(&p, i->updated_ms);
	p_s(&p, i->endpoint);
	return exec_p(s,
		      "INSERT INTO instances (id, model_id, placement, state, message, created_ms, updated_ms, endpoint) "
		      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET placement = excluded.placement, "
		      "state = excluded.state, message = excluded.message, updated_ms = excluded.updated_ms, "
		      "endpoint = excluded.endpoint",
		      &p, "save instance", err);
}

static int instance_del(struct cr_store *s, const char *id, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM instances WHERE id = $1", id, err);
}

static int instance_list(struct cr_store *s, cr_store_instance_cb cb, void *arg, struct cr_err *err)
{
	PGresult *r = NULL;
	int rc = run(s,
		     "SELECT id, model_id, placement, state, message, created_ms, updated_ms, endpoint FROM instances "
		     "ORDER BY created_ms, id",
		     NULL, &r, "list instances", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_instance_rec x = { (char *)txt(r, i, 0), (char *)txt(r, i, 1), (char *)txt(r, i, 2),
					     (char *)txt(r, i, 3), (char *)txt(r, i, 4), num(r, i, 5),
					     num(r, i, 6), (char *)txt(r, i, 7) };
		cb(&x, arg);
	}
	PQclear(r);
	return rc;
}

static int key_add(struct cr_store *s, const struct cr_key_rec *k, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, k->id);
	p_s(&p, k->name);
	p_i(&p, k->user_id);
	p_s(&p, k->hash);
	p_s(&p, k->prefix);
	p_s(&p, k->models_json);
	p_i(&p, k->rpm);
	p_i(&p, k->tpm);
	p_i(&p, k->expires_ms);
	p_i(&p, k->created_ms);
	p_s(&p, k->quotas_json ? k->quotas_json : "{}");
	return exec_p(s,
		      "INSERT INTO api_keys (id, name, user_id, hash, prefix, models, rpm, tpm, expires_ms, created_ms, "
		      "quotas) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
		      &p, "save API key", err);
}

static int key_del(struct cr_store *s, const char *id, struct cr_err *err)
{
	return delete_by(s, "DELETE FROM api_keys WHERE id = $1", id, err);
}

static int key_list(struct cr_store *s, cr_store_key_cb cb, void *arg, struct cr_err *err)
{
	PGresult *r = NULL;
	int rc = run(s,
		     "SELECT id, name, user_id, hash, prefix, models, rpm, tpm, expires_ms, created_ms, quotas FROM api_keys "
		     "ORDER BY created_ms, id",
		     NULL, &r, "list API keys", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_key_rec k = { (char *)txt(r, i, 0), (char *)txt(r, i, 1), num(r, i, 2), (char *)txt(r, i, 3),
					(char *)txt(r, i, 4), (char *)txt(r, i, 5), num(r, i, 6), num(r, i, 7),
					num(r, i, 8), num(r, i, 9), (char *)txt(r, i, 10) };
		cb(&k, arg);
	}
	PQclear(r);
	return rc;
}

static int usage_step(struct cr_store *s, size_t i, const void *rows, struct cr_err *err)
{
	const struct cr_usage_rec *u = ((const struct cr_usage_rec *const *)rows)[i];
	struct params p = { 0 };
	p_s(&p, u->day);
	p_s(&p, u->key_id);
	p_s(&p, u->key_name);
	p_i(&p, u->user_id);
	p_s(&p, u->username);
	p_s(&p, u->model);
	int64_t v[7] = { u->requests, u->errors, u->prompt_tokens, u->completion_tokens, u->ttft_ms_sum, u->ttft_count,
			 u->latency_ms_sum };
	for (int j = 0; j < 7; j++)
		p_i(&p, v[j]);
	return exec_p(s,
		      "INSERT INTO usage (day, key_id, key_name, user_id, username, model, requests, errors, prompt_tokens, "
		      "completion_tokens, ttft_ms_sum, ttft_count, latency_ms_sum) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,"
		      "$11,$12,$13) ON CONFLICT (day, key_id, model) DO UPDATE SET key_name = excluded.key_name, "
		      "username = excluded.username, requests = usage.requests + excluded.requests, "
		      "errors = usage.errors + excluded.errors, prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens, "
		      "completion_tokens = usage.completion_tokens + excluded.completion_tokens, "
		      "ttft_ms_sum = usage.ttft_ms_sum + excluded.ttft_ms_sum, "
		      "ttft_count = usage.ttft_count + excluded.ttft_count, "
		      "latency_ms_sum = usage.latency_ms_sum + excluded.latency_ms_sum",
		      &p, "record usage", err);
}

static int usage_add(struct cr_store *s, const struct cr_usage_rec *const *rows, size_t n, struct cr_err *err)
{
	return in_transaction(s, n, rows, usage_step, err);
}

static int usage_query(struct cr_store *s, const struct cr_usage_query *q, cr_store_usage_cb cb, void *arg,
		       struct cr_err *err)
{
	/* grouping columns come from this fixed list only; values are bound */
	char sql[1400], group[64] = "";
	const char *cols[] = { q->by_day ? "day" : NULL, q->by_key ? "key_id" : NULL,
			       q->by_user || q->by_key ? "user_id" : NULL, q->by_model ? "model" : NULL };
	for (int i = 0; i < 4; i++)
		if (cols[i])
			snprintf(group + strlen(group), sizeof(group) - strlen(group), "%s%s", *group ? ", " : " GROUP BY ",
				 cols[i]);
	snprintf(sql, sizeof(sql),
		 "SELECT %s, %s, %s, %s, %s, %s, SUM(requests), SUM(errors), SUM(prompt_tokens), "
		 "SUM(completion_tokens), SUM(ttft_ms_sum), SUM(ttft_count), SUM(latency_ms_sum) FROM usage "
		 "WHERE ($1 = '' OR day >= $1) AND ($2 = '' OR day <= $2) AND ($3::bigint = 0 OR user_id = $3::bigint) "
		 "AND ($4 = '' OR key_id = $4) AND ($5 = '' OR model = $5)%s ORDER BY 1, 5, 3, 6",
		 q->by_day ? "day" : "''::text", q->by_key ? "key_id" : "''::text",
		 q->by_key ? "MAX(key_name)" : "''::text", q->by_user || q->by_key ? "user_id" : "0::bigint",
		 q->by_user || q->by_key ? "MAX(username)" : "''::text", q->by_model ? "model" : "''::text", group);
	struct params p = { 0 };
	p_s(&p, q->since ? q->since : "");
	p_s(&p, q->until ? q->until : "");
	p_i(&p, q->user_id);
	p_s(&p, q->key_id ? q->key_id : "");
	p_s(&p, q->model ? q->model : "");
	PGresult *r = NULL;
	int rc = run(s, sql, &p, &r, "query usage", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		if (PQgetisnull(r, i, 6))
			continue; /* no rows at all */
		struct cr_usage_rec u = { (char *)txt(r, i, 0), (char *)txt(r, i, 1), (char *)txt(r, i, 2), num(r, i, 3),
					  (char *)txt(r, i, 4), (char *)txt(r, i, 5), num(r, i, 6), num(r, i, 7),
					  num(r, i, 8), num(r, i, 9), num(r, i, 10), num(r, i, 11), num(r, i, 12) };
		cb(&u, arg);
	}
	PQclear(r);
	return rc;
}

static int audit_add(struct cr_store *s, const struct cr_audit_rec *a, struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, a->at_ms);
	p_s(&p, a->actor ? a->actor : "-");
	p_s(&p, a->address ? a->address : "");
	p_s(&p, a->action);
	p_s(&p, a->target ? a->target : "");
	p_s(&p, a->detail ? a->detail : "");
	return exec_p(s, "INSERT INTO audit (at_ms, actor, address, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)",
		      &p, "add an audit entry", err);
}

static int audit_list(struct cr_store *s, int64_t since_ms, const char *action_prefix, int limit, cr_store_audit_cb cb,
		      void *arg, struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, since_ms);
	p_s(&p, action_prefix ? action_prefix : "");
	p_i(&p, limit);
	PGresult *r = NULL;
	int rc = run(s, "SELECT id, at_ms, actor, address, action, target, detail FROM audit WHERE at_ms >= $1 AND "
			"($2 = '' OR substr(action, 1, length($2)) = $2) ORDER BY id DESC LIMIT $3",
		     &p, &r, "list the audit trail", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_audit_rec a = { num(r, i, 0), num(r, i, 1), (char *)txt(r, i, 2), (char *)txt(r, i, 3),
					  (char *)txt(r, i, 4), (char *)txt(r, i, 5), (char *)txt(r, i, 6) };
		cb(&a, arg);
	}
	PQclear(r);
	return rc;
}

static int purge(struct cr_store *s, const char *sql, int64_t before_ms, int64_t *deleted, const char *what,
		 struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, before_ms);
	int64_t n = 0;
	int rc = exec_count(s, sql, &p, &n, what, err);
	if (deleted)
		*deleted = rc ? 0 : n;
	return rc;
}

static int audit_purge(struct cr_store *s, int64_t before_ms, int64_t *deleted, struct cr_err *err)
{
	return purge(s, "DELETE FROM audit WHERE at_ms < $1", before_ms, deleted, "trim the audit trail", err);
}

static int event_add(struct cr_store *s, struct cr_event_rec *e, struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, e->at_ms);
	p_s(&p, e->kind);
	p_s(&p, e->subject ? e->subject : "");
	p_s(&p, e->message ? e->message : "");
	p_s(&p, e->detail ? e->detail : "");
	PGresult *r = NULL;
	int rc = run(s, "INSERT INTO events (at_ms, kind, subject, message, detail) VALUES ($1, $2, $3, $4, $5) "
			"RETURNING id",
		     &p, &r, "add an event", err);
	if (!rc)
		e->id = num(r, 0, 0);
	PQclear(r);
	return rc;
}

static int event_list(struct cr_store *s, int64_t after_id, int limit, bool newest, cr_store_event_cb cb, void *arg,
		      struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, after_id);
	p_i(&p, limit);
	PGresult *r = NULL;
	int rc = run(s, newest ? "SELECT * FROM (SELECT id, at_ms, kind, subject, message, detail FROM events WHERE "
				 "id > $1 ORDER BY id DESC LIMIT $2) AS last ORDER BY id"
			       : "SELECT id, at_ms, kind, subject, message, detail FROM events WHERE id > $1 ORDER BY id "
				 "LIMIT $2",
		     &p, &r, "list events", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_event_rec e = { num(r, i, 0), num(r, i, 1), (char *)txt(r, i, 2), (char *)txt(r, i, 3),
					  (char *)txt(r, i, 4), (char *)txt(r, i, 5) };
		cb(&e, arg);
	}
	PQclear(r);
	return rc;
}

static int event_purge(struct cr_store *s, int64_t before_ms, int64_t *deleted, struct cr_err *err)
{
	return purge(s, "DELETE FROM events WHERE at_ms < $1", before_ms, deleted, "trim the events", err);
}

static int mail_step(struct cr_store *s, size_t i, const void *rows, struct cr_err *err)
{
	const struct cr_mail_rec *m = (const struct cr_mail_rec *)rows + i;
	struct params p = { 0 };
	p_i(&p, m->at_ms);
	p_s(&p, m->worker_id);
	p_s(&p, m->kind);
	p_s(&p, m->body);
	p_s(&p, m->server ? m->server : "");
	return exec_p(s, "INSERT INTO worker_mail (at_ms, worker_id, kind, body, server) VALUES ($1, $2, $3, $4, $5)", &p,
		      "keep workers' messages", err);
}

static int mail_put(struct cr_store *s, const struct cr_mail_rec *m, size_t n, struct cr_err *err)
{
	return n == 1 ? mail_step(s, 0, m, err) : in_transaction(s, n, m, mail_step, err);
}

static int by_mail_id(const void *a, const void *b)
{
	const struct cr_mail_rec *x = a, *y = b;
	return (x->id > y->id) - (x->id < y->id);
}

/* Taken and removed in one statement: several followers put mail at once,
 * and an id may become visible after a higher one, so what is removed is
 * exactly what was read, never "up to an id". */
static int mail_take(struct cr_store *s, int limit, cr_store_mail_cb cb, void *arg, struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, limit);
	PGresult *r = NULL;
	int rc = run(s, "DELETE FROM worker_mail WHERE id IN (SELECT id FROM worker_mail ORDER BY id LIMIT $1) "
			"RETURNING id, at_ms, worker_id, kind, body, server",
		     &p, &r, "take workers' messages", err);
	int n = rc ? 0 : PQntuples(r);
	struct cr_mail_rec *m = n ? cr_xcalloc((size_t)n, sizeof(*m)) : NULL;
	for (int i = 0; i < n; i++)
		m[i] = (struct cr_mail_rec){ num(r, i, 0), num(r, i, 1), (char *)txt(r, i, 2), (char *)txt(r, i, 3),
					     (char *)txt(r, i, 4), (char *)txt(r, i, 5) };
	if (n)
		qsort(m, (size_t)n, sizeof(*m), by_mail_id);
	for (int i = 0; i < n; i++)
		cb(&m[i], arg);
	free(m);
	PQclear(r);
	return rc;
}

static int watch_put(struct cr_store *s, const char *worker_id, const char *body, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, worker_id);
	p_s(&p, body);
	return exec_p(s, "INSERT INTO worker_watch (worker_id, seq, body) VALUES ($1, nextval('worker_watch_seq_gen'), $2) "
			 "ON CONFLICT (worker_id) DO UPDATE SET seq = excluded.seq, body = excluded.body",
		      &p, "keep a watch payload", err);
}

static int watch_list(struct cr_store *s, int64_t after_seq, cr_store_watch_cb cb, void *arg, struct cr_err *err)
{
	struct params p = { 0 };
	p_i(&p, after_seq);
	PGresult *r = NULL;
	int rc = run(s, "SELECT seq, worker_id, body FROM worker_watch WHERE seq > $1 ORDER BY seq", &p, &r,
		     "read watch payloads", err);
	for (int i = 0; !rc && i < PQntuples(r); i++) {
		struct cr_watch_rec w = { num(r, i, 0), (char *)txt(r, i, 1), (char *)txt(r, i, 2) };
		cb(&w, arg);
	}
	PQclear(r);
	return rc;
}

static int setting_get(struct cr_store *s, const char *key, char **value, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, key);
	PGresult *r = NULL;
	int rc = run(s, "SELECT value FROM settings WHERE key = $1", &p, &r, "read setting", err);
	if (!rc && PQntuples(r) == 1)
		*value = cr_xstrdup(PQgetvalue(r, 0, 0));
	else if (!rc)
		rc = cr_err_set(err, CR_ENOTFOUND, NULL, "setting '%s' is not set", key);
	PQclear(r);
	return rc;
}

static int setting_put(struct cr_store *s, const char *key, const char *value, struct cr_err *err)
{
	struct params p = { 0 };
	p_s(&p, key);
	p_s(&p, value);
	return exec_p(s, "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET "
			 "value = excluded.value",
		      &p, "save setting", err);
}

static int schema_version(struct cr_store *s, int *version, struct cr_err *err)
{
	PGresult *r = NULL;
	int rc = run(s, "SELECT COALESCE(MAX(version), 0) FROM corral_schema", NULL, &r, "read the schema version", err);
	*version = rc ? 0 : (int)num(r, 0, 0);
	PQclear(r);
	return rc;
}

static void pg_close(struct cr_store *s)
{
	PQfinish(pg(s)->db);
	free(pg(s)->where);
	free(s);
}

static const struct cr_store_ops pg_ops = {
	"postgresql", user_add, user_list, user_del, user_set_limits, user_set_password, session_add, session_del,
	session_list, worker_put, worker_del, worker_list, worker_get, worker_observed, model_put, model_del, model_list,
	instance_put, instance_del, instance_list, key_add, key_del, key_list, usage_add, usage_query, audit_add,
	audit_list, audit_purge, event_add, event_list, event_purge, mail_put, mail_take, watch_put, watch_list,
	setting_get, setting_put, schema_version, pg_close,
};

/* Apply pending migrations, one transaction each, under an advisory lock so
 * that servers starting together migrate once. */
static int migrate(struct cr_store *s, struct cr_err *err)
{
	struct params lock = { 0 };
	p_i(&lock, MIGRATE_LOCK);
	int rc = exec_p(s, "CREATE TABLE IF NOT EXISTS corral_schema (version INTEGER NOT NULL)", NULL,
			"create the schema table", err);
	if (!rc)
		rc = exec_p(s, "SELECT pg_advisory_lock($1)", &lock, "lock for migrations", err);
	if (rc)
		return rc;
	int have = 0, known = 0;
	while (cr_schema_pg[known])
		known++;
	rc = schema_version(s, &have, err);
	if (!rc && have > known)
		rc = cr_err_set(err, -EPROTO, "run the newer corral binary that created this store, or restore a backup",
				"the store has schema version %d but this corral knows only up to %d", have, known);
	for (int v = have; !rc && v < known; v++) {
		char *sql = cr_xasprintf("BEGIN; %s DELETE FROM corral_schema; INSERT INTO corral_schema VALUES (%d); COMMIT;",
					 cr_schema_pg[v], v + 1);
		PGresult *r = PQexec(pg(s)->db, sql); /* several statements: the simple protocol */
		free(sql);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			rc = pg_error(s, r, err, "migrate the schema");
			PQclear(PQexec(pg(s)->db, "ROLLBACK"));
		} else {
			PQclear(r);
		}
	}
	exec_p(s, "SELECT pg_advisory_unlock($1)", &lock, "unlock", NULL);
	return rc;
}

/* "user@host:port/db" of a connection, for messages: never the password. */
static char *where_of(PGconn *c)
{
	const char *host = PQhost(c), *port = PQport(c), *db = PQdb(c), *user = PQuser(c);
	return cr_xasprintf("%s@%s:%s/%s", user ? user : "?", host && *host ? host : "localhost", port ? port : "5432",
			    db ? db : "?");
}

PGconn *cr_pg_connect(const char *url, const char *app_name, const char *connect_timeout_s)
{
	const char *keys[] = { "dbname", "connect_timeout", "application_name", "keepalives_idle", "keepalives_interval",
			       "keepalives_count", "tcp_user_timeout", NULL };
	const char *vals[] = { url, connect_timeout_s, app_name, "5", "2", "2", "8000", NULL };
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	if (!c)
		abort();
	return c;
}

int cr_store_open_pg(const char *url, struct cr_store **out, struct cr_err *err)
{
	struct pg_store *ps = cr_xcalloc(1, sizeof(*ps));
	ps->base.ops = &pg_ops;
	/* short timeouts: statements and reconnections run on the event loop */
	ps->db = cr_pg_connect(url, "corral", "3");
	ps->where = where_of(ps->db);
	int rc = 0;
	if (PQstatus(ps->db) != CONNECTION_OK) {
		char msg[400];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(ps->db));
		msg[strcspn(msg, "\n")] = '\0';
		rc = cr_err_set(err, CR_EUNAVAILABLE,
				"check that PostgreSQL runs, the database exists and the role may connect (--store "
				"postgresql://USER[:PASSWORD]@HOST:PORT/DB)",
				"cannot connect to PostgreSQL at %s: %s", ps->where, msg);
		goto fail;
	}
	PQclear(PQexec(ps->db, "SET client_min_messages = warning"));
	rc = migrate(&ps->base, err);
	if (rc)
		goto fail;
	*out = &ps->base;
	return 0;
fail:
	pg_close(&ps->base);
	return rc;
}

bool cr_store_is_pg(const char *spec)
{
	return spec && (!strncmp(spec, "postgresql://", 13) || !strncmp(spec, "postgres://", 11));
}
