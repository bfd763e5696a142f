/* Unit tests of node detection: /proc text parsers, AMD sysfs on a fake
 * tree, NVML through the fake library (and its failure fixtures), and the
 * --resources merge. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/detect.h"
#include "base/err.h"
#include "base/mem.h"
#include "base/util.h"

Test(procfs, meminfo)
{
	struct cr_meminfo mi;
	const char *text = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n"
			   "SwapTotal:       1024 kB\nSwapFree:         512 kB\n";
	cr_assert_eq(cr_parse_meminfo(text, &mi), 0);
	cr_assert_eq(mi.mem_total, 24576000ULL * 1024);
	cr_assert_eq(mi.mem_available, 20000000ULL * 1024);
	cr_assert_eq(mi.swap_total, 1024 * 1024);
	cr_assert_eq(mi.swap_free, 512 * 1024);
	cr_assert_eq(cr_parse_meminfo("garbage\n", &mi), -EINVAL, "no MemTotal is an error");
}

Test(procfs, cpu_model_x86_and_arm)
{
	char out[128];
	cr_parse_cpu_model("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n",
			   out, sizeof(out));
	cr_assert_str_eq(out, "AMD EPYC 9654 96-Core Processor");
	cr_parse_cpu_model("processor : 0\nBogoMIPS : 50.00\nModel : Raspberry Pi 4 Model B Rev 1.4\n", out, sizeof(out));
	cr_assert_str_eq(out, "Raspberry Pi 4 Model B Rev 1.4");
	cr_parse_cpu_model("nothing here\n", out, sizeof(out));
	cr_assert_str_eq(out, "");
}

Test(procfs, port_range_uptime_os_release)
{
	int lo, hi;
	double up;
	char out[64];
	cr_assert_eq(cr_parse_port_range("32768\t60999\n", &lo, &hi), 0);
	cr_assert_eq(lo, 32768);
	cr_assert_eq(hi, 60999);
	cr_assert_eq(cr_parse_port_range("60999 32768", &lo, &hi), -EINVAL);
	cr_assert_eq(cr_parse_uptime("3600.25 100.0\n", &up), 0);
	cr_assert_float_eq(up, 3600.25, 0.001);
	cr_parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n", out, sizeof(out));
	cr_assert_str_eq(out, "Debian GNU/Linux 12 (bookworm)");
}

static char *tmpdir(void)
{
	char *d = cr_xstrdup("/tmp/cr-detect-XXXXXX");
	cr_assert_not_null(mkdtemp(d));
	return d;
}

static void put(const char *root, const char *rel, const char *text)
{
	char *path = cr_xasprintf("%s/%s", root, rel);
	char *dir = cr_xstrdup(path);
	*strrchr(dir, '/') = '\0';
	cr_assert_eq(cr_mkdir_p(dir, 0755, NULL), 0);
	cr_assert_eq(cr_file_write(path, text, strlen(text), 0644, NULL), 0);
	free(dir);
	free(path);
}

Test(amd, sysfs_cards_in_order_and_non_amd_skipped)
{
	char *root = tmpdir();
	put(root, "class/drm/card1/device/vendor", "0x1002\n");
	put(root, "class/drm/card1/device/mem_info_vram_total", "68702699520\n");
	put(root, "class/drm/card1/device/mem_info_vram_used", "1048576\n");
	put(root, "class/drm/card1/device/gpu_busy_percent", "37\n");
	put(root, "class/drm/card1/device/product_name", "AMD Instinct MI210\n");
	put(root, "class/drm/card1/device/hwmon/hwmon3/temp1_input", "45000\n");
	put(root, "class/drm/card0/device/vendor", "0x8086\n"); /* an Intel iGPU */
	put(root, "class/drm/card1-DP-1/status", "connected\n");
	put(root, "class/drm/card2/device/vendor", "0x1002\n"); /* no VRAM files: driver not bound */
	json_t *gpus = json_array(), *notes = json_array();
	json_array_append_new(gpus, json_pack("{s:i}", "index", 0)); /* one NVIDIA GPU came first */
	cr_detect_amd(root, gpus, notes);
	cr_assert_eq(json_array_size(gpus), 2);
	json_t *g = json_array_get(gpus, 1);
	cr_assert_eq(json_integer_value(json_object_get(g, "index")), 1);
	cr_assert_eq(json_integer_value(json_object_get(g, "vendor_index")), 0);
	cr_assert_str_eq(json_string_value(json_object_get(g, "vendor")), "amd");
	cr_assert_str_eq(json_string_value(json_object_get(g, "name")), "AMD Instinct MI210");
	cr_assert_eq(json_integer_value(json_object_get(g, "memory_total")), 68702699520LL);
	cr_assert_eq(json_integer_value(json_object_get(g, "memory_used")), 1048576);
	cr_assert_eq(json_integer_value(json_object_get(g, "utilization")), 37);
	cr_assert_eq(json_integer_value(json_object_get(g, "temperature")), 45);
	cr_assert_eq(json_array_size(notes), 1);
	cr_assert(strstr(json_string_value(json_array_get(notes, 0)), "card2"), "the note names the card");
	json_decref(gpus);
	json_decref(notes);
	free(root);
}

