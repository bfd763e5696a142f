/* `corral server`: the control plane on one event loop, plus the optional
 * embedded worker, a supervised child process restarted when it dies. */
#include <event2/event.h>
#include <event2/thread.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/app.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "store/store.h"
#include "base/util.h"
#include "console/console.h"
#include "gateway/gateway.h"
#include "http/server.h"
#include "http/tls.h"
#include "cmd/cmd.h"

static const char server_usage[] =
	"usage: corral server [OPTIONS]\n"
	"\n"
	"Start the control plane: management API (/api), the OpenAI-compatible endpoint\n"
	"(/v1), the web console (/), metrics (/metrics), health (/healthz), store,\n"
	"and, unless --disable-worker, an embedded worker for this machine.\n"
	"Every option can also be set as a CORRAL_ variable: --access-log F as\n"
	"CORRAL_ACCESS_LOG=F, --disable-worker as CORRAL_DISABLE_WORKER=1. The command\n"
	"line wins.\n"
	"\n"
	"  --host H               listen address (default 0.0.0.0)\n"
	"  --port P               listen port (default 8080)\n"
	"  --data-dir DIR         store, token and admin password (default $CORRAL_DATA_DIR,\n"
	"                         else /var/lib/corral as root, else ~/.local/share/corral)\n"
	"  --token T              cluster registration token (default: DIR/token, created once)\n"
	"  --store URL            keep the cluster's state in PostgreSQL: postgresql://USER@HOST:PORT/DB\n"
	"                         (a password from PGPASSWORD or ~/.pgpass; default: SQLite DIR/corral.db);\n"
	"                         several servers on one database all serve, one leads (docs/ops.md)\n"
	"  --tls-cert FILE        serve /api, /v1 and the workers' channel over TLS with this PEM\n"
	"                         certificate chain (server certificate first) ...\n"
	"  --tls-key FILE         ... and its private key\n"
	"  --tls-self-signed      ... or with a certificate from a CA made once in DATA_DIR/tls/\n"
	"                         (ca.pem); the join command then carries --ca-hash\n"
	"  --tls-san NAMES        more names or addresses for that certificate, comma-separated\n"
	"                         (a load balancer's or DNS name; this host's are always in it)\n"
	"  --disable-worker       do not run the embedded worker\n"
	"  --worker-port P        embedded worker's port (default 10150)\n"
	"  --worker-name N        embedded worker's name (default: host name)\n"
	"  --status-interval S    embedded worker's status interval in seconds (default 5)\n"
	"  --worker-port-range LO-HI      embedded worker's engine ports (default 20000-20999)\n"
	"  --worker-labels k=v,...        embedded worker's labels\n"
	"  --worker-resources FILE        embedded worker's --resources\n"
	"  --worker-engines-config FILE   embedded worker's --engines-config\n"
	"  --probe-interval S     seconds between probes of each worker's /healthz; 0 = off (default 10)\n"
	"  --flush-interval S     seconds between writes of observed state (default 30; at most 5\n"
	"                         with --store, for the other servers' view)\n"
	"  --audit-days N         keep the audit trail N days (default 90; 0: for ever)\n"
	"  --events-days N        keep cluster events N days (default 7; 0: for ever)\n"
	"  --usage-interval S     seconds between writes of usage counts (default 1: a kill -9\n"
	"                         loses at most that much metering)\n"
	"  --keepalive S          seconds between watch-stream keepalives (default 15)\n"
	"  --max-body BYTES       largest request body accepted (default 1048576)\n"
	"  --header-timeout S     a request's headers must arrive within S s of its first byte (default 10)\n"
	"  --body-timeout S       and the whole request within S s (default 60)\n"
	"  --shutdown-timeout S   on SIGTERM, how long answers in flight may finish (default 30)\n"
	"  --metrics-token T      GET /metrics wants this bearer token (default: open, as\n"
	"                         Prometheus scrapes usually are; use CORRAL_METRICS_TOKEN)\n"
	"  --access-log FILE|off  one line per /v1 request: key, model, status, tokens, latency\n"
	"                         (default: the server's log on stderr)\n"
	"  --max-connections N    open client connections; past it the oldest idle ones are closed\n"
	"                         (default: half the open-files limit, which is raised to its maximum)\n"
	"  --reschedule-grace S   move instances off a worker not ready this long (default 300)\n"
	"  --gpu-reserve MIB      memory kept free on every GPU (default 512)\n"
	"  --gateway-connect-timeout MS     gateway to engine: connect, else the next replica (default 5000)\n"
	"  --gateway-first-byte-timeout MS  request sent to first byte of the answer, else 504 (default 600000)\n"
	"  --gateway-idle-timeout MS        longest silence mid-answer before it is cut (default 300000)\n"
	"  --gateway-pool N       idle keep-alive connections kept per engine, 4 s at most (default 16)\n"
	"  --health-probe-interval S  end-to-end probes of models deployed with health_probe (default 30)\n"
	"  --rtt-limit-tp MS      group check: longest round trip between vLLM/SGLang nodes (default 2)\n"
	"  --rtt-limit-rpc MS     group check: longest round trip between llama.cpp RPC nodes (default 20)\n"
	"  -h, --help             this text\n";

