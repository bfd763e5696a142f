/* The cluster as the gateway sees it: models, their instances and API keys,
 * kept by src/api, with the few calls the gateway makes into it. The one
 * header of src/api that src/gateway includes (api/internal.h is api's own);
 * everything here runs on the server's event loop. */
#ifndef CR_API_CLUSTER_H
#define CR_API_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/secret.h"

struct cr_app;

/* What a key or a user used: this minute (for rpm/tpm), today and this month
 * (UTC, for token quotas), and what its requests in flight may still use. */
struct cr_meter {
	int64_t window_start_ms, window_requests, window_tokens;
	int64_t reserved_tokens;
	char day[11], month[8];
	int64_t day_tokens, month_tokens;
};

/* A user of the cluster, with the limits an admin set (0 or empty: none). */
struct cr_user {
	int64_t id;
	char *username;
	char *password_hash;
	bool admin;
	json_t *models;        /* models the user's keys may use; empty = all */
	int64_t rpm, tpm, daily_tokens, monthly_tokens;
	struct cr_meter meter; /* all the user's keys together */
};

/* A deployed model: its validated spec (see models.c) and why replicas are
 * missing when they are. */
struct cr_model {
	char *id, *name;
	json_t *spec;
	json_t *built;      /* cr_model_spec_built(spec): what its instances are built from now */
	int64_t created_ms, updated_ms;
	int64_t created_mono;
	char *status;       /* last scheduling summary when short of replicas, else NULL */
	json_t *reasons;    /* its per-worker reasons, or NULL */
	char *logged;       /* the last refusal written to the log: not repeated */
	char *format_shared; /* a follower: the file format as the leader's workers found it, or NULL */
};

/* Instance lifecycle (design.md): pending -> scheduled -> starting -> running,
 * error (with a cause), crash_loop (an error again and again before the engine
 * was ever healthy), restarting, unreachable (its worker is lost), stopping.
 * Until engines run, instances stop at scheduled; one whose worker stays
 * not_ready past the grace period is removed and placed again elsewhere.
 * The states' names are what the API shows and the store keeps. */
enum cr_instance_state {
	CR_I_PENDING,
	CR_I_SCHEDULED,
	CR_I_STARTING,
	CR_I_RUNNING,
	CR_I_ERROR,
	CR_I_RESTARTING,
	CR_I_UNREACHABLE,
	CR_I_STOPPING,
	CR_I_CRASH_LOOP, /* its engine keeps failing before it is ever healthy; retried with a growing backoff */
};

/* "running", ... for a state; and the state named so (an engine's own word
 * the server does not know, such as "loading", is starting). */
const char *cr_instance_state_name(enum cr_instance_state s);
enum cr_instance_state cr_instance_state_parse(const char *name);

struct cr_instance {
	char *id, *model_id;
	json_t *placement;  /* workers, GPUs, claims, split, leader */
	enum cr_instance_state state;
	char *message;
	int64_t created_ms, updated_ms;
	json_t *members;    /* worker id -> that worker's engine report (observed, not stored) */
	char *endpoint;     /* host:port of the serving engine once running, else NULL */
	int inflight;       /* gateway requests being relayed to it */
	int64_t requests;   /* gateway requests given to it since the server started */
	int64_t shunned_until; /* mono ms: a connection to it just failed; others are tried first */
	int probe_failures; /* end-to-end probes failed in a row (models with health_probe) */
	bool probe_inflight;
	char *probe_error;  /* the last failure */
	int64_t retire_at;  /* mono ms: replaced, stopping once its requests in flight end; 0: not */
	char *replace_why;  /* removed and placed again at the controller's next tick (out of memory), or NULL */
};

/* A gateway API key (only its hash is known). */
struct cr_apikey {
	char *id, *name, *prefix;
	char hash[CR_HASH_HEX];
	struct cr_user *user;
	json_t *models;      /* allowed model names; empty = all */
	int64_t rpm, tpm, expires_ms, created_ms;
	int64_t daily_tokens, monthly_tokens; /* token quotas, 0 = none */
	struct cr_meter meter;
};

/* Whether key may use model (its list and its user's are empty or name it). */
bool cr_key_allows(const struct cr_apikey *key, const char *model);

/* usage.c: one gateway request's outcome, counted for its key's day and model. */
struct cr_usage_sample {
	bool error;
	int64_t prompt_tokens, completion_tokens;
	int64_t ttft_ms;    /* time to the first byte of a streamed answer; -1: not streamed */
	int64_t latency_ms;
};
void cr_usage_record(struct cr_app *app, const struct cr_apikey *k, const char *model, const struct cr_usage_sample *s);

/* Whether the gateway may send requests to i: its engine was last known to
 * run (it has an endpoint) and it is not in error. An instance whose worker
 * is not_ready or unreachable keeps serving while its engine answers; the
 * relay's connect failures put one that does not answer last. */
bool cr_instance_is_routable(const struct cr_instance *i);

/* The key with this hash (valid or not), or NULL when revoked. */
struct cr_apikey *cr_cluster_key(struct cr_app *app, const char *hash);
/* The model named name, or NULL. */
struct cr_model *cr_cluster_model(struct cr_app *app, const char *name);
/* The instance with this id, or NULL. */
struct cr_instance *cr_cluster_instance(struct cr_app *app, const char *id);
/* A gateway request relayed to i ended: one fewer in flight (a replaced
 * instance whose last request ended stops at the next tick). */
void cr_cluster_request_done(struct cr_app *app, struct cr_instance *i);
/* Iterate: for (size_t it = 0; cr_cluster_next_model(app, &it, &m);) ...
 * Nothing may be added or removed meanwhile. */
bool cr_cluster_next_model(struct cr_app *app, size_t *it, struct cr_model **m);
bool cr_cluster_next_instance(struct cr_app *app, size_t *it, struct cr_instance **i);

#endif
