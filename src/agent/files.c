/* Worker-side model files: a cache of per-source reports keyed by the file's
 * size and mtime, and one download thread per url source in use here. */
#include "agent/files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/fetch.h"
#include "agent/modelfile.h"
#include "sched/gguf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"

struct download {
	char *source; /* the instance's source: the url, or the first part's of a split GGUF */
	char *url, *sha256, *dest;
	char *entry;  /* its name in the cache: dest's, or its model directory's */
	json_t *peers; /* workers that have it: [{"name","base","token"}] (under f->mu) */
	char from[64]; /* where the last finished download came from: a peer's name, or "" (the source) */
	pthread_t thread;
	bool running, joined;
	/* under f->mu */
	char state[16]; /* downloading, done, error */
	uint64_t bytes, total;
	char *message;
	int64_t since_ms;     /* this try's first progress (monotonic ms), for its rate */
	uint64_t since_bytes; /* bytes it had then (a resumed download starts above 0) */
	int failures;     /* in a row: the next try waits RETRY_MS doubled per failure */
	int64_t retry_at; /* a failed download is not tried again before (monotonic ms) */
	struct download *next;
};

#define RETRY_MS 10000            /* first wait after a failed download */
#define RETRY_MAX_MS (5 * 60000)  /* longest wait */

struct cr_files {
	char *cache_dir;
	pthread_mutex_t mu;
	bool stopping, changed;
	json_t *sources;   /* as received */
	json_t *snapshot;  /* the last "snapshot" event: failed downloads are tried again from it */
	json_t *cache;     /* source -> {"key", "report"} (reporter thread only) */
	struct download *downloads;
	int64_t last_progress_ms;
	json_t *index;     /* cache file name -> {"source", "last_used_ms"} (index.json, under mu) */
	uint64_t cache_max; /* bytes; 0: no limit */
};

/* ---- the cache's index: where each file came from, when it was last used ---- */

static char *index_path(struct cr_files *f)
{
	return cr_xasprintf("%s/index.json", f->cache_dir);
}

static void index_save(struct cr_files *f) /* under mu */
{
	char *path = index_path(f), *text = cr_json_dump(f->index);
	if (cr_mkdir_p(f->cache_dir, 0700, NULL) == 0)
		cr_file_write(path, text, strlen(text), 0600, NULL);
	free(text);
	free(path);
}

/* Mark name as used now, for source (under mu); index_save writes it. */
static void index_mark(struct cr_files *f, const char *name, const char *source)
{
	json_object_set_new(f->index, name, json_pack("{s:s,s:I}", "source", source, "last_used_ms", (json_int_t)cr_wall_ms()));
}

static void index_touch(struct cr_files *f, const char *name, const char *source) /* under mu */
{
	index_mark(f, name, source);
	index_save(f);
}

/* Whether source is used by an instance of the last snapshot (under mu). */
static bool in_use(struct cr_files *f, const char *source)
{
	size_t i;
	json_t *inst;
	json_array_foreach(json_object_get(f->snapshot, "instances"), i, inst)
		if (source && !strcmp(cr_json_get_str(inst, "source", ""), source))
			return true;
	for (struct download *d = f->downloads; d; d = d->next)
		if (d->running && source && !strcmp(d->source, source))
			return true;
	return false;
}

static bool cache_file(const char *name)
{
	return name[0] != '.' && strcmp(name, "index.json") != 0 && !strstr(name, ".tmp");
}

struct cr_files *cr_files_new(const char *cache_dir)
{
	struct cr_files *f = cr_xcalloc(1, sizeof(*f));
	f->cache_dir = cr_xstrdup(cache_dir);
	pthread_mutex_init(&f->mu, NULL);
	f->sources = json_array();
	f->cache = json_object();
	char *path = index_path(f), *text = NULL;
	size_t len;
	if (cr_file_read(path, 16u << 20, &text, &len, NULL) == 0)
		f->index = json_loadb(text, len, 0, NULL);
	if (!json_is_object(f->index)) {
		json_decref(f->index);
		f->index = json_object();
	}
	free(text);
	free(path);
	return f;
}

