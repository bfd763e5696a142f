/* corral: one binary for the server, the worker and the command-line client.
 * Dispatches on the first argument. */
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "http/tls.h"
#include "base/log.h"
#include "base/secret.h"
#include "cmd/cmd.h"
#include "http/client.h"

static const char usage[] =
	"usage: corral COMMAND [OPTIONS]\n"
	"\n"
	"Run a cluster:\n"
	"  server     the control plane (API, store, scheduler), with an embedded worker\n"
	"  worker     the node agent: detects hardware, joins a server, runs engines\n"
	"\n"
	"Use a cluster (talks to the server's API):\n"
	"  login      log in and keep the session token for the other commands\n"
	"  passwd     change your password (all your sessions end)\n"
	"  sessions   your sessions: list, rm\n"
	"  logout     end the session\n"
	"  workers    list workers; 'workers show NAME', 'workers rm NAME'\n"
	"  gpus       list the GPUs of every worker\n"
	"  deploy     deploy a model (or --dry-run: show where it would go, and why not)\n"
	"  models     list models with their replicas and memory\n"
	"  instances  list instances: where each replica runs, its claim and state\n"
	"  scale      change how many replicas a model keeps\n"
	"  update     change a deployed model (a rolling update when its instances must change)\n"
	"  rm         delete models and their instances\n"
	"  engines    the inference engines each worker found, with versions\n"
	"  logs       an instance's engine log (-f to follow)\n"
	"  keys       API keys for the OpenAI-compatible endpoint: list, create, rm\n"
	"  users      users of the cluster (admins): list, create, rm\n"
	"  token      rotate the cluster registration token (admins)\n"
	"  audit      who did what, from where, when (admins)\n"
	"  events     what happened in the cluster, with causes (-f to follow)\n"
	"  files      the model files cached on each worker: list, rm\n"
	"  chat       chat with a model through /v1, streamed to the terminal\n"
	"  usage      gateway usage per key, user, model and day\n"
	"\n"
	"On this node, without a server:\n"
	"  doctor     what this node has: devices, drivers, memory, notes\n"
	"  inspect    a model file's shape and the memory an instance of it needs\n"
	"  migrate    move a server's state from SQLite to PostgreSQL\n"
	"\n"
	"  version    print the version\n"
	"\n"
	"Client commands take --cacert FILE (or CORRAL_CACERT) to trust an https server's CA.\n"
	"'corral COMMAND --help' describes each command. Docs: docs/cli.md\n";

int cr_cmd_fail(const struct cr_err *err)
{
	fprintf(stderr, "corral: %s\n", err->message);
	if (err->fix[0])
		fprintf(stderr, "fix: %s\n", err->fix);
	return 1;
}

/* `--cacert FILE` anywhere on a client command's line: taken out and passed
 * on as CORRAL_CACERT, which every client command reads. */
static int take_cacert(int *argc, char **argv)
{
	for (int i = 2; i < *argc; i++) {
		const char *file = NULL;
		int used = 0;
		if (!strcmp(argv[i], "--cacert") && i + 1 < *argc)
			file = argv[i + 1], used = 2;
		else if (!strncmp(argv[i], "--cacert=", 9))
			file = argv[i] + 9, used = 1;
		else if (!strcmp(argv[i], "--"))
			break;
		if (!used)
			continue;
		char h[CR_TLS_HASH_LEN];
		struct cr_err err = CR_ERR_INIT;
		if (cr_tls_file_hash(file, h, &err)) {
			fprintf(stderr, "corral: --cacert: %s\nfix: give the server's CA as a PEM file (its DATA_DIR/tls/ca.pem)\n",
				err.message);
			return -1;
		}
		setenv("CORRAL_CACERT", file, 1);
		memmove(argv + i, argv + i + used, (size_t)(*argc - i - used + 1) * sizeof(char *));
		*argc -= used;
		i--;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "server", cr_cmd_server }, { "worker", cr_cmd_worker }, { "login", cr_cmd_login },
		{ "logout", cr_cmd_logout }, { "workers", cr_cmd_workers }, { "gpus", cr_cmd_gpus },
		{ "doctor", cr_cmd_doctor }, { "inspect", cr_cmd_inspect }, { "migrate", cr_cmd_migrate },
		{ "deploy", cr_cmd_deploy }, { "models", cr_cmd_models }, { "instances", cr_cmd_instances },
		{ "rm", cr_cmd_rm }, { "scale", cr_cmd_scale }, { "update", cr_cmd_update }, { "engines", cr_cmd_engines },
		{ "logs", cr_cmd_logs }, { "keys", cr_cmd_keys },
		{ "users", cr_cmd_users }, { "chat", cr_cmd_chat }, { "usage", cr_cmd_usage },
		{ "token", cr_cmd_token }, { "passwd", cr_cmd_passwd }, { "sessions", cr_cmd_sessions },
		{ "audit", cr_cmd_audit }, { "events", cr_cmd_events }, { "files", cr_cmd_files },
	};
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("corral %s\n", CORRAL_VERSION);
		return 0;
	}
	if (cr_secret_init() != 0) {
		fprintf(stderr, "corral: libsodium failed to initialise\n");
		return 1;
	}
	/* before any thread: the server lists hub repositories with it too */
	cr_http_client_init();
	if (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "worker") != 0 && take_cacert(&argc, argv) != 0)
		return 2;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(argv[1], cmds[i].name)) {
			cr_log_setup(cmds[i].name, CR_LOG_INFO);
			return cmds[i].fn(argc - 1, argv + 1);
		}
	}
	fprintf(stderr, "corral: unknown command '%s'\n\n%s", argv[1], usage);
	return 2;
}
