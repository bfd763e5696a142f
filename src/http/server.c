/* evhttp-based server: routing, limits, JSON replies, SSE streams and the
 * thread offload used for slow work (password hashing). See server.h. */
#include "http/server.h"
#include "http/server_impl.h"

#include <sys/queue.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"

#define MAX_PARAMS CR_MAX_PARAMS
#define MAX_TABLES 16

struct cr_http_server {
	struct event_base *base;
	struct evhttp *http;
	struct cr_http_limits limits;
	cr_http_auth_cb auth;
	void *app;
	const struct cr_http_route *tables[MAX_TABLES];
	int ntables;
};


void cr_req_release(struct cr_req *req)
{
	if (!req)
		return;
	free(req->path);
	json_decref(req->body);
	if (req->query_parsed)
		evhttp_clear_headers(&req->query);
	free(req);
}

int cr_http_status(int code)
{
	switch (code) {
	case 0: return 200;
	case CR_EINPUT: case -EINVAL: return 400;
	case CR_EUNAUTH: return 401;
	case CR_EFORBID: case -EACCES: case -EPERM: return 403;
	case CR_ENOTFOUND: case -ENOENT: return 404;
	case CR_ECONFLICT: case -EEXIST: return 409;
	case CR_ETOOBIG: return 413;
	case CR_EUPSTREAM: return 502;
	case CR_EUNAVAILABLE: return 503;
	case CR_ELIMIT: return 429;
	default: return 500;
	}
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 431: return "Request Header Fields Too Large";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 429: return "Too Many Requests";
	default: return "Error";
	}
}

void cr_reply_json(struct cr_req *req, int status, json_t *body)
{
	struct evbuffer *out = evbuffer_new();
	if (body) {
		char *text = cr_json_dump(body);
		evbuffer_add(out, text, strlen(text));
		evbuffer_add(out, "\n", 1);
		free(text);
		json_decref(body);
	}
	struct evkeyvalq *h = evhttp_request_get_output_headers(req->ev);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply(req->ev, status, reason(status), out);
	evbuffer_free(out);
	cr_req_release(req);
}

/* OpenAI's error type and code for an HTTP status, as its clients expect. */
static void openai_kind(int status, const char **type, const char **code)
{
	*type = status == 401 ? "invalid_request_error" : status == 429 ? "requests"
		: status >= 500 ? "server_error" : "invalid_request_error";
	if (status == 503)
		*type = "service_unavailable";
	*code = status == 401 ? "invalid_api_key" : status == 404 ? "model_not_found" : status == 429 ? "rate_limit_exceeded"
		: status == 413 ? "request_too_large" : NULL;
}

static void reply_status_error(struct cr_req *req, int status, const char *code, const char *message,
			       const char *fix)
{
	json_t *e;
	if (req->openai) { /* the gateway: {"error":{"message","type","code","param"}} */
		const char *type, *oc;
		openai_kind(status, &type, &oc);
		char *msg = fix && *fix ? cr_xasprintf("%s; %s", message, fix) : cr_xstrdup(message);
		e = json_pack("{s:{s:s,s:s,s:s?,s:n}}", "error", "message", msg, "type", type, "code", oc ? oc : code,
			      "param");
		free(msg);
	} else {
		e = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", message, "fix", fix ? fix : "");
	}
	cr_reply_json(req, status, e);
}

void cr_reply_error(struct cr_req *req, int code, const char *message, const char *fix)
{
	reply_status_error(req, cr_http_status(code), cr_err_name(code), message, fix);
}

void cr_reply_error_retry(struct cr_req *req, int code, const char *message, int retry_after_s)
{
	if (retry_after_s > 0) {
		char v[16];
		snprintf(v, sizeof(v), "%d", retry_after_s);
		evhttp_add_header(evhttp_request_get_output_headers(req->ev), "Retry-After", v);
	}
	cr_reply_error(req, code, message, NULL);
}

const char *cr_req_uri(struct cr_req *req)
{
	return evhttp_request_get_uri(req->ev);
}

void cr_reply_err(struct cr_req *req, const struct cr_err *err)
{
	cr_reply_error(req, err->code ? err->code : -EIO, err->message, err->fix);
}

void *cr_req_app(const struct cr_req *req)
{
	return req->srv->app;
}

const char *cr_req_param(const struct cr_req *req, int i)
{
	return i < req->nparams ? req->params[i] : NULL;
}

const char *cr_req_header(const struct cr_req *req, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(req->ev), name);
}

const char *cr_req_query(struct cr_req *req, const char *name)
{
	if (!req->query_parsed) {
		TAILQ_INIT(&req->query);
		const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req->ev));
		if (q)
			evhttp_parse_query_str(q, &req->query);
		req->query_parsed = true;
	}
	return evhttp_find_header(&req->query, name);
}

const char *cr_req_peer(const struct cr_req *req)
{
	return req->peer;
}

struct cr_principal *cr_req_principal(struct cr_req *req)
{
	return &req->principal;
}

