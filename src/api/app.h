/* The server application: in-memory cluster state (users, sessions, workers)
 * persisted through the store, the management routes under /api, liveness of
 * workers, and periodic flushing of observed state. Runs on one event loop. */
#ifndef CR_API_APP_H
#define CR_API_APP_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct cr_err;
struct cr_app;

struct cr_app_config {
	const char *data_dir;       /* holds corral.db, token, initial_admin_password */
	const char *store;          /* a postgresql:// URL, or NULL for SQLite in data_dir */
	struct cr_pg_lock *lock;    /* with store: the leader lock, held (the leader) or not (a follower); the app takes it */
	const char *cluster_token;  /* --token, or NULL to keep/generate DATA_DIR/token */
	int probe_interval_s;       /* server -> worker /healthz probes; 0 disables */
	int probe_timeout_s;
	int flush_interval_s;       /* observed state -> store */
	int usage_interval_s;       /* usage counts -> store (a kill -9 loses at most this) */
	int audit_days;             /* audit entries are kept this long (0: for ever) */
	int keepalive_s;            /* watch stream keepalive comments */
	int missed_status_limit;    /* not_ready after this many missed intervals */
	int session_ttl_s;
	size_t max_body;            /* request body limit in bytes */
	size_t max_headers;
	int header_timeout_s;       /* slow-loris deadlines: a request's head, then its body */
	int body_timeout_s;
	int max_connections;        /* 0: from the open-files limit */
	int reschedule_grace_s;     /* instances of a worker not_ready this long move elsewhere */
	uint64_t gpu_reserve;       /* bytes kept free on every GPU */
	uint64_t ram_reserve;       /* bytes kept free on every worker for CPU instances */
	int health_probe_interval_s; /* end-to-end probes of models with health_probe */
	double rtt_limit_tp_ms;     /* group checks: vLLM/SGLang across nodes */
	double rtt_limit_rpc_ms;    /* group checks: llama.cpp RPC */
	const char *metrics_token;  /* bearer /metrics requires; NULL: open */
	int events_days;            /* events are kept this long (0: for ever) */
};

/* Defaults for every field but data_dir. */
void cr_app_config_defaults(struct cr_app_config *c);

/* Open the store in data_dir (creating it), bootstrap the admin user and the
 * cluster token on first start (printing where they are kept), load state and
 * start timers on base. Errors name the file and the fix. */
int cr_app_open(struct event_base *base, const struct cr_app_config *cfg, struct cr_app **out, struct cr_err *err);

/* Listen for HTTP on host:port; *bound gets the port. */
int cr_app_listen(struct cr_app *app, const char *host, int port, int *bound, struct cr_err *err);

/* The HTTP server the app serves on, for other components' routes (the
 * gateway's); the app keeps it. */
struct cr_http_server;
struct cr_http_server *cr_app_http(struct cr_app *app);

/* Another component's metrics, appended to GET /metrics by cb (Prometheus
 * text, see base/prom.h); at most 4. */
struct cr_buf;
typedef void (*cr_app_metrics_cb)(struct cr_buf *b, void *arg);
void cr_app_add_metrics(struct cr_app *app, cr_app_metrics_cb cb, void *arg);

/* The cluster registration token in clear (for the embedded worker). */
const char *cr_app_cluster_token(const struct cr_app *app);

/* Flush observed state, close streams and the store, free. NULL allowed. */
void cr_app_free(struct cr_app *app);

#endif
