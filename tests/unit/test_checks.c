/* Compatibility checks: each node and group check with the measured values
 * that make it pass, warn and fail, and the messages naming them. */
#include <criterion/criterion.h>
#include <string.h>

#include "base/json.h"
#include "checks/checks.h"

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	cr_assert(j, "bad test JSON: %s: %s", e.text, text);
	return j;
}

/* The check with id in list (the last one when repeated), or NULL. */
static json_t *find(json_t *list, const char *id)
{
	json_t *found = NULL, *c;
	size_t i;
	json_array_foreach(list, i, c)
		if (!strcmp(cr_json_get_str(c, "id", ""), id))
			found = c;
	return found;
}

static void expect(json_t *list, const char *id, const char *level, const char *needle)
{
	json_t *c = find(list, id);
	cr_assert(c, "no check '%s' in %s", id, json_dumps(list, 0));
	cr_assert_str_eq(cr_json_get_str(c, "level", ""), level, "%s: %s", id, cr_json_get_str(c, "message", ""));
	if (needle)
		cr_assert(strstr(cr_json_get_str(c, "message", ""), needle), "%s: '%s' lacks '%s'", id,
			  cr_json_get_str(c, "message", ""), needle);
	if (strcmp(level, "pass") != 0)
		cr_assert(*cr_json_get_str(c, "fix", ""), "%s at %s has a fix", id, level);
}

static json_t *node(const char *report, uint64_t largest)
{
	json_t *r = J(report), *out = json_array();
	cr_checks_node(r, largest, out);
	json_decref(r);
	return out;
}

#define NV(driver, cuda, cc) \
	"\"drivers\":{\"nvidia\":{\"driver_version\":\"" driver "\",\"cuda_driver_version\":\"" cuda "\"}}," \
	"\"gpus\":[{\"index\":0,\"vendor\":\"nvidia\",\"name\":\"NVIDIA L4\",\"compute_capability\":\"" cc "\"}]"
#define VLLM "\"engines\":[{\"name\":\"vllm\",\"version\":\"0.6.3\",\"path\":\"/x/vllm\"}]"

Test(checks, nvml)
{
	json_t *l = node("{" NV("550.54.15", "12.4", "8.9") "}", 0);
	expect(l, "nvml", "pass", "550.54.15");
	json_decref(l);
	l = node("{\"notes\":[\"no NVIDIA GPUs: dlopen failed\"]}", 0);
	expect(l, "nvml", "pass", "no NVIDIA GPUs");
	json_decref(l);
	l = node("{\"nvidia_device_files\":true,\"notes\":[\"no NVIDIA GPUs: nvmlInit failed: Driver/library version "
		 "mismatch\"]}", 0);
	expect(l, "nvml", "fail", "version mismatch");
	json_decref(l);
}

Test(checks, cuda_driver)
{
	json_t *l = node("{" NV("550.54.15", "12.4", "8.9") "," VLLM "}", 0);
	expect(l, "cuda-driver", "pass", "12.4");
	json_decref(l);
	l = node("{" NV("525.60.13", "12.0", "8.9") "," VLLM "}", 0);
	expect(l, "cuda-driver", "fail", "vllm needs CUDA driver 12.1 or newer; driver 525.60.13 supports CUDA 12.0");
	json_decref(l);
	l = node("{" NV("550.54.15", "", "8.9") "," VLLM "}", 0);
	expect(l, "cuda-driver", "warn", "does not say");
	json_decref(l);
}

Test(checks, compute_capability)
{
	json_t *l = node("{" NV("550.54.15", "12.4", "7.0") "," VLLM "}", 0);
	expect(l, "compute-capability", "pass", NULL);
	json_decref(l);
	l = node("{" NV("550.54.15", "12.4", "6.1") "," VLLM "}", 0);
	expect(l, "compute-capability", "fail", "GPU 0 (NVIDIA L4, 6.1)");
	json_decref(l);
}

