#!/bin/sh
# Writes the corral(1) manual page to stdout from the binary's own help:
# 'corral --help' and each command's --help, so the page never drifts from
# the program. usage: scripts/mkman.sh path/to/corral > corral.1
set -eu
bin=$1
version=$("$bin" version | awk '{print $NF}')
# roff: a line must not start with a dot or a quote; backslashes are escaped
esc() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }
cat <<HEAD
.TH CORRAL 1 "" "corral $version" "User Commands"
.SH NAME
corral \\- GPU cluster manager for AI inference: one OpenAI-compatible endpoint over many nodes
.SH SYNOPSIS
.B corral
.I COMMAND
.RI [ OPTIONS ]
.SH DESCRIPTION
.nf
HEAD
"$bin" --help | esc
echo ".fi"
echo ".SH COMMANDS"
for cmd in $("$bin" --help | awk '/^  [a-z]+  /{print $1}'); do
	echo ".SS $cmd"
	echo ".nf"
	"$bin" "$cmd" --help | esc
	echo ".fi"
done
cat <<'TAIL'
.SH ENVIRONMENT
Every option of
.B corral server
and
.B corral worker
can also be set as a CORRAL_ variable (see their sections); the command line wins.
Client commands read CORRAL_SERVER_URL and CORRAL_API_TOKEN.
.SH FILES
.TP
.I /etc/corral/server.env, /etc/corral/worker.env
read by the corral-server and corral-worker systemd units
.SH SEE ALSO
The documents installed with corral: README.md, cli.md, ops.md, api.md.
TAIL
