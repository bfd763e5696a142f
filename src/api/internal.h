/* State shared by the files of src/api: the app struct, users, sessions and
 * workers as kept in memory. Not for use outside src/api. */
#ifndef CR_API_INTERNAL_H
#define CR_API_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "api/app.h"
#include "api/cluster.h"
#include "base/map.h"
#include "base/prom.h"
#include "base/secret.h"
#include "http/server.h"

struct event;
struct cr_probe;
struct cr_store;
struct cr_workpool;
struct cr_sched_learned;
struct cr_pg_lock;
struct cr_mail_rec;


struct cr_session {
	char hash[CR_HASH_HEX];
	struct cr_user *user;
	int64_t created_ms, expires_ms;
};

/* Worker lifecycle, as seen by the server:
 *   not_ready   registered, but no status for missed_status_limit intervals
 *               (or none yet since registration or server start)
 *   ready       status arrives and the server's /healthz probe succeeds
 *   unreachable status arrives but the server cannot reach the worker's port
 * A worker leaves the cluster only through DELETE /api/workers/{id}. */
enum cr_worker_state { CR_W_NOT_READY, CR_W_READY, CR_W_UNREACHABLE };

struct cr_worker {
	char *id, *name, *secret_hash, *labels_json, *address, *address_seen;
	int port;
	int status_interval_s;
	int64_t created_ms, last_seen_ms;   /* wall clock */
	int64_t last_status_mono;           /* 0: none since server start */
	char *report_json;                  /* last full report as received */
	long long report_base;              /* its "base"; -1: light reports need a full one first */
	size_t gpu_count;                   /* GPUs in the full report */
	char *dynamic_json;                 /* last light report's dynamic half, or NULL */
	json_t *report;                     /* the full report with the light ones since applied: parsed
					       once as reports arrive, read (borrowed) by every view */
	bool dirty;                         /* observed state not yet flushed */
	bool report_dirty;                  /* the full report too */
	enum cr_worker_state state;
	bool cordoned;                      /* no new placements (stored) */
	bool draining;                      /* cordoned, its instances moving elsewhere (stored) */
	char *state_message;
	int64_t state_since_mono;           /* when the state last changed */
	json_t *files;                      /* source -> file report from the worker */
	json_t *failing_checks;             /* check id -> the check, as last reported failing */
	json_t *cache;                      /* its model cache as last reported (GET /api/files) */
	/* server -> worker probe */
	struct cr_probe *probe;
	bool probe_pending, probe_failed;
	char *probe_error;
	int64_t next_probe_mono;
	struct cr_stream *watch;
	int64_t engines_sent_ms, files_sent_ms; /* when the worker made the engine and file reports last taken */
	char *watch_stored;                 /* several servers: its watch payload as the store holds it (the
					       leader: as it last stored it; a follower: as it last read it) */
};






/* Scheduler refusals by reason (the metrics' "reason" label). */
enum { CR_REFUSAL_NO_FIT, CR_REFUSAL_INVALID, CR_REFUSAL_FILE_UNKNOWN, CR_REFUSAL_GROUP_CHECK, CR_REFUSAL_KINDS };

struct cr_app_metrics {
	uint64_t placements, refusals[CR_REFUSAL_KINDS];
	struct cr_prom_hist place_s;
	struct cr_prom_hist flush_s[2]; /* 0: observed state, 1: usage counts */
	void (*extra[4])(struct cr_buf *, void *);
	void *extra_arg[4];
	int n_extra;
};

/* A client of the event stream. */
struct cr_event_sub {
	struct cr_stream *stream;
	long long last_id; /* the newest event it was sent */
	struct cr_event_sub *next;
};

