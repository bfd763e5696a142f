/* Model hubs, see hub.h. */
#include "http/hub.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
#include "base/mem.h"

static const struct {
	const char *kind, *endpoint_env, *endpoint, *token_env, *name, *default_rev;
} hubs[] = {
	{ "hf", "HF_ENDPOINT", "https://huggingface.co", "HF_TOKEN", "Hugging Face", "main" },
	{ "ms", "MODELSCOPE_ENDPOINT", "https://modelscope.cn", "MODELSCOPE_API_TOKEN", "ModelScope", "master" },
};

static int hub_of(const char *kind)
{
	return kind && !strcmp(kind, "ms") ? 1 : 0;
}

char *cr_hub_endpoint(const char *kind)
{
	int h = hub_of(kind);
	const char *e = getenv(hubs[h].endpoint_env);
	char *out = cr_xstrdup(e && *e ? e : hubs[h].endpoint);
	size_t n = strlen(out);
	while (n && out[n - 1] == '/')
		out[--n] = '\0';
	return out;
}

static bool repo_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.';
}

int cr_hub_parse(const char *kind, const char *text, struct cr_hub_ref *out, struct cr_err *err)
{
	memset(out, 0, sizeof(*out));
	int h = hub_of(kind);
	snprintf(out->kind, sizeof(out->kind), "%s", hubs[h].kind);
	const char *at = strchr(text, '@'), *colon = strchr(text, ':');
	if (colon && at && colon > at)
		colon = NULL;
	size_t rl = colon ? (size_t)(colon - text) : at ? (size_t)(at - text) : strlen(text);
	const char *slash = memchr(text, '/', rl);
	bool ok = slash && slash > text && (size_t)(slash - text) < rl - 1 && rl < sizeof(out->repo);
	for (size_t i = 0; ok && i < rl; i++)
		ok = text[i] == '/' ? text + i == slash : repo_char(text[i]);
	if (ok && colon) {
		size_t ql = at ? (size_t)(at - colon - 1) : strlen(colon + 1);
		ok = ql > 0 && ql < sizeof(out->quant);
		for (size_t i = 0; ok && i < ql; i++)
			ok = isalnum((unsigned char)colon[1 + i]) || colon[1 + i] == '_' || colon[1 + i] == '-';
		if (ok)
			snprintf(out->quant, sizeof(out->quant), "%.*s", (int)ql, colon + 1);
	}
	if (ok && at) {
		ok = at[1] && strlen(at + 1) < sizeof(out->revision);
		for (const char *p = at + 1; ok && *p; p++)
			ok = repo_char(*p) || *p == '/';
		if (ok)
			snprintf(out->revision, sizeof(out->revision), "%s", at + 1);
	}
	if (!ok)
		return cr_err_set(err, CR_EINPUT, "write OWNER/REPO, optionally with :QUANT and @REVISION, e.g. "
						  "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
				  "'%s' is not a %s repository reference", text, hubs[h].name);
	snprintf(out->repo, sizeof(out->repo), "%.*s", (int)rl, text);
	if (!out->revision[0])
		snprintf(out->revision, sizeof(out->revision), "%s", hubs[h].default_rev);
	return 0;
}

struct curl_slist *cr_hub_auth(struct curl_slist *list, const char *url)
{
	for (size_t h = 0; h < sizeof(hubs) / sizeof(hubs[0]); h++) {
		const char *token = getenv(hubs[h].token_env);
		if (!token || !*token)
			continue;
		char *ep = cr_hub_endpoint(hubs[h].kind);
		size_t n = strlen(ep);
		bool same = !strncmp(url, ep, n) && (url[n] == '/' || url[n] == '?' || !url[n]);
		free(ep);
		if (same) {
			char *line = cr_xasprintf("Authorization: Bearer %s", token);
			list = curl_slist_append(list, line);
			memset(line, 0, strlen(line));
			free(line);
			return list;
		}
	}
	return list;
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	return cr_buf_add(arg, p, size * n) == 0 ? size * n : 0;
}

