"""Tier 70: cluster compatibility checks with several workers on loopback and
fake NVML: a driver mismatch refuses a distributed vLLM group with the fix
(and a group without the odd node is chosen when it is enough); a node with
a 64 MB /dev/shm warns for vLLM; a CPU-only node asked into a vLLM group is
refused with the reason; checks show in the API, `corral workers` and
`corral doctor`."""
import copy
import json
import os

from harness import ROOT
from t50_engines import EngineCase, LLAMA_BIN, gpu

FAKES = os.path.join(ROOT, "tests", "fakes")


def nvml(driver, size_gib=2, name="NVIDIA L4"):
    cfg = copy.deepcopy(gpu(size_gib))
    cfg["driver_version"] = driver
    cfg["devices"][0]["name"] = name
    return cfg


class Checks(EngineCase):
    def setUp(self):
        super().setUp()
        self.env["CORRAL_ENGINE_PATH"] = ":".join([LLAMA_BIN, os.path.join(FAKES, "vllm"), os.path.join(FAKES, "ray")])

    def plan(self, **spec):
        body = {"name": "big", "path": self.path, "engine": "vllm", "allow_distributed": True}
        body.update(spec)
        return self.wait_for(lambda: (lambda p: not p["waiting_for"] and p)(self.api("POST", "/api/models/plan", body)),
                             "the workers to inspect the model file")

    def test_driver_mismatch_refuses_a_vllm_group_with_the_fix(self):
        self.cluster(("gpu-1", nvml("550.54.15")), ("gpu-2", nvml("535.104.05")), ("gpu-3", nvml("550.54.14")))
        self.path = self.model("four.gguf", "--layers", "4")
        # the smallest context two nodes cannot hold: three could, but not gpu-2 with the others
        ctx = 1 << 21
        while True:
            plan = self.plan(ctx=ctx)
            if not plan["placed"]:
                break
            self.assertNotIn("gpu-2", [w["name"] for w in plan["instances"][0]["workers"]])
            ctx = ctx * 5 // 4
        refused = plan["groups_refused"]
        self.assertTrue(refused, plan)
        group = [g for g in refused if len(g["workers"]) == 3][0]
        self.assertEqual(sorted(group["workers"]), ["gpu-1", "gpu-2", "gpu-3"])
        fail = [c for c in group["checks"] if c["id"] == "driver-mismatch"][0]
        self.assertIn("gpu-2 runs NVIDIA driver 535, gpu-1 and gpu-3 run NVIDIA driver 550", fail["message"])
        self.assertIn("--selector", fail["fix"])
        self.assertIn("refused by checks", plan["summary"])
        r = self.cli("deploy", "big", "--path", self.path, "--engine", "vllm", "--ctx", str(ctx),
                     "--allow-distributed", "--dry-run", check=False)
        self.assertIn("driver-mismatch", r.stdout + r.stderr)
        # a model two nodes can hold goes to the two that match, with its checks
        plan = self.plan(ctx=ctx * 4 // 5)
        self.assertTrue(plan["placed"], plan)
        inst = plan["instances"][0]
        self.assertEqual(sorted(w["name"] for w in inst["workers"]), ["gpu-1", "gpu-3"])
        ids = {c["id"]: c["level"] for c in inst["checks"]}
        self.assertEqual(ids["driver-mismatch"], "pass")
        self.assertEqual(ids["engine-mismatch"], "pass")
        self.assertEqual(ids["ray-mismatch"], "pass")

    def test_small_shm_warns_and_a_cpu_only_node_never_joins_a_vllm_group(self):
        res = os.path.join(self.tmp, "shm.json")
        with open(res, "w") as f:
            json.dump({"system": {"shm_bytes": 64 << 20}}, f)
        # the server's embedded worker is this CPU-only machine
        self.start_server(disable_worker=False, extra=("--gpu-reserve", "0", "--worker-name", "cpu-1",
                                                       "--status-interval", "1"))
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        self.start_worker("gpu-1", nvml_config=nvml("550.54.15"), extra=("--resources", res))
        self.start_worker("gpu-2", nvml_config=nvml("550.54.15"))
        with_engines = self.env["CORRAL_ENGINE_PATH"]
        self.env["CORRAL_ENGINE_PATH"] = LLAMA_BIN  # gpu-3 has no vLLM
        self.start_worker("gpu-3", nvml_config=nvml("550.54.15"))
        self.env["CORRAL_ENGINE_PATH"] = with_engines
        for n in ("gpu-1", "gpu-2", "gpu-3", "cpu-1"):
            self.wait_state(n, "ready")
        w = self.api("GET", "/api/workers/gpu-1")
        shm = [c for c in w["checks"] if c["id"] == "shm"][0]
        self.assertEqual(shm["level"], "warn")
        self.assertIn("/dev/shm is 64 MiB", shm["message"])
        self.assertGreaterEqual(w["checks_summary"]["warn"], 1)
        self.assertEqual([c["level"] for c in w["checks"] if c["id"] == "address"], ["pass"])
        self.assertTrue([c for c in w["checks"] if c["id"] == "engine:vllm" and c["level"] == "pass"])
        out = self.cli("workers").stdout
        self.assertIn("CHECKS", out)
        line = [l for l in out.splitlines() if l.startswith("gpu-1")][0]
        self.assertIn("warn", line)
        self.path = self.model()
        # the workers measure each other through their probe endpoints
        def measured():
            ws = self.workers()
            return all(ws[b]["id"] in ws[a]["peers"] and "rtt_ms" in ws[a]["peers"][ws[b]["id"]]
                       for a, b in (("gpu-1", "gpu-2"), ("gpu-2", "gpu-1")))
        self.wait_for(measured, "the workers' peer probes", timeout=30)
        # the cluster view: every worker's checks, the measured round trips, the health summary
        r = self.cli("doctor", "--cluster", check=False)
        self.assertIn("gpu-1 (ready)", r.stdout)
        self.assertIn("/dev/shm is 64 MiB", r.stdout)
        self.assertIn("RTT ms (row to column)", r.stdout)
        row = [l.split() for l in r.stdout.splitlines() if l.startswith("gpu-2 ")][-1]
        self.assertTrue(any(c.replace(".", "").isdigit() for c in row[1:]), row)
        health = self.api("GET", "/api/health")
        self.assertEqual(health["workers"], {"ready": 4})
        self.assertIn(health["status"], ("degraded", "failing"))
        self.assertTrue([c for c in health["checks"] if c["worker"] == "gpu-1" and c["id"] == "shm"], health)
        # the CPU-only node is never part of a vLLM group the scheduler builds...
        plan = self.plan(ctx=4194304)
        self.assertTrue(plan["placed"], plan)
        inst = plan["instances"][0]
        self.assertEqual(sorted(x["name"] for x in inst["workers"]), ["gpu-1", "gpu-2"],
                         "not the embedded CPU-only worker, not gpu-3 without vLLM")
        levels = {c["id"]: (c["level"], c["message"]) for c in inst["checks"]}
        self.assertEqual(levels["shm"][0], "warn")
        self.assertEqual(levels["reach"][0], "pass", levels)
        self.assertEqual(levels["rtt"][0], "pass", levels)
        self.assertIn("limit 2 ms", levels["rtt"][1])
        # a model too big for the two: gpu-3 (no vLLM) and cpu-1 (no GPU) are named, never used
        plan = self.plan(ctx=4194304 * 3)
        self.assertFalse(plan["placed"], plan)
        why = {r["worker"]: r["code"] for r in plan["reasons"]}
        self.assertEqual(why.get("gpu-3"), "no_engine", plan["reasons"])
        self.assertIn(why.get("cpu-1"), ("no_engine", "engine_devices", "no_gpu"), plan["reasons"])
        # ...and asked in by hand, it is refused with the reason and the fix
        plan = self.plan(ctx=4194304, gpus=["gpu-1:0", "cpu-1:cpu"])
        self.assertFalse(plan["placed"], plan)
        self.assertIn("cpu-1 has no GPU: vllm needs a GPU on every node", plan["summary"])
        self.assertIn("llama.cpp", plan["summary"])

    def test_doctor_prints_every_check_and_fails_on_failures(self):
        r = self.cli("doctor", "--port-range", "5-1", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--port-range takes LO-HI, e.g. 20000-20999, not '5-1'", r.stderr)
        r = self.cli("server", "--rtt-limit-tp", "fast", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--rtt-limit-tp takes milliseconds", r.stderr)
        r = self.cli("doctor", "--port-range", "32000-33000", check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("checks", r.stdout)
        self.assertIn("port-range", r.stdout)
        self.assertIn("fix: choose --port-range outside the ephemeral range", r.stdout)
        cfg = os.path.join(self.tmp, "nvml.json")
        with open(cfg, "w") as f:
            json.dump(nvml("525.60.13"), f)
        env = dict(self.env, FAKE_NVML_CONFIG=cfg, CORRAL_NVML_LIBRARY=os.path.join(
            os.path.dirname(os.path.dirname(LLAMA_BIN)), "nope"))
        out = json.loads(self.cli("doctor", "--json", check=False).stdout)
        self.assertTrue(any(c["id"] == "nvml" for c in out["checks"]))
        del env