struct cr_app {
	struct event_base *base;
	struct cr_app_config cfg;
	char *data_dir;
	struct cr_store *store;
	struct cr_pg_lock *lock;  /* several servers on one PostgreSQL: the leader lock (NULL: the only server) */
	bool leading;             /* runs the controller, the scheduler and the periodic jobs */
	bool led;                 /* has led since it started (a follower never has) */
	char *server_name;        /* HOST:PORT, as the other servers list it (several servers only) */
	char *leader_name;        /* a follower: the leader, as last asked (leader_named_ms, monotonic) */
	int64_t leader_named_ms;
	int64_t synced_ms;        /* monotonic: the last read of what other servers wrote */
	int64_t synced_workers_ms; /* the same for the workers (a follower's view) */
	int64_t miss_synced_ms;   /* the last read for an unknown key or session */
	bool sync_failing;        /* the last read failed (said once) */
	char *summary_shared;     /* the leader: the models' summaries as last stored (cr_models_share_summary) */
	int64_t lock_tried_ms;    /* the last try to take the lock back (monotonic) */
	int lock_fails;           /* tries in a row that could not reach PostgreSQL */
	struct cr_http_server *http;
	char *cluster_token;
	char cluster_token_hash[CR_HASH_HEX];
	bool token_from_flag;       /* --token: it wins over DATA_DIR/token at every start */
	char *peer_secret;          /* the server's own secret (in the store): workers' server keys derive from it */
	char *dummy_hash;
	struct cr_workpool *hash_pool; /* argon2id, off the loop, bounded */
	struct cr_map login_fails;  /* "a\x1fADDR" / "u\x1fUSER" -> failed logins this minute */
	struct cr_map users;      /* username -> cr_user */
	struct cr_map sessions;   /* token hash -> cr_session */
	struct cr_map workers;    /* id -> cr_worker */
	struct cr_map worker_names; /* name -> cr_worker */
	struct cr_map models;       /* id -> cr_model */
	struct cr_map model_names;  /* name -> cr_model */
	struct cr_map instances;    /* id -> cr_instance */
	struct cr_map keys;         /* hash -> cr_apikey */
	struct cr_map usage;        /* "day\x1fkey id\x1fmodel" -> cr_usage_rec not yet flushed (every second) */
	bool usage_failing;         /* the last usage flush failed (said once) */
	int64_t usage_flushed_ms;   /* monotonic time of the last usage flush */
	int64_t audit_trimmed_ms;   /* monotonic time the audit trail was last trimmed */
	json_t *probe_sources;      /* source -> mono ms of the last dry run that asked for it */
	bool sched_dirty;           /* run the controller at the next tick */
	int64_t next_sched_mono;
	int64_t next_e2e_mono;      /* the next round of end-to-end probes */
	int64_t started_mono;
	struct event *tick, *flush, *keepalive;
	struct event *lock_poll;    /* several servers: a follower asks for the lock */
	struct cr_app_metrics metrics;
	struct cr_event_sub *event_subs; /* GET /api/events streams */
	struct cr_workpool *hub_pool;   /* hub listings, off the loop (created when first needed) */
	json_t *learned;                /* key -> what an engine really held against the estimate (learn.c) */
	json_t *learned_seen;           /* instance id -> true: measured already */
	int64_t watch_seq;              /* a follower: the last watch payload read (its seq) */
	long long seen_epoch;           /* a follower: the leader epoch as last read (0: not yet) */
	json_t *reports_wanted;         /* the leader: worker id -> the base of a light report it could not
					   apply; a follower: the same, as last read */
	bool reports_wanted_dirty;      /* the leader: changed since last stored */
	struct cr_mail_rec *mail;       /* a follower: status reports taken, not yet stored (owned strings but
					   server) */
	size_t mail_n, mail_cap;
};

extern const struct cr_http_route cr_api_auth_routes[];
extern const struct cr_http_route cr_api_worker_routes[];
extern const struct cr_http_route cr_api_model_routes[];
extern const struct cr_http_route cr_api_instance_routes[];
extern const struct cr_http_route cr_api_key_routes[];
extern const struct cr_http_route cr_api_usage_routes[];
extern const struct cr_http_route cr_api_audit_routes[];
extern const struct cr_http_route cr_api_metrics_routes[];
extern const struct cr_http_route cr_api_event_routes[];

