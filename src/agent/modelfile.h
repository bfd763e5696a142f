/* Model files on a worker: what a path holds (a GGUF file or a safetensors
 * directory with config.json), its size and its parsed shape, for the server's
 * estimator. Reads only headers, a growing prefix at a time. */
#ifndef CR_AGENT_MODELFILE_H
#define CR_AGENT_MODELFILE_H

#include <jansson.h>

#include "base/err.h"
#include "sched/estimate.h"

/* Largest GGUF header read (tokenizer arrays make headers of tens of MiB). */
#define CR_MODELFILE_HEADER_MAX (256u * 1024u * 1024u)

/* Inspect path and fill shape (release with cr_shape_release). Returns 0;
 * -ENOENT when the path does not exist; CR_EINPUT with the parser's message
 * and a fix for anything unreadable or malformed. */
int cr_modelfile_inspect(const char *path, struct cr_model_shape *shape, struct cr_err *err);

/* The same as a JSON report: {"path","exists","size","format","shape"} or
 * {"path","exists","error":{"message","fix"}}. Never fails. */
json_t *cr_modelfile_report(const char *path);

#endif
