/* Blocking HTTP client on libcurl, used by the worker's reporting threads and
 * the command-line client. */
#ifndef CR_HTTP_CLIENT_H
#define CR_HTTP_CLIENT_H

#include <jansson.h>
#include <stddef.h>

struct cr_err;

/* Call once per process before any thread uses the client. */
void cr_http_client_init(void);

/* Trust the CA certificates in pem_file (NULL: the system's) for every https
 * call from now on. Call before threads start. */
void cr_http_client_set_ca(const char *pem_file);

/* Pin a server's CA as `corral worker --ca-hash` does: connect to server_url
 * (https only) without sending any credential, and write to save_path the
 * first certificate of its chain whose public key hashes to hash (see
 * http/tls.h). CR_EFORBID when none does, with the hashes it offered. */
int cr_http_pin_ca(const char *server_url, const char *hash, const char *save_path, struct cr_err *err);

struct cr_http_resp {
	long status;
	char *body; /* owned, NUL-terminated, "" when empty */
	size_t len;
};

/* Send method url with an optional bearer token and JSON body (NULL: none).
 * Returns 0 when an HTTP answer came back (any status, in out), or
 * CR_EUPSTREAM with err saying why the server could not be reached (out is
 * then empty). Answers over 64 MiB are cut off (CR_EUPSTREAM). The caller
 * releases out with cr_http_resp_release in every case. */
int cr_http_call(const char *method, const char *url, const char *bearer, const char *body, long timeout_ms,
		 struct cr_http_resp *out, struct cr_err *err);
void cr_http_resp_release(struct cr_http_resp *r);

/* One DNS name for several servers: the addresses of url's host when it
 * has more than one (of IPv4 when it has several, else of IPv6: one address
 * of each is taken for one server on both stacks), each as a "via" for the
 * calls below: a libcurl CONNECT_TO entry, "::ADDR:", with which the call
 * connects to that address at the URL's port while its Host header and TLS
 * name stay the name's. NULL, with *n 0, when the host has one address, is
 * an IP literal or does not resolve (the call itself then says so). The
 * caller frees each entry and the array. */
char **cr_http_addresses(const char *url, int *n);
/* cr_http_call through one address of the URL's name (via from
 * cr_http_addresses; NULL: as resolved, as cr_http_call). */
int cr_http_call_via(const char *via, const char *method, const char *url, const char *bearer, const char *body,
		     long timeout_ms, struct cr_http_resp *out, struct cr_err *err);

/* Called with each piece of a streamed response, and with (NULL, 0) about
 * once a second while the stream is idle; return nonzero to stop. */
typedef int (*cr_http_data_cb)(const char *data, size_t len, void *arg);

/* GET url and feed the body to cb as it arrives, until the server ends it,
 * cb stops it, or nothing arrives for idle_s seconds. *status gets the HTTP
 * status (0 if none). Returns 0 when the stream ended normally or was stopped
 * by cb, CR_EUPSTREAM otherwise. cb is never called for non-2xx answers. */
int cr_http_stream(const char *url, const char *bearer, long idle_s, cr_http_data_cb cb, void *arg, long *status,
		   struct cr_err *err);

/* cr_http_stream through one address of the URL's name (see cr_http_call_via). */
int cr_http_stream_via(const char *via, const char *url, const char *bearer, long idle_s, cr_http_data_cb cb,
		       void *arg, long *status, struct cr_err *err);
/* The same with a JSON body POSTed; a non-2xx answer fails with its error
 * message (management or OpenAI shape) in err. */
int cr_http_stream_post(const char *url, const char *bearer, const char *body, long idle_s, cr_http_data_cb cb,
			void *arg, long *status, struct cr_err *err);

/* Pull the "error" object of a management error reply into err (message and
 * fix), or describe the status when the body is not one. Returns err->code. */
int cr_http_error_from(const struct cr_http_resp *r, struct cr_err *err);

#endif
