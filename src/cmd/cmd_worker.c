/* `corral worker`: parse options and run the agent. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent.h"
#include "base/err.h"
#include "base/mem.h"
#include "base/log.h"
#include "base/util.h"
#include "http/client.h"
#include "http/tls.h"
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
	"  --server-url URL[,URL]   the server, e.g. http://10.0.0.1:8080 ($CORRAL_SERVER_URL); several\n"
	"                           servers of one cluster, comma-separated, are tried in turn, and so\n"
	"                           are the addresses of a name that has several (one DNS name for all)\n"
	"  --token-file FILE        read the cluster registration token from FILE (the server's\n"
	"                           DATA_DIR/token): it never shows in ps\n"
	"  --token T                the token itself ($CORRAL_TOKEN); visible to ps, prefer --token-file\n"
	"  --ca-hash sha256:HEX     trust an https server only if its chain holds a CA with this\n"
	"                           public-key hash (printed in the server's join command); the CA\n"
	"                           is kept in DATA_DIR/server-ca.pem, the token never goes elsewhere\n"
	"  --cacert FILE            trust the https server's certificate through this PEM CA file\n"
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
	"  --cache-max SIZE         model cache (DATA_DIR/models) past SIZE (e.g. 200G): the least\n"
	"                           recently used files no instance here uses are removed (default: no limit)\n"
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

/* --ca-hash or --cacert: the CA the server's certificate must chain to,
 * settled before the token goes anywhere. */
static int trust_server(const struct cr_agent_config *cfg, char *ca_hash, const char *cacert, struct cr_err *err)
{
	char h[CR_TLS_HASH_LEN];
	if (ca_hash && cacert)
		return cr_err_set(err, CR_EINPUT, "pass one of them", "--ca-hash and --cacert exclude each other");
	if (cacert) {
		if (cr_tls_file_hash(cacert, h, err))
			return cr_err_set(err, CR_EINPUT, "give the server's CA as a PEM file (its DATA_DIR/tls/ca.pem)",
					  "--cacert: %s", err->message);
		cr_http_client_set_ca(cacert);
		return 0;
	}
	if (!ca_hash)
		return 0;
	if (cr_tls_hash_check(ca_hash, err) || cr_mkdir_p(cfg->data_dir, 0700, err))
		return err->code;
	char *path = cr_xasprintf("%s/server-ca.pem", cfg->data_dir);
	int n = 0, rc = -1;
	char **urls = cr_server_urls(cfg->server_url, &n);
	for (int i = 0; i < n; i++) { /* the first server of the list that answers */
		if (rc != 0)
			rc = cr_http_pin_ca(urls[i], ca_hash, path, err);
		free(urls[i]);
	}
	free(urls);
	if (!rc) {
		cr_info("the server's certificate chains to the CA of %s (kept in %s)", ca_hash, path);
		cr_http_client_set_ca(path);
	}
	free(path);
	return rc;
}

static const struct option longopts[] = {
	{ "server-url", required_argument, NULL, 'u' }, { "token", required_argument, NULL, 't' },
	{ "name", required_argument, NULL, 'n' },       { "data-dir", required_argument, NULL, 'd' },
	{ "worker-port", required_argument, NULL, 'p' }, { "listen-host", required_argument, NULL, 'H' },
	{ "advertise-address", required_argument, NULL, 'a' }, { "labels", required_argument, NULL, 'l' },
	{ "resources", required_argument, NULL, 'r' },  { "engines-config", required_argument, NULL, 'E' },
	{ "token-file", required_argument, NULL, 'T' },
	{ "ca-hash", required_argument, NULL, 'K' },      { "cacert", required_argument, NULL, 'C' },
	{ "cache-max", required_argument, NULL, 'X' },
	{ "port-range", required_argument, NULL, 'R' },  { "embedded", no_argument, NULL, 'M' },  { "restart-backoff", required_argument, NULL, 'B' },
	{ "allow-engine-args", required_argument, NULL, 'A' },  { "status-interval", required_argument, NULL, 's' },
	{ "help", no_argument, NULL, 'h' },             { NULL, 0, NULL, 0 },
};

static int worker_main(int argc, char **argv)
{
	struct cr_agent_config cfg = { getenv("CORRAL_SERVER_URL"), getenv("CORRAL_TOKEN"), NULL, NULL, NULL, 10150, NULL,
				       NULL, NULL, 5, NULL, 0, 0, 0, false, NULL, 0 };
	char *dir = NULL, *file_token = NULL, *ca_hash = NULL;
	const char *cacert = NULL;
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
		case 'K': free(ca_hash); ca_hash = cr_xstrdup(optarg); break;
		case 'C': cacert = optarg; break;
		case 'X':
			if (!cr_parse_bytes(optarg, &cfg.cache_max)) {
				fprintf(stderr, "corral worker: --cache-max wants a size like 200G or 500M, not '%s'\n", optarg);
				return 2;
			}
			break;
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
		case 'h': free(ca_hash); fputs(worker_usage, stdout); return 0;
		default: free(ca_hash); fputs(worker_usage, stderr); return 2;
		}
	}
	if (!cfg.server_url || !cfg.token) {
		free(ca_hash);
		free(file_token);
		fprintf(stderr, "corral worker: %s is required\nfix: %s\n", cfg.server_url ? "--token-file (or --token)" : "--server-url",
			cfg.server_url ? "copy the server's DATA_DIR/token file here and pass --token-file FILE"
				       : "pass the server's address, e.g. --server-url http://10.0.0.1:8080");
		return 2;
	}
	if (!cfg.data_dir)
		cfg.data_dir = dir = default_dir();
	struct cr_err err = CR_ERR_INIT;
	int rc = trust_server(&cfg, ca_hash, cacert, &err);
	free(ca_hash);
	if (rc) {
		free(file_token);
		free(dir);
		return cr_cmd_fail(&err);
	}
	/* the engines this worker starts inherit its environment: the cluster
	 * token must not be in it (the embedded worker gets it there) */
	char *token = cr_xstrdup(cfg.token);
	cfg.token = token;
	unsetenv("CORRAL_TOKEN");
	rc = cr_agent_run(&cfg, &err);
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
