/* The command-line client: login/logout, workers, gpus (through the server's
 * API) and doctor (this node, no server). The session is kept in
 * $XDG_CONFIG_HOME/corral/cli.json (0600). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "agent/detect.h"
#include "agent/engines.h"
#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
#include "base/mem.h"
#include "base/sse.h"
#include "base/util.h"
#include "checks/checks.h"
#include "cmd/cli.h"
#include "cmd/cmd.h"
#include "http/client.h"

/* One line from standard input; on a terminal (unless from_stdin) after
 * prompt, without echo. */
static char *read_secret(bool from_stdin, const char *prompt)
{
	char line[1024];
	struct termios old, quiet;
	bool tty = !from_stdin && isatty(STDIN_FILENO);
	if (tty) {
		fputs(prompt, stderr);
		tcgetattr(STDIN_FILENO, &old);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	char *got = fgets(line, sizeof(line), stdin);
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputs("\n", stderr);
	}
	if (!got)
		return NULL;
	line[strcspn(line, "\r\n")] = '\0';
	return cr_xstrdup(line);
}

static char *read_password(bool from_stdin)
{
	return read_secret(from_stdin, "password: ");
}

static void forget(char *secret)
{
	if (secret)
		memset(secret, 0, strlen(secret));
	free(secret);
}

/* Keeps a session token in the CLI's config, as login does. */
static int keep_session(const char *server_url, const char *token, struct cr_err *err)
{
	json_t *cfg = cr_cli_config_load();
	json_object_set_new(cfg, "server_url", json_string(server_url));
	json_object_set_new(cfg, "token", json_string(token));
	char *path = cr_cli_config_path();
	char *dir = cr_xstrdup(path);
	*strrchr(dir, '/') = '\0';
	int rc = cr_mkdir_p(dir, 0700, err) ? -1 : 0;
	const char *ca = getenv("CORRAL_CACERT");
	if (!rc && ca && *ca) { /* a copy, remembered: later commands trust the same CA */
		char *text = NULL, *kept = cr_xasprintf("%s/server-ca.pem", dir);
		size_t len = 0;
		rc = cr_file_read(ca, 1 << 20, &text, &len, err) || cr_file_write(kept, text, len, 0644, err) ? -1 : 0;
		if (!rc)
			json_object_set_new(cfg, "cacert", json_string(kept));
		free(text);
		free(kept);
	} else if (!strncmp(server_url, "http://", 7)) {
		json_object_del(cfg, "cacert");
	}
	char *saved = json_dumps(cfg, JSON_INDENT(2));
	if (!rc)
		rc = cr_file_write(path, saved, strlen(saved), 0600, err) ? -1 : 0;
	free(saved);
	free(dir);
	free(path);
	json_decref(cfg);
	return rc;
}

int cr_cmd_login(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral login [--server-url URL] [--username NAME] [--password-stdin]\n"
		"\n"
		"Log in and keep the session token in $XDG_CONFIG_HOME/corral/cli.json (0600).\n"
		"The first admin password is in the server's DATA_DIR/initial_admin_password.\n"
		"\n"
		"  --server-url URL    the server (default $CORRAL_SERVER_URL, else " CR_CLI_DEFAULT_URL ")\n"
		"  --username NAME     default admin\n"
		"  --password-stdin    read the password from standard input\n"
		"  --cacert FILE       trust an https server through this CA (its DATA_DIR/tls/ca.pem; also\n"
		"                      $CORRAL_CACERT); login keeps a copy for later commands\n";
	const char *url = NULL, *user = "admin";
	bool from_stdin = false;
	const struct cr_opt opts[] = {
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ "username", 0, CR_OPT_STR, &user, NULL, 0 },
		{ "password-stdin", 0, CR_OPT_FLAG, &from_stdin, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	free(cl.token);
	cl.token = NULL;
	struct cr_err err = CR_ERR_INIT;
	char *password = read_password(from_stdin);
	if (!password) {
		cr_err_set(&err, CR_EINPUT, "type the password, or pipe it with --password-stdin", "no password given");
		cr_cli_release(&cl);
		return cr_cmd_fail(&err);
	}
	json_t *body = json_pack("{s:s,s:s}", "username", user, "password", password);
	char *text = cr_json_dump(body);
	json_t *ans = cr_cli_api(&cl, "POST", "/api/auth/login", text, &err);
	memset(password, 0, strlen(password));
	memset(text, 0, strlen(text));
	free(password);
	free(text);
	json_decref(body);
	int rc = 0;
	if (!ans) {
		rc = cr_cmd_fail(&err);
		goto out;
	}
	if (keep_session(cl.url, cr_json_get_str(ans, "token", ""), &err))
		rc = cr_cmd_fail(&err);
	else
		printf("logged in to %s as %s\n", cl.url, user);
	json_decref(ans);
out:
	cr_cli_release(&cl);
	return rc;
}

int cr_cmd_logout(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		puts("usage: corral logout\n\nEnd the session and forget its token.");
		return 0;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, NULL);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cl.token ? cr_cli_api(&cl, "POST", "/api/auth/logout", NULL, &err) : NULL;
	json_decref(ans);
	json_t *cfg = cr_cli_config_load();
	json_object_del(cfg, "token");
	char *path = cr_cli_config_path();
	char *saved = json_dumps(cfg, JSON_INDENT(2));
	cr_file_write(path, saved, strlen(saved), 0600, NULL);
	free(saved);
	free(path);
	json_decref(cfg);
	cr_cli_release(&cl);
	puts("logged out");
	return 0;
}

static void ago(const char *rfc3339, char *out, size_t n)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (!rfc3339 || !strptime(rfc3339, "%Y-%m-%dT%H:%M:%S", &tm)) {
		snprintf(out, n, "never");
		return;
	}
	long long secs = (long long)(cr_wall_ms() / 1000 - timegm(&tm));
	if (secs < 0)
		secs = 0;
	if (secs < 120)
		snprintf(out, n, "%llds ago", secs);
	else if (secs < 7200)
		snprintf(out, n, "%lldm ago", secs / 60);
	else
		snprintf(out, n, "%lldh ago", secs / 3600);
}

