/* The web console: its assets (console/ in the source tree, built into the
 * binary by tools/embed) served at / and /console/NAME. */
#ifndef CR_CONSOLE_CONSOLE_H
#define CR_CONSOLE_CONSOLE_H

#include <stddef.h>

struct cr_http_server;

struct cr_console_asset {
	const char *name, *type;
	const unsigned char *data;
	size_t len;
	const char *etag;
};

/* The assets, ending with a zeroed entry (generated). */
extern const struct cr_console_asset cr_console_assets[];

/* Add the console's routes: GET / (index.html) and GET /console/{name}. */
void cr_console_attach(struct cr_http_server *http);

#endif
