"""Tier 47: placements that learn. A real llama-server on CPU is measured by
its resident memory, and one on a (fake) GPU by NVML's per-process memory,
after running for a while; the difference to the estimate is kept per engine,
version, model file and device, the next dry run of the same file claims it,
and `corral inspect --learned` lists it. The estimate's error is printed
before and after learning."""
import json
import os
import unittest

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


if __name__ == "__main__":
    unittest.main()
