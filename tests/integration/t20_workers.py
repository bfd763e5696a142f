"""Tier 20: workers joining a --disable-worker server — detection of mixed
hardware, liveness (not_ready, unreachable, back to ready), identity across
restarts, name conflicts, NVML failures, the watch stream, removal."""
import json
import os
import signal
import time
import urllib.request

from harness import FAKE_NVML_NOUUID, H100, L4, ClusterCase, amd_sysfs


class MixedCluster(ClusterCase):
    def test_cpu_nvidia_and_amd_workers_report_correctly(self):
        self.start_server()
        self.login()
        self.start_worker("cpu-1")
        self.start_worker("gpu-a", nvml_config=H100, extra=["--labels", "gpu=h100,zone=eu"])
        sysfs = amd_sysfs(os.path.join(self.tmp, "sysfs"))
        self.start_worker("gpu-b", nvml_config=L4, sysfs_root=sysfs)
        for name in ("cpu-1", "gpu-a", "gpu-b"):
            self.wait_state(name, "ready")
        ws = self.workers()
        self.assertEqual(len(ws), 3)

        cpu = ws["cpu-1"]
        self.assertEqual(cpu["gpus"], [])
        self.assertTrue(any("no NVIDIA GPUs: dlopen" in n for n in cpu["notes"]), cpu["notes"])
        for key in ("cpu", "memory", "disk", "os", "shm_bytes", "ephemeral_ports", "uptime_s", "swap"):
            self.assertIn(key, cpu["system"])
        self.assertEqual(cpu["address"], "127.0.0.1")
        self.assertIsNotNone(cpu["last_seen"])

        a = ws["gpu-a"]
        self.assertEqual(a["labels"], {"gpu": "h100", "zone": "eu"})
        self.assertEqual([g["uuid"] for g in a["gpus"]], ["GPU-h100-0", "GPU-h100-1"])
        g0 = a["gpus"][0]
        self.assertEqual((g0["index"], g0["vendor"], g0["name"]), (0, "nvidia", "NVIDIA H100 80GB HBM3"))
        self.assertEqual(g0["memory_total"], 85899345920)
        self.assertEqual(g0["memory_used"], 1073741824)
        self.assertEqual(g0["compute_capability"], "9.0")
        self.assertEqual(g0["processes"], [{"pid": 777, "memory": 1073741824}])
        self.assertEqual(a["drivers"]["nvidia"]["driver_version"], "550.54.15")
        self.assertEqual(a["drivers"]["nvidia"]["cuda_driver_version"], "12.4")

        b = ws["gpu-b"]
        self.assertEqual([(g["index"], g["vendor"], g["name"]) for g in b["gpus"]],
                         [(0, "nvidia", "NVIDIA L4"), (1, "amd", "AMD Instinct MI210")])
        amd = b["gpus"][1]
        self.assertEqual((amd["memory_total"], amd["memory_used"], amd["temperature"], amd["utilization"]),
                         (68702699520, 2097152, 51, 12))
        self.assertEqual(b["drivers"]["nvidia"]["driver_version"], "535.104.05")

        # one worker by id or by name
        self.assertEqual(self.api("GET", "/api/workers/" + a["id"])["name"], "gpu-a")
        self.assertEqual(self.api("GET", "/api/workers/gpu-a")["id"], a["id"])

        # the CLI shows the same
        self.cli("login", "--server-url", self.url, "--password-stdin", stdin=self.admin_password() + "\n")
        out = self.cli("workers").stdout
        for needle in ("cpu-1", "gpu-a", "gpu-b", "ready", "2x NVIDIA H100 80GB HBM3 1.0 GiB/160.0 GiB",
                       "AMD Instinct MI210", "LABELS", "gpu=h100,zone=eu"):
            self.assertIn(needle, out)
        lines = out.splitlines()
        names = [l.split()[0] for l in lines[1:4]]
        self.assertEqual(names, ["cpu-1", "gpu-a", "gpu-b"], "rows by name, whatever the map's order")
        # GPUs of different models wrap: one line each, in the GPUS column, the other cells blank below
        self.assertIn("NVIDIA L4 ", lines[3])
        self.assertNotIn("MI210", lines[3])
        col = lines[0].index("GPUS")
        self.assertEqual(lines[4][:col].strip(), "", "a continuation line: " + lines[4])
        self.assertTrue(lines[4][col:].startswith("AMD Instinct MI210 "), out)
        self.assertEqual(lines[3][col:].split("  ")[0].split(" ")[0:2], ["NVIDIA", "L4"])
        self.assertEqual([w["name"] for w in self.api("GET", "/api/workers")["workers"]], ["cpu-1", "gpu-a", "gpu-b"])
        out = self.cli("gpus").stdout
        self.assertEqual(sum(1 for line in out.splitlines()[1:] if line.strip()), 4, out)
        gpus = json.loads(self.cli("gpus", "--json").stdout)
        self.assertEqual(sorted(g["worker"] for g in gpus), ["gpu-a", "gpu-a", "gpu-b", "gpu-b"])