void cr_files_free(struct cr_files *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stopping = true;
	pthread_mutex_unlock(&f->mu);
	for (struct download *d = f->downloads, *next; d; d = next) {
		next = d->next;
		if (d->running || !d->joined)
			pthread_join(d->thread, NULL);
		free(d->source);
		free(d->url);
		free(d->sha256);
		free(d->dest);
		free(d->entry);
		json_decref(d->peers);
		free(d->message);
		free(d);
	}
	json_decref(f->sources);
	json_decref(f->snapshot);
	json_decref(f->cache);
	json_decref(f->index);
	pthread_mutex_destroy(&f->mu);
	free(f->cache_dir);
	free(f);
}

void cr_files_set_sources(struct cr_files *f, json_t *data)
{
	json_t *arr = json_object_get(data, "sources");
	if (!json_is_array(arr))
		return;
	pthread_mutex_lock(&f->mu);
	if (!json_equal(arr, f->sources)) {
		json_decref(f->sources);
		f->sources = json_incref(arr);
		f->changed = true;
	}
	pthread_mutex_unlock(&f->mu);
}

bool cr_files_take_changed(struct cr_files *f)
{
	pthread_mutex_lock(&f->mu);
	bool c = f->changed;
	f->changed = false;
	pthread_mutex_unlock(&f->mu);
	return c;
}

/* ---- downloads ---- */

static int on_progress(uint64_t have, uint64_t total, void *arg)
{
	struct download *d = ((void **)arg)[0];
	struct cr_files *f = ((void **)arg)[1];
	pthread_mutex_lock(&f->mu);
	d->bytes = have;
	d->total = total;
	int64_t now = cr_mono_ms();
	if (!d->since_ms) {
		d->since_ms = now;
		d->since_bytes = have;
	}
	if (now - f->last_progress_ms > 1000) {
		f->changed = true;
		f->last_progress_ms = now;
	}
	bool stop = f->stopping;
	pthread_mutex_unlock(&f->mu);
	return stop;
}

static void *download_main(void *arg)
{
	struct download *d = ((void **)arg)[0];
	struct cr_files *f = ((void **)arg)[1];
	struct cr_err err = CR_ERR_INIT;
	cr_info("downloading %s to %s", d->url, d->dest);
	char *dir = cr_xstrdup(d->dest);
	*strrchr(dir, '/') = '\0';
	int rc = cr_mkdir_p(dir, 0700, &err);
	free(dir);
	pthread_mutex_lock(&f->mu);
	json_t *peers = json_incref(d->peers);
	pthread_mutex_unlock(&f->mu);
	const char *rel = d->dest + strlen(f->cache_dir) + 1, *from = "";
	size_t i;
	json_t *p;
	int64_t t0 = cr_mono_ms();
	bool fetched = false;
	json_array_foreach(peers, i, p) { /* a peer that has it first: the LAN, not the internet */
		if (rc || fetched)
			break;
		char *url = cr_xasprintf("%s/cache/%s", cr_json_get_str(p, "base", ""), rel);
		struct cr_err perr = CR_ERR_INIT;
		if (cr_fetch_download(url, cr_json_get_str(p, "token", ""), d->dest, d->sha256, on_progress, arg, &perr) == 0) {
			from = cr_json_get_str(p, "name", "");
			fetched = true;
		} else if (perr.code != -ECANCELED) {
			cr_warn("fetching %s from peer %s failed (%s); trying %s", rel, cr_json_get_str(p, "name", "?"),
				perr.message, i + 1 < json_array_size(peers) ? "the next peer" : "the source");
		}
		free(url);
	}
	if (!rc && !fetched)
		rc = cr_fetch_download(d->url, NULL, d->dest, d->sha256, on_progress, arg, &err);
	if (!rc)
		cr_info("%s came from %s%s in %lld ms", rel, *from ? "peer " : "the source ", *from ? from : d->url,
			(long long)(cr_mono_ms() - t0));
	json_decref(peers);
	pthread_mutex_lock(&f->mu);
	snprintf(d->from, sizeof(d->from), "%s", rc ? "" : from);
	snprintf(d->state, sizeof(d->state), "%s", rc ? "error" : "done");
	int64_t wait = RETRY_MS;
	for (int k = 0; k < d->failures && wait < RETRY_MAX_MS; k++)
		wait *= 2;
	wait = wait > RETRY_MAX_MS ? RETRY_MAX_MS : wait;
	d->failures = rc ? d->failures + 1 : 0;
	d->retry_at = cr_mono_ms() + wait;
	char *msg = rc ? cr_xasprintf("%s; next try in %lld s", err.message, (long long)(wait / 1000)) : NULL;
	cr_str_replace(&d->message, rc ? msg : "");
	d->running = false;
	f->changed = true;
	if (!rc)
		index_touch(f, d->entry, d->source);
	pthread_mutex_unlock(&f->mu);
	if (rc)
		cr_warn("download of %s failed: %s", d->url, msg);
	else
		cr_info("downloaded %s (%llu bytes)", d->url, (unsigned long long)d->bytes);
	free(msg);
	free(arg);
	return NULL;
}

