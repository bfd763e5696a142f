/* Unit tests of the Prometheus text writer and reader (base/prom.h) and of
 * engines' metrics under Corral's vocabulary (agent/emetrics.h). */
#include <criterion/criterion.h>
#include <string.h>

#include "agent/emetrics.h"
#include "base/buf.h"
#include "base/prom.h"

Test(prom, samples_escape_label_values_and_histograms_are_cumulative)
{
	struct cr_buf b = CR_BUF_INIT(1 << 20);
	const char *l[] = { "model", "a \"b\"\\c\nd", NULL };
	cr_prom_sample(&b, "x_total", l, 3);
	cr_prom_sample(&b, "y", NULL, 0.25);
	cr_assert_str_eq(cr_buf_str(&b), "x_total{model=\"a \\\"b\\\"\\\\c\\nd\"} 3\ny 0.25\n");
	cr_buf_reset(&b);
	struct cr_prom_hist h;
	const double bounds[] = { 0.1, 1 };
	cr_prom_hist_init(&h, bounds, 2);
	cr_prom_observe(&h, 0.05);
	cr_prom_observe(&h, 0.5);
	cr_prom_observe(&h, 5);
	cr_prom_hist_write(&b, "t_seconds", NULL, &h);
	cr_assert_str_eq(cr_buf_str(&b), "t_seconds_bucket{le=\"0.1\"} 1\nt_seconds_bucket{le=\"1\"} 2\n"
					  "t_seconds_bucket{le=\"+Inf\"} 3\nt_seconds_sum 5.55\nt_seconds_count 3\n");
	cr_buf_release(&b);
}

static void collect(const char *name, const char *labels, double value, void *arg)
{
	cr_buf_addf(arg, "%s|%s|%g\n", name, labels, value);
}

Test(prom, parse_reads_samples_and_skips_what_is_malformed)
{
	const char text[] = "# HELP a help\n# TYPE a counter\na 1\nb{x=\"1,}\\\"2\",y=\"z\"} 2.5 1700000000\n"
			    "  \n{bad} 1\nc{unterminated 3\nd notanumber\ne +Inf\nf";
	struct cr_buf b = CR_BUF_INIT(1 << 20);
	cr_assert_eq(cr_prom_parse(text, sizeof(text) - 1, collect, &b), 3);
	cr_assert_str_eq(cr_buf_str(&b), "a||1\nb|x=\"1,}\\\"2\",y=\"z\"|2.5\ne||inf\n");
	char v[16];
	cr_assert_eq(cr_prom_label("x=\"1,}\\\"2\",y=\"z\"", "x", v, sizeof(v)), 0);
	cr_assert_str_eq(v, "1,}\"2");
	cr_assert_eq(cr_prom_label("x=\"1\",y=\"z\"", "y", v, sizeof(v)), 0);
	cr_assert_str_eq(v, "z");
	cr_assert_eq(cr_prom_label("x=\"1\"", "q", v, sizeof(v)), -1);
	cr_buf_release(&b);
}

Test(prom, engines_speak_one_vocabulary)
{
	const char llama[] = "llamacpp:prompt_tokens_total 56\nllamacpp:tokens_predicted_total 4\n"
			     "llamacpp:requests_processing 1\nllamacpp:requests_deferred 2\n";
	const char vllm[] = "vllm:num_requests_running{model_name=\"m\"} 3\nvllm:num_requests_waiting{model_name=\"m\"} 0\n"
			    "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\nvllm:prompt_tokens_total{model_name=\"m\"} 10\n"
			    "vllm:generation_tokens_total{model_name=\"m\"} 20\n";
	const char sglang[] = "sglang:token_usage{model_name=\"m\"} 0.25\nsglang:num_running_reqs 1\n"
			      "sglang:num_queue_reqs 4\nsglang:prompt_tokens_total 7\nsglang:generation_tokens_total 8\n";
	struct cr_engine_stats_row rows[3] = { { "a", "a-1", { { 0 }, 0 } }, { "b", "b-1", { { 0 }, 0 } },
					       { "c", "c-1", { { 0 }, 0 } } };
	cr_assert_eq(cr_engine_stats_parse(llama, sizeof(llama) - 1, &rows[0].stats), 4);
	cr_assert_eq(cr_engine_stats_parse(vllm, sizeof(vllm) - 1, &rows[1].stats), 5);
	cr_assert_eq(cr_engine_stats_parse(sglang, sizeof(sglang) - 1, &rows[2].stats), 5);
	struct cr_buf b = CR_BUF_INIT(1 << 20);
	cr_engine_stats_write(&b, rows, 3);
	const char *s = cr_buf_str(&b);
	cr_assert(strstr(s, "corral_engine_kv_cache_usage_ratio{model=\"b\",instance=\"b-1\"} 0.5\n"));
	cr_assert(strstr(s, "corral_engine_kv_cache_usage_ratio{model=\"c\",instance=\"c-1\"} 0.25\n"));
	cr_assert_null(strstr(s, "corral_engine_kv_cache_usage_ratio{model=\"a\""), "llama.cpp gave none");
	cr_assert(strstr(s, "corral_engine_requests_waiting{model=\"a\",instance=\"a-1\"} 2\n"));
	cr_assert(strstr(s, "corral_engine_generation_tokens_total{model=\"b\",instance=\"b-1\"} 20\n"));
	cr_assert(strstr(s, "corral_engine_prompt_tokens_total{model=\"c\",instance=\"c-1\"} 7\n"));
	cr_buf_release(&b);
}
