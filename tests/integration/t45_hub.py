"""Tier 45: models from hubs (Hugging Face, ModelScope) through a local hub
server (tests/integration/hub_server.py): deploy by OWNER/REPO:QUANT, the
largest file that fits when no quant is given, a pinned revision recorded as
the commit used, a gated repository that needs HF_TOKEN (which never follows a
redirect to the CDN), a download cut mid-way that resumes, and every refusal
with its cause and fix. No test reaches the internet."""
import hashlib
import json
import os
import re
import time
import unittest
import urllib.error
import urllib.request

import struct
import subprocess

import hub_server
from harness import CORRAL
from t50_engines import EngineCase, FAKES, LLAMA_BIN, MKMODEL, gpu, port_range


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Hub(EngineCase):
    def setUp(self):
        super().setUp()
        self.hub = hub_server.Hub()
        self.addCleanup(self.hub.close)
        self.env["HF_ENDPOINT"] = self.hub.url
        self.env["MODELSCOPE_ENDPOINT"] = self.hub.url
        self.env.pop("HF_TOKEN", None)
        self.env.pop("MODELSCOPE_API_TOKEN", None)
        with open(self.model("hub-tiny.gguf"), "rb") as f:
            self.tiny = f.read()

    def deploy(self, *args, check=True):
        return self.cli("deploy", *args, "--allow-cpu-offload", "--ctx", "1024", "--timeout", "120", "--", "-t", "1",
                        check=check)

    def chat_ok(self, model):
        key = self.cli("keys", "create", "k-" + model).stdout.strip()
        msg = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        status, _, body = self.gw("/v1/chat/completions", msg, key)
        self.assertEqual(status, 200, body)

    def test_deploy_by_quant_runs_and_records_the_commit_it_used(self):
        self.hub.add("test/tiny-GGUF", {"tiny-Q8_0.gguf": self.tiny, "tiny-F16.gguf": 10 ** 12, "README.md": b"hi"})
        commit = self.hub.repos["test/tiny-GGUF"]["commit"]
        self.cluster(("w1", None))
        t0 = time.monotonic()
        r = self.deploy("tiny", "--hf", "test/tiny-GGUF:Q8_0", "--wait")
        header = sum(int(rng.split("-")[1]) - int(rng[6:].split("-")[0]) + 1 for (_, _, _, _, rng) in self.hub.seen
                      if rng and rng.startswith("bytes=") and rng.split("-")[1])
        print("\ndeploy --hf to running: %.2f s for %d bytes; header inspection read %d bytes by range"
              % (time.monotonic() - t0, len(self.tiny), header))
        self.assertIn("hf test/tiny-GGUF: tiny-Q8_0.gguf", r.stdout)
        self.assertIn("its file with the quant Q8_0", r.stdout)
        m = self.api("GET", "/api/models/tiny")
        self.assertEqual(m["hf"], "test/tiny-GGUF:Q8_0")
        self.assertEqual(m["hub"]["commit"], commit)
        self.assertEqual(m["hub"]["file"], "tiny-Q8_0.gguf")
        self.assertEqual(m["url"], "%s/test/tiny-GGUF/resolve/%s/tiny-Q8_0.gguf" % (self.hub.url, commit))
        self.assertEqual(m["sha256"], hashlib.sha256(self.tiny).hexdigest(), "checked against the hub's LFS sha256")
        self.assertEqual(self.instance("tiny")["state"], "running")
        self.chat_ok("tiny")
        self.assertFalse([s for s in self.hub.seen if s[3]], "no token set, none sent")
        self.assertFalse([s for s in self.hub.seen if "F16" in s[2] and s[0] == "cdn"], "only the chosen file moves")
        # a pinned revision: the commit is the one asked for
        r = self.deploy("pinned", "--hf", "test/tiny-GGUF:Q8_0@" + commit, "--dry-run")
        self.assertIn("commit " + commit[:12], r.stdout)
        # ModelScope: the same repository layout, its own routes
        self.hub.add("test/tiny-ms", {"tiny-Q8_0.gguf": self.tiny})
        r = self.deploy("tinyms", "--ms", "test/tiny-ms", "--wait")
        self.assertIn("ms test/tiny-ms: tiny-Q8_0.gguf", r.stdout)
        self.assertIn("FilePath=tiny-Q8_0.gguf", self.api("GET", "/api/models/tinyms")["url"])
        self.chat_ok("tinyms")

    def test_the_largest_that_fits_is_chosen_and_every_refusal_says_why(self):
        self.hub.add("test/two", {"small-Q2_K.gguf": self.tiny, "big-Q4_K_M.gguf": 10 ** 13,
                                  "mmproj-F16.gguf": 10 ** 6})
        self.hub.add("test/st", {"weights/config.json": b"{}", "model.safetensors": b"x" * 10})
        self.hub.add("test/split", {"m-Q4_K_M-00001-of-00003.gguf": self.tiny, "m-Q4_K_M-00003-of-00003.gguf": self.tiny})
        self.cluster(("w1", None))
        r = self.deploy("auto", "--hf", "test/two", "--dry-run")
        self.assertIn("small-Q2_K.gguf", r.stdout)
        self.assertIn("the largest GGUF file that fits the most free memory of one worker", r.stdout)
        cases = [
            ({"hf": "test/two:IQ2_XS"}, 404, "no file of 'test/two' matches the quant 'IQ2_XS'",
             "small-Q2_K.gguf, big-Q4_K_M.gguf"),
            ({"hf": "test/two", "hf_file": "nope.gguf"}, 404, "'test/two' has no file 'nope.gguf'", "small-Q2_K.gguf"),
            ({"hf": "test/missing"}, 404, "Hugging Face has no repository 'test/missing' at revision 'main'",
             "case-sensitive"),
            ({"hf": "test/two@0123abc"}, 404, "revision '0123abc'", "check the repository's name and revision"),
            ({"hf": "not a repo"}, 400, "'not a repo' is not a Hugging Face repository reference", "OWNER/REPO"),
            ({"hf": "test/two", "path": "/x.gguf"}, 400, "a model has one source", "--hf"),
            ({"hf_file": "a.gguf", "path": "/x.gguf"}, 400, "a hub file needs its repository", "--hf"),
            ({"hf": "test/st"}, 400, "'test/st' holds safetensors but no config.json at its top", "config.json"),
            ({"hf": "test/split:Q4_K_M"}, 404, "'test/split' lacks m-Q4_K_M-00002-of-00003.gguf, a part of the split GGUF",
             "every part of a split GGUF"),
            ({"hf": "test/two", "hub": {}}, 400, "field 'hub' is set by the server", "leave 'hub' out"),
        ]
        for body, code, message, fix in cases:
            status, answer = self.request("POST", "/api/models/plan", dict(body, allow_cpu_offload=True), token=self.token)
            self.assert_error(status, answer, code, message, fix)
        self.assertEqual(self.api("GET", "/api/models")["models"], [], "nothing stored by refusals")

    def test_a_split_gguf_is_downloaded_whole_and_llama_server_loads_it(self):
        subprocess.run([MKMODEL, "--out", os.path.join(self.tmp, "sp-Q8_0"), "--split", "3"], check=True)
        parts = {}
        for k in (1, 2, 3):
            with open(os.path.join(self.tmp, "sp-Q8_0-%05d-of-00003.gguf" % k), "rb") as f:
                parts["Q8_0/sp-Q8_0-%05d-of-00003.gguf" % k] = f.read()
        self.hub.add("test/split-GGUF", dict(parts, **{"tiny-Q2_K.gguf": self.tiny}))
        self.cluster(("w1", None))
        # a later part named stands for its model
        r = self.deploy("sp", "--hf", "test/split-GGUF", "--hf-file", "Q8_0/sp-Q8_0-00002-of-00003.gguf", "--dry-run")
        self.assertIn("Q8_0/sp-Q8_0-00001-of-00003.gguf", r.stdout)
        self.assertIn("the split GGUF the file asked for is part of", r.stdout)
        self.deploy("sp", "--hf", "test/split-GGUF:Q8_0", "--wait")
        m = self.api("GET", "/api/models/sp")
        total = sum(len(b) for b in parts.values())
        self.assertEqual(m["hub"]["file"], "Q8_0/sp-Q8_0-00001-of-00003.gguf")
        self.assertEqual(m["hub"]["parts"], 3)
        self.assertEqual(m["hub"]["size"], total, "the size of every part")
        self.assertEqual(m["hub"]["parts_sha256"], [hashlib.sha256(parts[k]).hexdigest() for k in sorted(parts)])
        self.chat_ok("sp")
        # the estimate covers every part (the worker read each part's header): the same as the one-file model's
        split_plan = self.deploy("sp2", "--hf", "test/split-GGUF:Q8_0", "--dry-run").stdout
        whole_plan = self.deploy("whole", "--hf", "test/split-GGUF:Q2_K", "--dry-run").stdout
        claims = [re.search(r"on CPU: w1:cpu \(([0-9.]+ [KMG]?i?B)\)", p) for p in (split_plan, whole_plan)]
        self.assertTrue(all(claims), (split_plan, whole_plan))
        self.assertEqual(claims[0].group(1), claims[1].group(1), (split_plan, whole_plan))
        # every part downloaded once, kept beside the first under the same cache name
        for k, data in parts.items():
            blob = hashlib.sha256(data).hexdigest()
            gets = [s for s in self.hub.seen if s[0] == "cdn" and s[1] == "GET" and blob in s[2] and not s[4]]
            self.assertEqual(len(gets), 1, "%s: %r" % (k, gets))
        self.wait_for(lambda: len(self.api("GET", "/api/files")["workers"][0]["files"]) == 3, "three parts in the cache")
        files = sorted(self.api("GET", "/api/files")["workers"][0]["files"], key=lambda f: f["file"])
        self.assertEqual([f["file"][17:] for f in files], ["sp-Q8_0-%05d-of-00003.gguf" % k for k in (1, 2, 3)])
        self.assertEqual(len({f["file"][:16] for f in files}), 1, "one name prefix, so llama.cpp finds the parts")
        self.assertTrue(all(f["in_use"] and f["models"] == ["sp"] for f in files), files)
        r = self.cli("files", "rm", files[2]["file"], check=False)
        self.assertEqual(r.returncode, 1, "a part in use is kept")

    def test_a_safetensors_repository_is_downloaded_as_a_directory_for_vllm(self):
        records = os.path.join(self.tmp, "records")
        os.makedirs(records)
        self.env["CORRAL_ENGINE_PATH"] = ":".join([LLAMA_BIN, os.path.join(FAKES, "vllm")])
        self.env["FAKE_RECORD_DIR"] = records
        self.env["FAKE_VLLM_GGUF"] = self.model("st-behind.gguf")  # what the stand-in's llama-server runs
        config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 363,
                  "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}
        files, weight_map, total = {"config.json": json.dumps(config).encode()}, {}, 0
        for k, n in ((1, 30000), (2, 50000)):
            name = "model-%05d-of-00002.safetensors" % k
            header = json.dumps({"w%d" % k: {"dtype": "BF16", "shape": [n // 2], "data_offsets": [0, n]}}).encode()
            files[name] = struct.pack("<Q", len(header)) + header + os.urandom(n)
            weight_map["w%d" % k] = name
            total += n
        files["model.safetensors.index.json"] = json.dumps({"metadata": {"total_size": total},
                                                            "weight_map": weight_map}).encode()
        files["tokenizer.json"] = b'{"version": "1.0"}'
        files["tokenizer_config.json"] = b'{}'
        wanted = sorted(files)
        files["pytorch_model.bin"] = b"the same weights again, for PyTorch" * 1000
        files["README.md"] = b"# a model"
        self.hub.add("test/st-model", files)
        self.cluster(("g1", gpu(24)))
        r = self.cli("deploy", "st", "--hf", "test/st-model", "--ctx", "1024", "--wait", "--timeout", "120")
        self.assertIn("a safetensors repository", r.stdout)
        m = self.api("GET", "/api/models/st")
        self.assertEqual(sorted(f["path"] for f in m["hub"]["files"]), wanted)
        self.assertEqual(m["hub"]["size"], sum(len(files[n]) for n in wanted))
        inst = self.wait_running("st")
        self.assertEqual(inst["placement"]["engine"], "vllm", "safetensors run on vLLM")
        # the worker read config.json and the index (not the weights) for the estimate
        before = len(self.hub.seen)
        out = subprocess.run([CORRAL, "inspect", m["url"], "--json"], check=True, capture_output=True, text=True,
                             env=self.env).stdout
        self.assertEqual(json.loads(out)["shape"]["weight_bytes"], total)
        self.assertEqual(json.loads(out)["shape"]["n_layer"], 2)
        read = [s for s in self.hub.seen[before:] if s[0] == "cdn"]
        self.assertFalse([s for s in read if "safetensors" in s[2] and "index" not in s[2]], "no weights read: %r" % read)
        # vLLM got one directory holding the repository's files, not the .bin or the README
        rec = []
        for name in os.listdir(records):
            with open(os.path.join(records, name)) as f:
                rec.append(json.load(f))
        model_dir = rec[0]["argv"][1]
        self.assertTrue(os.path.isdir(model_dir), rec[0]["argv"])
        self.assertEqual(sorted(os.listdir(model_dir)), wanted)
        for n in wanted:
            with open(os.path.join(model_dir, n), "rb") as f:
                self.assertEqual(f.read(), files[n], n)
        self.assertFalse([s for s in self.hub.seen if s[0] == "cdn" and "pytorch_model" in s[2]], "no .bin moved")
        self.chat_ok("st")
        # the cache lists the directory as one entry, in use by 'st'
        self.wait_for(lambda: self.api("GET", "/api/files")["workers"][0]["files"], "the cache report")
        entries = self.api("GET", "/api/files")["workers"][0]["files"]
        self.assertEqual(len(entries), 1, entries)
        self.assertTrue(entries[0]["file"].endswith("-model"), entries)
        self.assertEqual(entries[0]["size"], sum(len(files[n]) for n in wanted))
        self.assertEqual(entries[0]["models"], ["st"])
        self.cli("rm", "st")
        self.wait_for(lambda: not self.api("GET", "/api/files")["workers"][0]["files"][0]["in_use"], "unused")
        self.assertIn("1 of 1 file(s) removed", self.cli("files", "rm", "--unused").stdout)
        self.assertFalse(os.path.exists(model_dir), "the directory went with it")

    def test_a_worker_fetches_a_file_a_peer_has_instead_of_the_hub(self):
        self.hub.add("test/tiny-GGUF", {"tiny-Q8_0.gguf": self.tiny})
        blob = hashlib.sha256(self.tiny).hexdigest()

        def hub_gets():
            return len([s for s in self.hub.seen if s[0] == "cdn" and s[1] == "GET" and blob in s[2] and not s[4]])

        self.cluster(("w1", None))
        self.deploy("a", "--hf", "test/tiny-GGUF:Q8_0", "--wait")
        self.assertEqual(hub_gets(), 1)
        w2 = self.start_worker("w2", extra=("--port-range", port_range(), "--labels", "box=2"))
        self.wait_state("w2", "ready")
        self.wait_for(lambda: self.workers()["w2"]["watch_connected"], "watch stream of w2")
        self.deploy("b", "--hf", "test/tiny-GGUF:Q8_0", "--selector", "box=2", "--wait")
        self.assertEqual(self.instance("b")["placement"]["workers"][0]["name"], "w2")
        self.chat_ok("b")
        self.assertEqual(hub_gets(), 1, "w2 fetched the file from w1, not from the hub")
        self.assertIn("came from peer w1", w2.output())
        w1_files = [w for w in self.api("GET", "/api/files")["workers"] if w["worker"] == "w1"][0]["files"]
        name = w1_files[0]["file"]
        # the peer route wants the server's ticket for that file
        w1_port = self.workers()["w1"]["port"]
        for auth in (None, "Bearer nope"):
            req = urllib.request.Request("http://127.0.0.1:%d/cache/%s" % (w1_port, name),
                                         headers={"Authorization": auth} if auth else {})
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            self.assertEqual(e.exception.code, 401, auth)
        # with the ticket (a MAC of the source under w1's server key, as the server makes it): ranges
        def mac(key, msg):
            k = hashlib.blake2b(key.encode(), digest_size=32).digest()
            return hashlib.blake2b(msg.encode(), digest_size=32, key=k).hexdigest()

        peer_secret = self.store_rows("SELECT value FROM settings WHERE key = 'peer_secret'")[0][0]
        w1_key = mac(peer_secret, self.workers()["w1"]["id"])
        source = self.api("GET", "/api/models/a")["url"]
        for ticket, rng, want in ((mac(w1_key, "cache:" + source), "bytes=100-199", 206),
                                  (mac(w1_key, "cache:" + source), "bytes=%d-" % (len(self.tiny) + 5), 416),
                                  (mac(w1_key, "cache:http://elsewhere/x.gguf"), "bytes=0-9", 401)):
            req = urllib.request.Request("http://127.0.0.1:%d/cache/%s" % (w1_port, name),
                                         headers={"Authorization": "Bearer " + ticket, "Range": rng})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    status, body, headers = r.status, r.read(), r.headers
            except urllib.error.HTTPError as e:
                status, body, headers = e.code, e.read(), e.headers
            self.assertEqual(status, want, (rng, body[:200]))
            if want == 206:
                self.assertEqual(body, self.tiny[100:200])
                self.assertEqual(headers["Content-Range"], "bytes 100-199/%d" % len(self.tiny))
        # peers that serve other bytes are caught by the checksum: the hub it is
        for w in ("w1", "w2"):
            path = os.path.join(self.tmp, "w-" + w, "models", name)
            with open(path + ".tmp-evil", "wb") as f:
                f.write(b"\0" * len(self.tiny))
            os.rename(path + ".tmp-evil", path)  # the running engines keep the file they opened
        w3 = self.start_worker("w3", extra=("--port-range", port_range(), "--labels", "box=3"))
        self.wait_state("w3", "ready")
        self.wait_for(lambda: self.workers()["w3"]["watch_connected"], "watch stream of w3")
        self.deploy("c", "--hf", "test/tiny-GGUF:Q8_0", "--selector", "box=3", "--wait")
        self.chat_ok("c")
        # a copy on a worker where no instance uses it is only cache: it goes, though 'a' still runs on w1
        self.cli("rm", "b")
        self.wait_for(lambda: not [f for w in self.api("GET", "/api/files")["workers"] if w["worker"] == "w2"
                                   for f in w["files"] if f["in_use"]], "the file unused on w2")
        r = self.cli("files", "rm", name, "--worker", "w2")
        self.wait_for(lambda: not [w for w in self.api("GET", "/api/files")["workers"] if w["worker"] == "w2"][0]["files"],
                      "the copy on w2 removed")
        r = self.cli("files", "rm", name, "--worker", "w1", check=False)
        self.assertEqual(r.returncode, 1, "the copy 'a' runs from is kept")
        self.assertIn("which runs there", r.stderr)
        self.assertEqual(hub_gets(), 2, "from the hub after the peers' bytes failed the SHA-256")
        self.assertEqual(w3.output().count(" failed ("), 2, w3.output())
        self.assertIn("SHA-256", w3.output())
        self.assertIn("came from the source", w3.output())

    def test_a_gated_repository_needs_the_token_which_never_leaves_the_hub(self):
        self.hub.add("test/gated", {"tiny-Q8_0.gguf": self.tiny}, gated=True)
        self.hub.cut_after = 1000  # and the download is cut once mid-way: it resumes
        self.cluster(("w1", None))
        status, answer = self.request("POST", "/api/models/plan", {"hf": "test/gated"}, token=self.token)
        self.assert_error(status, answer, 403, "'test/gated' is gated or private", "set HF_TOKEN on the server and the workers")
        # the same cluster with the token on the server and the worker
        for p in self.procs:
            p.stop()
        before = len(self.hub.seen)
        self.env["HF_TOKEN"] = hub_server.TOKEN
        self.start_server(extra=("--gpu-reserve", "0"), data_dir=self.data_dir, port=self.port)
        self.login()
        self.env["CORRAL_API_TOKEN"] = self.token
        self.worker("w1")
        self.wait_state("w1", "ready")
        r = self.deploy("gated", "--hf", "test/gated", "--wait")  # the cut transfer resumes 10 s later
        self.assertIn("tiny-Q8_0.gguf", r.stdout)
        self.assertIn("stopped after 1000 bytes", r.stdout)
        self.assertIn("(the download resumes by itself)", r.stdout)
        self.assertIn("every replica runs (1/1)", r.stdout)
        self.chat_ok("gated")
        hub_calls = [s for s in self.hub.seen[before:] if s[0] == "hub" and "gated" in s[2]]
        cdn_calls = [s for s in self.hub.seen[before:] if s[0] == "cdn"]
        self.assertTrue(hub_calls and cdn_calls)
        self.assertTrue(all(s[3] == "Bearer " + hub_server.TOKEN for s in hub_calls), "the hub got the token, always")
        self.assertEqual([s for s in cdn_calls if s[3]], [], "the token did not follow the redirect to the CDN")
        ranged = [s for s in cdn_calls if s[1] == "GET"]
        self.assertGreater(len(ranged), 1, "the cut download was resumed")
        events = [e["message"] for e in self.api("GET", "/api/events?limit=500")["events"] if e["kind"].startswith("download.")]
        self.assertTrue(any("failed" in e for e in events) and any("done" in e for e in events), events)

    def test_one_download_per_file_a_cache_to_list_and_trim(self):
        other = self.tiny + b"\0" * 4096  # another file: same model, a few bytes more
        self.hub.add("test/tiny-GGUF", {"tiny-Q8_0.gguf": self.tiny, "tiny-Q4_0.gguf": other})
        self.cluster(("w1", None))
        self.cli("workers", "rm", "w1", "--force")
        for p in self.procs:
            if p.name == "worker-w1":
                p.stop()
        w = self.start_worker("w1", extra=("--port-range", self.ranges["w1"], "--cache-max", "600K"),
                              data_dir=os.path.join(self.tmp, "w-w1b"))
        self.wait_state("w1", "ready")
        # two models on the same file: downloaded once, listed once with both
        for name in ("a", "b"):
            self.deploy(name, "--hf", "test/tiny-GGUF:Q8_0")
        self.wait_running("a", timeout=60)
        self.wait_running("b", timeout=60)
        blob = hashlib.sha256(self.tiny).hexdigest()
        full_gets = [s for s in self.hub.seen if s[0] == "cdn" and s[1] == "GET" and blob in s[2] and not s[4]]
        self.assertEqual(len(full_gets), 1, "one download for both models (and header reads by range): %r" % full_gets)
        self.wait_for(lambda: self.api("GET", "/api/files")["workers"][0]["files"], "the cache report")
        files = self.api("GET", "/api/files")["workers"][0]["files"]
        self.assertEqual(len(files), 1, files)
        self.assertEqual(sorted(files[0]["models"]), ["a", "b"])
        self.assertEqual(files[0]["size"], len(self.tiny))
        self.assertTrue(files[0]["in_use"])
        out = self.cli("files").stdout
        self.assertTrue("a,b" in out or "b,a" in out, out)
        self.assertIn(files[0]["file"], out)
        r = self.cli("files", "rm", files[0]["file"], check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is the file of model", r.stderr)
        self.assertIn("delete the model first", r.stderr)
        # unused: removed on request
        self.cli("rm", "a")
        self.cli("rm", "b")
        self.wait_for(lambda: not self.api("GET", "/api/files")["workers"][0]["files"][0]["in_use"], "the file unused")
        r = self.cli("files", "rm", "--unused")
        self.assertIn("1 of 1 file(s) removed", r.stdout)
        self.assertEqual(self.api("GET", "/api/files")["workers"][0]["files"], [])
        # --cache-max 600K: the first file goes when a second one would pass it, least recently used first
        self.deploy("a", "--hf", "test/tiny-GGUF:Q8_0")
        self.wait_running("a", timeout=60)
        self.cli("rm", "a")
        self.deploy("c", "--hf", "test/tiny-GGUF:Q4_0")
        self.wait_running("c", timeout=60)
        self.wait_for(lambda: [f["source"].rsplit("/", 1)[-1] for f in self.api("GET", "/api/files")["workers"][0]["files"]]
                      == ["tiny-Q4_0.gguf"], "the least recently used file evicted")
        self.assertIn("evicted the least recently used", w.output())
        self.assertEqual(self.cli("files", "rm", "--unused", check=False).returncode, 0)

    def test_an_unreachable_hub_says_to_set_a_mirror(self):
        self.env["HF_ENDPOINT"] = "http://127.0.0.1:9"
        self.start_server()
        self.login()
        status, answer = self.request("POST", "/api/models/plan", {"hf": "test/tiny-GGUF"}, token=self.token)
        self.assert_error(status, answer, 502, "cannot reach Hugging Face at http://127.0.0.1:9", "set HF_ENDPOINT")


if __name__ == "__main__":
    unittest.main()
