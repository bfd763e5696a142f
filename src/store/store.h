/* The store: durable desired state (users, sessions, workers' identities,
 * settings) and periodically flushed observed state (workers' last reports).
 * A backend is an ops table: SQLite (store_sqlite.c) or PostgreSQL
 * (store_pg.c), with the same tables and migrations numbered alike.
 * All calls are synchronous and made from the server's event loop thread. */
#ifndef CR_STORE_STORE_H
#define CR_STORE_STORE_H

#include <stddef.h>
#include <jansson.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>

struct cr_err;
struct cr_store;

struct cr_user_rec {
	int64_t id;            /* assigned by user_add */
	char *username;
	char *password_hash;   /* argon2id string */
	char *role;            /* "admin" or "user" */
	int64_t created_ms;
	char *limits_json;     /* {"models"?, "rpm"?, ...} as listed; user_add ignores it (user_set_limits) */
};

struct cr_session_rec {
	char *token_hash;      /* BLAKE2b hex of the bearer token */
	int64_t user_id;
	int64_t created_ms;
	int64_t expires_ms;
};

struct cr_worker_rec {
	char *id;
	char *name;
	char *secret_hash;
	char *labels_json;     /* object of strings */
	char *address;
	int port;
	int64_t created_ms;
	int64_t last_seen_ms;  /* observed: flushed periodically */
	char *report_json;     /* observed: the last full report, or NULL */
	char *dynamic_json;    /* observed: the last light report's dynamic half, or NULL */
	bool cordoned;         /* no new placements on it (corral workers cordon) */
	bool draining;         /* cordoned, and its instances move elsewhere (corral workers drain) */
};

/* A model: its validated spec as JSON (see docs/api.md). */
struct cr_model_rec {
	char *id;
	char *name;
	char *spec_json;
	int64_t created_ms;
	int64_t updated_ms;
};

/* An instance (one replica): its placement as JSON and its state. Deleting a
 * model deletes its instances. */
struct cr_instance_rec {
	char *id;
	char *model_id;
	char *placement_json;
	char *state;
	char *message;
	int64_t created_ms;
	int64_t updated_ms;
	char *endpoint;   /* host:port of its serving engine when last known running, or NULL */
};

/* A gateway API key: only its hash is kept; the key itself is shown once. */
struct cr_key_rec {
	char *id;
	char *name;
	int64_t user_id;
	char *hash;          /* BLAKE2b hex of the key */
	char *prefix;        /* its first characters, to recognise it in lists */
	char *models_json;   /* allowed models, [] = all */
	int64_t rpm, tpm;    /* limits per minute, 0 = none */
	int64_t expires_ms;  /* 0 = never */
	int64_t created_ms;
	char *quotas_json;   /* {"daily_tokens"?, "monthly_tokens"?}; NULL = {} */
};

/* One entry of the audit trail. */
struct cr_audit_rec {
	int64_t id, at_ms;
	char *actor;   /* a user name, "-" before one is known (a failed login: the name tried) */
	char *address; /* the client's address */
	char *action;  /* "model.create", "key.revoke", "login.fail", ... */
	char *target;  /* what it was done to: a model, key, user or worker name */
	char *detail;  /* a short JSON object or text; "" when none */
};

/* One cluster event (GET /api/events). */
struct cr_event_rec {
	int64_t id, at_ms;
	char *kind;    /* "worker.joined", "instance.error", "model.deployed", ... */
	char *subject; /* the worker, model or instance it is about */
	char *message; /* what happened, with its cause and fix when it is a failure */
	char *detail;  /* a JSON object, "" when none */
};

/* Several servers: a worker's message that a follower took, for the leader
 * to apply as if the worker had sent it there. */
struct cr_mail_rec {
	int64_t id, at_ms;
	char *worker_id;
	char *kind;   /* "register", "status", "instances", "files" or "watch" */
	char *body;   /* as the worker sent it ("register": the registration as stored) */
	char *server; /* the follower that took it */
};

