/* Model specs: validation of what users send to POST/PATCH /api/models and
 * /api/models/plan, into one canonical JSON object. Every refusal names the
 * field and the fix. */
#include "api/model_spec.h"

#include <ctype.h>
#include <string.h>

#include "base/json.h"
#include "base/mem.h"
#include "http/hub.h"
#include "sched/gguf.h"

static const char *const fields[] = {
	"name", "path", "url", "sha256", "engine", "engine_args", "replicas", "ctx", "parallel", "policy",
	"selector", "gpus", "allow_cpu_offload", "allow_distributed", "health_probe", "hf", "hf_file", "ms", "ms_file",
	"hub", "on_oom", NULL,
};

static bool name_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return false;
	return true;
}

static int bad(struct cr_err *err, const char *fix, const char *fmt, const char *arg)
{
	return cr_err_set(err, CR_EINPUT, fix, fmt, arg);
}

static int check_source(json_t *spec, struct cr_err *err)
{
	const char *path = cr_json_get_str(spec, "path", NULL), *url = cr_json_get_str(spec, "url", NULL);
	json_t *hub = json_object_get(spec, "hub");
	for (int k = 0; k < 2; k++) { /* "hf"/"hf_file", "ms"/"ms_file" */
		const char *kind = k ? "ms" : "hf", *file_field = k ? "ms_file" : "hf_file";
		json_t *ref = json_object_get(spec, kind), *file = json_object_get(spec, file_field);
		if (file && (!ref || !json_is_string(file) || !*json_string_value(file)))
			return bad(err, "name the file inside the repository given with --hf or --ms", "%s",
				   ref ? "the hub file must be a non-empty string" : "a hub file needs its repository ('hf' or 'ms')");
		if (!ref)
			continue;
		struct cr_hub_ref r;
		if (!json_is_string(ref) || cr_hub_parse(kind, json_string_value(ref), &r, err))
			return json_is_string(ref) ? err->code : bad(err, "give OWNER/REPO[:QUANT][@REVISION]", "%s",
								    "the hub repository must be a string");
		if (path || json_object_get(spec, k ? "hf" : "ms") || (url && !hub))
			return bad(err, "give one source: --path, --url, --hf or --ms", "%s",
				   "a model has one source: 'path', 'url', 'hf' or 'ms'");
		return 0; /* url and sha256, when present, were resolved by the server from the hub */
	}
	if (hub)
		return bad(err, "leave 'hub' out: the server sets it", "%s", "field 'hub' is set by the server");
	if (!path == !url)
		return bad(err, "give --path for a file on the workers, --url to download it, or --hf/--ms for a hub "
				"repository", "%s",
			   path ? "give either 'path' or 'url', not both" : "field 'path', 'url', 'hf' or 'ms' is required");
	if (path && path[0] != '/')
		return bad(err, "use the absolute path of the model on the workers", "path '%s' is not absolute", path);
	if (url && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return bad(err, "use an http:// or https:// URL", "url '%s' is not an HTTP(S) URL", url);
	const char *sha = cr_json_get_str(spec, "sha256", NULL);
	if (sha && !url)
		return bad(err, "drop sha256, or give a url", "%s", "sha256 applies to url sources only");
	if (sha) {
		bool hex = strlen(sha) == 64;
		for (size_t i = 0; hex && i < 64; i++)
			hex = isxdigit((unsigned char)sha[i]) != 0;
		if (!hex)
			return bad(err, "give the 64 hex digits of the file's SHA-256", "sha256 '%s' is not a SHA-256 digest",
				   sha);
	}
	return 0;
}

static int check_strings(json_t *spec, const char *field, size_t max_items, struct cr_err *err)
{
	json_t *a = json_object_get(spec, field);
	if (!a)
		return 0;
	if (!json_is_array(a) || json_array_size(a) > max_items)
		return cr_err_set(err, CR_EINPUT, "send a list of strings", "field '%s' must be a list of at most %zu strings",
				  field, max_items);
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
		if (!json_is_string(v))
			return cr_err_set(err, CR_EINPUT, "send a list of strings", "field '%s' item %zu is not a string",
					  field, i);
	return 0;
}

static int check_gpus(json_t *spec, struct cr_err *err)
{
	int rc = check_strings(spec, "gpus", 64, err);
	if (rc)
		return rc;
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(spec, "gpus"), i, v) {
		const char *s = json_string_value(v), *colon = strrchr(s, ':');
		long long idx;
		if (!colon || colon == s ||
		    (strcmp(colon + 1, "cpu") != 0 && !cr_parse_int(colon + 1, 0, 1023, &idx)))
			return bad(err, "write each GPU as WORKER:INDEX, e.g. gpu-1:0 (see 'corral gpus')",
				   "gpus item '%s' is not WORKER:INDEX", s);
	}
	return 0;
}

