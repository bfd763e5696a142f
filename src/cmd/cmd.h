/* Entry points of the corral subcommands; each takes argv after the
 * subcommand name (argv[0] is the subcommand) and returns the exit status. */
#ifndef CR_CMD_CMD_H
#define CR_CMD_CMD_H

#define CORRAL_VERSION "0.1.0"

int cr_cmd_server(int argc, char **argv);
int cr_cmd_worker(int argc, char **argv);
int cr_cmd_login(int argc, char **argv);
int cr_cmd_logout(int argc, char **argv);
int cr_cmd_workers(int argc, char **argv);
int cr_cmd_gpus(int argc, char **argv);
int cr_cmd_doctor(int argc, char **argv);
int cr_cmd_inspect(int argc, char **argv);
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

/* Print an error and its fix to stderr the same way for every command. */
struct cr_err;
int cr_cmd_fail(const struct cr_err *err);

#endif
