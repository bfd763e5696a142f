/* The gateway's relay on evhttp's client side: pooled keep-alive connections
 * per upstream, the answer relayed chunk by chunk as evhttp reads it, one
 * timer per relay for the connect, first-byte and idle limits. See relay.h. */
#include "http/relay.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/map.h"
#include "base/mem.h"
#include "base/util.h"
#include "http/server_impl.h"

/* ---- pool ---- */

struct idle_con {
	struct evhttp_connection *con;
	int64_t since_ms;
};

struct target_pool {
	struct idle_con *v;
	size_t n, cap;
};

struct cr_relay_pool {
	struct event_base *base;
	struct cr_map targets; /* "host:port" -> target_pool */
	int max_idle;
	int64_t idle_ms;
	struct event *sweep;
	uint64_t opened, reused;
};

static void free_con_later_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	evhttp_connection_free(arg);
}

/* Free a connection outside the callbacks evhttp may be running for it. */
static void free_con_later(struct event_base *base, struct evhttp_connection *con)
{
	if (con)
		event_base_once(base, -1, EV_TIMEOUT, free_con_later_cb, con, NULL);
}

static void pool_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct cr_relay_pool *p = arg;
	(void)fd;
	(void)what;
	int64_t now = cr_mono_ms();
	size_t it = 0;
	void *v;
	while (cr_map_next(&p->targets, &it, NULL, &v)) {
		struct target_pool *t = v;
		size_t keep = 0;
		for (size_t i = 0; i < t->n; i++) {
			if (now - t->v[i].since_ms >= p->idle_ms)
				evhttp_connection_free(t->v[i].con);
			else
				t->v[keep++] = t->v[i];
		}
		t->n = keep;
	}
}

struct cr_relay_pool *cr_relay_pool_new(struct event_base *base, int max_idle, int idle_s)
{
	struct cr_relay_pool *p = cr_xcalloc(1, sizeof(*p));
	p->base = base;
	p->max_idle = max_idle > 0 ? max_idle : 0;
	p->idle_ms = (int64_t)(idle_s > 0 ? idle_s : 1) * 1000;
	p->sweep = event_new(base, -1, EV_PERSIST, pool_sweep, p);
	struct timeval tv = { 1, 0 };
	event_add(p->sweep, &tv);
	return p;
}

void cr_relay_pool_stats(const struct cr_relay_pool *p, uint64_t *opened, uint64_t *reused)
{
	*opened = p->opened;
	*reused = p->reused;
}

void cr_relay_pool_free(struct cr_relay_pool *p)
{
	if (!p)
		return;
	size_t it = 0;
	void *v;
	while (cr_map_next(&p->targets, &it, NULL, &v)) {
		struct target_pool *t = v;
		for (size_t i = 0; i < t->n; i++)
			evhttp_connection_free(t->v[i].con);
		free(t->v);
		free(t);
	}
	cr_map_release(&p->targets);
	event_free(p->sweep);
	free(p);
}

static void target_key(const struct cr_relay_target *t, char *key, size_t n)
{
	snprintf(key, n, "%s:%d", t->host, t->port);
}

/* An idle connection to t (*reused = true), or a new one (always with
 * fresh: the pool's connections to t may all be closed by now). */
static struct evhttp_connection *pool_get(struct cr_relay_pool *p, const struct cr_relay_target *t, bool fresh,
					  bool *reused)
{
	char key[300];
	target_key(t, key, sizeof(key));
	struct target_pool *tp = fresh ? NULL : cr_map_get(&p->targets, key);
	int64_t now = cr_mono_ms();
	while (tp && tp->n) {
		struct idle_con ic = tp->v[--tp->n]; /* the most recently used: likely still open */
		if (now - ic.since_ms >= p->idle_ms) { /* the engine may be closing it right now */
			free_con_later(p->base, ic.con);
			continue;
		}
		*reused = true;
		p->reused++;
		return ic.con;
	}
	*reused = false;
	p->opened++;
	struct evhttp_connection *con = evhttp_connection_base_new(p->base, NULL, t->host, (ev_uint16_t)t->port);
	if (!con)
		abort();
	evhttp_connection_set_retries(con, 0);
	return con;
}

