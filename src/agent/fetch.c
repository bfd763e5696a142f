/* Downloads with libcurl: range requests for headers, resumable files. */
#include "agent/fetch.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/mem.h"
#include "base/secret.h"
#include "http/hub.h"
#include "sched/gguf.h"

/* An easy handle for url with what every transfer here shares: redirects
 * followed, HTTP errors as failures, connect timeout, no signals. */
static CURL *easy_new(const char *url, char *errbuf)
{
	CURL *c = curl_easy_init();
	if (!c)
		abort();
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	/* a hub's token goes to that hub only: curl drops it when a redirect
	 * leads to another host (its CDN) */
	struct curl_slist *h = cr_hub_auth(NULL, url);
	if (h) {
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(c, CURLOPT_PRIVATE, h);
	}
	errbuf[0] = '\0';
	return c;
}

/* Perform and free the handle; *status gets the HTTP status. */
static CURLcode perform(CURL *c, long *status)
{
	CURLcode cc = curl_easy_perform(c);
	*status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	struct curl_slist *h = NULL;
	curl_easy_getinfo(c, CURLINFO_PRIVATE, (char **)&h);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	return cc;
}

struct range {
	uint8_t *buf;
	size_t len, want;
	uint64_t total; /* from Content-Range or Content-Length */
	size_t skip;    /* bytes of a 200 answer (a server that ignored the range) we have already */
	size_t from;    /* where this request's range starts */
};

static size_t range_write(char *p, size_t size, size_t n, void *arg)
{
	struct range *r = arg;
	size_t bytes = size * n, take = bytes;
	if (r->skip) { /* the whole file from its start: drop what we have */
		size_t drop = r->skip < bytes ? r->skip : bytes;
		r->skip -= drop;
		p += drop;
		take = bytes - drop;
		if (!take)
			return bytes;
	}
	if (r->len + take > r->want)
		take = r->want - r->len;
	memcpy(r->buf + r->len, p, take);
	r->len += take;
	return r->len >= r->want ? 0 : bytes; /* 0 stops a server that ignored the range */
}

static size_t range_header(char *p, size_t size, size_t n, void *arg)
{
	struct range *r = arg;
	size_t len = size * n;
	unsigned long long a, b, t;
	char line[256];
	snprintf(line, sizeof(line), "%.*s", (int)(len < 255 ? len : 255), p);
	int code;
	if (!strncmp(line, "HTTP/", 5) && sscanf(line, "HTTP/%*s %d", &code) == 1)
		r->skip = code == 200 ? r->from : 0; /* the range was ignored */
	if (strncasecmp(line, "content-range:", 14) == 0 && sscanf(line + 14, " bytes %llu-%llu/%llu", &a, &b, &t) == 3)
		r->total = t;
	else if (strncasecmp(line, "content-length:", 15) == 0 && !r->total && sscanf(line + 15, " %llu", &t) == 1)
		r->total = t; /* a 200 answer: the whole file's length */
	return len;
}

static int get_range(const char *url, size_t want, struct range *r, struct cr_err *err)
{
	char range[64], errbuf[CURL_ERROR_SIZE];
	CURL *c = easy_new(url, errbuf);
	/* what is still missing only: the bytes read so far are kept */
	r->buf = cr_xrealloc(r->buf, want);
	r->from = r->len;
	r->want = want;
	r->total = 0;
	snprintf(range, sizeof(range), "%zu-%zu", r->from, want - 1);
	curl_easy_setopt(c, CURLOPT_RANGE, range);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, range_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, range_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 120000L);
	long status;
	CURLcode cc = perform(c, &status);
	if (status >= 400) /* the server's own answer: what it said, plainly */
		return cr_err_set(err, status == 404 || status == 410 ? CR_ENOTFOUND : CR_EUPSTREAM,
				  status == 401 || status == 403 ? "the server wants credentials the worker does not send: for "
								   "a hub repository set HF_TOKEN (or MODELSCOPE_API_TOKEN) on "
								   "this worker, with access to the repository; else use a URL "
								   "the workers may read"
								 : "check the URL",
				  "GET %s: HTTP %ld", url, status);
	if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && r->len == want))
		return cr_err_set(err, CR_EUPSTREAM, "check the URL and that the worker can reach it", "GET %s failed: %s",
				  url, errbuf[0] ? errbuf : curl_easy_strerror(cc));
	if (status == 206 && !r->total)
		return cr_err_set(err, CR_EUPSTREAM, "serve the file with a standard HTTP server",
				  "GET %s: partial answer without a total size", url);
	if (!r->total)
		r->total = r->len;
	return 0;
}

