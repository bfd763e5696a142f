/* The audit trail: who deployed, changed, deleted, created or revoked what,
 * who failed to log in, from which address and when. Written to the store
 * at once (these are rare, and the trail must survive a crash), listed by
 * admins, kept for --audit-days. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/internal.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/util.h"
#include "store/store.h"

void cr_audit(struct cr_app *app, struct cr_req *req, const char *actor, const char *action, const char *target,
	      json_t *detail_json)
{
	char *detail = detail_json ? cr_json_dump(detail_json) : cr_xstrdup("");
	json_decref(detail_json);
	struct cr_principal *p = req ? cr_req_principal(req) : NULL;
	if (!actor)
		actor = p && p->username ? p->username : p && p->worker_id ? p->worker_id : "-";
	struct cr_audit_rec a = { 0, cr_wall_ms(), (char *)actor, (char *)(req ? cr_req_peer(req) : ""),
				  (char *)action, (char *)(target ? target : ""), detail };
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->audit_add(app->store, &a, &err))
		cr_warn("audit entry '%s %s' by '%s' not stored: %s", action, a.target, actor, err.message);
	free(detail);
}

void cr_audit_trim(struct cr_app *app)
{
	if (app->cfg.audit_days <= 0)
		return;
	int64_t deleted = 0;
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->audit_purge(app->store, cr_wall_ms() - (int64_t)app->cfg.audit_days * 86400000LL, &deleted,
					 &err))
		cr_warn("audit trail not trimmed: %s", err.message);
	else if (deleted)
		cr_info("audit trail: %lld entries older than %d days deleted", (long long)deleted, app->cfg.audit_days);
}

static void add_entry(const struct cr_audit_rec *a, void *arg)
{
	char at[40];
	cr_time_format(a->at_ms, at, sizeof(at));
	json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s}", "id", (json_int_t)a->id, "at", at, "actor", a->actor,
			      "address", a->address, "action", a->action, "target", a->target);
	json_t *d = *a->detail ? json_loads(a->detail, 0, NULL) : NULL;
	json_object_set_new(o, "detail", d ? d : json_string(a->detail));
	json_array_append_new(arg, o);
}

/* GET /api/audit?since=7d|YYYY-MM-DD&action=PREFIX&limit=N (admin), newest first. */
static void list_audit(struct cr_req *req)
{
	struct cr_app *app = cr_req_app(req);
	const char *since = cr_req_query(req, "since"), *action = cr_req_query(req, "action");
	const char *limit_s = cr_req_query(req, "limit");
	long long limit = 1000, days;
	int64_t from = 0;
	if (limit_s && !cr_parse_int(limit_s, 1, 100000, &limit)) {
		cr_reply_error(req, CR_EINPUT, "'limit' must be a number from 1 to 100000", "e.g. limit=100");
		return;
	}
	if (since) {
		char *end;
		days = strtoll(since, &end, 10);
		struct tm tm;
		memset(&tm, 0, sizeof(tm));
		const char *rest = NULL;
		if (end != since && !strcmp(end, "d") && days >= 1 && days <= 36600) {
			from = cr_wall_ms() - days * 86400000LL;
		} else if ((rest = strptime(since, "%Y-%m-%d", &tm)) && !*rest) {
			from = (int64_t)timegm(&tm) * 1000;
		} else {
			cr_reply_error(req, CR_EINPUT, "'since' is a number of days like 7d or a day as YYYY-MM-DD",
				       "e.g. since=7d");
			return;
		}
	}
	json_t *arr = json_array();
	struct cr_err err = CR_ERR_INIT;
	if (app->store->ops->audit_list(app->store, from, action, (int)limit, add_entry, arr, &err)) {
		json_decref(arr);
		cr_reply_err(req, &err);
		return;
	}
	cr_reply_json(req, 200, json_pack("{s:o,s:i}", "entries", arr, "kept_days", app->cfg.audit_days));
}

const struct cr_http_route cr_api_audit_routes[] = {
	{ CR_GET, "/api/audit", CR_AUTH_ADMIN, list_audit },
	{ 0, NULL, 0, NULL },
};
