"""Tier 67: metering through the gateway with a real llama-server: totals per
key and model equal what the engine reported (streams included, with the
usage chunk asked for and removed again when the client did not want it),
embeddings, users seeing only their own usage, token-per-minute limits, the
CLI, and the counts surviving a server restart."""
import json
import os
import signal
import subprocess
import unittest

from harness import CORRAL
from t50_engines import EngineCase, LLAMA_BIN


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Metering(EngineCase):
    def events(self, body):
        return [json.loads(l[6:]) for l in body.split("\n") if l.startswith("data: {")]

    def test_usage_equals_what_the_engines_reported_and_survives_a_restart(self):
        self.cluster(("w1", None))
        path = self.deploy_chat_and_embed()
        a = self.cli("keys", "create", "a").stdout.strip()
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-password-1"}, expect=201)
        status, bob = self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-password-1"})
        self.assertEqual(status, 200)
        status, created = self.request("POST", "/api/keys", {"name": "b"}, token=bob["token"])
        self.assertEqual(status, 201, created)
        b = created["key"]

        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 6}
        expect = {}  # (key, model) -> [requests, prompt, completion]

        def count(key, model, prompt, completion):
            e = expect.setdefault((key, model), [0, 0, 0])
            e[0] += 1
            e[1] += prompt
            e[2] += completion

        for _ in range(2):
            status, _, body = self.gw("/v1/chat/completions", msg, a)
            self.assertEqual(status, 200, body)
            u = json.loads(body)["usage"]
            count("a", "tiny", u["prompt_tokens"], u["completion_tokens"])
        prompt_of_msg = u["prompt_tokens"]
        # a stream that did not ask for usage: none shown, still counted
        status, _, body = self.gw("/v1/chat/completions", dict(msg, stream=True), a)
        events = self.events(body)
        self.assertFalse([e for e in events if "usage" in e and not e["choices"]], "usage chunk removed")
        self.assertEqual(events[-1]["choices"][0]["finish_reason"], "length")
        self.assertTrue(body.rstrip().endswith("data: [DONE]"))
        count("a", "tiny", prompt_of_msg, 6)
        # a stream that asked for it gets the engine's own chunk
        status, _, body = self.gw("/v1/chat/completions",
                                  dict(msg, stream=True, stream_options={"include_usage": True}), a)
        u = [e for e in self.events(body) if not e["choices"]][0]["usage"]
        self.assertEqual(u["completion_tokens"], 6)
        count("a", "tiny", u["prompt_tokens"], u["completion_tokens"])
        status, _, body = self.gw("/v1/completions", {"model": "tiny", "prompt": "abc", "max_tokens": 5}, a)
        u = json.loads(body)["usage"]
        count("a", "tiny", u["prompt_tokens"], u["completion_tokens"])
        status, _, body = self.gw("/v1/embeddings", {"model": "embed", "input": ["one two", "three"]}, a)
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(len(answer["data"]), 2)
        self.assertEqual(len(answer["data"][0]["embedding"]), 64)
        count("a", "embed", answer["usage"]["prompt_tokens"], 0)
        status, _, body = self.gw("/v1/chat/completions", msg, b)
        u = json.loads(body)["usage"]
        count("b", "tiny", u["prompt_tokens"], u["completion_tokens"])

        def check_usage():
            rows = self.api("GET", "/api/usage?by=key,model")["rows"]
            got = {(r["key"], r["model"]): [r["requests"], r["prompt_tokens"], r["completion_tokens"]] for r in rows}
            self.assertEqual(got, expect)
            self.assertTrue(all(r["errors"] == 0 for r in rows))
            self.assertEqual({r["user"] for r in rows}, {"admin", "bob"})
            ttft = [r for r in rows if r["key"] == "a" and r["model"] == "tiny"][0]["ttft_ms_avg"]
            self.assertIsNotNone(ttft, "streams record a time to first token")
        check_usage()
        # bob sees his own usage only
        status, mine = self.request("GET", "/api/usage?by=key", token=bob["token"])
        self.assertEqual([(r["key"], r["requests"]) for r in mine["rows"]], [("b", 1)])
        status, other = self.request("GET", "/api/usage?user=admin", token=bob["token"])
        self.assertEqual(status, 403, other)
        status, bad = self.request("GET", "/api/usage?since=last-week")
        self.assertIn(status, (400, 401))
        status, bad = self.request("GET", "/api/usage?since=last-week", token=self.token)
        self.assertEqual(status, 400)
        self.assertIn("YYYY-MM-DD", bad["error"]["fix"])
        out = self.cli("usage", "--by", "key,model").stdout
        self.assertIn("KEY", out)
        row = [l.split() for l in out.splitlines() if l.startswith("admin") and " embed " in l][0]
        self.assertEqual(row[3:6], ["1", "0", str(expect[("a", "embed")][1])])
        total = [l.split() for l in out.splitlines() if l.startswith("TOTAL")][0]
        self.assertEqual(int(total[1]), sum(e[0] for e in expect.values()))

        # the counts survive a restart (SIGTERM flushes what the timer had not)
        server = self.procs[0]
        server.signal(signal.SIGTERM)
        server.popen.wait(10)
        self.start_server(name="server2", data_dir=self.data_dir, port=self.port, extra=("--gpu-reserve", "0"))
        self.login()
        check_usage()

        # tokens per minute: the answer that passes the limit is the last one in that minute
        c = self.cli("keys", "create", "c", "--tpm", "10").stdout.strip()
        self.wait_for(lambda: self.wait_running("tiny")["endpoint"], "the worker to report the engine again")
        self.assertEqual(self.gw("/v1/chat/completions", msg, c)[0], 200)
        status, headers, body = self.gw("/v1/chat/completions", msg, c)
        self.assertEqual(status, 429, body)
        self.assertIn("10 tokens per minute", json.loads(body)["error"]["message"])
        self.assertTrue(0 < int(headers["Retry-After"]) <= 60)
        rows = self.api("GET", "/api/usage?key=c")["rows"]
        self.assertEqual((rows[0]["requests"], rows[0]["errors"]), (2, 1))


    def test_usage_survives_a_kill_9_of_the_server(self):
        """Usage is written every second: a server killed with SIGKILL loses
        at most the last second (it used to lose everything since the last
        30 s flush)."""
        import sqlite3
        import time
        server = self.cluster(("w1", None)) or self.procs[0]
        key = self.cli("keys", "create", "k").stdout.strip()
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        self.wait_running("tiny")
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
        for _ in range(5):
            self.assertEqual(self.gw("/v1/chat/completions", msg, key)[0], 200)

        def stored():
            db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.data_dir, "corral.db"), uri=True)
            try:
                row = db.execute("SELECT SUM(requests) FROM usage WHERE model = 'tiny'").fetchone()
            finally:
                db.close()
            return row[0] or 0
        t0 = time.monotonic()
        self.wait_for(lambda: stored() == 5, "the five requests in the store", timeout=10)
        print("\nusage on disk %.1f s after the last request" % (time.monotonic() - t0))
        server.signal(signal.SIGKILL)
        server.popen.wait(10)
        self.start_server(name="server2", data_dir=self.data_dir, port=self.port, extra=("--gpu-reserve", "0"))
        self.login()
        rows = self.api("GET", "/api/usage?by=model")["rows"]
        self.assertEqual([(r["model"], r["requests"]) for r in rows], [("tiny", 5)], "nothing lost to the kill")


