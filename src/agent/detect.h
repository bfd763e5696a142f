/* Node detection: what this machine has (CPU, memory, disk, OS, /dev/shm,
 * ports) and which GPUs it carries, as a JSON report. Vendor libraries are
 * opened at run time; anything missing becomes a note, never a crash.
 *
 * Report shape (docs/api.md, "worker report"):
 *   {"system": {...}, "gpus": [{index, vendor, vendor_index, name, uuid, ...}],
 *    "drivers": {"nvidia": {...}}, "notes": ["..."]}
 */
#ifndef CR_AGENT_DETECT_H
#define CR_AGENT_DETECT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct cr_err;

struct cr_detect_opts {
	const char *data_dir;       /* filesystem reported as "disk" */
	const char *resources_file; /* --resources FILE, or NULL */
	const char *nvml_library;   /* NULL: $CORRAL_NVML_LIBRARY or "libnvidia-ml.so.1" */
	const char *sysfs_root;     /* NULL: $CORRAL_SYSFS_ROOT or "/sys" */
	const char *proc_root;      /* NULL: "/proc" */
};

/* Detect the node. Always returns a new report owned by the caller; problems
 * (missing libraries, unreadable files, a bad resources file) are notes. */
json_t *cr_detect_node(const struct cr_detect_opts *o);

/* Add what the node checks read beyond detection to report: "port_range"
 * [lo, hi] (the engine ports), "reserved_ports" (the kernel's
 * ip_local_reserved_ports) and "nvidia_device_files" (/dev/nvidia0 or the
 * kernel module's /proc/driver/nvidia/version exist). */
void cr_detect_check_facts(json_t *report, int port_lo, int port_hi);

/* NVIDIA GPUs through NVML. Appends GPUs to gpus (index = position in gpus),
 * driver facts to drivers["nvidia"], and notes. Thread-compatible: call from
 * one thread at a time. */
void cr_detect_nvml(const char *library, json_t *gpus, json_t *drivers, json_t *notes);

/* AMD GPUs from sysfs under root (root/class/drm/card*). */
void cr_detect_amd(const char *root, json_t *gpus, json_t *notes);

/* Merge a --resources file into report: its "gpus" replace detected GPUs with
 * the same vendor and vendor_index or are added ("source": "declared"); its
 * "system" keys override detected ones. Errors: CR_EINPUT/-errno with the fix. */
int cr_detect_apply_resources(const char *path, json_t *report, struct cr_err *err);

/* Pure parsers of /proc text, exposed for tests. Each returns 0 or -EINVAL. */
struct cr_meminfo {
	uint64_t mem_total, mem_available, swap_total, swap_free;
};
int cr_parse_meminfo(const char *text, struct cr_meminfo *out);
/* "model name" (x86) or "Model"/"Hardware" (arm) into out; "" when absent. */
void cr_parse_cpu_model(const char *text, char *out, size_t n);
int cr_parse_port_range(const char *text, int *lo, int *hi);
int cr_parse_uptime(const char *text, double *seconds);
/* PRETTY_NAME from os-release text into out; "" when absent. */
void cr_parse_os_release(const char *text, char *out, size_t n);

#endif
