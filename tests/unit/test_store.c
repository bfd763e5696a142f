/* The store contract, against real SQLite files, and (built with
 * -DSTORE_PG as test_store_pg) against a real PostgreSQL server: migrations,
 * users, sessions, workers and the batched flush of observed state, models,
 * keys, usage, the audit trail and events. scripts/pg-test.sh starts a
 * private PostgreSQL and passes its URL in CORRAL_TEST_PG; each test gets a
 * database of its own. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef STORE_PG
#include <libpq-fe.h>
#else
#include <sqlite3.h>
#endif

#include "base/err.h"
#include "base/mem.h"
#include "store/store.h"

#ifdef STORE_PG
/* A fresh database on the test server; its URL. */
static char *db_path(void)
{
	const char *admin = getenv("CORRAL_TEST_PG");
	if (!admin || !*admin) {
		if (getenv("CI"))
			cr_assert_fail("CORRAL_TEST_PG is not set: run this through scripts/pg-test.sh run");
		cr_skip_test("no PostgreSQL (CORRAL_TEST_PG unset; scripts/pg-test.sh run starts one)");
	}
	PGconn *c = PQconnectdb(admin);
	cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
	static unsigned seq;
	char name[64];
	snprintf(name, sizeof(name), "t_%d_%u", (int)getpid(), seq++);
	char *sql = cr_xasprintf("CREATE DATABASE %s", name);
	PGresult *r = PQexec(c, sql);
	cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
	PQclear(r);
	free(sql);
	PQfinish(c);
	const char *slash = strrchr(admin, '/');
	return cr_xasprintf("%.*s/%s", (int)(slash - admin), admin, name);
}

static int open_store(const char *path, struct cr_store **s, struct cr_err *err)
{
	return cr_store_open_pg(path, s, err);
}

static void sql(const char *url, const char *q)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r = PQexec(c, q);
	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s",
		  PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}
#else
static char *db_path(void)
{
	char *d = cr_xstrdup("/tmp/cr-store-XXXXXX");
	cr_assert_not_null(mkdtemp(d));
	char *p = cr_xasprintf("%s/corral.db", d);
	free(d);
	return p;
}

static int open_store(const char *path, struct cr_store **s, struct cr_err *err)
{
	return cr_store_open_sqlite(path, s, err);
}

static void sql(const char *path, const char *q)
{
	sqlite3 *db;
	sqlite3_open(path, &db);
	cr_assert_eq(sqlite3_exec(db, q, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}
#endif

static struct cr_store *open_at(const char *path)
{
	struct cr_store *s = NULL;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(open_store(path, &s, &err), 0, "%s", err.message);
	return s;
}

Test(store, migrations_apply_once_and_refuse_newer_schemas)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	int v = 0;
	cr_assert_eq(s->ops->schema_version(s, &v, NULL), 0);
	cr_assert_eq(v, 11);
	cr_store_close(s);
	s = open_at(path); /* reopening applies nothing again */
	cr_assert_eq(s->ops->schema_version(s, &v, NULL), 0);
	cr_assert_eq(v, 11);
	cr_store_close(s);

#ifdef STORE_PG
	sql(path, "UPDATE corral_schema SET version = 99");
#else
	sql(path, "PRAGMA user_version = 99");
#endif
	struct cr_err err = CR_ERR_INIT;
	cr_assert_neq(open_store(path, &s, &err), 0);
	cr_assert(strstr(err.message, "schema version 99"), "%s", err.message);
	cr_assert(strstr(err.fix, "newer"), "%s", err.fix);
	free(path);
}

#ifndef STORE_PG
Test(store, wal_mode_is_on)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	cr_store_close(s);
	sqlite3 *db;
	sqlite3_open(path, &db);
	sqlite3_stmt *st;
	sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
	cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
	cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(path);
}
#endif

static void count_user(const struct cr_user_rec *u, void *arg)
{
	int *n = arg;
	cr_assert_str_eq(u->username, "admin");
	cr_assert_str_eq(u->role, "admin");
	(*n)++;
}

Test(store, users_are_unique)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	struct cr_user_rec u = { 0, "admin", "$argon2id$x", "admin", 1, NULL };
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(s->ops->user_add(s, &u, &err), 0);
	cr_assert_gt(u.id, 0);
	cr_assert_eq(s->ops->user_add(s, &u, &err), CR_ECONFLICT);
	struct cr_user_rec bad = { 0, "eve", "h", "root", 1, NULL };
	cr_assert_neq(s->ops->user_add(s, &bad, &err), 0, "roles are checked by the schema");
	int n = 0;
	cr_assert_eq(s->ops->user_list(s, count_user, &n, &err), 0);
	cr_assert_eq(n, 1);
	cr_store_close(s);
	free(path);
}