Test(amd, missing_sysfs_means_no_gpus)
{
	json_t *gpus = json_array(), *notes = json_array();
	cr_detect_amd("/nonexistent-root", gpus, notes);
	cr_assert_eq(json_array_size(gpus), 0);
	json_decref(gpus);
	json_decref(notes);
}

static char *fake_nvml(const char *variant)
{
	const char *build = getenv("CORRAL_BUILD");
	return cr_xasprintf("%s/fakes/%s/libnvidia-ml.so.1", build ? build : "build", variant);
}

static char *nvml_config(const char *json)
{
	char *dir = tmpdir();
	put(dir, "nvml.json", json);
	char *path = cr_xasprintf("%s/nvml.json", dir);
	free(dir);
	setenv("FAKE_NVML_CONFIG", path, 1);
	return path;
}

static const char two_gpus[] =
	"{\"driver_version\": \"550.54.15\", \"cuda_driver_version\": 12040, \"devices\": ["
	"{\"name\": \"NVIDIA H100 80GB HBM3\", \"uuid\": \"GPU-aaaa\", \"memory_total\": 85899345920,"
	" \"memory_used\": 2147483648, \"utilization\": 55, \"temperature\": 61, \"power_mw\": 312000,"
	" \"power_limit_mw\": 700000, \"cc\": [9, 0], \"pci_bus_id\": \"00000000:17:00.0\","
	" \"processes\": [{\"pid\": 4242, \"memory\": 2147483648}]},"
	"{\"name\": \"NVIDIA L4\", \"uuid\": \"GPU-bbbb\", \"memory_total\": 24159191040, \"memory_used\": 0, \"cc\": [8, 9]}]}";

Test(nvml, fake_library_reports_every_field)
{
	free(nvml_config(two_gpus));
	char *lib = fake_nvml("nvml");
	json_t *gpus = json_array(), *drivers = json_object(), *notes = json_array();
	cr_detect_nvml(lib, gpus, drivers, notes);
	cr_assert_eq(json_array_size(gpus), 2, "two GPUs expected");
	json_t *g = json_array_get(gpus, 0);
	cr_assert_str_eq(json_string_value(json_object_get(g, "name")), "NVIDIA H100 80GB HBM3");
	cr_assert_str_eq(json_string_value(json_object_get(g, "uuid")), "GPU-aaaa");
	cr_assert_eq(json_integer_value(json_object_get(g, "memory_total")), 85899345920LL);
	cr_assert_eq(json_integer_value(json_object_get(g, "memory_free")), 85899345920LL - 2147483648LL);
	cr_assert_eq(json_integer_value(json_object_get(g, "utilization")), 55);
	cr_assert_eq(json_integer_value(json_object_get(g, "temperature")), 61);
	cr_assert_float_eq(json_real_value(json_object_get(g, "power_draw_w")), 312.0, 0.01);
	cr_assert_float_eq(json_real_value(json_object_get(g, "power_limit_w")), 700.0, 0.01);
	cr_assert_str_eq(json_string_value(json_object_get(g, "compute_capability")), "9.0");
	cr_assert_str_eq(json_string_value(json_object_get(g, "pci_bus_id")), "00000000:17:00.0");
	json_t *p = json_array_get(json_object_get(g, "processes"), 0);
	cr_assert_eq(json_integer_value(json_object_get(p, "pid")), 4242);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(gpus, 1), "compute_capability")), "8.9");
	json_t *nv = json_object_get(drivers, "nvidia");
	cr_assert_str_eq(json_string_value(json_object_get(nv, "driver_version")), "550.54.15");
	cr_assert_str_eq(json_string_value(json_object_get(nv, "cuda_driver_version")), "12.4");
	cr_assert_eq(json_array_size(notes), 0);
	json_decref(gpus);
	json_decref(drivers);
	json_decref(notes);
	free(lib);
}

static void expect_note(const char *lib, const char *needle)
{
	json_t *gpus = json_array(), *drivers = json_object(), *notes = json_array();
	cr_detect_nvml(lib, gpus, drivers, notes);
	cr_assert_eq(json_array_size(gpus), 0, "no GPUs when NVML is unusable");
	char *all = json_dumps(notes, 0);
	cr_assert(strstr(all, needle), "notes %s should mention '%s'", all, needle);
	free(all);
	json_decref(gpus);
	json_decref(drivers);
	json_decref(notes);
}