if __name__ == "__main__":
    unittest.main()


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class TokenLimits(EngineCase):
    def test_tokens_per_minute_hold_under_concurrent_requests(self):
        """20 requests at once against a 300-token limit: each holds what it may cost (max_tokens and its text)
        while it runs, so together they cannot pass the limit that none of them had reached when it started."""
        import threading
        self.cluster(("w1", None))
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        self.wait_running("tiny")
        key = self.cli("keys", "create", "t", "--tpm", "300").stdout.strip()
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 20,
               "ignore_eos": True}
        results = []
        go = threading.Barrier(20)

        def one():
            go.wait()
            results.append(self.gw("/v1/chat/completions", msg, key, timeout=120))
        threads = [threading.Thread(target=one) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = [json.loads(b)["usage"]["total_tokens"] for status, _, b in results if status == 200]
        limited = [json.loads(b)["error"]["message"] for status, _, b in results if status == 429]
        self.assertEqual(len(ok) + len(limited), 20, [r[0] for r in results])
        self.assertTrue(ok and limited, (len(ok), len(limited)))
        self.assertLessEqual(sum(ok), 300, "the limit held: %d tokens answered in %d requests" % (sum(ok), len(ok)))
        self.assertIn("held by requests in flight", limited[0])
        print("\ntpm 300 under 20 concurrent requests: %d answered, %d tokens, %d refused" %
              (len(ok), sum(ok), len(limited)))


class UserLimits(EngineCase):
    def test_user_limits_cap_their_keys_and_token_quotas_hold_across_a_restart(self):
        self.cluster(("w1", None))
        self.deploy_chat_and_embed()
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-password-1"}, expect=201)
        out = self.cli("users", "limits", "bob", "--models", "tiny", "--rpm", "2", "--daily-tokens", "100000").stdout
        self.assertIn("limits of 'bob'", out)
        self.assertIn("2 rpm, 100000 tokens/day, models tiny", self.cli("users").stdout)
        status, bob = self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-password-1"})
        # bob's keys cannot ask for more than an admin gave him
        status, body = self.request("POST", "/api/keys", {"name": "big", "rpm": 5}, token=bob["token"])
        self.assertEqual(status, 400, body)
        self.assertIn("rpm 5 is over the limit of 2 an admin set for user 'bob'", body["error"]["message"])
        status, body = self.request("POST", "/api/keys", {"name": "e", "models": ["embed"]}, token=bob["token"])
        self.assertEqual(status, 400, body)
        status, b1 = self.request("POST", "/api/keys", {"name": "b1"}, token=bob["token"])
        self.assertEqual((status, b1["rpm"], b1["daily_tokens"]), (201, 2, 100000), "unset limits take the user's")
        b2 = self.cli("keys", "create", "b2", "--owner", "bob").stdout.strip()
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
        # the user's models: embed is not among them, whatever the key says
        status, _, body = self.gw("/v1/embeddings", {"model": "embed", "input": "x"}, b2)
        self.assertEqual(status, 404, body)
        # the user's rpm holds across both keys
        self.assertEqual(self.gw("/v1/chat/completions", msg, b1["key"])[0], 200)
        self.assertEqual(self.gw("/v1/chat/completions", msg, b2)[0], 200)
        status, headers, body = self.gw("/v1/chat/completions", msg, b2)
        self.assertEqual(status, 429, body)
        self.assertIn("Rate limit reached for user 'bob': 2 requests per minute", json.loads(body)["error"]["message"])
        # a daily token quota: the request that would pass it is refused, with when it resets
        q = self.cli("keys", "create", "q", "--daily-tokens", "150").stdout.strip()
        status, _, body = self.gw("/v1/chat/completions", msg, q)
        self.assertEqual(status, 200, body)
        used = json.loads(body)["usage"]["total_tokens"]
        status, headers, body = self.gw("/v1/chat/completions", msg, q)
        self.assertEqual(status, 429, body)
        err = json.loads(body)["error"]["message"]
        self.assertIn("Daily token quota of key 'q' reached: %d of 150 tokens used today" % used, err)
        self.assertIn("It resets at 00:00 UTC, in ", err)
        self.assertTrue(0 < int(headers["Retry-After"]) <= 86400)
        # it holds across a restart: the day's usage is read back from the store
        server = self.procs[0]
        server.signal(signal.SIGTERM)
        server.popen.wait(10)
        self.start_server(name="server2", data_dir=self.data_dir, port=self.port, extra=("--gpu-reserve", "0"))
        self.login()
        self.wait_for(lambda: self.wait_running("tiny")["endpoint"], "the worker to report the engine again")
        status, _, body = self.gw("/v1/chat/completions", msg, q)
        self.assertEqual(status, 429, body)
        self.assertIn("%d of 150 tokens used today" % used, json.loads(body)["error"]["message"])


class Reranking(EngineCase):
    def test_a_reranker_deployed_with_reranking_answers_v1_rerank_and_is_metered(self):
        self.cluster(("w1", None))
        path = self.model("rerank.gguf", "--reranker")
        chat = self.model()
        self.api("POST", "/api/models", {"name": "rerank", "path": path, "ctx": 512, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1", "--reranking"]}, expect=201)
        self.api("POST", "/api/models", {"name": "tiny", "path": chat, "ctx": 512, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        for m in ("rerank", "tiny"):
            self.wait_for(lambda: self.wait_running(m)["endpoint"], m + " running")
        key = self.cli("keys", "create", "r").stdout.strip()
        docs = ["alpha beta", "gamma", "delta epsilon zeta"]
        status, _, body = self.gw("/v1/rerank", {"model": "rerank", "query": "alpha", "documents": docs}, key)
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(sorted(r["index"] for r in answer["results"]), [0, 1, 2], "a score for every document")
        self.assertTrue(all(isinstance(r["relevance_score"], (int, float)) for r in answer["results"]))
        self.assertGreater(answer["usage"]["prompt_tokens"], 0)
        # a chat model was not started with --reranking: the engine's refusal, as an OpenAI error
        status, _, body = self.gw("/v1/rerank", {"model": "tiny", "query": "alpha", "documents": docs}, key)
        self.assertGreaterEqual(status, 400, body)
        self.assertIn("rerank", json.loads(body)["error"]["message"].lower())

        def metered():
            rows = self.api("GET", "/api/usage?by=key,model")["rows"]
            got = {(r["key"], r["model"]): (r["requests"], r["prompt_tokens"]) for r in rows}
            self.assertEqual(got.get(("r", "rerank")), (1, answer["usage"]["prompt_tokens"]))
            return True
        self.wait_for(metered, "the rerank metered under its key")


class AccessLog(EngineCase):
    def test_one_line_per_v1_request_with_key_model_status_tokens_and_latency(self):
        log = os.path.join(self.tmp, "access.log")
        self.cluster(("w1", None), server_extra=("--access-log", log))
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        self.wait_running("tiny")
        key = self.cli("keys", "create", "ci").stdout.strip()
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        status, _, body = self.gw("/v1/chat/completions", msg, key)
        self.assertEqual(status, 200, body)
        u = json.loads(body)["usage"]
        status, _, _ = self.gw("/v1/chat/completions", dict(msg, stream=True), key)
        self.assertEqual(status, 200)
        status, _, _ = self.gw("/v1/chat/completions", dict(msg, model="nope\nkey=forged status=200"), key)
        self.assertEqual(status, 404)
        self.wait_for(lambda: os.path.exists(log) and open(log).read().count("\n") == 3, "three access lines")
        lines = open(log).read().splitlines()
        fields = [dict(f.split("=", 1) for f in l.split()[2:]) for l in lines]
        self.assertTrue(all(l.split()[1] == "access" for l in lines), lines)
        self.assertEqual(fields[0]["key"], "ci")
        self.assertEqual((fields[0]["model"], fields[0]["status"]), ("tiny", "200"))
        self.assertEqual((int(fields[0]["prompt_tokens"]), int(fields[0]["completion_tokens"])),
                         (u["prompt_tokens"], u["completion_tokens"]))
        self.assertGreater(int(fields[0]["latency_ms"]), 0)
        self.assertNotIn("ttft_ms", fields[0])
        self.assertEqual(int(fields[1]["completion_tokens"]), 3)
        self.assertIn("ttft_ms", fields[1], "streams log their time to the first token")
        self.assertEqual((fields[2]["status"], fields[2]["model"]), ("404", "nope?key=forged?status=200"),
                         "a name from the request cannot forge a line")
        self.assertNotIn("access key=", self.procs[0].output(), "with a file, not in the server's log too")

    def test_an_access_log_that_cannot_be_opened_is_refused_with_the_fix(self):
        r = subprocess.run([CORRAL, "server", "--access-log", os.path.join(self.tmp, "no", "such", "dir", "a.log"),
                            "--data-dir", os.path.join(self.tmp, "d"), "--port", "0", "--disable-worker"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open --access-log", r.stderr)
        self.assertIn("--access-log off", r.stderr)