const char *cr_req_body(struct cr_req *req, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req->ev);
	*len = evbuffer_get_length(in);
	return *len ? (const char *)evbuffer_pullup(in, -1) : "";
}

json_t *cr_req_json(struct cr_req *req, struct cr_err *err)
{
	if (req->body)
		return req->body;
	size_t len;
	const char *data = cr_req_body(req, &len);
	if (len == 0) {
		cr_err_set(err, CR_EINPUT, "send a JSON object as the request body", "the request body is empty");
		return NULL;
	}
	req->body = cr_json_parse_object(data, len, err);
	return req->body;
}

/* Match path against pattern, recording where each "{}" segment lies. */
static bool match(const char *pattern, const char *path, size_t off[MAX_PARAMS], size_t len[MAX_PARAMS], int *n)
{
	const char *p = pattern, *s = path;
	*n = 0;
	while (*p && *s) {
		if (p[0] == '{' && p[1] == '}') {
			size_t l = strcspn(s, "/");
			if (l == 0 || *n == MAX_PARAMS)
				return false;
			off[*n] = (size_t)(s - path);
			len[(*n)++] = l;
			s += l;
			p += 2;
			continue;
		}
		if (*p++ != *s++)
			return false;
	}
	return !*p && !*s;
}

static enum cr_method method_of(struct evhttp_request *ev)
{
	switch (evhttp_request_get_command(ev)) {
	case EVHTTP_REQ_GET: return CR_GET;
	case EVHTTP_REQ_POST: return CR_POST;
	case EVHTTP_REQ_PUT: return CR_PUT;
	case EVHTTP_REQ_PATCH: return CR_PATCH;
	case EVHTTP_REQ_DELETE: return CR_DELETE;
	default: return 0;
	}
}

static size_t header_bytes(struct evhttp_request *ev)
{
	size_t n = 0;
	struct evkeyval *kv;
	TAILQ_FOREACH(kv, evhttp_request_get_input_headers(ev), next)
		n += strlen(kv->key) + strlen(kv->value) + 4;
	return n;
}

static void fill_peer(struct cr_req *req)
{
	char *addr = NULL;
	ev_uint16_t port = 0;
	struct evhttp_connection *con = evhttp_request_get_connection(req->ev);
	if (con)
		evhttp_connection_get_peer(con, &addr, &port);
	snprintf(req->peer, sizeof(req->peer), "%s", addr ? addr : "");
}

/* Find the route for req and fill its params; sets *wrong_method when only
 * the method differs. */
static const struct cr_http_route *route_for(struct cr_req *req, enum cr_method m, bool *wrong_method)
{
	size_t off[MAX_PARAMS], len[MAX_PARAMS];
	int n;
	*wrong_method = false;
	for (int t = 0; t < req->srv->ntables; t++) {
		for (const struct cr_http_route *r = req->srv->tables[t]; r->pattern; r++) {
			if (!match(r->pattern, req->path, off, len, &n))
				continue;
			if (r->method != m) {
				*wrong_method = true;
				continue;
			}
			for (int i = 0; i < n; i++) {
				req->path[off[i] + len[i]] = '\0';
				req->params[i] = req->path + off[i];
			}
			req->nparams = n;
			return r;
		}
	}
	return NULL;
}

static void dispatch(struct evhttp_request *ev, void *arg)
{
	struct cr_http_server *srv = arg;
	struct cr_req *req = cr_xcalloc(1, sizeof(*req));
	req->ev = ev;
	req->srv = srv;
	fill_peer(req);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(ev));
	req->path = cr_xstrdup(path && *path ? path : "/");
	req->openai = !strncmp(req->path, "/v1/", 4);

	if (header_bytes(ev) > srv->limits.max_headers) {
		char msg[160];
		snprintf(msg, sizeof(msg), "request headers are larger than %zu bytes", srv->limits.max_headers);
		reply_status_error(req, 431, "too_large", msg, "send fewer or shorter headers");
		return;
	}
	if (evbuffer_get_length(evhttp_request_get_input_buffer(ev)) > srv->limits.max_body) {
		char msg[160];
		snprintf(msg, sizeof(msg), "request body is larger than the limit of %zu bytes", srv->limits.max_body);
		cr_reply_error(req, CR_ETOOBIG, msg, "send a smaller body");
		return;
	}
	enum cr_method m = method_of(ev);
	bool wrong_method;
	const struct cr_http_route *r = route_for(req, m, &wrong_method);
	if (!r) {
		char msg[300];
		if (wrong_method) {
			snprintf(msg, sizeof(msg), "method not allowed on '%.200s'", req->path);
			reply_status_error(req, 405, "method_not_allowed", msg, "see docs/api.md for the methods of each route");
		} else {
			snprintf(msg, sizeof(msg), "no route '%.200s'", req->path);
			reply_status_error(req, 404, "not_found", msg, "see docs/api.md for the routes");
		}
		return;
	}
	if (r->auth != CR_AUTH_NONE && srv->auth) {
		struct cr_err err = CR_ERR_INIT;
		if (srv->auth(req, r->auth, &err) != 0) {
			cr_reply_err(req, &err);
			return;
		}
	}
	r->handler(req);
}

