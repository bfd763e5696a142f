/* Entry points of the corral subcommands; each takes argv after the
 * subcommand name (argv[0] is the subcommand) and returns the exit status. */
#ifndef CR_CMD_CMD_H
#define CR_CMD_CMD_H

#include <stddef.h>

#define CORRAL_VERSION "0.1.0"

int cr_cmd_server(int argc, char **argv);
int cr_cmd_worker(int argc, char **argv);
int cr_cmd_login(int argc, char **argv);
int cr_cmd_logout(int argc, char **argv);
int cr_cmd_workers(int argc, char **argv);
int cr_cmd_gpus(int argc, char **argv);
int cr_cmd_doctor(int argc, char **argv);
int cr_cmd_inspect(int argc, char **argv);
/* corral migrate --from sqlite:DIR --to postgresql://... */
int cr_cmd_migrate(int argc, char **argv);
int cr_cmd_deploy(int argc, char **argv);
int cr_cmd_models(int argc, char **argv);
int cr_cmd_instances(int argc, char **argv);
int cr_cmd_rm(int argc, char **argv);
int cr_cmd_scale(int argc, char **argv);
int cr_cmd_update(int argc, char **argv);
int cr_cmd_engines(int argc, char **argv);
int cr_cmd_logs(int argc, char **argv);
int cr_cmd_keys(int argc, char **argv);
int cr_cmd_usage(int argc, char **argv);
int cr_cmd_users(int argc, char **argv);
int cr_cmd_chat(int argc, char **argv);
int cr_cmd_token(int argc, char **argv);
int cr_cmd_passwd(int argc, char **argv);
int cr_cmd_sessions(int argc, char **argv);
int cr_cmd_audit(int argc, char **argv);
int cr_cmd_events(int argc, char **argv);
int cr_cmd_files(int argc, char **argv);

/* The environment variable that sets long option opt: CORRAL_ and the name
 * in capitals, dashes as underscores ("worker-port-range" ->
 * CORRAL_WORKER_PORT_RANGE). */
void cr_cmd_env_name(const char *opt, char *out, size_t n);

/* A copy of argv with "--name=value" put first for each of opts whose
 * variable (cr_cmd_env_name) is set and not empty, so that the command line
 * wins. An option without a value takes 1/true/yes/on (given) or
 * 0/false/no/off (not given). skip: names left to their own meaning
 * (NULL-terminated; "help" always). NULL, with the cause and its fix on
 * stderr, when such a value is something else. Free with cr_cmd_argv_free. */
struct option;
char **cr_cmd_env_argv(const char *cmd, const struct option *opts, const char *const *skip, int argc, char **argv,
		       int *out_argc);
void cr_cmd_argv_free(char **argv);

/* Print an error and its fix to stderr the same way for every command. */
struct cr_err;
int cr_cmd_fail(const struct cr_err *err);

#endif