/* A worker's GPUs, one line per model: "2x NVIDIA L4 3.1 GiB/48.0 GiB". */
static void gpu_summary(json_t *gpus, char *out, size_t n)
{
	if (json_array_size(gpus) == 0) {
		snprintf(out, n, "-");
		return;
	}
	json_t *groups = json_object(); /* name -> [count, used, total], in first-seen order below */
	json_t *order = json_array();
	size_t i;
	json_t *g;
	json_array_foreach(gpus, i, g) {
		const char *name = cr_json_get_str(g, "name", "?");
		json_t *e = json_object_get(groups, name);
		if (!e) {
			e = json_pack("[iII]", 0, (json_int_t)0, (json_int_t)0);
			json_object_set_new(groups, name, e);
			json_array_append_new(order, json_string(name));
		}
		json_array_set_new(e, 0, json_integer(json_integer_value(json_array_get(e, 0)) + 1));
		json_array_set_new(e, 1, json_integer(json_integer_value(json_array_get(e, 1)) +
						     cr_json_get_int(g, "memory_used", 0)));
		json_array_set_new(e, 2, json_integer(json_integer_value(json_array_get(e, 2)) +
						     cr_json_get_int(g, "memory_total", 0)));
	}
	struct cr_buf b = CR_BUF_INIT(n > 0 ? n - 1 : 0);
	json_t *nm;
	json_array_foreach(order, i, nm) {
		json_t *e = json_object_get(groups, json_string_value(nm));
		long long count = json_integer_value(json_array_get(e, 0));
		char mem[64], times[24] = "";
		cr_cli_mem_pair(json_integer_value(json_array_get(e, 1)), json_integer_value(json_array_get(e, 2)), mem,
				sizeof(mem));
		if (count > 1)
			snprintf(times, sizeof(times), "%lldx ", count);
		if (cr_buf_addf(&b, "%s%s%s %s", i ? (char[]){ CR_TABLE_NL, 0 } : "", times, json_string_value(nm), mem))
			break;
	}
	snprintf(out, n, "%s", cr_buf_str(&b));
	cr_buf_release(&b);
	json_decref(groups);
	json_decref(order);
}

static void print_workers(json_t *workers)
{
	struct cr_table t = { 9, { 0 }, json_array() };
	static const char *const head[] = { "NAME", "STATE", "ADDRESS", "LABELS", "GPUS", "CPU", "RAM", "CHECKS",
					    "LAST SEEN" };
	cr_table_row(&t, head);
	size_t i;
	json_t *w;
	json_array_foreach(workers, i, w) {
		json_t *sys = json_object_get(w, "system");
		json_t *mem = json_object_get(sys, "memory");
		char addr[300], gpus[400], cpu[32], ram[64], seen[32];
		snprintf(addr, sizeof(addr), "%s:%lld", cr_json_get_str(w, "address", ""), cr_json_get_int(w, "port", 0));
		gpu_summary(json_object_get(w, "gpus"), gpus, sizeof(gpus));
		long long cores = cr_json_get_int(json_object_get(sys, "cpu"), "cores", 0);
		snprintf(cpu, sizeof(cpu), cores ? "%lld cores" : "-", cores);
		long long total = cr_json_get_int(mem, "total", 0);
		if (total)
			cr_cli_mem_pair(total - cr_json_get_int(mem, "available", 0), total, ram, sizeof(ram));
		else
			snprintf(ram, sizeof(ram), "-");
		json_t *ls = json_object_get(w, "last_seen");
		ago(json_is_string(ls) ? json_string_value(ls) : NULL, seen, sizeof(seen));
		json_t *cs = json_object_get(w, "checks_summary");
		char checks[48];
		long long warns = cr_json_get_int(cs, "warn", 0), fails = cr_json_get_int(cs, "fail", 0);
		if (warns || fails)
			snprintf(checks, sizeof(checks), "%lld fail, %lld warn", fails, warns);
		else
			snprintf(checks, sizeof(checks), "ok");
		char labels[256] = "";
		size_t ll = 0;
		const char *lk;
		json_t *lv;
		json_object_foreach(json_object_get(w, "labels"), lk, lv)
			if (ll < sizeof(labels))
				ll += (size_t)snprintf(labels + ll, sizeof(labels) - ll, "%s%s=%s", ll ? "," : "", lk,
						       json_string_value(lv) ? json_string_value(lv) : "");
		char state[64];
		snprintf(state, sizeof(state), "%s%s", cr_json_get_str(w, "state", ""),
			 json_is_true(json_object_get(w, "draining")) ? " (draining)"
			 : json_is_true(json_object_get(w, "cordoned")) ? " (cordoned)"
								  : "");
		const char *row[] = { cr_json_get_str(w, "name", ""), state, addr,
				      *labels ? labels : "-", gpus, cpu, ram, checks, seen };
		cr_table_row(&t, row);
	}
	cr_table_print(&t);
	json_array_foreach(workers, i, w) {
		const char *msg = cr_json_get_str(w, "state_message", "");
		if (*msg) {
			char *safe = cr_cli_safe(msg);
			printf("\n%s: %s", cr_json_get_str(w, "name", ""), safe);
			free(safe);
		}
	}
	if (json_array_size(workers) == 0)
		puts("\nno workers yet: start one with 'corral worker --server-url URL --token TOKEN'");
	else
		puts("");
}

static const char workers_usage[] =
	"usage: corral workers [--json] [--server-url URL]\n"
	"       corral workers show NAME|ID [--server-url URL]\n"
	"       corral workers cordon|uncordon|drain NAME|ID [--server-url URL]\n"
	"       corral workers rm NAME|ID [--force] [--server-url URL]\n"
	"\n"
	"List the workers with their state, GPUs and memory, or show one as JSON.\n"
	"cordon: no new instances go to the worker; those on it keep serving.\n"
	"drain: cordon, and move each instance elsewhere: its replacement runs\n"
	"  before the old one stops; an instance with nowhere to go keeps serving.\n"
	"uncordon: the worker takes new instances again (and a drain stops).\n"
	"rm: remove the worker from the cluster. A ready worker needs --force: its\n"
	"  engines are restarted elsewhere. Stop the worker first, or it registers again.\n";