/* GET url (with the hub's token when it is the hub's): status and body. */
static int get_json(const char *url, long *status, json_t **out, struct cr_err *err)
{
	CURL *c = curl_easy_init();
	if (!c)
		abort();
	struct cr_buf b = CR_BUF_INIT(64u << 20);
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *h = cr_hub_auth(NULL, url);
	h = curl_slist_append(h, "Accept: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L); /* curl drops Authorization on another host */
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	CURLcode rc = curl_easy_perform(c);
	*status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	*out = NULL;
	int ret = 0;
	if (rc != CURLE_OK)
		ret = cr_err_set(err, CR_EUPSTREAM, NULL, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
	else if (*status == 200 && !(*out = json_loadb(b.data ? b.data : "", b.len, 0, NULL)))
		ret = cr_err_set(err, CR_EUPSTREAM, NULL, "%s", "the answer is not JSON");
	cr_buf_release(&b);
	return ret;
}

static char *escape_path(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0), *out = cr_xstrdup(e ? e : "");
	curl_free(e);
	return out;
}

char *cr_hub_file_url(const struct cr_hub_ref *ref, const char *commit, const char *path)
{
	char *ep = cr_hub_endpoint(ref->kind), *url;
	if (hub_of(ref->kind)) {
		char *p = escape_path(path), *r = escape_path(commit);
		url = cr_xasprintf("%s/api/v1/models/%s/repo?Revision=%s&FilePath=%s", ep, ref->repo, r, p);
		free(p);
		free(r);
	} else {
		url = cr_xasprintf("%s/%s/resolve/%s/%s", ep, ref->repo, commit, path);
	}
	free(ep);
	return url;
}

int cr_hub_list(const struct cr_hub_ref *ref, json_t **files, char **commit, struct cr_err *err)
{
	*files = NULL;
	*commit = NULL;
	int h = hub_of(ref->kind);
	char *ep = cr_hub_endpoint(ref->kind), *url;
	char *rev = escape_path(ref->revision);
	if (h)
		url = cr_xasprintf("%s/api/v1/models/%s/repo/files?Revision=%s&Recursive=true", ep, ref->repo, rev);
	else
		url = cr_xasprintf("%s/api/models/%s/revision/%s?blobs=true", ep, ref->repo, rev);
	free(rev);
	long status;
	json_t *j = NULL;
	int rc = get_json(url, &status, &j, err);
	if (rc) {
		char msg[600];
		snprintf(msg, sizeof(msg), "%s", err->message);
		rc = cr_err_set(err, CR_EUPSTREAM, NULL, "cannot reach %s at %s: %s", hubs[h].name, ep, msg);
		snprintf(err->fix, sizeof(err->fix), "check the network of the server, or set %s to a mirror (and the same "
			 "on the workers)", hubs[h].endpoint_env);
	} else if (status == 401 || status == 403) {
		rc = cr_err_set(err, CR_EFORBID, NULL, "%s repository '%s' is gated or private (HTTP %ld)", hubs[h].name,
				ref->repo, status);
		snprintf(err->fix, sizeof(err->fix), "set %s on the server and the workers to a token of an account that "
			 "may read it (and has accepted its license on %s)", hubs[h].token_env, ep);
	} else if (status == 404) {
		rc = cr_err_set(err, CR_ENOTFOUND, "check the repository's name and revision (it is case-sensitive)",
				"%s has no repository '%s' at revision '%s'", hubs[h].name, ref->repo, ref->revision);
	} else if (status != 200) {
		rc = cr_err_set(err, CR_EUPSTREAM, "try again later", "%s answered HTTP %ld for '%s'", hubs[h].name, status,
				ref->repo);
	} else {
		json_t *list = json_array(), *arr;
		size_t i;
		json_t *f;
		if (h) { /* {"Code":200,"Data":{"Files":[{"Path","Size","Sha256","Type":"blob"}]}} */
			arr = json_object_get(json_object_get(j, "Data"), "Files");
			json_array_foreach(arr, i, f) {
				if (strcmp(cr_json_get_str(f, "Type", "blob"), "blob") != 0)
					continue;
				json_t *o = json_pack("{s:s,s:I}", "path", cr_json_get_str(f, "Path", ""), "size",
						      cr_json_get_int(f, "Size", 0));
				const char *sha = cr_json_get_str(f, "Sha256", NULL);
				if (sha && strlen(sha) == 64)
					json_object_set_new(o, "sha256", json_string(sha));
				json_array_append_new(list, o);
			}
			*commit = cr_xstrdup(ref->revision);
		} else { /* {"sha", "siblings":[{"rfilename","size","lfs":{"sha256","size"}}]} */
			arr = json_object_get(j, "siblings");
			json_array_foreach(arr, i, f) {
				json_t *lfs = json_object_get(f, "lfs");
				json_int_t size = cr_json_get_int(f, "size", cr_json_get_int(lfs, "size", 0));
				json_t *o = json_pack("{s:s,s:I}", "path", cr_json_get_str(f, "rfilename", ""), "size", size);
				const char *sha = cr_json_get_str(lfs, "sha256", NULL);
				if (sha && strlen(sha) == 64)
					json_object_set_new(o, "sha256", json_string(sha));
				json_array_append_new(list, o);
			}
			*commit = cr_xstrdup(cr_json_get_str(j, "sha", ref->revision));
		}
		*files = list;
	}
	json_decref(j);
	free(url);
	free(ep);
	return rc;
}
