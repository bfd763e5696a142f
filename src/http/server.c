/* evhttp-based server: routing, limits, JSON replies and SSE streams. See
 * server.h. */
#include "http/server.h"
#include "http/server_impl.h"

#include <sys/queue.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "base/mem.h"
#include "base/util.h"

#define MAX_PARAMS CR_MAX_PARAMS
#define MAX_TABLES 16

struct conn;

struct cr_http_server {
	struct event_base *base;
	struct evhttp *http;
	struct cr_http_limits limits;
	cr_http_auth_cb auth;
	cr_http_guard_cb guard;
	void *app;
	const struct cr_http_route *tables[MAX_TABLES];
	void *table_ctx[MAX_TABLES];
	int ntables;
	/* client connections, oldest first (see "connections" below) */
	struct conn *first, *last;
	int nconns;
	struct cr_map by_evcon;  /* "%p" of the evhttp_connection -> conn */
	struct event *sweep;
	struct event *resume;    /* re-enables accepting after an accept failure */
	struct evconnlistener *listeners[8];
	int nlisteners;
	int64_t cap_logged_ms, accept_logged_ms;
	struct {
		char prefix[32];
		cr_http_error_render_cb render;
	} styles[4];
	int nstyles;
	SSL_CTX *tls; /* NULL: plain HTTP */
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
	case CR_EUNAVAILABLE: case CR_ENOTLEADER: return 503;
	case CR_ELIMIT: return 429;
	case -ENOSPC: return 507;
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
	case 507: return "Insufficient Storage";
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

void cr_reply_header(struct cr_req *req, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(req->ev), name, value);
}

/* Send out as the body with content_type (Cache-Control: no-store unless
 * set), free it and release the request. */
static void send_body(struct cr_req *req, int status, const char *content_type, struct evbuffer *out)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req->ev);
	evhttp_add_header(h, "Content-Type", content_type);
	if (!evhttp_find_header(h, "Cache-Control"))
		evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply(req->ev, status, reason(status), out);
	evbuffer_free(out);
	cr_req_release(req);
}

void cr_reply_text(struct cr_req *req, int status, const char *content_type, const char *data, size_t len)
{
	struct evbuffer *out = evbuffer_new();
	evbuffer_add(out, data, len);
	send_body(req, status, content_type, out);
}

void cr_reply_file(struct cr_req *req, int status, const char *content_type, int fd, uint64_t offset,
		   uint64_t length)
{
	struct evbuffer *out = evbuffer_new();
	/* libevent sends the segment with sendfile where it can and closes fd */
	if (length == 0 || evbuffer_add_file(out, fd, (ev_off_t)offset, (ev_off_t)length) != 0) {
		if (length)
			status = 500;
		close(fd);
	}
	send_body(req, status, content_type, out);
}

static void free_owned(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)data);
}

void cr_reply_text_owned(struct cr_req *req, int status, const char *content_type, char *data, size_t len)
{
	struct evbuffer *out = evbuffer_new();
	evbuffer_add_reference(out, data, len, free_owned, NULL); /* no copy of large answers */
	send_body(req, status, content_type, out);
}

static void reply_status_error(struct cr_req *req, int status, const char *code, const char *message,
			       const char *fix)
{
	json_t *e = req->render ? req->render(status, code, message, fix)
				: json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", message, "fix",
					    fix ? fix : "");
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
	char fix[80];
	snprintf(fix, sizeof(fix), "wait %d s (the Retry-After header) and try again", retry_after_s > 0 ? retry_after_s : 1);
	cr_reply_error(req, code, message, fix);
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