struct embedded {
	struct event_base *base;
	char **argv;
	char *token;
	pid_t pid;
	int64_t started;
	int failures;
	struct event *restart;
	bool stopping;
};

static void spawn(struct embedded *e)
{
	pid_t pid = fork();
	if (pid < 0) {
		cr_error("fork failed for the embedded worker: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		setenv("CORRAL_TOKEN", e->token, 1);
		execv("/proc/self/exe", e->argv);
		fprintf(stderr, "corral: exec of the embedded worker failed: %s\n", strerror(errno));
		_exit(127);
	}
	e->pid = pid;
	e->started = cr_mono_ms();
	cr_info("embedded worker started (pid %d)", (int)pid);
}

static void on_restart(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	spawn(arg);
}

static void on_child(evutil_socket_t sig, short what, void *arg)
{
	struct embedded *e = arg;
	(void)sig;
	(void)what;
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != e->pid)
			continue;
		e->pid = 0;
		if (e->stopping)
			continue;
		if (cr_mono_ms() - e->started > 60000)
			e->failures = 0;
		int delay = 1 << (e->failures < 6 ? e->failures : 6);
		e->failures++;
		if (WIFSIGNALED(status))
			cr_warn("embedded worker killed by signal %d; restarting in %d s", WTERMSIG(status), delay);
		else
			cr_warn("embedded worker exited with status %d; restarting in %d s", WEXITSTATUS(status), delay);
		struct timeval tv = { delay, 0 };
		event_add(e->restart, &tv);
	}
}

static void stop_child(struct embedded *e)
{
	e->stopping = true;
	if (!e->pid)
		return;
	kill(e->pid, SIGTERM);
	for (int i = 0; i < 50; i++) {
		if (waitpid(e->pid, NULL, WNOHANG) == e->pid)
			return;
		usleep(100000);
	}
	kill(e->pid, SIGKILL);
	waitpid(e->pid, NULL, 0);
}

/* A graceful stop: no new connections, the answers in flight (streams
 * included) finish and are metered, for up to --shutdown-timeout; a second
 * signal stops at once. */
struct stopping {
	struct event_base *base;
	struct cr_http_server *http;
	struct event *drain;
	int timeout_s;
	int64_t deadline;
	bool begun;
};

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
	struct stopping *st = arg;
	(void)fd;
	(void)what;
	int busy = cr_http_server_busy(st->http);
	if (busy && cr_mono_ms() < st->deadline)
		return;
	if (busy)
		cr_warn("%d answer(s) still in flight after %d s (--shutdown-timeout): stopping anyway", busy, st->timeout_s);
	event_base_loopbreak(st->base);
}

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
	struct stopping *st = arg;
	(void)what;
	if (st->begun) {
		cr_info("signal %d again: stopping now", (int)sig);
		event_base_loopbreak(st->base);
		return;
	}
	st->begun = true;
	int busy = cr_http_server_busy(st->http);
	cr_info("signal %d: stopping; %d answer(s) in flight may finish (up to %d s)", (int)sig, busy, st->timeout_s);
	cr_http_server_stop_accepting(st->http);
	st->deadline = cr_mono_ms() + (int64_t)st->timeout_s * 1000;
	struct timeval tv = { 0, 100000 };
	event_add(st->drain, &tv);
	on_drain(-1, 0, st);
}

