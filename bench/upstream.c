/* upstream: a fast stand-in inference engine for the gateway benchmark.
 * GET /health answers {"status":"ok"}; POST answers like an OpenAI server:
 * a small chat.completion JSON, or with "stream":true a text/event-stream of
 * --chunks chunk events (each ~150 bytes, one write each), a usage chunk when
 * stream_options.include_usage is asked for, and "data: [DONE]". With
 * "bench_hold":true in the body a stream sends its first chunk and then
 * stays open (idle streams). Usage: upstream --port P [--host H] [--chunks N] */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_chunks = 200;

static const char chunk_fmt[] =
	"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
	"\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok%d\"},\"finish_reason\":null}]}\n\n";

static bool body_has(struct evbuffer *b, const char *needle)
{
	return evbuffer_search(b, needle, strlen(needle), NULL).pos >= 0;
}

static void handle(struct evhttp_request *req, void *arg)
{
	(void)arg;
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct evbuffer *out = evbuffer_new();
	if (evhttp_request_get_command(req) == EVHTTP_REQ_GET) {
		evhttp_add_header(h, "Content-Type", "application/json");
		evbuffer_add_printf(out, "{\"status\":\"ok\"}");
		evhttp_send_reply(req, 200, "OK", out);
		evbuffer_free(out);
		return;
	}
	bool stream = body_has(in, "\"stream\":true") || body_has(in, "\"stream\": true");
	if (!stream) {
		evhttp_add_header(h, "Content-Type", "application/json");
		evbuffer_add_printf(out, "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,"
					 "\"model\":\"bench\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
					 "\"content\":\"hello from the bench upstream\"},\"finish_reason\":\"stop\"}],"
					 "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19}}");
		evhttp_send_reply(req, 200, "OK", out);
		evbuffer_free(out);
		return;
	}
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_send_reply_start(req, 200, "OK");
	if (body_has(in, "\"bench_hold\":true")) { /* one chunk, then idle until the client goes */
		evbuffer_add_printf(out, chunk_fmt, 0);
		evhttp_send_reply_chunk(req, out);
		evbuffer_free(out);
		return;
	}
	for (int i = 0; i < n_chunks; i++) {
		evbuffer_add_printf(out, chunk_fmt, i);
		evhttp_send_reply_chunk(req, out);
	}
	if (body_has(in, "\"include_usage\":true"))
		evbuffer_add_printf(out, "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
					 "\"created\":1700000000,\"model\":\"bench\",\"choices\":[],\"usage\":"
					 "{\"prompt_tokens\":12,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\n",
				    n_chunks, n_chunks + 12);
	evbuffer_add_printf(out, "data: [DONE]\n\n");
	evhttp_send_reply_chunk(req, out);
	evhttp_send_reply_end(req);
	evbuffer_free(out);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = { { "port", 1, 0, 'p' }, { "host", 1, 0, 'H' }, { "chunks", 1, 0, 'c' },
					    { "version", 0, 0, 'v' }, { 0, 0, 0, 0 } };
	const char *host = "127.0.0.1";
	int port = 0, ch;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'p': port = (int)strtol(optarg, NULL, 10); break;
		case 'H': host = optarg; break;
		case 'c': n_chunks = (int)strtol(optarg, NULL, 10); break;
		case 'v': puts("bench-upstream 1.0"); return 0;
		default: fprintf(stderr, "usage: upstream --port P [--host H] [--chunks N]\n"); return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	struct event_base *base = event_base_new();
	struct evhttp *http = evhttp_new(base);
	evhttp_set_gencb(http, handle, NULL);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	if (evhttp_bind_socket(http, host, (ev_uint16_t)port) != 0) {
		fprintf(stderr, "upstream: cannot listen on %s:%d\n", host, port);
		return 1;
	}
	event_base_dispatch(base);
	return 0;
}
