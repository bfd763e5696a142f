#!/usr/bin/env python3
"""bench/run_rolling: changing a serving model under continuous traffic.

A 2-replica tiny model on one worker gets a new --ctx while two clients send
chat requests one after another through /v1. Measured per run: the time until
every new instance runs and the old ones are gone, and the requests that
failed meanwhile.

- corral update NAME --ctx N --wait (the rolling update);
- yardstick: what an operator had before, `corral rm` then `corral deploy
  --wait` with the new spec (the same traffic, the same end state).

Usage: bench/run_rolling.py [--build DIR] [--quick]  (needs CORRAL_LLAMA_BIN or
the cache of scripts/llama-build.sh). Prints medians and the ratio."""
import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from run_engines import ROOT, Cluster, find_llama_bin, wait


def traffic(url, key, stop, out):
    body = b'{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":4}'
    while not stop.is_set():
        req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                out["ok"] += 1
        except (urllib.error.URLError, OSError):
            out["failed"] += 1
            time.sleep(0.01)  # a refused request answers at once; do not spin


def under_traffic(c, key, action):
    stop = threading.Event()
    out = {"ok": 0, "failed": 0}
    clients = [threading.Thread(target=traffic, args=(c.url, key, stop, out)) for _ in range(2)]
    for t in clients:
        t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    try:
        action()
        dt = time.monotonic() - t0
    finally:
        stop.set()
        for t in clients:
            t.join()
    return dt, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    llama_bin = find_llama_bin()
    runs = 3 if a.quick else 5
    tmp = tempfile.mkdtemp(prefix="corral-bench-rolling-")
    tiny = tmp + "/tiny.gguf"
    subprocess.run([os.path.join(a.build, "tools", "mkmodel"), "--out", tiny], check=True)
    c = Cluster(a.build, llama_bin, [("w1", 0)])
    env = dict(c.env, CORRAL_SERVER_URL=c.url, CORRAL_API_TOKEN=c.token)
    cli = lambda *args: subprocess.run([c.corral] + list(args), env=env, capture_output=True, text=True, timeout=300)
    spec = ["--path", tiny, "--replicas", "2", "--allow-cpu-offload"]
    rolling, yard = [], []
    try:
        r = cli("deploy", "tiny", *spec, "--ctx", "2048", "--wait", "--", "-t", "1")
        assert r.returncode == 0, r.stdout + r.stderr
        key = cli("keys", "create", "bench").stdout.strip()
        for n in range(runs):
            ctx = "1024" if n % 2 == 0 else "2048"
            dt, out = under_traffic(c, key, lambda: cli("update", "tiny", "--ctx", ctx, "--wait", "--timeout", "120"))
            rolling.append((dt, out))

            def redeploy():
                cli("rm", "tiny")
                wait(lambda: not c.instances("tiny"), what="the old instances gone")
                r = cli("deploy", "tiny", *spec, "--ctx", ctx, "--wait", "--timeout", "120", "--", "-t", "1")
                assert r.returncode == 0, r.stdout + r.stderr
            # back to the previous spec first, so that both start from the same state
            cli("update", "tiny", "--ctx", "2048" if ctx == "1024" else "1024", "--wait")
            dt, out = under_traffic(c, key, redeploy)
            yard.append((dt, out))
    finally:
        c.close()
        subprocess.run(["pkill", "-f", tmp], check=False)

    def show(name, rs):
        t = statistics.median(x[0] for x in rs)
        failed = statistics.median(x[1]["failed"] for x in rs)
        total = statistics.median(x[1]["ok"] + x[1]["failed"] for x in rs)
        print("%-32s median %.2f s, %d requests, %d failed (runs: %s)"
              % (name, t, total, failed, ", ".join("%.1fs/%d failed" % (x[0], x[1]["failed"]) for x in rs)))
        return t, failed

    print("rolling update of a 2-replica tiny model under 2 clients' continuous traffic (%d runs)" % runs)
    t_roll, f_roll = show("corral update --ctx --wait", rolling)
    t_yard, f_yard = show("yardstick: rm + deploy --wait", yard)
    print("time ratio update/yardstick: %.2f; failed requests: %d vs %d" % (t_roll / t_yard, f_roll, f_yard))


if __name__ == "__main__":
    main()
