/* The supervisor (worker side): keeps the engine processes of the instances
 * placed on this worker running. It starts each engine in its own process
 * group with its devices made visible, on a port from the worker's range,
 * with its output in DATA_DIR/logs/<instance>.log; probes its health; on exit
 * diagnoses the cause from the log and restarts with backoff (base doubling
 * to 5 min, reset after 10 min of healthy running); stops with SIGTERM then
 * SIGKILL. Engines outlive the worker: on start it adopts the ones still
 * running (pid, start time and command line must match) and kills those that
 * no instance wants any more. Runs its own thread; thread-safe API. */
#ifndef CR_AGENT_SUPERVISE_H
#define CR_AGENT_SUPERVISE_H

#include <jansson.h>
#include <stdbool.h>

#include "agent/engines.h"
#include "agent/files.h"

struct cr_supervisor_config {
	const char *data_dir;       /* logs/ and engines.json (adoption state) */
	const char *engine_host;    /* address engines bind to */
	int port_lo, port_hi;       /* engine ports */
	int backoff_s;              /* first restart delay (default 10) */
	int stop_grace_s;           /* SIGTERM -> SIGKILL (default 10) */
	const struct cr_engine_catalog *catalog;
	struct cr_files *files;     /* local paths of downloaded url models */
	bool no_ray;                /* the embedded worker of a server: never a Ray node */
	const char *allow_args;     /* file-touching engine flags allowed on this worker (comma-separated) */
	void (*on_change)(void *arg); /* called (under the supervisor's lock) when a report changes */
	void *arg;
};

struct cr_supervisor;

/* Load the adoption state and start the supervising thread. */
struct cr_supervisor *cr_supervisor_start(const struct cr_supervisor_config *cfg);

/* Stop the thread (engines keep running) and free. NULL is fine. */
void cr_supervisor_free(struct cr_supervisor *s);

/* The watch stream's snapshot for this worker ({"instances":[...]}). */
void cr_supervisor_set_desired(struct cr_supervisor *s, const char *worker_id, json_t *snapshot);

/* {"instances":[{"id","role","state","message","pid","port","host","restarts",
 * "exit","cause","fix","log_tail"}]} for the server (new reference). */
json_t *cr_supervisor_report(struct cr_supervisor *s);

/* True once since the last call when a report changed. */
bool cr_supervisor_take_changed(struct cr_supervisor *s);

/* The engines' metrics as last read (every 5 s), under Corral's vocabulary,
 * into b (see agent/emetrics.h). */
struct cr_buf;
void cr_supervisor_metrics(struct cr_supervisor *s, struct cr_buf *b);

/* Path of an instance's log file (caller frees), or NULL when unknown. */
char *cr_supervisor_log_path(struct cr_supervisor *s, const char *instance_id);

/* Stop every engine now (SIGTERM, then SIGKILL): for `corral worker --stop-engines`. */
void cr_supervisor_stop_all(struct cr_supervisor *s);

#endif
