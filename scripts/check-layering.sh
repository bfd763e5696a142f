#!/bin/sh
# Layering rules (style.md): pure modules never include the network, store or
# event-loop layers, and base depends on nothing of ours but base.
set -e
fail=0
for dir in src/sched src/checks; do
	[ -d "$dir" ] || continue
	if grep -nE '#include *[<"](event2/|http/|store/|api/|curl/|sqlite3|libpq)' "$dir"/*.c "$dir"/*.h 2>/dev/null; then
		echo "layering: $dir must not include http, store, api or libevent headers" >&2
		fail=1
	fi
done
if grep -nE '#include *"(http|store|api|agent|cmd|sched|checks)/' src/base/*.c src/base/*.h; then
	echo "layering: src/base must include only base headers" >&2
	fail=1
fi
if grep -nE '#include *"(api|cmd)/' src/store/*.c src/store/*.h src/http/*.c src/http/*.h src/agent/*.c src/agent/*.h; then
	echo "layering: store, http and agent must not include api or cmd headers" >&2
	fail=1
fi
[ $fail = 0 ] && echo "layering: ok"
exit $fail
