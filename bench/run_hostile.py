#!/usr/bin/env python3
"""The server under hostile clients (bench/README.md):

1. logins: --clients threads log in with the right password as fast as they
   can for --seconds; counted: logins answered 200 per second, the 503s of a
   full hashing pool, the server's peak RSS (VmHWM) and /healthz latency
   (p50, p99) measured meanwhile on its own connection. Yardstick: argon2id
   verifications per second of the same hash in one thread of this process
   (libsodium through ctypes), times the server's pool threads.
2. slow connections: --slow connections each send part of a request head
   and stall; /healthz latency (p50, p99) with them open, against the same
   server with none open (the yardstick). The head deadline is raised for the
   run so that every slow connection stays open while it is measured."""
import argparse
import ctypes
import ctypes.util
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

from run_status import ROOT, free_port, wait_http


def status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def healthz_latencies(port, seconds, stop=None):
    """GET /healthz on one keep-alive connection, every 10 ms; latencies in ms."""
    out = []
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        t0 = time.perf_counter()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("server closed the measuring connection")
            data += chunk
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
    s.close()
    return out


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def start_server(corral, extra=()):
    tmp = tempfile.mkdtemp(prefix="corral-bench-hostile-")
    port = free_port()
    p = subprocess.Popen([corral, "server", "--disable-worker", "--host", "127.0.0.1", "--port", str(port),
                          "--data-dir", tmp, "--probe-interval", "0"] + list(extra),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http("http://127.0.0.1:%d/healthz" % port)
    with open(os.path.join(tmp, "initial_admin_password")) as f:
        pw = f.read().strip()
    p.tmp = tmp  # removed by stop_server
    return p, port, pw


def stop_server(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:  # one that hangs on SIGTERM
        p.kill()
        p.wait()
    shutil.rmtree(p.tmp, ignore_errors=True)


def yardstick_verifies(seconds):
    sodium = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
    sodium.sodium_init()
    out = ctypes.create_string_buffer(128)
    pw = b"correct horse battery"
    # crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE, as the server
    sodium.crypto_pwhash_str(out, pw, ctypes.c_ulonglong(len(pw)), ctypes.c_ulonglong(2),
                             ctypes.c_size_t(64 << 20))
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        assert sodium.crypto_pwhash_str_verify(out, pw, ctypes.c_ulonglong(len(pw))) == 0
        n += 1
    return n / seconds


def bench_logins(corral, clients, seconds):
    server, port, pw = start_server(corral)
    url = "http://127.0.0.1:%d/api/auth/login" % port
    body = json.dumps({"username": "admin", "password": pw}).encode()
    counts = {"ok": 0, "busy": 0, "other": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                    kind = "ok"
            except urllib.error.HTTPError as e:
                e.read()
                kind = "busy" if e.code == 503 else "other"
            except OSError:
                kind = "other"
            with lock:
                counts[kind] += 1
            if kind == "busy":
                time.sleep(0.05)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    threads_before = status(server.pid, "Threads")
    for t in threads:
        t.start()
    lat = healthz_latencies(port, seconds)
    stop.set()
    for t in threads:
        t.join(35)
    result = {
        "clients": clients, "seconds": seconds, "logins_per_s": counts["ok"] / seconds,
        "answered_503": counts["busy"], "other_errors": counts["other"],
        "rss_peak_kb": status(server.pid, "VmHWM"), "server_threads_added": status(server.pid, "Threads") - threads_before,
        "healthz_p50_ms": pct(lat, 50), "healthz_p99_ms": pct(lat, 99),
    }
    stop_server(server)
    return result


def bench_slow(corral, n_slow, seconds):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server, port, _ = start_server(corral, ("--header-timeout", "600", "--body-timeout", "600"))
    base = healthz_latencies(port, seconds)
    socks = []
    for _ in range(n_slow):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    time.sleep(1)
    loaded = healthz_latencies(port, seconds)
    result = {
        "slow_connections": n_slow, "healthz_p50_ms": pct(loaded, 50), "healthz_p99_ms": pct(loaded, 99),
        "yardstick_p50_ms": pct(base, 50), "yardstick_p99_ms": pct(base, 99),
        "p50_ratio": pct(loaded, 50) / pct(base, 50), "p99_ratio": pct(loaded, 99) / pct(base, 99),
        "rss_kb": status(server.pid, "VmRSS"),
    }
    for s in socks:
        s.close()
    stop_server(server)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--slow", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 5
    corral = os.path.join(ROOT, args.build, "corral")
    yard = yardstick_verifies(min(args.seconds, 5))
    logins = bench_logins(corral, args.clients, args.seconds)
    cores = os.cpu_count() or 1
    pool = max(1, cores // 2)
    logins["yardstick_verifies_per_s_per_thread"] = yard
    logins["pool_threads"] = pool
    logins["ratio_to_yardstick"] = logins["logins_per_s"] / (yard * pool)
    slow = bench_slow(corral, args.slow, args.seconds)
    out = {"logins": logins, "slow": slow}
    print(json.dumps(out, indent=2))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "hostile.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