static void count_session(const struct cr_session_rec *r, void *arg)
{
	int *n = arg;
	cr_assert_str_eq(r->token_hash, "live");
	(*n)++;
}

Test(store, expired_sessions_are_dropped)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	struct cr_user_rec u = { 0, "admin", "h", "admin", 1, NULL };
	cr_assert_eq(s->ops->user_add(s, &u, NULL), 0);
	struct cr_session_rec live = { "live", u.id, 1, 2000 }, dead = { "dead", u.id, 1, 500 };
	cr_assert_eq(s->ops->session_add(s, &live, NULL), 0);
	cr_assert_eq(s->ops->session_add(s, &dead, NULL), 0);
	int n = 0;
	cr_assert_eq(s->ops->session_list(s, 1000, count_session, &n, NULL), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(s->ops->session_del(s, "live", NULL), 0);
	n = 0;
	cr_assert_eq(s->ops->session_list(s, 1000, count_session, &n, NULL), 0);
	cr_assert_eq(n, 0);
	cr_store_close(s);
	free(path);
}

struct seen {
	int n;
	char report[256];
	long long last_seen;
	char labels[64];
	bool cordoned, draining;
};

static void see_worker(const struct cr_worker_rec *w, void *arg)
{
	struct seen *s = arg;
	s->n++;
	snprintf(s->report, sizeof(s->report), "%s", w->report_json ? w->report_json : "");
	snprintf(s->labels, sizeof(s->labels), "%s", w->labels_json);
	s->last_seen = w->last_seen_ms;
	s->cordoned = w->cordoned;
	s->draining = w->draining;
}

Test(store, workers_identity_and_observed_state)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	struct cr_worker_rec w = { "id1", "gpu-1", "hash", "{\"gpu\":\"h100\"}", "10.0.0.5", 10150, 1, 0, NULL, NULL, false, false };
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(s->ops->worker_put(s, &w, &err), 0);
	struct cr_worker_rec clash = { "id2", "gpu-1", "hash", "{}", "", 1, 1, 0, NULL, NULL, false, false };
	cr_assert_eq(s->ops->worker_put(s, &clash, &err), CR_ECONFLICT, "names are unique");
	w.report_json = "{\"system\":{}}";
	w.last_seen_ms = 4242;
	const struct cr_worker_rec *batch[] = { &w };
	cr_assert_eq(s->ops->worker_observed(s, batch, 1, &err), 0);
	w.labels_json = "{}";
	cr_assert_eq(s->ops->worker_put(s, &w, &err), 0, "updating identity keeps observed state");
	cr_store_close(s);
	s = open_at(path);
	struct seen seen = { 0, "", 0, "", false, false };
	cr_assert_eq(s->ops->worker_list(s, see_worker, &seen, &err), 0);
	cr_assert_eq(seen.n, 1);
	cr_assert_str_eq(seen.report, "{\"system\":{}}");
	cr_assert_str_eq(seen.labels, "{}");
	cr_assert_eq(seen.last_seen, 4242);
	cr_assert(!seen.cordoned && !seen.draining);
	w.cordoned = w.draining = true;
	cr_assert_eq(s->ops->worker_put(s, &w, &err), 0);
	seen.n = 0;
	cr_assert_eq(s->ops->worker_list(s, see_worker, &seen, &err), 0);
	cr_assert(seen.cordoned && seen.draining, "a drain survives a restart");
	w.draining = false;
	cr_assert_eq(s->ops->worker_put(s, &w, &err), 0);
	seen.n = 0;
	cr_assert_eq(s->ops->worker_list(s, see_worker, &seen, &err), 0);
	cr_assert(seen.cordoned && !seen.draining);
	seen.n = 0;
	cr_assert_eq(s->ops->worker_get(s, "id1", see_worker, &seen, &err), 0, "one worker by id");
	cr_assert_eq(seen.n, 1);
	cr_assert_str_eq(seen.labels, "{}");
	cr_assert_eq(s->ops->worker_get(s, "nope", see_worker, &seen, &err), CR_ENOTFOUND);
	cr_assert_eq(seen.n, 1);
	cr_assert_eq(s->ops->worker_del(s, "id1", &err), 0);
	seen.n = 0;
	cr_assert_eq(s->ops->worker_list(s, see_worker, &seen, &err), 0);
	cr_assert_eq(seen.n, 0);
	cr_store_close(s);
	free(path);
}

