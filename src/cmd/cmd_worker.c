/* `corral worker`: parse options and run the agent. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "base/err.h"
#include "base/mem.h"
#include "base/util.h"
#include "cmd/cmd.h"

static const char worker_usage[] =
	"usage: corral worker --server-url URL (--token-file FILE | --token T) [OPTIONS]\n"
	"\n"
	"Join a Corral server: detect this node's hardware, register, report status,\n"
	"and run the engines the server places here.\n"
	"Every option can also be set as a CORRAL_ variable: --port-range LO-HI as\n"
	"CORRAL_PORT_RANGE=LO-HI, --embedded as CORRAL_EMBEDDED=1; but CORRAL_DATA_DIR\n"
	"is the cluster's data directory, whose worker/ is the default --data-dir. The\n"
	"command line wins.\n"
	"\n"
	"  --server-url URL         the server, e.g. http://10.0.0.1:8080 ($CORRAL_SERVER_URL)\n"
	"  --token-file FILE        read the cluster registration token from FILE (the server's\n"
	"                           DATA_DIR/token): it never shows in ps\n"
	"  --token T                the token itself ($CORRAL_TOKEN); visible to ps, prefer --token-file\n"
	"  --name N                 worker name (default: host name)\n"
	"  --data-dir DIR           keeps the worker's identity (default $CORRAL_DATA_DIR/worker,\n"
	"                           else /var/lib/corral/worker as root, else ~/.local/share/corral/worker)\n"
	"  --worker-port P          port for /healthz and engine traffic (default 10150)\n"
	"  --listen-host H          address to listen on (default 0.0.0.0)\n"
	"  --advertise-address A    address the server and other workers use to reach this node\n"
	"                           (default: the address the server sees)\n"
	"  --labels k=v,...         labels for placement selectors\n"
	"  --resources FILE         declare or override devices (JSON, see docs/ops.md)\n"
	"  --engines-config FILE    add or replace engine definitions (JSON, see docs/engines.md)\n"
	"  --port-range LO-HI       ports for engines (default 20000-20999, outside the ephemeral range)\n"
	"  --embedded               run as a server's embedded worker: never offer or start Ray\n"
	"  --allow-engine-args F,.. engine flags that read or write files on this node, refused\n"
	"                           otherwise (e.g. --log-file,--slot-save-path; see docs/engines.md)\n"
	"  --restart-backoff S      first delay before restarting a failed engine (default 10, doubling\n"
	"                           to 300)\n"
	"  --status-interval S      seconds between status reports (default 5)\n"
	"  -h, --help               this text\n";

static char *default_dir(void)
{
	const char *env = getenv("CORRAL_DATA_DIR");
	if (env && *env)
		return cr_xasprintf("%s/worker", env);
	if (geteuid() == 0)
		return cr_xstrdup("/var/lib/corral/worker");
	const char *home = getenv("HOME");
	return cr_xasprintf("%s/.local/share/corral/worker", home ? home : ".");
}

static const struct option longopts[] = {
	{ "server-url", required_argument, NULL, 'u' }, { "token", required_argument, NULL, 't' },
	{ "name", required_argument, NULL, 'n' },       { "data-dir", required_argument, NULL, 'd' },
	{ "worker-port", required_argument, NULL, 'p' }, { "listen-host", required_argument, NULL, 'H' },
	{ "advertise-address", required_argument, NULL, 'a' }, { "labels", required_argument, NULL, 'l' },
	{ "resources", required_argument, NULL, 'r' },  { "engines-config", required_argument, NULL, 'E' },
	{ "token-file", required_argument, NULL, 'T' },
	{ "port-range", required_argument, NULL, 'R' },  { "embedded", no_argument, NULL, 'M' },  { "restart-backoff", required_argument, NULL, 'B' },
	{ "allow-engine-args", required_argument, NULL, 'A' },  { "status-interval", required_argument, NULL, 's' },
	{ "help", no_argument, NULL, 'h' },             { NULL, 0, NULL, 0 },
};

static int worker_main(int argc, char **argv)
{
	struct cr_agent_config cfg = { getenv("CORRAL_SERVER_URL"), getenv("CORRAL_TOKEN"), NULL, NULL, NULL, 10150, NULL,
				       NULL, NULL, 5, NULL, 0, 0, 0, false, NULL };
	char *dir = NULL, *file_token = NULL;
	long long v;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'u': cfg.server_url = optarg; break;
		case 't': cfg.token = optarg; break;
		case 'T': {
			char *text = NULL;
			struct cr_err ferr = CR_ERR_INIT;
			if (cr_file_read(optarg, 4096, &text, NULL, &ferr) != 0) {
				fprintf(stderr, "corral worker: cannot read --token-file '%s': %s\nfix: copy the server's "
						"DATA_DIR/token there (mode 0600)\n", optarg, ferr.message);
				return 2;
			}
			free(file_token);
			file_token = cr_xstrdup(cr_trim(text));
			memset(text, 0, strlen(text));
			free(text);
			cfg.token = *file_token ? file_token : NULL;
			break;
		}
		case 'n': cfg.name = optarg; break;
		case 'd': cfg.data_dir = optarg; break;
		case 'H': cfg.listen_host = optarg; break;
		case 'a': cfg.advertise_address = optarg; break;
		case 'l': cfg.labels = optarg; break;
		case 'r': cfg.resources_file = optarg; break;
		case 'E': cfg.engines_config = optarg; break;
		case 'M': cfg.no_ray = true; break;
		case 'A': cfg.allow_args = optarg; break;
		case 'R':
			if (sscanf(optarg, "%d-%d", &cfg.port_lo, &cfg.port_hi) != 2 || cfg.port_lo < 1 || cfg.port_hi > 65535 ||
			    cfg.port_lo > cfg.port_hi) {
				fprintf(stderr, "corral worker: --port-range wants LO-HI, e.g. 20000-20999, not '%s'\n", optarg);
				return 2;
			}
			break;
		case 'B': {
			long long secs;
			if (!cr_parse_int(optarg, 1, 300, &secs)) {
				fprintf(stderr, "corral worker: --restart-backoff wants seconds from 1 to 300, not '%s'\n", optarg);
				return 2;
			}
			cfg.restart_backoff_s = (int)secs;
			break;
		}
		case 'p':
			if (!cr_parse_int(optarg, 1, 65535, &v)) {
				fprintf(stderr, "corral worker: --worker-port must be 1-65535, not '%s'\n", optarg);
				return 2;
			}
			cfg.worker_port = (int)v;
			break;
		case 's':
			if (!cr_parse_int(optarg, 1, 3600, &v)) {
				fprintf(stderr, "corral worker: --status-interval must be 1-3600 seconds, not '%s'\n", optarg);
				return 2;
			}
			cfg.status_interval_s = (int)v;
			break;
		case 'h': fputs(worker_usage, stdout); return 0;
		default: fputs(worker_usage, stderr); return 2;
		}
	}
	if (!cfg.server_url || !cfg.token) {
		free(file_token);
		fprintf(stderr, "corral worker: %s is required\nfix: %s\n", cfg.server_url ? "--token-file (or --token)" : "--server-url",
			cfg.server_url ? "copy the server's DATA_DIR/token file here and pass --token-file FILE"
				       : "pass the server's address, e.g. --server-url http://10.0.0.1:8080");
		return 2;
	}
	if (!cfg.data_dir)
		cfg.data_dir = dir = default_dir();
	/* the engines this worker starts inherit its environment: the cluster
	 * token must not be in it (the embedded worker gets it there) */
	char *token = cr_xstrdup(cfg.token);
	cfg.token = token;
	unsetenv("CORRAL_TOKEN");
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_agent_run(&cfg, &err);
	memset(token, 0, strlen(token));
	free(token);
	if (file_token)
		memset(file_token, 0, strlen(file_token));
	free(file_token);
	free(dir);
	return rc ? cr_cmd_fail(&err) : 0;
}

int cr_cmd_worker(int argc, char **argv)
{
	/* CORRAL_DATA_DIR keeps its meaning: the cluster's data directory, whose
	 * worker/ subdirectory is the worker's default --data-dir */
	static const char *const own[] = { "data-dir", NULL };
	int n;
	char **all = cr_cmd_env_argv("worker", longopts, own, argc, argv, &n);
	if (!all)
		return 2;
	int rc = worker_main(n, all);
	cr_cmd_argv_free(all);
	return rc;
}
