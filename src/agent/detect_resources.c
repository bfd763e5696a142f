/* --resources FILE: declare devices Corral cannot detect, or override what
 * it detected. Format (docs/ops.md):
 *   {"gpus": [{"vendor": "nvidia", "vendor_index": 0, "name": "...", "memory_total": N, ...}],
 *    "system": {"shm_bytes": N, ...}} */
#include <stdlib.h>
#include <string.h>

#include "agent/detect.h"
#include "base/err.h"
#include "base/json.h"
#include "base/util.h"

static json_t *find_gpu(json_t *gpus, const char *vendor, json_int_t vendor_index)
{
	size_t i;
	json_t *g;
	json_array_foreach(gpus, i, g) {
		if (!strcmp(cr_json_get_str(g, "vendor", ""), vendor) &&
		    cr_json_get_int(g, "vendor_index", -1) == vendor_index)
			return g;
	}
	return NULL;
}

static int check_gpu(json_t *d, size_t i, struct cr_err *err)
{
	const char *fix = "each entry of \"gpus\" needs \"vendor\" (string), \"vendor_index\" (integer) and "
			  "\"memory_total\" (bytes, integer)";
	if (!json_is_object(d) || !json_is_string(json_object_get(d, "vendor")) ||
	    !json_is_integer(json_object_get(d, "vendor_index")) ||
	    !json_is_integer(json_object_get(d, "memory_total")) ||
	    json_integer_value(json_object_get(d, "memory_total")) < 0)
		return cr_err_set(err, CR_EINPUT, fix, "resources file: gpus[%zu] is incomplete", i);
	return 0;
}

int cr_detect_apply_resources(const char *path, json_t *report, struct cr_err *err)
{
	char *text = NULL;
	size_t len = 0;
	struct cr_err why = CR_ERR_INIT;
	int rc = cr_file_read(path, 1 << 20, &text, &len, &why);
	if (rc)
		return cr_err_set(err, rc, "check the --resources path", "resources file: %s", why.message);
	json_t *doc = cr_json_parse_object(text, len, &why);
	free(text);
	if (!doc)
		return cr_err_set(err, CR_EINPUT, "fix the JSON in the --resources file", "resources file '%s': %s",
				  path, why.message);
	json_t *decl = json_object_get(doc, "gpus");
	json_t *gpus = json_object_get(report, "gpus");
	json_t *sys = json_object_get(doc, "system");
	if ((decl && !json_is_array(decl)) || (sys && !json_is_object(sys))) {
		rc = cr_err_set(err, CR_EINPUT, "\"gpus\" must be an array and \"system\" an object",
				"resources file '%s' has the wrong shape", path);
		goto out;
	}
	size_t i;
	json_t *d;
	json_array_foreach(decl, i, d) {
		rc = check_gpu(d, i, err);
		if (rc)
			goto out;
	}
	json_array_foreach(decl, i, d) {
		json_t *g = find_gpu(gpus, json_string_value(json_object_get(d, "vendor")),
				     json_integer_value(json_object_get(d, "vendor_index")));
		if (!g) {
			g = json_object();
			json_object_set_new(g, "index", json_integer((json_int_t)json_array_size(gpus)));
			json_object_set_new(g, "memory_used", json_integer(0));
			json_array_append_new(gpus, g);
		}
		json_int_t index = json_integer_value(json_object_get(g, "index"));
		json_object_update(g, d);
		json_object_set_new(g, "index", json_integer(index));
		if (!json_object_get(g, "memory_free"))
			json_object_set_new(g, "memory_free",
					    json_integer(cr_json_get_int(g, "memory_total", 0) -
							 cr_json_get_int(g, "memory_used", 0)));
		json_object_set_new(g, "source", json_string("declared"));
	}
	if (sys)
		json_object_update(json_object_get(report, "system"), sys);
out:
	json_decref(doc);
	return rc;
}