static void pool_put(struct cr_relay_pool *p, const struct cr_relay_target *t, struct evhttp_connection *con)
{
	char key[300];
	target_key(t, key, sizeof(key));
	struct target_pool *tp = cr_map_get(&p->targets, key);
	if (!tp) {
		tp = cr_xcalloc(1, sizeof(*tp));
		cr_map_put(&p->targets, key, tp);
	}
	if ((int)tp->n >= p->max_idle) {
		free_con_later(p->base, con);
		return;
	}
	if (tp->n == tp->cap) {
		tp->cap = tp->cap ? tp->cap * 2 : 8;
		tp->v = cr_xrealloc(tp->v, tp->cap * sizeof(*tp->v));
	}
	tp->v[tp->n++] = (struct idle_con){ con, cr_mono_ms() };
}

/* ---- relay ---- */

enum phase { PH_CONNECT, PH_FIRST_BYTE, PH_BODY };

struct relay {
	struct cr_http_server *srv;
	struct evhttp_request *client;
	struct evhttp_connection *client_con;
	struct event_base *base;
	struct cr_relay_opts o;
	struct evhttp_connection *up_con;
	struct evhttp_request *up;
	struct cr_relay_target target;
	struct event *timer;
	char *path, *body;
	size_t len;
	int attempt;
	enum phase phase;
	bool started, finished, reached, reused, sse, buffering, header_error, flush_queued;
	bool unreachable; /* the last attempt could not connect */
	bool fresh;       /* the last attempt's pooled connection was dead: open a new one */
	int status;
	char *status_line;
	char *content_type;
	struct evbuffer *whole; /* the answer being read whole, for check */
	struct evbuffer *pending; /* chunks read in this loop turn, sent together */
	struct event *flush;
	int64_t t_sent, t_last;
	uint64_t bytes;
};

static void set_nodelay(struct evhttp_connection *con)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(con);
	int one = 1;
	if (bev && bufferevent_getfd(bev) >= 0)
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Stop hearing about the client's connection. Called before every call that
 * ends the client's reply: with HTTP/1.0 (or "Connection: close") ending it
 * may free the connection at once, and its close callback must not then
 * finish this relay behind the caller's back. */
static void release_client(struct relay *r)
{
	if (r->client_con) {
		cr_http_conn_set_closecb(r->srv, r->client_con, NULL, NULL);
		r->client_con = NULL;
	}
}

static void relay_finish(struct relay *r, int status, const char *error)
{
	if (r->finished)
		return;
	r->finished = true;
	release_client(r);
	event_free(r->timer);
	free_con_later(r->base, r->up_con);
	r->o.done(r->o.arg, status, r->bytes, error);
	if (r->whole)
		evbuffer_free(r->whole);
	if (r->pending)
		evbuffer_free(r->pending);
	if (r->flush)
		event_free(r->flush);
	free(r->status_line);
	free(r->content_type);
	free(r->path);
	free(r->body);
	free(r);
}

/* Drop the upstream request and its connection (never pooled after this). */
static void relay_abandon_upstream(struct relay *r)
{
	if (r->up) {
		evhttp_cancel_request(r->up);
		r->up = NULL;
	}
	free_con_later(r->base, r->up_con);
	r->up_con = NULL;
}

static void flush_pending(struct relay *r);

/* A failure before any byte of an answer: an error in the caller's shape. */
static void reply_error(struct relay *r, int status, const char *code, const char *message)
{
	json_t *e = r->o.error(status, code, message, NULL);
	char *text = json_dumps(e, JSON_COMPACT);
	json_decref(e);
	struct evbuffer *b = evbuffer_new();
	evbuffer_add_printf(b, "%s\n", text);
	free(text);
	release_client(r);
	evhttp_add_header(evhttp_request_get_output_headers(r->client), "Content-Type", "application/json");
	evhttp_send_reply(r->client, status, status == 504 ? "Gateway Timeout" : "Bad Gateway", b);
	evbuffer_free(b);
	relay_finish(r, status, message);
}

