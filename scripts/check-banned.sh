#!/bin/sh
# Banned calls (style.md): unbounded string functions, atoi, system.
set -e
if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|atoi|atol|gets|system)[[:space:]]*\(' \
	$(find src tests bench -name '*.c' -o -name '*.h'); then
	echo "banned: use snprintf, cr_buf, cr_parse_int or fork/exec instead" >&2
	exit 1
fi
echo "banned calls: none"
