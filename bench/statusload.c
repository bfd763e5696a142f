/* statusload: simulates N workers, each with 8 GPUs, sending status reports
 * to a real corral server at a fixed interval, while measuring the latency
 * of GET /api/workers/{id}. It also serves /healthz for the simulated workers
 * so that the server's reachability probes succeed, as in a real cluster.
 * Prints one JSON object with the figures; see bench/README.md. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <unistd.h>

#include "checks/report.h"
#include "base/json.h"
#include "base/mem.h"
#include "base/util.h"
#include "http/client.h"

struct sim {
	char *id, *secret;
};

struct bench {
	struct event_base *base;
	const char *host;
	int port;
	const char *admin_token;
	struct sim *sims;
	int n, interval_s, nconn;
	char **bodies; /* full report bodies, differing in utilisation */
	char **light;  /* light report bodies (the dynamic half), as corral worker sends between full ones */
	long *count;   /* reports sent per simulated worker: every 12th is full */
	struct evhttp_connection **conns;
	struct evhttp_connection **conns2; /* --also-url: the odd workers report there */
	const char *host2;
	int next_sim;
	long sent, done, failed;
	double per_tick;
	double carry;
	struct evhttp_connection *get_conn;
	double *lat;
	size_t nlat, cap_lat;
	int64_t get_started;
	bool measuring;
};

static char *report_body(int i)
{
	json_t *gpus = json_array();
	for (int g = 0; g < 8; g++)
		json_array_append_new(gpus, json_pack("{s:i,s:s,s:i,s:s,s:s,s:I,s:I,s:I,s:i,s:i,s:f,s:f,s:s,s:s,s:[],s:s}",
						      "index", g, "vendor", "nvidia", "vendor_index", g, "name",
						      "NVIDIA H100 80GB HBM3", "uuid", "GPU-5c0f1a2e-77b3-4d8e-9a61-0000000000",
						      "memory_total", (json_int_t)85899345920, "memory_used",
						      (json_int_t)(g * 1073741824LL), "memory_free",
						      (json_int_t)(85899345920LL - g * 1073741824LL), "utilization",
						      (i + g) % 100, "temperature", 40 + g, "power_draw_w", 312.5,
						      "power_limit_w", 700.0, "compute_capability", "9.0", "pci_bus_id",
						      "00000000:17:00.0", "processes", "source", "nvml"));
	json_t *r = json_pack(
		"{s:{s:{s:s,s:i,s:s},s:{s:I,s:I},s:{s:I,s:I},s:{s:s,s:I,s:I},s:I,s:{s:s,s:s},s:s,s:i,s:[ii]},"
		"s:o,s:{s:{s:s,s:s,s:i}},s:[],s:i}",
		"system", "cpu", "model", "AMD EPYC 9654 96-Core Processor", "cores", 192, "arch", "x86_64", "memory",
		"total", (json_int_t)2199023255552LL, "available", (json_int_t)1099511627776LL, "swap", "total",
		(json_int_t)0, "free", (json_int_t)0, "disk", "path", "/var/lib/corral/worker", "total",
		(json_int_t)3840755982336LL, "free", (json_int_t)1920377991168LL, "shm_bytes",
		(json_int_t)1099511627776LL, "os", "name", "Debian GNU/Linux 12 (bookworm)", "kernel", "6.1.0-18-amd64",
		"hostname", "gpu-node-0001", "uptime_s", 123456, "ephemeral_ports", 32768, 60999, "gpus", gpus,
		"drivers", "nvidia", "driver_version", "550.54.15", "cuda_driver_version", "12.4", "gpu_count", 8,
		"notes", "status_interval_s", 5);
	json_object_set_new(r, "base", json_integer(1));
	char *s = cr_json_dump(r);
	json_decref(r);
	return s;
}

static char *light_body(const char *full)
{
	json_t *r = json_loads(full, 0, NULL);
	json_t *dyn = cr_report_split(r);
	json_t *body = json_pack("{s:i,s:o,s:i}", "base", 1, "dynamic", dyn, "status_interval_s", 5);
	char *s = cr_json_dump(body);
	json_decref(body);
	json_decref(r);
	return s;
}

