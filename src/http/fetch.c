/* evhttp GET with the body collected, see fetch.h. */
#include "http/fetch.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/mem.h"

struct fetch {
	struct evhttp_connection *con;
	cr_fetch_cb cb;
	void *arg;
	int timeout_s;
	enum evhttp_request_error failed;
	bool has_failed;
};

#define FETCH_MAX_BODY (4u << 20)

static void free_con(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	evhttp_connection_free(arg);
}

static void on_error(enum evhttp_request_error e, void *arg)
{
	struct fetch *f = arg;
	f->failed = e;
	f->has_failed = true;
}

static void on_done(struct evhttp_request *req, void *arg)
{
	struct fetch *f = arg;
	int status = req ? evhttp_request_get_response_code(req) : 0;
	struct evbuffer *in = req ? evhttp_request_get_input_buffer(req) : NULL;
	size_t len = in ? evbuffer_get_length(in) : 0;
	char why[96] = "";
	bool too_long = f->has_failed && f->failed == EVREQ_HTTP_DATA_TOO_LONG;
	if (status == 0 || too_long) /* evhttp stopped reading at the limit: nothing more was taken in */
		snprintf(why, sizeof(why), "%s",
			 too_long ? "answer larger than 4 MiB"
			 : f->has_failed && f->failed == EVREQ_HTTP_TIMEOUT ? "timed out"
									  : "connection refused, reset or closed");
	if (too_long) {
		status = 0;
		len = 0;
	}
	char *body = cr_xmalloc(len + 1);
	if (len)
		evbuffer_copyout(in, body, len);
	body[len] = '\0';
	f->cb(status, body, len, why, f->arg);
	free(body);
	/* the connection cannot be freed inside its own callback */
	event_base_once(evhttp_connection_get_base(f->con), -1, EV_TIMEOUT, free_con, f->con, NULL);
	free(f);
}

static void fetch(struct event_base *base, enum evhttp_cmd_type method, const char *host, int port, const char *path,
		  const char *bearer, const char *body, int timeout_s, cr_fetch_cb cb, void *arg)
{
	struct fetch *f = cr_xcalloc(1, sizeof(*f));
	f->cb = cb;
	f->arg = arg;
	f->timeout_s = timeout_s;
	f->con = evhttp_connection_base_new(base, NULL, host, (ev_uint16_t)port);
	if (!f->con)
		abort();
	evhttp_connection_set_retries(f->con, 0);
	evhttp_connection_set_timeout(f->con, timeout_s);
	evhttp_connection_set_max_body_size(f->con, FETCH_MAX_BODY);
	evhttp_connection_set_max_headers_size(f->con, 64 << 10);
	struct evhttp_request *req = evhttp_request_new(on_done, f);
	evhttp_request_set_error_cb(req, on_error);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", host);
	evhttp_add_header(h, "Connection", "close");
	if (bearer) {
		char *auth = cr_xasprintf("Bearer %s", bearer);
		evhttp_add_header(h, "Authorization", auth);
		free(auth);
	}
	if (body) {
		evhttp_add_header(h, "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
	}
	if (evhttp_make_request(f->con, req, method, path) != 0) {
		cb(0, "", 0, "could not start the request", arg);
		evhttp_connection_free(f->con);
		free(f);
	}
}

void cr_http_fetch(struct event_base *base, const char *host, int port, const char *path, const char *bearer,
		   int timeout_s, cr_fetch_cb cb, void *arg)
{
	fetch(base, EVHTTP_REQ_GET, host, port, path, bearer, NULL, timeout_s, cb, arg);
}

void cr_http_fetch_post(struct event_base *base, const char *host, int port, const char *path, const char *bearer,
			const char *body, int timeout_s, cr_fetch_cb cb, void *arg)
{
	fetch(base, EVHTTP_REQ_POST, host, port, path, bearer, body, timeout_s, cb, arg);
}
