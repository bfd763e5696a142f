/* gwload: load for the gateway benchmark. --conns keep-alive connections each
 * send POST PATH one after the other for --seconds (after --warmup), as
 * streams (--mode stream) or small JSON requests (--mode json), recording the
 * time to the first body byte and to the end of each answer. --mode idle opens
 * --conns streams that stay open after their first chunk, prints "ready" once
 * all have it, and holds them until stdin closes. Prints one JSON object:
 * {"requests","errors","seconds","ttfc_us":{"p50","p99"},"total_us":{...}}.
 * --tls speaks TLS to the port (the certificate is not checked: loopback, a
 * benchmark). */
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <getopt.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct conn;

struct load {
	struct event_base *base;
	const char *host, *path, *key;
	int port;
	char *body;
	bool idle;
	int64_t measure_from, measure_to;
	long requests, errors, ready, conns;
	int64_t *ttfc, *total;
	size_t n_lat, cap_lat;
};

struct conn {
	struct load *l;
	struct evhttp_connection *con;
	int64_t sent, first;
	bool counted_ready;
};

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void send_one(struct conn *c);

static void on_chunk(struct evhttp_request *req, void *arg)
{
	struct conn *c = arg;
	if (!c->first)
		c->first = now_us();
	evbuffer_drain(evhttp_request_get_input_buffer(req), evbuffer_get_length(evhttp_request_get_input_buffer(req)));
	if (c->l->idle && !c->counted_ready) {
		c->counted_ready = true;
		if (++c->l->ready == c->l->conns) {
			printf("ready\n");
			fflush(stdout);
		}
	}
}

static void on_done(struct evhttp_request *req, void *arg)
{
	struct conn *c = arg;
	struct load *l = c->l;
	int64_t t = now_us();
	bool ok = req && evhttp_request_get_response_code(req) == 200;
	if (c->sent >= l->measure_from && t <= l->measure_to) {
		if (!ok) {
			l->errors++;
		} else {
			l->requests++;
			if (l->n_lat == l->cap_lat) {
				l->cap_lat = l->cap_lat ? l->cap_lat * 2 : 4096;
				l->ttfc = realloc(l->ttfc, l->cap_lat * sizeof(int64_t));
				l->total = realloc(l->total, l->cap_lat * sizeof(int64_t));
				if (!l->ttfc || !l->total)
					abort();
			}
			l->ttfc[l->n_lat] = (c->first ? c->first : t) - c->sent;
			l->total[l->n_lat++] = t - c->sent;
		}
	}
	if (t < l->measure_to)
		send_one(c);
}

static void send_one(struct conn *c)
{
	struct load *l = c->l;
	struct evhttp_request *req = evhttp_request_new(on_done, c);
	evhttp_request_set_chunked_cb(req, on_chunk);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", l->host);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Authorization", l->key);
	evbuffer_add(evhttp_request_get_output_buffer(req), l->body, strlen(l->body));
	c->first = 0;
	c->sent = now_us();
	if (evhttp_make_request(c->con, req, EVHTTP_REQ_POST, l->path) != 0) {
		fprintf(stderr, "gwload: request failed to start\n");
		exit(1);
	}
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int64_t pct(int64_t *v, size_t n, double p)
{
	if (!n)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i];
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
	char buf[64];
	(void)what;
	if (read(fd, buf, sizeof(buf)) <= 0)
		event_base_loopbreak(arg);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "host", 1, 0, 'H' },    { "port", 1, 0, 'p' },   { "path", 1, 0, 'P' },  { "key", 1, 0, 'k' },
		{ "conns", 1, 0, 'c' },   { "seconds", 1, 0, 's' }, { "warmup", 1, 0, 'w' }, { "mode", 1, 0, 'm' },
		{ "model", 1, 0, 'M' },   { "tls", 0, 0, 'T' },       { 0, 0, 0, 0 },
	};
	struct load l = { .host = "127.0.0.1", .path = "/v1/chat/completions", .key = "Bearer none" };
	const char *mode = "stream", *model = "bench";
	SSL_CTX *tls = NULL;
	double seconds = 5, warmup = 1;
	int ch;
	char keybuf[300];
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'H': l.host = optarg; break;
		case 'p': l.port = (int)strtol(optarg, NULL, 10); break;
		case 'P': l.path = optarg; break;
		case 'k': snprintf(keybuf, sizeof(keybuf), "Bearer %s", optarg); l.key = keybuf; break;
		case 'c': l.conns = strtol(optarg, NULL, 10); break;
		case 's': seconds = strtod(optarg, NULL); break;
		case 'w': warmup = strtod(optarg, NULL); break;
		case 'm': mode = optarg; break;
		case 'M': model = optarg; break;
		case 'T':
			tls = SSL_CTX_new(TLS_client_method());
			SSL_CTX_set_verify(tls, SSL_VERIFY_NONE, NULL);
			break;
		default: fprintf(stderr, "see the comment at the top of bench/gwload.c\n"); return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	l.idle = !strcmp(mode, "idle");
	char body[512];
	snprintf(body, sizeof(body),
		 "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],\"max_tokens\":200%s%s}", model,
		 strcmp(mode, "json") ? ",\"stream\":true" : "", l.idle ? ",\"bench_hold\":true" : "");
	l.body = body;
	l.base = event_base_new();
	int64_t start = now_us();
	l.measure_from = l.idle ? 0 : start + (int64_t)(warmup * 1e6);
	l.measure_to = l.idle ? INT64_MAX : l.measure_from + (int64_t)(seconds * 1e6);
	struct conn *cs = calloc((size_t)l.conns, sizeof(*cs));
	for (long i = 0; i < l.conns; i++) {
		cs[i].l = &l;
		if (tls) {
			struct bufferevent *bev = bufferevent_openssl_socket_new(l.base, -1, SSL_new(tls),
										 BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
			cs[i].con = evhttp_connection_base_bufferevent_new(l.base, NULL, bev, l.host, (ev_uint16_t)l.port);
		} else {
			cs[i].con = evhttp_connection_base_new(l.base, NULL, l.host, (ev_uint16_t)l.port);
		}
		evhttp_connection_set_retries(cs[i].con, 0);
		evhttp_connection_set_timeout(cs[i].con, 600);
		send_one(&cs[i]);
	}
	struct event *stop;
	if (l.idle) {
		stop = event_new(l.base, 0, EV_READ | EV_PERSIST, on_stdin, l.base);
		event_add(stop, NULL);
	} else {
		stop = event_new(l.base, -1, 0, on_stop, l.base);
		struct timeval tv = { (time_t)(warmup + seconds) + 1, 0 };
		event_add(stop, &tv);
	}
	event_base_dispatch(l.base);
	double secs = l.idle ? 0 : seconds;
	qsort(l.ttfc, l.n_lat, sizeof(int64_t), cmp64);
	qsort(l.total, l.n_lat, sizeof(int64_t), cmp64);
	printf("{\"requests\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"ready\":%ld,"
	       "\"ttfc_us\":{\"p50\":%lld,\"p99\":%lld},\"total_us\":{\"p50\":%lld,\"p99\":%lld}}\n",
	       l.requests, l.errors, secs, l.ready, (long long)pct(l.ttfc, l.n_lat, 0.5),
	       (long long)pct(l.ttfc, l.n_lat, 0.99), (long long)pct(l.total, l.n_lat, 0.5),
	       (long long)pct(l.total, l.n_lat, 0.99));
	return 0;
}
