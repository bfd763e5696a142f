"""Tier 52: serving survives the control plane's own turbulence, with real
llama-server engines — a worker restarted again and again (its adopted
engine serves within a status interval of its return), a worker that stops
reporting (its engine still answers through the gateway), a server restarted
while the worker is down (routing resumes from the stored endpoint), and
engines that never see the cluster token."""
import json
import os
import signal
import threading
import time
import unittest
import urllib.error
import urllib.request

from harness import free_port
from t50_engines import EngineCase, LLAMA_BIN, pid_alive


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Recovery(EngineCase):
    MSG = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}

    def setup_tiny(self):
        self.cluster(("w1", None))
        key = self.cli("keys", "create", "t").stdout.strip()
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("tiny")
        return key, inst

    def serves(self, key):
        status, _, body = self.gw("/v1/chat/completions", self.MSG, key)
        return status == 200 and json.loads(body)["object"] == "chat.completion"

    def test_a_worker_restarted_four_times_serves_again_each_time(self):
        key, inst = self.setup_tiny()
        pid = self.leader_report(inst)["pid"]
        for n in range(4):
            w = [p for p in self.procs if p.name == "worker-w1" and p.alive()][0]
            w.stop()
            self.assertTrue(pid_alive(pid), "engines outlive their worker")
            self.worker("w1")
            # one status interval is 1 s here; the old code left the model at 503
            # until the server restarted (3 of 4 restarts in one trial)
            self.wait_for(lambda: self.instance("tiny")["state"] == "running" and self.serves(key),
                          "restart %d: the adopted engine serving again" % (n + 1), timeout=15)
            self.assertEqual(self.leader_report(self.instance("tiny"))["pid"], pid, "adopted, not restarted")

    def test_an_engine_keeps_serving_while_its_worker_is_silent(self):
        key, inst = self.setup_tiny()
        w = [p for p in self.procs if p.name == "worker-w1"][0]
        w.signal(signal.SIGSTOP)  # no status reports, no probe answers; the engine runs on
        try:
            self.wait_for(lambda: self.workers()["w1"]["state"] != "ready", "w1 to be heard from no more")
            self.wait_for(lambda: self.instance("tiny")["state"] == "unreachable", "the instance unreachable")
            for _ in range(3):
                status, _, body = self.gw("/v1/chat/completions", self.MSG, key)
                self.assertEqual(status, 200, "its engine still answers: " + body)
        finally:
            w.signal(signal.SIGCONT)
        self.wait_for(lambda: self.instance("tiny")["state"] == "running", "running again")
        # an engine that really died is not routed to once its worker says so
        os.kill(self.leader_report(inst)["pid"], signal.SIGKILL)
        self.wait_for(lambda: self.instance("tiny")["state"] in ("error", "restarting"), "the engine's failure")

    def test_a_restarted_server_routes_at_once_from_the_stored_endpoint(self):
        key, inst = self.setup_tiny()
        server = self.procs[0]
        w = [p for p in self.procs if p.name == "worker-w1"][0]
        w.stop()  # nobody will report the engine to the new server
        server.stop()
        self.start_server(name="server2", data_dir=self.data_dir, port=self.port, extra=("--gpu-reserve", "0"))
        self.assertTrue(self.serves(key), "routed from the stored endpoint, with the worker still away")
        self.assertEqual(self.instance("tiny")["endpoint"], inst["endpoint"])

    def test_engines_never_see_the_cluster_token(self):
        self.start_server(disable_worker=False, extra=("--gpu-reserve", "0", "--worker-port", str(free_port()),
                                                       "--worker-name", "ctl", "--status-interval", "1"))
        self.login()
        self.wait_state("ctl", "ready")
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        pid = self.leader_report(self.wait_running("tiny"))["pid"]
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read().split(b"\0")
        self.assertFalse([e for e in env if e.startswith(b"CORRAL_TOKEN=")], "no cluster token in an engine")
        self.assertNotIn(self.cluster_token().encode(), b"\0".join(env))

    def test_engine_arguments_that_touch_files_need_the_workers_consent(self):
        self.cluster(("w1", None))
        out = os.path.join(self.tmp, "written-by-engine.log")
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1", "--log-file", out]}, expect=201)
        inst = self.wait_for(lambda: (lambda i: i and i["state"] == "error" and i)(self.instance("tiny")),
                             "the refusal", show=lambda: self.instance("tiny"))
        self.assertIn("engine argument --log-file reads or writes files on this worker", inst["message"])
        self.assertIn("corral worker --allow-engine-args --log-file", inst["message"])
        self.assertFalse(os.path.exists(out), "no engine was started with it")
        self.assertFalse(self.leader_report(inst).get("pid"))
        # the worker's own admin allows it: the same model runs
        w = [p for p in self.procs if p.name == "worker-w1"][0]
        w.stop()
        self.start_worker("w1", extra=("--port-range", self.ranges["w1"], "--restart-backoff", "1",
                                       "--allow-engine-args", "--slot-save-path,--log-file"))
        self.wait_for(lambda: (lambda i: i and i["state"] == "running" and i)(self.instance("tiny")), "running",
                      timeout=30, show=lambda: (self.instance("tiny"), self.procs[-1].output()[-2000:]))
        self.wait_for(lambda: os.path.exists(out), "the engine's own log file")

    def test_an_engine_answers_only_requests_that_carry_its_instance_secret(self):
        self.cluster(("w1", None))
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("tiny")
        self.assertNotIn("engine_key", inst["placement"], "the engines' secret is not shown by the API")
        self.assertNotIn("engine_key", json.dumps(self.api("GET", "/api/instances")))
        pid = self.leader_report(inst)["pid"]
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        key = env[b"LLAMA_API_KEY"].decode()
        self.assertEqual(env[b"CORRAL_ENGINE_KEY"].decode(), key)
        self.assertTrue(key.startswith("cre_"))
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            self.assertNotIn(key.encode(), f.read(), "not in argv, where every local user sees it")
        self.assertNotIn(key, self.cli("logs", "tiny").stdout)
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        url = "http://%s/v1/chat/completions" % inst["endpoint"]

        def direct(auth):
            req = urllib.request.Request(url, data=json.dumps(msg).encode(), headers=dict(
                {"Content-Type": "application/json"}, **({"Authorization": auth} if auth else {})))
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code
        # straight to the engine's port: no key, a wrong one, a user's API key: 401
        api_key = self.cli("keys", "create", "k").stdout.strip()
        self.assertEqual(direct(None), 401)
        self.assertEqual(direct("Bearer cre_wrong"), 401)
        self.assertEqual(direct("Bearer " + api_key), 401)
        self.assertEqual(direct("Bearer " + key), 200, "the secret is what the engine asks for")
        # the gateway sends it: /v1 answers
        status, _, body = self.gw("/v1/chat/completions", msg, api_key)
        self.assertEqual(status, 200, body)
        # the worker's log endpoint is the server's alone: the cluster token, which every node has, is refused
        w = [p for p in self.procs if p.name == "worker-w1"][0]
        log_url = "http://127.0.0.1:%d/instances/%s/log?tail=5" % (w.port, inst["id"])
        for token in (None, self.cluster_token(), api_key, key):
            req = urllib.request.Request(log_url, headers={"Authorization": "Bearer " + token} if token else {})
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=10)
            self.assertEqual(e.exception.code, 401)
        self.assertIn("corral: starting", self.cli("logs", "tiny").stdout, "the server reads it with the worker's key")


