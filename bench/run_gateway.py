#!/usr/bin/env python3
"""Gateway benchmark: the same load, interleaved in one run, sent directly to
a fast C upstream (bench/upstream.c, OpenAI-style SSE of --chunks events or a
small JSON answer), through Corral's gateway (API key auth, routing,
metering on; the upstream runs as a user-defined engine of a worker), and
through nginx as the yardstick (one worker process, proxy_pass with upstream
keep-alive, proxy_buffering off). Reports streams/s, requests/s, proxy CPU
per stream, added time to first chunk (p50, p99) at 256 concurrent streams,
and the memory of 10,000 concurrent idle streams, each as a ratio to nginx.
--tls puts Corral (--tls-cert) and nginx (ssl) on TLS with the same
certificate; the direct target stays plain. See bench/README.md."""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from run_status import wait_http

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
from harness import kill_marked  # noqa: E402  engines outlive their worker (adopted on its restart)
TLS = None  # (cert, key) under --tls


def scheme():
    return "https" if TLS else "http"


def make_cert(tmp):
    """A CA and a server certificate for 127.0.0.1 (openssl CLI), the one both proxies serve."""
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)
    ca, cakey, crt, key, csr, ext = (os.path.join(tmp, n) for n in ("ca.pem", "ca.key", "crt.pem", "crt.key",
                                                                   "crt.csr", "ext"))
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", cakey,
        "-out", ca, "-days", "2", "-subj", "/CN=bench-ca")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out",
        csr, "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey, "-out", crt, "-days", "2", "-extfile", ext)
    with open(crt, "a") as f, open(ca) as g:
        f.write(g.read())
    ctx = ssl.create_default_context(cafile=ca)
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx)))
    return crt, key


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_s(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def mem_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def api(url, method, path, body=None, token=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    return json.load(urllib.request.urlopen(req, timeout=10))


class Setup:
    def __init__(self, build, tmp, chunks, servers=(("corral", ()),)):
        self.procs = []
        self.build, self.tmp = build, tmp
        up = os.path.join(build, "bench", "upstream")
        # direct: the upstream on its own
        self.up_port = free_port()
        self.upstream = self.spawn([up, "--port", str(self.up_port), "--chunks", str(chunks)], "upstream")
        wait_http("http://127.0.0.1:%d/health" % self.up_port)
        # nginx in front of it
        self.ng_port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""worker_processes 1; daemon off; master_process on; pid %s/nginx.pid; error_log %s/nginx.err;
worker_rlimit_nofile 65536;
events { worker_connections 30000; }
http { access_log off;
  upstream engine { server 127.0.0.1:%d; keepalive 512; }
  server { listen 127.0.0.1:%d backlog=4096%s;
    %s
    location / { proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering off; proxy_read_timeout 600s; } } }
""" % (tmp, tmp, self.up_port, self.ng_port, " ssl" if TLS else "",
       "ssl_certificate %s; ssl_certificate_key %s;" % TLS if TLS else ""))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = self.spawn([nginx, "-c", conf, "-p", tmp], "nginx")
        wait_http("%s://127.0.0.1:%d/health" % (scheme(), self.ng_port))
        self.nginx_pids = [self.nginx.pid] + [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(self.nginx.pid)], capture_output=True, text=True).stdout.split()]
        # Corral: a server each, with a worker running the upstream as its engine, a model, a key
        self.corral = {}
        for name, extra in servers:
            self.corral[name] = self.start_corral(name, extra, chunks)
        self.key = self.corral[servers[0][0]]["key"]

    def start_corral(self, name, extra, chunks):
        build, tmp, up = self.build, self.tmp, os.path.join(self.build, "bench", "upstream")
        corral = os.path.join(build, "corral")
        port = free_port()
        data = os.path.join(tmp, name + "-server")
        server = self.spawn([corral, "server", "--disable-worker", "--host", "127.0.0.1", "--port",
                             str(port), "--data-dir", data, "--gateway-pool", "512"] + list(extra) +
                            (["--tls-cert", TLS[0], "--tls-key", TLS[1]] if TLS else []), name)
        url = "%s://127.0.0.1:%d" % (scheme(), port)
        wait_http(url + "/healthz")
        engines = os.path.join(tmp, name + "-engines.json")
        with open(engines, "w") as f:
            json.dump({"engines": [{"name": "bench", "command": [up, "--host", "{host}", "--port", "{port}",
                                                                 "--chunks", str(chunks)],
                                    "version": ["{exe}", "--version"], "health": "/health",
                                    "devices": ["cpu"]}]}, f)
        token = open(os.path.join(data, "token")).read().strip()
        engine_port = free_port()
        self.spawn([corral, "worker", "--server-url", url, "--token", token, "--name", "bench"] +
                   (["--cacert", TLS[0]] if TLS else []) + ["--data-dir",
                    os.path.join(tmp, name + "-worker"), "--worker-port", str(free_port()), "--listen-host",
                    "127.0.0.1", "--engines-config", engines, "--port-range", "%d-%d" % ((engine_port,) * 2)],
                   name + "-worker")
        pw = open(os.path.join(data, "initial_admin_password")).read().strip()
        admin = api(url, "POST", "/api/auth/login", {"username": "admin", "password": pw})["token"]
        model = os.path.join(tmp, "tiny.gguf")
        if not os.path.exists(model):
            subprocess.run([os.path.join(build, "tools", "mkmodel"), "--out", model], check=True)
        end = time.time() + 30
        while not api(url, "GET", "/api/workers", token=admin)["workers"]:
            time.sleep(0.1)
        api(url, "POST", "/api/models", {"name": "bench", "path": model, "engine": "bench",
                                         "allow_cpu_offload": True}, admin)
        key = api(url, "POST", "/api/keys", {"name": "bench"}, admin)["key"]
        while time.time() < end:
            insts = api(url, "GET", "/api/instances?model=bench", token=admin)["instances"]
            if insts and insts[0]["state"] == "running" and insts[0].get("endpoint"):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the bench engine did not start; see %s/%s-worker.log" % (tmp, name))
        return {"port": port, "pid": server.pid, "key": key, "url": url, "admin": admin}

    def spawn(self, args, name):
        p = subprocess.Popen(args, stdout=open(os.path.join(self.tmp, name + ".log"), "w"),
                             stderr=subprocess.STDOUT, env=dict(os.environ, CORRAL_TEST_RUN=self.tmp,
                                                                CORRAL_LOG_LEVEL=os.environ.get("CORRAL_LOG_LEVEL", "warn")))
        self.procs.append(p)
        return p

    def targets(self):
        t = {"direct": (self.up_port, [self.upstream.pid]), "nginx": (self.ng_port, self.nginx_pids)}
        for name, c in self.corral.items():
            t[name] = (c["port"], [c["pid"]])
        return t

    def key_for(self, target):
        return self.corral[target]["key"] if target in self.corral else self.key

    def stop(self):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM if p is not self.nginx else signal.SIGQUIT)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["pkill", "-f", self.tmp], check=False)
        kill_marked(self.tmp)  # the workers' engines, which name no path of the run


def load(build, port, key, mode, conns, seconds, warmup, tls=False):
    out = subprocess.run([os.path.join(build, "bench", "gwload"), "--port", str(port), "--key", key, "--mode", mode,
                          "--conns", str(conns), "--seconds", str(seconds), "--warmup", str(warmup)] +
                         (["--tls"] if tls else []),
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def measure(s, target, mode, conns, seconds, warmup):
    port, pids = s.targets()[target]
    before = cpu_s(pids) if target != "direct" else 0
    t0 = time.time()
    r = load(s.build, port, s.key_for(target), mode, conns, seconds, warmup, TLS and target != "direct")
    elapsed = time.time() - t0
    cpu = (cpu_s(pids) - before) if target != "direct" else 0
    # CPU over the measured window only is not separable; scale by its share of the run
    share = seconds / elapsed if elapsed > 0 else 1
    r["rate"] = r["requests"] / seconds
    r["cpu_us_per_req"] = cpu * share * 1e6 / r["requests"] if r["requests"] and cpu else 0
    return r


def idle_streams(s, target, n):
    port, pids = s.targets()[target]
    main_pid = pids[-1]  # nginx: its worker; corral: the server
    base_rss, base_anon = mem_kb(main_pid), mem_kb(main_pid, "RssAnon")
    p = subprocess.Popen([os.path.join(s.build, "bench", "gwload"), "--port", str(port), "--key", s.key, "--mode",
                          "idle", "--conns", str(n)] + (["--tls"] if TLS else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    time.sleep(1)
    rss, anon = mem_kb(main_pid), mem_kb(main_pid, "RssAnon")
    p.stdin.close()
    p.wait(60)
    if line != "ready":
        return {"error": "not every idle stream got its first chunk"}
    return {"streams": n, "rss_kb_per_stream": (rss - base_rss) / n, "anon_kb_per_stream": (anon - base_anon) / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s, 1,000 idle streams")
    ap.add_argument("--tls", action="store_true", help="Corral and nginx on TLS with the same certificate")
    args = ap.parse_args()
    global TLS
    if args.quick:
        args.rounds, args.seconds, args.idle = 1, 2, 1000
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, max(65536, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if args.idle * 2 + 200 > limit:
        print("bench: %d open files allowed; idle streams cut to %d" % (limit, (limit - 200) // 2))
        args.idle = (limit - 200) // 2
    tmp = tempfile.mkdtemp(prefix="corral-bench-gw-")
    if args.tls:
        TLS = make_cert(tmp)
    s = Setup(args.build, tmp, args.chunks)
    res = {"streams": {}, "json": {}, "ttfc256": {}, "idle": {}}
    try:
        # idle streams first, while the processes have not yet grown their heaps under load
        for t in ("corral", "nginx"):
            res["idle"][t] = idle_streams(s, t, args.idle)
        for r in range(args.rounds):
            for mode in ("stream", "json"):
                for t in ("direct", "corral", "nginx"):
                    res["streams" if mode == "stream" else "json"].setdefault(t, []).append(
                        measure(s, t, mode, args.conns, args.seconds, 1))
            for t in ("direct", "corral", "nginx"):
                res["ttfc256"].setdefault(t, []).append(measure(s, t, "stream", 256, args.seconds, 1))
    finally:
        s.stop()

    def med(t, kind, f):
        return statistics.median(x[f] if not isinstance(f, tuple) else x[f[0]][f[1]] for x in res[kind][t])
    summary = {}
    for t in ("direct", "corral", "nginx"):
        summary[t] = {
            "streams_per_s": med(t, "streams", "rate"),
            "requests_per_s": med(t, "json", "rate"),
            "cpu_us_per_stream": med(t, "streams", "cpu_us_per_req"),
            "cpu_us_per_request": med(t, "json", "cpu_us_per_req"),
            "ttfc256_p50_us": med(t, "ttfc256", ("ttfc_us", "p50")),
            "ttfc256_p99_us": med(t, "ttfc256", ("ttfc_us", "p99")),
            "errors": sum(x["errors"] for k in ("streams", "json", "ttfc256") for x in res[k][t]),
        }
    d, c, n = summary["direct"], summary["corral"], summary["nginx"]
    for t in ("corral", "nginx"):
        summary[t]["added_ttfc_p50_us"] = summary[t]["ttfc256_p50_us"] - d["ttfc256_p50_us"]
        summary[t]["added_ttfc_p99_us"] = summary[t]["ttfc256_p99_us"] - d["ttfc256_p99_us"]
        summary[t]["streams_per_cpu_s"] = 1e6 / summary[t]["cpu_us_per_stream"] if summary[t]["cpu_us_per_stream"] else 0
    ratios = {
        "streams_per_s": c["streams_per_s"] / n["streams_per_s"],
        "requests_per_s": c["requests_per_s"] / n["requests_per_s"],
        "streams_per_cpu_s": c["streams_per_cpu_s"] / n["streams_per_cpu_s"] if n["streams_per_cpu_s"] else 0,
        "cpu_per_stream": c["cpu_us_per_stream"] / n["cpu_us_per_stream"] if n["cpu_us_per_stream"] else 0,
        "cpu_per_request": c["cpu_us_per_request"] / n["cpu_us_per_request"] if n["cpu_us_per_request"] else 0,
        "idle_rss_per_stream": (res["idle"]["corral"].get("rss_kb_per_stream", 0) /
                                res["idle"]["nginx"]["rss_kb_per_stream"]
                                if res["idle"]["nginx"].get("rss_kb_per_stream") else 0),
    }
    out = {"args": vars(args), "summary": summary, "ratios_corral_to_nginx": ratios, "idle": res["idle"],
           "raw": res}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "gateway-tls.json" if TLS else "gateway.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("gateway%s (%d rounds x %.0f s, %d conns, %d chunks/stream; medians):" %
          (" over TLS" if TLS else "", args.rounds, args.seconds, args.conns, args.chunks))
    for t in ("direct", "corral", "nginx"):
        x = summary[t]
        print("  %-7s %8.0f streams/s %8.0f req/s  CPU %6.1f us/stream %6.1f us/req  TTFC@256 p50 %6.0f us "
              "p99 %6.0f us  errors %d" % (t, x["streams_per_s"], x["requests_per_s"], x["cpu_us_per_stream"],
                                           x["cpu_us_per_request"], x["ttfc256_p50_us"], x["ttfc256_p99_us"],
                                           x["errors"]))
    for t in ("corral", "nginx"):
        print("  %-7s added TTFC @256: p50 %+.0f us, p99 %+.0f us; idle streams: %s" %
              (t, summary[t]["added_ttfc_p50_us"], summary[t]["added_ttfc_p99_us"], res["idle"][t]))
    print("  corral/nginx: " + ", ".join("%s %.2f" % kv for kv in ratios.items()))


if __name__ == "__main__":
    sys.exit(main())