Test(store, settings)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	char *v = NULL;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(s->ops->setting_get(s, "k", &v, &err), CR_ENOTFOUND);
	cr_assert_eq(s->ops->setting_put(s, "k", "one", &err), 0);
	cr_assert_eq(s->ops->setting_put(s, "k", "two", &err), 0);
	cr_assert_eq(s->ops->setting_get(s, "k", &v, &err), 0);
	cr_assert_str_eq(v, "two");
	free(v);
	cr_store_close(s);
	free(path);
}

#ifdef STORE_PG
Test(store, an_unreachable_server_is_explained_without_the_password)
{
	struct cr_store *s = NULL;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_store_open_pg("postgresql://corral:s3cret@127.0.0.1:1/corral", &s, &err), CR_EUNAVAILABLE);
	cr_assert(strstr(err.message, "cannot connect to PostgreSQL at corral@127.0.0.1:1/corral"), "%s", err.message);
	cr_assert_null(strstr(err.message, "s3cret"), "%s", err.message);
	cr_assert(strstr(err.fix, "PostgreSQL runs"), "%s", err.fix);
}

Test(store, a_restarted_connection_is_used_again)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	/* every other connection to this database dropped, as a restart does */
	char *q = cr_xasprintf("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' AND "
			       "pid <> pg_backend_pid()", strrchr(path, '/') + 1);
	sql(getenv("CORRAL_TEST_PG"), q);
	free(q);
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(s->ops->setting_put(s, "k", "v", &err), 0, "%s", err.message);
	char *v = NULL;
	cr_assert_eq(s->ops->setting_get(s, "k", &v, &err), 0, "%s", err.message);
	cr_assert_str_eq(v, "v");
	free(v);
	cr_store_close(s);
	free(path);
}
#else
Test(store, unwritable_location_is_explained)
{
	struct cr_store *s = NULL;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_neq(cr_store_open_sqlite("/nonexistent-dir/corral.db", &s, &err), 0);
	cr_assert(strstr(err.message, "/nonexistent-dir/corral.db"), "%s", err.message);
	cr_assert(strstr(err.fix, "writable"), "%s", err.fix);
}
#endif

struct seen_models {
	int models, instances;
	char state[32];
	char spec[64];
	char endpoint[64];
};

static void count_model(const struct cr_model_rec *m, void *arg)
{
	struct seen_models *s = arg;
	s->models++;
	snprintf(s->spec, sizeof(s->spec), "%s", m->spec_json);
}

static void count_instance(const struct cr_instance_rec *i, void *arg)
{
	struct seen_models *s = arg;
	s->instances++;
	snprintf(s->state, sizeof(s->state), "%s", i->state);
	snprintf(s->endpoint, sizeof(s->endpoint), "%s", i->endpoint ? i->endpoint : "(null)");
}

Test(store, models_names_are_unique_and_delete_cascades)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	struct cr_err err = CR_ERR_INIT;
	struct cr_model_rec m = { "m1", "qwen", "{\"replicas\":1}", 1, 1 };
	cr_assert_eq(s->ops->model_put(s, &m, &err), 0, "%s", err.message);
	struct cr_model_rec clash = { "m2", "qwen", "{}", 2, 2 };
	cr_assert_eq(s->ops->model_put(s, &clash, &err), CR_ECONFLICT);
	cr_assert(strstr(err.message, "a model named 'qwen' already exists"), "%s", err.message);
	m.spec_json = "{\"replicas\":3}";
	cr_assert_eq(s->ops->model_put(s, &m, &err), 0, "update by id");
	struct cr_instance_rec i = { "i1", "m1", "{}", "scheduled", "", 1, 1, NULL };
	cr_assert_eq(s->ops->instance_put(s, &i, &err), 0, "%s", err.message);
	i.state = "unreachable";
	i.endpoint = "10.0.0.7:20001"; /* kept so that a restarted server routes at once */
	cr_assert_eq(s->ops->instance_put(s, &i, &err), 0);
	struct cr_instance_rec orphan = { "i2", "nope", "{}", "scheduled", "", 1, 1, NULL };
	cr_assert_neq(s->ops->instance_put(s, &orphan, &err), 0, "an instance needs its model");
	struct seen_models seen = { 0 };
	s->ops->model_list(s, count_model, &seen, &err);
	s->ops->instance_list(s, count_instance, &seen, &err);
	cr_assert_eq(seen.models, 1);
	cr_assert_str_eq(seen.spec, "{\"replicas\":3}");
	cr_assert_eq(seen.instances, 1);
	cr_assert_str_eq(seen.state, "unreachable");
	cr_assert_str_eq(seen.endpoint, "10.0.0.7:20001");
	cr_assert_eq(s->ops->model_del(s, "m1", &err), 0);
	memset(&seen, 0, sizeof(seen));
	s->ops->instance_list(s, count_instance, &seen, &err);
	cr_assert_eq(seen.instances, 0, "deleting a model deletes its instances");
	cr_store_close(s);
	free(path);
}

