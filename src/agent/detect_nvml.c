/* NVIDIA detection through NVML opened with dlopen. A missing library, a
 * missing required symbol or an nvmlInit failure means zero NVIDIA GPUs and a
 * note that names the cause; a missing optional symbol drops that field. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "agent/detect.h"
#include "agent/nvml_abi.h"

struct nvml {
#define FIELD(name, ret, args) ret(*name) args;
	CR_NVML_REQUIRED(FIELD)
	CR_NVML_OPTIONAL(FIELD)
#undef FIELD
};

/* Resolve every symbol; returns the first missing required name or NULL. */
static const char *resolve(void *lib, struct nvml *f, json_t *notes)
{
#define REQ(name, ret, args)                                  \
	*(void **)&f->name = dlsym(lib, #name);               \
	if (!f->name)                                         \
		return #name;
	CR_NVML_REQUIRED(REQ)
#undef REQ
#define OPT(name, ret, args)                                                                      \
	*(void **)&f->name = dlsym(lib, #name);                                                   \
	if (!f->name)                                                                             \
		json_array_append_new(notes, json_sprintf("NVML has no '%s': the fields it provides " \
							  "are not reported",                       \
							  #name));
	CR_NVML_OPTIONAL(OPT)
#undef OPT
	return NULL;
}

static void add_processes(const struct nvml *f, nvmlDevice_t dev, json_t *gpu)
{
	if (!f->nvmlDeviceGetComputeRunningProcesses_v3)
		return;
	nvmlProcessInfo_t infos[64];
	unsigned int count = 64;
	json_t *procs = json_array();
	if (f->nvmlDeviceGetComputeRunningProcesses_v3(dev, &count, infos) == NVML_SUCCESS) {
		for (unsigned int i = 0; i < count && i < 64; i++)
			json_array_append_new(procs, json_pack("{s:i,s:I}", "pid", (int)infos[i].pid, "memory",
							       (json_int_t)infos[i].usedGpuMemory));
	}
	json_object_set_new(gpu, "processes", procs);
}

static json_t *describe(const struct nvml *f, nvmlDevice_t dev, unsigned int i, int index)
{
	char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE] = "";
	char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = "";
	nvmlMemory_t mem = { 0, 0, 0 };
	f->nvmlDeviceGetName(dev, name, sizeof(name));
	f->nvmlDeviceGetUUID(dev, uuid, sizeof(uuid));
	f->nvmlDeviceGetMemoryInfo(dev, &mem);
	name[sizeof(name) - 1] = uuid[sizeof(uuid) - 1] = '\0';
	json_t *g = json_pack("{s:i,s:s,s:i,s:s,s:s,s:I,s:I,s:I,s:s}", "index", index, "vendor", "nvidia",
			      "vendor_index", (int)i, "name", name, "uuid", uuid, "memory_total",
			      (json_int_t)mem.total, "memory_used", (json_int_t)mem.used, "memory_free",
			      (json_int_t)mem.free, "source", "nvml");
	nvmlUtilization_t util;
	if (f->nvmlDeviceGetUtilizationRates && f->nvmlDeviceGetUtilizationRates(dev, &util) == NVML_SUCCESS)
		json_object_set_new(g, "utilization", json_integer(util.gpu));
	unsigned int v;
	if (f->nvmlDeviceGetTemperature && f->nvmlDeviceGetTemperature(dev, NVML_TEMPERATURE_GPU, &v) == NVML_SUCCESS)
		json_object_set_new(g, "temperature", json_integer(v));
	if (f->nvmlDeviceGetPowerUsage && f->nvmlDeviceGetPowerUsage(dev, &v) == NVML_SUCCESS)
		json_object_set_new(g, "power_draw_w", json_real(v / 1000.0));
	if (f->nvmlDeviceGetEnforcedPowerLimit && f->nvmlDeviceGetEnforcedPowerLimit(dev, &v) == NVML_SUCCESS)
		json_object_set_new(g, "power_limit_w", json_real(v / 1000.0));
	int major, minor;
	if (f->nvmlDeviceGetCudaComputeCapability &&
	    f->nvmlDeviceGetCudaComputeCapability(dev, &major, &minor) == NVML_SUCCESS)
		json_object_set_new(g, "compute_capability", json_sprintf("%d.%d", major, minor));
	nvmlPciInfo_t pci;
	if (f->nvmlDeviceGetPciInfo_v3 && f->nvmlDeviceGetPciInfo_v3(dev, &pci) == NVML_SUCCESS) {
		pci.busId[sizeof(pci.busId) - 1] = '\0';
		json_object_set_new(g, "pci_bus_id", json_string(pci.busId));
	}
	add_processes(f, dev, g);
	return g;
}

static void query(const struct nvml *f, json_t *gpus, json_t *drivers, json_t *notes)
{
	json_t *nv = json_object();
	char ver[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE] = "";
	if (f->nvmlSystemGetDriverVersion(ver, sizeof(ver)) == NVML_SUCCESS)
		json_object_set_new(nv, "driver_version", json_string(ver));
	int cuda;
	if (f->nvmlSystemGetCudaDriverVersion && f->nvmlSystemGetCudaDriverVersion(&cuda) == NVML_SUCCESS)
		json_object_set_new(nv, "cuda_driver_version", json_sprintf("%d.%d", cuda / 1000, (cuda % 1000) / 10));
	json_object_set_new(drivers, "nvidia", nv);

	unsigned int count = 0;
	nvmlReturn_t r = f->nvmlDeviceGetCount_v2(&count);
	if (r != NVML_SUCCESS) {
		json_array_append_new(notes, json_sprintf("nvmlDeviceGetCount_v2 failed: %s", f->nvmlErrorString(r)));
		return;
	}
	for (unsigned int i = 0; i < count; i++) {
		nvmlDevice_t dev;
		r = f->nvmlDeviceGetHandleByIndex_v2(i, &dev);
		if (r != NVML_SUCCESS) {
			json_array_append_new(notes, json_sprintf("NVIDIA GPU %u skipped: nvmlDeviceGetHandleByIndex_v2 "
								  "failed: %s",
								  i, f->nvmlErrorString(r)));
			continue;
		}
		json_array_append_new(gpus, describe(f, dev, i, (int)json_array_size(gpus)));
	}
	json_object_set_new(nv, "gpu_count", json_integer(count));
}

void cr_detect_nvml(const char *library, json_t *gpus, json_t *drivers, json_t *notes)
{
	void *lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *why = dlerror();
		json_array_append_new(notes, json_sprintf("no NVIDIA GPUs: dlopen('%s') failed: %s", library,
							  why ? why : "unknown error"));
		return;
	}
	struct nvml f;
	memset(&f, 0, sizeof(f));
	const char *missing = resolve(lib, &f, notes);
	if (missing) {
		json_array_append_new(notes, json_sprintf("no NVIDIA GPUs: '%s' has no symbol '%s'; install an NVIDIA "
							  "driver whose NVML provides it",
							  library, missing));
		goto out_close;
	}
	nvmlReturn_t r = f.nvmlInit_v2();
	if (r != NVML_SUCCESS) {
		json_array_append_new(notes, json_sprintf("no NVIDIA GPUs: nvmlInit_v2 failed: %s (NVML error %d); "
							  "check that the NVIDIA kernel driver is loaded (nvidia-smi)",
							  f.nvmlErrorString(r), r));
		goto out_close;
	}
	query(&f, gpus, drivers, notes);
	f.nvmlShutdown();
out_close:
	dlclose(lib);
}
