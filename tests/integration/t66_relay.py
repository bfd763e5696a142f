"""Tier 66: the gateway's relay under load and failure, with real llama-server
instances: two replicas share the load; one killed between requests leaves
the other serving; a stream cut by the engine ends with an error event; a
client that vanishes mid-stream cancels the engine's work and leaks nothing;
bad input and slow clients get OpenAI-shaped errors while others are served;
engines that answer garbage, go silent or never answer are cut with a clear
error."""
import json
import os
import signal
import socket
import threading
import unittest
import urllib.request

from harness import ROOT
from t50_engines import EngineCase, LLAMA_BIN

MISBEHAVING = os.path.join(ROOT, "tests", "fakes", "engines", "misbehaving_engine")


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Relay(EngineCase):
    def openai_error(self, result, expect_status, *needles):
        status, _, body = result
        self.assertEqual(status, expect_status, body)
        err = json.loads(body)["error"]
        self.assertEqual(set(err), {"message", "type", "code", "param"}, err)
        for n in needles:
            self.assertIn(n, err["message"])
        return err

    def deploy(self, name, path, replicas=1, **extra):
        spec = {"name": name, "path": path, "ctx": 2048, "allow_cpu_offload": True, "engine_args": ["-t", "1"],
                "replicas": replicas}
        spec.update(extra)
        self.api("POST", "/api/models", spec, expect=201)

    def running(self, model, n):
        def check():
            insts = self.api("GET", "/api/instances?model=" + model)["instances"]
            return len([i for i in insts if i["state"] == "running"]) == n and insts
        return self.wait_for(check, "%d running instances of %s" % (n, model), 60)

    def open_stream(self, key, model, max_tokens=1800):
        """A raw streaming request for exactly max_tokens tokens (no early end
        of text); returns the socket and its reader."""
        body = json.dumps({"model": model, "prompt": "once upon a time", "max_tokens": max_tokens,
                           "ignore_eos": True, "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + key.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body)
        f = s.makefile("rb")
        self.assertIn(b" 200 ", f.readline())
        return s, f

    def test_two_replicas_share_the_load_and_one_killed_leaves_the_other(self):
        self.cluster(("w1", None), ("w2", None))
        key = self.cli("keys", "create", "t").stdout.strip()
        self.deploy("tiny", self.model(), replicas=2)
        insts = self.running("tiny", 2)
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        for _ in range(10):
            self.assertEqual(self.gw("/v1/chat/completions", msg, key)[0], 200)
        served = {i["id"]: i["requests"] for i in self.api("GET", "/api/instances?model=tiny")["instances"]}
        self.assertEqual(sorted(served.values()), [5, 5], "ties go round robin: %s" % served)
        # concurrent streams are spread by outstanding requests
        results = []

        def stream():
            status, _, body = self.gw("/v1/chat/completions", dict(msg, stream=True, max_tokens=32), key)
            results.append(status if status == 200 else (status, body))
        threads = [threading.Thread(target=stream) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 8)
        after = {i["id"]: i["requests"] for i in self.api("GET", "/api/instances?model=tiny")["instances"]}
        self.assertTrue(all(after[i] > served[i] for i in after), "both replicas took streams: %s" % after)
        self.assertTrue(all(i["inflight"] == 0 for i in self.api("GET", "/api/instances?model=tiny")["instances"]))
        # kill one engine; new requests go to the other, none fails
        victim = insts[0]
        os.kill(self.leader_report(victim)["pid"], signal.SIGKILL)
        for _ in range(6):
            status, _, body = self.gw("/v1/chat/completions", msg, key)
            self.assertEqual(status, 200, body)

    def test_stream_cut_by_the_engine_ends_with_an_error_event(self):
        self.cluster(("w1", None))
        key = self.cli("keys", "create", "t").stdout.strip()
        self.deploy("slow", self.model("slow.gguf", "--layers", "4", "--embd", "1024", "--ff", "4096",
                                       "--heads", "8", "--kv-heads", "8", "--type", "q8_0"))
        inst = self.running("slow", 1)[0]
        s, f = self.open_stream(key, "slow")
        seen = 0
        while seen < 5:
            if f.readline().startswith(b"data: {"):
                seen += 1
        os.kill(self.leader_report(inst)["pid"], signal.SIGKILL)
        rest = f.read().decode(errors="replace")  # must end, not hang (socket timeout 20 s)
        s.close()
        events = [l for l in rest.split("\n") if l.startswith("data: ")]
        last = json.loads(events[-1][6:])
        self.assertEqual(last["error"]["code"], "upstream_closed", rest[-400:])
        self.assertIn("closed the connection mid-answer", last["error"]["message"])

    def test_client_that_vanishes_mid_stream_cancels_the_engine_and_leaks_nothing(self):
        server = self.cluster(("w1", None)) or self.procs[0]
        key = self.cli("keys", "create", "t").stdout.strip()
        self.deploy("slow", self.model("slow.gguf", "--layers", "4", "--embd", "1024", "--ff", "4096",
                                       "--heads", "8", "--kv-heads", "8", "--type", "q8_0"),
                    engine_args=["-t", "1", "--metrics"])
        inst = self.running("slow", 1)[0]
        endpoint = inst["endpoint"]

        engine_key = self.engine_key(endpoint)

        def predicted():
            req = urllib.request.Request("http://%s/metrics" % endpoint,
                                         headers={"Authorization": "Bearer " + engine_key})
            with urllib.request.urlopen(req, timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("llamacpp:tokens_predicted_total"):
                        return float(line.split()[1])
            return 0.0
        msg = {"model": "slow", "prompt": "hi", "max_tokens": 2}
        self.assertEqual(self.gw("/v1/completions", msg, key)[0], 200)  # warm the pool
        base = fds(server.popen.pid)
        for _ in range(4):
            before = predicted()
            s, f = self.open_stream(key, "slow")
            while not f.readline().startswith(b"data: {"):
                pass
            f.close()
            s.close()

            def idle():
                req = urllib.request.Request("http://%s/slots" % endpoint,
                                             headers={"Authorization": "Bearer " + engine_key})
                with urllib.request.urlopen(req, timeout=5) as r:
                    slots = json.loads(r.read())
                inflight = self.api("GET", "/api/instances?model=slow")["instances"][0]["inflight"]
                return inflight == 0 and not any(sl["is_processing"] for sl in slots)
            self.wait_for(idle, "the engine's slot to stop generating", timeout=60)
            # whatever the CPU's speed: the engine stopped before the 1800 tokens it was asked for
            self.assertLess(predicted() - before, 1800, "the vanished client's generation was cancelled")
        self.assertLessEqual(fds(server.popen.pid), base + 1, "no sockets left behind by vanished clients")
        self.assertEqual(self.gw("/v1/completions", msg, key)[0], 200)

    def test_sigterm_lets_streams_in_flight_finish_and_meters_them(self):
        """A graceful stop: new connections are refused at once, the streams
        already going finish (up to --shutdown-timeout) and are metered."""
        self.start_server(extra=("--gpu-reserve", "0", "--shutdown-timeout", "60"))
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        self.worker("w1")
        self.wait_state("w1", "ready")
        server = self.procs[0]
        key = self.cli("keys", "create", "t").stdout.strip()
        self.deploy("slow", self.model("slow.gguf", "--layers", "4", "--embd", "1024", "--ff", "4096",
                                       "--heads", "8", "--kv-heads", "8", "--type", "q8_0"))
        self.running("slow", 1)
        streams = [self.open_stream(key, "slow", max_tokens=300) for _ in range(2)]
        for s, f in streams:  # both are generating
            while not f.readline().startswith(b"data: {"):
                pass
        server.signal(signal.SIGTERM)
        self.wait_for(lambda: "answer(s) in flight may finish" in server.output(), "the graceful stop")
        late = socket.create_connection(("127.0.0.1", self.port), timeout=1)  # the kernel's backlog takes it
        late.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        with self.assertRaises(OSError, msg="a new request is not served while draining"):
            if not late.recv(1):
                raise OSError("closed")
        late.close()
        for s, f in streams:
            rest = f.read().decode(errors="replace")
            s.close()
            self.assertIn("data: [DONE]", rest, "the stream finished, not cut")
        server.popen.wait(30)
        self.assertEqual(server.popen.returncode, 0, server.output()[-2000:])
        self.start_server(name="server2", data_dir=self.data_dir, port=self.port)
        self.login()
        rows = self.api("GET", "/api/usage?by=model")["rows"]
        self.assertEqual([(r["model"], r["requests"], r["errors"]) for r in rows], [("slow", 2, 0)], "both metered")

    def http10(self, key, body):
        """One HTTP/1.0 request (nginx's default upstream protocol): the server
        closes the connection when the answer ends."""
        data = json.dumps(body).encode()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer " + key.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(data)).encode() +
                  b"\r\n\r\n" + data)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
        s.close()
        head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
        return head.decode(), rest.decode(errors="replace")

    def test_http10_clients_streamed_and_not(self):
        """Ending an answer to an HTTP/1.0 client frees its connection at once;
        the relay must not be finished a second time by the close callback
        (a use after free that ASan reports)."""
        server = self.cluster(("w1", None)) or self.procs[0]
        key = self.cli("keys", "create", "t").stdout.strip()
        self.deploy("tiny", self.model())
        self.running("tiny", 1)
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
        for _ in range(3):
            head, body = self.http10(key, msg)
            self.assertTrue(head.startswith("HTTP/1.0 200") or head.startswith("HTTP/1.1 200"), head)
            self.assertEqual(json.loads(body)["object"], "chat.completion")
            head, body = self.http10(key, dict(msg, stream=True))
            self.assertIn(" 200 ", head.split("\r\n")[0])
            self.assertIn("data: [DONE]", body, "the whole stream arrives before the close")
            # an error before any byte of an answer, also over HTTP/1.0
            head, body = self.http10(key, dict(msg, model="nope"))
            self.assertIn(" 404 ", head.split("\r\n")[0])
        self.assertTrue(server.alive(), server.output()[-3000:])
        status, _, body = self.gw("/v1/chat/completions", msg, key)
        self.assertEqual(status, 200, body)
        rows = {r["model"]: r for r in self.api("GET", "/api/usage?by=model")["rows"]}
        self.assertEqual(rows["tiny"]["requests"], 7, "each HTTP/1.0 answer is metered once")

    def test_bad_input_and_slow_clients_get_clear_errors_and_others_are_served(self):
        self.start_server(extra=("--max-body", "4096"))
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        self.worker("w1")
        self.wait_state("w1", "ready")
        key = self.cli("keys", "create", "t").stdout.strip()
        self.deploy("tiny", self.model())
        self.running("tiny", 1)
        # slow-loris: connections that send part of a request and stall
        loris = []
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" if i % 2 else
                      b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mo")
            loris.append(s)
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        self.assertEqual(self.gw("/v1/chat/completions", msg, key)[0], 200, "served while 20 clients stall")
        self.openai_error(self.gw("/v1/chat/completions", None, key, raw=b'{"model": "tiny", '), 400,
                          "JSON")
        self.openai_error(self.gw("/v1/chat/completions", None, key, raw=b'[1, 2]'), 400)
        self.openai_error(self.gw("/v1/chat/completions", {"messages": []}, key), 400,
                          "you must provide a model parameter")
        self.openai_error(self.gw("/v1/chat/completions", {"model": 7}, key), 400)
        err = self.openai_error(self.gw("/v1/chat/completions", dict(msg, pad="x" * 8000), key), 413, "4096")
        self.assertEqual(err["code"], "request_too_large")
        self.openai_error(self.gw("/v1/embeddings", {"model": "tiny", "input": "hi"}, "sk-wrong"), 401)
        for s in loris:
            s.close()
        self.assertEqual(self.gw("/v1/chat/completions", msg, key)[0], 200)
        usage = self.api("GET", "/api/usage?by=model")["rows"]
        self.assertEqual([(r["model"], r["requests"]) for r in usage], [("tiny", 2)],
                         "refused bodies are not metered as model use")

    def misbehaving(self, modes, extra=(), **spec):
        cfg = os.path.join(self.tmp, "engines.json")
        with open(cfg, "w") as f:
            json.dump({"engines": [{"name": "bad-" + m, "command": [MISBEHAVING, "--host", "{host}", "--port",
                                                                    "{port}", "--mode", m],
                                    "version": ["{exe}", "--version"], "health": "/health", "devices": ["cpu"]}
                                   for m in modes]}, f)
        self.start_server(extra=extra)
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        self.start_worker("w1", extra=("--port-range", port_range_for(self), "--engines-config", cfg))
        self.wait_state("w1", "ready")
        key = self.cli("keys", "create", "t").stdout.strip()
        path = self.model()
        for m in modes:
            self.deploy(m, path, engine="bad-" + m, **spec)
        self.deploy("tiny", path, **spec)
        for m in modes + ["tiny"]:
            self.running(m, 1)
        return key

    def test_engines_that_answer_garbage_get_a_clear_error(self):
        key = self.misbehaving(["nothttp", "badjson"])
        msg = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        self.openai_error(self.gw("/v1/chat/completions", dict(msg, model="nothttp"), key), 502,
                          "answered with something that is not HTTP")
        self.openai_error(self.gw("/v1/chat/completions", dict(msg, model="badjson"), key), 502,
                          "answered 200 with a body that is not JSON")
        self.assertEqual(self.gw("/v1/chat/completions", dict(msg, model="tiny"), key)[0], 200, "still serving")
        rows = {r["model"]: r for r in self.api("GET", "/api/usage?by=model")["rows"]}
        self.assertEqual((rows["nothttp"]["errors"], rows["badjson"]["errors"], rows["tiny"]["errors"]), (1, 1, 0))

    def test_silent_and_hanging_engines_are_cut_by_the_timeouts(self):
        key = self.misbehaving(["silent", "hang"], extra=("--gateway-first-byte-timeout", "1500",
                                                          "--gateway-idle-timeout", "1500"))
        msg = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        err = self.openai_error(self.gw("/v1/chat/completions", dict(msg, model="hang"), key), 504,
                                "did not start answering within 1500 ms")
        self.assertEqual(err["code"], "upstream_timeout")
        status, headers, body = self.gw("/v1/chat/completions", dict(msg, model="silent", stream=True), key)
        self.assertEqual(status, 200)
        events = [json.loads(l[6:]) for l in body.split("\n") if l.startswith("data: ")]
        self.assertEqual(events[0]["choices"][0]["delta"]["content"], "hi", "what came before is relayed")
        self.assertIn("sent nothing for 1500 ms", events[-1]["error"]["message"])


    def test_a_kept_alive_connection_the_engine_closed_is_retried_on_a_new_one(self):
        """The engine closes a pooled connection as the next request arrives
        on it: the relay tries the same instance again on a new connection
        (it used to give up: 'no instance of the model could be reached')."""
        key = self.misbehaving(["oneshot"])
        msg = {"model": "oneshot", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        for n in range(4):
            status, _, body = self.gw("/v1/chat/completions", msg, key)
            self.assertEqual(status, 200, "request %d: %s" % (n + 1, body))
        log = os.path.join(self.tmp, "w-w1", "logs", self.instance("oneshot")["id"] + ".log")
        with open(log) as f:
            self.assertIn("closed a kept-alive connection at its second request", f.read(),
                          "the pooled connection was reused, and closed under it")

    def test_a_probe_stops_reading_an_answer_past_its_limit(self):
        """The server's own fetches (end-to-end probes, logs) stop at 4 MiB
        instead of reading a 64 MiB answer whole and checking it afterwards."""
        self.misbehaving(["huge"], extra=("--health-probe-interval", "1"), health_probe=True)
        inst = self.wait_for(lambda: (lambda i: i["state"] == "error" and i)(self.instance("huge")),
                             "three failed end-to-end probes", timeout=30)
        self.assertIn("answer larger than 4 MiB", inst["message"])
        log = os.path.join(self.tmp, "w-w1", "logs", inst["id"] + ".log")
        with open(log) as f:
            text = f.read()
        self.assertIn("huge answer cut after", text, "the server stopped reading")
        self.assertNotIn("huge answer sent whole", text, "the server never read the 64 MiB answer whole")

    def test_an_engine_that_runs_but_answers_wrong_goes_error_after_three_probes(self):
        key = self.misbehaving(["badjson"], extra=("--health-probe-interval", "1"), health_probe=True)
        inst = self.wait_for(lambda: (lambda i: i["state"] == "error" and i)(self.instance("badjson")),
                             "three failed end-to-end probes", timeout=20)
        self.assertIn("the end-to-end probe failed 3 times in a row: answered 200 with a body that is not JSON",
                      inst["message"])
        self.assertEqual(self.instance("tiny")["state"], "running", "a good engine passes its probes")
        err = self.openai_error(self.gw("/v1/chat/completions", {"model": "badjson", "messages": []}, key), 503,
                                "1 error")
        self.assertIn("end-to-end probe", err["message"])
        health = self.api("GET", "/api/health")
        self.assertEqual(health["status"], "failing")
        self.assertEqual(health["instances"].get("error"), 1)


def port_range_for(case):
    from t50_engines import port_range
    return port_range()


if __name__ == "__main__":
    unittest.main()
