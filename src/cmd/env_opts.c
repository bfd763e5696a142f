/* corral: long options read from CORRAL_* environment variables, so that a
 * service's environment file can set any flag. */
#include <ctype.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/mem.h"
#include "cmd/cmd.h"

void cr_cmd_env_name(const char *opt, char *out, size_t n)
{
	size_t k = (size_t)snprintf(out, n, "CORRAL_");
	for (; *opt && k + 1 < n; opt++)
		out[k++] = *opt == '-' ? '_' : (char)toupper((unsigned char)*opt);
	out[k < n ? k : n - 1] = '\0';
}

static bool skipped(const char *name, const char *const *skip)
{
	for (; skip && *skip; skip++)
		if (!strcmp(*skip, name))
			return true;
	return !strcmp(name, "help");
}

char **cr_cmd_env_argv(const char *cmd, const struct option *opts, const char *const *skip, int argc, char **argv,
		       int *out_argc)
{
	size_t n_opts = 0;
	while (opts[n_opts].name)
		n_opts++;
	char **out = cr_xcalloc(n_opts + (size_t)argc + 1, sizeof(char *));
	int k = 0;
	out[k++] = cr_xstrdup(argc > 0 ? argv[0] : cmd);
	for (size_t i = 0; i < n_opts; i++) {
		char var[128];
		cr_cmd_env_name(opts[i].name, var, sizeof(var));
		const char *v = getenv(var);
		if (skipped(opts[i].name, skip) || !v || !*v)
			continue;
		if (opts[i].has_arg != no_argument) {
			out[k++] = cr_xasprintf("--%s=%s", opts[i].name, v);
			continue;
		}
		static const char *const yes[] = { "1", "true", "yes", "on" }, *const no[] = { "0", "false", "no", "off" };
		bool on = false, known = false;
		for (size_t j = 0; j < 4 && !known; j++) {
			if (!strcasecmp(v, yes[j]))
				on = known = true;
			else if (!strcasecmp(v, no[j]))
				known = true;
		}
		if (!known) {
			fprintf(stderr, "corral %s: %s is '%s', but --%s takes no value\nfix: set %s to 1 or 0 (true/false)\n",
				cmd, var, v, opts[i].name, var);
			out[k] = NULL;
			cr_cmd_argv_free(out);
			return NULL;
		}
		if (on)
			out[k++] = cr_xasprintf("--%s", opts[i].name);
	}
	for (int i = 1; i < argc; i++) /* after: the command line wins */
		out[k++] = cr_xstrdup(argv[i]);
	out[k] = NULL;
	*out_argc = k;
	return out;
}

void cr_cmd_argv_free(char **argv)
{
	for (size_t i = 0; argv && argv[i]; i++)
		free(argv[i]);
	free(argv);
}
