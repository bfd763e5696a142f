"""Tier 40: models through the API against real workers (fake NVML GPUs, the
real llama-server installed as their engine): placement, dry runs that match
the real placement, explanations, validation, url downloads with checksums,
replicas, rescheduling and deletion."""
import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
import unittest

from harness import BUILD, ClusterCase

MKMODEL = os.path.join(BUILD, "tools", "mkmodel")
LLAMA_BIN = os.environ.get("CORRAL_LLAMA_BIN", "")
GIB = 1 << 30


def gpus(name, *sizes_gib, used=0):
    return {"driver_version": "550.54.15", "cuda_driver_version": 12040, "devices": [
        {"name": name, "uuid": "GPU-%s-%d" % (name.replace(" ", ""), i), "memory_total": int(s * GIB),
         "memory_used": used, "cc": [9, 0]} for i, s in enumerate(sizes_gib)]}


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support, as model hosts serve them; keeps
    the Range headers it was asked for."""
    ranges = []
    rate = None  # bytes per second for whole-file answers (a slow host); None: as fast as it goes

    def log_message(self, *args):
        pass

    def send_body(self, data, head=False):
        if not self.rate or head:  # header reads (a range from byte 0) stay fast
            self.wfile.write(data)
            return
        step = max(1, self.rate // 10)
        for k in range(0, len(data), step):
            self.wfile.write(data[k:k + step])
            self.wfile.flush()
            time.sleep(0.1)

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        rng = self.headers.get("Range")
        RangeHandler.ranges.append(rng)
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            a = int(a)
            b = int(b) if b else len(data) - 1
            if a >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(data))
                self.end_headers()
                return
            b = min(b, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (a, b, len(data)))
            self.send_header("Content-Length", str(b - a + 1))
            self.end_headers()
            self.send_body(data[a:b + 1], head=a == 0)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.send_body(data)


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK),
                     "llama-server not built (scripts/llama-build.sh)")
class Models(ClusterCase):
    def setUp(self):
        super().setUp()
        self.env["CORRAL_ENGINE_PATH"] = LLAMA_BIN

    def model(self, name="m.gguf", *args):
        path = os.path.join(self.tmp, name)
        subprocess.run([MKMODEL, "--out", path] + list(args), check=True)
        return path

    def cluster(self, *workers, extra=()):
        self.start_server(extra=("--gpu-reserve", "0") + tuple(extra))
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        for name, cfg in workers:
            self.start_worker(name, nvml_config=cfg)
        for name, _ in workers:
            self.wait_state(name, "ready")
            self.wait_for(lambda: self.workers()[name]["watch_connected"], "watch stream of " + name)

    def deploy(self, body, expect=201):
        return self.api("POST", "/api/models", body, expect=expect)

    def wait_placed(self, name, n, timeout=20):
        return self.wait_for(lambda: len(self.instances(name)) == n and self.instances(name),
                             "%d instances of %s" % (n, name), timeout)

    def instances(self, model=None):
        return self.api("GET", "/api/instances" + ("?model=" + model if model else ""))["instances"]

    def where(self, placement):
        return sorted("%s:%d" % (w["name"], g["index"]) for w in placement["workers"] for g in w["gpus"])

    def plan(self, body):
        """A dry run, asked again while workers are still inspecting the file."""
        return self.wait_for(lambda: (lambda p: not p["waiting_for"] and p)(
            self.api("POST", "/api/models/plan", body)), "a dry run with every worker's file report")

    def test_deploy_matches_dry_run_and_rm_frees_memory(self):
        self.cluster(("g1", gpus("NVIDIA H100 80GB HBM3", 80, 80)), ("g2", gpus("NVIDIA L4", 1)))
        path = self.model()
        body = {"name": "tiny", "path": path, "ctx": 4096, "parallel": 2, "replicas": 2}
        plan = self.plan(body)
        self.assertTrue(plan["placed"], plan)
        self.assertEqual(len(plan["instances"]), 2)
        self.assertEqual(self.api("GET", "/api/models")["models"], [], "a dry run stores nothing")
        self.deploy(body)
        insts = self.wait_placed("tiny", 2)
        self.assertEqual(sorted(tuple(self.where(i["placement"])) for i in insts),
                         sorted(tuple(self.where(p)) for p in plan["instances"]), "dry run == real placement")
        self.assertEqual({w["name"] for i in insts for w in i["placement"]["workers"]}, {"g1", "g2"},
                         "spread: one replica per worker")
        for i in insts:  # the workers start the engines at once (tier 50 tests that part)
            self.assertIn(i["state"], ("scheduled", "starting", "running"))
            claim = i["placement"]["workers"][0]["gpus"][0]["claim"]
            self.assertGreater(claim, 320 << 20, "weights + KV + compute + GPU runtime")
            self.assertLess(claim, 400 << 20)
        m = self.api("GET", "/api/models/tiny")
        self.assertEqual((m["replicas_status"]["desired"], m["replicas_status"]["total"]), (2, 2))
        self.assertEqual(m["engine_resolved"], "llama.cpp")
        self.assertEqual(m["format"], "gguf")
        out = self.cli("models").stdout
        self.assertIn("tiny", out)
        self.assertRegex(out, r"[0-2]/2 \(2 placed\)")
        out = self.cli("instances").stdout
        self.assertIn("g1:", out)
        self.assertRegex(out, "scheduled|starting|running")
        # the claims are visible to the scheduler: a model that needs most of g2's 1 GiB overcommits it now
        big = {"name": "big", "path": path, "ctx": 450000, "gpus": ["g2:0"]}
        p = self.plan(big)
        self.assertIn("warning", p["instances"][0], p)
        self.deploy(big)
        over = self.wait_placed("big", 1)[0]
        self.assertTrue(over["placement"]["warning"].startswith("overcommit: g2:0 needs"), over["placement"])
        # several names at once; one that does not exist is reported, the others go
        r = self.cli("rm", "big", "nope", "tiny", check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("removed model 'big'", r.stdout)
        self.assertIn("removed model 'tiny'", r.stdout)
        self.assertIn("no model 'nope'", r.stderr)
        self.assertEqual(self.instances(), [])
        p2 = self.plan(big)
        self.assertNotIn("warning", p2["instances"][0], "rm released the L4's claim: %s" % p2)

    def test_refusal_explains_each_worker_then_distributed_fits(self):
        self.cluster(("g1", gpus("NVIDIA L4", 1)), ("g2", gpus("NVIDIA L4", 1)), ("c1", None))
        path = self.model("gqa.gguf", "--layers", "8", "--embd", "512", "--heads", "8", "--kv-heads", "8",
                          "--ff", "1024")
        body = {"name": "wide", "path": path, "ctx": 65536}
        r = self.cli("deploy", "wide", "--path", path, "--ctx", "65536", "--dry-run", check=False)
        self.assertEqual(r.returncode, 3, "nothing could be placed: " + r.stdout + r.stderr)
        self.assertIn("warning: --ctx 65536 exceeds the model's trained context of 2048 tokens", r.stdout)
        self.assertRegex(r.stdout, r"0/3 workers fit 'wide' \(needs [0-9.]+ GiB VRAM at ctx 65536\): "
                                   r"2 insufficient VRAM \(largest free 1\.0 GiB on g1:0\), "
                                   r"1 have no GPU \(CPU offload not allowed\)")
        self.assertIn("c1", r.stdout)
        self.assertIn("fix: deploy with --allow-cpu-offload", r.stdout, "every refusal carries its fix")
        self.assertIn("fix: use a smaller --ctx or --parallel", r.stdout)
        plan = self.plan(body)
        self.assertTrue(all(x["fix"] for x in plan["reasons"]), plan["reasons"])
        plan = self.plan(dict(body, allow_distributed=True))
        self.assertTrue(plan["placed"], plan)
        inst = plan["instances"][0]
        self.assertEqual(inst["kind"], "distributed")
        self.assertEqual(self.where(inst), ["g1:0", "g2:0"])
        self.assertEqual(len(inst["tensor_split"]), 2)
        self.assertEqual(sum(1 for w in inst["workers"] if w["leader"]), 1)
        plan = self.plan(dict(body, allow_cpu_offload=True, ctx=32768))
        self.assertTrue(plan["placed"], plan)
        deployed = self.deploy(dict(body, allow_distributed=True))
        self.assertEqual(deployed["name"], "wide")
        insts = self.wait_placed("wide", 1)
        self.assertEqual(self.where(insts[0]["placement"]), ["g1:0", "g2:0"])

    def test_files_missing_or_invalid_are_explained(self):
        self.cluster(("g1", gpus("NVIDIA L4", 24)))
        self.deploy({"name": "ghost", "path": os.path.join(self.tmp, "absent.gguf")})
        m = self.wait_for(lambda: (lambda m: m["status"] and "waiting" not in m["status"] and m)(
            self.api("GET", "/api/models/ghost")), "a status for the missing file")
        self.assertIn("no worker can read", m["status"])
        self.assertIn("1 do not have it", m["status"])
        bad = os.path.join(self.tmp, "bad.gguf")
        with open(bad, "wb") as f:
            f.write(b"GGUF" + (3).to_bytes(4, "little") + (1 << 60).to_bytes(8, "little") + bytes(8))
        self.deploy({"name": "broken", "path": bad})
        m = self.wait_for(lambda: (lambda m: m["status"] and "waiting" not in m["status"] and m)(
            self.api("GET", "/api/models/broken")), "a status for the broken file")
        self.assertIn("1 cannot parse it (tensor count 1152921504606846976 is impossible", m["status"])
        self.assertEqual(self.instances(), [])

    def test_validation_names_the_field(self):
        self.cluster(("g1", gpus("NVIDIA L4", 24)))
        path = self.model()
        cases = [
            ({"path": path}, "field 'name'"),
            ({"name": "x"}, "field 'path', 'url', 'hf' or 'ms' is required"),
            ({"name": "x", "path": path, "url": "http://h/m.gguf"}, "not both"),
            ({"name": "x", "path": "relative.gguf"}, "not absolute"),
            ({"name": "x", "url": "ftp://h/m.gguf"}, "not an HTTP(S) URL"),
            ({"name": "x", "url": "http://h/m", "sha256": "abc"}, "not a SHA-256"),
            ({"name": "x y", "path": path}, "model name 'x y' is not valid"),
            ({"name": "x", "path": path, "replicas": 100}, "replicas"),
            ({"name": "x", "path": path, "policy": "random"}, "policy 'random'"),
            ({"name": "x", "path": path, "gpus": ["g1"]}, "not WORKER:INDEX"),
            ({"name": "x", "path": path, "selector": "novalue"}, "novalue"),
            ({"name": "x", "path": path, "engine_args": ["-ctk", "q9"]}, "unknown cache type 'q9'"),
            ({"name": "x", "path": path, "replicaz": 2}, "unknown field 'replicaz'"),
        ]
        for body, needle in cases:
            with self.subTest(body=body):
                status, ans = self.request("POST", "/api/models", body, token=self.token)
                self.assert_error(status, ans, 400, needle)
        status, ans = self.request("POST", "/api/models", raw=b"{not json", token=self.token)
        self.assert_error(status, ans, 400)
        self.deploy({"name": "x", "path": path})
        status, ans = self.request("POST", "/api/models", {"name": "x", "path": path}, token=self.token)
        self.assert_error(status, ans, 409, "already exists")
        status, ans = self.request("PATCH", "/api/models/x", {"name": "y"}, token=self.token)
        self.assert_error(status, ans, 400, "cannot change")
        for field in ("replicas", "ctx", "engine", "engine_args", "path", "allow_cpu_offload"):
            with self.subTest(null=field):  # {"replicas": null} once deleted every replica
                status, ans = self.request("PATCH", "/api/models/x", {field: None}, token=self.token)
                self.assert_error(status, ans, 400, "field '%s' cannot be null" % field, "leave the field out")
        status, ans = self.request("POST", "/api/models", {"name": "z", "path": path, "replicas": None},
                                   token=self.token)
        self.assert_error(status, ans, 400, "field 'replicas' cannot be null")
        self.assertEqual(self.api("GET", "/api/models/x")["replicas"], 1, "the refused PATCH changed nothing")
        self.assertEqual(len(self.api("GET", "/api/models")["models"]), 1, "refusals stored nothing")
        status, ans = self.request("DELETE", "/api/models/nope", token=self.token)
        self.assert_error(status, ans, 404, "no model 'nope'")

    def test_replicas_scale_and_reschedule_after_grace(self):
        self.cluster(("g1", gpus("NVIDIA L4", 24)), ("g2", gpus("NVIDIA L4", 24)),
                     extra=("--reschedule-grace", "2"))
        path = self.model()
        self.deploy({"name": "r", "path": path, "replicas": 1})
        first = self.wait_placed("r", 1)[0]
        out = self.cli("scale", "r", "2").stdout
        self.assertIn("model 'r' keeps 2 replica(s)", out)
        self.assertEqual(len(self.wait_placed("r", 2)), 2)
        self.assertEqual(self.cli("scale", "r", "x", check=False).returncode, 2)
        self.assertEqual(self.cli("scale", "nope", "1", check=False).returncode, 1)
        self.api("PATCH", "/api/models/r", {"replicas": 1})
        self.wait_placed("r", 1)
        left = self.instances("r")[0]
        on = left["placement"]["workers"][0]["name"]
        other = "g2" if on == "g1" else "g1"
        [p for p in self.procs if p.name == "worker-" + on][0].kill()
        self.wait_for(lambda: self.instances("r") and self.instances("r")[0]["state"] == "unreachable" or
                      (self.instances("r") and self.instances("r")[0]["placement"]["workers"][0]["name"] == other),
                      "the instance to notice its worker is gone", timeout=30)
        moved = self.wait_for(lambda: (lambda i: i and i[0]["placement"]["workers"][0]["name"] == other and i)(
            self.instances("r")), "the replica to move to " + other, timeout=40)
        self.assertNotEqual(moved[0]["id"], first["id"] if first["placement"]["workers"][0]["name"] == on else "")

    def test_models_survive_a_server_restart(self):
        self.cluster(("g1", gpus("NVIDIA L4", 24)))
        path = self.model()
        self.deploy({"name": "keep", "path": path, "replicas": 1})
        before = self.wait_placed("keep", 1)
        server = [p for p in self.procs if p.name == "server"][0]
        server.stop()
        self.start_server(name="server2", port=self.port, data_dir=self.data_dir, extra=("--gpu-reserve", "0"))
        self.login()
        after = self.instances("keep")
        self.assertEqual([i["id"] for i in after], [i["id"] for i in before])
        self.assertEqual(after[0]["placement"], before[0]["placement"])

    def test_url_source_is_downloaded_with_checksum(self):
        self.cluster(("g1", gpus("NVIDIA L4", 24)))
        root = os.path.join(self.tmp, "www")
        os.makedirs(root)
        src = self.model("www/served.gguf")
        with open(src, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        handler = lambda *a, **k: RangeHandler(*a, directory=root, **k)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.shutdown)
        url = "http://127.0.0.1:%d/served.gguf" % httpd.server_address[1]
        # a URL that answers 404 says so, not just "do not have it"
        r = self.cli("deploy", "gone", "--url", url.replace("served", "nothere"), "--timeout", "10", check=False)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("nothere.gguf: HTTP 404)", r.stdout)
        self.deploy({"name": "dl", "url": url, "sha256": digest})
        inst = self.wait_for(lambda: (lambda i: i and i[0].get("download", {}).get("state") == "done" and i[0])(
            self.instances("dl")), "the download to finish", timeout=30)
        self.assertEqual(inst["download"]["bytes"], os.path.getsize(src))
        with open(inst["download"]["path"], "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)
        self.assertIn("download done", self.cli("instances").stdout)
        os.link(src, os.path.join(root, "served2.gguf"))
        self.deploy({"name": "dl-bad", "url": url.replace("served", "served2"), "sha256": "0" * 64}, expect=201)
        inst = self.wait_for(lambda: (lambda i: i and i[0].get("download", {}).get("state") == "error" and i[0])(
            self.instances("dl-bad")), "the checksum to fail", timeout=30)
        self.assertIn("SHA-256 is %s, expected %s" % (digest, "0" * 64), inst["download"]["message"])
        line = [l for l in self.cli("instances", "--model", "dl-bad").stdout.splitlines() if "dl-bad" in l][0]
        self.assertIn("download failed: ", line, "the cause, not '100.0% of N bytes'")
        self.assertIn("SHA-256 is", line)
        # the instance and its model say so too, instead of waiting for ever
        self.wait_for(lambda: self.instances("dl-bad")[0]["state"] == "error", "the instance in error",
                      show=lambda: self.instances("dl-bad"))
        self.assertIn("download failed on g1: ", self.instances("dl-bad")[0]["message"])
        # a failed download is tried again after a wait, not at once again and again
        self.assertIn("; next try in 10 s", self.instances("dl-bad")[0]["message"])
        w = [p for p in self.procs if p.name == "worker-g1"][0]
        self.assertEqual(w.output().count("download of %s failed" % url.replace("served", "served2")), 1,
                         w.output())
        status = [l for l in self.cli("models").stdout.splitlines() if l.startswith("dl-bad ")][0]
        self.assertIn("error: download failed on g1", status)

    def on_a_terminal(self, *args):
        """Runs corral with a pseudo-terminal as its stdin, stdout and stderr: (exit status, what it wrote)."""
        import pty
        master, slave = pty.openpty()
        p = subprocess.Popen([BUILD + "/corral"] + list(args), stdin=slave, stdout=slave, stderr=slave, env=self.env)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed: the command ended
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        return p.wait(timeout=30), out

    def test_download_progress_is_a_bar_on_a_terminal_and_lines_otherwise(self):
        self.cluster(("g1", gpus("NVIDIA L4", 24)))
        root = os.path.join(self.tmp, "www")
        os.makedirs(root)
        self.model("www/slow.gguf")
        os.link(os.path.join(root, "slow.gguf"), os.path.join(root, "slow2.gguf"))
        handler = lambda *a, **k: RangeHandler(*a, directory=root, **k)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.shutdown)
        self.addCleanup(setattr, RangeHandler, "rate", None)
        RangeHandler.rate = 100 * 1024  # about 5 s for the tiny model
        base = "http://127.0.0.1:%d/" % httpd.server_address[1]
        # on a terminal: one line, redrawn in place, with a bar, the rate and the time left
        rc, out = self.on_a_terminal("deploy", "slow", "--url", base + "slow.gguf", "--wait", "--timeout", "60")
        self.assertEqual(rc, 0, out)
        text = out.decode()
        draws = text.split("\r\x1b[K")[1:]
        self.assertGreaterEqual(len(draws), 3, "the bar is redrawn as bytes come: %r" % text)
        bars = [d for d in draws if d.startswith("downloading slow-")]
        self.assertEqual(len(bars), len(draws), text)
        self.assertTrue(all("\n" not in d for d in draws[:-1]), "redrawn in place, not a line each: %r" % text)
        self.assertRegex(text, r"\[#*\.+\] \d+\.\d% of \d+(\.\d)? KiB at \d+(\.\d)? KiB/s, \d+ s left")
        percents = [float(d.split("] ")[1].split("%")[0]) for d in bars]
        self.assertEqual(percents, sorted(percents), "progress only moves forward")
        self.assertIn("every replica runs (1/1)", text)
        # through a pipe: plain lines, no cursor movement
        r = self.cli("deploy", "slow2", "--url", base + "slow2.gguf", "--wait", "--timeout", "60")
        lines = [l for l in r.stdout.splitlines() if l.startswith("downloading slow2-")]
        self.assertGreaterEqual(len(lines), 2, r.stdout)
        self.assertNotIn("\r", r.stdout)
        self.assertNotIn("\x1b", r.stdout)
        self.assertRegex(lines[-1], r"downloading slow2-\w+: \d+\.\d% of \d+(\.\d)? KiB at ")
        # --json through a terminal is JSON all the same
        rc, out = self.on_a_terminal("instances", "--json")
        self.assertEqual(rc, 0)
        got = json.loads(out.decode())
        self.assertEqual(sorted(i["model"] for i in got), ["slow", "slow2"])
        self.assertEqual({i["download"]["state"] for i in got}, {"done"})

    def test_interrupted_download_resumes_where_it_stopped(self):
        self.cluster(("g1", gpus("NVIDIA L4", 24)))
        root = os.path.join(self.tmp, "www")
        os.makedirs(root)
        src = self.model("www/big.gguf", "--layers", "4", "--embd", "256", "--ff", "512", "--heads", "4")
        with open(src, "rb") as f:
            data = f.read()
        handler = lambda *a, **k: RangeHandler(*a, directory=root, **k)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.shutdown)
        url = "http://127.0.0.1:%d/big.gguf" % httpd.server_address[1]
        # what an earlier, interrupted download left in the worker's cache
        cache = os.path.join(self.tmp, "w-g1", "models")
        os.makedirs(cache, exist_ok=True)
        dest = os.path.join(cache, "%s-big.gguf" % hashlib.blake2b(url.encode(), digest_size=32).hexdigest()[:16])
        half = len(data) // 2
        with open(dest + ".part", "wb") as f:
            f.write(data[:half])
        RangeHandler.ranges = []
        self.deploy({"name": "resumed", "url": url, "sha256": hashlib.sha256(data).hexdigest()})
        inst = self.wait_for(lambda: (lambda i: i and i[0].get("download", {}).get("state") == "done" and i[0])(
            self.instances("resumed")), "the download to finish", timeout=30)
        self.assertEqual(inst["download"]["path"], dest)
        self.assertIn("bytes=%d-" % half, RangeHandler.ranges, "the download asked only for the missing half")
        with open(dest, "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertFalse(os.path.exists(dest + ".part"))
