/* The scheduler (pure): a snapshot of the cluster and a model in, a placement
 * or a refusal with every worker's reason out. No I/O, no clock, no
 * randomness: the same snapshot always gives the same answer, so a dry run
 * shows exactly what a deploy will do.
 *
 * Order of fits: one GPU; several GPUs of one worker; several workers (only
 * with allow_distributed and an engine that can); CPU or partial offload
 * (llama.cpp, only with allow_cpu_offload). Every multi-worker candidate
 * passes the group checks (checks.h) or is skipped with its failures. Multi-GPU splits are greedy over
 * GPUs sorted by free memory, so placement is polynomial in the cluster size. */
#ifndef CR_SCHED_PLACE_H
#define CR_SCHED_PLACE_H

#include <stdbool.h>
#include <stdint.h>

#include "checks/checks.h"
#include "sched/estimate.h"

#define CR_SCHED_MAX_GPUS 16      /* per worker */
#define CR_SCHED_MAX_MEMBERS 64   /* GPUs in one placement */

struct cr_sched_gpu {
	int index;
	char vendor[16];   /* "nvidia", "amd" */
	char name[64];     /* product name: vLLM groups need one model */
	uint64_t total;
	uint64_t free;     /* measured */
	uint64_t claimed;  /* sum of our instances' claims on it */
	uint64_t ours_used; /* measured use of our instances' processes */
	int instances;     /* our instances on it (binpack/spread tie-breaks) */
};

enum cr_sched_file {
	CR_FILE_UNKNOWN = 0, /* not reported yet: treated as present for url sources only */
	CR_FILE_PRESENT,
	CR_FILE_MISSING,
	CR_FILE_INVALID,
};

struct cr_sched_worker {
	const char *id;
	const char *name;
	const char *state;      /* "ready" to be eligible */
	bool cordoned;          /* takes no new placements ('corral workers cordon') */
	const char *const *labels; /* "k=v" strings */
	int n_labels;
	const char *const *engines; /* installed engine names: "llama.cpp", "vllm", "sglang", custom */
	int n_engines;
	int n_gpus;
	struct cr_sched_gpu gpus[CR_SCHED_MAX_GPUS];
	uint64_t ram_total, ram_available, ram_claimed;
	enum cr_sched_file file;  /* the model's file on this worker */
	const char *file_error;   /* why the file is invalid, when it is */
	int replicas;             /* instances of this model already here */
	const json_t *report;     /* the worker's merged report, for group checks (NULL: none) */
};

struct cr_sched_snapshot {
	struct cr_sched_worker *workers;
	int n_workers;
	uint64_t gpu_reserve;     /* kept free on every GPU */
	uint64_t ram_reserve;     /* kept free on every worker */
};

enum cr_sched_policy { CR_SCHED_SPREAD = 0, CR_SCHED_BINPACK };

struct cr_sched_manual {
	const char *worker; /* name or id */
	int index;          /* GPU index; -1 = the worker's CPU */
};

/* What engines of this model really held beyond the estimate on one GPU
 * model (its product name), learned from earlier instances. */
struct cr_sched_learned {
	const char *device;
	int64_t delta;
};

struct cr_sched_request {
	const char *model;   /* name, for messages */
	const char *engine;  /* resolved: "llama.cpp", "vllm", "sglang" or a custom name */
	const struct cr_model_shape *shape;
	struct cr_est_params params;
	enum cr_sched_policy policy;
	const char *const *selector; /* "k=v", all must match */
	int n_selector;
	const struct cr_sched_manual *manual;
	int n_manual;
	bool allow_cpu_offload;
	bool allow_distributed;
	bool downloadable;   /* url source: workers without the file can fetch it */
	bool no_ray;         /* vLLM/SGLang across workers without Ray (--nnodes launcher) */
	const struct cr_group_limits *limits; /* round-trip limits; NULL: defaults */
	/* learned: what engines of this model really held beyond the estimate,
	 * per GPU and in RAM (bytes; 0: nothing learned); per GPU model in
	 * learned (its own correction where one was learned on that model,
	 * vram_delta on the others) */
	int64_t vram_delta, ram_delta;
	const struct cr_sched_learned *learned;
	int n_learned;
};

struct cr_sched_member {
	int worker;          /* index into the snapshot */
	int gpu;             /* GPU index on that worker; -1 = CPU */
	uint64_t claim;      /* bytes claimed on that GPU (or RAM for -1) */
	double split;        /* share of the layers (llama.cpp tensor split) */
	uint32_t layers;
};

enum cr_sched_kind {
	CR_PLACE_SINGLE_GPU,
	CR_PLACE_MULTI_GPU,
	CR_PLACE_DISTRIBUTED,
	CR_PLACE_PARTIAL_OFFLOAD,
	CR_PLACE_CPU,
	CR_PLACE_MANUAL,
};

struct cr_sched_reason {
	int worker;          /* index into the snapshot */
	const char *code;    /* static: "not_ready", "selector", "no_engine", "engine_devices",
				"file_missing", "file_invalid", "insufficient_vram", "insufficient_ram" */
	char message[256];
};

struct cr_sched_result {
	bool placed;
	enum cr_sched_kind kind;
	int n_members;
	struct cr_sched_member members[CR_SCHED_MAX_MEMBERS]; /* members[0] is on the leader */
	int leader;          /* worker index of the leader */
	int n_workers_used;
	uint32_t ngl;        /* llama.cpp -ngl */
	int tp, pp;          /* vLLM/SGLang tensor and pipeline parallel sizes */
	double gpu_util;     /* vLLM --gpu-memory-utilization */
	uint64_t ram_claim;  /* host memory on the leader */
	uint64_t need_vram;  /* what one GPU would need for the whole model */
	char warning[256];   /* manual overcommit */
	char summary[512];   /* one line: what was placed, or why nothing fits */
	int n_reasons;
	struct cr_sched_reason *reasons; /* one per worker that was ruled out, owned */
	json_t *checks;      /* group checks of a multi-worker placement, or NULL; owned */
	json_t *groups;      /* multi-worker groups refused by their checks: [{"workers": [names],
				"checks": [failed]}], or NULL; owned */
};

/* Place one instance of req on snap. Fills out (release with
 * cr_sched_result_release) and returns 0 when placed; CR_ENOTFOUND when no
 * placement exists, with out->summary and out->reasons explaining it;
 * CR_EINPUT for a bad request (unknown worker in a manual choice, an
 * estimate that cannot be made), with err set. */
int cr_sched_place(const struct cr_sched_snapshot *snap, const struct cr_sched_request *req,
		   struct cr_sched_result *out, struct cr_err *err);

/* Record a placement's claims in the snapshot, so the next replica of a
 * batch is placed as if this one were running. */
void cr_sched_apply(struct cr_sched_snapshot *snap, const struct cr_sched_result *res);

/* Free memory of a GPU as the scheduler sees it:
 * min(total - claimed - reserve, free + ours_used), never negative. */
uint64_t cr_sched_gpu_free(const struct cr_sched_gpu *g, uint64_t reserve);

/* Whether an engine can span workers (llama.cpp RPC, vLLM/SGLang). */
bool cr_sched_engine_distributes(const char *engine);

/* Whether an engine can use a device kind: "cpu", "nvidia" or "amd". */
bool cr_sched_engine_uses(const char *engine, const char *device);

void cr_sched_result_release(struct cr_sched_result *res);

#endif
