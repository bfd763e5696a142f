#!/usr/bin/env bash
# Corral on a real NVIDIA GPU, end to end, in two steps (docs/engines.md):
#
#   scripts/gpu-check.sh --prepare DIR   on a Debian machine with the project built:
#       copies corral, mkmodel and this script into DIR, the runtime libraries
#       corral links (extracted from their Debian packages), and the llama.cpp
#       source that scripts/llama-build.sh builds (node-llama-cpp's bundle)
#   DIR/gpu-check.sh                      on the GPU machine (driver, nvcc, cmake;
#       no apt needed): builds a CUDA llama-server for this GPU's architecture
#       only, compares `corral doctor --json` with nvidia-smi field by field,
#       runs a server and a worker, deploys a generated model, chats through
#       /v1, and prints the estimate against the memory the engine holds.
#
# Every figure goes to stdout; the first mismatch or failure exits non-zero.
# Everything started is stopped on exit. Sized to finish within 12 minutes on
# 16 cores (the build of one CUDA architecture is most of it).
set -euo pipefail

prepare() {
	local out=$1 root
	root=$(cd "$(dirname "$0")/.." && pwd)
	mkdir -p "$out/lib"
	make -C "$root" -s all build/tools/mkmodel >/dev/null
	cp "$root/build/corral" "$root/build/tools/mkmodel" "$out/"
	cp "$root/scripts/gpu-check.sh" "$out/gpu-check.sh"
	# the shared libraries corral needs beyond glibc, from their packages
	local stage
	stage=$(mktemp -d)
	local libs
	libs=$(ldd "$root/build/corral" "$root/build/tools/mkmodel" | awk '/=> \//{print $3}' | sort -u |
		grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' || true)
	for lib in $libs; do
		local real pkg
		real=$(readlink -f "$lib")
		pkg=$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1 || true)
		if [ -n "$pkg" ] && (cd "$stage" && apt-get download -q "$pkg" >/dev/null 2>&1); then
			dpkg-deb -x "$stage"/"${pkg}"_*.deb "$stage/root"
			cp -L "$stage/root$real" "$out/lib/$(basename "$lib")" 2>/dev/null || cp -L "$lib" "$out/lib/"
		else
			cp -L "$lib" "$out/lib/" # no package archive reachable: the installed copy
		fi
	done
	rm -rf "$stage"
	# llama.cpp's source, without its model files and web UI
	local bin src
	bin=$("$root/scripts/llama-build.sh")
	src=$(mktemp -d)
	local npmdir
	npmdir=$(mktemp -d)
	(cd "$npmdir" && npm init -y >/dev/null && npm i -E --omit=optional --ignore-scripts --no-audit --no-fund \
		node-llama-cpp@3.21.1 >/dev/null)
	git clone -q "$npmdir/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$src/llama.cpp"
	tar -C "$src" --exclude=.git --exclude='llama.cpp/models/*.gguf' --exclude='llama.cpp/tools/server/public*' \
		--exclude='llama.cpp/docs' -czf "$out/llama-src.tar.gz" llama.cpp
	rm -rf "$src" "$npmdir"
	echo "gpu-check: prepared $out ($(du -sh "$out" | cut -f1)); built against $bin's release"
}

if [ "${1:-}" = "--prepare" ]; then
	[ -n "${2:-}" ] || { echo "usage: $0 --prepare DIR" >&2; exit 2; }
	prepare "$2"
	exit 0
fi

