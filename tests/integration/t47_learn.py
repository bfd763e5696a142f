"""Tier 47: placements that learn. A real llama-server on CPU is measured by
its resident memory, and one on a (fake) GPU by NVML's per-process memory,
after running for a while; the difference to the estimate is kept per engine,
version, model file and device, the next dry run of the same file claims it,
and `corral inspect --learned` lists it. The estimate's error is printed
before and after learning."""
import json
import os
import unittest

from harness import ROOT
from t50_engines import EngineCase, LLAMA_BIN, GIB

MIB = 1 << 20


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Learn(EngineCase):
    def learned(self, instance):
        entries = [e for e in self.api("GET", "/api/learned")["learned"] if e["instance"] == instance]
        return entries[0] if entries else None

    def test_cpu_placements_learn_the_engines_resident_memory(self):
        self.cluster(("w1", None))
        path = self.model()
        spec = {"name": "tiny", "path": path, "ctx": 1024, "allow_cpu_offload": True, "engine_args": ["-t", "1"]}
        self.api("POST", "/api/models", spec, expect=201)
        inst = self.wait_running("tiny")
        estimate = inst["placement"]["workers"][0]["ram"]
        entry = self.wait_for(lambda: self.learned(inst["id"]), "the instance measured", timeout=40)
        self.assertEqual((entry["engine"], entry["device"], entry["source"]), ("llama.cpp", "cpu", path))
        self.assertEqual(entry["estimate"], estimate)
        self.assertNotEqual(entry["version"], "?")
        real = entry["real"]
        self.assertGreater(real, 0)
        plan = self.api("POST", "/api/models/plan", dict(spec, name="again"))
        self.assertTrue(plan["placed"])
        self.assertEqual(plan["learned"][0]["instance"], inst["id"])
        claim = plan["instances"][0]["workers"][0]["ram"]
        before, after = abs(estimate - real) / real, abs(claim - real) / real
        print("\nlearning on CPU: estimate %.1f MiB, engine held %.1f MiB (error %.1f%%); after learning the claim is "
              "%.1f MiB (error %.1f%%)" % (estimate / MIB, real / MIB, 100 * before, claim / MIB, 100 * after))
        self.assertLess(after, 0.03, "within 3% after one run")
        out = self.cli("inspect", "--learned").stdout
        self.assertIn("cpu", out)
        self.assertIn(path, out)
        # another file is not corrected by this one
        other = self.model("other.gguf")
        plan = self.api("POST", "/api/models/plan", dict(spec, name="other", path=other))
        self.assertNotIn("learned", plan)
        # what was learned survives a restart of the server
        self.procs[0].stop()
        self.start_server(extra=("--gpu-reserve", "0"), data_dir=self.data_dir, port=self.port)
        self.login()
        self.assertTrue(self.learned(inst["id"]))

    def test_gpu_placements_learn_from_nvml_per_process_memory(self):
        cfg = {"driver_version": "550.54.15", "cuda_driver_version": 12040, "devices": [
            {"name": "NVIDIA L4", "uuid": "GPU-L4-0", "memory_total": 24 * GIB, "memory_used": 0, "cc": [8, 9]}]}
        self.cluster(("w1", cfg))
        path = self.model()
        spec = {"name": "tiny", "path": path, "ctx": 1024, "engine_args": ["-t", "1"]}
        self.api("POST", "/api/models", spec, expect=201)
        inst = self.wait_running("tiny")
        claim = inst["placement"]["workers"][0]["gpus"][0]["claim"]
        # the engine now shows on the GPU with 100 MiB more than its claim, as NVML would list it
        pid = self.leader_report(inst)["pid"]
        dev = cfg["devices"][0]
        dev["processes"] = [{"pid": pid, "memory": claim + 100 * MIB}]
        dev["memory_used"] = claim + 100 * MIB
        with open(os.path.join(self.tmp, "w1-nvml.json"), "w") as f:
            json.dump(cfg, f)
        entry = self.wait_for(lambda: self.learned(inst["id"]), "the instance measured", timeout=40)
        self.assertEqual(entry["device"], "NVIDIA L4")
        self.assertEqual(entry["real"] - entry["estimate"], 100 * MIB)
        plan = self.api("POST", "/api/models/plan", dict(spec, name="again"))
        self.assertEqual(plan["instances"][0]["workers"][0]["gpus"][0]["claim"], claim + 100 * MIB)
        self.assertIn("NVIDIA L4", self.cli("inspect", "--learned").stdout)

    def test_an_engine_out_of_gpu_memory_is_placed_again_with_what_it_needed(self):
        gpus = {"driver_version": "550.54.15", "cuda_driver_version": 12040, "devices": [
            {"name": "NVIDIA L4", "uuid": "GPU-L4-0", "memory_total": 24 * GIB, "memory_used": 24 * GIB - 1200 * MIB,
             "cc": [8, 9]},
            {"name": "NVIDIA L4", "uuid": "GPU-L4-1", "memory_total": 24 * GIB, "memory_used": 0, "cc": [8, 9]}]}
        engines = os.path.join(self.tmp, "engines.json")
        standin = os.path.join(ROOT, "tests", "fakes", "engines", "oom_engine")
        with open(engines, "w") as f:
            json.dump({"engines": [{"name": "llama.cpp", "command": [
                standin, "-m", "{model}", "--host", "{host}", "--port", "{port}", "-c", "{ctx}", "-np", "{parallel}",
                "-ngl", "{ngl}", "--alias", "{name}"], "version": ["{exe}", "--version"], "health": "/health",
                "devices": ["cpu", "nvidia"], "api_key_env": "LLAMA_API_KEY"}]}, f)
        self.env["OOM_ON_GPUS"] = "0"
        self.env["REAL_LLAMA_SERVER"] = os.path.join(LLAMA_BIN, "llama-server")
        self.start_server(extra=("--gpu-reserve", "0"))
        self.login()
        self.env["CORRAL_SERVER_URL"], self.env["CORRAL_API_TOKEN"] = self.url, self.token
        self.start_worker("w1", nvml_config=gpus, extra=("--engines-config", engines, "--restart-backoff", "1"))
        self.wait_state("w1", "ready")
        # binpack: the fullest GPU that fits, GPU 0, which is too small in truth
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 1024, "policy": "binpack",
                                          "engine_args": ["-t", "1"]}, expect=201)
        first = self.wait_for(lambda: self.instance("tiny"), "the first placement")
        self.assertEqual(first["placement"]["workers"][0]["gpus"][0]["index"], 0)
        claim = first["placement"]["workers"][0]["gpus"][0]["claim"]
        again = self.wait_for(lambda: (lambda i: i and i["id"] != first["id"] and i["state"] == "running" and i)(
            self.instance("tiny")), "placed again, running", timeout=60)
        g = again["placement"]["workers"][0]["gpus"][0]
        self.assertEqual(g["index"], 1, "moved to the GPU with room for what it needed")
        self.assertEqual(g["claim"], claim + 1400 * MIB)
        ev = [e for e in self.api("GET", "/api/events?limit=500")["events"] if e["kind"] == "instance.oom"]
        self.assertEqual(len(ev), 1)
        self.assertIn("ran out of GPU memory on w1:0", ev[0]["message"])
        self.assertIn("1.4 GiB more", ev[0]["message"])
        learned = [e for e in self.api("GET", "/api/learned")["learned"] if e.get("from") == "out of memory"]
        self.assertEqual(learned[0]["delta"], 1400 * MIB)


if __name__ == "__main__":
    unittest.main()