/* End a streamed answer: what this loop turn read, what the data callback
 * still holds, then last (NULL: nothing) and the end of the chunked reply. */
static void end_answer(struct relay *r, const char *last)
{
	if (r->flush_queued)
		flush_pending(r);
	struct evbuffer *b = evbuffer_new();
	if (r->o.data)
		r->o.data(r->o.arg, b, true);
	r->bytes += evbuffer_get_length(b);
	if (last)
		evbuffer_add(b, last, strlen(last));
	if (evbuffer_get_length(b))
		evhttp_send_reply_chunk(r->client, b);
	evbuffer_free(b);
	release_client(r);
	evhttp_send_reply_end(r->client);
}

/* A failure mid-answer: a last SSE event naming it (for streams), then end. */
static void cut_answer(struct relay *r, const char *code, const char *message)
{
	if (!r->started) { /* still being read whole: nothing went out yet */
		reply_error(r, 502, code, message);
		return;
	}
	char *event = NULL;
	if (r->sse) {
		json_t *e = r->o.error(502, code, message, NULL);
		char *text = json_dumps(e, JSON_COMPACT);
		json_decref(e);
		event = cr_xasprintf("data: %s\n\n", text);
		free(text);
	}
	end_answer(r, event);
	free(event);
	relay_finish(r, 502, message);
}

static void relay_client_closed(struct evhttp_connection *con, void *arg)
{
	struct relay *r = arg;
	(void)con;
	r->client_con = NULL; /* being freed by evhttp */
	relay_abandon_upstream(r); /* the engine stops generating */
	if (r->started && !evhttp_request_get_connection(r->client))
		evhttp_send_reply_end(r->client); /* frees the detached request */
	relay_finish(r, 0, "the client went away");
}

static void arm(struct relay *r, int64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
	event_add(r->timer, &tv);
}

/* Send the status line and headers of the answer to the client. */
static void start_reply(struct relay *r)
{
	r->started = true;
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->client);
	evhttp_add_header(h, "Content-Type", r->content_type ? r->content_type : "application/json");
	if (r->sse)
		evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply_start(r->client, r->status, r->status_line ? r->status_line : "OK");
}

static void relay_chunk(struct evhttp_request *up, void *arg)
{
	struct relay *r = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(up);
	r->t_last = cr_mono_ms();
	if (r->phase != PH_BODY) { /* the first bytes of the answer */
		r->phase = PH_BODY;
		arm(r, r->o.idle_timeout_ms);
		r->status = evhttp_request_get_response_code(up);
		const char *line = evhttp_request_get_response_code_line(up);
		r->status_line = cr_xstrdup(line ? line : "OK");
		const char *ct = evhttp_find_header(evhttp_request_get_input_headers(up), "Content-Type");
		r->content_type = ct ? cr_xstrdup(ct) : NULL;
		r->sse = ct && strstr(ct, "event-stream");
		r->buffering = r->o.head && r->o.head(r->o.arg, r->status, ct);
		if (r->buffering)
			r->whole = evbuffer_new();
		else
			start_reply(r);
	}
	if (r->buffering) {
		evbuffer_add_buffer(r->whole, in);
		if (evbuffer_get_length(r->whole) <= r->o.max_check)
			return;
		r->buffering = false; /* too long to hold: relay it unchecked */
		start_reply(r);
		evbuffer_prepend_buffer(in, r->whole);
	}
	if (!r->started)
		start_reply(r);
	/* evhttp calls this once per upstream chunk, often many per read: they
	 * go out as one chunk when this loop turn's callbacks are done */
	evbuffer_add_buffer(r->pending, in);
	if (!r->flush_queued) {
		r->flush_queued = true;
		event_active(r->flush, EV_TIMEOUT, 0);
	}
}