Test(nvml, missing_library_is_a_note)
{
	expect_note("/nonexistent/libnvidia-ml.so.1", "no NVIDIA GPUs: dlopen('/nonexistent/libnvidia-ml.so.1') failed");
}

Test(nvml, init_failure_names_the_nvml_error)
{
	free(nvml_config("{\"init_error\": 9, \"devices\": [{\"memory_total\": 1}]}"));
	char *lib = fake_nvml("nvml");
	expect_note(lib, "nvmlInit_v2 failed: Driver Not Loaded (NVML error 9)");
	free(lib);
}

Test(nvml, missing_symbol_is_named)
{
	free(nvml_config(two_gpus));
	char *lib = fake_nvml("nvml-nouuid");
	expect_note(lib, "has no symbol 'nvmlDeviceGetUUID'");
	free(lib);
}

Test(resources, declared_gpus_override_and_add)
{
	char *dir = tmpdir();
	put(dir, "res.json",
	    "{\"gpus\": [{\"vendor\": \"nvidia\", \"vendor_index\": 0, \"memory_total\": 1000, \"name\": \"Declared\"},"
	    " {\"vendor\": \"intel\", \"vendor_index\": 0, \"memory_total\": 500}], \"system\": {\"shm_bytes\": 64}}");
	char *path = cr_xasprintf("%s/res.json", dir);
	json_t *report = json_pack("{s:{s:I},s:[{s:i,s:s,s:i,s:s,s:I,s:I}],s:[]}", "system", "shm_bytes",
				   (json_int_t)1 << 30, "gpus", "index", 0, "vendor", "nvidia", "vendor_index", 0,
				   "name", "Detected", "memory_total", (json_int_t)80, "memory_used", (json_int_t)10,
				   "notes");
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_detect_apply_resources(path, report, &err), 0, "%s", err.message);
	json_t *gpus = json_object_get(report, "gpus");
	cr_assert_eq(json_array_size(gpus), 2);
	json_t *g0 = json_array_get(gpus, 0), *g1 = json_array_get(gpus, 1);
	cr_assert_str_eq(json_string_value(json_object_get(g0, "name")), "Declared");
	cr_assert_eq(json_integer_value(json_object_get(g0, "memory_total")), 1000);
	cr_assert_eq(json_integer_value(json_object_get(g0, "index")), 0);
	cr_assert_str_eq(json_string_value(json_object_get(g0, "source")), "declared");
	cr_assert_eq(json_integer_value(json_object_get(g1, "index")), 1);
	cr_assert_eq(json_integer_value(json_object_get(g1, "memory_free")), 500);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(report, "system"), "shm_bytes")), 64);
	json_decref(report);
	free(path);
	free(dir);
}

Test(resources, bad_files_explain_themselves)
{
	char *dir = tmpdir();
	put(dir, "bad.json", "{\"gpus\": [{\"vendor\": \"nvidia\"}]}");
	put(dir, "broken.json", "{\"gpus\": [");
	char *bad = cr_xasprintf("%s/bad.json", dir), *broken = cr_xasprintf("%s/broken.json", dir);
	json_t *report = json_pack("{s:{},s:[],s:[]}", "system", "gpus", "notes");
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_detect_apply_resources(bad, report, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "gpus[0]"), "%s", err.message);
	cr_assert(strstr(err.fix, "memory_total"), "%s", err.fix);
	cr_assert_eq(cr_detect_apply_resources(broken, report, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "malformed JSON"), "%s", err.message);
	cr_assert_neq(cr_detect_apply_resources("/nonexistent.json", report, &err), 0);
	cr_assert_eq(json_array_size(json_object_get(report, "gpus")), 0, "a bad file changes nothing");
	json_decref(report);
	free(bad);
	free(broken);
	free(dir);
}

Test(node, report_has_the_documented_shape)
{
	struct cr_detect_opts o = { "/tmp", NULL, "/nonexistent/libnvidia-ml.so.1", "/nonexistent", NULL };
	json_t *r = cr_detect_node(&o);
	json_t *sys = json_object_get(r, "system");
	cr_assert(json_integer_value(json_object_get(json_object_get(sys, "cpu"), "cores")) >= 1);
	cr_assert(json_integer_value(json_object_get(json_object_get(sys, "memory"), "total")) > 0);
	cr_assert(json_integer_value(json_object_get(json_object_get(sys, "disk"), "total")) > 0);
	cr_assert_eq(json_array_size(json_object_get(sys, "ephemeral_ports")), 2);
	cr_assert_not_null(json_object_get(json_object_get(sys, "os"), "kernel"));
	cr_assert_eq(json_array_size(json_object_get(r, "gpus")), 0);
	cr_assert(json_array_size(json_object_get(r, "notes")) >= 1, "the missing NVML library is noted");
	json_decref(r);
}