static void start_download(struct cr_files *f, struct download *d)
{
	void **arg = cr_xcalloc(2, sizeof(void *));
	arg[0] = d;
	arg[1] = f;
	snprintf(d->state, sizeof(d->state), "downloading");
	d->since_ms = 0;
	d->running = true;
	d->joined = false;
	if (pthread_create(&d->thread, NULL, download_main, arg) != 0) {
		d->running = false;
		d->joined = true;
		snprintf(d->state, sizeof(d->state), "error");
		cr_str_replace(&d->message, "could not start a download thread");
		free(arg);
	}
}

/* How many files source is: the parts of a split GGUF named by its first
 * part's URL, else 1. */
static unsigned parts_of(const char *source)
{
	unsigned no, count;
	return cr_gguf_split_name(source, &no, &count) && no == 1 ? count : 1;
}

/* Starts (under f->mu) the download of url (a file of the instance's
 * source src) to dest when it is not there, running, or failed too recently.
 * A failed one is tried again once its wait is over, not at every snapshot:
 * a checksum that does not match is not fetched again each second. Takes
 * url and dest. */
static void want_file(struct cr_files *f, json_t *inst, const char *src, char *url, char *dest, const char *sha,
		      int64_t now)
{
	struct download *d = f->downloads;
	while (d && strcmp(d->url, url) != 0)
		d = d->next;
	if (d && (d->running || !strcmp(d->state, "done") || (!strcmp(d->state, "error") && now < d->retry_at))) {
		free(url);
		free(dest);
		return;
	}
	if (d && !d->joined) { /* a failed one: try again */
		pthread_mutex_unlock(&f->mu);
		pthread_join(d->thread, NULL);
		pthread_mutex_lock(&f->mu);
		d->joined = true;
	}
	if (!d) {
		d = cr_xcalloc(1, sizeof(*d));
		d->source = cr_xstrdup(src);
		d->url = url;
		d->dest = dest;
		url = dest = NULL;
		d->sha256 = sha ? cr_xstrdup(sha) : NULL;
		const char *rel = d->dest + strlen(f->cache_dir) + 1, *slash = strchr(rel, '/');
		d->entry = slash ? cr_xstrndup(rel, (size_t)(slash - rel)) : cr_xstrdup(rel);
		d->joined = true;
		d->next = f->downloads;
		f->downloads = d;
	}
	free(url);
	free(dest);
	json_decref(d->peers); /* who has it now, from this snapshot */
	d->peers = json_incref(json_object_get(inst, "peers"));
	struct stat st;
	if (stat(d->dest, &st) == 0) { /* downloaded before */
		snprintf(d->state, sizeof(d->state), "done");
		d->bytes = d->total = (uint64_t)st.st_size;
		return;
	}
	start_download(f, d);
	f->changed = true;
}

/* The cache directory of the safetensors model whose config.json is at src. */
static char *model_dir(struct cr_files *f, const char *src)
{
	char *p = cr_fetch_cache_path(f->cache_dir, src);
	size_t n = strlen(p), t = strlen("config.json");
	if (n > t && !strcmp(p + n - t, "config.json"))
		p[n - t] = '\0';
	char *dir = cr_xasprintf("%smodel", p);
	free(p);
	return dir;
}

