#!/bin/sh
# Layering rules (docs/internals/style.md). Each rule names what may not
# include what; the first violation fails the check with the offending lines.
#   - sched and checks are pure: no network, store, event loop, api or agent
#   - base depends on nothing of ours but base
#   - server-side code (api, http, store, sched, checks) never includes agent/:
#     the control plane runs no worker code
#   - the store knows no transport (no http/, libevent or libcurl)
#   - store, http and agent never include api or cmd
#   - the gateway reads the cluster through api/cluster.h only (never api's
#     internals, the store or the worker), and api never includes the gateway
#   - nothing in the library includes cmd
set -e
rule() { # rule "what" "regex" files...
	what=$1
	re=$2
	shift 2
	if grep -nE "$re" "$@" 2>/dev/null; then
		echo "layering: $what" >&2
		exit 1
	fi
}
rule "src/sched and src/checks must not include http, store, api, agent, libevent, libcurl or database headers" \
	'#include *[<"](event2/|http/|store/|api/|agent/|curl/|sqlite3|libpq)' src/sched/*.[ch] src/checks/*.[ch]
rule "src/base must include only base headers" \
	'#include *"(http|store|api|agent|cmd|sched|checks)/' src/base/*.[ch]
rule "server-side code (api, gateway, http, store, sched, checks) must not include agent/" \
	'#include *"agent/' src/api/*.[ch] src/gateway/*.[ch] src/http/*.[ch] src/store/*.[ch] src/sched/*.[ch] src/checks/*.[ch]
rule "src/store must know no transport (http/, libevent, libcurl)" \
	'#include *[<"](http/|event2/|curl/)' src/store/*.[ch]
rule "store, http and agent must not include api or cmd headers" \
	'#include *"(api|cmd)/' src/store/*.[ch] src/http/*.[ch] src/agent/*.[ch]
rule "src/gateway may include only api/cluster.h of src/api, and no store or agent headers" \
	'#include *"(api/(internal|app|model_spec)\.h|store/|agent/)' src/gateway/*.[ch]
rule "src/api must not include gateway headers (the gateway is wired from cmd_server.c)" \
	'#include *"gateway/' src/api/*.[ch]
rule "nothing in the library includes cmd headers" \
	'#include *"cmd/' src/base/*.[ch] src/http/*.[ch] src/api/*.[ch] src/gateway/*.[ch] src/store/*.[ch] src/agent/*.[ch] \
	src/sched/*.[ch] src/checks/*.[ch]
echo "layering: ok"
