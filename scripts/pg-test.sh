#!/bin/sh
# A private PostgreSQL cluster for tests, in a temporary directory on a free
# port, owned by an unprivileged user (PostgreSQL refuses to run as root):
#   scripts/pg-test.sh start DIR     make and start one in DIR; print its URL
#   scripts/pg-test.sh stop DIR      stop it (immediate) and remove DIR
#   scripts/pg-test.sh down DIR      stop its server, keeping its data (a fault)
#   scripts/pg-test.sh up DIR        start it again on the same port
#   scripts/pg-test.sh run CMD ...   start one, run CMD with CORRAL_TEST_PG set
#                                    to its URL, stop it; CMD's exit status
# Needs Debian's postgresql (scripts/deps.sh installs it).
set -eu
bindir() {
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
		echo "pg-test: PostgreSQL's initdb not found; run scripts/deps.sh as root (apt-get install postgresql)" >&2
		exit 1
	fi
	echo "$d"
}
as_owner() { # run as the cluster's owner: postgres when we are root
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
start() {
	dir=$1
	bin=$(bindir)
	port=$(free_port)
	mkdir -p "$dir"
	chmod 755 "$dir"
	[ "$(id -u)" = 0 ] && chown postgres "$dir"
	as_owner "$bin/initdb" -D "$dir/data" -A trust -U corral --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || {
		cat "$dir/initdb.log" >&2
		exit 1
	}
	echo "$port" >"$dir/port"
	up "$dir"
	as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U corral corral
	echo "postgresql://corral@127.0.0.1:$port/corral"
}
up() {
	dir=$1
	bin=$(bindir)
	port=$(cat "$dir/port")
	as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 -o \
		"-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200" \
		start >/dev/null || {
		cat "$dir/log" >&2
		exit 1
	}
}
down() {
	as_owner "$(bindir)/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null
}
stop() {
	dir=$1
	bin=$(bindir)
	[ -d "$dir/data" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
case "${1:-}" in
start) start "$2" ;;
stop) stop "$2" ;;
up) up "$2" ;;
down) down "$2" ;;
run)
	shift
	dir=$(mktemp -d /tmp/corral-pg-XXXXXX)
	trap 'stop "$dir"' EXIT INT TERM
	CORRAL_TEST_PG=$(start "$dir")
	export CORRAL_TEST_PG
	set +e
	"$@"
	rc=$?
	exit $rc
	;;
*)
	echo "usage: scripts/pg-test.sh start DIR | stop DIR | down DIR | up DIR | run CMD [ARGS...]" >&2
	exit 2
	;;
esac
