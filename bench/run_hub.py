#!/usr/bin/env python3
"""Hub benchmark: time from `corral deploy --hf` to a running instance for the
tests' tiny model through a local hub (tests/integration/hub_server.py: the
listing, the redirect to a CDN host, ranges), against `corral deploy --path`
of the same file as the yardstick, in one run; and the bytes a worker reads by
range to inspect a GGUF whose header is as large as a big model's (a
150,000-token vocabulary), against the file's size; and how long a second
worker takes to get a 64 MB model file from a peer worker that has it,
against the first worker's download of it from the local hub (the hub on
loopback is the best case: the internet is slower) and from nginx serving it
as a plain --url. Writes bench/results/hub.json."""
import re
import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import hub_server  # noqa: E402
from run_gateway import free_port, api  # noqa: E402
from run_status import wait_http  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 rounds")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 2
    llama = subprocess.run([os.path.join(ROOT, "scripts", "llama-build.sh"), "--path"], capture_output=True,
                           text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="corral-bench-hub-")
    corral = os.path.join(ROOT, args.build, "corral")
    tiny, big = os.path.join(tmp, "tiny.gguf"), os.path.join(tmp, "big.gguf")
    mk = os.path.join(ROOT, args.build, "tools", "mkmodel")
    subprocess.run([mk, "--out", tiny], check=True, capture_output=True)
    subprocess.run([mk, "--out", big, "--extra-vocab", "150000"], check=True, capture_output=True)
    hub = hub_server.Hub()
    with open(tiny, "rb") as f:
        hub.add("bench/tiny-GGUF", {"tiny-Q8_0.gguf": f.read()})
    with open(big, "rb") as f:
        big_bytes = f.read()
    hub.add("bench/big-vocab-GGUF", {"big-Q8_0.gguf": big_bytes})
    os.chmod(tmp, 0o755)  # nginx's worker may run as another user
    wide = os.path.join(tmp, "wide.gguf")  # about 64 MB
    subprocess.run([mk, "--out", wide, "--layers", "2", "--embd", "1024", "--ff", "4096", "--heads", "8",
                    "--kv-heads", "8", "--type", "f16"], check=True, capture_output=True)
    with open(wide, "rb") as f:
        wide_bytes = f.read()
    hub.add("bench/wide-GGUF", {"wide-F16.gguf": wide_bytes})
    wide_sha = hashlib.sha256(wide_bytes).hexdigest()  # every transfer is checked alike
    ng_port = free_port()
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write("worker_processes 1; daemon off; pid %s/nginx.pid; error_log %s/nginx.err;\n"
                "events { worker_connections 64; }\n"
                "http { access_log off; sendfile on; server { listen 127.0.0.1:%d; root %s; } }\n"
                % (tmp, tmp, ng_port, tmp))
    env = dict(os.environ, HF_ENDPOINT=hub.url, CORRAL_ENGINE_PATH=llama, CORRAL_LOG_LEVEL="warn")
    procs = []
    try:
        port = free_port()
        data = os.path.join(tmp, "server")
        procs.append(subprocess.Popen([corral, "server", "--disable-worker", "--host", "127.0.0.1", "--port", str(port),
                                       "--data-dir", data, "--gpu-reserve", "0"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "server.log"), "w")))
        url = "http://127.0.0.1:%d" % port
        wait_http(url + "/healthz")
        token = open(os.path.join(data, "token")).read().strip()
        lo = free_port()
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(subprocess.Popen([nginx, "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        logs = {}
        for name, label in (("w1", "box=1"), ("w2", "box=2")):
            lo = free_port()
            logs[name] = os.path.join(tmp, name + ".log")
            procs.append(subprocess.Popen([corral, "worker", "--server-url", url, "--token", token, "--name", name,
                                           "--data-dir", os.path.join(tmp, name), "--worker-port", str(free_port()),
                                           "--listen-host", "127.0.0.1", "--status-interval", "1", "--labels", label,
                                           "--port-range", "%d-%d" % (lo, lo + 3)], env=dict(env, CORRAL_LOG_LEVEL="info"),
                                          stdout=subprocess.DEVNULL, stderr=open(logs[name], "w")))
        pw = open(os.path.join(data, "initial_admin_password")).read().strip()
        admin = api(url, "POST", "/api/auth/login", {"username": "admin", "password": pw})["token"]
        cli_env = dict(env, CORRAL_SERVER_URL=url, CORRAL_API_TOKEN=admin, XDG_CONFIG_HOME=tmp)
        while len(api(url, "GET", "/api/workers", token=admin)["workers"]) < 2:
            time.sleep(0.1)
        time.sleep(1.5)

        def deploy(name, *source, keep=False, box="1"):
            t0 = time.monotonic()
            r = subprocess.run([corral, "deploy", name, *source, "--allow-cpu-offload", "--ctx", "512", "--wait",
                                "--selector", "box=" + box, "--", "-t", "1"], env=cli_env, capture_output=True, text=True)
            if r.returncode:
                raise SystemExit("deploy %s: %s%s" % (name, r.stdout, r.stderr))
            took = time.monotonic() - t0
            if not keep:
                subprocess.run([corral, "rm", name], env=cli_env, check=True, capture_output=True)
                time.sleep(0.5)
            return took

        def came_ms(worker, how):
            """the last transfer time the worker logged for a file that came from how"""
            with open(logs[worker]) as f:
                found = re.findall(r"came from %s.* in (\d+) ms" % how, f.read())
            return int(found[-1]) if found else None
        res = {"hf_first": deploy("hf0", "--hf", "bench/tiny-GGUF:Q8_0")}
        hf, path = [], []
        for r in range(args.rounds):  # interleaved; the hub's file is in the cache after the first
            hf.append(deploy("hf%d" % (r + 1), "--hf", "bench/tiny-GGUF:Q8_0"))
            path.append(deploy("p%d" % r, "--path", tiny))
        res["hf_cached_median_s"] = statistics.median(hf)
        res["path_median_s"] = statistics.median(path)
        res["ratio"] = res["hf_cached_median_s"] / res["path_median_s"]
        before = len(hub.seen)
        plan = {}
        for _ in range(100):
            plan = api(url, "POST", "/api/models/plan", {"hf": "bench/big-vocab-GGUF", "allow_cpu_offload": True}, admin)
            if not plan.get("waiting_for"):
                break
            time.sleep(0.2)
        read, starts = 0, 0
        for (where, _, _, _, rng) in hub.seen[before:]:  # the CDN's answers (the hub only redirects)
            if where != "cdn" or not rng or not rng.startswith("bytes="):
                continue
            a, _, b = rng[6:].partition("-")
            starts += a == "0"  # each worker's inspection starts at 0
            read += int(b) - int(a) + 1 if b else len(big_bytes) - int(a)
        read //= max(starts, 1)
        res["header_read_bytes"], res["header_file_bytes"] = read, len(big_bytes)
        # a 64 MB file: from the hub and from nginx to w1, then from w1 to w2
        peer, from_hub, from_nginx = [], [], []
        for r in range(args.rounds):
            deploy("wh%d" % r, "--hf", "bench/wide-GGUF:F16", keep=True)
            from_hub.append(came_ms("w1", "the source"))
            deploy("wp%d" % r, "--hf", "bench/wide-GGUF:F16", box="2")
            peer.append(came_ms("w2", "peer w1"))
            deploy("wn%d" % r, "--url", "http://127.0.0.1:%d/wide.gguf" % ng_port, "--sha256", wide_sha)
            from_nginx.append(came_ms("w1", "the source http://127.0.0.1:%d" % ng_port))
            subprocess.run([corral, "rm", "wh%d" % r], env=cli_env, check=True, capture_output=True)
            time.sleep(1.5)
            subprocess.run([corral, "files", "rm", "--unused"], env=cli_env, check=True, capture_output=True)
            time.sleep(1.5)
        size = os.path.getsize(wide)
        res["peer_file_bytes"] = size
        res["peer_ms_median"] = statistics.median(peer)
        res["hub_ms_median"] = statistics.median(from_hub)
        res["nginx_ms_median"] = statistics.median(from_nginx)
        res["placed"] = plan.get("placed")
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "hub.json"), "w") as f:
            json.dump(res, f, indent=1)
        print("hub: deploy --hf to running %.2f s the first time (with the transfer), %.2f s cached (median of %d); "
              "deploy --path %.2f s; ratio %.2f. Inspecting a GGUF with a 150k-token vocabulary read %.1f MB of "
              "its %.1f MB by range" % (res["hf_first"], res["hf_cached_median_s"], args.rounds, res["path_median_s"],
                                       res["ratio"], read / 1e6, len(big_bytes) / 1e6))
        print("hub: a %.0f MB file to a second worker from a peer worker %d ms (median of %d), to the first worker "
              "from the local hub %d ms, from nginx %d ms: peer/hub %.2f, peer/nginx %.2f"
              % (size / 1e6, res["peer_ms_median"], args.rounds, res["hub_ms_median"], res["nginx_ms_median"],
                 res["peer_ms_median"] / max(res["hub_ms_median"], 1), res["peer_ms_median"] / max(res["nginx_ms_median"], 1)))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["pkill", "-f", tmp], check=False)
        hub.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