/* Several servers: what the leader last sent, or would send, a worker's
 * watch stream, for the follower that holds the stream. */
struct cr_watch_rec {
	int64_t seq; /* raised on every change, across workers */
	char *worker_id;
	char *body; /* {"sources":...,"snapshot":...} */
};

/* Gateway usage of one key on one model on one day (UTC, YYYY-MM-DD). As a
 * query result, the fields not grouped by are empty (strings) or 0. */
struct cr_usage_rec {
	char *day;
	char *key_id, *key_name;
	int64_t user_id;
	char *username;
	char *model;
	int64_t requests, errors;
	int64_t prompt_tokens, completion_tokens;
	int64_t ttft_ms_sum, ttft_count;   /* time to first byte of streamed answers */
	int64_t latency_ms_sum;            /* whole requests */
};

/* What usage_query sums: rows with since <= day <= until ("" = open),
 * optionally of one user (0 = all), key id or model, grouped by the columns
 * that are true (none: one total row). */
struct cr_usage_query {
	const char *since, *until;
	int64_t user_id;
	const char *key_id, *model;
	bool by_day, by_key, by_user, by_model;
};

typedef void (*cr_store_user_cb)(const struct cr_user_rec *u, void *arg);
typedef void (*cr_store_session_cb)(const struct cr_session_rec *s, void *arg);
typedef void (*cr_store_worker_cb)(const struct cr_worker_rec *w, void *arg);
typedef void (*cr_store_model_cb)(const struct cr_model_rec *m, void *arg);
typedef void (*cr_store_instance_cb)(const struct cr_instance_rec *i, void *arg);
typedef void (*cr_store_key_cb)(const struct cr_key_rec *k, void *arg);
typedef void (*cr_store_usage_cb)(const struct cr_usage_rec *u, void *arg);
typedef void (*cr_store_audit_cb)(const struct cr_audit_rec *a, void *arg);
typedef void (*cr_store_event_cb)(const struct cr_event_rec *e, void *arg);
typedef void (*cr_store_mail_cb)(const struct cr_mail_rec *m, void *arg);
typedef void (*cr_store_watch_cb)(const struct cr_watch_rec *w, void *arg);

/* Each op returns 0 or an error code with err filled. Callbacks borrow the
 * record for the duration of the call and are called once per row. */
