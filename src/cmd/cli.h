/* Helpers shared by the client commands: the saved session and server URL
 * ($XDG_CONFIG_HOME/corral/cli.json), API calls, aligned tables. */
#ifndef CR_CMD_CLI_H
#define CR_CMD_CLI_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"

#define CR_CLI_DEFAULT_URL "http://127.0.0.1:8080"

struct cr_cli {
	char *url;   /* server URL without a trailing slash */
	char *token; /* session or API token, may be NULL */
	char **others; /* the other servers listed (--server-url URL1,URL2,...), tried when this one follows */
	int n_others;
};

/* Path of the client's config file (caller frees). */
char *cr_cli_config_path(void);

/* The saved config object (empty when none). */
json_t *cr_cli_config_load(void);

/* Resolve the server URL (flag, $CORRAL_SERVER_URL, saved, default) and the
 * token ($CORRAL_API_TOKEN, saved). Release with cr_cli_release. */
void cr_cli_init(struct cr_cli *c, const char *url_flag);
void cr_cli_release(struct cr_cli *c);

/* Call the API; the parsed JSON answer (caller decrefs), or NULL with err
 * holding the server's message and fix. */
json_t *cr_cli_api(struct cr_cli *c, const char *method, const char *path, const char *body, struct cr_err *err);

#define CR_TABLE_MAX_COLS 10

/* Appends "?name=value" (the first) or "&name=value" to path, the value
 * URL-encoded; nothing when value is NULL. */
struct cr_buf;
void cr_cli_query_add(struct cr_buf *path, const char *name, const char *value);

/* A url model's download progress as the worker reports it
 * ({"bytes","total","rate"?,"eta_s"?}): "45.2% of 27.3 MiB at 5.1 MiB/s,
 * 3 s left" (the rate and time left once the worker has measured them). */
void cr_cli_download_text(json_t *dl, char *out, size_t n);

/* The same drawn as a bar of width cells between brackets: "[#####.....]". */
void cr_cli_download_bar(json_t *dl, int width, char *out, size_t n);

/* Rows of strings printed with aligned columns. */
struct cr_table {
	int ncols;
	size_t width[CR_TABLE_MAX_COLS];
	json_t *rows; /* array of arrays of strings */
};

/* s with terminal control characters (C0, DEL, C1 in UTF-8) written as
 * \xNN, so that text from the network cannot move the cursor or change the
 * terminal's state. Returns a new string; the caller frees it. */
char *cr_cli_safe(const char *s);

/* Separates the lines of a table cell that takes several (GPUs of different
 * models); the other cells of the row are blank below their first line. */
#define CR_TABLE_NL '\x1e'

/* Add a row of ncols cells (copied, control characters escaped). */
void cr_table_row(struct cr_table *t, const char *const *cells);

/* Print the rows and free them. */
void cr_table_print(struct cr_table *t);

/* "used/total" in human units. */
void cr_cli_mem_pair(long long used, long long total, char *out, size_t n);

/* Print checks as "level  id  message" lines, each fix on the line below,
 * every line starting with indent. */
void cr_cli_print_checks(json_t *checks, const char *indent);

/* Print j indented on stdout and decref it; returns 0. */
int cr_cli_print_json(json_t *j);

/* The one option parser of the command-line client: a table of options,
 * each storing into its destination; --help (-h) is always there. */
enum cr_opt_kind {
	CR_OPT_FLAG,        /* bool *dst = true */
	CR_OPT_STR,         /* const char **dst = the value */
	CR_OPT_COUNT,       /* long long *dst = the value, 0..max */
	CR_OPT_FIELD_STR,   /* json_t *dst (an object): dst[field] = the value */
	CR_OPT_FIELD_TRUE,  /* dst[field] = true */
	CR_OPT_FIELD_COUNT, /* dst[field] = the value, 0..max */
	CR_OPT_FIELD_CSV,   /* dst[field] = ["a", "b"] from "a,b" */
};

struct cr_opt {
	const char *name;   /* the long name, without "--"; NULL ends the table */
	char short_name;    /* 0: none */
	enum cr_opt_kind kind;
	void *dst;
	const char *field;  /* the JSON member of the FIELD kinds */
	long long max;      /* the COUNT kinds' largest value */
};

/* Parse argv (argv[0] the command) by opts. Returns -1 to go on, with optind
 * at the first operand; 0 after printing usage for --help; 2 after printing
 * the problem and usage on stderr (an unknown option, a bad count). */
int cr_cli_parse(int argc, char **argv, const char *usage, const struct cr_opt *opts);

/* An option's count from 0 to max: 0, or -1 after saying on stderr that flag
 * wants a number in that range (the command then exits 2). */
int cr_cli_parse_count(const char *s, const char *flag, long long max, long long *out);

/* "a, b,c" as the JSON array ["a","b","c"] (items trimmed). */
json_t *cr_cli_csv(const char *s);

#endif
