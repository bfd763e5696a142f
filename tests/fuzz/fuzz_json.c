/* Fuzz target: request-body handling as the API does it: parse an object,
 * read typed fields, parse labels, and validate it as a model spec. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "api/model_spec.h"
#include "base/err.h"
#include "base/json.h"
#include "base/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cr_err err = CR_ERR_INIT;
	json_t *o = cr_json_parse_object((const char *)data, size, &err);
	if (!o)
		return 0;
	const char *s = NULL;
	long long i = 0;
	bool b = false;
	json_t *sub = NULL;
	cr_json_str(o, "name", &s, &err);
	cr_json_req_str(o, "username", &s, &err);
	cr_json_int(o, "port", 1, 65535, &i, &err);
	cr_json_bool(o, "flag", &b, &err);
	cr_json_obj(o, "labels", &sub, &err);
	cr_json_arr(o, "gpus", &sub, &err);
	const char *text = cr_json_get_str(o, "labels_text", NULL);
	json_t *labels = NULL;
	if (text && cr_labels_parse(text, &labels, &err) == 0)
		json_decref(labels);
	json_t *spec = NULL;
	if (cr_model_spec_parse(o, NULL, &spec, &err) == 0) {
		struct cr_est_params p;
		cr_model_spec_params(spec, &p);
		cr_model_spec_engine(spec, NULL);
		json_t *patched = NULL;
		if (cr_model_spec_parse(o, spec, &patched, &err) == 0)
			json_decref(patched);
		json_decref(spec);
	}
	free(cr_json_dump(o));
	json_decref(o);
	return 0;
}
