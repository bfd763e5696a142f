#!/usr/bin/env python3
"""Cost of `corral doctor --cluster` at 100 workers: a real server with 100
registered workers, each having sent a full report like a real worker's
(this machine's `corral doctor --json`: system, engines, every node check)
plus 99 measured peers. Times the whole command (CLI start, one GET
/api/workers with every worker's checks and the server's address check,
printing the checks and the round-trip table) and, as the yardstick, `corral
workers` (the same API call, a plain table). Medians of --runs runs."""
import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request

from run_status import ROOT, free_port, wait_http


def post(url, path, body, token):
    req = urllib.request.Request(url + path, method="POST", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def timed(cmd, env, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.runs = 5
    corral = os.path.join(ROOT, args.build, "corral")
    tmp = tempfile.mkdtemp(prefix="corral-bench-doctor-")
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    server = subprocess.Popen([corral, "server", "--disable-worker", "--host", "127.0.0.1", "--port", str(port),
                               "--data-dir", tmp, "--probe-interval", "0"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_http(url + "/healthz")
        with open(os.path.join(tmp, "token")) as f:
            token = f.read().strip()
        with open(os.path.join(tmp, "initial_admin_password")) as f:
            pw = f.read().strip()
        admin = post(url, "/api/auth/login", {"username": "admin", "password": pw}, "")["token"]
        base = json.loads(subprocess.run([corral, "doctor", "--json"], capture_output=True, text=True).stdout)
        ids = []
        for i in range(args.workers):
            w = post(url, "/api/workers/register", {"name": "w%03d" % i, "port": 10150 + i, "address": "127.0.0.1",
                                                    "status_interval_s": 3600}, token)
            ids.append((w["id"], w["secret"]))
        for i, (wid, secret) in enumerate(ids):
            report = dict(base)
            report["base"] = 1
            report["status_interval_s"] = 3600
            report["peers"] = {other: {"name": "w%03d" % j, "rtt_ms": 0.2 + j / 1000}
                               for j, (other, _) in enumerate(ids) if other != wid}
            post(url, "/api/workers/%s/status" % wid, report, secret)
        env = dict(os.environ, CORRAL_SERVER_URL=url, CORRAL_API_TOKEN=admin)
        doctor = timed([corral, "doctor", "--cluster"], env, args.runs)
        workers = timed([corral, "workers"], env, args.runs)
        out = subprocess.run([corral, "doctor", "--cluster"], env=env, capture_output=True, text=True).stdout
        print("doctor --cluster at %d workers: %.1f ms median (corral workers: %.1f ms; ratio %.2f); %d lines, "
              "%d checks listed" % (args.workers, doctor, workers, doctor / workers, len(out.splitlines()),
                                    out.count(" fix: ")))
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        with open(os.path.join(ROOT, "bench", "results", "doctor.json"), "w") as f:
            json.dump({"workers": args.workers, "doctor_cluster_ms": doctor, "workers_ms": workers}, f)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
