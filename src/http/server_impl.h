/* Private to src/http: the request context that server.c and relay.c share. */
#ifndef CR_HTTP_SERVER_IMPL_H
#define CR_HTTP_SERVER_IMPL_H

#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdbool.h>

#include "http/server.h"

#define CR_MAX_PARAMS 4

struct cr_req {
	struct evhttp_request *ev;
	struct cr_http_server *srv;
	char *path;                     /* owned; split in place once routed */
	const char *params[CR_MAX_PARAMS];
	int nparams;
	json_t *body;                   /* owned */
	struct evkeyvalq query;
	bool query_parsed;
	char peer[64];
	cr_http_error_render_cb render; /* errors in another API's shape (e.g. OpenAI's under /v1/), or NULL */
	struct cr_principal principal;
	void *ctx;                      /* the matched route table's */
};

struct evhttp_connection;
/* The close callback of a client connection: evhttp keeps one per connection
 * and the server uses it to track connections, so the relay and streams set
 * theirs here. cb NULL removes it. Called when evhttp frees the connection. */
typedef void (*evhttp_connection_closecb)(struct evhttp_connection *, void *);
void cr_http_conn_set_closecb(struct cr_http_server *srv, struct evhttp_connection *evcon,
			      evhttp_connection_closecb cb, void *arg);

/* Free a request context (not the evhttp request). NULL allowed. */
void cr_req_release(struct cr_req *req);

#endif
