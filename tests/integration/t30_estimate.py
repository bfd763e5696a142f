"""Tier 30: the llama.cpp memory estimate (`corral inspect`) against what a
real llama-server allocates, read from its own log, for several generated
GGUF shapes and engine settings. Each total must be within 10%."""
import os
import re
import subprocess
import time
import unittest

from harness import BUILD, CORRAL, ClusterCase, free_port

MKMODEL = os.path.join(BUILD, "tools", "mkmodel")
LLAMA_BIN = os.environ.get("CORRAL_LLAMA_BIN", "")
LLAMA_SERVER = os.path.join(LLAMA_BIN, "llama-server")

MIB = 1024 * 1024

# (name, mkmodel args, llama-server args, inspect args)
CASES = [
    ("tiny-f32", [], ["-c", "4096", "-np", "2"], ["--ctx", "4096", "--parallel", "2"]),
    ("gqa-f16", ["--layers", "8", "--embd", "512", "--heads", "8", "--kv-heads", "2", "--ff", "1408",
                 "--extra-vocab", "4000", "--type", "f16"], ["-c", "16384", "-np", "1"], ["--ctx", "16384"]),
    ("wide-q8", ["--layers", "4", "--embd", "1024", "--heads", "16", "--kv-heads", "4", "--ff", "2816",
                 "--extra-vocab", "30000", "--type", "q8_0"], ["-c", "4096", "-np", "4"],
     ["--ctx", "4096", "--parallel", "4"]),
    ("deep-tied-f32", ["--layers", "12", "--embd", "256", "--heads", "4", "--kv-heads", "4", "--ff", "768",
                       "--tied", "--version", "2"], ["-c", "8192", "-np", "1"], ["--ctx", "8192"]),
    ("q8-cache", ["--layers", "6", "--embd", "512", "--heads", "8", "--kv-heads", "8", "--ff", "1024",
                  "--extra-vocab", "2000", "--type", "q4_0"],
     ["-c", "8192", "-np", "2", "-ctk", "q8_0", "-ctv", "q8_0"],
     ["--ctx", "8192", "--parallel", "2", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0"]),
    ("no-flash-attn", ["--layers", "4", "--embd", "512", "--heads", "8", "--kv-heads", "2", "--ff", "1408"],
     ["-c", "4096", "-np", "1", "-fa", "off", "-ub", "256"], ["--ctx", "4096", "--no-flash-attn", "--ubatch", "256"]),
]

BUFFER = re.compile(r"(CPU_Mapped model|CPU +output|CPU KV|CPU compute) buffer size = +([0-9.]+) MiB")


@unittest.skipUnless(os.access(LLAMA_SERVER, os.X_OK), "llama-server not built (scripts/llama-build.sh)")
class EstimateAgainstLlamaServer(ClusterCase):
    def measured(self, model, args):
        log_path = os.path.join(self.tmp, os.path.basename(model) + ".log")
        port = free_port()
        with open(log_path, "wb") as log:
            p = subprocess.Popen([LLAMA_SERVER, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-t", "1",
                                  "-lv", "4", "--no-warmup"] + args, stdout=log, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, GGML_NO_BACKTRACE="1"))
            try:
                deadline = time.monotonic() + 60
                text = ""
                while time.monotonic() < deadline:
                    with open(log_path, errors="replace") as f:
                        text = f.read()
                    if "listening on" in text or p.poll() is not None:
                        break
                    time.sleep(0.05)
            finally:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:  # one that hangs on SIGTERM
                    p.kill()
                    p.wait()
        found = {}
        for kind, mib in BUFFER.findall(text):
            found[kind.split()[-1] if kind != "CPU_Mapped model" else "model"] = float(mib) * MIB
        self.assertEqual(set(found), {"model", "output", "KV", "compute"}, "buffer lines in log:\n" + text[-3000:])
        return found

    def test_estimate_within_ten_percent_of_llama_server(self):
        import json
        report = []
        for name, shape, server_args, inspect_args in CASES:
            with self.subTest(shape=name):
                model = os.path.join(self.tmp, name + ".gguf")
                subprocess.run([MKMODEL, "--out", model] + shape, check=True)
                real = self.measured(model, server_args)
                out = subprocess.run([CORRAL, "inspect", model, "--json"] + inspect_args, check=True,
                                     capture_output=True, text=True).stdout
                est = json.loads(out)["estimate"]
                real_total = sum(real.values())
                ratio = est["ram"] / real_total
                report.append("%-14s real %7.2f MiB  estimate %7.2f MiB  ratio %.3f  (KV %.2f vs %.2f, compute "
                              "%.2f vs %.2f)" % (name, real_total / MIB, est["ram"] / MIB, ratio, real["KV"] / MIB,
                                                  est["kv"] / MIB, real["compute"] / MIB, est["compute"] / MIB))
                self.assertLess(abs(ratio - 1), 0.10, report[-1])
                self.assertLess(abs(est["kv"] - real["KV"]), 0.01 * real["KV"] + 64 * 1024, report[-1])
        print("\n" + "\n".join(report))


class InspectRefusals(ClusterCase):
    def test_inspect_names_what_is_wrong(self):
        bad = os.path.join(self.tmp, "bad.gguf")
        with open(bad, "wb") as f:
            f.write(b"GGML" + bytes(64))
        r = subprocess.run([CORRAL, "inspect", bad], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a GGUF file", r.stderr)
        self.assertIn("fix:", r.stderr)
        model = os.path.join(self.tmp, "m.gguf")
        subprocess.run([MKMODEL, "--out", model], check=True)
        with open(model, "rb") as f:
            data = f.read()
        cut = os.path.join(self.tmp, "cut.gguf")
        with open(cut, "wb") as f:
            f.write(data[: len(data) // 2])
        r = subprocess.run([CORRAL, "inspect", cut], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not within the file bounds", r.stderr)
        r = subprocess.run([CORRAL, "inspect", os.path.join(self.tmp, "absent.gguf")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("No such file", r.stderr)
        r = subprocess.run([CORRAL, "inspect", model, "--cache-type-k", "q9_9"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown cache type", r.stderr)


class InspectSafetensors(ClusterCase):
    def test_safetensors_directory_is_read_from_config_and_headers(self):
        import json
        import struct
        d = os.path.join(self.tmp, "hf-model")
        os.makedirs(d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 8,
                       "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000,
                       "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}, f)
        total = 0
        for shard, n in (("model-00001-of-00002.safetensors", 3000), ("model-00002-of-00002.safetensors", 5000)):
            header = json.dumps({"w": {"dtype": "BF16", "shape": [n // 2], "data_offsets": [0, n]}}).encode()
            with open(os.path.join(d, shard), "wb") as f:
                f.write(struct.pack("<Q", len(header)) + header + bytes(n))
            total += n
        out = subprocess.run([CORRAL, "inspect", d, "--json", "--ctx", "4096"], check=True, capture_output=True,
                             text=True).stdout
        j = json.loads(out)
        self.assertEqual(j["shape"]["format"], "safetensors")
        self.assertEqual(j["shape"]["weight_bytes"], total, "tensor bytes of every shard, headers excluded")
        self.assertEqual(j["shape"]["n_head_kv"], 2)
        self.assertEqual(j["estimate"]["kv"], 2 * 4 * 2 * 32 * 2 * 4096, "2 x layers x kv heads x head dim x bf16 x ctx")
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write("{broken")
        r = subprocess.run([CORRAL, "inspect", d], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("config.json': invalid JSON", r.stderr)
