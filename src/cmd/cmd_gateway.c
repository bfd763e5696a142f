/* The gateway's commands: keys (API keys for /v1), chat (a conversation
 * streamed through /v1, as any OpenAI client would), usage (metering). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
#include "base/mem.h"
#include "base/sse.h"
#include "base/util.h"
#include "cmd/cli.h"
#include "cmd/cmd.h"
#include "http/client.h"

int cr_cmd_keys(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral keys [list] [--json]\n"
		"       corral keys create NAME [--models M1,M2] [--rpm N] [--tpm N] [--daily-tokens N]\n"
		"                         [--monthly-tokens N] [--expires-days N] [--owner USER]\n"
		"       corral keys rm ID|NAME\n"
		"\n"
		"API keys for the OpenAI-compatible endpoint (/v1). A new key is printed once and\n"
		"kept only as a hash. --models limits it to those models (others look absent);\n"
		"--rpm/--tpm limit requests and tokens per minute, --daily-tokens/--monthly-tokens\n"
		"are token quotas (UTC days and months); none may exceed the limits an admin set for\n"
		"the key's user. Admins may --owner another user.\n";
	json_t *body = json_object();
	const char *url = NULL;
	bool as_json = false;
	const struct cr_opt opts[] = {
		{ "models", 0, CR_OPT_FIELD_CSV, body, "models", 0 },
		{ "rpm", 0, CR_OPT_FIELD_COUNT, body, "rpm", 1000000000 },
		{ "tpm", 0, CR_OPT_FIELD_COUNT, body, "tpm", 1000000000 },
		{ "daily-tokens", 0, CR_OPT_FIELD_COUNT, body, "daily_tokens", 1LL << 50 },
		{ "monthly-tokens", 0, CR_OPT_FIELD_COUNT, body, "monthly_tokens", 1LL << 50 },
		{ "expires-days", 0, CR_OPT_FIELD_COUNT, body, "expires_days", 1000000000 },
		{ "owner", 0, CR_OPT_FIELD_STR, body, "owner", 0 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int rc = cr_cli_parse(argc, argv, usage, opts);
	if (rc >= 0) {
		json_decref(body);
		return rc;
	}
	rc = 0;
	const char *verb = optind < argc ? argv[optind] : "list";
	bool create = !strcmp(verb, "create"), rm = !strcmp(verb, "rm");
	if (rc || (create && optind + 2 != argc) || (rm && optind + 2 != argc) || (!create && !rm && strcmp(verb, "list"))) {
		fputs(usage, stderr);
		json_decref(body);
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans;
	if (create) {
		json_object_set_new(body, "name", json_string(argv[optind + 1]));
		char *text = cr_json_dump(body);
		ans = cr_cli_api(&cl, "POST", "/api/keys", text, &err);
		free(text);
	} else if (rm) {
		char *path = cr_xasprintf("/api/keys/%s", argv[optind + 1]);
		ans = cr_cli_api(&cl, "DELETE", path, NULL, &err);
		free(path);
	} else {
		ans = cr_cli_api(&cl, "GET", "/api/keys", NULL, &err);
	}
	cr_cli_release(&cl);
	json_decref(body);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(ans);
	if (create) {
		printf("%s\n", json_string_value(json_object_get(ans, "key")));
		fprintf(stderr, "API key '%s' created; it is shown only now. Use it as OPENAI_API_KEY with "
				"OPENAI_BASE_URL=<server>/v1\n", json_string_value(json_object_get(ans, "name")));
	} else if (rm) {
		printf("revoked key '%s'\n", json_string_value(json_object_get(ans, "name")));
	} else {
		struct cr_table t = { .ncols = 7, .rows = json_array() };
		const char *head[] = { "ID", "NAME", "OWNER", "PREFIX", "MODELS", "LIMITS", "EXPIRES" };
		cr_table_row(&t, head);
		size_t i;
		json_t *k;
		json_array_foreach(json_object_get(ans, "keys"), i, k) {
			/* as text a person reads: "a, b", "100 rpm, 5000 tpm" */
			struct cr_buf models = CR_BUF_INIT(4096);
			size_t mi;
			json_t *mv;
			json_array_foreach(json_object_get(k, "models"), mi, mv)
				cr_buf_addf(&models, "%s%s", mi ? ", " : "", json_string_value(mv) ? json_string_value(mv) : "?");
			char limits[64] = "";
			long long rpm = cr_json_get_int(k, "rpm", 0), tpm = cr_json_get_int(k, "tpm", 0);
			if (rpm && tpm)
				snprintf(limits, sizeof(limits), "%lld rpm, %lld tpm", rpm, tpm);
			else if (rpm)
				snprintf(limits, sizeof(limits), "%lld rpm", rpm);
			else if (tpm)
				snprintf(limits, sizeof(limits), "%lld tpm", tpm);
			const char *exp = json_string_value(json_object_get(k, "expires_at"));
			const char *row[] = { json_string_value(json_object_get(k, "id")), json_string_value(json_object_get(k, "name")),
					      json_string_value(json_object_get(k, "owner")), json_string_value(json_object_get(k, "prefix")),
					      models.len ? cr_buf_str(&models) : "all", *limits ? limits : "none",
					      exp ? exp : "never" };
			cr_table_row(&t, row);
			cr_buf_release(&models);
		}
		cr_table_print(&t);
	}
	json_decref(ans);
	return 0;
}