/* Starts the downloads f->snapshot's instances need (under f->mu): a file;
 * every part of a split GGUF, under the first part's cache name but for the
 * part number (llama.cpp finds them beside it); or a safetensors model's
 * files (its config.json's "files" from the hub) in a directory of its own. */
static void want_downloads(struct cr_files *f)
{
	size_t i, k;
	json_t *inst, *e;
	int64_t now = cr_mono_ms();
	json_array_foreach(json_object_get(f->snapshot, "instances"), i, inst) {
		const char *src = cr_json_get_str(inst, "source", NULL);
		if (!src || strncmp(src, "http", 4) != 0 || f->stopping)
			continue;
		json_t *set = json_object_get(inst, "files");
		if (cr_fetch_is_config_url(src) && json_array_size(set)) {
			char *dir = model_dir(f, src);
			json_array_foreach(set, k, e) {
				const char *name = cr_json_get_str(e, "path", "");
				char *url = cr_fetch_sibling_url(src, name);
				if (url && *name && !strchr(name, '/') && name[0] != '.' && !f->stopping)
					want_file(f, inst, src, url, cr_xasprintf("%s/%s", dir, name),
						  cr_json_get_str(e, "sha256", NULL), now);
				else
					free(url);
			}
			free(dir);
			continue;
		}
		char *first = cr_fetch_cache_path(f->cache_dir, src);
		unsigned n = parts_of(src), no, count;
		if (n > 1 && !(cr_gguf_split_name(first, &no, &count) && count == n))
			n = 1; /* a cache name that lost the part number: the first part alone */
		for (unsigned p = 1; p <= n && !f->stopping; p++) {
			const char *sha = n > 1 ? json_string_value(json_array_get(json_object_get(inst, "parts_sha256"), p - 1))
						: cr_json_get_str(inst, "sha256", NULL);
			want_file(f, inst, src, n > 1 ? cr_gguf_split_sibling(src, p) : cr_xstrdup(src),
				  n > 1 ? cr_gguf_split_sibling(first, p) : cr_xstrdup(first), sha, now);
		}
		free(first);
	}
}

void cr_files_set_instances(struct cr_files *f, json_t *snapshot)
{
	pthread_mutex_lock(&f->mu);
	json_decref(f->snapshot);
	f->snapshot = json_incref(snapshot);
	want_downloads(f);
	pthread_mutex_unlock(&f->mu);
}

void cr_files_retry(struct cr_files *f)
{
	pthread_mutex_lock(&f->mu);
	want_downloads(f);
	pthread_mutex_unlock(&f->mu);
}

/* ---- reports ---- */