static int check_selector(json_t *spec, struct cr_err *err)
{
	json_t *sel = json_object_get(spec, "selector");
	if (!sel)
		return 0;
	if (json_is_string(sel)) { /* "k=v,k=v" */
		json_t *obj = NULL;
		int rc = cr_labels_parse(json_string_value(sel), &obj, err);
		if (rc)
			return rc;
		json_object_set_new(spec, "selector", obj);
		return 0;
	}
	if (!json_is_object(sel))
		return bad(err, "give k=v pairs, e.g. gpu=h100,zone=eu", "%s", "field 'selector' must be an object of strings");
	const char *k;
	json_t *v;
	json_object_foreach(sel, k, v)
		if (!json_is_string(v))
			return bad(err, "give k=v pairs, e.g. gpu=h100,zone=eu", "selector '%s' must be a string", k);
	return 0;
}

static int check_args(json_t *spec, struct cr_err *err)
{
	int rc = check_strings(spec, "engine_args", 128, err);
	if (rc)
		return rc;
	json_t *a = json_object_get(spec, "engine_args");
	for (size_t i = 0; i + 1 < json_array_size(a); i++) {
		const char *k = json_string_value(json_array_get(a, i)), *v = json_string_value(json_array_get(a, i + 1));
		if ((!strcmp(k, "-ctk") || !strcmp(k, "--cache-type-k") || !strcmp(k, "-ctv") ||
		     !strcmp(k, "--cache-type-v")) &&
		    cr_ggml_type_from_name(v) < 0)
			return bad(err, "use a KV cache type such as f16, q8_0 or q4_0", "engine_args: unknown cache type '%s'", v);
	}
	return 0;
}

int cr_model_spec_parse(json_t *body, json_t *base, json_t **out, struct cr_err *err)
{
	const char *key;
	json_t *v;
	json_object_foreach(body, key, v) {
		bool known = false;
		for (size_t i = 0; fields[i]; i++)
			known |= !strcmp(key, fields[i]);
		if (!known)
			return cr_err_set(err, CR_EINPUT, "see docs/api.md for the fields of a model", "unknown field '%s'", key);
		/* null is never a value: {"replicas": null} once deleted every replica */
		if (json_is_null(v))
			return cr_err_set(err, CR_EINPUT, "leave the field out to keep its value (or its default)",
					  "field '%s' cannot be null", key);
	}
	json_t *spec = base ? json_deep_copy(base) : json_pack("{s:s,s:[],s:i,s:i,s:i,s:s,s:{},s:[],s:b,s:b}", "engine",
							      "auto", "engine_args", "replicas", 1, "ctx", 0, "parallel",
							      1, "policy", "spread", "selector", "gpus", "allow_cpu_offload",
							      0, "allow_distributed", 0);
	int rc = 0;
	if (base && json_object_get(body, "name") &&
	    !json_equal(json_object_get(body, "name"), json_object_get(base, "name"))) {
		rc = bad(err, "delete the model and deploy it again under the new name", "%s", "a model's name cannot change");
		goto out;
	}
	if (json_object_get(body, "hub")) {
		json_decref(spec);
		return bad(err, "leave 'hub' out: the server sets it from 'hf' or 'ms'", "%s", "field 'hub' is set by the server");
	}
	static const char *const sources[] = { "path", "url", "sha256", "hf", "hf_file", "ms", "ms_file", "hub", NULL };
	bool new_source = false, new_file = false;
	static const char *const kinds[] = { "path", "url", "hf", "ms" };
	for (int i = 0; base && i < 4; i++) /* a new source replaces the old one */
		new_source |= json_object_get(body, kinds[i]) != NULL;
	new_file = base && (json_object_get(body, "hf_file") || json_object_get(body, "ms_file"));
	for (int i = 0; new_source && sources[i]; i++)
		json_object_del(spec, sources[i]);
	if (new_file && !new_source) { /* another file of the same repository: resolved again */
		json_object_del(spec, "url");
		json_object_del(spec, "sha256");
		json_object_del(spec, "hub");
	}
	json_object_update(spec, body);
	const char *s;
	long long n;
	bool b;
	if ((rc = cr_json_req_str(spec, "name", &s, err)))
		goto out;
	if (!name_ok(s, 63)) {
		rc = bad(err, "use up to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
			 "model name '%s' is not valid", s);
		goto out;
	}
	const char *engine = cr_json_get_str(spec, "engine", "auto");
	if (!json_is_string(json_object_get(spec, "engine")) || !name_ok(engine, 63)) {
		rc = bad(err, "use auto, llama.cpp, vllm, sglang or a custom engine's name", "engine '%s' is not valid",
			 json_is_string(json_object_get(spec, "engine")) ? engine : "?");
		goto out;
	}
	if ((rc = check_source(spec, err)) || (rc = check_args(spec, err)) || (rc = check_gpus(spec, err)) ||
	    (rc = check_selector(spec, err)))
		goto out;
	if ((rc = cr_json_int(spec, "replicas", 0, 64, &n, err)) || (rc = cr_json_int(spec, "ctx", 0, 1 << 24, &n, err)) ||
	    (rc = cr_json_int(spec, "parallel", 1, 256, &n, err)) ||
	    (rc = cr_json_bool(spec, "allow_cpu_offload", &b, err)) ||
	    (rc = cr_json_bool(spec, "allow_distributed", &b, err)) ||
	    (json_object_get(spec, "health_probe") && (rc = cr_json_bool(spec, "health_probe", &b, err))))
		goto out;
	s = cr_json_get_str(spec, "policy", "");
	if (strcmp(s, "spread") != 0 && strcmp(s, "binpack") != 0) {
		rc = bad(err, "use spread (default) or binpack", "policy '%s' is not known", s);
		goto out;
	}
	s = cr_json_get_str(spec, "on_oom", "replan");
	if (!json_is_string(json_object_get(spec, "on_oom")) && json_object_get(spec, "on_oom")) {
		rc = bad(err, "use replan (default), reduce_ctx or stop", "%s", "on_oom must be a string");
		goto out;
	}
	if (strcmp(s, "replan") != 0 && strcmp(s, "reduce_ctx") != 0 && strcmp(s, "stop") != 0) {
		rc = bad(err, "use replan (default: place it again with what it needed), reduce_ctx (halve the context) or "
			      "stop", "on_oom '%s' is not known", s);
		goto out;
	}
out:
	if (rc) {
		json_decref(spec);
		return rc;
	}
	*out = spec;
	return 0;
}

