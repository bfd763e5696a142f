#!/usr/bin/env python3
"""Control-plane benchmark: a real `corral server` (SQLite, --disable-worker)
receives status reports from N simulated workers with 8 GPUs each, every 5 s,
while GET /api/workers/{id} latency is measured. The yardstick is nginx
answering the same POSTs with a fixed 200 (`return 200`), measured the same
way. With --postgres the same load runs once more on a server whose store is
a private PostgreSQL (scripts/pg-test.sh), and PostgreSQL's own CPU is counted
too. Prints a table and writes bench/results/status.json. See bench/README.md."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_http(url, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError as e:
            if hasattr(e, "code"):
                return
            time.sleep(0.1)
    raise RuntimeError("nothing answers at " + url)


def pg_cpu_s(pg_dir):
    """CPU seconds of the PostgreSQL postmaster and its live children."""
    with open(os.path.join(pg_dir, "data", "postmaster.pid")) as f:
        master = int(f.readline())
    kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return sum(cpu_s(int(p)) for p in [master] + kids if os.path.exists("/proc/%s" % p))


def run_corral(build, n, interval, duration, warmup, tmp, store=None, pg_dir=None, followers=0):
    port = free_port()
    data = os.path.join(tmp, "corral-%d-%s" % (n, "pg" if store else "sqlite"))
    server = subprocess.Popen([os.path.join(build, "corral"), "server", "--disable-worker", "--host", "127.0.0.1",
                               "--port", str(port), "--data-dir", data] + (["--store", store] if store else []),
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "server-%d.log" % n), "w"),
                              env=dict(os.environ, CORRAL_LOG_LEVEL="warn"))
    try:
        url = "http://127.0.0.1:%d" % port
        wait_http(url + "/healthz")
        time.sleep(1)
        idle = rss_kb(server.pid)
        pw = open(os.path.join(data, "initial_admin_password")).read().strip()
        req = urllib.request.Request(url + "/api/auth/login", method="POST",
                                     data=json.dumps({"username": "admin", "password": pw}).encode())
        admin = json.load(urllib.request.urlopen(req))["token"]
        token = open(os.path.join(data, "token")).read().strip()
        extra = []  # followers on the same PostgreSQL: every other worker reports to the first
        for k in range(followers):
            fdata = data + "-f%d" % k
            os.makedirs(fdata, mode=0o700)
            shutil.copy(os.path.join(data, "token"), os.path.join(fdata, "token"))
            fport = free_port()
            extra.append(subprocess.Popen([os.path.join(build, "corral"), "server", "--disable-worker", "--host",
                                           "127.0.0.1", "--port", str(fport), "--data-dir", fdata, "--store", store],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env=dict(os.environ, CORRAL_LOG_LEVEL="warn")))
            wait_http("http://127.0.0.1:%d/healthz" % fport)
            if k == 0:
                also = ["--also-url", "http://127.0.0.1:%d" % fport, "--also-pid", str(extra[0].pid)]
        f0 = [cpu_s(p.pid) for p in extra]
        pg0 = pg_cpu_s(pg_dir) if pg_dir else 0
        out = subprocess.run([os.path.join(build, "bench", "statusload"), "--url", url, "--token", token,
                              "--admin-token", admin, "--server-pid", str(server.pid), "--workers", str(n),
                              "--interval", str(interval), "--duration", str(duration), "--warmup", str(warmup)]
                             + (also if extra else []),
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        if pg_dir:
            r["pg_cpu_s"] = pg_cpu_s(pg_dir) - pg0
        r["follower_cpu_s"] = [cpu_s(p.pid) - c for p, c in zip(extra, f0)]
        r["rss_idle_kb"] = idle
        r["metrics"] = scrape_cost(url, admin, server.pid)
        return r
    finally:
        for p in [server] + (extra if "extra" in locals() else []):
            p.send_signal(signal.SIGTERM)
            p.wait(20)


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape_cost(url, admin, pid, rounds=20):
    """GET /metrics of the N workers x 8 GPUs just reported, against GET /api/workers (the same
    workers as JSON) as the yardstick: median wall time and server CPU per call."""
    out = {}
    for name, path, token in (("metrics", "/metrics", None), ("workers_json", "/api/workers", admin)):
        times, size = [], 0
        c0 = cpu_s(pid)
        for _ in range(rounds):
            req = urllib.request.Request(url + path)
            if token:
                req.add_header("Authorization", "Bearer " + token)
            t0 = time.monotonic()
            size = len(urllib.request.urlopen(req, timeout=30).read())
            times.append(time.monotonic() - t0)
        times.sort()
        out[name] = {"p50_ms": times[len(times) // 2] * 1000, "cpu_ms": (cpu_s(pid) - c0) * 1000 / rounds,
                     "bytes": size}
    return out


def run_nginx(build, n, interval, duration, warmup, tmp):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        return None
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 1; daemon off; master_process on; pid %s/nginx.pid; error_log %s/nginx.err;
events { worker_connections 1024; }
http { access_log off; client_body_buffer_size 64k;
  server { listen 127.0.0.1:%d;
    location / { return 200 '{"state":"ready","server_time_ms":0}'; } } }
""" % (tmp, tmp, port))
    master = subprocess.Popen([nginx, "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http("http://127.0.0.1:%d/" % port)
        worker = int(subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True).stdout.split()[0])
        out = subprocess.run([os.path.join(build, "bench", "statusload"), "--url", "http://127.0.0.1:%d" % port,
                              "--token", "x", "--admin-token", "x", "--server-pid", str(worker), "--yardstick",
                              "--workers", str(n), "--interval", str(interval), "--duration", str(duration),
                              "--warmup", str(warmup)], capture_output=True, text=True, check=True).stdout
        return json.loads(out)
    finally:
        master.send_signal(signal.SIGQUIT)
        master.wait(20)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--workers", default="1000,10000")
    ap.add_argument("--interval", type=int, default=5)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="1,000 workers for 10 s (CI smoke run)")
    ap.add_argument("--postgres", action="store_true", help="also on a private PostgreSQL (--store)")
    ap.add_argument("--followers", type=int, default=0,
                    help="with --postgres: this many follower servers on the same database; every other "
                         "simulated worker reports to the first")
    args = ap.parse_args()
    if args.quick:
        args.workers, args.duration, args.warmup = "1000", 10, 5
    build = os.path.join(ROOT, args.build)
    tmp = tempfile.mkdtemp(prefix="corral-bench-")
    results = []
    try:
        for n in [int(x) for x in args.workers.split(",")]:
            c = run_corral(build, n, args.interval, args.duration, args.warmup, tmp)
            y = run_nginx(build, n, args.interval, args.duration, args.warmup, tmp)
            results.append({"corral": c, "nginx": y})
            print("N=%-6d corral: %.0f msg/s, %.1f us CPU/msg (%.3f cores), RSS %.1f MB (idle %.1f MB), "
                  "GET p50 %.2f ms p99 %.2f ms, %d failed" %
                  (n, c["msgs_per_s"], c["cpu_us_per_msg"], c["cpu_cores"], c["rss_kb"] / 1024,
                   c["rss_idle_kb"] / 1024, c["get_p50_ms"], c["get_p99_ms"], c["status_failed"]))
            m = c["metrics"]
            print("         GET /metrics: p50 %.1f ms, %.1f ms CPU, %d KB; GET /api/workers: p50 %.1f ms, "
                  "%.1f ms CPU, %d KB; ratio %.2f (time), %.2f (CPU)" %
                  (m["metrics"]["p50_ms"], m["metrics"]["cpu_ms"], m["metrics"]["bytes"] // 1024,
                   m["workers_json"]["p50_ms"], m["workers_json"]["cpu_ms"], m["workers_json"]["bytes"] // 1024,
                   m["metrics"]["p50_ms"] / m["workers_json"]["p50_ms"],
                   m["metrics"]["cpu_ms"] / m["workers_json"]["cpu_ms"] if m["workers_json"]["cpu_ms"] else 0))
            if args.postgres:
                pg_dir = tempfile.mkdtemp(prefix="corral-pg-")  # postgres must reach it: not under tmp (0700)
                url = subprocess.run([os.path.join(ROOT, "scripts", "pg-test.sh"), "start", pg_dir], check=True,
                                     capture_output=True, text=True).stdout.strip()
                try:
                    p = run_corral(build, n, args.interval, args.duration, args.warmup, tmp, url, pg_dir,
                                   args.followers)
                finally:
                    subprocess.run([os.path.join(ROOT, "scripts", "pg-test.sh"), "stop", pg_dir], capture_output=True)
                results[-1]["corral_pg"] = p
                print("         on PostgreSQL: %.0f msg/s, %.1f us CPU/msg (%.3f cores), PostgreSQL %.2f CPU s in the "
                      "run, GET p50 %.2f ms p99 %.2f ms, %d failed; CPU per msg PostgreSQL/SQLite server %.2f" %
                      (p["msgs_per_s"], p["cpu_us_per_msg"], p["cpu_cores"], p["pg_cpu_s"], p["get_p50_ms"],
                       p["get_p99_ms"], p["status_failed"], p["cpu_us_per_msg"] / c["cpu_us_per_msg"]))
                if p["follower_cpu_s"]:
                    print("         spread over two servers (every other worker reports to a follower, which "
                          "leaves its reports to the leader as mail): leader %.1f us CPU/msg, follower %.1f us "
                          "CPU/msg, together %.1f us/msg (%.2fx one server on SQLite); followers %s CPU s each"
                          % (p["cpu_us_per_msg"], p["also_cpu_us_per_msg"],
                             p["cpu_us_per_msg"] + p["also_cpu_us_per_msg"],
                             (p["cpu_us_per_msg"] + p["also_cpu_us_per_msg"]) / c["cpu_us_per_msg"],
                             ", ".join("%.2f" % x for x in p["follower_cpu_s"])))
            if y:
                print("         nginx (return 200): %.1f us CPU/msg (%.3f cores), p50 %.2f ms p99 %.2f ms; "
                      "corral/nginx CPU per msg = %.2f" %
                      (y["cpu_us_per_msg"], y["cpu_cores"], y["get_p50_ms"], y["get_p99_ms"],
                       c["cpu_us_per_msg"] / y["cpu_us_per_msg"] if y["cpu_us_per_msg"] else float("nan")))
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "status.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
