/* Compatibility checks (pure): functions over worker reports that say, with
 * the measured values, whether a node can run what it offers and whether a
 * group of nodes can run one model together, and what to do when not.
 *
 * A check is a JSON object {"id", "level": "pass"|"warn"|"fail", "message",
 * "fix"}; lists of them are JSON arrays. Node checks read one worker's report
 * (the object `corral doctor --json` prints, plus "port_range",
 * "reserved_ports", "clock_offset_ms", "nvidia_device_files" when known).
 * Group checks read the reports of the members of a candidate placement.
 * No I/O, no clock: the same reports give the same checks. */
#ifndef CR_CHECKS_CHECKS_H
#define CR_CHECKS_CHECKS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum cr_check_level { CR_CHECK_PASS = 0, CR_CHECK_WARN, CR_CHECK_FAIL };

/* "pass", "warn" or "fail". */
const char *cr_check_level_name(enum cr_check_level l);

/* Append a check to list (a JSON array). Returns level. */
enum cr_check_level cr_check_add(json_t *list, const char *id, enum cr_check_level level, const char *fix,
				 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The worst level in list, and how many warnings and failures it holds. */
enum cr_check_level cr_checks_worst(const json_t *list, int *warns, int *fails);

/* Every node check over report, appended to out (a JSON array):
 *   nvml               NVIDIA driver loaded and NVML usable, or why not
 *   cuda-driver        the CUDA driver against each installed engine's need
 *   compute-capability each GPU against each installed engine's minimum
 *   shm                /dev/shm against what vLLM/SGLang (NCCL) need
 *   port-range         engine ports against the ephemeral range and reserved ports
 *   disk               free disk in the model cache against the largest model assigned
 *   clock              offset from the server's clock
 *   engine:NAME        each engine found, with its version; missing ones from the notes
 * largest_model: bytes of the largest model assigned to the node (0: none). */
void cr_checks_node(const json_t *report, uint64_t largest_model, json_t *out);

/* The server's view of a worker's address: what it advertises against the
 * address its requests come from, and whether the server reaches it
 * (check id "address"). */
void cr_checks_address(const char *advertised, const char *seen, bool reachable, const char *probe_error,
		       json_t *out);

/* Limits for group checks. */
struct cr_group_limits {
	double rtt_tp_ms;   /* vLLM/SGLang across nodes (tensor/pipeline parallel): default 2 */
	double rtt_rpc_ms;  /* llama.cpp RPC: default 20 */
};
void cr_group_limits_defaults(struct cr_group_limits *l);

/* One member of a candidate group: its name, id, report and whether it
 * needs the model file (llama.cpp RPC followers get tensors over the wire). */
struct cr_group_member {
	const char *id, *name;
	const json_t *report;
	bool needs_file;
	int file_state;          /* 0 unknown, 1 present, 2 missing, 3 invalid (enum cr_sched_file) */
	int gpu_index;           /* the GPU chosen on this node (its "index"); -1: not known, the first one */
};

/* Group checks for members (members[0] is the leader) running engine
 * ("vllm", "sglang", "llama.cpp" or another name), appended to out:
 *   cpu-only         a node without GPUs asked to join a vLLM/SGLang group
 *   driver-mismatch  NVIDIA driver major (or ROCm) versions differ (vLLM/SGLang)
 *   gpu-mismatch     GPU models differ (vLLM/SGLang)
 *   engine-mismatch  engine versions differ (vLLM/SGLang, and llama.cpp RPC builds)
 *   ray-mismatch     Ray versions differ (vLLM/SGLang over Ray; with_ray)
 *   python-mismatch  Python versions differ, where reported (with_ray)
 *   reach            the leader reaches every follower and back (the workers'
 *                    own probes, report "peers": {id: {"rtt_ms", "error"}})
 *   rtt              round-trip time under the engine's limit
 *   shm              /dev/shm on every node (vLLM/SGLang)
 *   model-file       the model file present, or downloadable, where needed
 * Returns the worst level. */
enum cr_check_level cr_checks_group(const struct cr_group_member *members, int n, const char *engine, bool with_ray,
				    bool downloadable, const struct cr_group_limits *limits, json_t *out);

/* What must be equal across a vLLM/SGLang (or, for llama.cpp, RPC) group,
 * as one string: driver major or ROCm version, GPU or not, engine version,
 * and with_ray the Ray version. Workers with different keys fail the version
 * checks together (Python, not reported everywhere, is left to the checks). */
void cr_checks_group_key(const json_t *report, const char *engine, bool with_ray, char *out, size_t n);

/* One line for a failed or warned list: "id: message (fix: ...); ...". */
void cr_checks_summary(const json_t *list, enum cr_check_level min, char *out, size_t n);

#endif
