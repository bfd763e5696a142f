"""Tier 65: the gateway's first routes: chat through /v1 relayed to a real
llama-server (streamed chunk by chunk and not), OpenAI-shaped refusals for a
model that does not run yet (with the reason per replica) or that the key
may not use."""
import json
import os

from t50_engines import EngineCase, LLAMA_BIN
import unittest


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Gateway(EngineCase):
    def test_chat_is_relayed_to_a_running_instance(self):
        self.cluster(("w1", None))
        key = self.cli("keys", "create", "t").stdout.strip()
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 2048, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"], "replicas": 1}, expect=201)
        self.api("POST", "/api/models", {"name": "ghost", "path": "/nowhere/ghost.gguf"}, expect=201)
        self.wait_running("tiny")
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
        status, headers, body = self.gw("/v1/chat/completions", msg, key)
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(answer["choices"][0]["finish_reason"], "length")
        self.assertEqual(answer["usage"]["completion_tokens"], 8)
        status, headers, body = self.gw("/v1/chat/completions", dict(msg, stream=True), key)
        self.assertEqual(status, 200)
        self.assertIn("text/event-stream", headers.get("Content-Type", ""))
        self.assertTrue(body.rstrip().endswith("data: [DONE]"), body[-200:])
        self.assertGreater(body.count("data: {"), 3)
        status, headers, body = self.gw("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 4}, key)
        self.assertEqual(status, 200, body)
        status, headers, body = self.gw("/v1/chat/completions", dict(msg, model="ghost"), key)
        self.assertEqual(status, 503, body)
        err = json.loads(body)["error"]
        self.assertIn("model 'ghost' has 0/1 replicas running", err["message"])
        self.assertEqual(set(err), {"message", "type", "code", "param"})
        status, headers, body = self.gw("/v1/chat/completions", dict(msg, model="nope"), key)
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"]["code"], "model_not_found")
        status, headers, body = self.gw("/v1/chat/completions", {"messages": []}, key)
        self.assertEqual(status, 400)
        self.assertIn("you must provide a model parameter", json.loads(body)["error"]["message"])
        status, headers, body = self.gw("/v1/chat/completions", msg, "sk-corral-nope")
        self.assertEqual(status, 401)
        # requests per minute: the third request within the minute is refused, with when to retry
        limited = self.cli("keys", "create", "slow", "--rpm", "2").stdout.strip()
        for _ in range(2):
            self.assertEqual(self.gw("/v1/chat/completions", msg, limited)[0], 200)
        status, headers, body = self.gw("/v1/chat/completions", msg, limited)
        self.assertEqual(status, 429, body)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], "rate_limit_exceeded")
        self.assertIn("2 requests per minute", err["message"])
        self.assertTrue(0 < int(headers["Retry-After"]) <= 60)
        self.assertEqual(self.gw("/v1/chat/completions", msg, key)[0], 200, "other keys are not limited")
        # corral chat streams the answer to the terminal
        r = self.cli("chat", "tiny", "--key", key, "-m", "hello", "--max-tokens", "8")
        self.assertGreater(len(r.stdout.strip()), 0, r.stdout)
        r = self.cli("chat", "tiny", "--key", key, "--max-tokens", "4", stdin="one\ntwo\n")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(len([l for l in r.stdout.split("\n") if l.strip()]), 2, "one answer per line read")
        r = self.cli("chat", "nope", "--key", key, "-m", "hello", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("does not exist or you do not have access", r.stderr)
        r = self.cli("chat", "tiny", "--key", "sk-corral-bad", "-m", "hello", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("Incorrect API key", r.stderr)