Test(checks, shm)
{
	json_t *l = node("{" NV("550.54.15", "12.4", "8.9") "," VLLM ",\"system\":{\"shm_bytes\":17179869184}}", 0);
	expect(l, "shm", "pass", "16.0 GiB");
	json_decref(l);
	l = node("{" NV("550.54.15", "12.4", "8.9") "," VLLM ",\"system\":{\"shm_bytes\":67108864}}", 0);
	expect(l, "shm", "warn", "/dev/shm is 64 MiB");
	json_decref(l);
	l = node("{\"system\":{\"shm_bytes\":67108864}}", 0);
	cr_assert_null(find(l, "shm"), "no vLLM, no GPUs: shm does not matter");
	json_decref(l);
}

Test(checks, port_range)
{
	json_t *l = node("{\"port_range\":[20000,20999],\"system\":{\"ephemeral_ports\":[32768,60999]}}", 0);
	expect(l, "port-range", "pass", NULL);
	json_decref(l);
	l = node("{\"port_range\":[32000,33000],\"system\":{\"ephemeral_ports\":[32768,60999]}}", 0);
	expect(l, "port-range", "warn", "233 port(s) not reserved");
	json_decref(l);
	l = node("{\"port_range\":[32000,33000],\"reserved_ports\":\"32768-33000\","
		 "\"system\":{\"ephemeral_ports\":[32768,60999]}}", 0);
	expect(l, "port-range", "pass", NULL);
	json_decref(l);
}

Test(checks, disk)
{
	json_t *l = node("{\"system\":{\"disk\":{\"path\":\"/data\",\"free\":107374182400}}}", 40ull << 30);
	expect(l, "disk", "pass", "100.0 GiB free in /data");
	json_decref(l);
	l = node("{\"system\":{\"disk\":{\"path\":\"/data\",\"free\":10737418240}}}", 40ull << 30);
	expect(l, "disk", "fail", "needs 40.0 GiB");
	json_decref(l);
}

Test(checks, clock)
{
	json_t *l = node("{\"clock_offset_ms\":120}", 0);
	expect(l, "clock", "pass", "+120 ms");
	json_decref(l);
	l = node("{\"clock_offset_ms\":-4500}", 0);
	expect(l, "clock", "warn", "-4500 ms");
	json_decref(l);
	l = node("{\"clock_offset_ms\":90000}", 0);
	expect(l, "clock", "fail", "+90000 ms");
	json_decref(l);
	/* a hostile report: negating the smallest integer was undefined behaviour */
	l = node("{\"clock_offset_ms\":-9223372036854775808}", 0);
	expect(l, "clock", "fail", "ms from the server's");
	json_decref(l);
}

Test(checks, engines)
{
	json_t *l = node("{" VLLM ",\"notes\":[\"engine 'my-llama': '/opt/x' not found on PATH or CORRAL_ENGINE_PATH\"]}", 0);
	expect(l, "engine:vllm", "pass", "version 0.6.3");
	expect(l, "engine:my-llama", "warn", "not found");
	json_decref(l);
}

Test(checks, address)
{
	json_t *l = json_array();
	cr_checks_address("10.0.0.5", "10.0.0.5", true, NULL, l);
	expect(l, "address", "pass", NULL);
	cr_checks_address("10.0.0.5", "192.168.1.9", true, NULL, l);
	expect(l, "address", "warn", "come from 192.168.1.9");
	cr_checks_address("10.0.0.5", "10.0.0.5", false, "connection refused", l);
	expect(l, "address", "fail", "connection refused");
	json_decref(l);
}

/* ---- group checks ---- */

#define GPU_NODE(driver, gpu, vllm, ray, shm, peers) \
	"{\"drivers\":{\"nvidia\":{\"driver_version\":\"" driver "\"}},\"gpus\":[{\"vendor\":\"nvidia\",\"name\":\"" gpu \
	"\"}],\"engines\":[{\"name\":\"vllm\",\"version\":\"" vllm "\"},{\"name\":\"ray\",\"version\":\"" ray "\"}," \
	"{\"name\":\"llama.cpp\",\"version\":\"b1\"}],\"system\":{\"shm_bytes\":" shm "},\"peers\":" peers "}"