void *cr_req_ctx(const struct cr_req *req)
{
	return req->ctx ? req->ctx : req->srv->app;
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

/* ---- connections ----
 * evhttp has no connection limits or request deadlines of its own, so every
 * client connection gets a record here, created in the bufferevent callback
 * when it is accepted:
 *   - the first byte of a request starts its head deadline, the end of the
 *     head (an empty line) its body deadline; a request not dispatched by
 *     then is cut, however slowly it drips (slow-loris);
 *   - a connection is busy from dispatch until its reply is complete; only
 *     idle ones are cut or shed;
 *   - above max_connections the oldest idle connection is shed, and accept
 *     failures (EMFILE) pause accepting for 100 ms instead of spinning; both
 *     are logged at most once a minute;
 *   - evhttp's own error pages (malformed requests, sizes over its hard
 *     limits, unknown methods) are HTML: they are rewritten into JSON before
 *     they leave. */

struct conn {
	struct cr_http_server *srv;
	struct bufferevent *bev;
	struct evhttp_connection *evcon; /* NULL until attached */
	struct conn *prev, *next;
	int64_t accepted_ms;
	int64_t started_ms;  /* first byte of the request being read; 0: none */
	int64_t head_done_ms; /* its head complete; 0: not yet */
	char tail[3];        /* last bytes seen, to find the head's end across reads */
	size_t head_bytes;   /* bytes of the request's head seen so far */
	bool busy;           /* a request dispatched, its reply not complete */
	bool stream;         /* and it is a long-lived event stream (not waited for at shutdown) */
	bool attached;
	bool rewriting;      /* our own rewrite of the output is in progress */
	size_t resp_start;   /* offset of the last response line in the output */
	struct event *fix;   /* deferred rewrite of an HTML error page */
	struct event *attach; /* next loop turn after accept */
	evhttp_connection_closecb user_close; /* the relay's or a stream's */
	void *user_arg;
};

static void conn_key(const struct evhttp_connection *evcon, char key[32])
{
	snprintf(key, 32, "%p", (const void *)evcon);
}

static struct conn *conn_of(struct cr_http_server *srv, const struct evhttp_connection *evcon)
{
	char key[32];
	if (!evcon)
		return NULL;
	conn_key(evcon, key);
	return cr_map_get(&srv->by_evcon, key);
}

static void conn_unlink(struct conn *c)
{
	struct cr_http_server *srv = c->srv;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->first = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		srv->last = c->prev;
	srv->nconns--;
	if (c->evcon) {
		char key[32];
		conn_key(c->evcon, key);
		cr_map_del(&srv->by_evcon, key);
	}
	if (c->fix)
		event_free(c->fix);
	event_free(c->attach);
	free(c);
}

/* evhttp is freeing the connection: tell its user, forget it. */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct conn *c = arg;
	evhttp_connection_closecb cb = c->user_close;
	void *cb_arg = c->user_arg;
	conn_unlink(c);
	if (cb)
		cb(evcon, cb_arg);
}

void cr_http_conn_set_closecb(struct cr_http_server *srv, struct evhttp_connection *evcon,
			      evhttp_connection_closecb cb, void *arg)
{
	/* every client connection is attached before its first request is
	 * dispatched, so the record exists; see attach() */
	struct conn *c = conn_of(srv, evcon);
	if (!c) {
		evhttp_connection_set_closecb(evcon, cb, arg);
		return;
	}
	c->user_close = cb;
	c->user_arg = arg;
}

static void log_limited(int64_t *last_ms, const char *fmt, const char *detail)
{
	int64_t now = cr_mono_ms();
	if (*last_ms && now - *last_ms < 60000)
		return;
	*last_ms = now;
	cr_warn(fmt, detail);
}

/* Close an idle connection now (never one whose request is being handled). */
static void conn_cut(struct conn *c)
{
	if (c->evcon)
		evhttp_connection_free(c->evcon); /* calls conn_closed */
}

/* Shed the oldest idle connection; false when every one is busy. */
static bool shed_oldest(struct cr_http_server *srv, const struct conn *except)
{
	for (struct conn *c = srv->first; c; c = c->next) {
		if (c == except || c->busy || !c->attached)
			continue;
		conn_cut(c);
		return true;
	}
	return false;
}

/* Bytes arrived: start the request's deadlines and find the head's end. */
static void conn_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	if (info->n_added == 0 || c->busy || c->head_done_ms)
		return;
	int64_t now = cr_mono_ms();
	if (!c->started_ms)
		c->started_ms = now;
	struct evbuffer_ptr pos;
	evbuffer_ptr_set(buf, &pos, info->orig_size, EVBUFFER_PTR_SET);
	char chunk[512];
	size_t left = info->n_added;
	while (left && !c->head_done_ms) {
		size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
		ev_ssize_t got = evbuffer_copyout_from(buf, &pos, chunk, n);
		if (got <= 0)
			break;
		for (ev_ssize_t i = 0; i < got; i++) {
			c->head_bytes++;
			c->tail[0] = c->tail[1];
			c->tail[1] = c->tail[2];
			c->tail[2] = chunk[i];
			if (c->tail[2] == '\n' && (c->tail[1] == '\n' || (c->tail[1] == '\r' && c->tail[0] == '\n'))) {
				c->head_done_ms = now;
				break;
			}
		}
		evbuffer_ptr_set(buf, &pos, (size_t)got, EVBUFFER_PTR_ADD);
		left -= (size_t)got;
	}
}

