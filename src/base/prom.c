/* Prometheus text format, see prom.h. */
#include "base/prom.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

void cr_prom_family(struct cr_buf *b, const char *name, const char *type, const char *help)
{
	cr_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void add_value(struct cr_buf *b, double v)
{
	if (isnan(v)) {
		cr_buf_adds(b, "NaN");
	} else if (isinf(v)) {
		cr_buf_adds(b, v > 0 ? "+Inf" : "-Inf");
	} else if (v == (double)(long long)v && fabs(v) < 1e15) {
		char digits[24], *p = digits + sizeof(digits);
		long long n = (long long)v;
		unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
		do
			*--p = (char)('0' + u % 10);
		while ((u /= 10));
		if (n < 0)
			*--p = '-';
		cr_buf_add(b, p, (size_t)(digits + sizeof(digits) - p));
	} else {
		cr_buf_addf(b, "%.9g", v);
	}
}

/* A label value, escaped: runs without \, " or newline go in whole. */
static void add_escaped(struct cr_buf *b, const char *v)
{
	for (;;) {
		size_t run = strcspn(v, "\\\"\n");
		cr_buf_add(b, v, run);
		v += run;
		if (!*v)
			return;
		cr_buf_add(b, *v == '\n' ? "\\n" : *v == '"' ? "\\\"" : "\\\\", 2);
		v++;
	}
}

static void add_labels(struct cr_buf *b, const char *const *labels, const char *le)
{
	bool any = false;
	for (int i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
		cr_buf_add(b, any ? "," : "{", 1);
		cr_buf_adds(b, labels[i]);
		cr_buf_add(b, "=\"", 2);
		add_escaped(b, labels[i + 1]);
		cr_buf_add(b, "\"", 1);
		any = true;
	}
	if (le) {
		cr_buf_adds(b, any ? ",le=\"" : "{le=\"");
		cr_buf_adds(b, le);
		cr_buf_add(b, "\"", 1);
		any = true;
	}
	if (any)
		cr_buf_add(b, "}", 1);
}

void cr_prom_sample(struct cr_buf *b, const char *name, const char *const *labels, double value)
{
	cr_buf_adds(b, name);
	add_labels(b, labels, NULL);
	cr_buf_add(b, " ", 1);
	add_value(b, value);
	cr_buf_add(b, "\n", 1);
}

void cr_prom_hist_init(struct cr_prom_hist *h, const double *bounds, int n)
{
	memset(h, 0, sizeof(*h));
	h->n = n < CR_PROM_MAX_BUCKETS ? n : CR_PROM_MAX_BUCKETS;
	memcpy(h->bounds, bounds, (size_t)h->n * sizeof(double));
}

void cr_prom_observe(struct cr_prom_hist *h, double v)
{
	for (int i = 0; i < h->n; i++)
		if (v <= h->bounds[i]) {
			h->counts[i]++;
			break;
		}
	h->count++;
	h->sum += v;
}

void cr_prom_hist_write(struct cr_buf *b, const char *name, const char *const *labels, const struct cr_prom_hist *h)
{
	uint64_t cum = 0;
	for (int i = 0; i <= h->n; i++) {
		char le[32];
		if (i < h->n) {
			cum += h->counts[i];
			snprintf(le, sizeof(le), "%g", h->bounds[i]);
		} else {
			cum = h->count;
			snprintf(le, sizeof(le), "+Inf");
		}
		cr_buf_addf(b, "%s_bucket", name);
		add_labels(b, labels, le);
		cr_buf_addf(b, " %llu\n", (unsigned long long)cum);
	}
	cr_buf_addf(b, "%s_sum", name);
	add_labels(b, labels, NULL);
	cr_buf_adds(b, " ");
	add_value(b, h->sum);
	cr_buf_addf(b, "\n%s_count", name);
	add_labels(b, labels, NULL);
	cr_buf_addf(b, " %llu\n", (unsigned long long)h->count);
}

#define MAX_NAME 200
#define MAX_LABELS 1000

static bool name_char(char c, bool first)
{
	return isalpha((unsigned char)c) || c == '_' || c == ':' || (!first && isdigit((unsigned char)c));
}

/* One line (without its newline): 1 when it was a sample handed to cb. */
static int parse_line(const char *p, const char *end, cr_prom_sample_cb cb, void *arg)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p == end || *p == '#')
		return 0;
	const char *name = p;
	while (p < end && name_char(*p, p == name))
		p++;
	size_t name_len = (size_t)(p - name);
	if (!name_len || name_len > MAX_NAME)
		return 0;
	const char *labels = p, *labels_end = p;
	if (p < end && *p == '{') {
		labels = ++p;
		bool quoted = false;
		while (p < end && (quoted || *p != '}')) {
			if (quoted && *p == '\\' && p + 1 < end)
				p++;
			else if (*p == '"')
				quoted = !quoted;
			p++;
		}
		if (p == end)
			return 0;
		labels_end = p++;
		if ((size_t)(labels_end - labels) > MAX_LABELS)
			return 0;
	}
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	char num[64];
	size_t n = 0;
	while (p < end && *p != ' ' && *p != '\t' && n < sizeof(num) - 1)
		num[n++] = *p++;
	num[n] = '\0';
	if (!n)
		return 0;
	char *stop;
	double v = strtod(num, &stop);
	if (*stop)
		return 0;
	char nbuf[MAX_NAME + 1], lbuf[MAX_LABELS + 1];
	memcpy(nbuf, name, name_len);
	nbuf[name_len] = '\0';
	memcpy(lbuf, labels, (size_t)(labels_end - labels));
	lbuf[labels_end - labels] = '\0';
	cb(nbuf, lbuf, v, arg);
	return 1;
}

int cr_prom_parse(const char *text, size_t len, cr_prom_sample_cb cb, void *arg)
{
	int n = 0;
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = nl ? nl : end;
		n += parse_line(p, line_end, cb, arg);
		p = nl ? nl + 1 : end;
	}
	return n;
}

int cr_prom_label(const char *labels, const char *key, char *out, size_t n)
{
	size_t klen = strlen(key);
	const char *p = labels;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *k = p;
		while (*p && *p != '=')
			p++;
		if (*p != '=' || p[1] != '"')
			return -1;
		bool match = (size_t)(p - k) == klen && !strncmp(k, key, klen);
		p += 2;
		size_t o = 0;
		while (*p && *p != '"') {
			char c = *p;
			if (c == '\\' && p[1]) {
				c = p[1] == 'n' ? '\n' : p[1];
				p++;
			}
			if (match && o + 1 < n)
				out[o++] = c;
			p++;
		}
		if (*p != '"')
			return -1;
		p++;
		if (match) {
			if (n)
				out[o] = '\0';
			return 0;
		}
	}
	return -1;
}
