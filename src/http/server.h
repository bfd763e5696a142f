/* HTTP server on libevent's evhttp: a route table per resource, per-request
 * context released together, JSON replies and the project's error shape,
 * server-sent-event streams, and limits on headers and bodies.
 *
 * Every handler must end its request exactly once: with a cr_reply_* call,
 * now or later (after async work), or by opening a stream. */
#ifndef CR_HTTP_SERVER_H
#define CR_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evhttp_request;
struct cr_err;
struct cr_http_server;
struct cr_req;

enum cr_method { CR_GET = 1, CR_POST, CR_PUT, CR_PATCH, CR_DELETE };

/* Who may call a route; checked by the server's auth hook before the handler. */
enum cr_auth_need {
	CR_AUTH_NONE,   /* anyone */
	CR_AUTH_USER,   /* a user session or API key */
	CR_AUTH_ADMIN,  /* a user with the admin role */
	CR_AUTH_WORKER, /* the worker named by the first path parameter */
	CR_AUTH_KEY,    /* a gateway API key (OpenAI clients) */
};

typedef void (*cr_http_handler_cb)(struct cr_req *req);

/* A route; "{}" in a pattern matches one non-empty path segment, available as
 * cr_req_param(req, i). Tables end with an entry whose pattern is NULL. */
struct cr_http_route {
	enum cr_method method;
	const char *pattern;
	enum cr_auth_need auth;
	cr_http_handler_cb handler;
};

/* Authenticate req for need; 0 to proceed, or an error code with err filled
 * (the server then replies with it). Called on the event loop. */
typedef int (*cr_http_auth_cb)(struct cr_req *req, enum cr_auth_need need, struct cr_err *err);

/* Whether this server serves route r now; 0, or an error code with err
 * filled (the server replies with it before any auth). Called on the loop. */
typedef int (*cr_http_guard_cb)(struct cr_req *req, const struct cr_http_route *r, struct cr_err *err);

struct cr_http_limits {
	size_t max_body;    /* bodies above this get 413 (JSON) */
	size_t max_headers; /* total header bytes above this get 431 (JSON) */
	int read_timeout_s; /* a connection that sends nothing this long is closed */
	int header_timeout_s; /* a request's head must arrive this soon after its first byte */
	int body_timeout_s;   /* and its whole body this soon (slow-loris deadlines) */
	int max_connections;  /* open client connections; above it the oldest idle are shed */
};

/* Defaults for the limits: 1 MiB bodies, 16 KiB headers, 60 s idle, 10 s for
 * a head, 60 s for a body, and a connection cap from the fd limit. */
void cr_http_limits_defaults(struct cr_http_limits *l);

/* Raise the soft limit on open files to the hard one (at most 1,048,576) and
 * return the soft limit now in force. */
long cr_http_raise_fd_limit(void);

/* An error body in some API's convention: a new JSON object for an HTTP
 * status, the project's error code name ("invalid_input"), the message and
 * the fix (NULL or ""). */
typedef json_t *(*cr_http_error_render_cb)(int status, const char *code, const char *message, const char *fix);

/* Create a server on base that dispatches to the route tables (borrowed, kept
 * until free) with app as the context handed to handlers. */
struct cr_http_server *cr_http_server_new(struct event_base *base, const struct cr_http_limits *limits,
					  cr_http_auth_cb auth, void *app);
void cr_http_server_add_routes(struct cr_http_server *s, const struct cr_http_route *table);

/* Ask guard before every routed request (NULL: none). */
void cr_http_server_set_guard(struct cr_http_server *s, cr_http_guard_cb guard);

/* The same with ctx as what cr_req_ctx gives the table's handlers (a
 * component's own state beside the server's app). */
void cr_http_server_add_routes_ctx(struct cr_http_server *s, const struct cr_http_route *table, void *ctx);

/* Serve TLS with ctx (see http/tls.h) on every port listened on; the server
 * owns ctx from now on. Call before cr_http_server_listen. */
typedef struct ssl_ctx_st SSL_CTX;
void cr_http_server_set_tls(struct cr_http_server *s, SSL_CTX *ctx);

/* Errors of requests whose path starts with prefix (e.g. "/v1/") are rendered
 * by render instead of the management shape {"error":{"code","message","fix"}};
 * at most 4 prefixes, the first match wins. */
void cr_http_server_set_error_style(struct cr_http_server *s, const char *prefix, cr_http_error_render_cb render);