/* A cr_gguf_reader for URLs: a growing prefix through range requests. */
static int read_gguf(const char *url, struct cr_gguf **g, uint64_t *size, void *arg, struct cr_err *err)
{
	(void)arg;
	struct range r = { 0 };
	size_t want = 1u << 20;
	int rc;
	for (;;) {
		rc = get_range(url, want, &r, err);
		if (rc)
			break;
		uint64_t need = 0;
		rc = cr_gguf_parse(r.buf, r.len, r.total, g, &need, err);
		if (rc != -EAGAIN)
			break;
		if (need > 256u << 20 || r.len < want) {
			rc = cr_err_set(err, CR_EINPUT, "check that the URL points at a GGUF model file",
					"%s: GGUF header not complete within %zu bytes", url, r.len);
			break;
		}
		/* half as much again each time: only the missing bytes are asked
		 * for, so what is read stays close to the header's size */
		uint64_t more = (uint64_t)want + want / 2;
		want = (size_t)(need > more ? need : more);
	}
	free(r.buf);
	*size = r.total;
	return rc;
}

int cr_fetch_header(const char *url, struct cr_model_shape *shape, uint64_t *size, struct cr_err *err)
{
	int rc = cr_shape_from_gguf_source(url, read_gguf, NULL, shape, err);
	*size = rc ? 0 : shape->file_bytes;
	return rc;
}

/* Where url's file name starts: after its last '/', or after the last '='
 * when that comes later (ModelScope's URLs end in FilePath=NAME); NULL when
 * it has neither. */
static const char *name_start(const char *url)
{
	const char *slash = strrchr(url, '/'), *eq = strrchr(url, '=');
	const char *cut = eq && (!slash || eq > slash) ? eq : slash;
	return cut ? cut + 1 : NULL;
}

char *cr_fetch_sibling_url(const char *url, const char *name)
{
	const char *start = name_start(url);
	if (!start)
		return NULL;
	return cr_xasprintf("%.*s%s", (int)(start - url), url, name);
}

bool cr_fetch_is_config_url(const char *url)
{
	size_t n = strlen(url), t = strlen("config.json");
	return n > t && !strcmp(url + n - t, "config.json") && (url[n - t - 1] == '/' || url[n - t - 1] == '=');
}

/* A small file at url, whole, as JSON. */
static json_t *get_json(const char *url, size_t max, struct cr_err *err)
{
	struct range r = { 0 };
	json_t *j = NULL;
	if (get_range(url, max, &r, err) == 0) {
		json_error_t je;
		j = r.len < max ? json_loadb((const char *)r.buf, r.len, 0, &je) : NULL;
		if (!json_is_object(j)) {
			json_decref(j);
			j = NULL;
			cr_err_set(err, CR_EINPUT, "re-publish the file", "%s: %s", url,
				   r.len >= max ? "too large" : "not a JSON object");
		}
	}
	free(r.buf);
	return j;
}

/* A safetensors model at url (its config.json): the shape from config.json
 * and the weights' bytes from model.safetensors.index.json (metadata
 * total_size) or, with no index, the one model.safetensors's size less its
 * header (two small range reads). */