static void count_key(const struct cr_key_rec *k, void *arg)
{
	int *n = arg;
	(*n)++;
	cr_assert_str_eq(k->models_json, "[\"a\"]");
	cr_assert_str_eq(k->quotas_json, "{\"daily_tokens\":5}", "a key's quotas come back");
}

static void bob_limits(const struct cr_user_rec *u, void *arg)
{
	if (!strcmp(u->username, "bob"))
		snprintf(arg, 64, "%s", u->limits_json);
}

Test(store, api_keys_are_kept_as_hashes_and_revoked)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	struct cr_err err = CR_ERR_INIT;
	struct cr_user_rec u = { 0, "bob", "x", "user", 1, "{\"rpm\":2}" };
	cr_assert_eq(s->ops->user_add(s, &u, &err), 0, "%s", err.message);
	struct cr_key_rec k = { "k1", "ci", u.id, "hash1", "sk-corral-abc", "[\"a\"]", 60, 0, 0, 1, "{\"daily_tokens\":5}" };
	cr_assert_eq(s->ops->key_add(s, &k, &err), 0, "%s", err.message);
	struct cr_key_rec same = { "k2", "ci2", u.id, "hash1", "sk-corral-abd", "[]", 0, 0, 0, 2, NULL };
	cr_assert_neq(s->ops->key_add(s, &same, &err), 0, "two keys cannot share a hash");
	int n = 0;
	s->ops->key_list(s, count_key, &n, &err);
	cr_assert_eq(n, 1);
	char lim[64] = "";
	s->ops->user_list(s, bob_limits, lim, &err);
	cr_assert_str_eq(lim, "{}", "limits start empty");
	cr_assert_eq(s->ops->user_set_limits(s, u.id, "{\"rpm\":2}", &err), 0);
	s->ops->user_list(s, bob_limits, lim, &err);
	cr_assert_str_eq(lim, "{\"rpm\":2}");
	cr_assert_eq(s->ops->user_set_limits(s, 999, "{}", &err), CR_ENOTFOUND);
	cr_assert_eq(s->ops->key_del(s, "k1", &err), 0);
	n = 0;
	s->ops->key_list(s, count_key, &n, &err);
	cr_assert_eq(n, 0, "revoked");
	cr_store_close(s);
	free(path);
}

struct usage_sum {
	int rows;
	int64_t requests, prompt, completion;
	char last_model[32], last_day[16];
};

static void sum_usage(const struct cr_usage_rec *u, void *arg)
{
	struct usage_sum *s = arg;
	s->rows++;
	s->requests += u->requests;
	s->prompt += u->prompt_tokens;
	s->completion += u->completion_tokens;
	snprintf(s->last_model, sizeof(s->last_model), "%s", u->model);
	snprintf(s->last_day, sizeof(s->last_day), "%s", u->day);
}