/* Listen on host:port (port 0: any free port). Returns 0 or a negated errno
 * with err naming the address and the fix. *bound_port gets the port. */
int cr_http_server_listen(struct cr_http_server *s, const char *host, int port, int *bound_port,
			  struct cr_err *err);

/* Stop accepting new connections (the listening sockets stay bound), for a
 * graceful shutdown; requests already being read or answered go on. */
void cr_http_server_stop_accepting(struct cr_http_server *s);

/* Requests being answered now, long-lived event streams (cr_stream_open)
 * not counted: what a graceful shutdown waits for. */
int cr_http_server_busy(const struct cr_http_server *s);

/* Stop listening and free; open streams are closed. NULL is allowed. */
void cr_http_server_free(struct cr_http_server *s);

/* Request accessors. Strings are borrowed for the request's lifetime. */
void *cr_req_app(const struct cr_req *req);
/* The ctx of the route table that matched (cr_http_server_add_routes_ctx),
 * else the server's app. */
void *cr_req_ctx(const struct cr_req *req);
const char *cr_req_param(const struct cr_req *req, int i);
const char *cr_req_header(const struct cr_req *req, const char *name);
/* Query parameter, or NULL. */
const char *cr_req_query(struct cr_req *req, const char *name);
/* The peer's address as text. */
const char *cr_req_peer(const struct cr_req *req);
/* The raw body (not NUL-terminated) and its length; borrowed. */
const char *cr_req_body(struct cr_req *req, size_t *len);
/* The body parsed as a JSON object, or NULL with err set (CR_EINPUT). The
 * object is owned by the request. */
json_t *cr_req_json(struct cr_req *req, struct cr_err *err);

/* Per-request slots the auth hook fills and handlers read. */
struct cr_principal {
	int64_t user_id;        /* 0 for workers */
	const char *username;   /* borrowed from the app's cache */
	bool admin;
	const char *worker_id;  /* for CR_AUTH_WORKER */
	const void *key;        /* for CR_AUTH_KEY: the app's key record */
};
struct cr_principal *cr_req_principal(struct cr_req *req);

/* Replies; each ends the request and frees its memory. cr_reply_json steals
 * the reference to body. */
void cr_reply_json(struct cr_req *req, int status, json_t *body);
void cr_reply_error(struct cr_req *req, int code, const char *message, const char *fix);
/* A header for the reply to come (before any cr_reply_*). */
void cr_reply_header(struct cr_req *req, const char *name, const char *value);
/* len bytes of data as they are, with that Content-Type (Cache-Control:
 * no-store unless a header set one). */
void cr_reply_text(struct cr_req *req, int status, const char *content_type, const char *data, size_t len);
/* The same handing over data (malloc'd), which is freed once sent. */
void cr_reply_text_owned(struct cr_req *req, int status, const char *content_type, char *data, size_t len);
void cr_reply_err(struct cr_req *req, const struct cr_err *err);
/* Reply with length bytes of the open file fd from offset (sent without
 * copying where the kernel allows); takes fd and closes it. */
void cr_reply_file(struct cr_req *req, int status, const char *content_type, int fd, uint64_t offset,
		   uint64_t length);

/* An error reply with a Retry-After header when retry_after_s > 0. */
void cr_reply_error_retry(struct cr_req *req, int code, const char *message, int retry_after_s);

/* The request's URI as received (path and query). */
const char *cr_req_uri(struct cr_req *req);

/* The one mapping from error codes to HTTP statuses. */
int cr_http_status(int code);

/* Server-sent events. cr_stream_open ends the request (no cr_reply_* after
 * it) and starts a 200 text/event-stream reply. on_close is called once when
 * the client goes away, and never after cr_stream_close. */
struct cr_stream;
typedef void (*cr_stream_close_cb)(struct cr_stream *s, void *arg);
struct cr_stream *cr_stream_open(struct cr_req *req, cr_stream_close_cb on_close, void *arg);
/* Send one event (event may be NULL) with data on one "data:" line. */
void cr_stream_event(struct cr_stream *s, const char *event, const char *data);
/* The same with an "id:" line, which a client sends back as Last-Event-ID
 * to resume after it. */
void cr_stream_event_id(struct cr_stream *s, long long id, const char *event, const char *data);
/* Send a comment line, used as keepalive. */
void cr_stream_comment(struct cr_stream *s, const char *text);
/* End the stream from the server side and free it. */
void cr_stream_close(struct cr_stream *s);

#endif
