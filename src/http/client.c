/* libcurl glue, see client.h. */
#include "http/client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
#include "base/mem.h"
#include "base/util.h"
#include "http/tls.h"

#define RESP_CAP (64u << 20)

static char *ca_file; /* set before threads start; NULL: the system's CAs */

void cr_http_client_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

void cr_http_client_set_ca(const char *pem_file)
{
	free(ca_file);
	ca_file = pem_file ? cr_xstrdup(pem_file) : NULL;
}

static void use_ca(CURL *c)
{
	if (ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
}

/* A transfer that failed: its message, and for a certificate the server
 * could not prove, how to make it trusted. */
static int transfer_failed(CURLcode rc, const char *what, const char *url, const char *errbuf, const char *fix,
			   struct cr_err *err)
{
	bool cert = rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
		    rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_CONNECT_ERROR;
	return cr_err_set(err, CR_EUPSTREAM,
			  cert ? "the server's certificate was not accepted, so nothing was sent: trust its CA with --ca-hash "
				 "(from the join command the server prints) or --cacert FILE (CORRAL_CACERT), and reach it by a "
				 "name or address its certificate carries"
			       : fix,
			  "%s %s failed: %s", what, url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	struct cr_buf *b = arg;
	return cr_buf_add(b, p, size * n) == 0 ? size * n : 0;
}

static struct curl_slist *headers_for(const char *bearer, bool json)
{
	struct curl_slist *h = NULL;
	if (bearer) {
		char *line = cr_xasprintf("Authorization: Bearer %s", bearer);
		h = curl_slist_append(h, line);
		free(line);
	}
	if (json)
		h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Expect:");
	return h;
}

char **cr_http_addresses(const char *url, int *n)
{
	*n = 0;
	CURLU *u = curl_url();
	char *host = NULL;
	if (!u)
		abort();
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK || curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		curl_url_cleanup(u);
		return NULL;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
	char **out = NULL;
	if (host[0] != '[' && getaddrinfo(host, NULL, &hints, &res) == 0) {
		int count = 0, v4 = 0;
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			count++;
			v4 += ai->ai_family == AF_INET;
		}
		/* the servers are the addresses of one family: IPv4 when it has
		 * several, else IPv6 (one of each is one server on both stacks) */
		int family = v4 > 1 ? AF_INET : AF_INET6;
		out = cr_xcalloc((size_t)count + 1, sizeof(*out));
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			char addr[INET6_ADDRSTRLEN] = "";
			const void *in = ai->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
								   : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
			if (ai->ai_family != family || !inet_ntop(ai->ai_family, in, addr, sizeof(addr)))
				continue;
			/* any host and port of the call, to this address at the same port */
			char *via = cr_xasprintf(ai->ai_family == AF_INET6 ? "::[%s]:" : "::%s:", addr);
			bool dup = false;
			for (int i = 0; i < *n && !dup; i++)
				dup = !strcmp(out[i], via);
			if (dup)
				free(via);
			else
				out[(*n)++] = via;
		}
		freeaddrinfo(res);
	}
	curl_free(host);
	curl_url_cleanup(u);
	if (*n < 2) {
		for (int i = 0; i < *n; i++)
			free(out[i]);
		free(out);
		*n = 0;
		return NULL;
	}
	return out;
}

/* Send this handle's connection to one address of the name (see cr_http_addresses). */
static struct curl_slist *use_via(CURL *c, const char *via)
{
	if (!via)
		return NULL;
	struct curl_slist *l = curl_slist_append(NULL, via);
	curl_easy_setopt(c, CURLOPT_CONNECT_TO, l);
	return l;
}

int cr_http_call(const char *method, const char *url, const char *bearer, const char *body, long timeout_ms,
		 struct cr_http_resp *out, struct cr_err *err)
{
	return cr_http_call_via(NULL, method, url, bearer, body, timeout_ms, out, err);
}

int cr_http_call_via(const char *via, const char *method, const char *url, const char *bearer, const char *body,
		     long timeout_ms, struct cr_http_resp *out, struct cr_err *err)
{
	memset(out, 0, sizeof(*out));
	CURL *c = curl_easy_init();
	if (!c)
		abort();
	struct curl_slist *to = use_via(c, via);
	struct cr_buf buf = CR_BUF_INIT(RESP_CAP);
	struct curl_slist *h = headers_for(bearer, body != NULL);
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 5000 ? timeout_ms : 5000);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	use_ca(c);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	CURLcode rc = curl_easy_perform(c);
	int ret = 0;
	if (rc != CURLE_OK) {
		ret = transfer_failed(rc, method, url, errbuf, "check the URL and that the server is running and reachable", err);
		cr_buf_release(&buf);
	} else {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
		out->len = buf.len;
		out->body = cr_buf_detach(&buf);
	}
	curl_slist_free_all(h);
	curl_slist_free_all(to);
	curl_easy_cleanup(c);
	return ret;
}

void cr_http_resp_release(struct cr_http_resp *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

struct stream_ctx {
	CURL *c;
	cr_http_data_cb cb;
	void *arg;
	int stopped;
	long status;
	char errbody[4096]; /* the start of a non-2xx answer, for the error message */
	size_t errlen;
};

static size_t stream_write(char *p, size_t size, size_t n, void *arg)
{
	struct stream_ctx *s = arg;
	if (!s->status)
		curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &s->status);
	if (s->status < 200 || s->status >= 300) { /* kept for the message, not handed on */
		size_t take = size * n < sizeof(s->errbody) - 1 - s->errlen ? size * n : sizeof(s->errbody) - 1 - s->errlen;
		memcpy(s->errbody + s->errlen, p, take);
		s->errlen += take;
		return size * n;
	}
	if (s->cb(p, size * n, s->arg)) {
		s->stopped = 1;
		return 0;
	}
	return size * n;
}

