/* The gateway's relay: one client request forwarded to an upstream HTTP
 * server (an inference engine) and its answer streamed back as it arrives,
 * with keep-alive connection pools per upstream, retries before anything was
 * delivered, and connect, first-byte and idle timeouts. */
#ifndef CR_HTTP_RELAY_H
#define CR_HTTP_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/server.h"

struct event_base;
struct evbuffer;
struct cr_req;
struct cr_relay_pool;

struct cr_relay_target {
	char host[256];
	int port;
	char key[128]; /* sent to the upstream as "Authorization: Bearer KEY" when not empty */
};

/* Choose the upstream for attempt (0, 1, ...): fill out and return 0, or
 * return -1 when there is none (left). unreachable: the previous attempt's
 * upstream could not be connected to (refused, or no connection within the
 * connect timeout), as opposed to a pooled connection found closed. */
typedef int (*cr_relay_pick_cb)(void *arg, int attempt, bool unreachable, struct cr_relay_target *out);
/* The upstream's status and Content-Type (NULL when absent), once, before any
 * of its body is seen. Return true to have the whole answer read before any
 * of it goes out (then check decides), false to relay it as it arrives. */
typedef bool (*cr_relay_head_cb)(void *arg, int status, const char *content_type);
/* A whole answer read for checking (see head): return 0 to send it, or -1
 * with msg filled to answer 502 with that message instead. */
typedef int (*cr_relay_check_cb)(void *arg, struct evbuffer *whole, char *msg, size_t n);
/* Each piece of the answer body, in order, before it goes to the client: the
 * callback may drain, add or hold back bytes of chunk; what remains is sent.
 * Called a last time with end = true and an empty chunk when the answer is
 * complete, to release what was held. */
typedef void (*cr_relay_data_cb)(void *arg, struct evbuffer *chunk, bool end);
/* Called exactly once: the HTTP status the client got (0 when the client
 * went away), the body bytes relayed and an error text or NULL. */
typedef void (*cr_relay_done_cb)(void *arg, int status, uint64_t bytes, const char *error);

struct cr_relay_opts {
	struct cr_relay_pool *pool;  /* required */
	int connect_timeout_ms;      /* no TCP connection by then: next upstream */
	int first_byte_timeout_ms;   /* no answer by then (from the request): 504 */
	int idle_timeout_ms;         /* nothing new for this long mid-answer: cut */
	cr_relay_pick_cb pick;       /* required */
	cr_relay_head_cb head;       /* optional */
	cr_relay_check_cb check;     /* required when head may return true */
	size_t max_check;            /* answers longer than this are relayed unchecked */
	cr_relay_data_cb data;       /* optional */
	cr_relay_done_cb done;       /* required */
	cr_http_error_render_cb error; /* required: the body of the errors the relay answers itself */
	void *arg;
};

/* Relay req (its raw body of len bytes, copied) as a POST of path. Another
 * upstream is tried when the connection fails before the request reached the
 * first one (connect refused or timed out, or a pooled keep-alive connection
 * the upstream had closed); once the upstream had the request, nothing is
 * retried. A client that goes away cancels the upstream request. Failures
 * the client sees are 502 or 504 with the body o->error renders or,
 * mid-stream, a final "data: <that body>" event. TCP_NODELAY is set on both sockets. The
 * request is ended by the relay. */
void cr_relay(struct cr_req *req, const char *path, const char *body, size_t len, const struct cr_relay_opts *o);

/* Keep-alive connections to upstreams: at most max_idle idle connections per
 * host:port, each closed after idle_s unused. */
struct cr_relay_pool *cr_relay_pool_new(struct event_base *base, int max_idle, int idle_s);

/* Connections opened and reused so far. */
void cr_relay_pool_stats(const struct cr_relay_pool *p, uint64_t *opened, uint64_t *reused);

/* Close every idle connection and free. NULL allowed. Relays still running
 * must have ended. */
void cr_relay_pool_free(struct cr_relay_pool *p);

#endif
