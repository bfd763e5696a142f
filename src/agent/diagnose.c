/* The table of known engine failures. Each row: substrings that must all
 * appear (case-sensitive, as engines print them), then the diagnosis. Order
 * matters: more specific rows first. */
#include "agent/diagnose.h"

#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct row {
	const char *needles[3];
	bool small_shm; /* only when /dev/shm is under 1 GiB */
	struct cr_diagnosis d;
} table[] = {
	{ { "CUDA out of memory", NULL }, false,
	  { "cuda_oom", "the GPU ran out of memory (CUDA out of memory)",
	    "lower --ctx or --parallel, use a smaller quantisation, or free the GPU; 'corral gpus' shows what uses it" } },
	{ { "cudaMalloc failed: out of memory", NULL }, false,
	  { "cuda_oom", "the GPU ran out of memory (cudaMalloc failed)",
	    "lower --ctx or --parallel, use a smaller quantisation, or free the GPU; 'corral gpus' shows what uses it" } },
	{ { "failed to allocate", "buffer of size", NULL }, false,
	  { "alloc_failed", "the engine could not allocate a device buffer",
	    "lower --ctx or --parallel, or place the model on a GPU with more free memory" } },
	{ { "NCCL", "unhandled system error", NULL }, true,
	  { "nccl_shm", "NCCL failed with 'unhandled system error' and /dev/shm is small",
	    "give the worker a larger /dev/shm (docker: --shm-size=16g or --ipc=host)" } },
	{ { "NCCL", "unhandled system error", NULL }, false,
	  { "nccl_system", "NCCL failed with 'unhandled system error'",
	    "check the network between the nodes (NCCL_SOCKET_IFNAME) and run with NCCL_DEBUG=INFO" } },
	{ { "Version mismatch", "Ray", NULL }, false,
	  { "ray_version", "the Ray versions on the nodes differ",
	    "install the same Ray (and Python) version on every worker of the group" } },
	{ { "version mismatch", "ray", NULL }, false,
	  { "ray_version", "the Ray versions on the nodes differ",
	    "install the same Ray (and Python) version on every worker of the group" } },
	{ { "Failed to connect to GCS", NULL }, false,
	  { "ray_gcs", "a Ray node could not reach the head's GCS",
	    "open the leader's Ray ports to the followers (see the worker's --port-range) and check --advertise-address" } },
	{ { "Remote RPC server crashed", NULL }, false,
	  { "rpc_peer_lost", "an RPC follower (rpc-server) of this instance went away",
	    "check the follower worker and its log; the group is restarted, followers first" } },
	{ { "failed to connect to", "RPC", NULL }, false,
	  { "rpc_unreachable", "llama-server could not connect to an RPC follower",
	    "check that the followers' ports are reachable from the leader" } },
	{ { "failed to open", "No such file or directory", NULL }, false,
	  { "model_missing", "the model file does not exist on this worker",
	    "copy the model to the same path on every worker, or deploy with --url" } },
	{ { "invalid magic characters", NULL }, false,
	  { "model_invalid", "the model file is not a valid GGUF file",
	    "re-download or re-convert the model; 'corral inspect FILE' says what is wrong" } },
	{ { "not within the file bounds", NULL }, false,
	  { "model_truncated", "the model file is truncated",
	    "re-download the model; 'corral inspect FILE' says where it ends" } },
	{ { "key not found in model", NULL }, false,
	  { "model_invalid", "the model file lacks metadata the engine needs",
	    "re-convert the model with a current llama.cpp; 'corral inspect FILE' shows its header" } },
	{ { "failed to load model", NULL }, false,
	  { "model_load", "the engine could not load the model",
	    "check the model file with 'corral inspect FILE' and the engine's log ('corral logs INSTANCE')" } },
	{ { "no kernel image is available for execution on the device", NULL }, false,
	  { "gpu_arch", "the engine was not built for this GPU's architecture",
	    "install an engine build for this GPU's compute capability, or exclude the worker with --selector" } },
	{ { "compute capability", "not supported", NULL }, false,
	  { "gpu_arch", "this GPU's compute capability is not supported by the engine",
	    "use a GPU the engine supports, or an engine built for it; exclude the worker with --selector" } },
	{ { "Address already in use", NULL }, false,
	  { "port_in_use", "the engine's port is already in use",
	    "free the port or change the worker's --port-range; Corral picks another port on restart" } },
	{ { "couldn't bind HTTP server socket", NULL }, false,
	  { "port_in_use", "the engine's port is already in use",
	    "free the port or change the worker's --port-range; Corral picks another port on restart" } },
};

static const struct cr_diagnosis sigill = {
	"sigill", "the engine uses CPU instructions this machine cannot run (killed by SIGILL)",
	"rebuild it for this CPU, or portably for all of them (GGML_NATIVE=OFF with an explicit baseline, "
	"docs/engines.md 'Building llama.cpp for your nodes')"
};

const struct cr_diagnosis *cr_diagnose(const char *log, const struct cr_diag_facts *facts)
{
	if (facts && facts->signal == SIGILL)
		return &sigill;
	if (!log)
		return NULL;
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		const struct row *r = &table[i];
		bool all = true;
		for (int k = 0; k < 3 && r->needles[k] && all; k++)
			all = strstr(log, r->needles[k]) != NULL;
		if (all && r->small_shm && !(facts && facts->shm_bytes && facts->shm_bytes < (1ull << 30)))
			all = false;
		if (all)
			return &r->d;
	}
	return NULL;
}

bool cr_diagnose_last_error(const char *log, char *out, size_t n)
{
	static const char *const words[] = { "error", "failed", "fatal", "invalid argument" };
	bool found = false;
	for (const char *line = log; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		for (size_t w = 0; w < sizeof(words) / sizeof(words[0]) && len; w++) {
			size_t wl = strlen(words[w]);
			bool hit = false;
			for (size_t k = 0; k + wl <= len && !hit; k++)
				hit = !strncasecmp(line + k, words[w], wl);
			if (!hit)
				continue;
			while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
				len--;
			while (len && (*line == ' ' || *line == '\t'))
				line++, len--;
			snprintf(out, n, "%.*s", (int)len, line);
			found = true;
			break;
		}
		line = end ? end + 1 : NULL;
	}
	return found;
}
