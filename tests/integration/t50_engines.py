"""Tier 50: engines on workers, end to end with the real llama-server and
ggml-rpc-server on loopback: deploy and chat straight from the engine, crash
and restart with backoff, worker restarts adopting engines, a corrupted model
diagnosed without a restart storm, deletion stopping engines, and one model
across three workers through llama.cpp RPC."""
import json
import os
import signal
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from harness import BUILD, ClusterCase, free_ports

MKMODEL = os.path.join(BUILD, "tools", "mkmodel")
LLAMA_BIN = os.environ.get("CORRAL_LLAMA_BIN", "")
GIB = 1 << 30
def port_range(n=20):
    lo = free_ports(n)
    return "%d-%d" % (lo, lo + n - 1)


def gpu(size_gib):
    return {"driver_version": "550.54.15", "cuda_driver_version": 12040, "devices": [
        {"name": "NVIDIA L4", "uuid": "GPU-L4-0", "memory_total": int(size_gib * GIB), "memory_used": 0, "cc": [8, 9]}]}


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with open("/proc/%d/stat" % pid) as f:
        return f.read().split(") ")[1][0] != "Z"


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK),
                     "llama-server not built (scripts/llama-build.sh)")
class EngineCase(ClusterCase):
    def setUp(self):
        super().setUp()
        self.env["CORRAL_ENGINE_PATH"] = LLAMA_BIN
        self.engine_pids = []

    def tearDown(self):
        # engines outlive workers by design; the test cleans up what it started
        for p in self.procs:
            if p.name.startswith("worker-"):
                p.stop()
        super().tearDown()  # kills the engines by their mark

    def cluster(self, *workers, server_extra=()):
        self.start_server(extra=("--gpu-reserve", "0") + tuple(server_extra))
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        for name, cfg in workers:
            self.worker(name, cfg)
        for name, _ in workers:
            self.wait_state(name, "ready")
            self.wait_for(lambda: self.workers()[name]["watch_connected"], "watch stream of " + name)

    def worker(self, name, cfg=None):
        if not hasattr(self, "ranges"):
            self.ranges = {}
        self.ranges.setdefault(name, port_range())
        return self.start_worker(name, nvml_config=cfg, extra=("--port-range", self.ranges[name],
                                                               "--restart-backoff", "1"))

    def model(self, name="tiny.gguf", *args):
        path = os.path.join(self.tmp, name)
        subprocess.run([MKMODEL, "--out", path] + list(args), check=True)
        return path

    def instance(self, model):
        insts = self.api("GET", "/api/instances?model=" + model)["instances"]
        return insts[0] if insts else None

    def wait_running(self, model, timeout=30):
        return self.wait_for(lambda: (lambda i: i and i["state"] == "running" and i)(self.instance(model)),
                             "instance of %s running" % model, timeout)

    def leader_report(self, inst):
        return inst["members"][inst["placement"]["leader"]]

    def deploy_chat_and_embed(self):
        """'tiny' (chat) and 'embed' (embeddings, mean pooling) from one test model, both running."""
        path = self.model()
        self.api("POST", "/api/models", {"name": "tiny", "path": path, "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        self.api("POST", "/api/models", {"name": "embed", "path": path, "ctx": 512, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1", "--embeddings", "--pooling", "mean"]},
                 expect=201)
        for m in ("tiny", "embed"):
            self.wait_for(lambda: self.wait_running(m)["endpoint"], m + " running")
        return path

    def gw(self, path, body, key, timeout=30, raw=None):
        """POST to the gateway with an API key: (status, headers, body text), errors included."""
        data = raw if raw is not None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def engine_key(self, endpoint):
        """The secret of the instance serving at endpoint, as its engine has it (the API never shows it): engines
        answer only requests that carry it."""
        inst = [i for i in self.api("GET", "/api/instances")["instances"] if i["endpoint"] == endpoint][0]
        with open("/proc/%d/environ" % self.leader_report(inst)["pid"], "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        return env[b"CORRAL_ENGINE_KEY"].decode()

    def chat(self, endpoint, stream=False):
        """Straight to the engine, with its instance's secret."""
        body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "stream": stream}
        req = urllib.request.Request("http://%s/v1/chat/completions" % endpoint, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer " + self.engine_key(endpoint)})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read().decode()



@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK),
                     "llama-server not built (scripts/llama-build.sh)")
