/* evhttp client probes, see probe.h. */
#include "http/probe.h"

#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/mem.h"

struct cr_probe {
	struct evhttp_connection *con;
	char *host;
	int timeout_s;
	cr_probe_cb cb;
	void *arg;
	enum evhttp_request_error last;
	int have_error;
};

struct cr_probe *cr_probe_new(struct event_base *base, const char *host, int port)
{
	struct cr_probe *p = cr_xcalloc(1, sizeof(*p));
	p->host = cr_xstrdup(host);
	p->con = evhttp_connection_base_new(base, NULL, host, (ev_uint16_t)port);
	if (!p->con)
		abort();
	evhttp_connection_set_retries(p->con, 0);
	return p;
}

static void on_error(enum evhttp_request_error e, void *arg)
{
	struct cr_probe *p = arg;
	p->last = e;
	p->have_error = 1;
}

static void on_done(struct evhttp_request *req, void *arg)
{
	struct cr_probe *p = arg;
	int status = req ? evhttp_request_get_response_code(req) : 0;
	char why[96] = "";
	if (status == 0) {
		if (p->have_error && p->last == EVREQ_HTTP_TIMEOUT)
			snprintf(why, sizeof(why), "timed out after %d s", p->timeout_s);
		else
			snprintf(why, sizeof(why), "connection refused, reset or closed");
	}
	cr_probe_cb cb = p->cb;
	p->cb = NULL;
	if (cb)
		cb(status, why, p->arg);
}

void cr_probe_get(struct cr_probe *p, const char *path, int timeout_s, cr_probe_cb cb, void *arg)
{
	p->cb = cb;
	p->arg = arg;
	p->timeout_s = timeout_s;
	p->have_error = 0;
	evhttp_connection_set_timeout(p->con, timeout_s);
	struct evhttp_request *req = evhttp_request_new(on_done, p);
	evhttp_request_set_error_cb(req, on_error);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host", p->host);
	/* One socket per probe, closed after it: thousands of idle kept-alive
	 * connections would cost more (descriptors, memory) than reconnecting. */
	evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
	if (evhttp_make_request(p->con, req, EVHTTP_REQ_GET, path) != 0) {
		p->cb = NULL;
		cb(0, "could not start the request", arg);
	}
}

void cr_probe_free(struct cr_probe *p)
{
	if (!p)
		return;
	evhttp_connection_free(p->con);
	free(p->host);
	free(p);
}