struct cr_store_ops {
	const char *name;
	int (*user_add)(struct cr_store *s, struct cr_user_rec *u, struct cr_err *err);
	int (*user_list)(struct cr_store *s, cr_store_user_cb cb, void *arg, struct cr_err *err);
	/* Delete a user with their sessions and API keys. */
	int (*user_del)(struct cr_store *s, int64_t id, struct cr_err *err);
	/* Replace a user's limits (JSON object); CR_ENOTFOUND when there is no such user. */
	int (*user_set_limits)(struct cr_store *s, int64_t id, const char *limits_json, struct cr_err *err);
	/* Replace a user's password hash; CR_ENOTFOUND when there is no such user. */
	int (*user_set_password)(struct cr_store *s, int64_t id, const char *password_hash, struct cr_err *err);
	int (*session_add)(struct cr_store *s, const struct cr_session_rec *r, struct cr_err *err);
	int (*session_del)(struct cr_store *s, const char *token_hash, struct cr_err *err);
	/* Lists unexpired sessions and deletes expired ones. */
	int (*session_list)(struct cr_store *s, int64_t now_ms, cr_store_session_cb cb, void *arg, struct cr_err *err);
	/* Insert or update a worker's identity (not its observed state). */
	int (*worker_put)(struct cr_store *s, const struct cr_worker_rec *w, struct cr_err *err);
	int (*worker_del)(struct cr_store *s, const char *id, struct cr_err *err);
	int (*worker_list)(struct cr_store *s, cr_store_worker_cb cb, void *arg, struct cr_err *err);
	/* One worker by id: cb called once, or CR_ENOTFOUND. */
	int (*worker_get)(struct cr_store *s, const char *id, cr_store_worker_cb cb, void *arg, struct cr_err *err);
	/* Write last_seen, report and dynamic of n workers in one transaction;
	 * a NULL report_json keeps the stored report. */
	int (*worker_observed)(struct cr_store *s, const struct cr_worker_rec *const *w, size_t n, struct cr_err *err);
	/* Models: insert or update by id (a name taken by another id is
	 * CR_ECONFLICT); delete cascades to instances. */
	int (*model_put)(struct cr_store *s, const struct cr_model_rec *m, struct cr_err *err);
	int (*model_del)(struct cr_store *s, const char *id, struct cr_err *err);
	int (*model_list)(struct cr_store *s, cr_store_model_cb cb, void *arg, struct cr_err *err);
	/* Instances: insert or update by id; the model must exist. */
	int (*instance_put)(struct cr_store *s, const struct cr_instance_rec *i, struct cr_err *err);
	int (*instance_del)(struct cr_store *s, const char *id, struct cr_err *err);
	int (*instance_list)(struct cr_store *s, cr_store_instance_cb cb, void *arg, struct cr_err *err);
	/* API keys: add, delete (revoke) by id, list. */
	int (*key_add)(struct cr_store *s, const struct cr_key_rec *k, struct cr_err *err);
	int (*key_del)(struct cr_store *s, const char *id, struct cr_err *err);
	int (*key_list)(struct cr_store *s, cr_store_key_cb cb, void *arg, struct cr_err *err);
	/* Usage: add n rows' counters to the stored ones (inserting new rows)
	 * in one transaction; sum them back per query. */
	int (*usage_add)(struct cr_store *s, const struct cr_usage_rec *const *rows, size_t n, struct cr_err *err);
	int (*usage_query)(struct cr_store *s, const struct cr_usage_query *q, cr_store_usage_cb cb, void *arg,
			   struct cr_err *err);
	/* The audit trail: add one entry; list those at or after since_ms (and
	 * with action starting with action_prefix when not NULL/empty), newest
	 * first, at most limit; delete those before before_ms (their count in
	 * *deleted). */
	int (*audit_add)(struct cr_store *s, const struct cr_audit_rec *a, struct cr_err *err);
	int (*audit_list)(struct cr_store *s, int64_t since_ms, const char *action_prefix, int limit,
			  cr_store_audit_cb cb, void *arg, struct cr_err *err);
	int (*audit_purge)(struct cr_store *s, int64_t before_ms, int64_t *deleted, struct cr_err *err);
	/* Events: add one (its id in e->id); list those with id > after_id in
	 * order, at most limit, or with newest the last limit ones (still in
	 * order); delete those before before_ms. */
	int (*event_add)(struct cr_store *s, struct cr_event_rec *e, struct cr_err *err);
	int (*event_list)(struct cr_store *s, int64_t after_id, int limit, bool newest, cr_store_event_cb cb, void *arg,
			  struct cr_err *err);
	int (*event_purge)(struct cr_store *s, int64_t before_ms, int64_t *deleted, struct cr_err *err);
	/* Workers' mail (several servers): put n in one transaction, in order
	 * (ids are ignored); take up to limit of the oldest, removing them, and
	 * call cb for each in the order they were put. */
	int (*mail_put)(struct cr_store *s, const struct cr_mail_rec *m, size_t n, struct cr_err *err);
	int (*mail_take)(struct cr_store *s, int limit, cr_store_mail_cb cb, void *arg, struct cr_err *err);
	/* Watch payloads (several servers): set a worker's (with a seq above
	 * every earlier one); list those with seq > after_seq in seq order. */
	int (*watch_put)(struct cr_store *s, const char *worker_id, const char *body, struct cr_err *err);
	int (*watch_list)(struct cr_store *s, int64_t after_seq, cr_store_watch_cb cb, void *arg, struct cr_err *err);
	/* Settings: small named strings. get returns CR_ENOTFOUND when unset;
	 * *value is owned by the caller. */
	int (*setting_get)(struct cr_store *s, const char *key, char **value, struct cr_err *err);
	int (*setting_put)(struct cr_store *s, const char *key, const char *value, struct cr_err *err);
	/* The applied schema version. */
	int (*schema_version)(struct cr_store *s, int *version, struct cr_err *err);
	void (*close)(struct cr_store *s);
};