/* Send what this loop turn read (after the data callback had its look). */
static void flush_pending(struct relay *r)
{
	r->flush_queued = false;
	if (r->o.data)
		r->o.data(r->o.arg, r->pending, false);
	size_t n = evbuffer_get_length(r->pending);
	if (n) { /* an empty chunk would end the chunked reply */
		r->bytes += n;
		evhttp_send_reply_chunk(r->client, r->pending);
	}
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	(void)fd;
	(void)what;
	if (r->flush_queued)
		flush_pending(r);
}

static void relay_attempt(struct relay *r);

static void relay_error_cb(enum evhttp_request_error e, void *arg)
{
	struct relay *r = arg;
	r->reached = true; /* evhttp reports errors this way only once connected */
	r->header_error = e == EVREQ_HTTP_INVALID_HEADER;
}

static void relay_done(struct evhttp_request *up, void *arg)
{
	struct relay *r = arg;
	int status = up ? evhttp_request_get_response_code(up) : 0;
	char msg[512];
	r->up = NULL;
	if (status == 0 && !r->started) {
		free_con_later(r->base, r->up_con);
		r->up_con = NULL;
		if (!r->reached || (r->reused && r->phase != PH_BODY && !r->header_error)) {
			r->unreachable = !r->reached;
			r->fresh = r->reached && r->reused;
			r->attempt++; /* the request never reached it: another may take it */
			relay_attempt(r);
			return;
		}
		snprintf(msg, sizeof(msg),
			 r->header_error ? "the instance at %s:%d answered with something that is not HTTP; see 'corral logs'"
			 : r->phase == PH_BODY ? "the instance at %s:%d broke off its answer; see 'corral logs'"
			 : "the instance at %s:%d closed the connection without answering (it may have crashed); "
			   "see 'corral instances' and 'corral logs'",
			 r->target.host, r->target.port);
		reply_error(r, 502, "upstream_error", msg);
		return;
	}
	if (status == 0) { /* the engine broke off mid-answer */
		free_con_later(r->base, r->up_con);
		r->up_con = NULL;
		cut_answer(r, "upstream_closed", "the engine closed the connection mid-answer");
		return;
	}
	pool_put(r->o.pool, &r->target, r->up_con); /* whole answer read: the connection can serve another */
	r->up_con = NULL;
	if (r->phase != PH_BODY) { /* an answer without a body */
		if (r->o.head)
			r->o.head(r->o.arg, status, NULL);
		release_client(r);
		evhttp_send_reply(r->client, status, evhttp_request_get_response_code_line(up), NULL);
		relay_finish(r, status, NULL);
		return;
	}
	if (r->buffering) {
		if (r->o.check(r->o.arg, r->whole, msg, sizeof(msg)) != 0) {
			reply_error(r, 502, "upstream_invalid", msg);
			return;
		}
		r->bytes = evbuffer_get_length(r->whole);
		evhttp_add_header(evhttp_request_get_output_headers(r->client), "Content-Type",
				  r->content_type ? r->content_type : "application/json");
		release_client(r);
		evhttp_send_reply(r->client, status, r->status_line, r->whole);
		relay_finish(r, status, NULL);
		return;
	}
	end_answer(r, NULL);
	relay_finish(r, status, NULL);
}

static bool connected(struct evhttp_connection *con)
{
	struct bufferevent *bev = con ? evhttp_connection_get_bufferevent(con) : NULL;
	int fd = bev ? bufferevent_getfd(bev) : -1;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	return fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0;
}

static void relay_timer(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	(void)fd;
	(void)what;
	int64_t now = cr_mono_ms();
	char msg[400];
	switch (r->phase) {
	case PH_CONNECT:
		if (connected(r->up_con)) {
			r->phase = PH_FIRST_BYTE;
			arm(r, r->o.first_byte_timeout_ms - (now - r->t_sent));
			return;
		}
		relay_abandon_upstream(r); /* not connected in time: try another */
		r->unreachable = true;
		r->attempt++;
		relay_attempt(r);
		return;
	case PH_FIRST_BYTE:
		relay_abandon_upstream(r);
		snprintf(msg, sizeof(msg),
			 "the instance at %s:%d did not start answering within %d ms; raise the server's "
			 "--gateway-first-byte-timeout for long prompts, or see 'corral logs'",
			 r->target.host, r->target.port, r->o.first_byte_timeout_ms);
		reply_error(r, 504, "upstream_timeout", msg);
		return;
	case PH_BODY:
		if (now - r->t_last < r->o.idle_timeout_ms) {
			arm(r, r->o.idle_timeout_ms - (now - r->t_last));
			return;
		}
		relay_abandon_upstream(r);
		snprintf(msg, sizeof(msg), "the engine sent nothing for %d ms mid-answer (--gateway-idle-timeout)",
			 r->o.idle_timeout_ms);
		cut_answer(r, "upstream_timeout", msg);
		return;
	}
}