static const char *reason(int status);

/* evhttp's own limits, the hard ceiling; ours, lower, answer in dispatch
 * with the configured numbers. */
static size_t hard_body_limit(const struct cr_http_limits *l)
{
	return l->max_body * 4 + (1 << 20);
}

static size_t hard_header_limit(const struct cr_http_limits *l)
{
	return l->max_headers * 4 + 8192;
}

/* Replace the HTML error page at the end of the output with JSON. */
static void conn_fix(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t len = evbuffer_get_length(out);
	if (c->resp_start >= len)
		return;
	char line[64] = "";
	struct evbuffer_ptr pos;
	evbuffer_ptr_set(out, &pos, c->resp_start, EVBUFFER_PTR_SET);
	evbuffer_copyout_from(out, &pos, line, sizeof(line) - 1);
	int status = 400;
	if (sscanf(line, "HTTP/%*d.%*d %d", &status) != 1 || status < 400 || status > 599)
		status = 400;
	if (status == 501) /* evhttp's answer to a method it does not know */
		status = 405;
	if (status == 400 && !c->head_done_ms && c->head_bytes > hard_header_limit(&c->srv->limits))
		status = 431; /* evhttp calls a head over its limit malformed */
	char message[200] = "the request is not valid HTTP/1.x";
	if (status == 413)
		snprintf(message, sizeof(message), "the request body is larger than the server's hard limit of %zu bytes",
			 hard_body_limit(&c->srv->limits));
	else if (status == 431)
		snprintf(message, sizeof(message), "the request headers are larger than the server's hard limit of %zu bytes",
			 hard_header_limit(&c->srv->limits));
	else if (status == 405)
		snprintf(message, sizeof(message), "this method is not supported");
	const char *code = status == 413 || status == 431 ? "too_large" : status == 405 ? "method_not_allowed"
												  : "bad_request";
	const char *fix = status == 413 ? "send a smaller body (--max-body sets the limit)"
			  : status == 431 ? "send fewer or shorter headers"
			  : status == 405 ? "use GET, POST, PUT, PATCH or DELETE as docs/api.md lists for each route"
					  : "send a well-formed HTTP/1.0 or HTTP/1.1 request";
	/* both conventions at once: OpenAI clients read message, type, code and
	 * param; management clients code, message and fix */
	json_t *e = json_pack("{s:{s:s,s:s,s:s,s:s,s:n}}", "error", "code", code, "message", message, "fix", fix,
			      "type", "invalid_request_error", "param");
	char *body = cr_json_dump(e);
	json_decref(e);
	struct evbuffer *keep = evbuffer_new();
	evbuffer_remove_buffer(out, keep, c->resp_start);
	c->rewriting = true;
	evbuffer_drain(out, evbuffer_get_length(out));
	evbuffer_add_buffer(out, keep);
	evbuffer_add_printf(out,
			    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
			    "Connection: close\r\nContent-Length: %zu\r\n\r\n%s\n",
			    status, reason(status), strlen(body) + 1, body);
	c->rewriting = false;
	evbuffer_free(keep);
	free(body);
}

/* Watch what evhttp writes: where each response starts, and its HTML pages. */
static void conn_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	if (c->rewriting)
		return;
	if (info->n_deleted)
		c->resp_start = c->resp_start > info->n_deleted ? c->resp_start - info->n_deleted : 0;
	if (!info->n_added)
		return;
	/* Over TLS every contiguous piece of the output becomes its own
	 * SSL_write, record and write(2); a chunked reply adds three pieces
	 * per chunk. Small output is kept in one piece. */
	if (c->srv->tls && evbuffer_get_length(buf) <= 16384)
		evbuffer_pullup(buf, -1);
	char head[8];
	struct evbuffer_ptr pos;
	evbuffer_ptr_set(buf, &pos, info->orig_size - info->n_deleted, EVBUFFER_PTR_SET);
	ev_ssize_t got = evbuffer_copyout_from(buf, &pos, head, sizeof(head));
	if (got >= 7 && !memcmp(head, "HTTP/1.", 7)) {
		c->resp_start = info->orig_size - info->n_deleted;
	} else if (got >= 6 && !memcmp(head, "<HTML>", 6)) { /* evhttp_send_error's page, whole */
		if (!c->fix)
			c->fix = event_new(c->srv->base, -1, 0, conn_fix, c);
		event_active(c->fix, EV_TIMEOUT, 0);
	}
}