static char *default_data_dir(void)
{
	const char *env = getenv("CORRAL_DATA_DIR");
	if (env && *env)
		return cr_xstrdup(env);
	if (geteuid() == 0)
		return cr_xstrdup("/var/lib/corral");
	const char *home = getenv("HOME");
	return cr_xasprintf("%s/.local/share/corral", home ? home : ".");
}

struct server_opts {
	const char *host, *token, *worker_name;
	const char *worker_ports, *worker_labels, *worker_resources, *worker_engines; /* passed on to it */
	const char *access_log; /* NULL: stderr; "off"; or a file */
	char *data_dir;
	int port, worker_port, status_interval, shutdown_timeout;
	bool disable_worker;
	struct cr_app_config app;
	struct cr_gateway_config gw;
	const char *tls_cert, *tls_key, *tls_san;
	bool tls_self_signed;
};

static int parse_int_opt(const char *name, const char *v, long long min, long long max, long long *out)
{
	if (cr_parse_int(v, min, max, out))
		return 0;
	fprintf(stderr, "corral server: %s must be a number from %lld to %lld, not '%s'\n", name, min, max, v);
	return -1;
}

static const struct option longopts[] = {
	{ "host", required_argument, NULL, 'H' },         { "port", required_argument, NULL, 'p' },
	{ "data-dir", required_argument, NULL, 'd' },     { "token", required_argument, NULL, 't' },
	{ "store", required_argument, NULL, 1018 },
	{ "disable-worker", no_argument, NULL, 'D' },     { "worker-port", required_argument, NULL, 'w' },
	{ "worker-name", required_argument, NULL, 'n' },  { "status-interval", required_argument, NULL, 's' },
	{ "probe-interval", required_argument, NULL, 'P' }, { "flush-interval", required_argument, NULL, 'f' },
	{ "usage-interval", required_argument, NULL, 1010 }, { "audit-days", required_argument, NULL, 1011 },
	{ "keepalive", required_argument, NULL, 'k' },    { "max-body", required_argument, NULL, 'b' },
	{ "reschedule-grace", required_argument, NULL, 'g' }, { "gpu-reserve", required_argument, NULL, 'r' },
	{ "gateway-connect-timeout", required_argument, NULL, 'C' },
	{ "gateway-first-byte-timeout", required_argument, NULL, 'F' },
	{ "gateway-idle-timeout", required_argument, NULL, 'I' }, { "gateway-pool", required_argument, NULL, 'O' },
	{ "health-probe-interval", required_argument, NULL, 'Q' },
	{ "rtt-limit-tp", required_argument, NULL, 'T' }, { "rtt-limit-rpc", required_argument, NULL, 'R' },
	{ "header-timeout", required_argument, NULL, 1001 }, { "body-timeout", required_argument, NULL, 1002 },
	{ "max-connections", required_argument, NULL, 1003 }, { "shutdown-timeout", required_argument, NULL, 1008 },
	{ "access-log", required_argument, NULL, 1009 },
	{ "tls-cert", required_argument, NULL, 1012 }, { "tls-key", required_argument, NULL, 1013 },
	{ "tls-self-signed", no_argument, NULL, 1014 }, { "tls-san", required_argument, NULL, 1015 },
	{ "metrics-token", required_argument, NULL, 1016 }, { "events-days", required_argument, NULL, 1017 },
	{ "worker-port-range", required_argument, NULL, 1004 }, { "worker-labels", required_argument, NULL, 1005 },
	{ "worker-resources", required_argument, NULL, 1006 },
	{ "worker-engines-config", required_argument, NULL, 1007 },
	{ "help", no_argument, NULL, 'h' },               { NULL, 0, NULL, 0 },
};

