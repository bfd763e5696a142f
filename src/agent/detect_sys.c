/* System detection from /proc, statvfs and uname, plus the entry point that
 * assembles the whole node report. */
#include "agent/detect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "base/err.h"
#include "base/mem.h"
#include "base/util.h"

int cr_parse_meminfo(const char *text, struct cr_meminfo *out)
{
	memset(out, 0, sizeof(*out));
	int found = 0;
	for (const char *line = text; line && *line;) {
		const char *next = strchr(line, '\n');
		char key[64];
		unsigned long long kb;
		int n = sscanf(line, "%63[^:]: %llu kB", key, &kb);
		line = next ? next + 1 : NULL;
		if (n != 2)
			continue;
		uint64_t bytes = (uint64_t)kb * 1024;
		if (!strcmp(key, "MemTotal"))
			out->mem_total = bytes, found |= 1;
		else if (!strcmp(key, "MemAvailable"))
			out->mem_available = bytes, found |= 2;
		else if (!strcmp(key, "SwapTotal"))
			out->swap_total = bytes;
		else if (!strcmp(key, "SwapFree"))
			out->swap_free = bytes;
	}
	return (found & 1) ? 0 : -EINVAL;
}

void cr_parse_cpu_model(const char *text, char *out, size_t n)
{
	static const char *keys[] = { "model name", "Model", "Hardware", "cpu model" };
	out[0] = '\0';
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		for (const char *line = text; line && *line;) {
			const char *end = strchr(line, '\n');
			size_t len = end ? (size_t)(end - line) : strlen(line);
			size_t kl = strlen(keys[k]);
			if (len > kl && !strncmp(line, keys[k], kl) && (line[kl] == ' ' || line[kl] == '\t' || line[kl] == ':')) {
				const char *colon = memchr(line, ':', len);
				if (colon) {
					char *v = cr_xstrndup(colon + 1, len - (size_t)(colon + 1 - line));
					snprintf(out, n, "%s", cr_trim(v));
					free(v);
					return;
				}
			}
			line = end ? end + 1 : NULL;
		}
	}
}

int cr_parse_port_range(const char *text, int *lo, int *hi)
{
	int a, b;
	if (sscanf(text, "%d %d", &a, &b) != 2 || a < 1 || b > 65535 || a > b)
		return -EINVAL;
	*lo = a;
	*hi = b;
	return 0;
}

int cr_parse_uptime(const char *text, double *seconds)
{
	double s;
	if (sscanf(text, "%lf", &s) != 1 || s < 0)
		return -EINVAL;
	*seconds = s;
	return 0;
}

void cr_parse_os_release(const char *text, char *out, size_t n)
{
	out[0] = '\0';
	const char *p = strstr(text, "PRETTY_NAME=");
	if (!p || (p != text && p[-1] != '\n'))
		return;
	p += strlen("PRETTY_NAME=");
	const char *end = strchr(p, '\n');
	size_t len = end ? (size_t)(end - p) : strlen(p);
	if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
		p++;
		len -= 2;
	}
	snprintf(out, n, "%.*s", (int)len, p);
}

static char *read_small(const char *root, const char *rel)
{
	char *path = cr_xasprintf("%s/%s", root, rel);
	char *text = NULL;
	if (cr_file_read(path, 1 << 20, &text, NULL, NULL) != 0)
		text = NULL;
	free(path);
	return text;
}

static void add_fs(json_t *sys, const char *key, const char *path)
{
	struct statvfs st;
	if (statvfs(path, &st) != 0)
		return;
	json_t *d = json_object();
	json_object_set_new(d, "path", json_string(path));
	json_object_set_new(d, "total", json_integer((json_int_t)((uint64_t)st.f_blocks * st.f_frsize)));
	json_object_set_new(d, "free", json_integer((json_int_t)((uint64_t)st.f_bavail * st.f_frsize)));
	json_object_set_new(sys, key, d);
}

