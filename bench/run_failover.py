#!/usr/bin/env python3
"""Failover benchmark: two corral servers on one private PostgreSQL
(scripts/pg-test.sh), one leading, one following (it serves /v1 and /api
meanwhile). Each trial kills the leader with SIGKILL and measures the time
until the follower says it leads (/healthz "leading"); the killed one is
started again (and follows) for the next trial. The yardstick is the same
server's plain start (process start to leading) on the same database. Prints the median and max over --trials (20) and
writes bench/results/failover.json."""
import argparse
import json
import random
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
sys.path.insert(0, HERE)
from run_gateway import free_port  # noqa: E402


def leads(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=0.5) as r:
            return json.loads(r.read()).get("leading") is True
    except (OSError, ValueError):
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 trials")
    args = ap.parse_args()
    if args.quick:
        args.trials = 5
    corral = os.path.join(ROOT, args.build, "corral")
    tmp = tempfile.mkdtemp(prefix="corral-bench-failover-")
    pg_dir = tempfile.mkdtemp(prefix="corral-pg-")
    pg = os.path.join(ROOT, "scripts", "pg-test.sh")
    url = subprocess.run([pg, "start", pg_dir], check=True, capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, CORRAL_LOG_LEVEL="warn")
    ports = [free_port(), free_port()]
    procs = [None, None]

    def start(i):
        data = os.path.join(tmp, "s%d" % i)
        procs[i] = subprocess.Popen([corral, "server", "--disable-worker", "--host", "127.0.0.1", "--port",
                                     str(ports[i]), "--data-dir", data, "--store", url], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        t0 = time.monotonic()
        start(0)
        while not leads(ports[0]):
            time.sleep(0.01)
        plain = time.monotonic() - t0
        os.makedirs(os.path.join(tmp, "s1"), mode=0o700)
        shutil.copy(os.path.join(tmp, "s0", "token"), os.path.join(tmp, "s1", "token"))
        start(1)
        time.sleep(1)
        leader, took = 0, []
        for _ in range(args.trials):
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait()
            t0 = time.monotonic()
            other = 1 - leader
            while not leads(ports[other]):
                time.sleep(0.01)
            took.append(time.monotonic() - t0)
            start(leader)  # back as a follower
            time.sleep(1 + random.random() / 2)  # any phase of the follower's 250 ms lock poll
            leader = other
        res = {"trials": args.trials, "median_s": statistics.median(took), "max_s": max(took),
               "plain_start_s": plain, "all_s": took}
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "failover.json"), "w") as f:
            json.dump(res, f, indent=1)
        print("failover: kill -9 of the leader to the follower leading, median %.2f s, max %.2f s over %d trials; "
              "a plain start on the same database takes %.2f s (ratio %.2f)"
              % (res["median_s"], res["max_s"], args.trials, plain, res["median_s"] / plain))
    finally:
        for p in procs:
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run([pg, "stop", pg_dir], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