static int parse(int argc, char **argv, struct server_opts *o)
{
	long long v;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'H': o->host = optarg; break;
		case 'p': if (parse_int_opt("--port", optarg, 0, 65535, &v)) return 2; o->port = (int)v; break;
		case 'd': free(o->data_dir); o->data_dir = cr_xstrdup(optarg); break;
		case 't': o->token = optarg; break;
		case 1018:
			if (!cr_store_is_pg(optarg)) {
				fprintf(stderr, "corral server: --store takes a PostgreSQL URL (postgresql://USER@HOST:PORT/DB), "
						"not '%s'; without --store the state is in SQLite in --data-dir\n", optarg);
				return 2;
			}
			o->app.store = optarg;
			break;
		case 'D': o->disable_worker = true; break;
		case 'w': if (parse_int_opt("--worker-port", optarg, 1, 65535, &v)) return 2; o->worker_port = (int)v; break;
		case 'n': o->worker_name = optarg; break;
		case 's': if (parse_int_opt("--status-interval", optarg, 1, 3600, &v)) return 2; o->status_interval = (int)v; break;
		case 'P': if (parse_int_opt("--probe-interval", optarg, 0, 3600, &v)) return 2; o->app.probe_interval_s = (int)v; break;
		case 'f': if (parse_int_opt("--flush-interval", optarg, 1, 3600, &v)) return 2; o->app.flush_interval_s = (int)v; break;
		case 1010: if (parse_int_opt("--usage-interval", optarg, 1, 3600, &v)) return 2; o->app.usage_interval_s = (int)v; break;
		case 1011: if (parse_int_opt("--audit-days", optarg, 0, 36600, &v)) return 2; o->app.audit_days = (int)v; break;
		case 'k': if (parse_int_opt("--keepalive", optarg, 1, 3600, &v)) return 2; o->app.keepalive_s = (int)v; break;
		case 'b': if (parse_int_opt("--max-body", optarg, 1024, 1 << 30, &v)) return 2; o->app.max_body = (size_t)v; break;
		case 'g': if (parse_int_opt("--reschedule-grace", optarg, 1, 86400, &v)) return 2; o->app.reschedule_grace_s = (int)v; break;
		case 'r': if (parse_int_opt("--gpu-reserve", optarg, 0, 1 << 20, &v)) return 2; o->app.gpu_reserve = (uint64_t)v << 20; break;
		case 'C': if (parse_int_opt("--gateway-connect-timeout", optarg, 1, 3600000, &v)) return 2; o->gw.connect_timeout_ms = (int)v; break;
		case 'F': if (parse_int_opt("--gateway-first-byte-timeout", optarg, 1, 86400000, &v)) return 2; o->gw.first_byte_timeout_ms = (int)v; break;
		case 'I': if (parse_int_opt("--gateway-idle-timeout", optarg, 1, 86400000, &v)) return 2; o->gw.idle_timeout_ms = (int)v; break;
		case 'O': if (parse_int_opt("--gateway-pool", optarg, 0, 100000, &v)) return 2; o->gw.pool_idle = (int)v; break;
		case 'Q': if (parse_int_opt("--health-probe-interval", optarg, 1, 86400, &v)) return 2; o->app.health_probe_interval_s = (int)v; break;
		case 'T':
		case 'R': {
			char *end;
			double ms = strtod(optarg, &end);
			if (end == optarg || *end || ms <= 0 || ms > 10000) {
				fprintf(stderr, "corral server: %s takes milliseconds (0 < ms <= 10000), not '%s'\n",
					c == 'T' ? "--rtt-limit-tp" : "--rtt-limit-rpc", optarg);
				return 2;
			}
			if (c == 'T')
				o->app.rtt_limit_tp_ms = ms;
			else
				o->app.rtt_limit_rpc_ms = ms;
			break;
		}
		case 1001: if (parse_int_opt("--header-timeout", optarg, 1, 3600, &v)) return 2; o->app.header_timeout_s = (int)v; break;
		case 1002: if (parse_int_opt("--body-timeout", optarg, 1, 86400, &v)) return 2; o->app.body_timeout_s = (int)v; break;
		case 1003: if (parse_int_opt("--max-connections", optarg, 16, 1000000, &v)) return 2; o->app.max_connections = (int)v; break;
		case 1008: if (parse_int_opt("--shutdown-timeout", optarg, 0, 3600, &v)) return 2; o->shutdown_timeout = (int)v; break;
		case 1009: o->access_log = optarg; break;
		case 1012: o->tls_cert = optarg; break;
		case 1013: o->tls_key = optarg; break;
		case 1014: o->tls_self_signed = true; break;
		case 1015: o->tls_san = optarg; break;
		case 1016: o->app.metrics_token = *optarg ? optarg : NULL; break;
		case 1017: if (parse_int_opt("--events-days", optarg, 0, 36600, &v)) return 2; o->app.events_days = (int)v; break;
		case 1004: o->worker_ports = optarg; break;
		case 1005: o->worker_labels = optarg; break;
		case 1006: o->worker_resources = optarg; break;
		case 1007: o->worker_engines = optarg; break;
		case 'h': fputs(server_usage, stdout); return 0;
		default: fputs(server_usage, stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "corral server: unexpected argument '%s'\n%s", argv[optind], server_usage);
		return 2;
	}
	if ((o->tls_cert != NULL) != (o->tls_key != NULL) || (o->tls_cert && o->tls_self_signed)) {
		fprintf(stderr, "corral server: %s\nfix: pass --tls-cert FILE --tls-key FILE, or --tls-self-signed alone\n",
			o->tls_self_signed ? "--tls-self-signed and --tls-cert exclude each other"
					   : "--tls-cert and --tls-key go together");
		return 2;
	}
	if (o->tls_san && !o->tls_self_signed) {
		fputs("corral server: --tls-san names the self-signed certificate's hosts\nfix: add --tls-self-signed, or "
		      "put the names in the certificate given with --tls-cert\n", stderr);
		return 2;
	}
	return -1;
}

