/* corral: helpers shared by the command-line client's commands: the saved
 * session, API calls, tables. */
#include <curl/curl.h>
#include <getopt.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
#include "base/mem.h"
#include "base/util.h"
#include "cmd/cli.h"
#include "http/client.h"



char *cr_cli_config_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	if (xdg && *xdg)
		return cr_xasprintf("%s/corral/cli.json", xdg);
	const char *home = getenv("HOME");
	return cr_xasprintf("%s/.config/corral/cli.json", home ? home : ".");
}

json_t *cr_cli_config_load(void)
{
	char *path = cr_cli_config_path(), *text = NULL;
	size_t len;
	json_t *j = NULL;
	if (cr_file_read(path, 1 << 16, &text, &len, NULL) == 0)
		j = cr_json_parse_object(text, len, NULL);
	free(text);
	free(path);
	return j ? j : json_object();
}

void cr_cli_init(struct cr_cli *c, const char *url_flag)
{
	json_t *cfg = cr_cli_config_load();
	const char *env_url = getenv("CORRAL_SERVER_URL"), *env_tok = getenv("CORRAL_API_TOKEN");
	const char *url = url_flag ? url_flag : env_url ? env_url : cr_json_get_str(cfg, "server_url", CR_CLI_DEFAULT_URL);
	const char *env_ca = getenv("CORRAL_CACERT"), *ca = env_ca && *env_ca ? env_ca : cr_json_get_str(cfg, "cacert", NULL);
	if (ca) /* the server's CA, given or remembered by login */
		cr_http_client_set_ca(ca);
	int n = 0;
	char **urls = cr_server_urls(url, &n);
	c->url = NULL;
	c->others = cr_xcalloc((size_t)n + 1, sizeof(*c->others));
	c->n_others = 0;
	for (int i = 0; i < n; i++) { /* several servers: the first that answers */
		if (!c->url && i + 1 < n) {
			char *probe = cr_xasprintf("%s/healthz", urls[i]);
			struct cr_http_resp r;
			if (cr_http_call("GET", probe, NULL, NULL, 2000, &r, NULL) == 0) {
				if (r.status == 200)
					c->url = urls[i];
				cr_http_resp_release(&r);
			}
			free(probe);
		} else if (!c->url) {
			c->url = urls[i];
		}
		if (c->url != urls[i])
			c->others[c->n_others++] = urls[i];
	}
	free(urls);
	c->token = cr_xstrdup(env_tok ? env_tok : cr_json_get_str(cfg, "token", NULL));
	json_decref(cfg);
}

void cr_cli_release(struct cr_cli *c)
{
	free(c->url);
	free(c->token);
	for (int i = 0; i < c->n_others; i++)
		free(c->others[i]);
	free(c->others);
}

static json_t *api_call(struct cr_cli *c, const char *via, const char *method, const char *path, const char *body,
			struct cr_err *err);

json_t *cr_cli_api(struct cr_cli *c, const char *method, const char *path, const char *body, struct cr_err *err)
{
	struct cr_err local = CR_ERR_INIT;
	if (!err)
		err = &local;
	json_t *j = api_call(c, NULL, method, path, body, err);
	/* a follower of several servers: the leader is another of the list */
	for (int i = 0; !j && err->code == CR_ENOTLEADER && i < c->n_others; i++) {
		char *t = c->url;
		c->url = c->others[i];
		c->others[i] = t;
		*err = (struct cr_err)CR_ERR_INIT;
		j = api_call(c, NULL, method, path, body, err);
	}
	/* one DNS name with several addresses: each address in turn */
	int n = 0;
	char **addrs = !j && err->code == CR_ENOTLEADER && !c->n_others ? cr_http_addresses(c->url, &n) : NULL;
	for (int i = 0; i < n; i++) {
		if (!j && err->code == CR_ENOTLEADER) {
			*err = (struct cr_err)CR_ERR_INIT;
			j = api_call(c, addrs[i], method, path, body, err);
		}
		free(addrs[i]);
	}
	free(addrs);
	/* one name for several servers (a load balancer): a new connection may reach the leader */
	for (int i = 0; !j && err->code == CR_ENOTLEADER && !c->n_others && i < 20; i++) {
		usleep(50000 + randombytes_uniform(200000)); /* not in step with other clients */
		*err = (struct cr_err)CR_ERR_INIT;
		j = api_call(c, NULL, method, path, body, err);
	}
	return j;
}