class Engines(EngineCase):
    def test_deploy_runs_and_answers_then_rm_stops_it(self):
        self.cluster(("w1", None))
        path = self.model()
        t0 = time.monotonic()
        self.api("POST", "/api/models", {"name": "tiny", "path": path, "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("tiny")
        print("\ndeploy -> running: %.0f ms" % ((time.monotonic() - t0) * 1000))
        self.assertTrue(inst["endpoint"].startswith("127.0.0.1:"))
        answer = json.loads(self.chat(inst["endpoint"]))
        self.assertEqual(answer["choices"][0]["finish_reason"], "length")
        self.assertEqual(answer["usage"]["completion_tokens"], 8)
        streamed = self.chat(inst["endpoint"], stream=True)
        self.assertIn("data: [DONE]", streamed)
        self.assertGreater(streamed.count("data: {"), 2, "chunks arrive one by one")
        pid = self.leader_report(inst)["pid"]
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read().split(b"\0")
        self.assertIn(b"GGML_NO_BACKTRACE=1", env)
        self.assertIn(b"CUDA_VISIBLE_DEVICES=", env, "a CPU instance sees no GPU")
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().split(b"\0")
        self.assertIn(b"-t", cmd)
        self.assertEqual(os.getpgid(pid), pid, "the engine leads its own process group")
        log = os.path.join(self.tmp, "w-w1", "logs", inst["id"] + ".log")
        with open(log) as f:
            self.assertIn("---- corral: starting", f.read())
        out = self.cli("logs", inst["id"], "--tail", "1000").stdout
        self.assertIn("---- corral: starting", out, "corral logs reads the log through the server")
        self.assertIn("llama-server", out)
        started = [l for l in out.splitlines() if l.startswith("---- corral: starting")][0]
        self.assertIn(" -m %s " % os.path.join(self.tmp, "tiny.gguf"), started, "the command line reads as typed")
        self.assertNotIn("\x1f", started)
        self.assertIn(started, self.cli("logs", "tiny", "--tail", "1000").stdout, "by the name of a model with one instance")
        follow = subprocess.Popen([os.path.join(BUILD, "corral"), "logs", inst["id"], "-f", "--tail", "0"],
                                  stdout=subprocess.PIPE, text=True, env=self.env)
        time.sleep(1)
        self.chat(inst["endpoint"])  # llama-server logs the request
        self.wait_for(lambda: follow.poll() is None and os.path.getsize(log) > 0, "following")
        time.sleep(1.5)
        follow.terminate()
        followed = follow.communicate(timeout=10)[0]
        self.assertIn("print_timing", followed, "-f shows what the engine logs about the new request")
        self.assertNotIn("---- corral: starting", followed, "--tail 0 starts at the end")
        status, body = self.request("GET", "/api/instances/nope/logs", token=self.token)
        self.assert_error(status, body, 404, "no such instance or model")
        self.cli("rm", "tiny")
        self.wait_for(lambda: not pid_alive(pid), "the engine to stop after rm")

    def test_deploy_exit_status_and_wait(self):
        """deploy --wait returns once every replica runs; a replica that fails
        makes it fail with the cause; nothing placeable is exit status 3."""
        self.cluster(("w1", None))
        path = self.model()
        r = self.cli("deploy", "tiny", "--path", path, "--ctx", "2048", "--allow-cpu-offload", "--wait",
                     "--timeout", "60", "--", "-t", "1", check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("every replica runs (1/1)", r.stdout)
        self.assertEqual(self.instance("tiny")["state"], "running")
        # a model no worker can hold: kept, explained, and exit status 3
        r = self.cli("deploy", "nogpu", "--path", path, "--ctx", "2048", "--timeout", "5", check=False)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("0/1 replicas placed", r.stdout)
        self.assertIn("CPU offload not allowed", r.stdout)
        # a replica whose engine fails at start: --wait fails with the cause
        r = self.cli("deploy", "broken", "--path", path, "--ctx", "2048", "--allow-cpu-offload", "--wait",
                     "--timeout", "60", "--", "-t", "1", "--bogus-flag", check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("failed: engine exited with status", r.stderr)
        self.assertIn('"error: invalid argument: --bogus-flag"', r.stderr, "the engine's own last word")
        self.assertIn("corral logs broken", r.stderr)
        # and its model's STATUS says so, instead of "ok"
        line = [l for l in self.cli("models").stdout.splitlines() if l.startswith("broken ")][0]
        self.assertIn("error: engine exited with status", line)
        self.assertEqual(self.api("GET", "/api/models/broken")["worst_replica"]["state"], "error")
        tiny = [l for l in self.cli("models").stdout.splitlines() if l.startswith("tiny ")][0]
        self.assertTrue(tiny.rstrip().endswith("ok"), tiny)
        # a file no worker can parse cannot be placed either: 3, with the reason
        bad = os.path.join(self.tmp, "bad.gguf")
        with open(path, "rb") as src, open(bad, "wb") as f:
            f.write(src.read()[: os.path.getsize(path) // 2])
        r = self.cli("deploy", "truncated", "--path", bad, "--ctx", "2048", "--allow-cpu-offload", check=False)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("cannot parse it", r.stdout)

    def test_engine_crash_is_restarted_with_backoff(self):
        self.cluster(("w1", None))
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("tiny")
        pid = self.leader_report(inst)["pid"]
        os.kill(pid, signal.SIGKILL)
        err = self.wait_for(lambda: (lambda i: i["state"] == "error" and i)(self.instance("tiny")), "the error state")
        self.assertIn("engine was killed by signal 9; restarting in 1 s (restart 1)", err["message"])
        again = self.wait_running("tiny")
        report = self.leader_report(again)
        self.assertNotEqual(report["pid"], pid)
        self.assertEqual(report["restarts"], 1)
        self.assertEqual(report["exit"], 137)
        json.loads(self.chat(again["endpoint"]))

    def test_worker_restart_adopts_the_engine(self):
        self.cluster(("w1", None))
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("tiny")
        pid = self.leader_report(inst)["pid"]
        w = [p for p in self.procs if p.name == "worker-w1"][0]
        w.stop()
        self.assertTrue(pid_alive(pid), "engines outlive their worker")
        w2 = self.worker("w1")
        self.wait_for(lambda: "adopted its engine (pid %d" % pid in w2.output(), "adoption in the worker log")
        again = self.wait_running("tiny")
        self.assertEqual(self.leader_report(again)["pid"], pid, "same engine, not restarted")
        json.loads(self.chat(again["endpoint"]))

    def test_corrupted_model_is_diagnosed_without_a_restart_storm(self):
        self.cluster(("w1", None))
        path = self.model()
        self.api("POST", "/api/models", {"name": "tiny", "path": path, "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("tiny")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(self.leader_report(inst)["pid"], signal.SIGKILL)
        # the worker's log says each delay: it doubles from --restart-backoff 1; the second
        # failure (the first with the truncated file) is diagnosed
        w = [p for p in self.procs if p.name == "worker-w1"][0]
        self.wait_for(lambda: "(restart 3)" in w.output(), "a third restart", timeout=40,
                      show=lambda: (self.instance("tiny"), w.output()[-3000:]))
        self.assertIn("restarting in 1 s (restart 1)", w.output())
        self.assertIn("engine exited with status 1: the model file is truncated; restarting in 2 s (restart 2)",
                      w.output())
        # a third failure before the engine was ever healthy again: a crash loop, said so
        self.assertIn("crash loop: engine exited with status 1: the model file is truncated; next try in 4 s "
                      "(restart 3); see 'corral logs %s'" % inst["id"], w.output())
        err = self.wait_for(lambda: (lambda i: i["state"] == "crash_loop" and i)(self.instance("tiny")),
                            "the crash_loop state", show=lambda: self.instance("tiny"))
        self.assertIn("engine exited with status 1: the model file is truncated", err["message"])
        report = self.leader_report(err)
        self.assertEqual(report["cause"], "the model file is truncated")
        self.assertIn("corral inspect", report["fix"])
        self.assertIn("not within the file bounds", report["log_tail"])
        self.assertNotIn("ok", [l for l in self.cli("models").stdout.splitlines() if l.startswith("tiny ")][0]
                         .split()[-1:])

    @unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "ggml-rpc-server"), os.X_OK), "ggml-rpc-server not built")
    def test_one_model_across_three_workers_through_rpc(self):
        self.cluster(("g1", gpu(1.25)), ("g2", gpu(1.25)), ("g3", gpu(1.25)))
        path = self.model("wide.gguf", "--layers", "8", "--embd", "512", "--heads", "8", "--kv-heads", "8",
                          "--ff", "1024")
        self.api("POST", "/api/models", {"name": "wide", "path": path, "ctx": 131072, "allow_distributed": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("wide", timeout=60)
        self.assertEqual(inst["placement"]["kind"], "distributed")
        self.assertEqual(len(inst["placement"]["workers"]), 3)
        self.assertEqual(len(inst["followers"]), 2)
        leader = self.leader_report(inst)
        with open("/proc/%d/cmdline" % leader["pid"], "rb") as f:
            cmd = f.read().split(b"\0")
        rpc = cmd[cmd.index(b"--rpc") + 1].decode()
        self.assertEqual(sorted(rpc.split(",")), sorted("%s:%d" % (f["host"], f["port"]) for f in inst["followers"]))
        self.assertIn(b"--tensor-split", cmd)
        answer = json.loads(self.chat(inst["endpoint"]))
        self.assertEqual(answer["usage"]["completion_tokens"], 8)
        # a follower dies: the group restarts (followers first, leader last) and answers again
        follower = [r for wid, r in inst["members"].items() if r["role"] == "follower"][0]
        os.kill(follower["pid"], signal.SIGKILL)
        self.wait_for(lambda: self.instance("wide")["state"] != "running", "the instance to notice")
        again = self.wait_running("wide", timeout=60)
        self.assertNotEqual(self.leader_report(again)["pid"], leader["pid"], "the leader was restarted too")
        json.loads(self.chat(again["endpoint"]))


FAKES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fakes")


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK),
                     "llama-server not built (scripts/llama-build.sh)")
class VllmOverRay(EngineCase):
    def test_vllm_across_two_workers_over_a_ray_cluster_of_its_own(self):
        records = os.path.join(self.tmp, "records")
        os.makedirs(records)
        self.env["CORRAL_ENGINE_PATH"] = ":".join([LLAMA_BIN, os.path.join(FAKES, "vllm"), os.path.join(FAKES, "ray")])
        self.env["PATH"] = os.path.join(FAKES, "ray") + ":" + self.env["PATH"]
        self.env["FAKE_RECORD_DIR"] = records
        # the server's embedded worker has a GPU too, but never joins a Ray cluster
        cfg = os.path.join(self.tmp, "server-nvml.json")
        with open(cfg, "w") as f:
            json.dump(gpu(2), f)
        server_env = dict(self.env, FAKE_NVML_CONFIG=cfg,
                          CORRAL_NVML_LIBRARY=os.path.join(BUILD, "fakes", "nvml", "libnvidia-ml.so.1"))
        server = self.start_server(disable_worker=False, extra=("--gpu-reserve", "0"), env=server_env)
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        for name in ("g1", "g2"):
            self.worker(name, gpu(2))
        for name in ("g1", "g2"):
            self.wait_state(name, "ready")
        self.wait_for(lambda: len(self.workers()) == 3 and all(w["state"] == "ready" for w in self.workers().values()),
                      "the embedded worker too")
        embedded = [n for n in self.workers() if n not in ("g1", "g2")][0]
        self.assertNotIn("ray", [e["name"] for e in self.workers()[embedded]["engines"]])
        self.assertIn("ray", [e["name"] for e in self.workers()["g1"]["engines"]])
        path = self.model()
        self.api("POST", "/api/models", {"name": "big", "path": path, "engine": "vllm", "ctx": 4194304,
                                          "allow_distributed": True}, expect=201)
        try:
            inst = self.wait_running("big", timeout=60)
        except AssertionError:
            print(json.dumps(self.instance("big"), indent=1)[:6000])
            raise
        pl = inst["placement"]
        self.assertEqual((pl["kind"], pl["tp"], pl["pp"]), ("distributed", 1, 2))
        self.assertEqual(sorted(w["name"] for w in pl["workers"]), ["g1", "g2"], "not the embedded worker")
        head = inst["ray_head"]
        recs = []
        for fn in os.listdir(records):
            with open(os.path.join(records, fn)) as f:
                recs.append(json.load(f))
        starts = [r for r in recs if r["tool"] == "ray" and r["kind"] == "start"]
        self.assertEqual(len(starts), 2, recs)
        h = [r for r in starts if "--head" in r["argv"]][0]
        j = [r for r in starts if "--address" in r["argv"]][0]
        a = h["argv"]
        self.assertEqual(a[:9], ["start", "--head", "--port", str(head["port"]), "--node-ip-address", "127.0.0.1",
                                 "--num-gpus", "1", "--node-manager-port"])
        self.assertEqual(a[-1], "--block")
        self.assertEqual(h["env"]["CUDA_VISIBLE_DEVICES"], "0")
        self.assertEqual(j["argv"][:3], ["start", "--address", "127.0.0.1:%d" % head["port"]])
        lo, hi = (int(x) for x in self.ranges[pl["workers"][0]["name"]].split("-"))
        for flag in ("--node-manager-port", "--object-manager-port"):
            self.assertTrue(lo <= int(a[a.index(flag) + 1]) <= hi, "Ray's other ports come from the worker's range")
        v = [r for r in recs if r["tool"] == "vllm"]
        self.assertEqual(len(v), 1)
        va = v[0]["argv"]
        self.assertEqual(va[:2], ["serve", path])
        for flag, want in (("--distributed-executor-backend", "ray"), ("--tensor-parallel-size", "1"),
                           ("--pipeline-parallel-size", "2"), ("--served-model-name", "big")):
            self.assertEqual(va[va.index(flag) + 1], want)
        self.assertGreater(float(va[va.index("--gpu-memory-utilization") + 1]), 0.5)
        self.assertEqual(v[0]["env"]["RAY_ADDRESS"], "127.0.0.1:%d" % head["port"])
        for r in recs:
            self.assertNotIn(server.popen.pid, r["ancestors"], "the server never starts Ray or vLLM")
        answer = json.loads(self.chat(inst["endpoint"]))
        self.assertEqual(answer["usage"]["completion_tokens"], 8)
        pids = [m["pid"] for m in inst["members"].values()]
        self.cli("rm", "big")
        self.wait_for(lambda: not any(pid_alive(p) for p in pids), "the Ray cluster and vLLM to stop")

    def test_vllm_across_two_workers_with_its_own_launcher(self):
        records = os.path.join(self.tmp, "records")
        os.makedirs(records)
        self.env["CORRAL_ENGINE_PATH"] = ":".join([LLAMA_BIN, os.path.join(FAKES, "vllm")])
        self.env["FAKE_RECORD_DIR"] = records
        self.cluster(("g1", gpu(2)), ("g2", gpu(2)))
        self.assertNotIn("ray", [e["name"] for e in self.workers()["g1"]["engines"]])
        self.api("POST", "/api/models", {"name": "mp", "path": self.model(), "engine": "vllm", "ctx": 4194304,
                                          "allow_distributed": True,
                                          "engine_args": ["--distributed-executor-backend", "mp"]}, expect=201)
        inst = self.wait_running("mp", timeout=60)
        self.assertEqual(inst["placement"]["pp"], 2)
        recs = []
        for fn in os.listdir(records):
            with open(os.path.join(records, fn)) as f:
                recs.append(json.load(f))
        self.assertEqual([r["tool"] for r in recs], ["vllm", "vllm"], "two vLLM nodes and no Ray")
        by_rank = {r["argv"][r["argv"].index("--node-rank") + 1]: r["argv"] for r in recs}
        lead, follow = by_rank["0"], by_rank["1"]
        master = inst["master"]
        for a in (lead, follow):
            self.assertEqual(a[a.index("--nnodes") + 1], "2")
            self.assertEqual(a[a.index("--master-addr") + 1], master["host"])
            self.assertEqual(a[a.index("--master-port") + 1], str(master["port"]))
            self.assertEqual(a[a.index("--distributed-executor-backend") + 1], "mp")
        self.assertNotIn("--headless", lead)
        self.assertIn("--headless", follow)
        json.loads(self.chat(inst["endpoint"]))