static char *file_key(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return cr_xstrdup("absent");
	return cr_xasprintf("%lld:%lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* The download of source (every part of a split GGUF together):
 * {"state","bytes","total","path"?,"rate"?,"eta_s"?,"message"?}, or NULL
 * when none (under mu). One part failing makes the whole an error; it is
 * done when every part is. */
static json_t *download_state(struct cr_files *f, const char *src)
{
	unsigned want = parts_of(src), seen = 0, done = 0;
	uint64_t bytes = 0, total = 0, rate = 0;
	const char *state = NULL, *message = NULL, *path = NULL, *from = NULL;
	bool timed = false;
	for (struct download *d = f->downloads; d; d = d->next) {
		if (strcmp(d->source, src) != 0)
			continue;
		seen++;
		bytes += d->bytes;
		total += d->total;
		if (!strcmp(d->state, "done"))
			done++;
		if (!strcmp(d->url, src))
			path = d->dest;
		if (d->from[0])
			from = d->from;
		if (strcmp(d->state, "done") != 0 && !(state && !strcmp(state, "error"))) /* an error sticks */
			state = d->state;
		if (d->message && *d->message && !strcmp(d->state, "error"))
			message = d->message;
		int64_t took = d->since_ms ? cr_mono_ms() - d->since_ms : 0;
		if (!strcmp(d->state, "downloading") && took >= 500 && d->bytes >= d->since_bytes) {
			rate += (d->bytes - d->since_bytes) * 1000 / (uint64_t)took;
			timed = true;
		}
	}
	if (!seen)
		return NULL;
	if (done == seen && seen >= want)
		state = "done";
	else if (!state)
		state = "downloading";
	json_t *dl = json_pack("{s:s,s:I,s:I}", "state", state, "bytes", (json_int_t)bytes, "total", (json_int_t)total);
	if (seen > 1)
		json_object_set_new(dl, "parts", json_pack("{s:i,s:i}", "done", (int)done, "of", (int)seen));
	if (!strcmp(state, "done") && path) { /* a safetensors model: its directory */
		char *p = cr_xstrdup(path);
		if (cr_fetch_is_config_url(src))
			*strrchr(p, '/') = '\0';
		json_object_set_new(dl, "path", json_string(p));
		free(p);
	}
	if (!strcmp(state, "downloading") && timed) { /* bytes per second over this try; what is left at that rate */
		json_object_set_new(dl, "rate", json_integer((json_int_t)rate));
		if (rate && total > bytes)
			json_object_set_new(dl, "eta_s", json_integer((json_int_t)((total - bytes) / rate)));
	}
	if (message)
		json_object_set_new(dl, "message", json_string(message));
	if (from)
		json_object_set_new(dl, "from", json_string(from));
	return dl;
}

json_t *cr_files_report(struct cr_files *f)
{
	pthread_mutex_lock(&f->mu);
	json_t *sources = json_deep_copy(f->sources);
	pthread_mutex_unlock(&f->mu);
	json_t *out = json_array(), *cache = json_object();
	size_t i;
	json_t *s;
	json_array_foreach(sources, i, s) {
		const char *src = cr_json_get_str(s, "source", NULL);
		if (!src)
			continue;
		bool url = !strcmp(cr_json_get_str(s, "kind", "path"), "url");
		json_t *old = json_object_get(f->cache, src), *report;
		char *key;
		if (url && old && !json_object_get(json_object_get(old, "report"), "error"))
			key = cr_xstrdup("url");
		else if (url) /* a failed header fetch is tried again every 30 s */
			key = cr_xasprintf("url@%lld", (long long)(cr_mono_ms() / 30000));
		else
			key = file_key(src);
		if (old && !strcmp(cr_json_get_str(old, "key", ""), key)) {
			report = json_incref(json_object_get(old, "report"));
		} else {
			report = url ? cr_fetch_report(src) : cr_modelfile_report(src);
			json_object_del(report, "path");
			json_object_set_new(report, "source", json_string(src));
		}
		json_object_set_new(cache, src, json_pack("{s:s,s:O}", "key", key, "report", report));
		free(key);
		json_t *entry = json_deep_copy(report);
		json_decref(report);
		pthread_mutex_lock(&f->mu);
		json_t *dl = download_state(f, src);
		if (dl)
			json_object_set_new(entry, "download", dl);
		pthread_mutex_unlock(&f->mu);
		json_array_append_new(out, entry);
	}
	json_decref(f->cache);
	f->cache = cache;
	json_decref(sources);
	return json_pack("{s:o,s:o}", "files", out, "cache", cr_files_cache(f));
}

uint64_t cr_files_largest_download(struct cr_files *f)
{
	uint64_t most = 0;
	pthread_mutex_lock(&f->mu);
	for (struct download *d = f->downloads; d; d = d->next) { /* per source: a split GGUF's parts together */
		uint64_t left = 0;
		for (struct download *e = f->downloads; e; e = e->next)
			if (!strcmp(e->source, d->source) && strcmp(e->state, "done") != 0 && e->total > e->bytes)
				left += e->total - e->bytes;
		most = left > most ? left : most;
	}
	pthread_mutex_unlock(&f->mu);
	return most;
}

char *cr_files_local_path(struct cr_files *f, const char *url)
{
	char *path = NULL;
	pthread_mutex_lock(&f->mu);
	json_t *dl = download_state(f, url);
	if (dl && !strcmp(cr_json_get_str(dl, "state", ""), "done") && cr_json_get_str(dl, "path", NULL))
		path = cr_xstrdup(cr_json_get_str(dl, "path", NULL));
	json_decref(dl);
	for (struct download *d = f->downloads; path && d; d = d->next)
		if (!strcmp(d->source, url))
			index_mark(f, d->entry, url); /* an engine starts with it now */
	if (path)
		index_save(f); /* once for every part */
	pthread_mutex_unlock(&f->mu);
	return path;
}

/* The bytes of the regular files in dir (one level); *partial when one is
 * still a ".part". */
static uint64_t dir_bytes(const char *dir, bool *partial)
{
	uint64_t total = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char *p = cr_xasprintf("%s/%s", dir, e->d_name);
		struct stat st;
		size_t n = strlen(e->d_name);
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
			total += (uint64_t)st.st_size;
			*partial |= n > 5 && !strcmp(e->d_name + n - 5, ".part");
		}
		free(p);
	}
	if (d)
		closedir(d);
	return total;
}

