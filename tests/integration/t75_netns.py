"""Tier 75: several hosts, made with network namespaces (ip netns, veth pairs;
created here and removed after): the server in one namespace, three workers
in three others, each on its own address. gpu-b has a route to the server
only, so the other workers cannot reach its probe port: the vLLM group with
it fails its reach check naming both workers, and the group is made without
it. With delay on the way to one worker (`tc netem` on its link, or where the
kernel lacks netem a relay in front of its worker port that holds data 5 ms
each way), the round-trip check fails with the measured value. Skipped, with
the reason, where namespaces cannot be made."""
import json
import os
import signal
import subprocess
import time
import unittest
import urllib.request

from harness import CORRAL, FAKE_NVML, ROOT, kill_marked
from t50_engines import LLAMA_BIN, MKMODEL, gpu

FAKES = os.path.join(ROOT, "tests", "fakes")
NET = "10.%d" % (200 + os.getpid() % 50)  # apart from other runs on the same machine


def sh(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(args), r.stderr.strip()))
    return r


def netns_possible():
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = "crprobe%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return "cannot create network namespaces here: " + r.stderr.strip()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


WHY_NOT = netns_possible()


@unittest.skipIf(WHY_NOT, WHY_NOT or "")
class MultiHost(unittest.TestCase):
    def setUp(self):
        self.tag = str(os.getpid() % 10000)
        self.ns = {k: "cr%s%s" % (k, self.tag) for k in ("s", "a", "b", "c")}
        self.procs = []
        self.tmp = subprocess.run(["mktemp", "-d", "/tmp/corral-netns-XXXXXX"], capture_output=True,
                                  text=True).stdout.strip()
        self.addCleanup(self.cleanup)
        for n in self.ns.values():
            sh("ip", "netns", "add", n)
        s = self.ns["s"]
        # host <-> server
        sh("ip", "link", "add", "crh" + self.tag, "type", "veth", "peer", "name", "crsh" + self.tag)
        sh("ip", "link", "set", "crsh" + self.tag, "netns", s)
        sh("ip", "addr", "add", NET + ".0.1/30", "dev", "crh" + self.tag)
        sh("ip", "link", "set", "crh" + self.tag, "up")
        sh("ip", "-n", s, "addr", "add", NET + ".0.2/30", "dev", "crsh" + self.tag)
        sh("ip", "-n", s, "link", "set", "crsh" + self.tag, "up")
        sh("ip", "-n", s, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", s, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # server <-> each worker; a and c route through the server, b does not
        for i, k in enumerate(("a", "b", "c"), start=1):
            w, dev_s, dev_w = self.ns[k], "crs%s%s" % (k, self.tag), "cr%sw%s" % (k, self.tag)
            sh("ip", "link", "add", dev_s, "type", "veth", "peer", "name", dev_w)
            sh("ip", "link", "set", dev_s, "netns", s)
            sh("ip", "link", "set", dev_w, "netns", w)
            sh("ip", "-n", s, "addr", "add", "%s.%d.1/30" % (NET, i), "dev", dev_s)
            sh("ip", "-n", s, "link", "set", dev_s, "up")
            sh("ip", "-n", w, "addr", "add", "%s.%d.2/30" % (NET, i), "dev", dev_w)
            sh("ip", "-n", w, "link", "set", dev_w, "up")
            sh("ip", "-n", w, "link", "set", "lo", "up")
            if k != "b":
                sh("ip", "-n", w, "route", "add", "default", "via", "%s.%d.1" % (NET, i))
        self.dev_c = "crcw" + self.tag

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        survivors = kill_marked(self.tmp)
        for n in self.ns.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        subprocess.run(["ip", "link", "del", "crh" + self.tag], capture_output=True)
        subprocess.run(["rm", "-rf", self.tmp])
        if survivors:
            raise AssertionError("processes of this test survived SIGKILL: %s" % survivors)

    def spawn(self, ns, name, args, env=None):
        with open(os.path.join(self.tmp, name + ".log"), "wb") as log:
            p = subprocess.Popen(["ip", "netns", "exec", self.ns[ns], CORRAL] + args, stdout=log,
                                 stderr=subprocess.STDOUT, env=dict(env or os.environ, CORRAL_TEST_RUN=self.tmp))
        self.procs.append(p)
        return p

    def api(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer " + getattr(self, "token", "")})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def wait(self, cond, what, timeout=40):
        end = time.time() + timeout
        while time.time() < end:
            try:
                v = cond()
                if v:
                    return v
            except OSError:
                pass
            time.sleep(0.3)
        logs = ""
        for f in sorted(os.listdir(self.tmp)):
            if f.endswith(".log"):
                with open(os.path.join(self.tmp, f), errors="replace") as fh:
                    logs += "\n--- %s ---\n%s" % (f, fh.read()[-2000:])
        self.fail("timed out waiting for " + what + logs)

    def cluster(self, extra=(), advertise_c=None):
        port = 18080
        data = os.path.join(self.tmp, "server")
        self.spawn("s", "server", ["server", "--host", "0.0.0.0", "--port", str(port), "--data-dir", data,
                                   "--disable-worker", "--probe-interval", "1", "--gpu-reserve", "0"] + list(extra))
        self.url = "http://%s.0.2:%d" % (NET, port)
        self.wait(lambda: urllib.request.urlopen(self.url + "/healthz", timeout=1).status == 200, "the server")
        with open(os.path.join(data, "token")) as f:
            token = f.read().strip()
        with open(os.path.join(data, "initial_admin_password")) as f:
            pw = f.read().strip()
        self.token = self.api("POST", "/api/auth/login", {"username": "admin", "password": pw})["token"]
        cfg = os.path.join(self.tmp, "nvml.json")
        with open(cfg, "w") as f:
            json.dump(gpu(2), f)
        env = dict(os.environ, FAKE_NVML_CONFIG=cfg, CORRAL_NVML_LIBRARY=FAKE_NVML,
                   CORRAL_ENGINE_PATH=":".join([LLAMA_BIN, os.path.join(FAKES, "vllm"), os.path.join(FAKES, "ray")]))
        for i, k in enumerate(("a", "b", "c"), start=1):
            self.spawn(k, "worker-" + k, ["worker", "--server-url", "http://%s.%d.1:%d" % (NET, i, port), "--token",
                                          token, "--name", "gpu-" + k, "--data-dir", os.path.join(self.tmp, "w" + k),
                                          "--listen-host", "0.0.0.0", "--advertise-address",
                                          advertise_c if k == "c" and advertise_c else "%s.%d.2" % (NET, i),
                                          "--worker-port", "10150", "--status-interval", "1",
                                          "--port-range", "21000-21099"], env)
        self.wait(lambda: len([w for w in self.api("GET", "/api/workers")["workers"] if w["state"] == "ready"]) == 3,
                  "three ready workers")
        self.model = os.path.join(self.tmp, "tiny.gguf")
        subprocess.run([MKMODEL, "--out", self.model], check=True, capture_output=True)

    def peers(self):
        ws = {w["name"]: w for w in self.api("GET", "/api/workers")["workers"]}
        return {(a, b): ws[a]["peers"].get(ws[b]["id"]) for a in ws for b in ws if a != b}

    def plan(self, **extra):
        body = {"name": "big", "path": self.model, "engine": "vllm", "ctx": 4194304, "allow_distributed": True}
        body.update(extra)
        return self.wait(lambda: (lambda p: not p["waiting_for"] and p)(self.api("POST", "/api/models/plan", body)),
                         "the workers to inspect the model")

    def test_a_worker_the_others_cannot_reach_is_left_out_of_the_group(self):
        self.cluster()
        self.wait(lambda: all(self.peers().get(k) for k in (("gpu-a", "gpu-b"), ("gpu-a", "gpu-c"),
                                                            ("gpu-c", "gpu-a"), ("gpu-b", "gpu-a"))),
                  "the workers' probes of each other")
        p = self.peers()
        self.assertIn("rtt_ms", p[("gpu-a", "gpu-c")], p)
        self.assertIn("error", p[("gpu-a", "gpu-b")], p)
        self.assertIn("error", p[("gpu-b", "gpu-a")], p)
        plan = self.plan()
        self.assertTrue(plan["placed"], plan)
        inst = plan["instances"][0]
        self.assertEqual(sorted(w["name"] for w in inst["workers"]), ["gpu-a", "gpu-c"])
        self.assertEqual([c["level"] for c in inst["checks"] if c["id"] in ("reach", "rtt")], ["pass", "pass"])
        # asked for by hand, the group with gpu-b is refused, naming both sides
        plan = self.plan(gpus=["gpu-a:0", "gpu-b:0"])
        self.assertFalse(plan["placed"], plan)
        reach = [c for g in plan["groups_refused"] for c in g["checks"] if c["id"] == "reach"][0]
        self.assertIn("gpu-a cannot reach gpu-b", reach["message"])
        self.assertIn("gpu-b cannot reach gpu-a", reach["message"])
        self.assertIn("firewall", reach["fix"])
        self.assertIn("gpu-a cannot reach gpu-b", plan["summary"])
        r = subprocess.run([CORRAL, "doctor", "--cluster"], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, CORRAL_SERVER_URL=self.url, CORRAL_API_TOKEN=self.token))
        self.assertIn("gpu-a cannot reach gpu-b", r.stdout)
        self.assertIn("unreachable", r.stdout)

    def add_latency(self):
        """Delay traffic to gpu-c: netem on its link where the kernel has it; else gpu-c advertises an
        address in the server's namespace where a relay holds every piece of data 5 ms each way (the
        worker port only: what the probes measure). Returns how, and the address gpu-c advertises."""
        c = self.ns["c"]
        r = subprocess.run(["ip", "netns", "exec", c, "tc", "qdisc", "add", "dev", self.dev_c, "root", "netem",
                            "delay", "5ms"], capture_output=True, text=True)
        if r.returncode == 0:
            return "netem 5 ms", None
        far = NET + ".4.1"
        sh("ip", "-n", self.ns["s"], "addr", "add", far + "/32", "dev", "lo")
        relay = ("import asyncio\n"
                 "async def pipe(r, w):\n"
                 "    try:\n"
                 "        while True:\n"
                 "            d = await r.read(65536)\n"
                 "            if not d: break\n"
                 "            await asyncio.sleep(0.005)\n"
                 "            w.write(d); await w.drain()\n"
                 "    except OSError: pass\n"
                 "    finally: w.close()\n"
                 "async def handle(cr, cw):\n"
                 "    try: ur, uw = await asyncio.open_connection('%s.3.2', 10150)\n"
                 "    except OSError: cw.close(); return\n"
                 "    await asyncio.gather(pipe(cr, uw), pipe(ur, cw))\n"
                 "async def main():\n"
                 "    s = await asyncio.start_server(handle, '%s', 10150)\n"
                 "    async with s: await s.serve_forever()\n"
                 "asyncio.run(main())\n" % (NET, far))
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.ns["s"], "python3", "-c", relay],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return "a relay adding 5 ms each way (no sch_netem in this kernel)", far

    def test_latency_on_one_link_fails_the_round_trip_check(self):
        how, far = self.add_latency()
        self.cluster(advertise_c=far)
        self.wait(lambda: (self.peers().get(("gpu-a", "gpu-c")) or {}).get("rtt_ms", 0) > 2.5,
                  "the delayed round trip to be measured (%s)" % how, timeout=60)
        plan = self.plan(gpus=["gpu-a:0", "gpu-c:0"])
        self.assertFalse(plan["placed"], plan)
        rtt = [c for g in plan["groups_refused"] for c in g["checks"] if c["id"] == "rtt"]
        self.assertTrue(rtt, plan)
        self.assertIn("over the 2 ms limit for tensor parallelism", rtt[0]["message"])
        self.assertRegex(rtt[0]["message"], r"gpu-a to gpu-c \d+\.\d\d ms")
        # llama.cpp RPC allows 20 ms: the same two nodes make a group
        plan = self.plan(engine="llama.cpp", gpus=["gpu-a:0", "gpu-c:0"])
        self.assertTrue(plan["placed"], plan)
        self.assertEqual([c["level"] for c in plan["instances"][0]["checks"] if c["id"] == "rtt"], ["pass"])


    def test_a_replica_whose_link_goes_silent_is_skipped_after_the_connect_timeout(self):
        self.cluster(extra=("--gateway-connect-timeout", "500", "--probe-interval", "60"))
        key = self.api("POST", "/api/keys", {"name": "t"})["key"]
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model, "ctx": 2048, "allow_cpu_offload": True,
                                         "engine_args": ["-t", "1"], "replicas": 2})

        def running():
            insts = self.api("GET", "/api/instances?model=tiny")["instances"]
            up = [i for i in insts if i["state"] == "running" and i.get("endpoint")]
            return len(up) == 2 and up
        insts = self.wait(running, "two running replicas", timeout=60)
        where = {i["id"]: i["placement"]["workers"][0]["name"] for i in insts}
        self.assertEqual(len(set(where.values())), 2, where)
        # the link to one replica's worker goes silent: packets vanish, connects hang
        silent = [i for i in insts if where[i["id"]] != "gpu-b"][0]
        ns = {"gpu-a": "a", "gpu-b": "b", "gpu-c": "c"}[where[silent["id"]]]
        sh("ip", "-n", self.ns[ns], "link", "set", "cr%sw%s" % (ns, self.tag), "down")
        before = {i["id"]: i["requests"] for i in self.api("GET", "/api/instances?model=tiny")["instances"]}
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for _ in range(4):
            req = urllib.request.Request(self.url + "/v1/chat/completions", data=json.dumps(msg).encode(),
                                         headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
            with urllib.request.urlopen(req, timeout=30) as r:
                self.assertEqual(r.status, 200)
        after = {i["id"]: i["requests"] for i in self.api("GET", "/api/instances?model=tiny")["instances"]}
        self.assertEqual(after[silent["id"]] - before[silent["id"]], 1,
                         "the silent replica was tried once, then others first")
        other = [k for k in after if k != silent["id"]][0]
        self.assertEqual(after[other] - before[other], 4, "every request was answered by the other")


if __name__ == "__main__":
    unittest.main()
