/* Model hubs: Hugging Face ("hf") and ModelScope ("ms"). Their endpoints come
 * from HF_ENDPOINT (https://huggingface.co) and MODELSCOPE_ENDPOINT
 * (https://modelscope.cn), their tokens from HF_TOKEN and
 * MODELSCOPE_API_TOKEN, as huggingface_hub and modelscope take them. A token
 * goes only to its hub's own origin, never to a host a redirect leads to. */
#ifndef CR_HTTP_HUB_H
#define CR_HTTP_HUB_H

#include <jansson.h>

struct cr_err;
struct curl_slist;

/* A parsed reference: "OWNER/REPO[:QUANT][@REVISION]". */
struct cr_hub_ref {
	char kind[3];       /* "hf" or "ms" */
	char repo[200];     /* OWNER/REPO */
	char quant[48];     /* "" when none */
	char revision[128]; /* "main" (hf) or "master" (ms) when none */
};

/* Parse text for hub kind ("hf" or "ms"). CR_EINPUT says what is wrong. */
int cr_hub_parse(const char *kind, const char *text, struct cr_hub_ref *out, struct cr_err *err);

/* The hub's endpoint without a trailing slash (caller frees). */
char *cr_hub_endpoint(const char *kind);

/* "Authorization: Bearer TOKEN" appended to list when url is on the origin
 * of a hub whose token is set; the list (possibly NULL) is returned. */
struct curl_slist *cr_hub_auth(struct curl_slist *list, const char *url);

/* List the repository's files (blocking; for a worker thread): *files gets
 * [{"path", "size", "sha256"?}], *commit the revision's commit (or the
 * revision asked for when the hub gives none). Errors name the cause and the
 * fix: 401/403 (gated or private: the token), 404, the hub unreachable. */
int cr_hub_list(const struct cr_hub_ref *ref, json_t **files, char **commit, struct cr_err *err);

/* The download URL of path at commit (caller frees). */
char *cr_hub_file_url(const struct cr_hub_ref *ref, const char *commit, const char *path);

#endif