struct cr_store {
	const struct cr_store_ops *ops;
};

/* Open (creating if needed) the SQLite store at path and apply pending
 * migrations. Errors name the file and the fix. */
int cr_store_open_sqlite(const char *path, struct cr_store **out, struct cr_err *err);

/* Open the PostgreSQL store at url (postgresql://USER[:PASSWORD]@HOST:PORT/DB
 * or a libpq connection string) and apply pending migrations under an
 * advisory lock. CR_EUNAVAILABLE names the server (never the password) and
 * the fix; a newer schema is refused as with SQLite. */
int cr_store_open_pg(const char *url, struct cr_store **out, struct cr_err *err);

/* A libpq connection to url named app_name (as pg_stat_activity shows it),
 * with the short timeouts every server connection uses: connect_timeout_s
 * to connect, TCP keepalives and an 8 s TCP user timeout, so that a silent
 * PostgreSQL costs seconds, not TCP's minutes. Never NULL; the caller checks
 * PQstatus and calls PQfinish. */
struct pg_conn *cr_pg_connect(const char *url, const char *app_name, const char *connect_timeout_s);

/* True when spec names a PostgreSQL store (postgresql:// or postgres://). */
bool cr_store_is_pg(const char *spec);

/* corral migrate: copy every row of the SQLite store at sqlite_path into the
 * PostgreSQL store at pg_url (created or migrated to the same schema
 * version; it must hold no users, models or workers), in one transaction:
 * all or nothing. Per-table row counts go to out (may be NULL). */
int cr_store_copy_sqlite_to_pg(const char *sqlite_path, const char *pg_url, FILE *out, struct cr_err *err);

/* The leader lock of servers on one PostgreSQL (store/lock_pg.c): a session
 * advisory lock on a connection of its own, named "corral-server NAME". */
struct cr_pg_lock;

/* A lock handle for the database at url; nothing is connected yet. */
struct cr_pg_lock *cr_pg_lock_new(const char *url, const char *name);

/* Try to take the lock (connecting first when needed): *got says whether
 * this server holds it now. CR_EUNAVAILABLE when PostgreSQL cannot be asked. */
int cr_pg_lock_try(struct cr_pg_lock *l, bool *got, struct cr_err *err);

/* Whether the lock is still held: its connection answers. False once it
 * broke (PostgreSQL released the lock with it). */
bool cr_pg_lock_held(struct cr_pg_lock *l);

/* The leader epoch (settings 'leader_epoch'): with bump, incremented as a new
 * leader takes over and remembered as this server's. */
int cr_pg_lock_epoch(struct cr_pg_lock *l, bool bump, long long *epoch, struct cr_err *err);
long long cr_pg_lock_my_epoch(const struct cr_pg_lock *l);

/* Give the lock up (its connection is closed; the next try connects again). */
void cr_pg_lock_release(struct cr_pg_lock *l);

/* This server's name, as the others list it. */
const char *cr_pg_lock_name(const struct cr_pg_lock *l);

/* Every server connected to the database: [{"name", "leader", "since_ms"}]. */
json_t *cr_pg_lock_servers(struct cr_pg_lock *l);

/* Release the lock and free; NULL is fine. */
void cr_pg_lock_free(struct cr_pg_lock *l);

/* Close and free; NULL allowed. */
void cr_store_close(struct cr_store *s);

/* Free the strings of a record filled by the caller (not by callbacks). */
void cr_user_rec_release(struct cr_user_rec *u);

#endif
