/* corral migrate: move an installation's state from SQLite to PostgreSQL. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/err.h"
#include "base/mem.h"
#include "cmd/cmd.h"
#include "store/store.h"

static const char migrate_usage[] =
	"usage: corral migrate --from sqlite:DATA_DIR --to postgresql://USER@HOST:PORT/DB\n"
	"\n"
	"Copy a server's state (users, sessions, keys, workers, models, instances,\n"
	"usage, the audit trail, events, settings) from the SQLite store in DATA_DIR\n"
	"into an empty PostgreSQL database, in one transaction: all or nothing. The\n"
	"SQLite store is read as one snapshot, so the server may keep running while it\n"
	"copies; stop it before starting servers on PostgreSQL, so that no write made\n"
	"after the snapshot is lost. Then start them with --store URL and the same\n"
	"--data-dir (it keeps the cluster token and the TLS CA). A password comes from\n"
	"PGPASSWORD or ~/.pgpass.\n";

int cr_cmd_migrate(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "from", required_argument, NULL, 'f' },
		{ "to", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *from = NULL, *to = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'f': from = optarg; break;
		case 't': to = optarg; break;
		case 'h': fputs(migrate_usage, stdout); return 0;
		default: fputs(migrate_usage, stderr); return 2;
		}
	}
	if (!from || !to || optind != argc) {
		fputs(migrate_usage, stderr);
		return 2;
	}
	if (strncmp(from, "sqlite:", 7) != 0 || !from[7]) {
		fprintf(stderr, "corral migrate: --from takes sqlite:DATA_DIR (the server's --data-dir), not '%s'\n", from);
		return 2;
	}
	if (!cr_store_is_pg(to)) {
		fprintf(stderr, "corral migrate: --to takes a PostgreSQL URL (postgresql://USER@HOST:PORT/DB), not '%s'\n", to);
		return 2;
	}
	char *db = cr_xasprintf("%s/corral.db", from + 7);
	struct stat st;
	struct cr_err err = CR_ERR_INIT;
	int rc = 0;
	if (stat(db, &st) != 0 || st.st_size == 0) {
		cr_err_set(&err, CR_ENOTFOUND, "give the data directory of a server that has run (its --data-dir)",
			   "no SQLite store at %s", db);
		rc = cr_cmd_fail(&err);
	} else {
		printf("corral migrate: copying %s\n", db);
		if (cr_store_copy_sqlite_to_pg(db, to, stdout, &err) != 0)
			rc = cr_cmd_fail(&err);
		else
			printf("corral migrate: done. Start the servers with --store and --data-dir %s\n", from + 7);
	}
	free(db);
	return rc;
}