/* ---- corral chat ---- */

struct chat {
	struct cr_sse sse;
	struct cr_buf reply; /* the assistant's answer, for the history */
	bool done;
};

static int chat_event(const char *event, const char *data, void *arg)
{
	struct chat *c = arg;
	(void)event;
	if (!strcmp(data, "[DONE]")) {
		c->done = true;
		return 0;
	}
	json_t *j = json_loads(data, 0, NULL);
	json_t *err = json_object_get(j, "error");
	const char *piece = cr_json_get_str(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta"),
					    "content", NULL);
	if (err)
		fprintf(stderr, "\ncorral: %s\n", cr_json_get_str(err, "message", "the stream broke off"));
	if (piece) {
		fputs(piece, stdout);
		fflush(stdout);
		cr_buf_adds(&c->reply, piece);
	}
	json_decref(j);
	return 0;
}

static int chat_data(const char *data, size_t len, void *arg)
{
	struct chat *c = arg;
	return data ? cr_sse_feed(&c->sse, data, len, chat_event, c) != 0 : 0;
}

int cr_cmd_chat(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral chat MODEL [-m MESSAGE] [--max-tokens N] [--key KEY] [--server-url URL]\n"
		"\n"
		"Chat with a deployed model through the OpenAI-compatible endpoint, the answer\n"
		"streamed to the terminal as it is generated. With -m it answers once; otherwise\n"
		"it reads one message per line (keeping the conversation) until end of input.\n"
		"The API key comes from --key, $CORRAL_API_KEY or $OPENAI_API_KEY.\n";
	const char *message = NULL, *key = getenv("CORRAL_API_KEY"), *url = NULL;
	long long max_tokens = 256;
	if (!key)
		key = getenv("OPENAI_API_KEY");
	const struct cr_opt opts[] = {
		{ "message", 'm', CR_OPT_STR, &message, NULL, 0 },
		{ "max-tokens", 0, CR_OPT_COUNT, &max_tokens, NULL, 1 << 20 },
		{ "key", 0, CR_OPT_STR, &key, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	if (optind + 1 != argc) {
		fputs(usage, stderr);
		return 2;
	}
	if (!key) {
		fprintf(stderr, "corral: no API key\nfix: create one with 'corral keys create NAME' and pass --key or set "
				"CORRAL_API_KEY\n");
		return 2;
	}
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	char *endpoint = cr_xasprintf("%s/v1/chat/completions", cl.url);
	json_t *history = json_array();
	bool interactive = !message && isatty(STDIN_FILENO);
	int rc = 0;
	char line[8192];
	for (;;) {
		const char *text = message;
		if (!text) {
			if (interactive)
				fputs("> ", stderr);
			if (!fgets(line, sizeof(line), stdin))
				break;
			line[strcspn(line, "\n")] = '\0';
			if (!line[0])
				continue;
			text = line;
		}
		json_array_append_new(history, json_pack("{s:s,s:s}", "role", "user", "content", text));
		json_t *body = json_pack("{s:s,s:O,s:b,s:I}", "model", argv[optind], "messages", history, "stream", 1,
					 "max_tokens", (json_int_t)max_tokens);
		char *bt = cr_json_dump(body);
		json_decref(body);
		struct chat c = { .reply = CR_BUF_INIT(1 << 20) };
		cr_sse_init(&c.sse, 1 << 20);
		struct cr_err err = CR_ERR_INIT;
		long status = 0;
		int r = cr_http_stream_post(endpoint, key, bt, 300, chat_data, &c, &status, &err);
		free(bt);
		cr_sse_release(&c.sse);
		fputs("\n", stdout);
		if (r) {
			cr_buf_release(&c.reply);
			rc = cr_cmd_fail(&err);
			break;
		}
		json_array_append_new(history, json_pack("{s:s,s:s}", "role", "assistant", "content", cr_buf_str(&c.reply)));
		cr_buf_release(&c.reply);
		if (message)
			break;
	}
	json_decref(history);
	free(endpoint);
	cr_cli_release(&cl);
	return rc;
}

/* One cell of a usage row: the counter, or "-" for a missing average. */
static void usage_cell(json_t *row, const char *name, char *out, size_t n)
{
	json_t *v = json_object_get(row, name);
	if (json_is_integer(v))
		snprintf(out, n, "%lld", (long long)json_integer_value(v));
	else
		snprintf(out, n, "-");
}

int cr_cmd_usage(int argc, char **argv)
{
	static const char usage[] =
		"usage: corral usage [--by key,user,model,day] [--since 7d|YYYY-MM-DD] [--until YYYY-MM-DD]\n"
		"                    [--model M] [--key NAME|ID] [--user U] [--json]\n"
		"\n"
		"Gateway usage: requests, errors, prompt and completion tokens, average time to\n"
		"first token (streams) and latency, summed per the --by columns (default: one\n"
		"total) over days in UTC. Users see their own keys; admins everyone's.\n";
	const char *names[] = { "by", "since", "until", "model", "key", "user" };
	const char *vals[6] = { NULL };
	const char *url = NULL;
	bool as_json = false;
	const struct cr_opt opts[] = {
		{ "by", 0, CR_OPT_STR, &vals[0], NULL, 0 },
		{ "since", 0, CR_OPT_STR, &vals[1], NULL, 0 },
		{ "until", 0, CR_OPT_STR, &vals[2], NULL, 0 },
		{ "model", 0, CR_OPT_STR, &vals[3], NULL, 0 },
		{ "key", 0, CR_OPT_STR, &vals[4], NULL, 0 },
		{ "user", 0, CR_OPT_STR, &vals[5], NULL, 0 },
		{ "json", 0, CR_OPT_FLAG, &as_json, NULL, 0 },
		{ "server-url", 0, CR_OPT_STR, &url, NULL, 0 },
		{ NULL, 0, 0, NULL, NULL, 0 },
	};
	int prc = cr_cli_parse(argc, argv, usage, opts);
	if (prc >= 0)
		return prc;
	if (optind < argc) {
		fprintf(stderr, "corral usage: unexpected argument '%s'\n%s", argv[optind], usage);
		return 2;
	}
	struct cr_buf path = CR_BUF_INIT(8192);
	cr_buf_adds(&path, "/api/usage");
	for (int i = 0; i < 6; i++)
		cr_cli_query_add(&path, names[i], vals[i]);
	struct cr_cli cl;
	cr_cli_init(&cl, url);
	struct cr_err err = CR_ERR_INIT;
	json_t *ans = cr_cli_api(&cl, "GET", cr_buf_str(&path), NULL, &err);
	cr_cli_release(&cl);
	cr_buf_release(&path);
	if (!ans)
		return cr_cmd_fail(&err);
	if (as_json)
		return cr_cli_print_json(ans);
	static const char *const cols[] = { "day", "user", "key", "model" };
	static const char *const counters[] = { "requests", "errors", "prompt_tokens", "completion_tokens",
						"ttft_ms_avg", "latency_ms_avg" };
	static const char *const heads[] = { "DAY", "USER", "KEY", "MODEL", "REQUESTS", "ERRORS", "PROMPT", "COMPLETION",
					     "TTFT_MS", "LATENCY_MS" };
	json_t *rows = json_object_get(ans, "rows");
	bool shown[4] = { false };
	size_t i;
	json_t *row;
	json_array_foreach(rows, i, row)
		for (int c = 0; c < 4; c++)
			shown[c] |= json_object_get(row, cols[c]) != NULL;
	struct cr_table t = { .rows = json_array() };
	const char *cells[CR_TABLE_MAX_COLS];
	char num[6][32];
	for (int c = 0; c < 4; c++)
		if (shown[c])
			cells[t.ncols++] = heads[c];
	for (int c = 0; c < 6; c++)
		cells[t.ncols++] = heads[4 + c];
	cr_table_row(&t, cells);
	json_t *total = json_object_get(ans, "total");
	for (i = 0; i <= json_array_size(rows); i++) {
		row = i < json_array_size(rows) ? json_array_get(rows, i) : total;
		int n = 0;
		for (int c = 0; c < 4; c++) {
			if (!shown[c])
				continue;
			cells[n] = row == total ? (n == 0 ? "TOTAL" : "") : cr_json_get_str(row, cols[c], "");
			n++;
		}
		for (int c = 0; c < 6; c++) {
			usage_cell(row, counters[c], num[c], sizeof(num[c]));
			cells[n++] = num[c];
		}
		if (row == total && n == 6 && json_array_size(rows))
			break; /* no grouping: the only row is the total */
		cr_table_row(&t, cells);
	}
	cr_table_print(&t);
	printf("%s to %s (UTC)\n", cr_json_get_str(ans, "since", "?"), cr_json_get_str(ans, "until", "?"));
	json_decref(ans);
	return 0;
}
