/* Model specs (the body of POST/PATCH /api/models): validation into one
 * canonical object, and what the scheduler reads from it. */
#ifndef CR_API_MODEL_SPEC_H
#define CR_API_MODEL_SPEC_H

#include <jansson.h>
#include <stdbool.h>

#include "base/err.h"
#include "base/util.h"
#include "sched/estimate.h"

/* Validate body (merged over base for PATCH, base NULL for create) into a new
 * canonical spec in *out with defaults filled. CR_EINPUT names the field and
 * the fix: unknown fields, a missing or double source, bad names, numbers out
 * of range, malformed gpus or selector, unknown cache types. */
int cr_model_spec_parse(json_t *body, json_t *base, json_t **out, struct cr_err *err);

/* The spec's path or url (borrowed). */
const char *cr_model_spec_source(json_t *spec);

/* The engine to use: the spec's, or for "auto" llama.cpp for GGUF and vllm
 * for safetensors (format as reported by workers, else the file name). */
const char *cr_model_spec_engine(json_t *spec, const char *format);

/* Estimator parameters: ctx, parallel, and from engine_args the KV cache
 * types (-ctk/-ctv), flash attention (-fa off) and micro-batch (-ub). */
void cr_model_spec_params(json_t *spec, struct cr_est_params *p);

/* The fields of spec an instance is built from (source, engine, its
 * arguments, context, placement rules), as a new object: kept with each
 * instance, so that a change of any of them marks the instance outdated and
 * a rolling update replaces it. */
json_t *cr_model_spec_built(json_t *spec);

#endif
