/* Failure diagnosis: known patterns in an engine's last log lines, each with
 * the cause a user reads and the fix. One table (diagnose.c), one test each. */
#ifndef CR_AGENT_DIAGNOSE_H
#define CR_AGENT_DIAGNOSE_H

#include <stdbool.h>
#include <stdint.h>

struct cr_diagnosis {
	const char *id;    /* "cuda_oom", "nccl_shm", ... */
	const char *cause;
	const char *fix;
};

/* Facts that refine a pattern (e.g. /dev/shm size for NCCL errors). */
struct cr_diag_facts {
	uint64_t shm_bytes;
};

/* The first pattern that matches log (the engine's last lines), or NULL. */
const struct cr_diagnosis *cr_diagnose(const char *log, const struct cr_diag_facts *facts);

#endif