/* Next loop turn after accept: evhttp has made the connection by now. */
static void attach(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	bufferevent_data_cb rcb = NULL;
	void *cbarg = NULL;
	bufferevent_getcb(c->bev, &rcb, NULL, NULL, &cbarg);
	struct bufferevent *bev = c->bev;
	if (!rcb || !cbarg) { /* evhttp already gave up on it */
		evbuffer_remove_cb(bufferevent_get_input(bev), conn_input, c);
		evbuffer_remove_cb(bufferevent_get_output(bev), conn_output, c);
		conn_unlink(c);
		bufferevent_decref(bev);
		return;
	}
	c->evcon = cbarg;
	c->attached = true;
	char key[32];
	conn_key(c->evcon, key);
	cr_map_put(&c->srv->by_evcon, key, c);
	evhttp_connection_set_closecb(c->evcon, conn_closed, c);
	bufferevent_decref(bev);
	struct cr_http_server *srv = c->srv;
	if (srv->nconns > srv->limits.max_connections) {
		char detail[160];
		snprintf(detail, sizeof(detail), "%d", srv->limits.max_connections);
		log_limited(&srv->cap_logged_ms,
			    "connection cap of %s reached: the oldest idle connections are closed "
			    "(raise --max-connections, or the open-files limit)", detail);
		if (!shed_oldest(srv, c))
			conn_cut(c); /* every other one is busy: this one goes */
	}
}