struct cr_http_server *cr_http_server_new(struct event_base *base, const struct cr_http_limits *limits,
					  cr_http_auth_cb auth, void *app)
{
	struct cr_http_server *s = cr_xcalloc(1, sizeof(*s));
	s->base = base;
	s->limits = *limits;
	s->auth = auth;
	s->app = app;
	s->http = evhttp_new(base);
	if (!s->http)
		abort();
	/* evhttp's own limits are the hard ceiling; ours, lower, answer in JSON. */
	evhttp_set_max_body_size(s->http, (ev_ssize_t)(limits->max_body * 4 + (1 << 20)));
	evhttp_set_max_headers_size(s->http, (ev_ssize_t)(limits->max_headers * 4 + 8192));
	evhttp_set_timeout(s->http, limits->read_timeout_s);
	evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH |
						    EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
	evhttp_set_gencb(s->http, dispatch, s);
	return s;
}

void cr_http_server_add_routes(struct cr_http_server *s, const struct cr_http_route *table)
{
	if (s->ntables == MAX_TABLES)
		abort();
	s->tables[s->ntables++] = table;
}

int cr_http_server_listen(struct cr_http_server *s, const char *host, int port, int *bound_port,
			  struct cr_err *err)
{
	struct evhttp_bound_socket *h = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
	if (!h)
		return cr_err_set(err, -EADDRINUSE, "stop the other process on that port or pick another with --port",
				  "cannot listen on %s:%d: %s", host, port, strerror(errno));
	evutil_socket_t fd = evhttp_bound_socket_get_fd(h);
	int one = 1; /* accepted sockets inherit it: small replies and SSE events go out at once */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &len);
	if (bound_port)
		*bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							     : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

void cr_http_server_free(struct cr_http_server *s)
{
	if (!s)
		return;
	evhttp_free(s->http);
	free(s);
}

/* ---- server-sent events ---- */

struct cr_stream {
	struct evhttp_request *ev;
	struct evhttp_connection *con;
	cr_stream_close_cb on_close;
	void *arg;
};

static void stream_closed(struct evhttp_connection *con, void *arg)
{
	struct cr_stream *s = arg;
	(void)con;
	/* When the peer went away mid-reply, evhttp detaches the request and
	 * leaves it to us: ending the reply frees it. */
	if (!evhttp_request_get_connection(s->ev))
		evhttp_send_reply_end(s->ev);
	if (s->on_close)
		s->on_close(s, s->arg);
	free(s);
}

struct cr_stream *cr_stream_open(struct cr_req *req, cr_stream_close_cb on_close, void *arg)
{
	struct cr_stream *s = cr_xcalloc(1, sizeof(*s));
	s->ev = req->ev;
	s->con = evhttp_request_get_connection(req->ev);
	s->on_close = on_close;
	s->arg = arg;
	struct evkeyvalq *h = evhttp_request_get_output_headers(req->ev);
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply_start(req->ev, 200, "OK");
	evhttp_connection_set_closecb(s->con, stream_closed, s);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(s->con);
	int one = 1;
	setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	cr_req_release(req);
	return s;
}

static void stream_send(struct cr_stream *s, const char *text, size_t len)
{
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, text, len);
	evhttp_send_reply_chunk(s->ev, b);
	evbuffer_free(b);
}

void cr_stream_event(struct cr_stream *s, const char *event, const char *data)
{
	char *text = event ? cr_xasprintf("event: %s\ndata: %s\n\n", event, data)
			   : cr_xasprintf("data: %s\n\n", data);
	stream_send(s, text, strlen(text));
	free(text);
}

void cr_stream_comment(struct cr_stream *s, const char *text)
{
	char *line = cr_xasprintf(": %s\n\n", text);
	stream_send(s, line, strlen(line));
	free(line);
}

void cr_stream_close(struct cr_stream *s)
{
	if (!s)
		return;
	evhttp_connection_set_closecb(s->con, NULL, NULL);
	evhttp_send_reply_end(s->ev);
	free(s);
}

/* ---- offload ---- */

struct offload {
	cr_offload_cb work, done;
	void *arg;
	struct event *ev;
};

static void offload_done(evutil_socket_t fd, short what, void *arg)
{
	struct offload *o = arg;
	(void)fd;
	(void)what;
	event_free(o->ev);
	o->done(o->arg);
	free(o);
}

static void *offload_thread(void *arg)
{
	struct offload *o = arg;
	o->work(o->arg);
	event_active(o->ev, EV_TIMEOUT, 0);
	return NULL;
}

void cr_offload(struct event_base *base, cr_offload_cb work, cr_offload_cb done, void *arg)
{
	struct offload *o = cr_xcalloc(1, sizeof(*o));
	o->work = work;
	o->done = done;
	o->arg = arg;
	o->ev = event_new(base, -1, 0, offload_done, o);
	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, offload_thread, o) != 0) {
		cr_warn("pthread_create failed; running slow work on the event loop");
		offload_thread(o);
	}
	pthread_attr_destroy(&attr);
}