static json_t *api_call(struct cr_cli *c, const char *via, const char *method, const char *path, const char *body,
			struct cr_err *err)
{
	char *url = cr_xasprintf("%s%s", c->url, path);
	struct cr_http_resp r;
	json_t *j = NULL;
	if (cr_http_call_via(via, method, url, c->token, body, 30000, &r, err) != 0) {
		if (!strstr(err->fix, "certificate")) /* that fix says more */
			snprintf(err->fix, sizeof(err->fix), "check that the server runs at %s (--server-url or $CORRAL_SERVER_URL)",
			 c->url);
		goto out;
	}
	if (r.status < 200 || r.status >= 300) {
		cr_http_error_from(&r, err);
		if (r.status == 401 && !err->fix[0])
			snprintf(err->fix, sizeof(err->fix), "log in with 'corral login'");
	} else {
		j = cr_json_parse_object(r.body, r.len, err);
	}
	cr_http_resp_release(&r);
out:
	free(url);
	return j;
}

char *cr_cli_safe(const char *s)
{
	const unsigned char *u = (const unsigned char *)(s ? s : "");
	size_t n = strlen((const char *)u);
	size_t cap = n * 4 + 1, len = 0;
	char *out = cr_xmalloc(cap);
	for (size_t i = 0; i < n; i++) {
		if (u[i] < 0x20 || u[i] == 0x7f)
			len += (size_t)snprintf(out + len, cap - len, "\\x%02x", u[i]);
		else if (u[i] == 0xc2 && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f) /* C1: U+0080..U+009F */
			len += (size_t)snprintf(out + len, cap - len, "\\x%02x", u[++i]);
		else
			out[len++] = (char)u[i];
	}
	out[len] = 0;
	return out;
}

void cr_table_row(struct cr_table *t, const char *const *cells)
{
	json_t *row = json_array();
	for (int i = 0; i < t->ncols; i++) {
		json_t *lines = json_array(); /* a cell's lines, each escaped on its own */
		const char *c = cells[i] ? cells[i] : "";
		for (;;) {
			const char *end = strchr(c, CR_TABLE_NL);
			char *part = end ? cr_xstrndup(c, (size_t)(end - c)) : cr_xstrdup(c);
			char *safe = cr_cli_safe(part);
			size_t n = strlen(safe);
			if (n > t->width[i])
				t->width[i] = n;
			json_array_append_new(lines, json_string_nocheck(safe)); /* bytes as they came */
			free(safe);
			free(part);
			if (!end)
				break;
			c = end + 1;
		}
		json_array_append_new(row, lines);
	}
	json_array_append_new(t->rows, row);
}

void cr_table_print(struct cr_table *t)
{
	size_t r;
	json_t *row;
	json_array_foreach(t->rows, r, row) {
		size_t height = 1;
		for (int i = 0; i < t->ncols; i++)
			if (json_array_size(json_array_get(row, (size_t)i)) > height)
				height = json_array_size(json_array_get(row, (size_t)i));
		for (size_t k = 0; k < height; k++) { /* a cell of several lines: the others blank below */
			struct cr_buf line = CR_BUF_INIT(1 << 20);
			for (int i = 0; i < t->ncols; i++) {
				const char *s = json_string_value(json_array_get(json_array_get(row, (size_t)i), k));
				if (i == t->ncols - 1)
					cr_buf_adds(&line, s ? s : "");
				else
					cr_buf_addf(&line, "%-*s  ", (int)t->width[i], s ? s : "");
			}
			char *text = cr_buf_detach(&line);
			size_t len = strlen(text);
			while (len && text[len - 1] == ' ') /* blank cells at the end of a line */
				text[--len] = '\0';
			printf("%s\n", text);
			free(text);
		}
	}
	json_decref(t->rows);
}

void cr_cli_mem_pair(long long used, long long total, char *out, size_t n)
{
	char a[32], b[32];
	cr_bytes_human((uint64_t)(used > 0 ? used : 0), a, sizeof(a));
	cr_bytes_human((uint64_t)(total > 0 ? total : 0), b, sizeof(b));
	snprintf(out, n, "%s/%s", a, b);
}

int cr_cli_print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));
	puts(s);
	free(s);
	json_decref(j);
	return 0;
}


void cr_cli_print_checks(json_t *checks, const char *indent)
{
	size_t i;
	json_t *c;
	json_array_foreach(checks, i, c) {
		const char *fix = cr_json_get_str(c, "fix", "");
		char *msg = cr_cli_safe(cr_json_get_str(c, "message", ""));
		printf("%s%-5s %-20s %s\n", indent, cr_json_get_str(c, "level", "?"), cr_json_get_str(c, "id", "?"), msg);
		free(msg);
		if (*fix)
			printf("%s      %-20s fix: %s\n", indent, "", fix);
	}
}

int cr_cli_parse_count(const char *s, const char *flag, long long max, long long *out)
{
	if (cr_parse_int(s, 0, max, out))
		return 0;
	fprintf(stderr, "corral: %s wants a number from 0 to %lld, not '%s'\n", flag, max, s);
	return -1;
}

json_t *cr_cli_csv(const char *s)
{
	json_t *arr = json_array();
	char *copy = cr_xstrdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		json_array_append_new(arr, json_string(cr_trim(t)));
	free(copy);
	return arr;
}