static int parse_common(int argc, char **argv, const char *usage, const char **url, bool *as_json)
{
	const struct cr_opt opts[] = {
		{ "server-url", 0, CR_OPT_STR, url, NULL, 0 },
		{ "json", 0, CR_OPT_FLAG, as_json, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	return cr_cli_parse(argc, argv, usage, opts);
}

int cr_cmd_workers(int argc, char **argv)
{
	const char *url = NULL;
	bool as_json = false, force = false;
	const struct cr_opt opts[] = {
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "force", 0, CR_OPT_FLAG, &force, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int rc = cr_cli_parse(argc, argv, workers_usage, opts);
	if (rc >= 0)
		return rc;
	const char *verb = optind < argc ? argv[optind] : "list";
	const char *target = optind + 1 < argc ? argv[optind + 1] : NULL;
	bool cordon = !strcmp(verb, "cordon") || !strcmp(verb, "uncordon") || !strcmp(verb, "drain");
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = NULL;
	if (!strcmp(verb, "list") || !strcmp(verb, "ls")) {
		ans = cr_cli_api(&cl, "GET", "/api/workers", NULL, &err);
		if (ans && !as_json)
			print_workers(json_object_get(ans, "workers"));
		else if (ans)
			cr_cli_print_json(json_incref(json_object_get(ans, "workers")));
	} else if (cordon && target) {
		char *path = cr_xasprintf("/api/workers/%s/%s", target, verb);
		ans = cr_cli_api(&cl, "POST", path, NULL, &err);
		free(path);
		long long here = cr_json_get_int(ans, "instances_here", 0);
		const char *name = cr_json_get_str(ans, "name", target);
		if (ans && as_json)
			cr_cli_print_json(json_incref(ans));
		else if (ans && !strcmp(verb, "uncordon"))
			printf("worker '%s' takes new instances again\n", name);
		else if (ans && !strcmp(verb, "cordon"))
			printf("worker '%s' cordoned: no new instances go there; its %lld instance(s) keep serving\n", name,
			       here);
		else if (ans)
			printf("worker '%s' draining: %lld instance(s) move elsewhere, each stopping once its replacement "
			       "runs; follow with 'corral instances'\n",
			       name, here);
	} else if ((!strcmp(verb, "show") || !strcmp(verb, "rm")) && target) {
		bool rm = !strcmp(verb, "rm");
		char *path = cr_xasprintf("/api/workers/%s%s", target, rm && force ? "?force=1" : "");
		ans = cr_cli_api(&cl, rm ? "DELETE" : "GET", path, NULL, &err);
		free(path);
		if (ans && rm)
			printf("removed worker '%s' (%s)\n", cr_json_get_str(ans, "name", ""), cr_json_get_str(ans, "deleted", ""));
		else if (ans)
			cr_cli_print_json(json_incref(ans));
	} else {
		fputs(workers_usage, stderr);
		cr_cli_release(&cl);
		return 2;
	}
	cr_cli_release(&cl);
	rc = ans ? 0 : cr_cmd_fail(&err);
	json_decref(ans);
	return rc;
}

int cr_cmd_gpus(int argc, char **argv)
{
	static const char usage[] = "usage: corral gpus [--json] [--server-url URL]\n\nList every GPU of every worker.\n";
	const char *url = NULL;
	bool as_json = false;
	int rc = parse_common(argc, argv, usage, &url, &as_json);
	if (rc >= 0)
		return rc;
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(&cl, "GET", "/api/workers", NULL, &err);
	cr_cli_release(&cl);
	if (!ans)
		return cr_cmd_fail(&err);
	json_t *all = json_array();
	struct cr_table t = { 7, { 0 }, json_array() };
	static const char *const head[] = { "WORKER", "GPU", "VENDOR", "NAME", "MEMORY", "UTIL", "TEMP" };
	cr_table_row(&t, head);
	size_t i, k;
	json_t *w, *g;
	json_array_foreach(json_object_get(ans, "workers"), i, w) {
		json_array_foreach(json_object_get(w, "gpus"), k, g) {
			char idx[16], mem[64], util[16], temp[16];
			snprintf(idx, sizeof(idx), "%lld", cr_json_get_int(g, "index", 0));
			cr_cli_mem_pair(cr_json_get_int(g, "memory_used", 0), cr_json_get_int(g, "memory_total", 0), mem, sizeof(mem));
			long long u = cr_json_get_int(g, "utilization", -1), tc = cr_json_get_int(g, "temperature", -1);
			snprintf(util, sizeof(util), u >= 0 ? "%lld%%" : "-", u);
			snprintf(temp, sizeof(temp), tc >= 0 ? "%lldC" : "-", tc);
			const char *row[] = { cr_json_get_str(w, "name", ""), idx, cr_json_get_str(g, "vendor", ""),
					      cr_json_get_str(g, "name", ""), mem, util, temp };
			cr_table_row(&t, row);
			json_t *copy = json_deep_copy(g);
			json_object_set_new(copy, "worker", json_string(cr_json_get_str(w, "name", "")));
			json_array_append_new(all, copy);
		}
	}
	if (as_json) {
		json_decref(t.rows);
		cr_cli_print_json(all);
	} else {
		cr_table_print(&t);
		if (json_array_size(all) == 0)
			puts("no GPUs: every worker is CPU-only (see 'corral workers' for their notes)");
		json_decref(all);
	}
	json_decref(ans);
	return 0;
}

static void print_doctor(json_t *r)
{
	json_t *sys = json_object_get(r, "system");
	json_t *cpu = json_object_get(sys, "cpu"), *mem = json_object_get(sys, "memory"), *os = json_object_get(sys, "os");
	json_t *disk = json_object_get(sys, "disk"), *ports = json_object_get(sys, "ephemeral_ports");
	char a[64], b[64];
	printf("node        %s (%s, kernel %s, %s)\n", cr_json_get_str(sys, "hostname", "?"), cr_json_get_str(os, "name", "?"),
	       cr_json_get_str(os, "kernel", "?"), cr_json_get_str(cpu, "arch", "?"));
	printf("cpu         %s, %lld cores\n", cr_json_get_str(cpu, "model", "?"), cr_json_get_int(cpu, "cores", 0));
	cr_bytes_human((uint64_t)cr_json_get_int(mem, "available", 0), a, sizeof(a));
	cr_bytes_human((uint64_t)cr_json_get_int(mem, "total", 0), b, sizeof(b));
	printf("memory      %s available of %s\n", a, b);
	cr_bytes_human((uint64_t)cr_json_get_int(disk, "free", 0), a, sizeof(a));
	cr_bytes_human((uint64_t)cr_json_get_int(disk, "total", 0), b, sizeof(b));
	printf("disk        %s free of %s (%s)\n", a, b, cr_json_get_str(disk, "path", "?"));
	cr_bytes_human((uint64_t)cr_json_get_int(sys, "shm_bytes", 0), a, sizeof(a));
	printf("/dev/shm    %s\n", a);
	if (json_array_size(ports) == 2)
		printf("ephemeral   ports %lld-%lld\n", (long long)json_integer_value(json_array_get(ports, 0)),
		       (long long)json_integer_value(json_array_get(ports, 1)));
	const char *k;
	json_t *d;
	json_object_foreach(json_object_get(r, "drivers"), k, d)
		printf("driver      %s %s (CUDA %s)\n", k, cr_json_get_str(d, "driver_version", "?"),
		       cr_json_get_str(d, "cuda_driver_version", "?"));
	size_t i;
	json_t *g;
	json_t *gpus = json_object_get(r, "gpus");
	if (json_array_size(gpus) == 0)
		puts("gpus        none (CPU-only node)");
	json_array_foreach(gpus, i, g) {
		cr_cli_mem_pair(cr_json_get_int(g, "memory_used", 0), cr_json_get_int(g, "memory_total", 0), a, sizeof(a));
		printf("gpu %-7lld %s %s, %s, %s\n", cr_json_get_int(g, "index", 0), cr_json_get_str(g, "vendor", "?"),
		       cr_json_get_str(g, "name", "?"), a, cr_json_get_str(g, "uuid", ""));
	}
	json_array_foreach(json_object_get(r, "engines"), i, g)
		printf("engine      %s %s (%s)\n", cr_json_get_str(g, "name", "?"), cr_json_get_str(g, "version", "?"),
		       cr_json_get_str(g, "path", "?"));
	if (!json_array_size(json_object_get(r, "engines")))
		puts("engines     none found (install llama-server on PATH, or set CORRAL_ENGINE_PATH)");
	json_array_foreach(json_object_get(r, "notes"), i, g)
		printf("note        %s\n", json_string_value(g));
}

/* corral doctor --cluster: every worker's checks from the server, then who
 * reaches whom and in how long, as the workers measured it. */
static int doctor_cluster(const char *url, bool as_json)
{
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(&cl, "GET", "/api/workers", NULL, &err);
	json_t *health = ans && !as_json ? cr_cli_api(&cl, "GET", "/api/health", NULL, NULL) : NULL;
	cr_cli_release(&cl);
	if (!ans)
		return cr_cmd_fail(&err);
	if (health) { /* the servers: one, or a leader and its followers on PostgreSQL */
		json_t *servers = json_object_get(health, "servers");
		printf("store: %s", cr_json_get_str(health, "store", "?"));
		size_t k;
		json_t *sv;
		json_array_foreach(servers, k, sv)
			printf("%s%s (%s)", k ? ", " : "; servers: ", cr_json_get_str(sv, "name", "?"),
			       json_is_true(json_object_get(sv, "leader")) ? "leads" : "follows");
		printf("\n");
		json_decref(health);
	}
	json_t *ws = json_object_get(ans, "workers");
	int fails_total = 0;
	size_t i, j;
	json_t *w, *x;
	json_array_foreach(ws, i, w) {
		int warns, fails;
		cr_checks_worst(json_object_get(w, "checks"), &warns, &fails);
		fails_total += fails;
	}
	if (as_json) {
		cr_cli_print_json(ans);
		return fails_total ? 1 : 0;
	}
	json_array_foreach(ws, i, w) {
		int warns, fails;
		json_t *checks = json_object_get(w, "checks");
		cr_checks_worst(checks, &warns, &fails);
		printf("%s (%s): %zu checks, %d warn, %d fail\n", cr_json_get_str(w, "name", "?"),
		       cr_json_get_str(w, "state", "?"), json_array_size(checks), warns, fails);
		json_t *c;
		json_array_foreach(checks, j, c) {
			if (!strcmp(cr_json_get_str(c, "level", "pass"), "pass"))
				continue;
			json_t *one = json_pack("[O]", c);
			cr_cli_print_checks(one, "  ");
			json_decref(one);
		}
	}
	/* round trips: rows measure columns */
	struct cr_table t = { .rows = json_array() };
	const char *cells[CR_TABLE_MAX_COLS];
	size_t n = json_array_size(ws) < CR_TABLE_MAX_COLS - 1 ? json_array_size(ws) : CR_TABLE_MAX_COLS - 1;
	t.ncols = (int)n + 1;
	cells[0] = "RTT ms (row to column)";
	for (j = 0; j < n; j++)
		cells[j + 1] = cr_json_get_str(json_array_get(ws, j), "name", "?");
	cr_table_row(&t, cells);
	char buf[CR_TABLE_MAX_COLS][32];
	for (i = 0; i < n; i++) {
		w = json_array_get(ws, i);
		cells[0] = cr_json_get_str(w, "name", "?");
		for (j = 0; j < n; j++) {
			x = json_array_get(ws, j);
			json_t *p = json_object_get(json_object_get(w, "peers"), cr_json_get_str(x, "id", ""));
			if (i == j)
				snprintf(buf[j], sizeof(buf[j]), "-");
			else if (json_is_number(json_object_get(p, "rtt_ms")))
				snprintf(buf[j], sizeof(buf[j]), "%.2f", json_number_value(json_object_get(p, "rtt_ms")));
			else if (p)
				snprintf(buf[j], sizeof(buf[j]), "unreachable");
			else
				snprintf(buf[j], sizeof(buf[j]), "?");
			cells[j + 1] = buf[j];
		}
		cr_table_row(&t, cells);
	}
	if (n > 1) {
		puts("");
		cr_table_print(&t);
		json_array_foreach(ws, i, w) {
			const char *k;
			json_t *p;
			json_object_foreach(json_object_get(w, "peers"), k, p)
				if (json_object_get(p, "error"))
					printf("%s cannot reach %s: %s\n", cr_json_get_str(w, "name", "?"),
					       cr_json_get_str(p, "name", k), cr_json_get_str(p, "error", ""));
		}
	} else {
		json_decref(t.rows);
	}
	if (json_array_size(ws) > n)
		printf("(round trips shown for the first %zu workers; --json has them all)\n", n);
	json_decref(ans);
	return fails_total ? 1 : 0;
}

int cr_cmd_doctor(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral doctor [--json] [--data-dir DIR] [--resources FILE] [--engines-config FILE]\n"
		"                     [--port-range LO-HI]\n"
		"       corral doctor --cluster [--json] [--server-url URL]\n"
		"\n"
		"Report what this node has, as a worker here would detect it: CPU, memory,\n"
		"disk, /dev/shm, ports, GPUs and drivers, installed engines with their\n"
		"versions, and notes on anything missing; then every node check (pass, warn,\n"
		"fail) with the measured values and the fix. Needs no server. Exits 1 when a\n"
		"check fails.\n"
		"--cluster asks the server instead: every worker's checks (warnings and failures\n"
		"with their fixes) and the round-trip times the workers measured to each other.\n";
	struct cr_detect_opts o = { ".", NULL, NULL, NULL, NULL };
	const char *engines_config = NULL, *range = NULL;
	int port_lo = 20000, port_hi = 20999;
	bool cluster = false;
	const char *url = NULL;
	bool as_json = false;
	const struct cr_opt opts[] = {
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "data-dir", 0, CR_OPT_STR, &o.data_dir, NULL, 0 },
		{ "resources", 0, CR_OPT_STR, &o.resources_file, NULL, 0 },
		{ "engines-config", 0, CR_OPT_STR, &engines_config, NULL, 0 },
		{ "port-range", 0, CR_OPT_STR, &range, NULL, 0 },
		{ "cluster", 0, CR_OPT_FLAG, &cluster, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	if (range && (sscanf(range, "%d-%d", &port_lo, &port_hi) != 2 || port_lo < 1 || port_hi > 65535 ||
		      port_lo > port_hi)) {
		fprintf(stderr, "corral doctor: --port-range takes LO-HI, e.g. 20000-20999, not '%s'\n", range);
		return 2;
	}
	if (cluster)
		return doctor_cluster(url, as_json);
	struct cr_engine_catalog cat;
	struct cr_err err = CR_ERR_INIT;
	if (cr_engines_load(engines_config, &cat, &err))
		return cr_cmd_fail(&err);
	json_t *r = cr_detect_node(&o);
	json_object_set_new(r, "engines", cr_engines_discover(&cat, json_object_get(r, "notes")));
	cr_engines_release(&cat);
	cr_detect_check_facts(r, port_lo, port_hi);
	json_t *checks = json_array();
	cr_checks_node(r, 0, checks);
	json_object_set_new(r, "checks", checks);
	int fails;
	cr_checks_worst(checks, NULL, &fails);
	if (as_json) {
		cr_cli_print_json(r);
		return fails ? 1 : 0;
	}
	print_doctor(r);
	puts("\nchecks");
	cr_cli_print_checks(checks, "  ");
	json_decref(r);
	return fails ? 1 : 0;
}

int cr_cmd_users(int argc, char **argv)
{
	static const char usage[] = "usage: corral users [list] [--json]\n"
				    "       corral users create NAME [--role user|admin] [--password-stdin]\n"
				    "       corral users rm NAME\n"
				    "       corral users passwd NAME [--password-stdin]\n"
				    "       corral users limits NAME [--models M1,M2] [--rpm N] [--tpm N] [--daily-tokens N]\n"
				    "                                [--monthly-tokens N]\n"
				    "\n"
				    "Users of the cluster (admins only). Users manage their own API keys;\n"
				    "deleting a user revokes their sessions and keys. 'passwd' sets a new password\n"
				    "and ends the user's sessions. 'limits' caps all the user's keys together (0:\n"
				    "none; token quotas per UTC day and month); their new keys cannot ask for more.\n";
	const char *role = NULL, *url = NULL;
	bool from_stdin = false, as_json = false;
	json_t *lim = json_object();
	const struct cr_opt opts[] = {
		{ "role", 0, CR_OPT_STR, &role, NULL, 0 },
		{ "models", 0, CR_OPT_FIELD_CSV, lim, "models", 0 },
		{ "rpm", 0, CR_OPT_FIELD_COUNT, lim, "rpm", 1000000 },
		{ "tpm", 0, CR_OPT_FIELD_COUNT, lim, "tpm", 1000000000 },
		{ "daily-tokens", 0, CR_OPT_FIELD_COUNT, lim, "daily_tokens", 1LL << 50 },
		{ "monthly-tokens", 0, CR_OPT_FIELD_COUNT, lim, "monthly_tokens", 1LL << 50 },
		{ "password-stdin", 0, CR_OPT_FLAG, &from_stdin, NULL, 0 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0) {
		json_decref(lim);
		return prc;
	}
	const char *verb = optind < argc ? argv[optind] : "list";
	bool create = !strcmp(verb, "create"), rm = !strcmp(verb, "rm"), passwd = !strcmp(verb, "passwd");
	bool limits = !strcmp(verb, "limits");
	if ((create || rm || passwd || limits) ? optind + 2 != argc : strcmp(verb, "list") != 0) {
		json_decref(lim);
		fputs(usage, stderr);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = NULL;
	if (create) {
		char *pw = read_password(from_stdin);
		if (!pw) {
			cr_cli_release(&cl);
			json_decref(lim);
			fprintf(stderr, "corral: no password given\n");
			return 2;
		}
		json_t *body = json_pack("{s:s,s:s,s:s}", "username", argv[optind + 1], "password", pw, "role",
					 role ? role : "user");
		char *text = cr_json_dump(body);
		ans = cr_cli_api(&cl, "POST", "/api/users", text, &err);
		memset(pw, 0, strlen(pw));
		free(pw);
		free(text);
		json_decref(body);
	} else if (rm) {
		char *path = cr_xasprintf("/api/users/%s", argv[optind + 1]);
		ans = cr_cli_api(&cl, "DELETE", path, NULL, &err);
		free(path);
	} else if (limits) {
		char *text = cr_json_dump(lim), *path = cr_xasprintf("/api/users/%s", argv[optind + 1]);
		ans = cr_cli_api(&cl, "PATCH", path, text, &err);
		free(text);
		free(path);
	} else if (passwd) {
		char *pw = read_secret(from_stdin, "new password: ");
		if (!pw) {
			cr_cli_release(&cl);
			json_decref(lim);
			fprintf(stderr, "corral: no password given\n");
			return 2;
		}
		json_t *body = json_pack("{s:s}", "password", pw);
		char *text = cr_json_dump(body), *path = cr_xasprintf("/api/users/%s/password", argv[optind + 1]);
		ans = cr_cli_api(&cl, "POST", path, text, &err);
		forget(pw);
		forget(text);
		free(path);
		json_decref(body);
	} else {
		ans = cr_cli_api(&cl, "GET", "/api/users", NULL, &err);
	}
	cr_cli_release(&cl);
	json_decref(lim);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(ans);
	if (limits) {
		char *shown = cr_json_dump(json_object_get(ans, "limits"));
		printf("limits of '%s': %s\n", cr_json_get_str(ans, "username", "?"), shown);
		free(shown);
	} else if (create)
		printf("created user '%s' (%s)\n", cr_json_get_str(ans, "username", "?"), cr_json_get_str(ans, "role", "?"));
	else if (rm)
		printf("deleted user '%s' with their sessions and keys\n", cr_json_get_str(ans, "deleted", "?"));
	else if (passwd)
		printf("password of '%s' changed; %lld session(s) ended\n", cr_json_get_str(ans, "username", "?"),
		       cr_json_get_int(ans, "sessions_ended", 0));
	else {
		struct cr_table t = { .ncols = 3, .rows = json_array() };
		const char *head[] = { "USERNAME", "ROLE", "LIMITS" };
		cr_table_row(&t, head);
		size_t i;
		json_t *u;
		json_array_foreach(json_object_get(ans, "users"), i, u) {
			json_t *l = json_object_get(u, "limits");
			struct cr_buf b = CR_BUF_INIT(4096);
			static const char *const f[] = { "rpm", "tpm", "daily_tokens", "monthly_tokens" };
			static const char *const unit[] = { "rpm", "tpm", "tokens/day", "tokens/month" };
			for (int k = 0; k < 4; k++)
				if (cr_json_get_int(l, f[k], 0))
					cr_buf_addf(&b, "%s%lld %s", b.len ? ", " : "", cr_json_get_int(l, f[k], 0), unit[k]);
			size_t j;
			json_t *m;
			json_array_foreach(json_object_get(l, "models"), j, m)
				cr_buf_addf(&b, "%s%s", b.len ? (j ? "," : ", models ") : "models ", json_string_value(m));
			const char *row[] = { cr_json_get_str(u, "username", "?"), cr_json_get_str(u, "role", "?"),
					      b.len ? cr_buf_str(&b) : "-" };
			cr_table_row(&t, row);
			cr_buf_release(&b);
		}
		cr_table_print(&t);
	}
	json_decref(ans);
	return 0;
}

int cr_cmd_token(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral token rotate [--json] [--server-url URL]\n"
		"\n"
		"Replace the cluster registration token (admins). The server keeps the new one in\n"
		"DATA_DIR/token; the old one registers no worker any more. Workers already in the\n"
		"cluster keep working: they prove themselves with their own secrets, also when they\n"
		"restart. Copy the new token to machines that are still to join.\n";
	const char *url = NULL;
	bool as_json = false;
	const struct cr_opt opts[] = {
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int rc = cr_cli_parse(argc, argv, usage, opts);
	if (rc >= 0)
		return rc;
	if (optind + 1 != argc || strcmp(argv[optind], "rotate") != 0) {
		fputs(usage, stderr);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(&cl, "POST", "/api/token/rotate", "{}", &err);
	char *server = cr_xstrdup(cl.url);
	cr_cli_release(&cl);
	if (!ans) {
		free(server);
		return cr_cmd_fail(&err);
	}
	if (as_json) {
		free(server);
		return cr_cli_print_json(ans);
	}
	printf("new cluster registration token: %s\n(kept on the server in %s)\n", cr_json_get_str(ans, "token", "?"),
	       cr_json_get_str(ans, "path", "DATA_DIR/token"));
	printf("registered workers keep working; a new machine joins with the token in a file (mode 0600):\n"
	       "  corral worker --server-url %s --token-file /etc/corral/token\n", server);
	const char *warn = cr_json_get_str(ans, "warning", NULL);
	if (warn)
		fprintf(stderr, "warning: %s\n", warn);
	free(server);
	json_decref(ans);
	return 0;
}

int cr_cmd_passwd(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral passwd [--password-stdin] [--server-url URL]\n"
		"\n"
		"Change your password: the current one, then the new one (8 characters or more),\n"
		"typed without echo, or two lines on standard input with --password-stdin. All your\n"
		"sessions end; this one is replaced by a new session. Changing the first admin's\n"
		"password deletes the server's DATA_DIR/initial_admin_password.\n";
	const char *url = NULL;
	bool from_stdin = false;
	const struct cr_opt opts[] = {
		{ "password-stdin", 0, CR_OPT_FLAG, &from_stdin, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	if (optind != argc) {
		fputs(usage, stderr);
		return 2;
	}
	char *current = read_secret(from_stdin, "current password: ");
	char *next = current ? read_secret(from_stdin, "new password: ") : NULL;
	char *again = next && !from_stdin && isatty(STDIN_FILENO) ? read_secret(false, "new password again: ") : NULL;
	struct cr_err err = CR_ERR_INIT;
	if (!current || !next) {
		forget(current);
		forget(next);
		cr_err_set(&err, CR_EINPUT, "type them, or pipe two lines with --password-stdin",
			   "the current and the new password are needed");
		return cr_cmd_fail(&err);
	}
	if (again && strcmp(again, next) != 0) {
		forget(current);
		forget(next);
		forget(again);
		cr_err_set(&err, CR_EINPUT, "type the same new password twice", "the new passwords differ");
		return cr_cmd_fail(&err);
	}
	forget(again);
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	json_t *body = json_pack("{s:s,s:s}", "current", current, "new", next);
	char *text = cr_json_dump(body);
	json_t *ans = cr_cli_api(&cl, "POST", "/api/auth/password", text, &err);
	forget(current);
	forget(next);
	forget(text);
	json_decref(body);
	int rc = 0;
	if (!ans)
		rc = cr_cmd_fail(&err);
	else if (keep_session(cl.url, cr_json_get_str(ans, "token", ""), &err))
		rc = cr_cmd_fail(&err);
	else
		puts("password changed; your other sessions have ended");
	json_decref(ans);
	cr_cli_release(&cl);
	return rc;
}

int cr_cmd_sessions(int argc, char **argv)
{
	static const char usage[] = "usage: corral sessions [list] [--json] [--server-url URL]\n"
				    "       corral sessions rm ID\n"
				    "\n"
				    "Your sessions (one per login), and ending one of them.\n";
	const char *url = NULL;
	bool as_json = false;
	const struct cr_opt opts[] = {
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	const char *verb = optind < argc ? argv[optind] : "list";
	bool rm = !strcmp(verb, "rm");
	if (rm ? optind + 2 != argc : strcmp(verb, "list") != 0 || optind + 1 < argc) {
		fputs(usage, stderr);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	char *path = rm ? cr_xasprintf("/api/auth/sessions/%s", argv[optind + 1]) : cr_xstrdup("/api/auth/sessions");
	json_t *ans = cr_cli_api(&cl, rm ? "DELETE" : "GET", path, NULL, &err);
	free(path);
	cr_cli_release(&cl);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(ans);
	if (rm) {
		printf("session %s ended\n", cr_json_get_str(ans, "revoked", "?"));
	} else {
		struct cr_table t = { .ncols = 4, .rows = json_array() };
		const char *head[] = { "ID", "CREATED", "EXPIRES", "" };
		cr_table_row(&t, head);
		size_t i;
		json_t *s;
		json_array_foreach(json_object_get(ans, "sessions"), i, s) {
			const char *row[] = { cr_json_get_str(s, "id", "?"), cr_json_get_str(s, "created_at", "?"),
					      cr_json_get_str(s, "expires_at", "?"),
					      json_is_true(json_object_get(s, "current")) ? "(this one)" : "" };
			cr_table_row(&t, row);
		}
		cr_table_print(&t);
	}
	json_decref(ans);
	return 0;
}

int cr_cmd_audit(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral audit [--since 7d|YYYY-MM-DD] [--action PREFIX] [--limit N] [--json] [--server-url URL]\n"
		"\n"
		"The audit trail (admins), newest first: who deployed, changed or deleted models,\n"
		"created or revoked keys, changed users and passwords, rotated the token, removed or\n"
		"drained workers, and who failed to log in, from which address and when. The server\n"
		"keeps it for --audit-days (90). --action model. shows the models' entries only.\n";
	const char *url = NULL, *since = NULL, *action = NULL;
	long long limit = 0;
	bool as_json = false;
	const struct cr_opt opts[] = {
		{ "since", 0, CR_OPT_STR, &since, NULL, 0 },
		{ "action", 0, CR_OPT_STR, &action, NULL, 0 },
		{ "limit", 0, CR_OPT_COUNT, &limit, NULL, 100000 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	if (optind != argc) {
		fputs(usage, stderr);
		return 2;
	}
	struct cr_buf q = CR_BUF_INIT(4096);
	cr_buf_addf(&q, "/api/audit?limit=%lld", limit ? limit : 200);
	cr_cli_query_add(&q, "since", since);
	cr_cli_query_add(&q, "action", action);
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(&cl, "GET", cr_buf_str(&q), NULL, &err);
	cr_buf_release(&q);
	cr_cli_release(&cl);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(ans);
	struct cr_table t = { .ncols = 6, .rows = json_array() };
	const char *head[] = { "AT", "ACTOR", "ADDRESS", "ACTION", "TARGET", "DETAIL" };
	cr_table_row(&t, head);
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(ans, "entries"), i, e) {
		json_t *d = json_object_get(e, "detail");
		char *detail = json_is_string(d) ? cr_xstrdup(json_string_value(d)) : cr_json_dump(d);
		const char *row[] = { cr_json_get_str(e, "at", ""), cr_json_get_str(e, "actor", ""),
				      cr_json_get_str(e, "address", ""), cr_json_get_str(e, "action", ""),
				      cr_json_get_str(e, "target", ""), detail };
		cr_table_row(&t, row);
		free(detail);
	}
	cr_table_print(&t);
	if (!json_array_size(json_object_get(ans, "entries")))
		puts("no entries");
	json_decref(ans);
	return 0;
}

/* ---- corral events ---- */

struct follow {
	struct cr_sse sse;
	long long last_id;
	bool as_json;
};

static void print_event(json_t *e, bool as_json)
{
	if (as_json) {
		char *text = cr_json_dump(e);
		puts(text);
		free(text);
	} else {
		char *msg = cr_cli_safe(cr_json_get_str(e, "message", ""));
		printf("%-24s  %-22s  %s\n", cr_json_get_str(e, "at", ""), cr_json_get_str(e, "kind", ""), msg);
		free(msg);
	}
	fflush(stdout);
}

static int follow_event(const char *event, const char *data, void *arg)
{
	struct follow *f = arg;
	(void)event;
	json_t *e = json_loads(data, 0, NULL);
	if (json_is_object(e)) {
		f->last_id = cr_json_get_int(e, "id", f->last_id);
		print_event(e, f->as_json);
	}
	json_decref(e);
	return 0;
}

static int follow_data(const char *data, size_t len, void *arg)
{
	struct follow *f = arg;
	return data ? cr_sse_feed(&f->sse, data, len, follow_event, f) != 0 : 0;
}

int cr_cmd_events(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral events [-f|--follow] [--limit N] [--json] [--server-url URL]\n"
		"\n"
		"What happened in the cluster, oldest first: workers joining, lost and back, checks\n"
		"failing and recovering, models deployed, changed and deleted, placements decided or\n"
		"refused (with why), instance states with their causes, download milestones. The\n"
		"server keeps them --events-days (7).\n"
		"\n"
		"  -f, --follow   keep printing new events as they happen (resumes after a lost\n"
		"                 connection without missing any)\n"
		"  --limit N      the last N events (default 50)\n"
		"  --json         one JSON object per line\n";
	const char *url = NULL;
	long long limit = 0;
	bool as_json = false, follow = false;
	const struct cr_opt opts[] = {
		{ "follow", 'f', CR_OPT_FLAG, &follow, NULL, 0 },
		{ "limit", 0, CR_OPT_COUNT, &limit, NULL, 10000 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	if (optind != argc) {
		fputs(usage, stderr);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	char path[64];
	snprintf(path, sizeof(path), "/api/events?limit=%lld", limit ? limit : 50);
	json_t *ans = cr_cli_api(&cl, "GET", path, NULL, &err);
	if (!ans) {
		cr_cli_release(&cl);
		return cr_cmd_fail(&err);
	}
	struct follow f = { .last_id = 0, .as_json = as_json };
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(ans, "events"), i, e) {
		print_event(e, as_json);
		f.last_id = cr_json_get_int(e, "id", f.last_id);
	}
	if (!follow && !as_json && !json_array_size(json_object_get(ans, "events")))
		puts("no events");
	json_decref(ans);
	int backoff = 1;
	while (follow) { /* each connection resumes after the last event printed */
		char *u = cr_xasprintf("%s/api/events?follow=1&after=%lld", cl.url, f.last_id);
		cr_sse_init(&f.sse, 1 << 20);
		long status = 0;
		long long before = f.last_id;
		int rc = cr_http_stream(u, cl.token, 60, follow_data, &f, &status, &err);
		cr_sse_release(&f.sse);
		free(u);
		if (status == 401 || status == 403) {
			cr_cli_release(&cl);
			return cr_cmd_fail(&err);
		}
		if (rc)
			fprintf(stderr, "corral: event stream lost (%s); reconnecting\n", err.message);
		backoff = f.last_id > before ? 1 : backoff < 16 ? backoff * 2 : 30;
		sleep((unsigned)backoff);
		err = (struct cr_err)CR_ERR_INIT;
	}
	cr_cli_release(&cl);
	return 0;
}

/* ---- corral files ---- */

static int files_rm(struct cr_cli *cl, const char *worker, const char *file)
{
	struct cr_buf q = CR_BUF_INIT(4096);
	cr_buf_adds(&q, "/api/files");
	cr_cli_query_add(&q, "worker", worker);
	cr_cli_query_add(&q, "file", file);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(cl, "DELETE", cr_buf_str(&q), NULL, &err);
	cr_buf_release(&q);
	if (!ans)
		return cr_cmd_fail(&err);
	size_t i, k;
	json_t *w, *f;
	int asked = 0, gone = 0;
	json_array_foreach(json_object_get(ans, "removing"), i, w)
		asked += (int)json_array_size(json_object_get(w, "files"));
	/* the workers remove them and report again: wait for that, 15 s at most */
	for (int t = 0; t < 150 && gone < asked; t++) {
		usleep(100000);
		json_t *now = cr_cli_api(cl, "GET", "/api/files", NULL, &err);
		if (!now)
			break;
		gone = asked;
		json_array_foreach(json_object_get(ans, "removing"), i, w) {
			json_t *wf = NULL, *x;
			size_t j;
			json_array_foreach(json_object_get(now, "workers"), j, x)
				if (!strcmp(cr_json_get_str(x, "worker", ""), cr_json_get_str(w, "worker", "")))
					wf = json_object_get(x, "files");
			json_array_foreach(json_object_get(w, "files"), k, f)
				json_array_foreach(wf, j, x)
					if (!strcmp(cr_json_get_str(x, "file", ""), json_string_value(f)))
						gone--;
		}
		json_decref(now);
	}
	json_array_foreach(json_object_get(ans, "removing"), i, w)
		json_array_foreach(json_object_get(w, "files"), k, f)
			printf("%s: %s\n", cr_json_get_str(w, "worker", ""), json_string_value(f));
	printf("%d of %d file(s) removed%s\n", gone, asked,
	       gone < asked ? " (a worker keeps a file an instance there still uses, or is not connected)" : "");
	json_decref(ans);
	return gone < asked ? 1 : 0;
}

int cr_cmd_files(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral files [--worker W] [--json] [--server-url URL]\n"
		"       corral files rm [FILE | --unused] [--worker W] [--server-url URL]\n"
		"\n"
		"The model files each worker keeps in its cache (downloads of url and hub models):\n"
		"size, source, the models that use it and when it was last used. 'rm' removes a file\n"
		"(admins), or with --unused every file no model uses; a worker's --cache-max removes\n"
		"the least recently used unused files by itself.\n";
	const char *url = NULL, *worker = NULL;
	bool as_json = false, unused = false;
	const struct cr_opt opts[] = {
		{ "worker", 0, CR_OPT_STR, &worker, NULL, 0 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "unused", 0, CR_OPT_FLAG, &unused, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	bool rm = optind < argc && !strcmp(argv[optind], "rm");
	const char *file = rm && optind + 1 < argc ? argv[optind + 1] : NULL;
	if ((!rm && optind != argc) || (rm && optind + (file ? 2 : 1) != argc) || (rm && !file == !unused)) {
		fputs(usage, stderr);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	if (rm) {
		int rc = files_rm(&cl, worker, file);
		cr_cli_release(&cl);
		return rc;
	}
	struct cr_buf q = CR_BUF_INIT(4096);
	cr_buf_adds(&q, "/api/files");
	cr_cli_query_add(&q, "worker", worker);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(&cl, "GET", cr_buf_str(&q), NULL, &err);
	cr_buf_release(&q);
	cr_cli_release(&cl);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(ans);
	struct cr_table t = { .ncols = 6, .rows = json_array() };
	const char *head[] = { "WORKER", "FILE", "SIZE", "MODELS", "LAST USED", "SOURCE" };
	cr_table_row(&t, head);
	size_t i, k, n = 0;
	json_t *w, *f;
	json_array_foreach(json_object_get(ans, "workers"), i, w) {
		json_array_foreach(json_object_get(w, "files"), k, f) {
			char size[32], models[256] = "";
			size_t len = 0, m;
			json_t *mv;
			cr_bytes_human((uint64_t)cr_json_get_int(f, "size", 0), size, sizeof(size));
			if (json_is_true(json_object_get(f, "partial")))
				snprintf(size + strlen(size), sizeof(size) - strlen(size), " (partial)");
			json_array_foreach(json_object_get(f, "models"), m, mv)
				if (len < sizeof(models))
					len += (size_t)snprintf(models + len, sizeof(models) - len, "%s%s", m ? "," : "",
								json_string_value(mv));
			const char *row[] = { cr_json_get_str(w, "worker", ""), cr_json_get_str(f, "file", ""), size,
					      *models ? models : "-", cr_json_get_str(f, "last_used", ""),
					      cr_json_get_str(f, "source", "") };
			cr_table_row(&t, row);
			n++;
		}
	}
	cr_table_print(&t);
	if (!n)
		puts("no cached files");
	json_decref(ans);
	return 0;
}
