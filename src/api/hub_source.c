/* Models from hubs: a spec's "hf" or "ms" reference is resolved to one file
 * of the repository, off the event loop (the listing is an HTTP call to the
 * hub), and becomes the spec's url and sha256, with "hub" saying which file
 * was chosen, from which commit, and why. See docs/hub.md. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/internal.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "http/hub.h"
#include "http/workpool.h"
#include "sched/gguf.h"

struct job {
	struct cr_app *app;
	struct cr_req *req;
	json_t *spec, *ctx;
	cr_hub_then then;
	struct cr_hub_ref ref;
	json_t *files;
	char *commit;
	struct cr_err err;
};

static const char *kind_of(json_t *spec)
{
	return json_object_get(spec, "hf") ? "hf" : json_object_get(spec, "ms") ? "ms" : NULL;
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);
	return n >= t && !strcasecmp(s + n - t, tail);
}

/* "-00001-of-00003.gguf": a part of a split GGUF; *first when it is part 1. */
static bool split_part(const char *path, bool *first)
{
	unsigned no, count;
	if (!cr_gguf_split_name(path, &no, &count))
		return false;
	*first = no == 1;
	return true;
}

static json_t *file_named(json_t *files, const char *path)
{
	size_t i;
	json_t *f;
	json_array_foreach(files, i, f)
		if (!strcmp(cr_json_get_str(f, "path", ""), path))
			return f;
	return NULL;
}

/* The bytes of f, every part together when f is the first part of a split
 * GGUF; *missing gets the first part the listing lacks (caller frees). */
static uint64_t set_size(json_t *files, json_t *f, char **missing)
{
	const char *path = cr_json_get_str(f, "path", "");
	unsigned no, count;
	if (!cr_gguf_split_name(path, &no, &count) || no != 1)
		return (uint64_t)cr_json_get_int(f, "size", 0);
	uint64_t total = 0;
	for (unsigned k = 1; k <= count; k++) {
		char *part = cr_gguf_split_sibling(path, k);
		json_t *p = file_named(files, part);
		if (!p && missing && !*missing)
			*missing = cr_xstrdup(part);
		total += (uint64_t)cr_json_get_int(p, "size", 0);
		free(part);
	}
	return total;
}

/* The quant tag appears in the file name as a word of its own. */
static bool has_quant(const char *path, const char *quant)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	size_t q = strlen(quant);
	for (const char *p = base; *p; p++) {
		if (strncasecmp(p, quant, q) != 0)
			continue;
		bool left = p == base || !isalnum((unsigned char)p[-1]), right = !isalnum((unsigned char)p[q]);
		if (left && right)
			return true;
	}
	return false;
}

/* The most memory one instance could have on one worker: its GPUs' free
 * memory together, or (with CPU offload) its available RAM. */
static double capacity(struct cr_app *app, json_t *spec, const char **where)
{
	double best = 0;
	size_t it = 0;
	void *v;
	bool cpu = json_is_true(json_object_get(spec, "allow_cpu_offload"));
	while (cr_map_next(&app->workers, &it, NULL, &v)) {
		struct cr_worker *w = v;
		if (w->state != CR_W_READY)
			continue;
		double gpu = 0, ram = (double)cr_json_get_int(json_object_get(json_object_get(w->report, "system"), "memory"),
							  "available", 0);
		size_t i;
		json_t *g;
		json_array_foreach(json_object_get(w->report, "gpus"), i, g) {
			double total = (double)cr_json_get_int(g, "memory_total", 0), used = (double)cr_json_get_int(g, "memory_used", 0);
			gpu += total > used ? total - used : 0;
		}
		double mine = cpu && ram > gpu ? ram : gpu;
		if (mine > best) {
			best = mine;
			*where = w->name;
		}
	}
	return best;
}

static json_t *gguf_files(json_t *files)
{
	json_t *out = json_array();
	size_t i;
	json_t *f;
	json_array_foreach(files, i, f) {
		const char *p = cr_json_get_str(f, "path", "");
		if (ends_with(p, ".gguf") && !strstr(p, "mmproj"))
			json_array_append(out, f);
	}
	return out;
}

static void names_of(json_t *files, char *out, size_t n)
{
	size_t at = 0, i;
	json_t *f;
	out[0] = '\0';
	json_array_foreach(files, i, f) {
		if (at + 4 >= n)
			break;
		at += (size_t)snprintf(out + at, n - at, "%s%s", i ? ", " : "", cr_json_get_str(f, "path", ""));
	}
	if (!json_array_size(files))
		snprintf(out, n, "none");
}

/* Choose the file: the one named, the one with the quant tag, or the largest
 * that fits the cluster. Returns the file (borrowed) with why, or NULL with
 * err set. */