static json_t *group(const char *engine, const char *r1, const char *r2, const char *r3)
{
	const char *rs[3] = { r1, r2, r3 };
	static const char *names[3] = { "gpu-1", "gpu-2", "gpu-3" }, *ids[3] = { "a", "b", "c" };
	struct cr_group_member m[3];
	json_t *reports[3];
	int n = r3 ? 3 : 2;
	for (int i = 0; i < n; i++) {
		reports[i] = J(rs[i]);
		m[i] = (struct cr_group_member){ ids[i], names[i], reports[i], true, 1, -1 };
	}
	struct cr_group_limits lim;
	cr_group_limits_defaults(&lim);
	json_t *out = json_array();
	cr_checks_group(m, n, engine, true, false, &lim, out);
	for (int i = 0; i < n; i++)
		json_decref(reports[i]);
	return out;
}

#define PEERS_OK "{\"a\":{\"rtt_ms\":0.3},\"b\":{\"rtt_ms\":0.3},\"c\":{\"rtt_ms\":0.3}}"
#define BIG "17179869184"

Test(checks, group_driver_mismatch_names_the_odd_node_and_the_others)
{
	json_t *l = group("vllm", GPU_NODE("550.54.15", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK),
			  GPU_NODE("535.104.05", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK),
			  GPU_NODE("550.54.14", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK));
	expect(l, "driver-mismatch", "fail",
	       "gpu-2 runs NVIDIA driver 535, gpu-1 and gpu-3 run NVIDIA driver 550: vllm across nodes (NCCL) needs the "
	       "same driver major version");
	cr_assert(strstr(cr_json_get_str(find(l, "driver-mismatch"), "fix", ""), "--selector"));
	json_decref(l);
	l = group("llama.cpp", GPU_NODE("550.54.15", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK),
		  GPU_NODE("535.104.05", "A100", "0.6.3", "2.40.0", BIG, PEERS_OK), NULL);
	cr_assert_null(find(l, "driver-mismatch"), "llama.cpp RPC allows mixed drivers and vendors");
	expect(l, "engine-mismatch", "pass", "llama.cpp b1");
	json_decref(l);
}

Test(checks, group_gpu_engine_ray_mismatch)
{
	json_t *l = group("vllm", GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK),
			  GPU_NODE("550.1", "A100", "0.6.2", "2.39.0", BIG, PEERS_OK), NULL);
	expect(l, "gpu-mismatch", "fail", "gpu-2 runs A100, gpu-1 runs L4");
	expect(l, "engine-mismatch", "fail", "gpu-2 runs 0.6.2, gpu-1 runs 0.6.3");
	expect(l, "ray-mismatch", "fail", "2.39.0");
	json_decref(l);
	l = group("vllm", GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK),
		  GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK), NULL);
	expect(l, "gpu-mismatch", "pass", NULL);
	expect(l, "engine-mismatch", "pass", NULL);
	expect(l, "ray-mismatch", "pass", NULL);
	cr_assert_eq(cr_checks_worst(l, NULL, NULL), CR_CHECK_PASS, "%s", json_dumps(l, 0));
	json_decref(l);
}

Test(checks, group_cpu_only_node_in_a_vllm_group)
{
	json_t *l = group("vllm", GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK),
			  "{\"gpus\":[],\"engines\":[{\"name\":\"vllm\",\"version\":\"0.6.3\"}],\"system\":{\"shm_bytes\":"
			  BIG "},\"peers\":" PEERS_OK "}", NULL);
	expect(l, "cpu-only", "fail", "gpu-2 has no GPU");
	cr_assert(strstr(cr_json_get_str(find(l, "cpu-only"), "fix", ""), "llama.cpp"));
	json_decref(l);
}

Test(checks, group_reach_and_rtt)
{
	json_t *l = group("vllm", GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, "{\"b\":{\"rtt_ms\":5.5}}"),
			  GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, "{\"a\":{\"rtt_ms\":5.1}}"), NULL);
	expect(l, "reach", "pass", NULL);
	expect(l, "rtt", "fail", "gpu-1 to gpu-2 5.50 ms");
	json_decref(l);
	l = group("llama.cpp", GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, "{\"b\":{\"rtt_ms\":5.5}}"),
		  GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, "{\"a\":{\"rtt_ms\":5.1}}"), NULL);
	expect(l, "rtt", "pass", "limit 20 ms");
	json_decref(l);
	l = group("vllm", GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, "{\"b\":{\"error\":\"connection refused\"}}"),
		  GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, "{\"a\":{\"rtt_ms\":0.2}}"), NULL);
	expect(l, "reach", "fail", "gpu-1 cannot reach gpu-2 (connection refused)");
	json_decref(l);
	l = group("vllm", GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, "{}"),
		  GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, "{}"), NULL);
	expect(l, "reach", "warn", "not measured yet");
	json_decref(l);
}