HERE=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CORRAL="$HERE/corral"
WORK=$(mktemp -d /tmp/corral-gpu-check.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	sleep 1
	pkill -f "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
fail() { echo "gpu-check: FAIL: $*" >&2; exit 1; }
step() { echo; echo "== $* ($(date +%T))"; }

for t in nvidia-smi cmake nvcc python3 tar; do
	command -v "$t" >/dev/null || fail "'$t' not found (the GPU machine needs the NVIDIA driver, the CUDA toolkit and cmake)"
done
"$CORRAL" --help >/dev/null 2>"$WORK/run.err" ||
	fail "corral does not run here (its glibc must be 2.36 or newer): $(head -3 "$WORK/run.err")"

step "GPUs (nvidia-smi)"
nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used,driver_version,compute_cap,pci.bus_id \
	--format=csv,noheader,nounits | tee "$WORK/smi.csv"

step "corral doctor --json against nvidia-smi, field by field"
"$CORRAL" doctor --json --data-dir "$WORK/doctor" >"$WORK/doctor.json" || true # exit 1 = a check failed; the report is there
python3 - "$WORK/doctor.json" "$WORK/smi.csv" <<'PY'
import csv, json, sys
doc = json.load(open(sys.argv[1]))
gpus = [g for g in doc["gpus"] if g["vendor"] == "nvidia"]
rows = list(csv.reader(open(sys.argv[2]), skipinitialspace=True))
bad = 0
if len(gpus) != len(rows):
    print("MISMATCH gpu count: corral %d, nvidia-smi %d" % (len(gpus), len(rows))); sys.exit(1)
drv = doc["drivers"].get("nvidia", {}).get("driver_version")
for g, r in zip(gpus, rows):
    idx, name, uuid, total_mib, used_mib, driver, cc, bus = r
    checks = [("index", g["index"], int(idx)), ("name", g["name"], name), ("uuid", g["uuid"], uuid),
              ("memory_total MiB", g["memory_total"] // 2**20, int(total_mib)),
              ("driver", drv, driver), ("compute_capability", g.get("compute_capability"), cc),
              ("pci_bus_id", (g.get("pci_bus_id") or "").upper()[-12:], bus.upper()[-12:])]
    for field, ours, theirs in checks:
        ok = ours == theirs
        bad += not ok
        print("%-4s gpu %s %-20s corral=%-40s nvidia-smi=%s" % ("ok" if ok else "BAD", idx, field, ours, theirs))
    used = g["memory_used"] // 2**20
    near = abs(used - int(used_mib)) <= max(64, int(used_mib) // 20)  # both are samples of a moving value
    bad += not near
    print("%-4s gpu %s %-20s corral=%-40s nvidia-smi=%s" % ("ok" if near else "BAD", idx, "memory_used MiB", used, used_mib))
sys.exit(1 if bad else 0)
PY

step "a CUDA llama-server for this GPU only"
CC=$(head -1 "$WORK/smi.csv" | awk -F', ' '{print $7}' | tr -d '.')
JOBS=$(nproc)
tar -C "$WORK" -xzf "$HERE/llama-src.tar.gz"
T0=$(date +%s)
cmake -S "$WORK/llama.cpp" -B "$WORK/llama-build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
	-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CC" -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
	-DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
	-DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF >"$WORK/cmake.log" 2>&1 || { tail -30 "$WORK/cmake.log"; fail "cmake"; }
cmake --build "$WORK/llama-build" --target llama-server -j "$JOBS" >"$WORK/build.log" 2>&1 ||
	{ tail -30 "$WORK/build.log"; fail "build"; }
echo "built for sm_$CC in $(($(date +%s) - T0)) s: $("$WORK/llama-build/bin/llama-server" --version 2>&1 | head -1)"

step "a server and a worker, a model deployed, a chat through /v1"
PORT=18480
"$CORRAL" server --disable-worker --host 127.0.0.1 --port $PORT --data-dir "$WORK/server" --probe-interval 1 \
	>"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
CORRAL_ENGINE_PATH="$WORK/llama-build/bin" "$CORRAL" worker --server-url "http://127.0.0.1:$PORT" \
	--token "$(cat "$WORK/server/token")" --name gpu --data-dir "$WORK/worker" --listen-host 127.0.0.1 \
	--worker-port 18481 --status-interval 1 --port-range 18500-18520 >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
export XDG_CONFIG_HOME="$WORK/cli"
"$CORRAL" login --server-url "http://127.0.0.1:$PORT" --password-stdin <"$WORK/server/initial_admin_password" >/dev/null
"$HERE/mkmodel" --out "$WORK/model.gguf" --layers 8 --embd 2048 --heads 16 --kv-heads 8 --ff 5632 --type f16 --ctx 4096
for _ in $(seq 100); do "$CORRAL" workers 2>/dev/null | grep -q ' ready' && break; sleep 0.2; done
"$CORRAL" deploy tiny --path "$WORK/model.gguf" --ctx 4096 --wait 2>/dev/null ||
	"$CORRAL" deploy tiny --path "$WORK/model.gguf" --ctx 4096
KEY=$("$CORRAL" keys create gpu-check)
for _ in $(seq 300); do
	"$CORRAL" instances 2>/dev/null | grep -q running && break
	sleep 0.2
done
"$CORRAL" instances
ANSWER=$(curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H "Authorization: Bearer $KEY" \
	-H 'Content-Type: application/json' -d '{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":16}') ||
	fail "chat through /v1 failed; $(tail -5 "$WORK/worker.log")"
echo "$ANSWER" | python3 -c 'import json,sys; a=json.load(sys.stdin); print("chat ok:", a["usage"])'

step "estimate against what the engine holds"
"$CORRAL" instances --json 2>/dev/null >"$WORK/instances.json" || curl -sf "http://127.0.0.1:$PORT/api/instances" \
	-H "Authorization: Bearer $(python3 -c 'import json,os;print(json.load(open(os.environ["XDG_CONFIG_HOME"]+"/corral/cli.json"))["token"])')" >"$WORK/instances.json"
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits | tee "$WORK/apps.csv"
python3 - "$WORK/instances.json" "$WORK/apps.csv" <<'PY'
import csv, json, sys
insts = json.load(open(sys.argv[1]))
insts = insts["instances"] if isinstance(insts, dict) else insts
apps = {int(r[0]): int(r[1]) for r in csv.reader(open(sys.argv[2]), skipinitialspace=True) if r}
for i in insts:
    pid = i["members"][i["placement"]["leader"]]["pid"]
    claim = sum(g.get("claim", 0) for w in i["placement"]["workers"] for g in w.get("gpus", []))
    real = apps.get(pid, 0) * 2**20
    print("instance %s: estimate %.0f MiB, engine holds %.0f MiB (nvidia-smi), ratio %.2f"
          % (i["id"], claim / 2**20, real / 2**20, claim / real if real else float("nan")))
    if not real:
        print("the engine (pid %d) holds no GPU memory: it did not run on the GPU" % pid); sys.exit(1)
PY
echo
echo "gpu-check: all passed"
