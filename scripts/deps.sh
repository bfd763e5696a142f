#!/bin/sh
# Install the Debian packages Corral needs to build and test (the last line of
# packages builds the real llama.cpp engines the tests run, scripts/llama-build.sh). As root it runs
# apt-get; otherwise it prints the exact command to run. Quiet when all are present.
set -e
PKGS="build-essential pkg-config libevent-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev libpq-dev \
libsodium-dev libssl-dev openssl libcriterion-dev python3 iproute2"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Tools that build llama.cpp (and systemd-analyze and groff, which check the
# units and the manual page of make install): any installation will do.
for pair in node:nodejs npm:npm cmake:cmake ninja:ninja-build g++:g++ git:git systemd-analyze:systemd \
	groff:groff-base promtool:prometheus chromium:chromium haproxy:haproxy; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
# PostgreSQL's server programs, for the private clusters of the PostgreSQL tests
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
	echo "deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends $missing >/dev/null
else
	echo "deps: missing Debian packages:$missing" >&2
	echo "deps: run as root:  apt-get install -y$missing" >&2
	exit 1
fi
