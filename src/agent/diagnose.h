/* Failure diagnosis: known patterns in an engine's last log lines, each with
 * the cause a user reads and the fix. One table (diagnose.c), one test each. */
#ifndef CR_AGENT_DIAGNOSE_H
#define CR_AGENT_DIAGNOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cr_diagnosis {
	const char *id;    /* "cuda_oom", "nccl_shm", ... */
	const char *cause;
	const char *fix;
};

/* Facts that refine a pattern (e.g. /dev/shm size for NCCL errors). */
struct cr_diag_facts {
	uint64_t shm_bytes;
	int signal; /* the signal that killed the engine, or 0 */
};

/* The first pattern that matches log (the engine's last lines), or NULL. A
 * SIGILL (an instruction the CPU lacks) is diagnosed whatever the log says. */
const struct cr_diagnosis *cr_diagnose(const char *log, const struct cr_diag_facts *facts);

/* The last line of log that reports an error ("error", "failed", "fatal",
 * any case), trimmed into out (at most n bytes); false when none does. */
bool cr_diagnose_last_error(const char *log, char *out, size_t n);

#endif
