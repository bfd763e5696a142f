/* The OpenAI-compatible endpoint under /v1: chat, completions, embeddings and
 * rerank relayed to running instances, the key's models listed, every request
 * metered, and every error in OpenAI's shape. It reads the cluster through
 * api/cluster.h and is wired by `corral server` onto the server's HTTP port. */
#ifndef CR_GATEWAY_GATEWAY_H
#define CR_GATEWAY_GATEWAY_H

#include <jansson.h>
#include <stdio.h>

struct event_base;
struct cr_app;
struct cr_gateway;
struct cr_http_server;

struct cr_gateway_config {
	int connect_timeout_ms;    /* to an engine: TCP connect, else the next replica */
	int first_byte_timeout_ms; /* request sent -> first byte of the answer, else 504 */
	int idle_timeout_ms;       /* longest silence mid-answer before it is cut */
	int pool_idle;             /* idle keep-alive connections kept per engine */
	FILE *access_log;          /* one line per /v1 request, written each second on its descriptor
				    * (borrowed); NULL: none */
};

/* 5 s, 10 min, 5 min, 16, stderr. */
void cr_gateway_config_defaults(struct cr_gateway_config *c);

/* A gateway on base over the cluster app (borrowed; it must outlive the
 * gateway's requests). Free with cr_gateway_free after the HTTP server. */
struct cr_gateway *cr_gateway_new(struct event_base *base, struct cr_app *app, const struct cr_gateway_config *cfg);

/* Serve /v1 on http: the routes, and OpenAI's error shape for every error
 * under /v1/ (the HTTP layer's own refusals included). */
void cr_gateway_attach(struct cr_gateway *gw, struct cr_http_server *http);

/* Close the idle connections to engines and free; NULL allowed. Relays in
 * flight must have ended (free the HTTP server first). */
void cr_gateway_free(struct cr_gateway *gw);

/* The gateway's Prometheus metrics into b (arg: the gateway): requests by
 * model and status, in flight, tokens, time to first token and duration;
 * wired to the server's GET /metrics with cr_app_add_metrics. */
struct cr_buf;
void cr_gateway_metrics(struct cr_buf *b, void *arg);

/* OpenAI's error shape {"error":{"message","type","code","param"}} for a
 * status and the project's code and message (the fix is appended to the
 * message, as OpenAI's clients show only that); a cr_http_error_render_cb. */
json_t *cr_gateway_error(int status, const char *code, const char *message, const char *fix);

#endif
