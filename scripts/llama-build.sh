#!/bin/sh
# Build the real llama.cpp engines (llama-server, ggml-rpc-server) from the
# source that the npm package node-llama-cpp ships inside itself, and cache
# them outside the repository, keyed by that package's version.
#
#   scripts/llama-build.sh          build if missing; print the bin directory
#   CORRAL_ENGINE_CACHE=DIR         cache root (default $XDG_CACHE_HOME/corral
#                                   or ~/.cache/corral)
#
# Needs Debian's nodejs, npm, cmake, ninja-build, g++, git (installed by
# scripts/deps.sh --engines). Prints only the bin directory on stdout.
set -eu
VERSION=3.21.1
ROOT=${CORRAL_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/corral}
DIR=$ROOT/llama.cpp/node-llama-cpp-$VERSION-$(uname -m)
BIN=$DIR/bin
if [ -x "$BIN/llama-server" ] && [ -x "$BIN/ggml-rpc-server" ]; then
	echo "$BIN"
	exit 0
fi
for t in node npm cmake ninja g++ git; do
	command -v "$t" >/dev/null 2>&1 || {
		echo "llama-build: '$t' not found; run scripts/deps.sh --engines as root" >&2
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
cmake -S "$WORK/src" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
	-DBUILD_SHARED_LIBS=OFF -DGGML_RPC=ON -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
	-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF >&2
ninja -C "$WORK/build" -j"$(nproc)" llama-server ggml-rpc-server >/dev/null >&2
mkdir -p "$BIN.tmp"
cp "$WORK/build/bin/llama-server" "$WORK/build/bin/ggml-rpc-server" "$BIN.tmp/"
rm -rf "$BIN"
mv "$BIN.tmp" "$BIN"
echo "$BIN"