/* The address other machines reach a server listening on host by: host
 * itself, or for a wildcard the first non-loopback IPv4 address (else the
 * host name). */
static void join_address(const char *host, char *out, size_t n)
{
	snprintf(out, n, "%s", host);
	if (strcmp(host, "0.0.0.0") != 0 && strcmp(host, "::") != 0) {
		if (strchr(host, ':'))
			snprintf(out, n, "[%s]", host);
		return;
	}
	struct ifaddrs *ifs = NULL;
	bool found = false;
	if (getifaddrs(&ifs) == 0) {
		for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK))
				continue;
			found = inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr, out,
					  (socklen_t)n) != NULL;
		}
		freeifaddrs(ifs);
	}
	if (!found && gethostname(out, n) != 0)
		snprintf(out, n, "SERVER");
}

/* This host's names and addresses for a self-signed certificate: loopback,
 * the host name, every interface address, --host and --tls-san. */
static char *host_names(const struct server_opts *o)
{
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	char *names = cr_xasprintf("localhost,127.0.0.1,::1%s%s", *host ? "," : "", host);
	struct ifaddrs *ifs = NULL;
	if (getifaddrs(&ifs) == 0) {
		for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
			char a[INET6_ADDRSTRLEN] = "";
			if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK))
				continue;
			if (i->ifa_addr->sa_family == AF_INET)
				inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr, a, sizeof(a));
			else if (i->ifa_addr->sa_family == AF_INET6 &&
				 !IN6_IS_ADDR_LINKLOCAL(&((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr))
				inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr, a, sizeof(a));
			if (!*a)
				continue;
			char *more = cr_xasprintf("%s,%s", names, a);
			free(names);
			names = more;
		}
		freeifaddrs(ifs);
	}
	const char *extra[] = { strcmp(o->host, "0.0.0.0") && strcmp(o->host, "::") ? o->host : NULL, o->tls_san };
	for (size_t i = 0; i < 2; i++) {
		if (!extra[i])
			continue;
		char *more = cr_xasprintf("%s,%s", names, extra[i]);
		free(names);
		names = more;
	}
	return names;
}

/* TLS on the server's port when asked for: *ca gets the file the embedded
 * worker trusts, hash the join command's --ca-hash. Returns 0 (also when
 * there is no TLS), or 1 after printing why. */
static int setup_tls(const struct server_opts *o, struct cr_app *app, char **ca, char hash[CR_TLS_HASH_LEN])
{
	*ca = NULL;
	hash[0] = '\0';
	if (!o->tls_cert && !o->tls_self_signed)
		return 0;
	struct cr_err err = CR_ERR_INIT;
	char *cert = NULL, *key = NULL;
	int rc;
	if (o->tls_self_signed) {
		char *dir = cr_xasprintf("%s/tls", o->data_dir), *names = host_names(o);
		rc = cr_tls_self_signed(dir, names, &cert, &key, &err);
		*ca = cr_xasprintf("%s/ca.pem", dir);
		free(names);
		free(dir);
	} else {
		cert = cr_xstrdup(o->tls_cert);
		key = cr_xstrdup(o->tls_key);
		*ca = cr_xstrdup(o->tls_cert); /* its last certificate: the chain's top */
		rc = 0;
	}
	SSL_CTX *ctx = NULL;
	if (!rc)
		rc = cr_tls_server_ctx(cert, key, &ctx, &err);
	if (!rc)
		rc = cr_tls_file_hash(*ca, hash, &err);
	if (!rc)
		cr_http_server_set_tls(cr_app_http(app), ctx);
	free(cert);
	free(key);
	if (rc) {
		free(*ca);
		*ca = NULL;
		cr_cmd_fail(&err);
		return 1;
	}
	return 0;
}