int cr_cli_parse(int argc, char **argv, const char *usage, const struct cr_opt *opts)
{
	struct option lo[64];
	char shorts[130] = "h";
	size_t n = 0, ns = 1;
	for (const struct cr_opt *o = opts; o->name && n < 62; o++, n++) {
		bool arg = o->kind != CR_OPT_FLAG && o->kind != CR_OPT_FIELD_TRUE;
		lo[n] = (struct option){ o->name, arg ? required_argument : no_argument, NULL, 1000 + (int)n };
		if (o->short_name && ns + 2 < sizeof(shorts)) {
			shorts[ns++] = o->short_name;
			if (arg)
				shorts[ns++] = ':';
		}
	}
	lo[n++] = (struct option){ "help", no_argument, NULL, 'h' };
	lo[n] = (struct option){ NULL, 0, NULL, 0 };
	shorts[ns] = '\0';
	int ch, bad = 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		const struct cr_opt *o = NULL;
		if (ch >= 1000)
			o = &opts[ch - 1000];
		for (const struct cr_opt *x = opts; !o && ch != 'h' && ch != '?' && x->name; x++)
			if (x->short_name == ch)
				o = x;
		if (ch == 'h') {
			fputs(usage, stdout);
			return 0;
		}
		if (!o) {
			fputs(usage, stderr);
			return 2;
		}
		char flag[80];
		snprintf(flag, sizeof(flag), "--%s", o->name);
		long long v = 0;
		switch (o->kind) {
		case CR_OPT_FLAG: *(bool *)o->dst = true; break;
		case CR_OPT_STR: *(const char **)o->dst = optarg; break;
		case CR_OPT_COUNT: bad |= cr_cli_parse_count(optarg, flag, o->max, (long long *)o->dst); break;
		case CR_OPT_FIELD_STR: json_object_set_new(o->dst, o->field, json_string(optarg)); break;
		case CR_OPT_FIELD_TRUE: json_object_set_new(o->dst, o->field, json_true()); break;
		case CR_OPT_FIELD_COUNT:
			bad |= cr_cli_parse_count(optarg, flag, o->max, &v);
			json_object_set_new(o->dst, o->field, json_integer(v));
			break;
		case CR_OPT_FIELD_CSV: json_object_set_new(o->dst, o->field, cr_cli_csv(optarg)); break;
		}
	}
	if (bad) {
		fputs(usage, stderr);
		return 2;
	}
	return -1;
}

static double download_fraction(json_t *dl)
{
	double total = (double)json_integer_value(json_object_get(dl, "total"));
	double have = (double)json_integer_value(json_object_get(dl, "bytes"));
	return total > 0 ? (have < total ? have / total : 1.0) : 0.0;
}

void cr_cli_download_text(json_t *dl, char *out, size_t n)
{
	char total[32], rate[48] = "", left[48] = "";
	uint64_t t = (uint64_t)json_integer_value(json_object_get(dl, "total"));
	cr_bytes_human(t, total, sizeof(total));
	json_int_t r = json_integer_value(json_object_get(dl, "rate"));
	if (r > 0) {
		char h[32];
		cr_bytes_human((uint64_t)r, h, sizeof(h));
		snprintf(rate, sizeof(rate), " at %s/s", h);
	}
	json_t *eta = json_object_get(dl, "eta_s");
	if (json_is_integer(eta)) {
		long long s = json_integer_value(eta);
		if (s >= 3600)
			snprintf(left, sizeof(left), ", %lld h %02lld min left", s / 3600, s % 3600 / 60);
		else if (s >= 60)
			snprintf(left, sizeof(left), ", %lld min %02lld s left", s / 60, s % 60);
		else
			snprintf(left, sizeof(left), ", %lld s left", s);
	}
	if (t)
		snprintf(out, n, "%.1f%% of %s%s%s", 100.0 * download_fraction(dl), total, rate, left);
	else
		snprintf(out, n, "%lld bytes%s", (long long)json_integer_value(json_object_get(dl, "bytes")), rate);
}

void cr_cli_download_bar(json_t *dl, int width, char *out, size_t n)
{
	if (n < 3 || width < 1)
		return;
	if ((size_t)width > n - 3)
		width = (int)(n - 3);
	int full = (int)(download_fraction(dl) * width + 0.5);
	out[0] = '[';
	for (int k = 0; k < width; k++)
		out[1 + k] = k < full ? '#' : '.';
	out[1 + width] = ']';
	out[2 + width] = '\0';
}

void cr_cli_query_add(struct cr_buf *path, const char *name, const char *value)
{
	if (!value)
		return;
	char *enc = curl_easy_escape(NULL, value, 0);
	cr_buf_addf(path, "%c%s=%s", strchr(cr_buf_str(path), '?') ? '&' : '?', name, enc);
	curl_free(enc);
}