/* events.c: record an event (stored at once, sent to the event streams);
 * detail is a JSON object (stolen; NULL: none). */
void cr_event(struct cr_app *app, const char *kind, const char *subject, json_t *detail, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void cr_events_trim(struct cr_app *app);
/* Several servers: the events every server stored since each stream's last,
 * sent in order (each second). */
void cr_events_poll(struct cr_app *app);
void cr_events_keepalive(struct cr_app *app);
void cr_events_free_all(struct cr_app *app);

/* hub_source.c: when spec names a hub repository ("hf", "ms") not resolved
 * yet, list it off the loop, choose the file, set the spec's url, sha256 and
 * "hub", and call then(req, spec, ctx) on the loop (it owns spec; ctx is
 * released after); on failure reply the error. Returns true when it took
 * over the request (and spec and ctx), false when there is nothing to
 * resolve. */
typedef void (*cr_hub_then)(struct cr_req *req, json_t *spec, json_t *ctx);
bool cr_hub_resolve(struct cr_app *app, struct cr_req *req, json_t *spec, cr_hub_then then, json_t *ctx);
void cr_hub_free_all(struct cr_app *app);

/* learn.c: placements that learn from what engines really held. */
extern const struct cr_http_route cr_api_learn_routes[];
void cr_learn_load(struct cr_app *app);
void cr_learn_free(struct cr_app *app);
void cr_learn_tick(struct cr_app *app);
/* The corrections for engine and source: bytes per GPU (the latest learned
 * on any GPU) and in RAM, *table the latest per GPU model (caller frees the
 * array; its strings are borrowed from app->learned), and the learned
 * entries they come from (NULL: none). */
json_t *cr_learn_for(struct cr_app *app, const char *engine, const char *source, int64_t *vram_delta,
		     int64_t *ram_delta, struct cr_sched_learned **table, int *n_table);
/* An engine of i failed for want of GPU memory (report: its member report):
 * record what it needed and mark i to be removed at the controller's next
 * tick, which places it again with that (or, with on_oom reduce_ctx, halve
 * the model's context). Returns true when i was marked. */
bool cr_learn_oom(struct cr_app *app, struct cr_instance *i, json_t *report);

/* metrics.c: histograms set up; a placement timed from started_ns (refusal
 * -1: placed, else a CR_REFUSAL_*); a store flush (0: state, 1: usage). */
void cr_metrics_init(struct cr_app *app);
void cr_metrics_placement(struct cr_app *app, int64_t started_ns, int refusal);
void cr_metrics_flush(struct cr_app *app, int what, int64_t started_ns);
/* The whole exposition into b. */
void cr_metrics_render(struct cr_app *app, struct cr_buf *b);

/* An entry of the audit trail (audit.c): action ("model.create",
 * "login.fail", ...) on target by actor (NULL: the request's user, or "-"),
 * from the request's address; detail a JSON value (stolen; NULL: none). req
 * may be NULL for the server's own actions. A store failure is logged. */
void cr_audit(struct cr_app *app, struct cr_req *req, const char *actor, const char *action, const char *target,
	      json_t *detail);
/* Deletes entries older than --audit-days. */
void cr_audit_trim(struct cr_app *app);

/* auth.c */
/* The cached user with this id, or NULL. */
struct cr_user *cr_user_by_id(struct cr_app *app, int64_t id);
/* {"models", "rpm", "tpm", "daily_tokens", "monthly_tokens"} of u (0, []: none). New reference. */
json_t *cr_user_limits_json(const struct cr_user *u);
int cr_auth_bootstrap(struct cr_app *app, struct cr_err *err);
int cr_auth_check(struct cr_req *req, enum cr_auth_need need, struct cr_err *err);
void cr_auth_free_all(struct cr_app *app);

/* workers.c */
int cr_workers_load(struct cr_app *app, struct cr_err *err);
void cr_workers_tick(struct cr_app *app);
void cr_workers_flush(struct cr_app *app);
void cr_workers_keepalive(struct cr_app *app);
void cr_workers_free_all(struct cr_app *app);
struct cr_worker *cr_worker_find(struct cr_app *app, const char *id_or_name);
const char *cr_worker_state_name(enum cr_worker_state s);
/* Send a worker its desired instances and the model sources to inspect;
 * with several servers the leader also stores what it sends (when it
 * changed), for a follower that holds the worker's watch stream. A follower
 * sends nothing of its own. */
void cr_workers_push(struct cr_app *app, struct cr_worker *w);

/* Several servers: a follower takes workers' reports and registrations as
 * mail in the store (kind "register", "status", "instances", "files",
 * "watch"; body as the worker sent it) that the leader applies. */
int cr_workers_mail(struct cr_app *app, const char *worker_id, const char *kind, const char *body, size_t len,
		    struct cr_err *err);
/* Status reports are kept and stored in one transaction by flush (every
 * 250 ms: an fsync each would hold the follower's loop); the others are
 * stored at once. A follower killed loses up to 250 ms of status reports,
 * which its workers send again every interval. */
void cr_workers_mail_flush(struct cr_app *app);
void cr_workers_mail_free(struct cr_app *app);
/* The leader: apply the mail the followers took (every 250 ms), and store
 * which workers must send a full report (a light one whose base it lacks). */
void cr_workers_take_mail(struct cr_app *app);
/* A follower: what the leader stored for the watch streams held here, sent
 * (every 250 ms); and the workers whose next light report it refuses, so
 * that they send a full one (each second). */
void cr_workers_watch_poll(struct cr_app *app);
int cr_workers_read_wanted(struct cr_app *app, struct cr_err *err);
/* Another server took the lead, or this one did: the watch streams held here
 * are closed, so that their workers connect again and send their engine and
 * file reports afresh (the new leader has not seen them). */
void cr_workers_leader_changed(struct cr_app *app);

/* Several servers on one PostgreSQL: what other servers wrote, read back
 * into memory in place (pointers to what stays remain good). Accounts
 * (users, sessions, keys) are written by every server; models, instances and
 * workers by the leader, and read by followers. */
int cr_auth_sync(struct cr_app *app, struct cr_err *err);
int cr_keys_sync(struct cr_app *app, struct cr_err *err);
int cr_models_sync(struct cr_app *app, struct cr_err *err);
/* The models' scheduling summaries (status, per-worker reasons, file format)
 * live in the leader's memory: it stores them when they change (share, once
 * a second), and followers read them back (read), so that every server shows
 * why a model is short of replicas. */
void cr_models_share_summary(struct cr_app *app);
int cr_models_read_summary(struct cr_app *app, struct cr_err *err);
/* Identities and cordons; with observed, also the last stored reports and a
 * follower's view of each worker's state from them. */
int cr_workers_sync(struct cr_app *app, bool observed, struct cr_err *err);
/* The same for the one worker id (its identity). */
int cr_workers_sync_one(struct cr_app *app, const char *id, struct cr_err *err);
/* app.c: an unknown key, session or user may have been made on another
 * server a moment ago: read the accounts again (with limited, at most every
 * 250 ms); true when they were read. */
bool cr_app_sync_on_miss(struct cr_app *app, bool limited);
/* A follower: the same for an unknown worker, or one whose secret changed:
 * its identity may have been stored by another server a moment ago. Reads
 * that one worker's row (by id: as cheap as the request that asks); true
 * when it was read. */
bool cr_app_sync_worker_on_miss(struct cr_app *app, const char *id);
/* Several servers: true on a follower (has not led since it started). */
bool cr_app_follows(const struct cr_app *app);

/* keys.c */
int cr_keys_load(struct cr_app *app, struct cr_err *err);
void cr_keys_free_all(struct cr_app *app);
/* The valid (not expired) key whose hash matches token, or NULL. */
struct cr_apikey *cr_key_check(struct cr_app *app, const char *token);
/* Drop a deleted user's keys from memory. */
void cr_keys_forget_user(struct cr_app *app, const struct cr_user *u);

/* usage.c */
/* Add the counted deltas to the store; kept in memory when that fails. */
int cr_usage_flush(struct cr_app *app, struct cr_err *err);
void cr_usage_free_all(struct cr_app *app);

/* instances.c */
#define CR_E2E_FAILS 3 /* end-to-end probe failures in a row that make an instance 'error' */
/* Free an instance (not in app->instances any more). NULL allowed. */
void cr_instance_free(struct cr_instance *i);
/* Whether the placement has the worker with this id. */
bool cr_placement_has(json_t *placement, const char *worker_id);
/* Whether i was built from an older spec of m than m's now (instances placed
 * before specs were kept with them count as current). */
bool cr_instance_outdated(const struct cr_instance *i, const struct cr_model *m);
/* The instance as the API and the watch stream show it (a new reference). */
json_t *cr_instance_json(struct cr_app *app, struct cr_instance *i);
/* Write i to the store (0, or the store's error). */
int cr_instance_save(struct cr_app *app, struct cr_instance *i, struct cr_err *err);
/* Change i's state and message: stored, and its workers told. */
void cr_instance_set_state(struct cr_app *app, struct cr_instance *i, enum cr_instance_state state, const char *msg);
/* Delete i from the store and memory (its workers are told, and stop it);
 * kept when the store refuses. Frees i. */
void cr_instance_remove(struct cr_app *app, struct cr_instance *i, const char *why);
/* i's state from its members' engine reports (see instances.c). */
void cr_instance_derive_state(struct cr_app *app, struct cr_instance *i);
/* Send the workers of placement (or every worker) their desired instances. */
void cr_instances_push(struct cr_app *app, json_t *placement);
void cr_instances_push_all(struct cr_app *app);
/* w's file report changed: its instances that do not run derive their
 * state again, so that a failed download of their url source is their error
 * with its cause ("download failed on w: SHA-256 is ...") whichever of the
 * worker's reports came last. */
void cr_instances_downloads(struct cr_app *app, struct cr_worker *w);
/* A worker's engine report ({"instances":[...]}, parsed): its members'
 * states taken, the instances' states derived. */
int cr_instances_take_report(struct cr_app *app, const char *worker_id, json_t *body, struct cr_err *err);
/* True when body ({"sent_ms":...}) was made before the report last taken
 * (*last): one taken by a follower, read after a newer one sent here. A
 * report older by more than a clock step's worth is taken (its worker's
 * clock went back). Otherwise *last becomes its time. */
bool cr_workers_report_stale(json_t *body, int64_t *last);
/* The key the server sends with its requests to worker worker_id (logs):
 * derived from the server's own secret, given to the worker when it
 * registers and with each status answer. */
void cr_worker_server_key(struct cr_app *app, const char *worker_id, char out[CR_HASH_HEX]);
/* The model's replica in the worst state (error, then unreachable,
 * restarting, stopping, on its way), or NULL when every one runs. */
const struct cr_instance *cr_instances_worst(struct cr_app *app, const char *model_id);
/* The watch-stream payload for one worker: {"instances":[...]} (new reference). */
json_t *cr_instances_for_worker(struct cr_app *app, const char *worker_id);

/* models.c */
int cr_models_load(struct cr_app *app, struct cr_err *err);
void cr_models_tick(struct cr_app *app);
void cr_models_free_all(struct cr_app *app);
/* The model sources workers are asked to inspect: {"sources":[...]} (new reference). */
json_t *cr_models_sources(struct cr_app *app);

#endif