static struct bufferevent *new_bev(struct event_base *base, void *arg)
{
	struct cr_http_server *srv = arg;
	struct bufferevent *bev;
	if (srv->tls) { /* the handshake starts once evhttp hands it the socket */
		SSL *ssl = SSL_new(srv->tls);
		if (!ssl)
			abort();
		bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		if (bev) /* a client that just closes is a normal end, not an error */
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else {
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (!bev)
		abort();
	struct conn *c = cr_xcalloc(1, sizeof(*c));
	c->srv = srv;
	c->bev = bev;
	c->accepted_ms = cr_mono_ms();
	c->prev = srv->last;
	if (srv->last)
		srv->last->next = c;
	else
		srv->first = c;
	srv->last = c;
	srv->nconns++;
	evbuffer_add_cb(bufferevent_get_input(bev), conn_input, c);
	evbuffer_add_cb(bufferevent_get_output(bev), conn_output, c);
	bufferevent_incref(bev); /* kept valid until attach() has looked */
	c->attach = event_new(base, -1, 0, attach, c);
	event_active(c->attach, EV_TIMEOUT, 0);
	return bev;
}

/* A request was dispatched: busy until its reply is complete. */
static void req_complete(struct evhttp_request *ev, void *arg)
{
	struct conn *c = conn_of(arg, evhttp_request_get_connection(ev));
	if (!c)
		return;
	c->busy = false;
	c->stream = false;
	c->started_ms = 0;
	c->head_done_ms = 0;
	c->head_bytes = 0;
	memset(c->tail, 0, sizeof(c->tail));
}

static void conn_busy(struct cr_http_server *srv, struct evhttp_request *ev)
{
	struct conn *c = conn_of(srv, evhttp_request_get_connection(ev));
	if (!c)
		return;
	c->busy = true;
	evhttp_request_set_on_complete_cb(ev, req_complete, srv);
}

/* Once a second: cut requests past their deadlines. */
static void sweep(evutil_socket_t fd, short what, void *arg)
{
	struct cr_http_server *srv = arg;
	(void)fd;
	(void)what;
	int64_t now = cr_mono_ms();
	int64_t head_ms = (int64_t)srv->limits.header_timeout_s * 1000;
	int64_t body_ms = (int64_t)srv->limits.body_timeout_s * 1000;
	struct conn *next;
	for (struct conn *c = srv->first; c; c = next) {
		next = c->next;
		if (c->busy || !c->attached || !c->started_ms)
			continue;
		if ((!c->head_done_ms && now - c->started_ms > head_ms) || now - c->started_ms > body_ms) {
			cr_debug("cut a connection whose request did not arrive in time (%s deadline)",
				 c->head_done_ms ? "body" : "header");
			if (next && next->prev != c) /* paranoia: the list is only changed by conn_unlink */
				next = NULL;
			conn_cut(c);
		}
	}
}

static void resume_accepting(evutil_socket_t fd, short what, void *arg)
{
	struct cr_http_server *srv = arg;
	(void)fd;
	(void)what;
	for (int i = 0; i < srv->nlisteners; i++)
		evconnlistener_enable(srv->listeners[i]);
}

/* accept() failed (EMFILE, ENFILE, ENOBUFS): shed an idle connection, pause
 * accepting for 100 ms instead of spinning, and say so once. */
static void accept_failed(struct evconnlistener *lev, void *arg)
{
	struct cr_http_server *srv = arg;
	(void)lev;
	int e = EVUTIL_SOCKET_ERROR();
	log_limited(&srv->accept_logged_ms,
		    "accept() failed: %s; pausing new connections for 100 ms (raise the open-files limit, "
		    "or lower --max-connections)", strerror(e));
	shed_oldest(srv, NULL);
	for (int i = 0; i < srv->nlisteners; i++)
		evconnlistener_disable(srv->listeners[i]);
	struct timeval tv = { 0, 100000 };
	event_add(srv->resume, &tv);
}

long cr_http_raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 1048576 ? 1048576 : rl.rlim_max;
	if (rl.rlim_cur < want) {
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	return (long)rl.rlim_cur;
}

void cr_http_server_stop_accepting(struct cr_http_server *s)
{
	event_del(s->resume);
	for (int i = 0; i < s->nlisteners; i++)
		evconnlistener_disable(s->listeners[i]);
}

int cr_http_server_busy(const struct cr_http_server *s)
{
	int n = 0;
	for (const struct conn *c = s->first; c; c = c->next)
		n += c->busy && !c->stream;
	return n;
}

void cr_http_limits_defaults(struct cr_http_limits *l)
{
	struct rlimit rl;
	long fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 1024;
	l->max_body = 1 << 20;
	l->max_headers = 16 << 10;
	l->read_timeout_s = 60;
	l->header_timeout_s = 10;
	l->body_timeout_s = 60;
	/* each gateway request holds a client and an engine connection; keep
	 * 128 descriptors for the store, workers' probes and logs */
	long cap = (fds - 128) / 2;
	l->max_connections = cap < 16 ? 16 : cap > 1000000 ? 1000000 : (int)cap;
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
			req->ctx = req->srv->table_ctx[t];
			return r;
		}
	}
	return NULL;
}

static void dispatch(struct evhttp_request *ev, void *arg)
{
	struct cr_http_server *srv = arg;
	conn_busy(srv, ev);
	struct cr_req *req = cr_xcalloc(1, sizeof(*req));
	req->ev = ev;
	req->srv = srv;
	fill_peer(req);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(ev));
	req->path = cr_xstrdup(path && *path ? path : "/");
	for (int k = 0; k < srv->nstyles && !req->render; k++)
		if (!strncmp(req->path, srv->styles[k].prefix, strlen(srv->styles[k].prefix)))
			req->render = srv->styles[k].render;

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
	if (srv->guard) {
		struct cr_err err = CR_ERR_INIT;
		if (srv->guard(req, r, &err) != 0) {
			cr_reply_err(req, &err);
			return;
		}
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
	evhttp_set_max_body_size(s->http, (ev_ssize_t)hard_body_limit(limits));
	evhttp_set_max_headers_size(s->http, (ev_ssize_t)hard_header_limit(limits));
	evhttp_set_timeout(s->http, limits->read_timeout_s);
	/* no lingering close: a body over the hard limit is answered 413 at
	 * once instead of being read to its end */
	/* every method evhttp knows reaches dispatch, which answers 405 in JSON */
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_PATCH |
						    EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS |
						    EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
	evhttp_set_bevcb(s->http, new_bev, s);
	evhttp_set_gencb(s->http, dispatch, s);
	if (s->limits.header_timeout_s <= 0)
		s->limits.header_timeout_s = 10;
	if (s->limits.body_timeout_s <= 0)
		s->limits.body_timeout_s = 60;
	if (s->limits.max_connections <= 0) {
		struct cr_http_limits d;
		cr_http_limits_defaults(&d);
		s->limits.max_connections = d.max_connections;
	}
	s->sweep = event_new(base, -1, EV_PERSIST, sweep, s);
	struct timeval tv = { 1, 0 };
	event_add(s->sweep, &tv);
	s->resume = event_new(base, -1, 0, resume_accepting, s);
	return s;
}

