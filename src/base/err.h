/* Error codes and the optional error record passed as the last argument of
 * fallible functions: a message saying what went wrong and a fix saying what
 * the user should do about it. */
#ifndef CR_BASE_ERR_H
#define CR_BASE_ERR_H

#include <errno.h>

/* Project codes, below the negated errno range. */
enum {
	CR_EUNAUTH = -1001,   /* missing or wrong credentials (HTTP 401) */
	CR_EFORBID = -1002,   /* authenticated but not allowed (403) */
	CR_ECONFLICT = -1003, /* clashes with existing state (409) */
	CR_ETOOBIG = -1004,   /* input over a size limit (413) */
	CR_EINPUT = -1005,    /* malformed or invalid input (400) */
	CR_ENOTFOUND = -1006, /* no such object (404) */
	CR_EUPSTREAM = -1007, /* a peer answered badly or not at all (502) */
	CR_EUNAVAILABLE = -1008, /* nothing can serve it right now (503) */
	CR_ELIMIT = -1009,    /* over a rate limit (429) */
	CR_ENOTLEADER = -1010, /* a follower server: only the leader changes the cluster (503, "not_leader") */
};

#define CR_ERR_MSG_MAX 512

/* An error record owned by the caller, usually on its stack. Functions write
 * it only when they fail; an unset record has code 0 and empty strings. */
struct cr_err {
	int code;
	char message[CR_ERR_MSG_MAX];
	char fix[CR_ERR_MSG_MAX];
};

#define CR_ERR_INIT { 0, "", "" }

/* Record code, a fix (may be NULL) and a printf-style message in err (which
 * may be NULL). */
void cr_err_setf(struct cr_err *err, int code, const char *fix, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* cr_err_setf that evaluates to code (taken once, before the message is
 * formatted), so callers can `return cr_err_set(...)`. A macro so that
 * code's value is visible where it is returned: the static analyser then
 * knows that a failure path returns non-zero. */
#define cr_err_set(err, code, ...)                           \
	({                                                   \
		int cr_err_code_ = (code);                   \
		cr_err_setf((err), cr_err_code_, __VA_ARGS__); \
		cr_err_code_;                                \
	})

/* A short name for a code, e.g. "invalid_input", used in JSON errors. */
const char *cr_err_name(int code);

#endif