static char **worker_argv(const struct server_opts *o, int port, const char *ca)
{
	const char *host = !strcmp(o->host, "0.0.0.0") || !strcmp(o->host, "::") ? "127.0.0.1" : o->host;
	char *tls_name = ca && o->tls_cert ? cr_tls_local_name(o->tls_cert) : NULL;
	char **argv = cr_xcalloc(24, sizeof(char *));
	int n = 0;
	argv[n++] = cr_xstrdup("corral");
	argv[n++] = cr_xstrdup("worker");
	argv[n++] = cr_xasprintf("--server-url=%s://%s:%d", ca ? "https" : "http", tls_name ? tls_name : host, port);
	free(tls_name);
	if (ca)
		argv[n++] = cr_xasprintf("--cacert=%s", ca);
	argv[n++] = cr_xasprintf("--data-dir=%s/worker", o->data_dir);
	argv[n++] = cr_xstrdup("--embedded"); /* the control plane never joins a Ray cluster */
	argv[n++] = cr_xasprintf("--worker-port=%d", o->worker_port);
	argv[n++] = cr_xasprintf("--status-interval=%d", o->status_interval);
	if (o->worker_name)
		argv[n++] = cr_xasprintf("--name=%s", o->worker_name);
	if (o->worker_ports)
		argv[n++] = cr_xasprintf("--port-range=%s", o->worker_ports);
	if (o->worker_labels)
		argv[n++] = cr_xasprintf("--labels=%s", o->worker_labels);
	if (o->worker_resources)
		argv[n++] = cr_xasprintf("--resources=%s", o->worker_resources);
	if (o->worker_engines)
		argv[n++] = cr_xasprintf("--engines-config=%s", o->worker_engines);
	return argv;
}

/* Several servers on one PostgreSQL: the leader lock, taken when free. A
 * server that does not get it follows: it serves /v1 and /api from the
 * shared state, and leads within a second of the leader's end. Returns 0
 * with o->app.lock set (held or not), or an error when PostgreSQL cannot be
 * asked at all (a wrong URL is said at once). */
static int take_lock(struct server_opts *o, struct cr_err *err)
{
	char host[256] = "server", *name;
	gethostname(host, sizeof(host) - 1);
	name = cr_xasprintf("%s:%d", host, o->port);
	struct cr_pg_lock *l = cr_pg_lock_new(o->app.store, name);
	free(name);
	bool got = false;
	int rc = cr_pg_lock_try(l, &got, err);
	if (rc) {
		cr_pg_lock_free(l);
		return rc;
	}
	if (!got) {
		printf("corral: following as %s: another server leads; this one serves /v1 and /api and leads when it "
		       "ends\n", cr_pg_lock_name(l));
		fflush(stdout);
	}
	o->app.lock = l;
	return 0;
}