if __name__ == "__main__":
    unittest.main()


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Maintenance(EngineCase):
    def on(self, inst):
        return inst["placement"]["workers"][0]["name"]

    def test_cordon_drain_and_rm_of_a_live_worker(self):
        self.cluster(("w1", None), ("w2", None))
        r = self.cli("workers", "cordon", "w2")
        self.assertIn("worker 'w2' cordoned", r.stdout)
        self.assertIn("ready (cordoned)", self.cli("workers").stdout)
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        old = self.wait_running("tiny")
        self.assertEqual(self.on(old), "w1", "a cordoned worker takes no new instance")
        old_pid = self.leader_report(old)["pid"]
        self.cli("workers", "uncordon", "w2")
        self.assertFalse(self.workers()["w2"]["cordoned"])

        r = self.cli("workers", "drain", "w1")
        self.assertIn("worker 'w1' draining: 1 instance(s) move elsewhere", r.stdout)
        seen = []  # (old still listed, a replacement running) as the drain goes

        def moved():
            insts = self.api("GET", "/api/instances?model=tiny")["instances"]
            has_old = any(i["id"] == old["id"] for i in insts)
            new_running = any(i["id"] != old["id"] and i["state"] == "running" for i in insts)
            seen.append((has_old, new_running))
            return not has_old and new_running

        self.wait_for(moved, "the instance moved to w2", timeout=60)
        self.assertNotIn((False, False), seen, "the old instance stopped only once its replacement ran")
        new = self.instance("tiny")
        self.assertEqual(self.on(new), "w2")
        self.wait_for(lambda: not pid_alive(old_pid), "the drained engine to stop")
        self.assertIn("ready (draining)", self.cli("workers").stdout)

        # a live worker is removed only with --force, and the refusal says why
        r = self.cli("workers", "rm", "w2", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("runs 1 instance(s); removing it restarts their engines on other workers", r.stderr)
        self.assertIn("corral workers drain w2", r.stderr)
        self.assertIn("--force", r.stderr)
        self.assertIn("w2", self.workers())
        r = self.cli("workers", "rm", "w1", "--force")
        self.assertIn("removed worker 'w1'", r.stdout)


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class ModelList(EngineCase):
    def test_v1_models_lists_what_runs_and_the_key_may_use(self):
        self.cluster(("w1", None))
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        self.api("POST", "/api/models", {"name": "ghost", "path": os.path.join(self.tmp, "absent.gguf")},
                 expect=201)
        self.api("POST", "/api/models", {"name": "flag", "path": self.model("flag.gguf"), "ctx": 2048,
                                          "allow_cpu_offload": True, "engine_args": ["--bogus-flag"]}, expect=201)
        self.wait_running("tiny")
        self.wait_for(lambda: (lambda i: i and i["state"] in ("error", "crash_loop"))(self.instance("flag")),
                      "the engine with a bad flag to fail")
        every = self.cli("keys", "create", "every").stdout.strip()
        some = self.cli("keys", "create", "some", "--models", "ghost,flag").stdout.strip()

        def listed(key):
            status, body = self.request("GET", "/v1/models", token=key)
            self.assertEqual(status, 200, body)
            return sorted(m["id"] for m in body["data"])

        self.assertEqual(listed(every), ["tiny"], "not the model nothing placed, nor the one whose engine fails")
        self.assertEqual(listed(some), [])
        self.assertIn("ghost", self.cli("models").stdout, "'corral models' still shows them with their cause")


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class RollingUpdate(EngineCase):
    MSG = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}

    def traffic(self, key):
        """Requests one after another until stopped: (sent, statuses that were not 200)."""
        stop = threading.Event()
        result = {"sent": 0, "failed": []}

        def run():
            while not stop.is_set():
                status, _, body = self.gw("/v1/chat/completions", self.MSG, key)
                result["sent"] += 1
                if status != 200:
                    result["failed"].append((status, body[:200]))

        t = threading.Thread(target=run)
        t.start()
        return stop, t, result

    def test_update_replaces_every_instance_without_a_failed_request(self):
        self.cluster(("w1", None))
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "replicas": 2,
                                          "allow_cpu_offload": True, "engine_args": ["-t", "1"]}, expect=201)
        self.wait_for(lambda: [i["state"] for i in self.api("GET", "/api/instances?model=tiny")["instances"]]
                      == ["running", "running"], "two replicas running")
        old = {i["id"]: self.leader_report(i)["pid"] for i in self.api("GET", "/api/instances?model=tiny")["instances"]}
        key = self.cli("keys", "create", "t").stdout.strip()

        r = self.cli("update", "tiny", "--ctx", "1024", "--dry-run")
        self.assertIn("placed beside the old ones", r.stdout)
        self.assertEqual(self.api("GET", "/api/models/tiny")["ctx"], 2048, "a dry run changes nothing")

        stop, t, result = self.traffic(key)
        t0 = time.monotonic()
        try:
            r = self.cli("update", "tiny", "--ctx", "1024", "--wait", "--timeout", "120")
        finally:
            stop.set()
            t.join()
        print("\nrolling update of 2 replicas: %.1f s, %d requests, %d failed"
              % (time.monotonic() - t0, result["sent"], len(result["failed"])))
        self.assertIn("its 2 instance(s) are replaced one by one", r.stdout)
        self.assertIn("every replica runs (2/2)", r.stdout)
        self.assertGreater(result["sent"], 5)
        self.assertEqual(result["failed"], [], "no request failed during the rolling update")
        insts = self.api("GET", "/api/instances?model=tiny")["instances"]
        self.assertEqual(len(insts), 2)
        self.assertTrue(all(i["id"] not in old and not i["outdated"] for i in insts), insts)
        self.assertTrue(all(i["placement"]["n_ctx"] == 1024 for i in insts), [i["placement"] for i in insts])
        for pid in old.values():
            self.wait_for(lambda: not pid_alive(pid), "the old engines to stop")

        # an update whose new instances fail stops there: the old ones keep serving
        current = {i["id"] for i in insts}
        r = self.cli("update", "tiny", "--wait", "--timeout", "120", "--", "-t", "1", "--bogus-flag", check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("failed", r.stderr)
        insts = self.api("GET", "/api/instances?model=tiny")["instances"]
        self.assertIn("(old spec)", self.cli("instances").stdout)
        kept = [i for i in insts if i["id"] in current]
        self.assertEqual(len(kept), 2, "the old instances are still there")
        self.assertTrue(all(i["state"] == "running" and i["outdated"] for i in kept), kept)
        status, _, body = self.gw("/v1/chat/completions", self.MSG, key)
        self.assertEqual(status, 200, body)
        # putting the spec back makes the old instances current again and drops the failed ones
        self.cli("update", "tiny", "--", "-t", "1")
        self.wait_for(lambda: {i["id"] for i in self.api("GET", "/api/instances?model=tiny")["instances"]}
                      == current, "the failed new instances gone, the old ones kept", timeout=30)
