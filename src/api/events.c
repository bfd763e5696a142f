/* Cluster events: workers joining, lost and back, checks failing and
 * recovering, models deployed, changed and deleted, placements decided or
 * refused (with the scheduler's explanation), instance states with their
 * causes, download milestones. Written to the store at once, kept
 * --events-days, listed and streamed (SSE, Last-Event-ID resume) by
 * GET /api/events; `corral events` and the console read them. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "store/store.h"

#define REPLAY_MAX 10000 /* events a reconnecting stream is sent at most */

static json_t *event_json(const struct cr_event_rec *e)
{
	char at[40];
	cr_time_format(e->at_ms, at, sizeof(at));
	json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:s}", "id", (json_int_t)e->id, "at", at, "kind", e->kind, "subject",
			      e->subject, "message", e->message);
	json_t *d = e->detail && *e->detail ? json_loads(e->detail, 0, NULL) : NULL;
	json_object_set_new(o, "detail", d ? d : json_object());
	return o;
}

static void send_event(struct cr_stream *s, const struct cr_event_rec *e)
{
	json_t *o = event_json(e);
	char *text = cr_json_dump(o);
	cr_stream_event_id(s, (long long)e->id, e->kind, text);
	free(text);
	json_decref(o);
}

/* e to every stream that has not had it yet (ids grow). */
static void send_to_subs(struct cr_app *app, const struct cr_event_rec *e)
{
	for (struct cr_event_sub *s = app->event_subs; s; s = s->next)
		if (e->id > s->last_id) {
			send_event(s->stream, e);
			s->last_id = e->id;
		}
}

void cr_event(struct cr_app *app, const char *kind, const char *subject, json_t *detail, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	char *d = detail ? cr_json_dump(detail) : cr_xstrdup("");
	json_decref(detail);
	struct cr_event_rec e = { 0, cr_wall_ms(), (char *)kind, (char *)(subject ? subject : ""), msg, d };
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->event_add(app->store, &e, &err))
		cr_warn("event '%s %s' not stored: %s", kind, e.subject, err.message);
	else if (!app->lock) /* several servers: every stream gets the events of all of them in order (cr_events_poll) */
		send_to_subs(app, &e);
	free(d);
}

static void poll_row(const struct cr_event_rec *e, void *arg)
{
	send_to_subs(arg, e);
}

void cr_events_poll(struct cr_app *app)
{
	if (!app->event_subs)
		return;
	long long after = app->event_subs->last_id;
	for (struct cr_event_sub *s = app->event_subs; s; s = s->next)
		if (s->last_id < after)
			after = s->last_id;
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->event_list(app->store, after, REPLAY_MAX, false, poll_row, app, &err))
		cr_warn("events of the other servers not read: %s", err.message);
}

void cr_events_trim(struct cr_app *app)
{
	if (app->cfg.events_days <= 0)
		return;
	int64_t deleted = 0;
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->event_purge(app->store, cr_wall_ms() - (int64_t)app->cfg.events_days * 86400000LL,
					 &deleted, &err))
		cr_warn("events not trimmed: %s", err.message);
	else if (deleted)
		cr_info("events: %lld older than %d days deleted", (long long)deleted, app->cfg.events_days);
}

static void sub_closed(struct cr_stream *s, void *arg)
{
	struct cr_app *app = arg;
	for (struct cr_event_sub **p = &app->event_subs; *p; p = &(*p)->next)
		if ((*p)->stream == s) {
			struct cr_event_sub *gone = *p;
			*p = gone->next;
			free(gone);
			return;
		}
}

void cr_events_keepalive(struct cr_app *app)
{
	for (struct cr_event_sub *s = app->event_subs; s; s = s->next)
		cr_stream_comment(s->stream, "keepalive");
}

void cr_events_free_all(struct cr_app *app)
{
	while (app->event_subs) {
		struct cr_event_sub *s = app->event_subs;
		app->event_subs = s->next;
		cr_stream_close(s->stream);
		free(s);
	}
}

static void replay(const struct cr_event_rec *e, void *arg)
{
	struct cr_event_sub *sub = arg;
	send_event(sub->stream, e);
	sub->last_id = e->id;
}

static void newest_id(const struct cr_event_rec *e, void *arg)
{
	*(long long *)arg = e->id;
}

static void collect(const struct cr_event_rec *e, void *arg)
{
	json_array_append_new(arg, event_json(e));
}

/* GET /api/events: the last ?limit=N (100) events, or those after ?after=ID,
 * oldest first, as JSON; with ?follow=1 or Accept: text/event-stream, a
 * stream of them (after Last-Event-ID or ?after when given) that goes on
 * with each new event. */
static void list_events(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const char *after_s = cr_req_header(req, "Last-Event-ID"), *limit_s = cr_req_query(req, "limit");
	const char *follow = cr_req_query(req, "follow"), *accept = cr_req_header(req, "Accept");
	if (!after_s || !*after_s)
		after_s = cr_req_query(req, "after");
	long long after = -1, limit = 100;
	if (after_s && !cr_parse_int(after_s, 0, INT64_MAX, &after)) {
		cr_reply_error(req, CR_EINPUT, "'after' (or Last-Event-ID) must be an event id",
			       "give the id of the last event seen, e.g. after=42");
		return;
	}
	if (limit_s && !cr_parse_int(limit_s, 1, REPLAY_MAX, &limit)) {
		cr_reply_error(req, CR_EINPUT, "'limit' must be a number from 1 to 10000", "e.g. limit=100");
		return;
	}
	struct cr_err err = CR_ERR_INIT;
	bool stream = (follow && !strcmp(follow, "1")) || (accept && strstr(accept, "text/event-stream"));
	if (!stream) {
		json_t *arr = json_array();
		if (app->store->ops->event_list(app->store, after < 0 ? 0 : after, (int)limit, after < 0, collect, arr,
						&err)) {
			json_decref(arr);
			cr_reply_err(req, &err);
			return;
		}
		cr_reply_json(req, 200, json_pack("{s:o,s:i}", "events", arr, "kept_days", app->cfg.events_days));
		return;
	}
	struct cr_stream *s = cr_stream_open(req, sub_closed, app);
	if (!s)
		return;
	struct cr_event_sub *sub = cr_xcalloc(1, sizeof(*sub));
	sub->stream = s;
	sub->last_id = after;
	if (after >= 0 && app->store->ops->event_list(app->store, after, REPLAY_MAX, false, replay, sub, &err))
		cr_warn("events stream: %s", err.message);
	else if (after < 0 && app->store->ops->event_list(app->store, 0, 1, true, newest_id, &sub->last_id, &err))
		cr_warn("events stream: %s", err.message); /* new events from here on */
	sub->next = app->event_subs;
	app->event_subs = sub;
	cr_stream_comment(s, "connected");
}

const struct cr_http_route cr_api_event_routes[] = {
	{ CR_GET, "/api/events", CR_AUTH_USER, list_events },
	{ 0, NULL, 0, NULL },
};
