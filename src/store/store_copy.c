/* corral migrate: a SQLite store's rows copied into an empty PostgreSQL
 * store of the same schema version, table by table in the order of their
 * references, in one PostgreSQL transaction over one SQLite read
 * transaction (a consistent snapshot even while a server writes). */
#include <errno.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/mem.h"
#include "store/store.h"

/* Every table, referenced ones first; those with generated ids last in the
 * second list (their sequences move past the copied ids). */
static const char *const tables[] = { "users", "sessions", "settings", "workers", "models", "instances",
				      "api_keys", "usage", "audit", "events", NULL };
static const char *const identity[] = { "users", "audit", "events", NULL };

static int pg_fail(PGconn *c, PGresult *r, struct cr_err *err, const char *what)
{
	char msg[400];
	snprintf(msg, sizeof(msg), "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
	msg[strcspn(msg, "\n")] = '\0';
	PQclear(r);
	return cr_err_set(err, -EIO, "nothing was copied: check PostgreSQL's log, fix the cause and run it again",
			  "PostgreSQL %s failed: %s", what, msg);
}

static int pg_ok(PGconn *c, const char *sql, struct cr_err *err)
{
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		return pg_fail(c, r, err, sql);
	PQclear(r);
	return 0;
}

/* Copy one table's rows; *rows gets how many. */
static int copy_table(sqlite3 *db, PGconn *c, const char *table, long *rows, struct cr_err *err)
{
	char *sel = cr_xasprintf("SELECT * FROM %s", table);
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sel, -1, &st, NULL);
	free(sel);
	if (rc != SQLITE_OK)
		return cr_err_set(err, -EIO, "check the SQLite store", "reading %s: %s", table, sqlite3_errmsg(db));
	int n = sqlite3_column_count(st);
	char ins[2048];
	size_t at = (size_t)snprintf(ins, sizeof(ins), "INSERT INTO %s (", table);
	for (int i = 0; i < n && at < sizeof(ins); i++)
		at += (size_t)snprintf(ins + at, sizeof(ins) - at, "%s%s", i ? ", " : "", sqlite3_column_name(st, i));
	at += (size_t)snprintf(ins + at, sizeof(ins) - at, ") VALUES (");
	for (int i = 0; i < n && at < sizeof(ins); i++)
		at += (size_t)snprintf(ins + at, sizeof(ins) - at, "%s$%d", i ? ", " : "", i + 1);
	snprintf(ins + at, sizeof(ins) - at, ")");
	const char **vals = cr_xcalloc((size_t)n + 1, sizeof(*vals));
	rc = 0;
	*rows = 0;
	int r;
	while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
		for (int i = 0; i < n; i++)
			vals[i] = sqlite3_column_type(st, i) == SQLITE_NULL ? NULL : (const char *)sqlite3_column_text(st, i);
		PGresult *res = PQexecParams(c, ins, n, NULL, vals, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			rc = pg_fail(c, res, err, table);
		else
			PQclear(res);
		(*rows)++;
	}
	if (!rc && r != SQLITE_DONE)
		rc = cr_err_set(err, -EIO, "check the SQLite store", "reading %s: %s", table, sqlite3_errmsg(db));
	free(vals);
	sqlite3_finalize(st);
	return rc;
}

int cr_store_copy_sqlite_to_pg(const char *sqlite_path, const char *pg_url, FILE *out, struct cr_err *err)
{
	struct cr_store *src = NULL, *dst = NULL;
	int rc = cr_store_open_sqlite(sqlite_path, &src, err); /* brings it to this binary's schema */
	if (!rc)
		rc = cr_store_open_pg(pg_url, &dst, err);
	int vs = 0, vd = 0;
	if (!rc)
		rc = src->ops->schema_version(src, &vs, err);
	if (!rc)
		rc = dst->ops->schema_version(dst, &vd, err);
	if (!rc && vs != vd)
		rc = cr_err_set(err, -EPROTO, "migrate with the corral binary of the installation",
				"schema versions differ: SQLite %d, PostgreSQL %d", vs, vd);
	cr_store_close(src);
	cr_store_close(dst);
	if (rc)
		return rc;
	sqlite3 *db = NULL;
	PGconn *c = NULL;
	if (sqlite3_open_v2(sqlite_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		rc = cr_err_set(err, -EIO, "check the data directory", "cannot read %s: %s", sqlite_path,
				db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(db, 5000);
	c = cr_pg_connect(pg_url, "corral-migrate", "10");
	if (PQstatus(c) != CONNECTION_OK) {
		rc = pg_fail(c, NULL, err, "connect");
		goto out;
	}
	PGresult *r = PQexec(c, "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM models) + "
				"(SELECT count(*) FROM workers)");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		rc = pg_fail(c, r, err, "count rows");
		goto out;
	}
	long have = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	if (have > 0) {
		rc = cr_err_set(err, CR_ECONFLICT, "migrate into an empty database (createdb a new one), or drop this one's "
						 "tables first",
				"the PostgreSQL database already holds users, models or workers: refusing to mix two "
				"clusters' state");
		goto out;
	}
	/* users: the admin a server may have made on this database before */
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK || pg_ok(c, "BEGIN", err) ||
	    pg_ok(c, "DELETE FROM sessions; DELETE FROM users; DELETE FROM settings", err)) {
		rc = err && err->code ? err->code : -EIO;
		goto out;
	}
	for (int t = 0; !rc && tables[t]; t++) {
		long rows = 0;
		rc = copy_table(db, c, tables[t], &rows, err);
		if (!rc && out)
			fprintf(out, "  %-10s %ld row(s)\n", tables[t], rows);
	}
	for (int t = 0; !rc && identity[t]; t++) {
		char *sql = cr_xasprintf("SELECT setval(pg_get_serial_sequence('%s', 'id'), COALESCE(MAX(id), 0) + 1, false) "
					 "FROM %s",
					 identity[t], identity[t]);
		rc = pg_ok(c, sql, err);
		free(sql);
	}
	if (!rc)
		rc = pg_ok(c, "COMMIT", err);
	else
		PQclear(PQexec(c, "ROLLBACK"));
out:
	if (db) {
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(db);
	}
	PQfinish(c);
	return rc;
}