/* Remove path: a file, or a directory of files (one level). */
static bool remove_path(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return false;
	if (!S_ISDIR(st.st_mode))
		return unlink(path) == 0;
	DIR *d = opendir(path);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char *p = cr_xasprintf("%s/%s", path, e->d_name);
		unlink(p);
		free(p);
	}
	if (d)
		closedir(d);
	return rmdir(path) == 0;
}

json_t *cr_files_cache(struct cr_files *f)
{
	json_t *out = json_array();
	DIR *dir = opendir(f->cache_dir);
	if (!dir)
		return out;
	pthread_mutex_lock(&f->mu);
	struct dirent *e;
	while ((e = readdir(dir))) {
		if (!cache_file(e->d_name))
			continue;
		char *path = cr_xasprintf("%s/%s", f->cache_dir, e->d_name);
		struct stat st;
		bool partial = false;
		if (stat(path, &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
			if (S_ISDIR(st.st_mode)) /* a safetensors model's directory */
				st.st_size = (off_t)dir_bytes(path, &partial);
			size_t n = strlen(e->d_name);
			partial |= n > 5 && !strcmp(e->d_name + n - 5, ".part");
			char base[256];
			snprintf(base, sizeof(base), "%.*s", (int)(partial ? n - 5 : n), e->d_name);
			json_t *ix = json_object_get(f->index, base);
			const char *source = cr_json_get_str(ix, "source", "");
			int64_t used = ix ? cr_json_get_int(ix, "last_used_ms", 0) : (int64_t)st.st_mtim.tv_sec * 1000;
			char when[40];
			cr_time_format(used, when, sizeof(when));
			json_array_append_new(out, json_pack("{s:s,s:I,s:s,s:s,s:b,s:b}", "file", e->d_name, "size",
							     (json_int_t)st.st_size, "source", source, "last_used", when,
							     "partial", partial, "in_use", in_use(f, source)));
		}
		free(path);
	}
	pthread_mutex_unlock(&f->mu);
	closedir(dir);
	return out;
}

/* Remove one cache file (and its index entry) unless in use; under mu. */
static bool remove_file(struct cr_files *f, const char *name, uint64_t *freed)
{
	size_t n = strlen(name);
	char base[256];
	snprintf(base, sizeof(base), "%.*s", (int)(n > 5 && !strcmp(name + n - 5, ".part") ? n - 5 : n), name);
	json_t *ix = json_object_get(f->index, base);
	if (!cache_file(name) || strchr(name, '/') || in_use(f, cr_json_get_str(ix, "source", NULL)))
		return false;
	char *path = cr_xasprintf("%s/%s", f->cache_dir, name);
	struct stat st;
	bool partial = false;
	bool ok = stat(path, &st) == 0;
	if (ok && S_ISDIR(st.st_mode))
		st.st_size = (off_t)dir_bytes(path, &partial);
	ok = ok && remove_path(path);
	if (ok) {
		if (freed)
			*freed += (uint64_t)st.st_size;
		cr_info("cache: removed %s (%lld bytes, %s)", name, (long long)st.st_size,
			cr_json_get_str(ix, "source", "source unknown"));
		for (struct download *d = f->downloads; d; d = d->next) /* fetched again when needed */
			if (!strcmp(d->entry, base) && !d->running)
				snprintf(d->state, sizeof(d->state), "removed");
		json_object_del(f->index, base);
		f->changed = true;
	}
	free(path);
	return ok;
}

int cr_files_remove(struct cr_files *f, json_t *names)
{
	int n = 0;
	json_t *all = NULL;
	if (!names) { /* every file no instance here uses */
		all = cr_files_cache(f);
		names = json_array();
		size_t i;
		json_t *e;
		json_array_foreach(all, i, e)
			if (!json_is_true(json_object_get(e, "in_use")))
				json_array_append(names, json_object_get(e, "file"));
	} else {
		json_incref(names);
	}
	pthread_mutex_lock(&f->mu);
	size_t i;
	json_t *v;
	json_array_foreach(names, i, v)
		if (json_is_string(v))
			n += remove_file(f, json_string_value(v), NULL);
	index_save(f);
	pthread_mutex_unlock(&f->mu);
	json_decref(names);
	json_decref(all);
	return n;
}

void cr_files_set_cache_max(struct cr_files *f, uint64_t bytes)
{
	pthread_mutex_lock(&f->mu);
	f->cache_max = bytes;
	pthread_mutex_unlock(&f->mu);
}

static int by_last_use(const void *a, const void *b)
{
	json_int_t x = cr_json_get_int(*(json_t *const *)a, "at", 0), y = cr_json_get_int(*(json_t *const *)b, "at", 0);
	return x < y ? -1 : x > y;
}

void cr_files_evict(struct cr_files *f)
{
	pthread_mutex_lock(&f->mu);
	uint64_t max = f->cache_max;
	pthread_mutex_unlock(&f->mu);
	if (!max)
		return;
	json_t *all = cr_files_cache(f);
	uint64_t total = 0;
	size_t i, n = 0;
	json_t *e;
	json_t **lru = cr_xcalloc(json_array_size(all) + 1, sizeof(*lru));
	pthread_mutex_lock(&f->mu);
	json_array_foreach(all, i, e) {
		total += (uint64_t)cr_json_get_int(e, "size", 0);
		if (json_is_true(json_object_get(e, "in_use")) || json_is_true(json_object_get(e, "partial")))
			continue;
		json_t *ix = json_object_get(f->index, cr_json_get_str(e, "file", ""));
		json_object_set_new(e, "at", json_integer(cr_json_get_int(ix, "last_used_ms", 0)));
		lru[n++] = e;
	}
	qsort(lru, n, sizeof(*lru), by_last_use);
	for (i = 0; i < n && total > max; i++) {
		uint64_t freed = 0;
		if (remove_file(f, cr_json_get_str(lru[i], "file", ""), &freed)) {
			cr_info("cache: over --cache-max (%llu bytes): evicted the least recently used %s",
				(unsigned long long)max, cr_json_get_str(lru[i], "file", ""));
			total -= freed;
		}
	}
	index_save(f);
	pthread_mutex_unlock(&f->mu);
	free(lru);
	json_decref(all);
}

int cr_files_open_cached(struct cr_files *f, const char *entry, const char *file, char **source, int *fd,
			 uint64_t *size)
{
	if (!cache_file(entry) || strchr(entry, '/') || (file && (!cache_file(file) || strchr(file, '/'))))
		return -ENOENT;
	size_t n = strlen(file ? file : entry);
	if (n > 5 && !strcmp((file ? file : entry) + n - 5, ".part"))
		return -ENOENT;
	pthread_mutex_lock(&f->mu);
	const char *src = cr_json_get_str(json_object_get(f->index, entry), "source", NULL);
	*source = src ? cr_xstrdup(src) : NULL;
	pthread_mutex_unlock(&f->mu);
	if (!*source)
		return -ENOENT;
	char *path = file ? cr_xasprintf("%s/%s/%s", f->cache_dir, entry, file) : cr_xasprintf("%s/%s", f->cache_dir, entry);
	struct stat st;
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (*fd < 0 || fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		if (*fd >= 0)
			close(*fd);
		free(*source);
		*source = NULL;
		return -ENOENT;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}