static int safetensors_shape(const char *url, struct cr_model_shape *shape, struct cr_err *err)
{
	json_t *cfg = get_json(url, 4u << 20, err);
	if (!cfg)
		return err && err->code ? err->code : CR_EINPUT;
	uint64_t bytes = 0;
	char *index_url = cr_fetch_sibling_url(url, "model.safetensors.index.json");
	struct cr_err ierr = CR_ERR_INIT;
	json_t *index = get_json(index_url, 64u << 20, &ierr);
	int rc = 0;
	if (index) {
		json_t *ts = json_object_get(json_object_get(index, "metadata"), "total_size");
		bytes = json_is_integer(ts) && json_integer_value(ts) > 0 ? (uint64_t)json_integer_value(ts) : 0;
		if (!bytes)
			rc = cr_err_set(err, CR_EINPUT, "re-publish the model with its index", "%s has no metadata.total_size",
					index_url);
	} else if (ierr.code == CR_ENOTFOUND) { /* one file: its size less its header */
		char *one = cr_fetch_sibling_url(url, "model.safetensors");
		struct range r = { 0 };
		rc = get_range(one, 8, &r, err);
		if (!rc && r.len == 8) {
			uint64_t hlen = 0;
			for (int i = 0; i < 8; i++)
				hlen |= (uint64_t)r.buf[i] << (8 * i);
			if (hlen + 8 > r.total)
				rc = cr_err_set(err, CR_EINPUT, "re-publish the model", "%s: header length past the end", one);
			else
				bytes = r.total - 8 - hlen;
		} else if (!rc) {
			rc = cr_err_set(err, CR_EINPUT, "re-publish the model", "%s is shorter than a header", one);
		}
		free(r.buf);
		free(one);
	} else {
		rc = cr_err_set(err, ierr.code, ierr.fix, "%s", ierr.message);
	}
	if (!rc)
		rc = cr_shape_from_config(cfg, bytes, shape, err);
	json_decref(index);
	json_decref(cfg);
	free(index_url);
	return rc;
}

int cr_fetch_inspect(const char *url, struct cr_model_shape *shape, struct cr_err *err)
{
	uint64_t size;
	return cr_fetch_is_config_url(url) ? safetensors_shape(url, shape, err) : cr_fetch_header(url, shape, &size, err);
}

json_t *cr_fetch_report(const char *url)
{
	struct cr_model_shape shape = CR_MODEL_SHAPE_INIT;
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_fetch_inspect(url, &shape, &err);
	uint64_t size = rc ? 0 : shape.file_bytes;
	json_t *j = json_pack("{s:s,s:b}", "path", url, "exists", rc == 0 || rc == CR_EINPUT);
	if (rc == 0) {
		json_object_set_new(j, "size", json_integer((json_int_t)size));
		json_object_set_new(j, "format", json_string(shape.format));
		json_object_set_new(j, "shape", cr_shape_to_json(&shape));
	} else {
		json_object_set_new(j, "error", json_pack("{s:s,s:s}", "message", err.message, "fix", err.fix));
	}
	cr_shape_release(&shape);
	return j;
}

struct dl {
	FILE *f;
	uint64_t have, total;
	cr_fetch_progress_cb progress;
	void *arg;
	int64_t last_cb;
	int stopped;
};

static size_t dl_write(char *p, size_t size, size_t n, void *arg)
{
	struct dl *d = arg;
	size_t bytes = size * n;
	if (fwrite(p, 1, bytes, d->f) != bytes)
		return 0;
	d->have += bytes;
	return bytes;
}

static int dl_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ult, curl_off_t uln)
{
	(void)dlnow;
	(void)ult;
	(void)uln;
	struct dl *d = arg;
	if (dltotal > 0 && !d->total)
		d->total = d->have + (uint64_t)dltotal - (uint64_t)dlnow;
	if (d->progress && d->progress(d->have, d->total, d->arg)) {
		d->stopped = 1;
		return 1;
	}
	return 0;
}

