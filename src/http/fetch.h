/* One asynchronous HTTP GET (or POST) on the event loop (evhttp client) whose whole
 * answer is wanted: the server uses it to read from workers (instance logs) and to probe engines end to end. */
#ifndef CR_HTTP_FETCH_H
#define CR_HTTP_FETCH_H

#include <stddef.h>

struct event_base;

/* status 0: no answer (error says why); body is borrowed for the call. */
typedef void (*cr_fetch_cb)(int status, const char *body, size_t len, const char *error, void *arg);

/* GET http://host:port/path with an optional bearer token. cb is called
 * exactly once, on the loop. Answers above 4 MiB count as failures. */
void cr_http_fetch(struct event_base *base, const char *host, int port, const char *path, const char *bearer,
		   int timeout_s, cr_fetch_cb cb, void *arg);

/* The same as a POST of a JSON body (copied), with an optional bearer token. */
void cr_http_fetch_post(struct event_base *base, const char *host, int port, const char *path, const char *bearer,
			const char *body, int timeout_s, cr_fetch_cb cb, void *arg);

#endif