static int register_all(struct bench *b, const char *url, const char *url2, const char *token, int healthz_port)
{
	for (int i = 0; i < b->n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "sim-%05d", i);
		json_t *body = json_pack("{s:s,s:i,s:s,s:i}", "name", name, "port", healthz_port, "address", "127.0.0.1",
					 "status_interval_s", b->interval_s);
		char *text = cr_json_dump(body);
		json_decref(body);
		char *u = cr_xasprintf("%s/api/workers/register", url2 && i % 2 ? url2 : url);
		struct cr_http_resp r;
		int rc = cr_http_call("POST", u, token, text, 10000, &r, NULL);
		free(u);
		free(text);
		if (rc || (r.status != 201 && r.status != 200)) {
			fprintf(stderr, "statusload: registering %s failed (HTTP %ld): %s\n", name, rc ? 0 : r.status,
				rc ? "" : r.body);
			return -1;
		}
		json_t *j = json_loads(r.body, 0, NULL);
		b->sims[i].id = cr_xstrdup(cr_json_get_str(j, "id", ""));
		b->sims[i].secret = cr_xstrdup(cr_json_get_str(j, "secret", ""));
		json_decref(j);
		cr_http_resp_release(&r);
	}
	return 0;
}

static void status_done(struct evhttp_request *req, void *arg)
{
	struct bench *b = arg;
	b->done++;
	if (!req || evhttp_request_get_response_code(req) != 200)
		b->failed++;
}

static void send_status(struct bench *b, int i)
{
	struct evhttp_request *req = evhttp_request_new(status_done, b);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char auth[128], path[128];
	snprintf(auth, sizeof(auth), "Bearer %s", b->sims[i].secret);
	snprintf(path, sizeof(path), "/api/workers/%s/status", b->sims[i].id);
	bool second = b->conns2 && i % 2;
	evhttp_add_header(h, "Host", second ? b->host2 : b->host);
	evhttp_add_header(h, "Authorization", auth);
	evhttp_add_header(h, "Content-Type", "application/json");
	const char *body = b->count[i]++ % 12 == 0 ? b->bodies[i % 64] : b->light[i % 64];
	evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
	evhttp_make_request((second ? b->conns2 : b->conns)[i / 2 % b->nconn], req, EVHTTP_REQ_POST, path);
	b->sent++;
}

