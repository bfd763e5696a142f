/* jansson helpers: typed field access that reports the field and the
 * expected type in a cr_err, and small builders. */
#ifndef CR_BASE_JSON_H
#define CR_BASE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct cr_err;

/* Parse a JSON object from bytes. On failure fills err (CR_EINPUT) with the
 * line and column and returns NULL. The caller owns the result. */
json_t *cr_json_parse_object(const char *data, size_t len, struct cr_err *err);

/* Optional typed fields of obj. Absent or null: returns 0 and leaves *out.
 * Present with the wrong type or out of range: CR_EINPUT naming the field.
 * Strings are borrowed from obj. */
int cr_json_str(json_t *obj, const char *field, const char **out, struct cr_err *err);
int cr_json_int(json_t *obj, const char *field, long long min, long long max, long long *out,
		struct cr_err *err);
int cr_json_bool(json_t *obj, const char *field, bool *out, struct cr_err *err);
int cr_json_obj(json_t *obj, const char *field, json_t **out, struct cr_err *err);
int cr_json_arr(json_t *obj, const char *field, json_t **out, struct cr_err *err);

/* Required variants: absent is CR_EINPUT "field 'x' is required". */
int cr_json_req_str(json_t *obj, const char *field, const char **out, struct cr_err *err);

/* Getters for trusted documents: default when absent or mistyped. */
const char *cr_json_get_str(const json_t *obj, const char *field, const char *def);
long long cr_json_get_int(const json_t *obj, const char *field, long long def);

/* Compact serialisation owned by the caller; aborts on OOM. */
char *cr_json_dump(const json_t *j);

/* Sort an array of objects in place by the string members key, then key2
 * (NULL: none), so that listings come in a stable order. */
void cr_json_sort(json_t *arr, const char *key, const char *key2);

/* Parse "k=v,k2=v2" into a new JSON object of strings. Keys: letters, digits,
 * '.', '_', '-', '/'; values may be empty. CR_EINPUT names the bad pair. */
int cr_labels_parse(const char *s, json_t **out, struct cr_err *err);

#endif
