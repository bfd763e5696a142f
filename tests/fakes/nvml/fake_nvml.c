/* Fake libnvidia-ml.so.1 for machines without NVIDIA GPUs. It exports NVML's
 * real function names and signatures and describes the devices listed in the
 * JSON file named by $FAKE_NVML_CONFIG:
 *   {"driver_version": "550.54.15", "cuda_driver_version": 12040,
 *    "init_error": 0,            (an NVML error code nvmlInit_v2 returns)
 *    "devices": [{"name", "uuid", "memory_total", "memory_used", "utilization",
 *                 "temperature", "power_mw", "power_limit_mw", "cc": [9, 0],
 *                 "pci_bus_id", "processes": [{"pid", "memory"}]}]}
 * Built a second time with -DFAKE_NVML_OMIT_UUID to lack nvmlDeviceGetUUID,
 * as an old or broken driver would. Like the real library, every call but
 * nvmlInit_v2 and nvmlErrorString fails with NVML_ERROR_UNINITIALIZED
 * before a successful init. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../../../src/agent/nvml_abi.h"

#define EXPORT __attribute__((visibility("default")))

/* Prototypes of the exported functions, from the shared ABI description. */
#define PROTO(name, ret, args) EXPORT ret name args;
CR_NVML_REQUIRED(PROTO)
CR_NVML_OPTIONAL(PROTO)
#undef PROTO

static json_t *config;
static json_t *retired; /* earlier configurations: handles into them stay valid */
static struct timespec loaded_at;
static int inits;

/* Free the configuration when the library is unloaded (dlclose). */
__attribute__((destructor)) static void unload(void)
{
	json_decref(config);
	json_decref(retired);
	config = retired = NULL;
}

static json_t *device(nvmlDevice_t d)
{
	return (json_t *)d;
}

static long long num(json_t *o, const char *k, long long def)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) ? json_integer_value(v) : def;
}

static nvmlReturn_t copy_str(const char *s, char *out, unsigned int n)
{
	if (!out)
		return NVML_ERROR_INVALID_ARGUMENT;
	if (strlen(s) + 1 > n)
		return NVML_ERROR_INSUFFICIENT_SIZE;
	memcpy(out, s, strlen(s) + 1);
	return NVML_SUCCESS;
}

#define NEED_INIT()                                 \
	do {                                        \
		if (!inits)                         \
			return NVML_ERROR_UNINITIALIZED; \
	} while (0)

EXPORT nvmlReturn_t nvmlInit_v2(void)
{
	/* read again when the file changes, as a real driver's answers change
	 * (a test starts a process on the GPU by rewriting it) */
	const char *path = getenv("FAKE_NVML_CONFIG");
	struct stat st;
	if (!config || (path && stat(path, &st) == 0 && (st.st_mtim.tv_sec != loaded_at.tv_sec ||
							   st.st_mtim.tv_nsec != loaded_at.tv_nsec))) {
		if (!path)
			return NVML_ERROR_DRIVER_NOT_LOADED;
		json_t *fresh = json_load_file(path, 0, NULL);
		if (!fresh)
			return config ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
		if (stat(path, &st) == 0)
			loaded_at = st.st_mtim;
		if (config) {
			if (!retired)
				retired = json_array();
			json_array_append_new(retired, config);
		}
		config = fresh;
	}
	long long e = num(config, "init_error", 0);
	if (e)
		return (nvmlReturn_t)e;
	inits++;
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlShutdown(void)
{
	NEED_INIT();
	inits--;
	return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t r)
{
	switch (r) {
	case NVML_SUCCESS: return "Success";
	case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
	case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
	case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
	case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
	case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
	case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
	case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
	case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
	default: return "Unknown Error";
	}
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int n)
{
	NEED_INIT();
	json_t *v = json_object_get(config, "driver_version");
	return copy_str(json_is_string(v) ? json_string_value(v) : "550.54.15", version, n);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v)
{
	NEED_INIT();
	*v = (int)num(config, "cuda_driver_version", 12040);
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
	NEED_INIT();
	*count = (unsigned int)json_array_size(json_object_get(config, "devices"));
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d)
{
	NEED_INIT();
	json_t *dev = json_array_get(json_object_get(config, "devices"), i);
	if (!dev)
		return NVML_ERROR_INVALID_ARGUMENT;
	*d = (nvmlDevice_t)dev;
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int n)
{
	NEED_INIT();
	json_t *v = json_object_get(device(d), "name");
	return copy_str(json_is_string(v) ? json_string_value(v) : "NVIDIA Fake GPU", name, n);
}

#ifndef FAKE_NVML_OMIT_UUID
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int n)
{
	NEED_INIT();
	json_t *v = json_object_get(device(d), "uuid");
	return copy_str(json_is_string(v) ? json_string_value(v) : "GPU-00000000-0000-0000-0000-000000000000", uuid, n);
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m)
{
	NEED_INIT();
	m->total = (unsigned long long)num(device(d), "memory_total", 0);
	m->used = (unsigned long long)num(device(d), "memory_used", 0);
	m->free = m->total - m->used;
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u)
{
	NEED_INIT();
	u->gpu = (unsigned int)num(device(d), "utilization", 0);
	u->memory = 0;
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t)
{
	NEED_INIT();
	if (sensor != NVML_TEMPERATURE_GPU)
		return NVML_ERROR_NOT_SUPPORTED;
	*t = (unsigned int)num(device(d), "temperature", 40);
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw)
{
	NEED_INIT();
	*mw = (unsigned int)num(device(d), "power_mw", 70000);
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *mw)
{
	NEED_INIT();
	*mw = (unsigned int)num(device(d), "power_limit_mw", 350000);
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor)
{
	NEED_INIT();
	json_t *cc = json_object_get(device(d), "cc");
	*major = (int)json_integer_value(json_array_get(cc, 0));
	*minor = (int)json_integer_value(json_array_get(cc, 1));
	return cc ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci)
{
	NEED_INIT();
	memset(pci, 0, sizeof(*pci));
	json_t *v = json_object_get(device(d), "pci_bus_id");
	snprintf(pci->busId, sizeof(pci->busId), "%s", json_is_string(v) ? json_string_value(v) : "00000000:00:00.0");
	snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%.15s", pci->busId + 4);
	return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
							     nvmlProcessInfo_t *infos)
{
	NEED_INIT();
	json_t *procs = json_object_get(device(d), "processes");
	unsigned int n = (unsigned int)json_array_size(procs);
	if (*count < n || (n && !infos)) {
		*count = n;
		return NVML_ERROR_INSUFFICIENT_SIZE;
	}
	for (unsigned int i = 0; i < n; i++) {
		json_t *p = json_array_get(procs, i);
		infos[i].pid = (unsigned int)num(p, "pid", 0);
		infos[i].usedGpuMemory = (unsigned long long)num(p, "memory", 0);
		infos[i].gpuInstanceId = infos[i].computeInstanceId = 0xFFFFFFFFu;
	}
	*count = n;
	return NVML_SUCCESS;
}
