/* Asynchronous HTTP GET probes on the event loop (evhttp client), used by
 * the server to check that it can reach each worker's /healthz. One probe
 * object targets one host:port; each GET opens and closes its connection. */
#ifndef CR_HTTP_PROBE_H
#define CR_HTTP_PROBE_H

struct event_base;
struct cr_probe;

/* status: the HTTP status, or 0 when no answer came back (error says why). */
typedef void (*cr_probe_cb)(int status, const char *error, void *arg);

struct cr_probe *cr_probe_new(struct event_base *base, const char *host, int port);

/* Start GET path. cb is called exactly once, on the loop, unless the probe is
 * freed first (then never). One GET at a time per probe. */
void cr_probe_get(struct cr_probe *p, const char *path, int timeout_s, cr_probe_cb cb, void *arg);

/* Free, cancelling a pending GET without calling its callback. NULL allowed. */
void cr_probe_free(struct cr_probe *p);

#endif