static json_t *pick(struct job *j, char *why, size_t n)
{
	const char *kind = j->ref.kind, *file_field = !strcmp(kind, "ms") ? "ms_file" : "hf_file";
	const char *want = cr_json_get_str(j->spec, file_field, NULL);
	json_t *ggufs = gguf_files(j->files), *chosen = NULL;
	char list[900];
	size_t i;
	json_t *f;
	bool first;
	if (want) {
		json_array_foreach(j->files, i, f)
			if (!strcmp(cr_json_get_str(f, "path", ""), want))
				chosen = f;
		char *one = chosen && split_part(want, &first) && !first ? cr_gguf_split_sibling(want, 1) : NULL;
		if (one && file_named(j->files, one)) { /* a later part stands for its model: llama.cpp loads the first */
			chosen = file_named(j->files, one);
			snprintf(why, n, "the split GGUF the file asked for is part of");
		} else if (!chosen) {
			names_of(ggufs, list, sizeof(list));
			cr_err_set(&j->err, CR_ENOTFOUND, NULL, "'%s' has no file '%s' at %s", j->ref.repo, want, j->ref.revision);
			snprintf(j->err.fix, sizeof(j->err.fix), "name one of its GGUF files: %.400s", list);
		} else {
			snprintf(why, n, "the file asked for");
		}
		free(one);
	} else if (!json_array_size(ggufs)) {
		bool safetensors = false;
		json_array_foreach(j->files, i, f)
			safetensors |= ends_with(cr_json_get_str(f, "path", ""), ".safetensors") &&
				       !strchr(cr_json_get_str(f, "path", ""), '/');
		json_t *config = file_named(j->files, "config.json");
		if (safetensors && config) {
			chosen = config;
			snprintf(why, n, "a safetensors repository (for vLLM or SGLang): config.json, its weights and tokenizer");
		} else if (safetensors)
			cr_err_set(&j->err, CR_EINPUT, "choose a repository with a config.json beside its weights",
				   "'%s' holds safetensors but no config.json at its top", j->ref.repo);
		else
			cr_err_set(&j->err, CR_EINPUT, "choose a repository with a .gguf file, or name one with --hf-file",
				   "'%s' has no GGUF file at %s", j->ref.repo, j->ref.revision);
	} else if (j->ref.quant[0]) {
		json_array_foreach(ggufs, i, f) {
			const char *p = cr_json_get_str(f, "path", "");
			if (has_quant(p, j->ref.quant) && (!chosen || (split_part(p, &first) && first)))
				chosen = f;
		}
		if (!chosen) {
			names_of(ggufs, list, sizeof(list));
			cr_err_set(&j->err, CR_ENOTFOUND, NULL, "no file of '%s' matches the quant '%s'", j->ref.repo, j->ref.quant);
			snprintf(j->err.fix, sizeof(j->err.fix), "pick one of its files (by its quant tag, or --hf-file): %.400s",
				 list);
		} else {
			snprintf(why, n, "its file with the quant %s", j->ref.quant);
		}
	} else { /* the largest that fits the cluster as the scheduler sees it */
		const char *where = NULL;
		double cap = capacity(j->app, j->spec, &where);
		json_t *smallest = NULL;
		json_array_foreach(ggufs, i, f) {
			const char *p = cr_json_get_str(f, "path", "");
			if (split_part(p, &first) && !first)
				continue;
			double size = (double)set_size(j->files, f, NULL);
			if (!smallest || size < (double)set_size(j->files, smallest, NULL))
				smallest = f;
			/* weights plus room for a context and the engine's buffers */
			if (size * 1.15 + 512.0 * 1048576 <= cap && (!chosen || size > (double)set_size(j->files, chosen, NULL)))
				chosen = f;
		}
		char capb[32];
		cr_bytes_human((uint64_t)cap, capb, sizeof(capb));
		if (chosen) {
			snprintf(why, n, "the largest GGUF file that fits the most free memory of one worker (%s on %s)", capb,
				 where ? where : "?");
		} else {
			chosen = smallest;
			snprintf(why, n, "the smallest GGUF file: none fits the most free memory of one worker (%s%s%s); the "
				 "scheduler says what is missing", capb, where ? " on " : "", where ? where : "");
		}
	}
	char *missing = NULL;
	if (chosen)
		set_size(j->files, chosen, &missing);
	if (missing) {
		cr_err_set(&j->err, CR_ENOTFOUND, NULL, "'%s' lacks %s, a part of the split GGUF %s", j->ref.repo, missing,
			   cr_json_get_str(chosen, "path", ""));
		snprintf(j->err.fix, sizeof(j->err.fix), "choose another quant or revision: every part of a split GGUF "
							 "must be in the repository");
		chosen = NULL;
		free(missing);
	}
	json_decref(ggufs);
	return chosen;
}

/* The files of a safetensors model directory: at the repository's top,
 * config and tokenizer files and the weights in safetensors (not the same
 * weights again as .bin, .pt, .gguf or .onnx), [{"path","size","sha256"?}]. */
