#!/usr/bin/env python3
"""bench/run_engines: how fast a deployed model starts answering, and what the
worker agent costs while it supervises engines.

1. deploy -> running for the tiny model on one worker, against the yardstick
   of starting the same llama-server directly and polling /health until 200;
2. deploy -> running for a model split across three workers through RPC;
3. the worker agent's RSS and CPU with 0 and with 10 supervised instances.

Usage: bench/run_engines.py [--build DIR] [--quick]  (needs CORRAL_LLAMA_BIN or
the cache of scripts/llama-build.sh). Prints medians and ratios."""
import argparse
import json
import os
import shutil
import socket
import statistics
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


def http(method, url, body=None, token=None, timeout=10):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}
    except OSError:
        return 0, {}


def wait(cond, timeout=60, what="a condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.005)
    raise RuntimeError("timed out waiting for " + what)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def proc_stat(pid):
    """((RSS kB, anonymous RSS kB), CPU ticks) of a process."""
    with open("/proc/%d/status" % pid) as f:
        lines = f.readlines()
    rss = tuple(int(l.split()[1]) for key in ("VmRSS:", "RssAnon:") for l in lines if l.startswith(key))
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return rss, int(fields[11]) + int(fields[12])


class Cluster:
    def __init__(self, build, llama_bin, workers):
        self.tmp = tempfile.mkdtemp(prefix="corral-bench-")
        self.corral = os.path.join(build, "corral")
        self.env = dict(os.environ, CORRAL_ENGINE_PATH=llama_bin, CORRAL_SYSFS_ROOT=self.tmp + "/nosys",
                        CORRAL_NVML_LIBRARY="/nonexistent/libnvidia-ml.so.1", CORRAL_LOG_LEVEL="warn")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.procs = []
        self.spawn(["server", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", self.tmp + "/s",
                    "--disable-worker", "--gpu-reserve", "0"], self.env)
        wait(lambda: http("GET", self.url + "/healthz")[0] == 200, what="server")
        pw = open(self.tmp + "/s/initial_admin_password").read().strip()
        self.token = http("POST", self.url + "/api/auth/login", {"username": "admin", "password": pw})[1]["token"]
        ctoken = open(self.tmp + "/s/token").read().strip()
        self.workers = {}
        for i, (name, gib) in enumerate(workers):
            env = dict(self.env)
            if gib:
                cfg = "%s/%s.json" % (self.tmp, name)
                with open(cfg, "w") as f:
                    json.dump({"driver_version": "550.54.15", "cuda_driver_version": 12040, "devices": [
                        {"name": "NVIDIA L4", "uuid": "GPU-%s" % name, "memory_total": int(gib * 2 ** 30),
                         "memory_used": 0}]}, f)
                env.update(FAKE_NVML_CONFIG=cfg, CORRAL_NVML_LIBRARY=os.path.join(build, "fakes/nvml/libnvidia-ml.so.1"))
            lo = 21000 + (os.getpid() % 100) * 200 + i * 50  # apart from other runs on this machine
            self.workers[name] = self.spawn(
                ["worker", "--server-url", self.url, "--token", ctoken, "--name", name, "--data-dir",
                 "%s/w-%s" % (self.tmp, name), "--worker-port", str(free_port()), "--listen-host", "127.0.0.1",
                 "--status-interval", "1", "--port-range", "%d-%d" % (lo, lo + 49)], env)
        wait(lambda: (lambda ws: len(ws) == len(workers) and all(w["state"] == "ready" and w["watch_connected"]
                                                                 for w in ws))(self.api("GET", "/api/workers")[1].get("workers", [])),
             what="workers ready")

    def spawn(self, args, env):
        p = subprocess.Popen([self.corral] + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def api(self, method, path, body=None):
        return http(method, self.url + path, body, self.token)

    def instances(self, model):
        return self.api("GET", "/api/instances?model=" + model)[1].get("instances", [])

    def deploy_to_running(self, body):
        t0 = time.monotonic()
        code, _ = self.api("POST", "/api/models", body)
        assert code == 201, code
        wait(lambda: (lambda i: i and all(x["state"] == "running" for x in i))(self.instances(body["name"])),
             what="%s running" % body["name"])
        dt = time.monotonic() - t0
        pids = [m["pid"] for i in self.instances(body["name"]) for m in i["members"].values()]
        self.api("DELETE", "/api/models/" + body["name"])
        wait(lambda: not any(alive(p) for p in pids), what="engines stopped")
        return dt

    def close(self):
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:  # one that hangs on SIGTERM
                p.kill()
                p.wait()
        subprocess.run(["pkill", "-f", self.tmp], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def direct_start(llama_bin, model):
    port = free_port()
    t0 = time.monotonic()
    p = subprocess.Popen([os.path.join(llama_bin, "llama-server"), "-m", model, "--host", "127.0.0.1", "--port",
                          str(port), "-c", "2048", "-np", "1", "-t", "1"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait(lambda: http("GET", "http://127.0.0.1:%d/health" % port, timeout=1)[0] == 200, what="llama-server health")
    dt = time.monotonic() - t0
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:  # one that hangs on SIGTERM
        p.kill()
        p.wait()
    return dt


def find_llama_bin():
    """CORRAL_LLAMA_BIN, else the build scripts/llama-build.sh caches."""
    return os.environ.get("CORRAL_LLAMA_BIN") or subprocess.run(
        [os.path.join(ROOT, "scripts/llama-build.sh")], capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    llama_bin = find_llama_bin()
    runs = 3 if a.quick else 7
    mk = os.path.join(a.build, "tools", "mkmodel")
    tmp = tempfile.mkdtemp(prefix="corral-bench-models-")
    tiny, wide = tmp + "/tiny.gguf", tmp + "/wide.gguf"
    subprocess.run([mk, "--out", tiny], check=True)
    subprocess.run([mk, "--out", wide, "--layers", "8", "--embd", "512", "--heads", "8", "--kv-heads", "8", "--ff",
                    "1024"], check=True)
    direct = statistics.median(direct_start(llama_bin, tiny) for _ in range(runs))
    c = Cluster(a.build, llama_bin, [("w1", 0)])
    one = statistics.median(c.deploy_to_running({"name": "t%d" % i, "path": tiny, "ctx": 2048,
                                                 "allow_cpu_offload": True, "engine_args": ["-t", "1"]})
                            for i in range(runs))
    # the agent with 0, then 10 supervised instances
    pid = c.workers["w1"].pid
    rss0, cpu_a = proc_stat(pid)
    time.sleep(5)
    _, cpu_b = proc_stat(pid)
    idle0 = (cpu_b - cpu_a) / os.sysconf("SC_CLK_TCK") / 5
    c.api("POST", "/api/models", {"name": "ten", "path": tiny, "ctx": 512, "replicas": 10, "policy": "binpack",
                                  "allow_cpu_offload": True, "engine_args": ["-t", "1"]})
    try:
        wait(lambda: (lambda i: len(i) == 10 and all(x["state"] == "running" for x in i))(c.instances("ten")), 120,
             "10 instances running")
    except RuntimeError:
        print(json.dumps([(i["state"], i["message"]) for i in c.instances("ten")], indent=1))
        c.close()
        subprocess.run(["pkill", "-f", tmp], check=False)  # engines outlive workers; theirs name the model dir
        raise
    time.sleep(2)
    _, cpu_a = proc_stat(pid)
    time.sleep(10)
    rss10b, cpu_b = proc_stat(pid)
    idle10 = (cpu_b - cpu_a) / os.sysconf("SC_CLK_TCK") / 10
    c.close()
    subprocess.run(["pkill", "-f", tmp], check=False)  # the ten engines outlive their worker
    c3 = Cluster(a.build, llama_bin, [("g1", 1.25), ("g2", 1.25), ("g3", 1.25)])
    three = statistics.median(c3.deploy_to_running({"name": "w%d" % i, "path": tiny, "ctx": 2048,
                                                    "gpus": ["g1:0", "g2:0", "g3:0"], "allow_distributed": True,
                                                    "engine_args": ["-t", "1"]})
                              for i in range(runs))
    c3.close()
    subprocess.run(["pkill", "-f", tmp], check=False)  # engines outlive workers; theirs name the model dir
    shutil.rmtree(tmp, ignore_errors=True)
    print("deploy -> running, tiny model, one worker:      median %6.0f ms (%d runs)" % (one * 1000, runs))
    print("  yardstick: llama-server started directly:     median %6.0f ms  -> overhead ratio %.2fx (+%.0f ms)"
          % (direct * 1000, one / direct, (one - direct) * 1000))
    print("deploy -> running, 3 workers through RPC:       median %6.0f ms (goal < 2000)" % (three * 1000))
    print("worker agent, 0 instances:   RSS %5.1f MB (anonymous %4.1f MB), CPU %.2f%% of a core"
          % (rss0[0] / 1024, rss0[1] / 1024, idle0 * 100))
    print("worker agent, 10 instances:  RSS %5.1f MB (anonymous %4.1f MB), CPU %.2f%% of a core (goal < 8 MB, < 1%%)"
          % (rss10b[0] / 1024, rss10b[1] / 1024, idle10 * 100))


if __name__ == "__main__":
    sys.exit(main())