const char *cr_model_spec_source(json_t *spec)
{
	const char *p = cr_json_get_str(spec, "path", NULL);
	return p ? p : cr_json_get_str(spec, "url", "");
}

const char *cr_model_spec_engine(json_t *spec, const char *format)
{
	const char *e = cr_json_get_str(spec, "engine", "auto");
	if (strcmp(e, "auto") != 0)
		return e;
	if (format && *format)
		return strcmp(format, "gguf") == 0 ? "llama.cpp" : "vllm";
	const char *src = cr_model_spec_source(spec);
	size_t n = strlen(src);
	return n >= 5 && strcmp(src + n - 5, ".gguf") == 0 ? "llama.cpp" : "vllm";
}

void cr_model_spec_params(json_t *spec, struct cr_est_params *p)
{
	*p = (struct cr_est_params)CR_EST_PARAMS_INIT;
	p->n_ctx = (uint32_t)cr_json_get_int(spec, "ctx", 0);
	p->n_parallel = (uint32_t)cr_json_get_int(spec, "parallel", 1);
	json_t *a = json_object_get(spec, "engine_args");
	for (size_t i = 0; i + 1 < json_array_size(a); i++) {
		const char *k = json_string_value(json_array_get(a, i)), *v = json_string_value(json_array_get(a, i + 1));
		long long n;
		if (!strcmp(k, "-ctk") || !strcmp(k, "--cache-type-k"))
			p->cache_type_k = cr_ggml_type_from_name(v);
		else if (!strcmp(k, "-ctv") || !strcmp(k, "--cache-type-v"))
			p->cache_type_v = cr_ggml_type_from_name(v);
		else if ((!strcmp(k, "-fa") || !strcmp(k, "--flash-attn")) && !strcmp(v, "off"))
			p->no_flash_attn = true;
		else if ((!strcmp(k, "-ub") || !strcmp(k, "--ubatch-size")) && cr_parse_int(v, 1, 65536, &n))
			p->n_ubatch = (uint32_t)n;
	}
}

static const char *const built_from[] = { "path", "url", "sha256", "engine", "engine_args", "ctx", "parallel",
					  "policy", "selector", "gpus", "allow_cpu_offload", "allow_distributed", NULL };

json_t *cr_model_spec_built(json_t *spec)
{
	json_t *o = json_object();
	for (size_t k = 0; built_from[k]; k++) {
		json_t *v = json_object_get(spec, built_from[k]);
		if (v)
			json_object_set(o, built_from[k], v);
	}
	return o;
}