Test(store, usage_adds_up_across_flushes_and_sums_per_group)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	struct cr_err err = CR_ERR_INIT;
	struct cr_usage_rec a = { "2026-11-24", "k1", "ci", 1, "admin", "tiny", 2, 0, 100, 20, 30, 1, 400 };
	struct cr_usage_rec b = { "2026-11-25", "k1", "ci", 1, "admin", "tiny", 1, 1, 50, 10, 0, 0, 100 };
	struct cr_usage_rec c = { "2026-11-25", "k2", "bot", 2, "bob", "embed", 3, 0, 9, 0, 0, 0, 30 };
	const struct cr_usage_rec *rows[] = { &a, &b, &c };
	cr_assert_eq(s->ops->usage_add(s, rows, 3, &err), 0, "%s", err.message);
	cr_assert_eq(s->ops->usage_add(s, rows, 1, &err), 0, "a second flush adds to the row");
	struct usage_sum sum = { 0 };
	struct cr_usage_query all = { "", "", 0, NULL, NULL, false, false, false, false };
	cr_assert_eq(s->ops->usage_query(s, &all, sum_usage, &sum, &err), 0, "%s", err.message);
	cr_assert_eq(sum.rows, 1, "no grouping: one total");
	cr_assert_eq(sum.requests, 2 + 2 + 1 + 3);
	cr_assert_eq(sum.prompt, 200 + 50 + 9);
	memset(&sum, 0, sizeof(sum));
	struct cr_usage_query by_model = { "2026-11-25", "", 0, NULL, NULL, false, false, false, true };
	s->ops->usage_query(s, &by_model, sum_usage, &sum, &err);
	cr_assert_eq(sum.rows, 2, "two models on the 25th");
	memset(&sum, 0, sizeof(sum));
	struct cr_usage_query bob = { "", "", 2, NULL, NULL, true, false, false, false };
	s->ops->usage_query(s, &bob, sum_usage, &sum, &err);
	cr_assert_eq(sum.rows, 1);
	cr_assert_eq(sum.requests, 3);
	cr_assert_str_eq(sum.last_day, "2026-11-25");
	memset(&sum, 0, sizeof(sum));
	struct cr_usage_query none = { "2027-01-01", "", 0, NULL, NULL, false, false, false, false };
	s->ops->usage_query(s, &none, sum_usage, &sum, &err);
	cr_assert_eq(sum.rows, 0, "nothing in range: no rows, not a row of zeros");
	cr_store_close(s);
	free(path);
}

static void collect_audit(const struct cr_audit_rec *a, void *arg)
{
	char *out = arg;
	size_t n = strlen(out);
	snprintf(out + n, 512 - n, "%s%s:%s@%s", n ? "," : "", a->actor, a->action, a->target);
}

Test(store, audit_entries_list_newest_first_filter_and_purge)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	struct cr_err err = CR_ERR_INIT;
	struct cr_audit_rec rows[] = {
		{ 0, 1000, "old", "10.0.0.1", "login", "old", "" },
		{ 0, 5000, "admin", "10.0.0.2", "model.create", "m1", "{\"ctx\":1}" },
		{ 0, 6000, "admin", "10.0.0.2", "key.create", "k", "" },
		{ 0, 7000, "bob", "10.0.0.3", "model.delete", "m1", "" },
	};
	for (size_t i = 0; i < 4; i++)
		cr_assert_eq(s->ops->audit_add(s, &rows[i], &err), 0, "%s", err.message);
	char got[512] = "";
	cr_assert_eq(s->ops->audit_list(s, 0, NULL, 100, collect_audit, got, &err), 0);
	cr_assert_str_eq(got, "bob:model.delete@m1,admin:key.create@k,admin:model.create@m1,old:login@old");
	got[0] = '\0';
	cr_assert_eq(s->ops->audit_list(s, 2000, "model.", 1, collect_audit, got, &err), 0);
	cr_assert_str_eq(got, "bob:model.delete@m1", "since, the action's prefix and the limit");
	int64_t deleted = -1;
	cr_assert_eq(s->ops->audit_purge(s, 5000, &deleted, &err), 0);
	cr_assert_eq(deleted, 1);
	got[0] = '\0';
	cr_assert_eq(s->ops->audit_list(s, 0, "", 100, collect_audit, got, &err), 0);
	cr_assert_str_eq(got, "bob:model.delete@m1,admin:key.create@k,admin:model.create@m1");
	cr_store_close(s);
	free(path);
}

static void collect_event(const struct cr_event_rec *e, void *arg)
{
	char *out = arg;
	size_t n = strlen(out);
	snprintf(out + n, 512 - n, "%lld %s %s|", (long long)e->id, e->kind, e->subject);
}

