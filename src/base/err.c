/* Error records: message + fix, see err.h. */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>

void cr_err_setf(struct cr_err *err, int code, const char *fix, const char *fmt, ...)
{
	if (!err)
		return;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	snprintf(err->fix, sizeof(err->fix), "%s", fix ? fix : "");
}

const char *cr_err_name(int code)
{
	switch (code) {
	case CR_EUNAUTH: return "unauthorized";
	case CR_EFORBID: return "forbidden";
	case CR_ECONFLICT: return "conflict";
	case CR_ETOOBIG: return "too_large";
	case CR_EINPUT: return "invalid_input";
	case CR_ENOTFOUND: return "not_found";
	case CR_EUPSTREAM: return "upstream_error";
	case CR_EUNAVAILABLE: return "unavailable";
	case CR_ELIMIT: return "rate_limited";
	case CR_ENOTLEADER: return "not_leader";
	case -ENOENT: return "not_found";
	case -EINVAL: return "invalid_input";
	case -EEXIST: return "conflict";
	case -EACCES: return "forbidden";
	case -ENOSPC: return "insufficient_storage";
	default: return "internal_error";
	}
}