static int hash_file(const char *path, char hex[65], struct cr_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return cr_err_set(err, -errno, "check the model cache", "open('%s') failed: %s", path, strerror(errno));
	crypto_hash_sha256_state st;
	crypto_hash_sha256_init(&st);
	unsigned char buf[1 << 16], out[crypto_hash_sha256_BYTES];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		crypto_hash_sha256_update(&st, buf, n);
	fclose(f);
	crypto_hash_sha256_final(&st, out);
	sodium_bin2hex(hex, 65, out, sizeof(out));
	return 0;
}

int cr_fetch_download(const char *url, const char *bearer, const char *dest, const char *sha256,
		      cr_fetch_progress_cb progress, void *arg, struct cr_err *err)
{
	char *part = cr_xasprintf("%s.part", dest);
	struct stat st;
	struct dl d = { .progress = progress, .arg = arg };
	d.have = stat(part, &st) == 0 ? (uint64_t)st.st_size : 0;
	uint64_t resumed_from = d.have;
	d.f = fopen(part, "ab");
	int rc = 0;
	if (!d.f) {
		rc = cr_err_set(err, -errno, "check that the worker's data directory is writable", "open('%s') failed: %s",
				part, strerror(errno));
		goto out;
	}
	char errbuf[CURL_ERROR_SIZE];
	CURL *c = easy_new(url, errbuf);
	struct curl_slist *h = NULL;
	if (bearer) { /* a peer worker's ticket: sent to that peer only, never after a redirect */
		char *line = cr_xasprintf("Authorization: Bearer %s", bearer);
		curl_easy_getinfo(c, CURLINFO_PRIVATE, (char **)&h);
		h = curl_slist_append(h, line);
		free(line);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(c, CURLOPT_PRIVATE, h);
		curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	}
	curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)d.have);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dl_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, dl_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, &d);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	long status;
	CURLcode cc = perform(c, &status);
	if (fclose(d.f) != 0 && cc == CURLE_OK)
		cc = CURLE_WRITE_ERROR;
	if (cc == CURLE_RANGE_ERROR || status == 416) { /* the part is already whole */
		cc = CURLE_OK;
	} else if (cc == CURLE_OK && resumed_from && status == 200) {
		/* the server ignored the range and sent everything after the part */
		unlink(part);
		free(part);
		return cr_fetch_download(url, bearer, dest, sha256, progress, arg, err);
	}
	if (cc != CURLE_OK) {
		rc = cr_err_set(err, d.stopped ? -ECANCELED : CR_EUPSTREAM,
				"check the URL and the worker's network; the download resumes where it stopped",
				"download of %s stopped after %llu bytes: %s", url, (unsigned long long)d.have,
				d.stopped ? "cancelled" : errbuf[0] ? errbuf : curl_easy_strerror(cc));
		goto out;
	}
	if (sha256 && *sha256) {
		char hex[65];
		rc = hash_file(part, hex, err);
		if (!rc && strcasecmp(hex, sha256) != 0) {
			unlink(part);
			rc = cr_err_set(err, CR_EINPUT, "check the sha256 given with the model, or the file at the URL",
					"%s: SHA-256 is %s, expected %s; the download was discarded", url, hex, sha256);
		}
		if (rc)
			goto out;
	}
	if (rename(part, dest) != 0)
		rc = cr_err_set(err, -errno, "check the model cache directory", "rename('%s') failed: %s", part,
				strerror(errno));
	if (!rc && progress)
		progress(d.have, d.have, arg);
out:
	free(part);
	return rc;
}

char *cr_fetch_cache_path(const char *dir, const char *url)
{
	char hash[CR_HASH_HEX];
	cr_secret_hash(url, hash);
	const char *base = name_start(url);
	base = base && *base ? base : "model";
	char clean[96];
	size_t n = 0;
	for (const char *p = base; *p && *p != '?' && *p != '#' && n + 1 < sizeof(clean); p++)
		clean[n++] = (char)((*p == '.' || *p == '-' || *p == '_' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
				     (*p >= 'A' && *p <= 'Z'))
					    ? *p
					    : '_');
	clean[n] = '\0';
	return cr_xasprintf("%s/%.16s-%s", dir, hash, clean);
}