static json_t *model_dir_files(json_t *files)
{
	static const char *const tails[] = { ".safetensors", ".json", ".model", ".txt", ".tiktoken", ".jinja", NULL };
	json_t *out = json_array(), *f;
	size_t i;
	json_array_foreach(files, i, f) {
		const char *p = cr_json_get_str(f, "path", "");
		bool plain = *p && p[0] != '.';
		for (const char *c = p; *c && plain; c++)
			plain = isalnum((unsigned char)*c) || strchr("._-", *c);
		bool wanted = false;
		for (int t = 0; plain && tails[t]; t++)
			wanted |= ends_with(p, tails[t]);
		if (!wanted)
			continue;
		json_t *e = json_pack("{s:s,s:I}", "path", p, "size", cr_json_get_int(f, "size", 0));
		if (cr_json_get_str(f, "sha256", NULL))
			json_object_set(e, "sha256", json_object_get(f, "sha256"));
		json_array_append_new(out, e);
	}
	return out;
}

static void work(void *arg)
{
	struct job *j = arg;
	cr_hub_list(&j->ref, &j->files, &j->commit, &j->err);
}

static void done(void *arg)
{
	struct job *j = arg;
	char why[400] = "";
	json_t *f = j->err.code ? NULL : pick(j, why, sizeof(why));
	if (!f) {
		cr_reply_err(j->req, &j->err);
		json_decref(j->spec);
	} else {
		const char *path = cr_json_get_str(f, "path", ""), *kind = j->ref.kind;
		char *url = cr_hub_file_url(&j->ref, j->commit, path);
		json_object_set_new(j->spec, "url", json_string(url));
		const char *sha = cr_json_get_str(f, "sha256", NULL);
		if (sha)
			json_object_set_new(j->spec, "sha256", json_string(sha));
		json_t *hub = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s}", "kind", kind, "ref",
					cr_json_get_str(j->spec, kind, ""), "repo", j->ref.repo, "revision", j->ref.revision,
					"commit", j->commit, "size", (json_int_t)set_size(j->files, f, NULL), "file", path, "why",
					why);
		unsigned no, count;
		if (!strcmp(path, "config.json")) { /* a safetensors model: the files beside config.json it needs */
			json_t *set = model_dir_files(j->files);
			json_t *e;
			size_t k;
			json_int_t total = 0;
			json_array_foreach(set, k, e)
				total += cr_json_get_int(e, "size", 0);
			json_object_set_new(hub, "size", json_integer(total));
			json_object_set_new(hub, "files", set);
		} else if (cr_gguf_split_name(path, &no, &count)) { /* every part is downloaded; llama-server gets the first */
			json_t *shas = json_array();
			for (unsigned k = 1; k <= count; k++) {
				char *part = cr_gguf_split_sibling(path, k);
				const char *psha = cr_json_get_str(file_named(j->files, part), "sha256", NULL);
				json_array_append_new(shas, psha ? json_string(psha) : json_null());
				free(part);
			}
			json_object_set_new(hub, "parts", json_integer(count));
			json_object_set_new(hub, "parts_sha256", shas);
		}
		json_object_set_new(j->spec, "hub", hub);
		cr_info("%s '%s': chose %s (%s) at %s", kind, j->ref.repo, path, why, j->commit);
		free(url);
		j->then(j->req, j->spec, j->ctx); /* takes the spec */
	}
	json_decref(j->ctx);
	json_decref(j->files);
	free(j->commit);
	free(j);
}

bool cr_hub_resolve(struct cr_app *app, struct cr_req *req, json_t *spec, cr_hub_then then, json_t *ctx)
{
	const char *kind = kind_of(spec);
	json_t *hub = json_object_get(spec, "hub");
	if (!kind || (hub && json_object_get(spec, "url") &&
		      !strcmp(cr_json_get_str(hub, "ref", ""), cr_json_get_str(spec, kind, ""))))
		return false; /* no hub, or resolved already */
	json_object_del(spec, "url");
	json_object_del(spec, "sha256");
	json_object_del(spec, "hub");
	struct job *j = cr_xcalloc(1, sizeof(*j));
	j->app = app;
	j->req = req;
	j->spec = spec;
	j->ctx = ctx;
	j->then = then;
	j->err = (struct cr_err)CR_ERR_INIT;
	cr_hub_parse(kind, cr_json_get_str(spec, kind, ""), &j->ref, NULL); /* checked with the spec */
	if (!app->hub_pool)
		app->hub_pool = cr_workpool_new(app->base, 2, 32);
	if (cr_workpool_submit(app->hub_pool, work, done, j) != 0) {
		cr_reply_error_retry(req, CR_EUNAVAILABLE, "too many hub lookups at once", 2);
		json_decref(spec);
		json_decref(ctx);
		free(j);
	}
	return true;
}

void cr_hub_free_all(struct cr_app *app)
{
	cr_workpool_free(app->hub_pool);
	app->hub_pool = NULL;
}