static int server_main(int argc, char **argv)
{
	struct server_opts o = { "0.0.0.0", NULL, NULL, NULL, NULL, NULL, NULL, NULL, default_data_dir(), 8080, 10150, 5, 30, false,
				 { 0 }, { 0 }, NULL, NULL, NULL, false };
	cr_app_config_defaults(&o.app);
	cr_gateway_config_defaults(&o.gw);
	int rc = parse(argc, argv, &o);
	if (rc >= 0) {
		free(o.data_dir);
		return rc;
	}
	o.app.data_dir = o.data_dir;
	o.app.cluster_token = o.token;
	FILE *alog = NULL;
	if (o.access_log && !strcmp(o.access_log, "off")) {
		o.gw.access_log = NULL;
	} else if (o.access_log) {
		int fd = open(o.access_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		alog = fd >= 0 ? fdopen(fd, "a") : NULL;
		if (!alog) {
			fprintf(stderr, "corral server: cannot open --access-log %s: %s\nfix: give a file in a directory "
				"the server may write to, or --access-log off\n", o.access_log, strerror(errno));
			if (fd >= 0)
				close(fd);
			free(o.data_dir);
			return 1;
		}
		setvbuf(alog, NULL, _IOLBF, 0);
		o.gw.access_log = alog;
	}
	signal(SIGPIPE, SIG_IGN);
	cr_http_raise_fd_limit();
	evthread_use_pthreads();
	/* epoll changes batched per loop turn: fewer epoll_ctl calls for the
	 * gateway's short-lived read/write interest changes */
	struct event_config *ecfg = event_config_new();
	event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	struct event_base *base = event_base_new_with_config(ecfg);
	event_config_free(ecfg);
	struct cr_app *app = NULL;
	struct cr_gateway *gw = NULL;
	struct cr_err err = CR_ERR_INIT;
	int port = 0;
	char *ca = NULL, hash[CR_TLS_HASH_LEN];
	rc = o.app.store ? take_lock(&o, &err) : 0;
	if (!rc)
		rc = cr_app_open(base, &o.app, &app, &err);
	if (!rc && setup_tls(&o, app, &ca, hash)) {
		cr_app_free(app);
		event_base_free(base);
		free(o.data_dir);
		if (alog)
			fclose(alog);
		return 1;
	}
	if (!rc) { /* the OpenAI endpoint on the same port, over the app's cluster */
		gw = cr_gateway_new(base, app, &o.gw);
		cr_gateway_attach(gw, cr_app_http(app));
		cr_app_add_metrics(app, cr_gateway_metrics, gw);
		cr_console_attach(cr_app_http(app));
		rc = cr_app_listen(app, o.host, o.port, &port, &err);
	}
	if (rc) {
		cr_cmd_fail(&err);
		free(ca);
		cr_app_free(app);
		cr_gateway_free(gw);
		event_base_free(base);
		free(o.data_dir);
		if (alog)
			fclose(alog);
		return 1;
	}
	const char *scheme = ca ? "https" : "http";
	printf("corral: server listening on %s://%s:%d (data in %s)\n", scheme, o.host, port, o.data_dir);
	char addr[INET6_ADDRSTRLEN + 2];
	join_address(o.host, addr, sizeof(addr));
	printf("corral: to join a machine, copy %s/token to it (mode 0600, e.g. as /etc/corral/token) and run there:\n"
	       "  corral worker --server-url %s://%s:%d --token-file /etc/corral/token%s%s\n",
	       o.data_dir, scheme, addr, port, ca ? " --ca-hash " : "", ca ? hash : "");
	if (ca)
		printf("corral: command-line clients trust the server with --cacert %s (or CORRAL_CACERT)\n", ca);
	fflush(stdout);

	struct embedded e = { base, NULL, NULL, 0, 0, 0, NULL, false };
	struct event *sigchld = NULL;
	if (!o.disable_worker) {
		e.argv = worker_argv(&o, port, ca);
		e.token = cr_xstrdup(cr_app_cluster_token(app));
		e.restart = evtimer_new(base, on_restart, &e);
		sigchld = evsignal_new(base, SIGCHLD, on_child, &e);
		event_add(sigchld, NULL);
		spawn(&e);
	}
	struct stopping st = { base, cr_app_http(app), NULL, o.shutdown_timeout, 0, false };
	st.drain = event_new(base, -1, EV_PERSIST, on_drain, &st);
	struct event *sigterm = evsignal_new(base, SIGTERM, on_stop, &st);
	struct event *sigint = evsignal_new(base, SIGINT, on_stop, &st);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	event_base_dispatch(base);

	stop_child(&e);
	cr_app_free(app); /* its HTTP server first: relays in flight end with it */
	cr_gateway_free(gw);
	event_free(sigterm);
	event_free(sigint);
	event_free(st.drain);
	if (sigchld)
		event_free(sigchld);
	if (e.restart)
		event_free(e.restart);
	for (char **a = e.argv; a && *a; a++)
		free(*a);
	free(e.argv);
	free(e.token);
	free(ca);
	event_base_free(base);
	free(o.data_dir);
	if (alog)
		fclose(alog);
	cr_info("stopped");
	return 0;
}

int cr_cmd_server(int argc, char **argv)
{
	int n;
	char **all = cr_cmd_env_argv("server", longopts, NULL, argc, argv, &n);
	if (!all)
		return 2;
	int rc = server_main(n, all);
	cr_cmd_argv_free(all);
	return rc;
}