class Liveness(ClusterCase):
    def test_killed_worker_goes_not_ready_and_comes_back_as_itself(self):
        self.start_server()
        self.login()
        w = self.start_worker("w1")
        first = self.wait_state("w1", "ready")
        w.signal(signal.SIGKILL)
        down = self.wait_state("w1", "not_ready")
        self.assertIn("no status report for", down["state_message"])
        self.assertIn("expected every 1 s", down["state_message"])
        self.start_worker("w1", data_dir=os.path.join(self.tmp, "w-w1"))
        back = self.wait_state("w1", "ready")
        self.assertEqual(back["id"], first["id"])
        self.assertEqual(back["state_message"], "")
        self.assertEqual(len(self.workers()), 1)
        with open(os.path.join(self.tmp, "w-w1", "worker.json")) as f:
            ident = json.load(f)
        self.assertEqual(ident["id"], first["id"])
        self.assertEqual(os.stat(os.path.join(self.tmp, "w-w1", "worker.json")).st_mode & 0o777, 0o600)

    def test_status_without_reachability_is_unreachable(self):
        self.start_server()
        self.login()
        # listens on 127.0.0.2 but tells the server to use 127.0.0.1
        self.start_worker("hidden", extra=["--listen-host", "127.0.0.2", "--advertise-address", "127.0.0.1"])
        w = self.wait_state("hidden", "unreachable")
        self.assertIn("status reports arrive, but the server cannot reach the worker", w["state_message"])
        self.assertIn("/healthz", w["state_message"])
        self.assertIn("--advertise-address", w["state_message"])

    def test_a_worker_that_moves_while_a_probe_is_in_flight_is_probed_again(self):
        """The probe of the old address hangs (a listener that never answers);
        the worker comes back at a new address meanwhile: the probe in flight
        is dropped, and the new address is probed (it used to stay
        'unreachable' forever)."""
        import socket
        from harness import free_port
        self.start_server(extra=["--probe-interval", "1"])
        self.login()
        port = free_port()
        hang = socket.socket()
        hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hang.bind(("127.0.0.3", port))
        hang.listen(64)  # accepts (the kernel does), never answers
        try:
            w = self.start_worker("mover", port=port, extra=["--advertise-address", "127.0.0.3"])
            self.wait_state("mover", "unreachable", timeout=30)
            w.stop()
            self.start_worker("mover", port=port, extra=["--advertise-address", "127.0.0.1"])
            back = self.wait_state("mover", "ready", timeout=30)
            self.assertEqual(back["address"], "127.0.0.1")
        finally:
            hang.close()

    def test_a_server_answering_5xx_costs_the_worker_nothing(self):
        """A control plane in trouble answers 503 to every status report: the
        worker logs it once and keeps trying, and keeps no answer's body (under
        LeakSanitizer the worker's exit would report each one)."""
        import http.server
        import threading
        seen = {"status": 0}

        class Troubled(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/api/workers/register":
                    self.reply(201, {"id": "w-troubled", "name": "troubled", "secret": "crw_x"})
                else:
                    seen["status"] += 1
                    self.reply(503, {"error": {"code": "unavailable", "message": "the store is read-only " + "x" * 4000,
                                               "fix": "wait"}})

            def do_GET(self):  # the watch stream and peers: also in trouble
                self.reply(503, {"error": {"code": "unavailable", "message": "busy", "fix": "wait"}})

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Troubled)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            self.url = "http://127.0.0.1:%d" % srv.server_address[1]
            w = self.start_worker("troubled", token="crt_any")
            self.wait_for(lambda: seen["status"] >= 5, "five refused status reports", timeout=30)
            self.assertTrue(w.alive())
            self.assertEqual(w.output().count("status report failed"), 1, w.output())
            w.stop()
            self.assertEqual(w.popen.returncode, 0, w.output()[-2000:])
        finally:
            srv.shutdown()
            srv.server_close()

    def test_a_token_file_keeps_the_token_out_of_ps(self):
        self.start_server()
        self.login()
        path = os.path.join(self.tmp, "join-token")
        with open(path, "w") as f:
            f.write(self.cluster_token() + "\n")
        os.chmod(path, 0o600)
        args = ["worker", "--server-url", self.url, "--token-file", path, "--name", "quiet", "--data-dir",
                os.path.join(self.tmp, "w-quiet"), "--listen-host", "127.0.0.1", "--status-interval", "1"]
        from harness import free_port
        w = self.spawn("worker-quiet", args + ["--worker-port", str(free_port())])
        self.wait_state("quiet", "ready")
        with open("/proc/%d/cmdline" % w.popen.pid, "rb") as f:
            self.assertNotIn(self.cluster_token().encode(), f.read())
        r = self.cli("worker", "--server-url", self.url, "--token-file", os.path.join(self.tmp, "nope"), check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot read --token-file", r.stderr)

    def test_worker_waits_for_the_server_and_logs_once(self):
        from harness import free_port
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        w = self.start_worker("early", token="crt_unknown_yet")
        self.wait_for(lambda: "registration failed" in w.output(), "the first failure to be logged", proc=w)
        time.sleep(3.5)  # several retries happen meanwhile
        self.assertTrue(w.alive(), "the worker never exits because the server is away")
        self.assertEqual(w.output().count("registration failed"), 1, w.output())
        server = self.start_server(port=self.port, extra=["--token", "crt_unknown_yet"])
        self.login()
        self.wait_state("early", "ready", timeout=40)
        server.stop()
        time.sleep(2.5)
        self.assertTrue(w.alive())
        self.assertEqual(w.output().count("status report failed"), 1, w.output())
        self.start_server(name="server2", port=self.port, data_dir=self.data_dir)
        self.wait_for(lambda: "status reports reach the server again" in w.output(), "recovery", timeout=40)


class Identity(ClusterCase):
    def test_a_name_is_never_taken_over_without_the_workers_secret(self):
        self.start_server()
        self.login()
        first = self.start_worker("dup")
        orig = self.wait_state("dup", "ready")
        # another process with the cluster token claims the name: refused while the worker reports...
        second = self.start_worker("dup", data_dir=os.path.join(self.tmp, "other"))
        self.wait_for(lambda: "worker name 'dup' is taken by worker" in second.output(), "conflict", proc=second)
        self.assertIn("corral workers rm", second.output())
        self.assertEqual(len(self.workers()), 1)
        # ...and after it went quiet: without the worker's secret the name is not taken over
        first.signal(signal.SIGKILL)
        self.wait_state("dup", "not_ready", timeout=40)
        # (the refusal that names the quiet worker's state: it may come before the wait above saw that state)
        self.wait_for(lambda: "which is not_ready, and this registration does not carry its secret" in
                      second.output(), "a refusal while it is quiet", timeout=40, proc=second)
        self.assertIn("does not carry its secret", second.output())
        self.assertEqual(self.workers()["dup"]["id"], orig["id"])
        self.assertEqual(self.workers()["dup"]["state"], "not_ready")
        self.assertIn("registration as worker 'dup' from 127.0.0.1 refused", self.procs[0].output())
        # the real worker, with its data dir, is itself again
        again = self.start_worker("dup")
        self.assertEqual(self.wait_state("dup", "ready")["id"], orig["id"])
        self.assertIn("registered with", again.output())
        # a replacement machine takes the name only once an admin removed the old worker
        again.stop()
        second.stop()
        self.wait_state("dup", "not_ready", timeout=40)
        self.api("DELETE", "/api/workers/dup")
        self.start_worker("dup", data_dir=os.path.join(self.tmp, "other"))
        new = self.wait_state("dup", "ready")
        self.assertNotEqual(new["id"], orig["id"])

    def test_token_rotate_keeps_registered_workers_and_refuses_the_old_token(self):
        self.start_server()
        self.login()
        old = self.cluster_token()
        w1 = self.start_worker("w1")
        orig = self.wait_state("w1", "ready")
        self.cli("login", "--server-url", self.url, "--password-stdin", stdin=self.admin_password() + "\n")
        out = self.cli("token", "rotate").stdout
        new = self.cluster_token()
        self.assertNotEqual(new, old)
        self.assertIn("new cluster registration token: " + new, out)
        self.assertIn("--token-file", out)
        self.assertIn("cluster registration token rotated by 'admin'", self.procs[0].output())
        # the old token registers no one new
        stale = self.start_worker("w2", token=old)
        self.wait_for(lambda: "missing or wrong cluster registration token" in stale.output(), "refusal", proc=stale)
        stale.stop()
        # a registered worker restarted with the old token is itself again (its own secret)
        w1.stop()
        again = self.start_worker("w1", token=old)
        self.wait_for(lambda: "registered with" in again.output(), "registration", proc=again)
        self.assertEqual(self.wait_state("w1", "ready")["id"], orig["id"])
        # the new one joins new machines
        self.start_worker("w3", token=new)
        self.wait_state("w3", "ready")
        self.assertNotIn("w2", self.workers())
        # admins only
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-password-1"}, expect=201)
        status, bob = self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-password-1"})
        status, body = self.request("POST", "/api/token/rotate", {}, token=bob["token"])
        self.assertEqual(status, 403, body)
        self.assertEqual(self.cluster_token(), new)

    def test_remove_worker(self):
        self.start_server()
        self.login()
        w = self.start_worker("gone")
        self.wait_state("gone", "ready")
        self.cli("login", "--server-url", self.url, "--password-stdin", stdin=self.admin_password() + "\n")
        r = self.cli("workers", "rm", "gone", check=False)
        self.assertEqual(r.returncode, 1, "a ready worker needs --force")
        self.assertIn("worker 'gone' is ready and runs 0 instance(s)", r.stderr)
        w.stop()
        r = self.cli("workers", "rm", "gone", "--force")
        self.assertIn("removed worker 'gone'", r.stdout)
        self.assertEqual(self.workers(), {})
        r = self.cli("workers", "rm", "gone", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no worker 'gone'", r.stderr)


class NvmlFailures(ClusterCase):
    def test_init_error_and_missing_symbol_mean_zero_gpus_with_a_note(self):
        self.start_server()
        self.login()
        self.start_worker("noinit", nvml_config={"init_error": 9, "devices": H100["devices"]})
        self.start_worker("old", nvml_config=H100, nvml_lib=FAKE_NVML_NOUUID)
        a = self.wait_state("noinit", "ready")
        b = self.wait_state("old", "ready")
        self.assertEqual(a["gpus"], [])
        self.assertTrue(any("nvmlInit_v2 failed: Driver Not Loaded" in n for n in a["notes"]), a["notes"])
        self.assertEqual(b["gpus"], [])
        self.assertTrue(any("no symbol 'nvmlDeviceGetUUID'" in n for n in b["notes"]), b["notes"])

    def test_resources_file_declares_devices(self):
        self.start_server()
        self.login()
        res = os.path.join(self.tmp, "res.json")
        with open(res, "w") as f:
            json.dump({"gpus": [{"vendor": "ascend", "vendor_index": 0, "name": "Ascend 910B",
                                 "memory_total": 68719476736}]}, f)
        self.start_worker("npu", extra=["--resources", res])
        w = self.wait_state("npu", "ready")
        self.assertEqual([(g["vendor"], g["name"], g["source"]) for g in w["gpus"]],
                         [("ascend", "Ascend 910B", "declared")])


class Watch(ClusterCase):
    def test_watch_stream_sends_a_snapshot_then_keepalives(self):
        self.start_server()
        self.login()
        worker = self.start_worker("watcher")
        w = self.wait_state("watcher", "ready")
        self.wait_for(lambda: self.workers()["watcher"]["watch_connected"], "worker's watch stream")
        with open(os.path.join(self.tmp, "w-watcher", "worker.json")) as f:
            secret = json.load(f)["secret"]
        worker.stop()  # or its own watcher, reconnecting, would replace the stream opened below
        req = urllib.request.Request(self.url + "/api/workers/%s/watch" % w["id"],
                                     headers={"Authorization": "Bearer " + secret})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.headers["Content-Type"], "text/event-stream")
            lines = [r.readline().decode() for _ in range(7)]
        self.assertEqual(lines[0], "event: sources\n")
        self.assertEqual(json.loads(lines[1][len("data: "):]), {"sources": []})
        self.assertEqual(lines[3], "event: snapshot\n")
        self.assertEqual(json.loads(lines[4][len("data: "):]), {"instances": []})
        self.assertEqual(lines[6], ": keepalive\n")
        status, body = self.request("GET", "/api/workers/%s/watch" % w["id"], token="crw_wrong")
        self.assert_error(status, body, 401, "wrong worker secret")


class LightReports(ClusterCase):
    def _register(self, name):
        status, body = self.request("POST", "/api/workers/register", {"name": name, "port": 1},
                                    token=self.cluster_token())
        self.assertEqual(status, 201, body)
        return body["id"], body["secret"]

    def test_light_report_applies_to_its_full_report(self):
        self.start_server()
        self.login()
        wid, secret = self._register("manual")
        light = {"base": 1, "dynamic": {"memory_available": 5, "gpus": [{"memory_used": 70}]}}
        status, body = self.request("POST", "/api/workers/%s/status" % wid, light, token=secret)
        self.assert_error(status, body, 409, "no full report", "send a full report")
        full = {"base": 1, "system": {"memory": {"total": 100, "available": 90}},
                "gpus": [{"index": 0, "vendor": "nvidia", "memory_total": 80, "memory_used": 1}]}
        status, body = self.request("POST", "/api/workers/%s/status" % wid, full, token=secret)
        self.assertEqual(status, 200, body)
        status, body = self.request("POST", "/api/workers/%s/status" % wid, light, token=secret)
        self.assertEqual(status, 200, body)
        w = self.api("GET", "/api/workers/manual")
        self.assertEqual(w["system"]["memory"], {"total": 100, "available": 5})
        self.assertEqual(w["gpus"][0]["memory_used"], 70)
        self.assertEqual(w["gpus"][0]["memory_total"], 80)
        stale = dict(light, base=7)
        status, body = self.request("POST", "/api/workers/%s/status" % wid, stale, token=secret)
        self.assert_error(status, body, 409, "another base")
        bad = {"base": 1, "dynamic": {"gpus": [{}, {}]}}
        status, body = self.request("POST", "/api/workers/%s/status" % wid, bad, token=secret)
        self.assertEqual(status, 409, body)
        status, body = self.request("POST", "/api/workers/%s/status" % wid, {"base": 1, "dynamic": [1]},
                                    token=secret)
        self.assert_error(status, body, 400, "'dynamic' must be an object")
        self.assertEqual(self.api("GET", "/api/workers/manual")["gpus"][0]["memory_used"], 70,
                         "rejected reports change nothing")

    def test_gpu_memory_changes_reach_the_server_between_full_reports(self):
        self.start_server()
        self.login()
        cfg = json.loads(json.dumps(H100))
        self.start_worker("live", nvml_config=cfg)
        self.wait_state("live", "ready")
        # right after a full report the next one is 12 intervals away: a
        # change seen before the base moves came in a light report
        first = self.workers()["live"]["report"]["base"]
        base = self.wait_for(lambda: (lambda b: b != first and b)(self.workers()["live"]["report"]["base"]),
                             "a fresh full report", timeout=30)
        cfg["devices"][1]["memory_used"] = 42 * 2**30
        path = os.path.join(self.tmp, "live-nvml.json")
        with open(path + ".new", "w") as f:
            json.dump(cfg, f)
        os.replace(path + ".new", path)
        seen = self.wait_for(lambda: (lambda w: w["gpus"][1]["memory_used"] == 42 * 2**30 and w)(
            self.workers()["live"]), "the new GPU memory use", timeout=8)
        self.assertEqual(seen["report"]["base"], base, "it came in a light report, not with the next full one")
        self.assertTrue(seen["report"]["light"])


class TerminalSafety(ClusterCase):
    def test_control_characters_from_the_network_are_escaped_in_tables(self):
        self.start_server()
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        status, body = self.request("POST", "/api/workers/register",
                                    {"name": "odd", "port": 1, "labels": {"zone": "eu\x1b[2J\u009b31m"}},
                                    token=self.cluster_token())
        self.assertEqual(status, 201, body)
        full = {"base": 1, "system": {"memory": {"total": 100, "available": 90}},
                "gpus": [{"index": 0, "vendor": "nvidia", "name": "H100\x07\x1b]0;pwned\x07",
                          "memory_total": 80, "memory_used": 1}]}
        status, _ = self.request("POST", "/api/workers/%s/status" % body["id"], full, token=body["secret"])
        self.assertEqual(status, 200)
        out = self.cli("workers").stdout
        for c in ("\x1b", "\x07", "\u009b"):
            self.assertNotIn(c, out, "a raw control character reached the terminal")
        self.assertIn("zone=eu\\x1b[2J\\x9b31m", out)
        self.assertIn("H100\\x07\\x1b]0;pwned\\x07", out)
        # --json keeps the bytes, as JSON escapes, and parses
        j = json.loads(self.cli("workers", "--json").stdout)
        self.assertEqual(j[0]["labels"]["zone"], "eu\x1b[2J\u009b31m")
