/* Logging to stderr with a timestamp, a level and the process role. */
#ifndef CR_BASE_LOG_H
#define CR_BASE_LOG_H

#include <stddef.h>

enum cr_log_level { CR_LOG_DEBUG, CR_LOG_INFO, CR_LOG_WARN, CR_LOG_ERROR };

/* Set the role printed in every line ("server", "worker") and the minimum
 * level; CORRAL_LOG_LEVEL=debug|info|warn|error in the environment overrides. */
void cr_log_setup(const char *role, enum cr_log_level min);

void cr_log(enum cr_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Now as the logs write it: "2026-11-30T08:50:53.621Z" (n >= 32). */
void cr_log_time(char *out, size_t n);

#define cr_debug(...) cr_log(CR_LOG_DEBUG, __VA_ARGS__)
#define cr_info(...) cr_log(CR_LOG_INFO, __VA_ARGS__)
#define cr_warn(...) cr_log(CR_LOG_WARN, __VA_ARGS__)
#define cr_error(...) cr_log(CR_LOG_ERROR, __VA_ARGS__)

#endif
