"""Tier 68: the official OpenAI Node SDK (npm package `openai`, pinned),
unchanged, against the gateway with real llama-server instances: list
models, chat, streamed chat, embeddings, and its error classes for 401, 404
and 429. The package is installed once into a cache outside the repository;
without npm access the test is skipped, unless CORRAL_REQUIRE_SDK=1 (CI)."""
import json
import os
import subprocess
import unittest

from harness import ROOT, npm_package
from t50_engines import EngineCase, LLAMA_BIN

OPENAI_VERSION = "4.95.0"
SCRIPT = os.path.join(ROOT, "tests", "integration", "sdk", "openai_check.cjs")


def install_sdk():
    """The SDK's node_modules folder, or None with the reason."""
    return npm_package("openai", OPENAI_VERSION)


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class OpenAISdk(EngineCase):
    def test_the_official_node_sdk_works_unchanged(self):
        mods, why = install_sdk()
        if not mods:
            if os.environ.get("CORRAL_REQUIRE_SDK") == "1":
                self.fail(why)
            self.skipTest(why)
        self.cluster(("w1", None))
        self.deploy_chat_and_embed()
        key = self.cli("keys", "create", "sdk", "--models", "tiny,embed").stdout.strip()
        limited = self.cli("keys", "create", "limited", "--rpm", "1").stdout.strip()
        self.cli("chat", "tiny", "--key", limited, "-m", "hi", "--max-tokens", "1")  # uses up the minute
        env = dict(os.environ, NODE_PATH=mods, OPENAI_BASE_URL=self.url + "/v1", OPENAI_API_KEY=key,
                   LIMITED_KEY=limited, CHAT_MODEL="tiny", EMBED_MODEL="embed")
        r = subprocess.run(["node", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(sorted(out["models"]), ["embed", "tiny"])
        self.assertEqual(out["chat"]["object"], "chat.completion")
        self.assertEqual(out["chat"]["usage"]["completion_tokens"], 5)
        self.assertEqual(out["stream"]["finish"], "length")
        self.assertGreater(len(out["stream"]["text"]), 0)
        self.assertEqual(out["embeddings"], {"n": 2, "dims": 64})
        self.assertEqual((out["bad_key"]["name"], out["bad_key"]["status"], out["bad_key"]["code"]),
                         ("AuthenticationError", 401, "invalid_api_key"))
        self.assertEqual((out["unknown_model"]["name"], out["unknown_model"]["status"],
                          out["unknown_model"]["code"]), ("NotFoundError", 404, "model_not_found"))
        self.assertEqual((out["limited"]["name"], out["limited"]["status"], out["limited"]["code"]),
                         ("RateLimitError", 429, "rate_limit_exceeded"))
        self.assertIn("1 requests per minute", out["limited"]["message"])


if __name__ == "__main__":
    unittest.main()
