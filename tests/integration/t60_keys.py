"""Tier 60: API keys for the OpenAI-compatible endpoint: shown once, stored as
hashes, limited to models, revoked; /v1/models in OpenAI's shape; errors for
wrong or revoked keys and hidden models in OpenAI's error shape."""
import json
import os
import sqlite3

from harness import ClusterCase


class Keys(ClusterCase):
    def openai_error(self, status, body, want_status, code):
        self.assertEqual(status, want_status, body)
        err = (body if isinstance(body, dict) else json.loads(body))["error"]
        self.assertEqual(set(err), {"message", "type", "code", "param"}, err)
        self.assertEqual(err["code"], code)
        self.assertIsNone(err["param"])
        return err

    def test_keys_gate_the_v1_endpoint(self):
        self.start_server()
        self.login()
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        for name in ("alpha", "beta"):  # models need no running instance to be listed
            self.api("POST", "/api/models", {"name": name, "path": "/models/%s.gguf" % name}, expect=201)
        r = self.cli("keys", "create", "ci-bot", "--models", "alpha", "--rpm", "600")
        key = r.stdout.strip()
        self.assertTrue(key.startswith("sk-corral"), key)
        self.assertIn("shown only now", r.stderr)
        listed = self.cli("keys").stdout
        self.assertIn("ci-bot", listed)
        self.assertIn(key[:14], listed, "the prefix identifies it")
        self.assertNotIn(key, listed, "the key itself is never shown again")
        with sqlite3.connect(os.path.join(self.data_dir, "corral.db")) as db:
            stored = db.execute("SELECT hash, prefix, models, rpm FROM api_keys").fetchall()
        self.assertEqual(len(stored), 1)
        self.assertNotIn(key, stored[0][0], "only a hash is stored")
        self.assertEqual((stored[0][2], stored[0][3]), ('["alpha"]', 600))

        status, body = self.request("GET", "/v1/models", token=key)
        self.assertEqual(status, 200)
        models = body
        self.assertEqual(models["object"], "list")
        self.assertEqual([m["id"] for m in models["data"]], ["alpha"], "only the models the key may use")
        self.assertEqual(set(models["data"][0]), {"id", "object", "created", "owned_by"})
        status, body = self.request("GET", "/v1/models/beta", token=key)
        err = self.openai_error(status, body, 404, "model_not_found")
        self.assertIn("does not exist or you do not have access", err["message"])
        status, body = self.request("GET", "/v1/models/alpha", token=key)
        self.assertEqual(body["id"], "alpha")

        status, body = self.request("GET", "/v1/models", token="sk-corral-wrong")
        self.openai_error(status, body, 401, "invalid_api_key")
        status, body = self.request("GET", "/v1/models")
        self.openai_error(status, body, 401, "invalid_api_key")
        status, body = self.request("GET", "/v1/models", token=self.token)
        self.openai_error(status, body, 401, "invalid_api_key")  # a session is not an API key

        all_key = self.cli("keys", "create", "all-models").stdout.strip()
        status, body = self.request("GET", "/v1/models", token=all_key)
        self.assertEqual(sorted(m["id"] for m in body["data"]), ["alpha", "beta"])
        self.cli("keys", "rm", "ci-bot")
        status, body = self.request("GET", "/v1/models", token=key)
        self.openai_error(status, body, 401, "invalid_api_key")

        # keys survive a restart (as hashes)
        [p for p in self.procs if p.name == "server"][0].stop()
        self.start_server(name="server2", port=self.port, data_dir=self.data_dir)
        status, body = self.request("GET", "/v1/models", token=all_key)
        self.assertEqual(status, 200)

    def test_key_requests_are_validated(self):
        self.start_server()
        self.login()
        for body, needle in (({}, "field 'name'"), ({"name": "x", "models": "alpha"}, "models"),
                             ({"name": "x", "rpm": -1}, "rpm"), ({"name": "x", "owner": "nobody"}, "no such user")):
            status, ans = self.request("POST", "/api/keys", body, token=self.token)
            self.assertIn(status, (400, 404), ans)
            self.assertIn(needle, json.dumps(ans))
        status, ans = self.request("DELETE", "/api/keys/nope", token=self.token)
        self.assert_error(status, ans, 404, "no such key")
