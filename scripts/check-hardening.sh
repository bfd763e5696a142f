#!/bin/sh
# The binary is built hardened (see the Makefile): a position-independent
# executable with full RELRO (GNU_RELRO and BIND_NOW), the stack protector,
# and fortified libc calls. Fails naming the first property missing.
set -e
bin=${1:-build/corral}
[ -x "$bin" ] || { echo "check-hardening: '$bin' not built" >&2; exit 1; }
fail() { echo "check-hardening: $bin: $1" >&2; exit 1; }
readelf -h "$bin" | grep -q 'Type:.*DYN' || fail "not a position-independent executable (-fPIE -pie)"
readelf -l "$bin" | grep -q GNU_RELRO || fail "no RELRO segment (-Wl,-z,relro)"
readelf -d "$bin" | grep -Eq 'BIND_NOW|FLAGS.*NOW' || fail "relocations not bound at start (-Wl,-z,now)"
syms=$(readelf --dyn-syms -W "$bin")
echo "$syms" | grep -q '__stack_chk_fail' || fail "no stack protector (-fstack-protector-strong)"
echo "$syms" | grep -Eq '__[a-z_]+_chk' || fail "no fortified calls (-D_FORTIFY_SOURCE)"
echo "hardening: ok ($bin: PIE, full RELRO, stack protector, fortify)"