Test(checks, group_shm_and_model_file)
{
	json_t *l = group("vllm", GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK),
			  GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", "67108864", PEERS_OK), NULL);
	expect(l, "shm", "warn", "gpu-2 has 64 MiB");
	expect(l, "model-file", "pass", NULL);
	json_decref(l);
	json_t *r = J(GPU_NODE("550.1", "L4", "0.6.3", "2.40.0", BIG, PEERS_OK));
	struct cr_group_member m[2] = { { "a", "gpu-1", r, true, 1, -1 }, { "b", "gpu-2", r, true, 2, -1 } };
	struct cr_group_limits lim;
	cr_group_limits_defaults(&lim);
	l = json_array();
	cr_assert_eq(cr_checks_group(m, 2, "vllm", true, false, &lim, l), CR_CHECK_FAIL);
	expect(l, "model-file", "fail", "gpu-2 (missing)");
	json_array_clear(l);
	cr_checks_group(m, 2, "vllm", true, true, &lim, l);
	expect(l, "model-file", "pass", "downloadable");
	json_decref(l);
	json_decref(r);
}

Test(checks, group_python_mismatch_only_where_reported)
{
	const char *a = "{\"drivers\":{\"nvidia\":{\"driver_version\":\"550.1\"}},\"gpus\":[{\"name\":\"L4\"}],"
			"\"engines\":[{\"name\":\"vllm\",\"version\":\"0.6.3\"},{\"name\":\"ray\",\"version\":\"2.40.0\"}],"
			"\"python_version\":\"3.11.2\",\"peers\":" PEERS_OK ",\"system\":{\"shm_bytes\":" BIG "}}";
	const char *b = "{\"drivers\":{\"nvidia\":{\"driver_version\":\"550.1\"}},\"gpus\":[{\"name\":\"L4\"}],"
			"\"engines\":[{\"name\":\"vllm\",\"version\":\"0.6.3\"},{\"name\":\"ray\",\"version\":\"2.40.0\"}],"
			"\"python_version\":\"3.10.12\",\"peers\":" PEERS_OK ",\"system\":{\"shm_bytes\":" BIG "}}";
	json_t *l = group("vllm", a, b, NULL);
	expect(l, "python-mismatch", "fail", "gpu-2 runs Python 3.10.12, gpu-1 runs Python 3.11.2");
	json_decref(l);
	const char *c = "{\"drivers\":{\"nvidia\":{\"driver_version\":\"550.1\"}},\"gpus\":[{\"name\":\"L4\"}],"
			"\"engines\":[{\"name\":\"vllm\",\"version\":\"0.6.3\"},{\"name\":\"ray\",\"version\":\"2.40.0\"}],"
			"\"peers\":" PEERS_OK ",\"system\":{\"shm_bytes\":" BIG "}}";
	l = group("vllm", a, c, NULL);
	cr_assert_null(find(l, "python-mismatch"), "not reported by every node: not compared");
	json_decref(l);
	char ka[512], kb[512];
	json_t *ra = J(a), *rb = J(b);
	cr_checks_group_key(ra, "vllm", true, ka, sizeof(ka));
	cr_checks_group_key(rb, "vllm", true, kb, sizeof(kb));
	cr_assert_str_eq(ka, kb, "Python is left to the checks, not the key");
	cr_checks_group_key(ra, "llama.cpp", true, ka, sizeof(ka));
	cr_checks_group_key(rb, "llama.cpp", true, kb, sizeof(kb));
	cr_assert_str_eq(ka, kb, "llama.cpp RPC does not care about Python");
	json_decref(ra);
	json_decref(rb);
}