Test(store, events_are_listed_after_an_id_or_the_newest_and_trimmed_by_age)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	free(path);
	struct cr_err err = CR_ERR_INIT;
	const char *kinds[] = { "worker.joined", "model.deployed", "instance.running" };
	for (int i = 0; i < 3; i++) {
		struct cr_event_rec e = { 0, 1000 * (i + 1), (char *)kinds[i], (char *)"x", (char *)"m", (char *)"" };
		cr_assert_eq(s->ops->event_add(s, &e, &err), 0, "%s", err.message);
		cr_assert_eq(e.id, i + 1);
	}
	char out[512] = "";
	cr_assert_eq(s->ops->event_list(s, 1, 10, false, collect_event, out, &err), 0);
	cr_assert_str_eq(out, "2 model.deployed x|3 instance.running x|");
	out[0] = 0;
	cr_assert_eq(s->ops->event_list(s, 0, 2, true, collect_event, out, &err), 0);
	cr_assert_str_eq(out, "2 model.deployed x|3 instance.running x|", "the newest two, in order");
	int64_t deleted = 0;
	cr_assert_eq(s->ops->event_purge(s, 2500, &deleted, &err), 0);
	cr_assert_eq(deleted, 2);
	out[0] = 0;
	cr_assert_eq(s->ops->event_list(s, 0, 10, false, collect_event, out, &err), 0);
	cr_assert_str_eq(out, "3 instance.running x|");
	cr_store_close(s);
}

static void collect_mail(const struct cr_mail_rec *m, void *arg)
{
	char *out = arg;
	snprintf(out + strlen(out), 512 - strlen(out), "%s %s %s %s|", m->worker_id, m->kind, m->body, m->server);
}

static void collect_watch(const struct cr_watch_rec *w, void *arg)
{
	struct { char out[512]; int64_t last; } *c = arg;
	cr_assert_gt(w->seq, c->last, "in seq order, each above the last");
	c->last = w->seq;
	snprintf(c->out + strlen(c->out), sizeof(c->out) - strlen(c->out), "%s %s|", w->worker_id, w->body);
}

Test(store, workers_mail_is_taken_once_in_order_and_watch_payloads_list_by_seq)
{
	char *path = db_path();
	struct cr_store *s = open_at(path);
	free(path);
	struct cr_err err = CR_ERR_INIT;
	const char *kinds[] = { "register", "status", "instances", "files" };
	char bodies[4][32];
	struct cr_mail_rec m[4];
	for (int i = 0; i < 4; i++) {
		snprintf(bodies[i], sizeof(bodies[i]), "{\"n\":%d}", i);
		m[i] = (struct cr_mail_rec){ 0, 1000 + i, (char *)"w1", (char *)kinds[i], bodies[i], (char *)"b:1" };
	}
	cr_assert_eq(s->ops->mail_put(s, m, 1, &err), 0, "%s", err.message);
	cr_assert_eq(s->ops->mail_put(s, m + 1, 3, &err), 0, "several in one transaction: %s", err.message);
	char out[512] = "";
	cr_assert_eq(s->ops->mail_take(s, 3, collect_mail, out, &err), 0, "%s", err.message);
	cr_assert_str_eq(out, "w1 register {\"n\":0} b:1|w1 status {\"n\":1} b:1|w1 instances {\"n\":2} b:1|",
			 "the oldest first, at most the limit");
	out[0] = 0;
	cr_assert_eq(s->ops->mail_take(s, 10, collect_mail, out, &err), 0);
	cr_assert_str_eq(out, "w1 files {\"n\":3} b:1|", "what was taken is gone");
	out[0] = 0;
	cr_assert_eq(s->ops->mail_take(s, 10, collect_mail, out, &err), 0);
	cr_assert_str_eq(out, "");

	struct { char out[512]; int64_t last; } c = { "", 0 };
	cr_assert_eq(s->ops->watch_put(s, "w1", "a1", &err), 0, "%s", err.message);
	cr_assert_eq(s->ops->watch_put(s, "w2", "b1", &err), 0);
	cr_assert_eq(s->ops->watch_list(s, 0, collect_watch, &c, &err), 0);
	cr_assert_str_eq(c.out, "w1 a1|w2 b1|");
	int64_t seen = c.last;
	cr_assert_eq(s->ops->watch_put(s, "w1", "a2", &err), 0);
	c.out[0] = 0;
	cr_assert_eq(s->ops->watch_list(s, seen, collect_watch, &c, &err), 0);
	cr_assert_str_eq(c.out, "w1 a2|", "only what changed since, with the new body");
	c.out[0] = 0;
	c.last = 0;
	cr_assert_eq(s->ops->watch_list(s, 0, collect_watch, &c, &err), 0);
	cr_assert_str_eq(c.out, "w2 b1|w1 a2|", "one row per worker");
	cr_store_close(s);
}
