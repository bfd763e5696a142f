/* The worker agent: detects the node, registers with the server, reports
 * status, holds the watch stream of desired state and serves /healthz on
 * the worker port. It never exits because the server is away: it retries
 * with backoff and jitter and logs once per change of connection state. */
#ifndef CR_AGENT_AGENT_H
#define CR_AGENT_AGENT_H

#include <stdbool.h>
#include <stdint.h>

struct cr_err;

struct cr_agent_config {
	const char *server_url;
	const char *token;          /* cluster registration token */
	const char *name;           /* default: the host name */
	const char *data_dir;       /* keeps worker.json (identity, 0600) */
	const char *listen_host;    /* for /healthz; default 0.0.0.0 */
	int worker_port;            /* default 10150 */
	const char *advertise_address; /* NULL: the address the server sees */
	const char *labels;         /* "k=v,..." or NULL */
	const char *resources_file; /* or NULL */
	int status_interval_s;      /* default 5 */
	const char *engines_config; /* user engine definitions (JSON), or NULL */
	int port_lo, port_hi;       /* engine ports (default 20000-20999) */
	int restart_backoff_s;      /* first engine restart delay (default 10) */
	bool no_ray;                /* embedded in a server: never offer or start Ray */
	const char *allow_args;     /* engine flags that touch files, allowed here ("--log-file,..."), or NULL */
	uint64_t cache_max;         /* model cache bytes before the least recently used unused files go; 0: no limit */
};

/* Run until SIGTERM or SIGINT (returns 0) or until start-up fails (returns
 * an error with err filled: bad labels, port in use, unwritable data dir). */
int cr_agent_run(const struct cr_agent_config *cfg, struct cr_err *err);

#endif