static void relay_attempt(struct relay *r)
{
	memset(&r->target, 0, sizeof(r->target));
	if (r->o.pick(r->o.arg, r->attempt, r->unreachable, &r->target) != 0) {
		reply_error(r, 502, "upstream_error",
			    r->attempt ? "no instance of the model could be reached; see 'corral instances'"
				       : "no instance of the model is running; see 'corral instances'");
		return;
	}
	r->reached = false;
	r->header_error = false;
	r->up_con = pool_get(r->o.pool, &r->target, r->fresh, &r->reused);
	r->fresh = false;
	int limit_s = (r->o.first_byte_timeout_ms > r->o.idle_timeout_ms ? r->o.first_byte_timeout_ms
									 : r->o.idle_timeout_ms) / 1000 + 5;
	evhttp_connection_set_timeout(r->up_con, limit_s); /* a backstop; the timer below decides */
	r->up = evhttp_request_new(relay_done, r);
	evhttp_request_set_chunked_cb(r->up, relay_chunk);
	evhttp_request_set_error_cb(r->up, relay_error_cb);
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->up);
	evhttp_add_header(h, "Host", r->target.host);
	evhttp_add_header(h, "Content-Type", "application/json");
	if (r->target.key[0]) {
		char auth[160];
		snprintf(auth, sizeof(auth), "Bearer %s", r->target.key);
		evhttp_add_header(h, "Authorization", auth);
	}
	evbuffer_add(evhttp_request_get_output_buffer(r->up), r->body, r->len);
	r->phase = PH_CONNECT;
	r->t_sent = cr_mono_ms();
	if (evhttp_make_request(r->up_con, r->up, EVHTTP_REQ_POST, r->path) != 0) {
		r->up = NULL; /* freed by evhttp */
		relay_done(NULL, r);
		return;
	}
	if (!r->reused)
		set_nodelay(r->up_con);
	arm(r, r->o.connect_timeout_ms);
}

void cr_relay(struct cr_req *req, const char *path, const char *body, size_t len, const struct cr_relay_opts *o)
{
	struct relay *r = cr_xcalloc(1, sizeof(*r));
	r->client = req->ev;
	r->client_con = evhttp_request_get_connection(req->ev);
	r->base = evhttp_connection_get_base(r->client_con);
	r->o = *o;
	if (r->o.connect_timeout_ms <= 0)
		r->o.connect_timeout_ms = 5000;
	if (r->o.first_byte_timeout_ms <= 0)
		r->o.first_byte_timeout_ms = 600000;
	if (r->o.idle_timeout_ms <= 0)
		r->o.idle_timeout_ms = 600000;
	r->path = cr_xstrdup(path);
	r->body = cr_xmalloc(len + 1);
	memcpy(r->body, body, len);
	r->len = len;
	struct evbuffer *in = evhttp_request_get_input_buffer(req->ev);
	evbuffer_drain(in, evbuffer_get_length(in)); /* copied: its read-sized chain is not kept for the stream */
	r->timer = event_new(r->base, -1, 0, relay_timer, r);
	r->flush = event_new(r->base, -1, 0, flush_cb, r);
	r->pending = evbuffer_new();
	r->srv = req->srv;
	cr_http_conn_set_closecb(r->srv, r->client_con, relay_client_closed, r); /* TCP_NODELAY: from the listener */
	cr_req_release(req);
	relay_attempt(r);
}
