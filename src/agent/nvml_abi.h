/* The subset of NVIDIA's NVML C ABI that Corral uses: types, constants and
 * function signatures as in nvml.h, declared here because the header is not
 * installed on machines without the CUDA toolkit. Shared by the detector
 * (which dlopens the real library) and the fake library under tests/fakes. */
#ifndef CR_AGENT_NVML_ABI_H
#define CR_AGENT_NVML_ABI_H

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NO_PERMISSION 4
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_LIBRARY_NOT_FOUND 12
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_UNKNOWN 999

#define NVML_TEMPERATURE_GPU 0
#define NVML_DEVICE_NAME_V2_BUFFER_SIZE 96
#define NVML_DEVICE_UUID_V2_BUFFER_SIZE 96
#define NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE 80

typedef struct nvmlMemory_st {
	unsigned long long total;
	unsigned long long free;
	unsigned long long used;
} nvmlMemory_t;

typedef struct nvmlUtilization_st {
	unsigned int gpu;
	unsigned int memory;
} nvmlUtilization_t;

typedef struct nvmlPciInfo_st {
	char busIdLegacy[16];
	unsigned int domain;
	unsigned int bus;
	unsigned int device;
	unsigned int pciDeviceId;
	unsigned int pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;

typedef struct nvmlProcessInfo_st {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId;
	unsigned int computeInstanceId;
} nvmlProcessInfo_t;

/* X(name, return, arguments): required symbols first, then optional ones. */
#define CR_NVML_REQUIRED(X)                                                                  \
	X(nvmlInit_v2, nvmlReturn_t, (void))                                                 \
	X(nvmlShutdown, nvmlReturn_t, (void))                                                \
	X(nvmlErrorString, const char *, (nvmlReturn_t))                                     \
	X(nvmlSystemGetDriverVersion, nvmlReturn_t, (char *, unsigned int))                  \
	X(nvmlDeviceGetCount_v2, nvmlReturn_t, (unsigned int *))                             \
	X(nvmlDeviceGetHandleByIndex_v2, nvmlReturn_t, (unsigned int, nvmlDevice_t *))       \
	X(nvmlDeviceGetName, nvmlReturn_t, (nvmlDevice_t, char *, unsigned int))             \
	X(nvmlDeviceGetUUID, nvmlReturn_t, (nvmlDevice_t, char *, unsigned int))             \
	X(nvmlDeviceGetMemoryInfo, nvmlReturn_t, (nvmlDevice_t, nvmlMemory_t *))

#define CR_NVML_OPTIONAL(X)                                                                  \
	X(nvmlSystemGetCudaDriverVersion, nvmlReturn_t, (int *))                             \
	X(nvmlDeviceGetUtilizationRates, nvmlReturn_t, (nvmlDevice_t, nvmlUtilization_t *))  \
	X(nvmlDeviceGetTemperature, nvmlReturn_t, (nvmlDevice_t, int, unsigned int *))       \
	X(nvmlDeviceGetPowerUsage, nvmlReturn_t, (nvmlDevice_t, unsigned int *))             \
	X(nvmlDeviceGetEnforcedPowerLimit, nvmlReturn_t, (nvmlDevice_t, unsigned int *))     \
	X(nvmlDeviceGetCudaComputeCapability, nvmlReturn_t, (nvmlDevice_t, int *, int *))    \
	X(nvmlDeviceGetPciInfo_v3, nvmlReturn_t, (nvmlDevice_t, nvmlPciInfo_t *))            \
	X(nvmlDeviceGetComputeRunningProcesses_v3, nvmlReturn_t,                             \
	  (nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *))

#endif
