/* stderr logging, see log.h. Lines are written with one fprintf so that
 * threads do not interleave within a line. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *log_role = "corral";
static enum cr_log_level log_min = CR_LOG_INFO;

void cr_log_setup(const char *role, enum cr_log_level min)
{
	log_role = role;
	log_min = min;
	const char *env = getenv("CORRAL_LOG_LEVEL");
	if (!env)
		return;
	if (!strcmp(env, "debug"))
		log_min = CR_LOG_DEBUG;
	else if (!strcmp(env, "info"))
		log_min = CR_LOG_INFO;
	else if (!strcmp(env, "warn"))
		log_min = CR_LOG_WARN;
	else if (!strcmp(env, "error"))
		log_min = CR_LOG_ERROR;
}

void cr_log(enum cr_log_level level, const char *fmt, ...)
{
	static const char *names[] = { "debug", "info", "warn", "error" };
	if (level < log_min)
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	char when[40];
	cr_log_time(when, sizeof(when));
	fprintf(stderr, "%s %s %s: %s\n", when, log_role, names[level], msg);
}

void cr_log_time(char *out, size_t n)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[32];
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03ldZ", when, ts.tv_nsec / 1000000);
}
