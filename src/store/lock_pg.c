/* The leader lock of servers sharing one PostgreSQL: a session advisory lock
 * held on a connection of its own. PostgreSQL releases it when that
 * connection ends (the server died, or PostgreSQL restarted), so a follower
 * waiting on it leads within its poll interval. Every server's lock
 * connection is named "corral-server NAME URL", which is how the servers
 * list each other (pg_stat_activity). A leader epoch in the settings table
 * tells a server that got the lock back whether another led meanwhile. */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/mem.h"
#include "store/store.h"

#define LEADER_LOCK 0x636f7272616c4cLL /* "corralL" */
#define APP_PREFIX "corral-server "

struct cr_pg_lock {
	PGconn *c;
	char *url, *name;
	bool held;
	long long epoch; /* the leader epoch this server took the lock at */
};

static PGresult *q1(PGconn *c, const char *sql, const char *arg)
{
	const char *v[1] = { arg };
	return PQexecParams(c, sql, arg ? 1 : 0, NULL, arg ? v : NULL, NULL, NULL, 0);
}

struct cr_pg_lock *cr_pg_lock_new(const char *url, const char *name)
{
	struct cr_pg_lock *l = cr_xcalloc(1, sizeof(*l));
	l->url = cr_xstrdup(url);
	l->name = cr_xasprintf(APP_PREFIX "%.40s", name);
	return l;
}

int cr_pg_lock_try(struct cr_pg_lock *l, bool *got, struct cr_err *err)
{
	*got = false;
	if (!l->c || PQstatus(l->c) != CONNECTION_OK) {
		if (l->c)
			PQfinish(l->c);
		l->c = cr_pg_connect(l->url, l->name, "3");
		l->held = false;
		if (PQstatus(l->c) != CONNECTION_OK) {
			char msg[300];
			snprintf(msg, sizeof(msg), "%s", PQerrorMessage(l->c));
			msg[strcspn(msg, "\n")] = '\0';
			char *where = cr_xasprintf("%s@%s:%s/%s", PQuser(l->c) ? PQuser(l->c) : "?",
						   PQhost(l->c) && *PQhost(l->c) ? PQhost(l->c) : "localhost",
						   PQport(l->c) ? PQport(l->c) : "5432", PQdb(l->c) ? PQdb(l->c) : "?");
			int rc = cr_err_set(err, CR_EUNAVAILABLE,
					    "check that PostgreSQL runs, the database exists and the role may connect (--store "
					    "postgresql://USER[:PASSWORD]@HOST:PORT/DB)",
					    "cannot connect to PostgreSQL at %s: %s", where, msg);
			free(where);
			return rc;
		}
	}
	char key[32];
	snprintf(key, sizeof(key), "%lld", (long long)LEADER_LOCK);
	PGresult *r = q1(l->c, "SELECT pg_try_advisory_lock($1::bigint)", key);
	bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	*got = ok && !strcmp(PQgetvalue(r, 0, 0), "t");
	PQclear(r);
	if (!ok)
		return cr_err_set(err, CR_EUNAVAILABLE, "check that PostgreSQL runs (--store)",
				  "the leader lock could not be asked for: %s", PQerrorMessage(l->c));
	l->held = *got;
	return 0;
}

bool cr_pg_lock_held(struct cr_pg_lock *l)
{
	if (!l->held || !l->c)
		return false;
	PGresult *r = PQexec(l->c, "SELECT 1");
	bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	PQclear(r);
	if (!ok || PQstatus(l->c) != CONNECTION_OK)
		l->held = false; /* the connection is gone, and the lock with it */
	return l->held;
}

int cr_pg_lock_epoch(struct cr_pg_lock *l, bool bump, long long *epoch, struct cr_err *err)
{
	PGresult *r = bump ? PQexec(l->c, "INSERT INTO settings (key, value) VALUES ('leader_epoch', '1') ON CONFLICT (key) "
					  "DO UPDATE SET value = (settings.value::bigint + 1)::text RETURNING value")
			   : PQexec(l->c, "SELECT COALESCE((SELECT value FROM settings WHERE key = 'leader_epoch'), '0')");
	bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
	if (ok)
		*epoch = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	if (!ok)
		return cr_err_set(err, CR_EUNAVAILABLE, "check that PostgreSQL runs (--store)",
				  "the leader epoch could not be read: %s", PQerrorMessage(l->c));
	if (bump)
		l->epoch = *epoch;
	return 0;
}

long long cr_pg_lock_my_epoch(const struct cr_pg_lock *l)
{
	return l->epoch;
}

void cr_pg_lock_release(struct cr_pg_lock *l)
{
	if (l->c)
		PQfinish(l->c);
	l->c = NULL;
	l->held = false;
}

const char *cr_pg_lock_name(const struct cr_pg_lock *l)
{
	return l->name + strlen(APP_PREFIX);
}

json_t *cr_pg_lock_servers(struct cr_pg_lock *l)
{
	json_t *out = json_array();
	if (!l->c || PQstatus(l->c) != CONNECTION_OK)
		return out;
	char key[32];
	snprintf(key, sizeof(key), "%lld", (long long)LEADER_LOCK);
	/* an advisory lock on a bigint shows as classid (high 32 bits) and objid (low 32 bits) */
	PGresult *r = q1(l->c,
			 "SELECT substr(a.application_name, length('" APP_PREFIX "') + 1), EXISTS (SELECT 1 FROM pg_locks k "
			 "WHERE k.pid = a.pid AND k.locktype = 'advisory' AND k.granted AND k.objsubid = 1 AND "
			 "((k.classid::bigint << 32) | k.objid::bigint) = $1::bigint), "
			 "(extract(epoch FROM a.backend_start) * 1000)::bigint FROM pg_stat_activity a "
			 "WHERE a.application_name LIKE '" APP_PREFIX "%' AND a.datname = current_database() ORDER BY 1",
			 key);
	for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
		json_array_append_new(out, json_pack("{s:s,s:b,s:I}", "name", PQgetvalue(r, i, 0), "leader",
						     !strcmp(PQgetvalue(r, i, 1), "t"), "since_ms",
						     (json_int_t)strtoll(PQgetvalue(r, i, 2), NULL, 10)));
	PQclear(r);
	return out;
}

void cr_pg_lock_free(struct cr_pg_lock *l)
{
	if (!l)
		return;
	cr_pg_lock_release(l);
	free(l->url);
	free(l->name);
	free(l);
}
