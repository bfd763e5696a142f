/* jansson helpers, see json.h. */
#include "base/json.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/mem.h"

json_t *cr_json_parse_object(const char *data, size_t len, struct cr_err *err)
{
	json_error_t je;
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		cr_err_set(err, CR_EINPUT, "send a valid JSON object with Content-Type: application/json",
			   "malformed JSON at line %d column %d: %s", je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		cr_err_set(err, CR_EINPUT, "wrap the fields in an object: {\"field\": value}",
			   "the body must be a JSON object");
		return NULL;
	}
	return j;
}

static int wrong_type(struct cr_err *err, const char *field, const char *want)
{
	return cr_err_set(err, CR_EINPUT, "send the field with the right type or leave it out",
			  "field '%s' must be %s", field, want);
}

int cr_json_str(json_t *obj, const char *field, const char **out, struct cr_err *err)
{
	json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return wrong_type(err, field, "a string");
	*out = json_string_value(v);
	return 0;
}

int cr_json_req_str(json_t *obj, const char *field, const char **out, struct cr_err *err)
{
	json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v))
		return cr_err_set(err, CR_EINPUT, "add the field to the request body",
				  "field '%s' is required", field);
	if (!json_is_string(v) || !*json_string_value(v))
		return wrong_type(err, field, "a non-empty string");
	*out = json_string_value(v);
	return 0;
}

int cr_json_int(json_t *obj, const char *field, long long min, long long max, long long *out,
		struct cr_err *err)
{
	json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v))
		return wrong_type(err, field, "an integer");
	long long x = json_integer_value(v);
	if (x < min || x > max)
		return cr_err_set(err, CR_EINPUT, "send a value inside the range",
				  "field '%s' is %lld, outside %lld..%lld", field, x, min, max);
	*out = x;
	return 0;
}

int cr_json_bool(json_t *obj, const char *field, bool *out, struct cr_err *err)
{
	json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return wrong_type(err, field, "true or false");
	*out = json_is_true(v);
	return 0;
}

int cr_json_obj(json_t *obj, const char *field, json_t **out, struct cr_err *err)
{
	json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return wrong_type(err, field, "an object");
	*out = v;
	return 0;
}

int cr_json_arr(json_t *obj, const char *field, json_t **out, struct cr_err *err)
{
	json_t *v = json_object_get(obj, field);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return wrong_type(err, field, "an array");
	*out = v;
	return 0;
}

const char *cr_json_get_str(const json_t *obj, const char *field, const char *def)
{
	json_t *v = json_object_get(obj, field);
	return json_is_string(v) ? json_string_value(v) : def;
}

long long cr_json_get_int(const json_t *obj, const char *field, long long def)
{
	json_t *v = json_object_get(obj, field);
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v))
		return (long long)json_real_value(v);
	return def;
}

char *cr_json_dump(const json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);
	if (!s)
		abort();
	return s;
}

static bool label_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '_' || c == '-' || c == '/';
}

int cr_labels_parse(const char *s, json_t **out, struct cr_err *err)
{
	json_t *obj = json_object();
	char *copy = cr_xstrdup(s ? s : "");
	char *save = NULL;
	int rc = 0;
	for (char *pair = strtok_r(copy, ",", &save); pair; pair = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(pair, '=');
		if (!eq || eq == pair) {
			rc = cr_err_set(err, CR_EINPUT, "write labels as key=value pairs separated by commas",
					"label '%s' has no key=value form", pair);
			break;
		}
		*eq = '\0';
		for (const char *c = pair; *c; c++) {
			if (!label_char_ok(*c)) {
				rc = cr_err_set(err, CR_EINPUT,
						"use letters, digits, '.', '_', '-' and '/' in label keys",
						"label key '%s' has the character '%c'", pair, *c);
				goto out;
			}
		}
		json_object_set_new(obj, pair, json_string(eq + 1));
	}
out:
	free(copy);
	if (rc) {
		json_decref(obj);
		return rc;
	}
	*out = obj;
	return 0;
}

struct sort_keys {
	const char *key, *key2;
};

static int cmp_objects(const void *a, const void *b, void *arg)
{
	const struct sort_keys *k = arg;
	const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	int c = strcmp(cr_json_get_str(x, k->key, ""), cr_json_get_str(y, k->key, ""));
	if (!c && k->key2)
		c = strcmp(cr_json_get_str(x, k->key2, ""), cr_json_get_str(y, k->key2, ""));
	return c;
}

void cr_json_sort(json_t *arr, const char *key, const char *key2)
{
	size_t n = json_array_size(arr);
	if (n < 2)
		return;
	json_t **v = cr_xcalloc(n, sizeof(*v));
	for (size_t i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(arr, i));
	struct sort_keys k = { key, key2 };
	qsort_r(v, n, sizeof(*v), cmp_objects, &k);
	json_array_clear(arr);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, v[i]);
	free(v);
}