void cr_http_server_set_tls(struct cr_http_server *s, SSL_CTX *ctx)
{
	SSL_CTX_free(s->tls);
	s->tls = ctx;
}

void cr_http_server_set_error_style(struct cr_http_server *s, const char *prefix, cr_http_error_render_cb render)
{
	if (s->nstyles == (int)(sizeof(s->styles) / sizeof(s->styles[0])))
		abort(); /* a programming error: more styles than any server has */
	snprintf(s->styles[s->nstyles].prefix, sizeof(s->styles[0].prefix), "%s", prefix);
	s->styles[s->nstyles++].render = render;
}

void cr_http_server_add_routes_ctx(struct cr_http_server *s, const struct cr_http_route *table, void *ctx)
{
	if (s->ntables == MAX_TABLES)
		abort();
	s->table_ctx[s->ntables] = ctx;
	s->tables[s->ntables++] = table;
}

void cr_http_server_set_guard(struct cr_http_server *s, cr_http_guard_cb guard)
{
	s->guard = guard;
}

void cr_http_server_add_routes(struct cr_http_server *s, const struct cr_http_route *table)
{
	cr_http_server_add_routes_ctx(s, table, s->app);
}

int cr_http_server_listen(struct cr_http_server *s, const char *host, int port, int *bound_port,
			  struct cr_err *err)
{
	struct evhttp_bound_socket *h = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
	if (!h)
		return cr_err_set(err, -EADDRINUSE, "stop the other process on that port or pick another with --port",
				  "cannot listen on %s:%d: %s", host, port, strerror(errno));
	evutil_socket_t fd = evhttp_bound_socket_get_fd(h);
	struct evconnlistener *lev = evhttp_bound_socket_get_listener(h);
	if (lev && s->nlisteners < (int)(sizeof(s->listeners) / sizeof(s->listeners[0]))) {
		evconnlistener_set_error_cb(lev, accept_failed);
		s->listeners[s->nlisteners++] = lev;
	}
	int one = 1; /* accepted sockets inherit it: small replies and SSE events go out at once */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		ss.ss_family = AF_UNSPEC;
	if (bound_port)
		*bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							     : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

void cr_http_server_free(struct cr_http_server *s)
{
	if (!s)
		return;
	evhttp_free(s->http); /* attached connections go through conn_closed */
	struct conn *next;
	for (struct conn *c = s->first; c; c = next) { /* accepted this loop turn, never attached */
		next = c->next;
		struct bufferevent *bev = c->bev;
		evbuffer_remove_cb(bufferevent_get_input(bev), conn_input, c);
		evbuffer_remove_cb(bufferevent_get_output(bev), conn_output, c);
		conn_unlink(c);
		bufferevent_decref(bev);
	}
	cr_map_release(&s->by_evcon);
	event_free(s->sweep);
	event_free(s->resume);
	SSL_CTX_free(s->tls);
	free(s);
}

/* ---- server-sent events ---- */

struct cr_stream {
	struct cr_http_server *srv;
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
	s->srv = req->srv;
	s->ev = req->ev;
	s->con = evhttp_request_get_connection(req->ev);
	s->on_close = on_close;
	s->arg = arg;
	struct evkeyvalq *h = evhttp_request_get_output_headers(req->ev);
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply_start(req->ev, 200, "OK");
	cr_http_conn_set_closecb(s->srv, s->con, stream_closed, s);
	struct conn *c = conn_of(s->srv, s->con);
	if (c)
		c->stream = true;
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

void cr_stream_event_id(struct cr_stream *s, long long id, const char *event, const char *data)
{
	char *text = cr_xasprintf("id: %lld\nevent: %s\ndata: %s\n\n", id, event, data);
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
	cr_http_conn_set_closecb(s->srv, s->con, NULL, NULL);
	evhttp_send_reply_end(s->ev);
	free(s);
}
