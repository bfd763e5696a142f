#!/bin/sh
# Build the real llama.cpp engines (llama-server, ggml-rpc-server) from the
# source that the npm package node-llama-cpp ships inside itself, and cache
# them outside the repository, keyed by that package's version and the build
# flags. The build is portable: GGML_NATIVE=OFF with an explicit x86-64-v3
# baseline (AVX, AVX2, FMA, F16C, BMI2; no AVX-512, no AMX), so a cached binary
# runs on any x86-64-v3 CPU, including one that advertises AMX (a native build
# died there with SIGILL in ggml's AMX kernels).
#
#   scripts/llama-build.sh          build if missing; print the bin directory
#   CORRAL_ENGINE_CACHE=DIR         cache root (default $XDG_CACHE_HOME/corral
#                                   or ~/.cache/corral)
#
# Needs Debian's nodejs, npm, cmake, ninja-build, g++, git (installed by
# scripts/deps.sh). Prints only the bin directory on stdout.
#
#   scripts/llama-build.sh --path   print the bin directory without building
set -eu
VERSION=3.21.1
ROOT=${CORRAL_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/corral}
# The flags are part of the cache key: changing them never reuses an old build.
case "$(uname -m)" in
x86_64) ISA="-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
*) ISA="" ;;
esac
FLAGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_RPC=ON -DGGML_NATIVE=OFF \
-DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF $ISA -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF"
KEY=$(printf '%s' "$FLAGS" | sha256sum | cut -c1-12)
DIR=$ROOT/llama.cpp/node-llama-cpp-$VERSION-$(uname -m)-$KEY
BIN=$DIR/bin
if [ "${1:-}" = "--path" ]; then
	echo "$BIN"
	exit 0
fi
if [ -x "$BIN/llama-server" ] && [ -x "$BIN/ggml-rpc-server" ]; then
	echo "$BIN"
	exit 0
fi
for t in node npm cmake ninja g++ git; do
	command -v "$t" >/dev/null 2>&1 || {
		echo "llama-build: '$t' not found; run scripts/deps.sh as root" >&2
		exit 1
	}
done
mkdir -p "$DIR"
WORK=$(mktemp -d "$DIR/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "llama-build: fetching node-llama-cpp@$VERSION (carries llama.cpp's source)" >&2
(cd "$WORK" && npm init -y >/dev/null && \
	npm i -E --omit=optional --ignore-scripts --no-audit --no-fund \
	"node-llama-cpp@$VERSION" "@node-llama-cpp/linux-x64@$VERSION" >/dev/null) >&2
git clone -q "$WORK/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$WORK/src" >&2
echo "llama-build: building llama-server and ggml-rpc-server (several minutes)" >&2
# shellcheck disable=SC2086 # FLAGS is a list of words
cmake -S "$WORK/src" -B "$WORK/build" -G Ninja $FLAGS >&2
ninja -C "$WORK/build" -j"$(nproc)" llama-server ggml-rpc-server >/dev/null >&2
# The baseline is enforced, not hoped for: no AVX-512 (zmm) or AMX (tile)
# instruction may be in the binaries.
if [ "$(uname -m)" = x86_64 ] && command -v objdump >/dev/null 2>&1; then
	for b in llama-server ggml-rpc-server; do
		n=$(objdump -d --no-show-raw-insn "$WORK/build/bin/$b" | grep -c -E '%zmm|tilezero|tileloadd|tdpb' || true)
		if [ "$n" != 0 ]; then
			echo "llama-build: $b has $n AVX-512/AMX instructions; the build is not portable" >&2
			exit 1
		fi
	done
fi
mkdir -p "$BIN.tmp"
cp "$WORK/build/bin/llama-server" "$WORK/build/bin/ggml-rpc-server" "$BIN.tmp/"
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
echo "$BIN"
