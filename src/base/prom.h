/* Prometheus text exposition format (version 0.0.4): writing families,
 * samples and histograms into a cr_buf, and reading the samples of an
 * engine's /metrics answer (untrusted bytes). */
#ifndef CR_BASE_PROM_H
#define CR_BASE_PROM_H

#include <stddef.h>
#include <stdint.h>

struct cr_buf;

/* "# HELP name help" and "# TYPE name type" (type: gauge, counter, histogram). */
void cr_prom_family(struct cr_buf *b, const char *name, const char *type, const char *help);

/* One sample: name{k="v",...} value. labels is NULL or a NULL-terminated
 * list of key, value pairs; values are escaped (\\, ", newline). */
void cr_prom_sample(struct cr_buf *b, const char *name, const char *const *labels, double value);

#define CR_PROM_MAX_BUCKETS 16

/* A histogram with fixed upper bounds (seconds, ascending); +Inf is implied. */
struct cr_prom_hist {
	int n;
	double bounds[CR_PROM_MAX_BUCKETS];
	uint64_t counts[CR_PROM_MAX_BUCKETS]; /* per bucket, not cumulative */
	uint64_t count;
	double sum;
};

/* bounds: n ascending values, n <= CR_PROM_MAX_BUCKETS. */
void cr_prom_hist_init(struct cr_prom_hist *h, const double *bounds, int n);
void cr_prom_observe(struct cr_prom_hist *h, double v);

/* name_bucket{...,le="..."} (cumulative), name_sum and name_count. */
void cr_prom_hist_write(struct cr_buf *b, const char *name, const char *const *labels, const struct cr_prom_hist *h);

/* Called with each sample of a text exposition: its metric name, the text
 * between its braces (without them, "" when none) and its value. */
typedef void (*cr_prom_sample_cb)(const char *name, const char *labels, double value, void *arg);

/* Read text of len bytes (need not be NUL-terminated): comments and blank
 * lines are skipped, so are malformed lines; names longer than 200 bytes and
 * label texts longer than 1000 are skipped too. Returns the number of
 * samples handed to cb. */
int cr_prom_parse(const char *text, size_t len, cr_prom_sample_cb cb, void *arg);

/* The value of label key in a labels text as cr_prom_parse gives it, into
 * out (unescaped, cut to n - 1 bytes). Returns 0, or -1 when absent. */
int cr_prom_label(const char *labels, const char *key, char *out, size_t n);

#endif
