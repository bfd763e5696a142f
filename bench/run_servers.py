#!/usr/bin/env python3
"""Gateway scale-out benchmark: one, two and three corral servers on one
private PostgreSQL (scripts/pg-test.sh) behind HAProxy in TCP mode, the
configuration docs/ops.md shows. One leads (and has the worker, which runs
bench/upstream as its engine); the others follow and serve /v1 from the
shared state. The same streaming load (bench/gwload: 200-chunk SSE streams
over --conns connections) goes through HAProxy to 1, 2 and 3 servers,
interleaved over --rounds; the yardstick is the same load straight to the
upstream. Prints streams/s per server count (medians) and the ratio to one
server, and writes bench/results/servers.json. The machine's cores bound
the scaling: load generator, HAProxy, servers and upstream share them."""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_gateway import api, free_port, kill_marked, load  # noqa: E402
from run_status import wait_http  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2
    build = os.path.join(ROOT, args.build)
    corral, up = os.path.join(build, "corral"), os.path.join(build, "bench", "upstream")
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    tmp = tempfile.mkdtemp(prefix="corral-bench-servers-")
    pg_dir = tempfile.mkdtemp(prefix="corral-pg-")
    pg = os.path.join(ROOT, "scripts", "pg-test.sh")
    store = subprocess.run([pg, "start", pg_dir], check=True, capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, CORRAL_TEST_RUN=tmp, CORRAL_LOG_LEVEL=os.environ.get("CORRAL_LOG_LEVEL", "warn"))
    procs = []

    def spawn(argv, name):
        p = subprocess.Popen(argv, stdout=open(os.path.join(tmp, name + ".log"), "w"), stderr=subprocess.STDOUT,
                             env=env)
        procs.append(p)
        return p

    try:
        up_port = free_port()
        spawn([up, "--port", str(up_port), "--chunks", str(args.chunks)], "upstream")
        wait_http("http://127.0.0.1:%d/health" % up_port)
        ports = [free_port() for _ in range(3)]
        for i, port in enumerate(ports):
            data = os.path.join(tmp, "server%d" % i)
            if i:
                os.makedirs(data, mode=0o700)
                shutil.copy(os.path.join(tmp, "server0", "token"), os.path.join(data, "token"))
            spawn([corral, "server", "--disable-worker", "--host", "127.0.0.1", "--port", str(port), "--data-dir",
                   data, "--store", store, "--gateway-pool", "512"], "server%d" % i)
            wait_http("http://127.0.0.1:%d/healthz" % port)
        url = "http://127.0.0.1:%d" % ports[0]
        engines = os.path.join(tmp, "engines.json")
        with open(engines, "w") as f:
            json.dump({"engines": [{"name": "bench", "command": [up, "--host", "{host}", "--port", "{port}",
                                                                 "--chunks", str(args.chunks)],
                                    "version": ["{exe}", "--version"], "health": "/health",
                                    "devices": ["cpu"]}]}, f)
        token = open(os.path.join(tmp, "server0", "token")).read().strip()
        engine_port = free_port()
        spawn([corral, "worker", "--server-url", url, "--token", token, "--name", "bench", "--data-dir",
               os.path.join(tmp, "worker"), "--worker-port", str(free_port()), "--listen-host", "127.0.0.1",
               "--engines-config", engines, "--port-range", "%d-%d" % (engine_port, engine_port)], "worker")
        pw = open(os.path.join(tmp, "server0", "initial_admin_password")).read().strip()
        admin = api(url, "POST", "/api/auth/login", {"username": "admin", "password": pw})["token"]
        model = os.path.join(tmp, "tiny.gguf")
        subprocess.run([os.path.join(build, "tools", "mkmodel"), "--out", model], check=True)
        end = time.time() + 30
        while not api(url, "GET", "/api/workers", token=admin)["workers"]:
            time.sleep(0.1)
        api(url, "POST", "/api/models", {"name": "bench", "path": model, "engine": "bench",
                                         "allow_cpu_offload": True}, admin)
        key = api(url, "POST", "/api/keys", {"name": "bench"}, admin)["key"]
        for port in ports:  # every server routes to the running engine (followers within a second)
            while True:
                insts = api("http://127.0.0.1:%d" % port, "GET", "/api/instances?model=bench", token=admin)["instances"]
                if insts and insts[0]["state"] == "running" and insts[0].get("endpoint"):
                    break
                if time.time() > end:
                    raise RuntimeError("the bench engine did not start; see %s/worker.log" % tmp)
                time.sleep(0.1)
        lb = {}
        cfg = os.path.join(tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("global\n    maxconn 4096\ndefaults\n    mode tcp\n    timeout connect 1s\n"
                    "    timeout client 60s\n    timeout server 60s\n")
            for n in (1, 2, 3):
                lb[n] = free_port()
                f.write("listen servers%d\n    bind 127.0.0.1:%d\n    balance leastconn\n" % (n, lb[n]))
                for i in range(n):
                    f.write("    server s%d 127.0.0.1:%d\n" % (i, ports[i]))
        spawn([haproxy, "-f", cfg, "-db"], "haproxy")
        time.sleep(0.5)
        rates = {"direct": [], 1: [], 2: [], 3: []}
        for _ in range(args.rounds):
            rates["direct"].append(load(build, up_port, key, "stream", args.conns, args.seconds, 1)["requests"]
                                   / args.seconds)
            for n in (1, 2, 3):
                r = load(build, lb[n], key, "stream", args.conns, args.seconds, 1)
                if r.get("errors"):
                    raise RuntimeError("%d errors through %d servers: %s" % (r["errors"], n, r))
                rates[n].append(r["requests"] / args.seconds)
        med = {str(k): statistics.median(v) for k, v in rates.items()}
        res = {"conns": args.conns, "chunks": args.chunks, "rounds": args.rounds, "seconds": args.seconds,
               "cores": os.cpu_count(), "streams_per_s": med, "all": {str(k): v for k, v in rates.items()}}
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "servers.json"), "w") as f:
            json.dump(res, f, indent=1)
        print("servers behind haproxy (%d-chunk streams, %d connections, %d cores, medians of %d): direct %.0f/s; "
              "1 server %.0f/s; 2 servers %.0f/s (%.2fx); 3 servers %.0f/s (%.2fx)"
              % (args.chunks, args.conns, os.cpu_count(), args.rounds, med["direct"], med["1"], med["2"],
                 med["2"] / med["1"], med["3"], med["3"] / med["1"]))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        kill_marked(tmp)  # the worker's engine outlives it (a restarted worker adopts it)
        subprocess.run([pg, "stop", pg_dir], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
