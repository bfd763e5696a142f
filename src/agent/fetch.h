/* Model downloads on workers (libcurl): the GGUF header of a URL through
 * range requests, for estimates without downloading the model; and whole
 * files into the model cache, resumed from a partial file, checked against
 * a SHA-256 when one is given, with progress callbacks. */
#ifndef CR_AGENT_FETCH_H
#define CR_AGENT_FETCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "sched/estimate.h"

/* The shape of the GGUF model at url and its size, reading only a growing
 * prefix. CR_EUPSTREAM for HTTP failures (status named), CR_EINPUT for a
 * malformed file. */
int cr_fetch_header(const char *url, struct cr_model_shape *shape, uint64_t *size, struct cr_err *err);

/* The shape of the model at url: a GGUF file (the first part of a split
 * one, whose other parts are read too), or a safetensors model's config.json
 * (see cr_fetch_is_config_url), reading headers only. */
int cr_fetch_inspect(const char *url, struct cr_model_shape *shape, struct cr_err *err);

/* {"source","exists","size","format","shape"} or with "error", like
 * cr_modelfile_report, for a URL: a GGUF file (the first part of a split
 * one), or the config.json of a safetensors model (see
 * cr_fetch_is_config_url). Never fails. */
json_t *cr_fetch_report(const char *url);

/* Called with the bytes present and the total (0 when unknown); return
 * nonzero to stop the download (it can be resumed later). */
typedef int (*cr_fetch_progress_cb)(uint64_t have, uint64_t total, void *arg);

/* Download url to dest; bearer (NULL for none) is sent as the
 * Authorization of a peer worker's cache, which is never left by a redirect. Bytes go to dest + ".part" first; an existing part
 * is resumed with a range request. With sha256 (64 hex digits) the whole file
 * is hashed and a mismatch removes the part and fails with CR_EINPUT. On
 * success the part is renamed to dest. progress may be NULL. */
int cr_fetch_download(const char *url, const char *bearer, const char *dest, const char *sha256,
		      cr_fetch_progress_cb progress, void *arg, struct cr_err *err);

/* The URL of the file name beside url's (its last path component, or the
 * value of its last query parameter as ModelScope's file URLs end); caller
 * frees; NULL when url has neither. */
char *cr_fetch_sibling_url(const char *url, const char *name);

/* Whether url names a config.json: the source of a safetensors model whose
 * other files are beside it. */
bool cr_fetch_is_config_url(const char *url);

/* The cache path for url under dir: dir/<first 16 hex of BLAKE2b(url)>-<base
 * name> (the last path component, or the value of the last query parameter). */
char *cr_fetch_cache_path(const char *dir, const char *url);

#endif