static void detect_system(const struct cr_detect_opts *o, json_t *sys, json_t *notes)
{
	const char *proc = o->proc_root ? o->proc_root : "/proc";
	char model[256] = "";
	char *text = read_small(proc, "cpuinfo");
	if (text)
		cr_parse_cpu_model(text, model, sizeof(model));
	free(text);
	struct utsname u;
	uname(&u);
	json_t *cpu = json_object();
	json_object_set_new(cpu, "model", json_string(model));
	json_object_set_new(cpu, "cores", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
	json_object_set_new(cpu, "arch", json_string(u.machine));
	json_object_set_new(sys, "cpu", cpu);

	struct cr_meminfo mi;
	text = read_small(proc, "meminfo");
	if (text && cr_parse_meminfo(text, &mi) == 0) {
		json_t *mem = json_object();
		json_object_set_new(mem, "total", json_integer((json_int_t)mi.mem_total));
		json_object_set_new(mem, "available", json_integer((json_int_t)mi.mem_available));
		json_object_set_new(sys, "memory", mem);
		json_t *swap = json_object();
		json_object_set_new(swap, "total", json_integer((json_int_t)mi.swap_total));
		json_object_set_new(swap, "free", json_integer((json_int_t)mi.swap_free));
		json_object_set_new(sys, "swap", swap);
	} else {
		json_array_append_new(notes, json_sprintf("could not read memory from '%s/meminfo'", proc));
	}
	free(text);

	add_fs(sys, "disk", o->data_dir ? o->data_dir : ".");
	struct statvfs st;
	if (statvfs("/dev/shm", &st) == 0)
		json_object_set_new(sys, "shm_bytes", json_integer((json_int_t)((uint64_t)st.f_blocks * st.f_frsize)));
	else
		json_array_append_new(notes, json_string("/dev/shm is not mounted: NCCL and vLLM need it"));

	char pretty[256] = "";
	text = read_small("/etc", "os-release");
	if (text)
		cr_parse_os_release(text, pretty, sizeof(pretty));
	free(text);
	json_t *os = json_object();
	json_object_set_new(os, "name", json_string(pretty[0] ? pretty : u.sysname));
	json_object_set_new(os, "kernel", json_string(u.release));
	json_object_set_new(sys, "os", os);

	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	json_object_set_new(sys, "hostname", json_string(host));

	double up;
	text = read_small(proc, "uptime");
	if (text && cr_parse_uptime(text, &up) == 0)
		json_object_set_new(sys, "uptime_s", json_integer((json_int_t)up));
	free(text);

	int lo, hi;
	text = read_small(proc, "sys/net/ipv4/ip_local_port_range");
	if (text && cr_parse_port_range(text, &lo, &hi) == 0)
		json_object_set_new(sys, "ephemeral_ports", json_pack("[ii]", lo, hi));
	free(text);
}

json_t *cr_detect_node(const struct cr_detect_opts *o)
{
	json_t *report = json_object();
	json_t *sys = json_object();
	json_t *gpus = json_array();
	json_t *drivers = json_object();
	json_t *notes = json_array();
	json_object_set_new(report, "system", sys);
	json_object_set_new(report, "gpus", gpus);
	json_object_set_new(report, "drivers", drivers);
	json_object_set_new(report, "notes", notes);

	detect_system(o, sys, notes);
	const char *nvml = o->nvml_library ? o->nvml_library : getenv("CORRAL_NVML_LIBRARY");
	cr_detect_nvml(nvml ? nvml : "libnvidia-ml.so.1", gpus, drivers, notes);
	const char *sysfs = o->sysfs_root ? o->sysfs_root : getenv("CORRAL_SYSFS_ROOT");
	cr_detect_amd(sysfs ? sysfs : "/sys", gpus, notes);

	if (o->resources_file) {
		struct cr_err err = CR_ERR_INIT;
		if (cr_detect_apply_resources(o->resources_file, report, &err) != 0)
			json_array_append_new(notes, json_sprintf("%s; %s", err.message, err.fix));
	}
	return report;
}

void cr_detect_check_facts(json_t *report, int port_lo, int port_hi)
{
	json_object_set_new(report, "port_range", json_pack("[i,i]", port_lo, port_hi));
	char *text = NULL;
	size_t len;
	if (cr_file_read("/proc/sys/net/ipv4/ip_local_reserved_ports", 4096, &text, &len, NULL) == 0) {
		text[strcspn(text, "\n")] = 0;
		json_object_set_new(report, "reserved_ports", json_string(text));
	}
	free(text);
	bool nv = access("/dev/nvidia0", F_OK) == 0 || access("/proc/driver/nvidia/version", F_OK) == 0;
	json_object_set_new(report, "nvidia_device_files", json_boolean(nv));
}