static int stream_tick(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct stream_ctx *s = arg;
	(void)dt, (void)dn, (void)ut, (void)un;
	if (s->cb(NULL, 0, s->arg)) {
		s->stopped = 1;
		return 1;
	}
	return 0;
}

static int stream(const char *via, const char *url, const char *bearer, const char *body, long idle_s,
		  cr_http_data_cb cb, void *arg, long *status, struct cr_err *err)
{
	CURL *c = curl_easy_init();
	if (!c)
		abort();
	struct curl_slist *to = use_via(c, via);
	struct stream_ctx s = { .c = c, .cb = cb, .arg = arg };
	struct curl_slist *h = headers_for(bearer, body != NULL);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	h = curl_slist_append(h, "Accept: text/event-stream");
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, idle_s);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_tick);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	use_ca(c);
	CURLcode rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s.status);
	*status = s.status;
	int ret = 0;
	if (rc != CURLE_OK && !s.stopped)
		ret = transfer_failed(rc, "stream", url, errbuf, "check that the server is running and reachable", err);
	else if (s.status && (s.status < 200 || s.status >= 300)) {
		struct cr_http_resp r = { s.status, s.errbody, s.errlen };
		s.errbody[s.errlen] = '\0';
		ret = cr_http_error_from(&r, err);
	}
	curl_slist_free_all(h);
	curl_slist_free_all(to);
	curl_easy_cleanup(c);
	return ret;
}

int cr_http_stream(const char *url, const char *bearer, long idle_s, cr_http_data_cb cb, void *arg, long *status,
		   struct cr_err *err)
{
	return stream(NULL, url, bearer, NULL, idle_s, cb, arg, status, err);
}

int cr_http_stream_via(const char *via, const char *url, const char *bearer, long idle_s, cr_http_data_cb cb,
		       void *arg, long *status, struct cr_err *err)
{
	return stream(via, url, bearer, NULL, idle_s, cb, arg, status, err);
}

int cr_http_stream_post(const char *url, const char *bearer, const char *body, long idle_s, cr_http_data_cb cb,
			void *arg, long *status, struct cr_err *err)
{
	return stream(NULL, url, bearer, body, idle_s, cb, arg, status, err);
}

int cr_http_error_from(const struct cr_http_resp *r, struct cr_err *err)
{
	int code = r->status == 401 ? CR_EUNAUTH
		 : r->status == 403 ? CR_EFORBID
		 : r->status == 404 ? CR_ENOTFOUND
		 : r->status == 409 ? CR_ECONFLICT
		 : r->status == 413 ? CR_ETOOBIG
		 : r->status >= 400 && r->status < 500 ? CR_EINPUT
							 : CR_EUPSTREAM;
	json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
	json_t *e = json_object_get(j, "error");
	if (json_is_object(e) && !strcmp(cr_json_get_str(e, "code", ""), "not_leader"))
		code = CR_ENOTLEADER; /* a follower server: the caller may try another */
	if (json_is_object(e))
		cr_err_set(err, code, cr_json_get_str(e, "fix", ""), "%s", cr_json_get_str(e, "message", "error"));
	else
		cr_err_set(err, code, NULL, "the server answered HTTP %ld", r->status);
	json_decref(j);
	return code;
}

int cr_http_pin_ca(const char *server_url, const char *hash, const char *save_path, struct cr_err *err)
{
	if (strncmp(server_url, "https://", 8) != 0)
		return cr_err_set(err, CR_EINPUT, "give the https:// URL of the join command (the server runs with --tls-cert "
					       "or --tls-self-signed)",
				  "--ca-hash needs an https:// server URL, not '%s'", server_url);
	CURL *c = curl_easy_init();
	if (!c)
		abort();
	/* Unverified on purpose, and without any credential: only the
	 * certificates are looked at, and kept if one carries the hash. */
	char *url = cr_xasprintf("%s/healthz", server_url);
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	curl_easy_setopt(c, CURLOPT_CERTINFO, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	CURLcode rc = curl_easy_perform(c);
	int ret;
	if (rc != CURLE_OK) {
		ret = cr_err_set(err, CR_EUPSTREAM, "check the URL and that the server is running and reachable",
				 "cannot reach %s to check its certificate: %s", server_url,
				 errbuf[0] ? errbuf : curl_easy_strerror(rc));
		goto out;
	}
	struct curl_certinfo *ci = NULL;
	curl_easy_getinfo(c, CURLINFO_CERTINFO, &ci);
	char seen[512] = "";
	size_t at = 0;
	for (int i = 0; ci && i < ci->num_of_certs; i++) {
		for (struct curl_slist *l = ci->certinfo[i]; l; l = l->next) {
			if (strncmp(l->data, "Cert:", 5) != 0)
				continue;
			const char *pem = l->data + 5;
			char h[CR_TLS_HASH_LEN];
			if (cr_tls_pem_hash(pem, strlen(pem), h, NULL) != 0)
				continue;
			if (!strcmp(h, hash)) {
				ret = cr_file_write(save_path, pem, strlen(pem), 0644, err);
				goto out;
			}
			if (at < sizeof(seen))
				at += (size_t)snprintf(seen + at, sizeof(seen) - at, "%s%s", at ? ", " : "", h);
		}
	}
	ret = cr_err_set(err, CR_EFORBID,
			 "check --ca-hash against the join command the server printed; if the server's CA was replaced, "
			 "take the new hash from it. The token was not sent",
			 "the server at %s is not the one --ca-hash names: none of its certificates (%s) has the public key "
			 "%s",
			 server_url, at ? seen : "none offered", hash);
out:
	free(url);
	curl_easy_cleanup(c);
	return ret;
}