/* Every 10 ms send the share of reports that keeps each worker at one per interval. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	(void)fd, (void)what;
	b->carry += b->per_tick;
	while (b->carry >= 1) {
		send_status(b, b->next_sim);
		b->next_sim = (b->next_sim + 1) % b->n;
		b->carry -= 1;
	}
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void get_done(struct evhttp_request *req, void *arg)
{
	struct bench *b = arg;
	double ms = (double)(now_us() - b->get_started) / 1000.0;
	if (req && evhttp_request_get_response_code(req) == 200 && b->measuring) {
		if (b->nlat == b->cap_lat) {
			b->cap_lat = b->cap_lat ? b->cap_lat * 2 : 1024;
			b->lat = cr_xrealloc(b->lat, b->cap_lat * sizeof(double));
		}
		b->lat[b->nlat++] = ms;
	}
}

static void on_get(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	(void)fd, (void)what;
	int i = rand() % b->n;
	char auth[128], path[128];
	snprintf(auth, sizeof(auth), "Bearer %s", b->admin_token);
	snprintf(path, sizeof(path), "/api/workers/%s", b->sims[i].id);
	struct evhttp_request *req = evhttp_request_new(get_done, b);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host", b->host);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Authorization", auth);
	b->get_started = now_us();
	evhttp_make_request(b->get_conn, req, EVHTTP_REQ_GET, path);
}

static void healthz(struct evhttp_request *req, void *arg)
{
	(void)arg;
	struct evbuffer *out = evbuffer_new();
	evbuffer_add(out, "{\"status\":\"ok\"}", 15);
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void stop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	event_base_loopbreak(arg);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void proc_stat(int pid, double *cpu_s, long *rss_kb)
{
	char path[64], *text = NULL;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	*cpu_s = 0;
	if (cr_file_read(path, 8192, &text, NULL, NULL) == 0) {
		char *p = strrchr(text, ')');
		unsigned long long ut = 0, st = 0;
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
			*cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
		free(text);
	}
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	*rss_kb = 0;
	if (cr_file_read(path, 65536, &text, NULL, NULL) == 0) {
		char *p = strstr(text, "VmRSS:");
		if (p)
			sscanf(p + 6, "%ld", rss_kb);
		free(text);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },      { "token", required_argument, NULL, 't' },
		{ "admin-token", required_argument, NULL, 'a' }, { "workers", required_argument, NULL, 'n' },
		{ "interval", required_argument, NULL, 'i' }, { "duration", required_argument, NULL, 'd' },
		{ "warmup", required_argument, NULL, 'w' },   { "server-pid", required_argument, NULL, 'p' },
		{ "connections", required_argument, NULL, 'c' }, { "yardstick", no_argument, NULL, 'y' },
		{ "also-url", required_argument, NULL, 'U' },  { "also-pid", required_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	const char *url = NULL, *token = NULL, *url2 = NULL;
	int pid2 = 0;
	struct bench b;
	memset(&b, 0, sizeof(b));
	b.n = 1000;
	b.interval_s = 5;
	b.nconn = 32;
	int duration = 30, warmup = 10, pid = 0, c;
	bool yardstick = false; /* the target is not corral: skip registration */
	long long v;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u': url = optarg; break;
		case 't': token = optarg; break;
		case 'a': b.admin_token = optarg; break;
		case 'n': b.n = cr_parse_int(optarg, 1, 1000000, &v) ? (int)v : b.n; break;
		case 'i': b.interval_s = cr_parse_int(optarg, 1, 3600, &v) ? (int)v : b.interval_s; break;
		case 'd': duration = cr_parse_int(optarg, 1, 3600, &v) ? (int)v : duration; break;
		case 'w': warmup = cr_parse_int(optarg, 0, 3600, &v) ? (int)v : warmup; break;
		case 'p': pid = cr_parse_int(optarg, 1, 1 << 30, &v) ? (int)v : 0; break;
		case 'y': yardstick = true; break;
		case 'U': url2 = optarg; break;
		case 'P': pid2 = cr_parse_int(optarg, 1, 1 << 30, &v) ? (int)v : 0; break;
		case 'c': b.nconn = cr_parse_int(optarg, 1, 1024, &v) ? (int)v : b.nconn; break;
		default: return 2;
		}
	}
	if (!url || !token || !b.admin_token || !pid) {
		fprintf(stderr, "usage: statusload --url URL --token CLUSTER_TOKEN --admin-token T --server-pid PID "
				"[--workers N] [--interval S] [--duration S] [--warmup S] [--connections C] [--also-url URL2 "
				"--also-pid PID2 (every other worker reports there)]\n");
		return 2;
	}
	cr_http_client_init();
	struct evhttp_uri *uri = evhttp_uri_parse(url);
	b.host = evhttp_uri_get_host(uri);
	b.port = evhttp_uri_get_port(uri);
	b.base = event_base_new();

	struct evhttp *hz = evhttp_new(b.base);
	evhttp_set_gencb(hz, healthz, NULL);
	struct evhttp_bound_socket *hs = evhttp_bind_socket_with_handle(hz, "127.0.0.1", 0);
	struct sockaddr_in sa;
	socklen_t slen = sizeof(sa);
	getsockname(evhttp_bound_socket_get_fd(hs), (struct sockaddr *)&sa, &slen);

	b.sims = cr_xcalloc((size_t)b.n, sizeof(*b.sims));
	b.bodies = cr_xcalloc(64, sizeof(char *));
	b.light = cr_xcalloc(64, sizeof(char *));
	b.count = cr_xcalloc((size_t)b.n, sizeof(long));
	for (int i = 0; i < 64; i++) {
		b.bodies[i] = report_body(i);
		b.light[i] = light_body(b.bodies[i]);
	}
	double cpu0, cpu1, cpu_idle;
	long rss0, rss1, rss_idle;
	proc_stat(pid, &cpu_idle, &rss_idle);
	int64_t t0 = cr_mono_ms();
	if (yardstick) {
		for (int i = 0; i < b.n; i++) {
			b.sims[i].id = cr_xasprintf("%032x", i);
			b.sims[i].secret = cr_xstrdup("crw_yardstick");
		}
	} else if (register_all(&b, url, url2, token, ntohs(sa.sin_port))) {
		return 1;
	}
	double reg_s = (double)(cr_mono_ms() - t0) / 1000.0;

	b.conns = cr_xcalloc((size_t)b.nconn, sizeof(*b.conns));
	for (int i = 0; i < b.nconn; i++)
		b.conns[i] = evhttp_connection_base_new(b.base, NULL, b.host, (ev_uint16_t)b.port);
	b.get_conn = evhttp_connection_base_new(b.base, NULL, b.host, (ev_uint16_t)b.port);
	struct evhttp_uri *uri2 = url2 ? evhttp_uri_parse(url2) : NULL;
	if (uri2) {
		b.host2 = evhttp_uri_get_host(uri2);
		b.conns2 = cr_xcalloc((size_t)b.nconn, sizeof(*b.conns2));
		for (int i = 0; i < b.nconn; i++)
			b.conns2[i] = evhttp_connection_base_new(b.base, NULL, b.host2, (ev_uint16_t)evhttp_uri_get_port(uri2));
	}
	b.per_tick = (double)b.n / b.interval_s / 100.0;
	struct event *tick = event_new(b.base, -1, EV_PERSIST, on_tick, &b);
	struct timeval ten_ms = { 0, 10000 }, twenty_ms = { 0, 20000 };
	event_add(tick, &ten_ms);
	struct event *get = event_new(b.base, -1, EV_PERSIST, on_get, &b);
	event_add(get, &twenty_ms);

	/* warm up, then measure CPU and latency over `duration` seconds */
	struct timeval wtv = { warmup, 0 };
	event_base_once(b.base, -1, EV_TIMEOUT, stop, b.base, &wtv);
	event_base_dispatch(b.base);
	proc_stat(pid, &cpu0, &rss0);
	double also0 = 0, also1 = 0;
	long also_rss = 0;
	if (pid2)
		proc_stat(pid2, &also0, &also_rss);
	long sent0 = b.done;
	b.measuring = true;
	struct timeval dtv = { duration, 0 };
	event_base_once(b.base, -1, EV_TIMEOUT, stop, b.base, &dtv);
	event_base_dispatch(b.base);
	proc_stat(pid, &cpu1, &rss1);
	if (pid2)
		proc_stat(pid2, &also1, &also_rss);
	long msgs = b.done - sent0;

	qsort(b.lat, b.nlat, sizeof(double), cmp);
	double p50 = b.nlat ? b.lat[b.nlat / 2] : 0, p99 = b.nlat ? b.lat[(size_t)((double)b.nlat * 0.99)] : 0;
	double cpu = cpu1 - cpu0;
	printf("{\"workers\": %d, \"interval_s\": %d, \"duration_s\": %d, \"registration_s\": %.2f, "
	       "\"status_messages\": %ld, \"status_failed\": %ld, \"msgs_per_s\": %.1f, \"server_cpu_s\": %.3f, "
	       "\"cpu_us_per_msg\": %.1f, \"cpu_cores\": %.4f, \"rss_idle_kb\": %ld, \"rss_kb\": %ld, "
	       "\"get_samples\": %zu, \"get_p50_ms\": %.3f, \"get_p99_ms\": %.3f, \"also_cpu_s\": %.3f, "
	       "\"also_cpu_us_per_msg\": %.1f}\n",
	       b.n, b.interval_s, duration, reg_s, msgs, b.failed, (double)msgs / duration, cpu,
	       msgs ? cpu * 1e6 / (double)msgs : 0, cpu / duration, rss_idle, rss1, b.nlat, p50, p99, also1 - also0,
	       msgs ? (also1 - also0) * 1e6 / (double)msgs : 0);
	return 0;
}
