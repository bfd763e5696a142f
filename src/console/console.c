/* The web console's routes, see console.h. Assets are answered with an ETag
 * (304 when it matches), no-cache (revalidated, so a new binary's console is
 * seen at once) and a Content-Security-Policy that allows nothing but this
 * server: no inline script, no other origin. */
#include "console/console.h"

#include <string.h>

#include "base/err.h"
#include "http/server.h"

static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
			  "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

static void serve(struct cr_req *req, const char *name)
{
	for (const struct cr_console_asset *a = cr_console_assets; a->name; a++) {
		if (strcmp(a->name, name) != 0)
			continue;
		cr_reply_header(req, "ETag", a->etag);
		cr_reply_header(req, "Cache-Control", "no-cache");
		cr_reply_header(req, "Content-Security-Policy", csp);
		cr_reply_header(req, "X-Content-Type-Options", "nosniff");
		cr_reply_header(req, "Referrer-Policy", "no-referrer");
		cr_reply_header(req, "X-Frame-Options", "DENY");
		const char *inm = cr_req_header(req, "If-None-Match");
		if (inm && !strcmp(inm, a->etag)) {
			cr_reply_text(req, 304, a->type, "", 0);
			return;
		}
		cr_reply_text(req, 200, a->type, (const char *)a->data, a->len);
		return;
	}
	cr_reply_error(req, CR_ENOTFOUND, "no such console file", "open the console at /");
}

static void index_page(struct cr_req *req)
{
	serve(req, "index.html");
}

static void asset(struct cr_req *req)
{
	serve(req, cr_req_param(req, 0));
}

static const struct cr_http_route routes[] = {
	{ CR_GET, "/", CR_AUTH_NONE, index_page },
	{ CR_GET, "/console/{}", CR_AUTH_NONE, asset },
	{ 0, NULL, 0, NULL },
};

void cr_console_attach(struct cr_http_server *http)
{
	cr_http_server_add_routes_ctx(http, routes, NULL);
}
