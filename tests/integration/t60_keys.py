"""Tier 60: API keys for the OpenAI-compatible endpoint: shown once, stored as
hashes, limited to models, revoked; /v1/models in OpenAI's shape; errors for
wrong or revoked keys and hidden models in OpenAI's error shape."""
import json
import os

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
        for name in ("alpha", "beta"):  # no worker: neither can run (t52 lists models that run)
            self.api("POST", "/api/models", {"name": name, "path": "/models/%s.gguf" % name}, expect=201)
        r = self.cli("keys", "create", "ci-bot", "--models", "alpha", "--rpm", "600")
        key = r.stdout.strip()
        self.assertTrue(key.startswith("sk-corral"), key)
        self.assertIn("shown only now", r.stderr)
        listed = self.cli("keys").stdout
        self.assertIn("ci-bot", listed)
        self.assertIn(key[:14], listed, "the prefix identifies it")
        self.assertNotIn(key, listed, "the key itself is never shown again")
        row = [l for l in listed.splitlines() if "ci-bot" in l][0]
        self.assertIn("alpha", row)
        self.assertNotIn('["alpha"]', row, "models as text, not JSON")
        self.assertIn("600 rpm", row)
        stored = self.store_rows("SELECT hash, prefix, models, rpm FROM api_keys")
        self.assertEqual(len(stored), 1)
        self.assertNotIn(key, stored[0][0], "only a hash is stored")
        self.assertEqual((stored[0][2], stored[0][3]), ('["alpha"]', "600"))

        status, body = self.request("GET", "/v1/models", token=key)
        self.assertEqual(status, 200)
        models = body
        self.assertEqual(models["object"], "list")
        self.assertEqual(models["data"], [], "a model that cannot run is not listed")
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
        status, body = self.request("GET", "/v1/models/beta", token=all_key)
        self.assertEqual(body["id"], "beta")
        self.assertEqual(set(body), {"id", "object", "created", "owned_by"})
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

    def test_users_manage_only_their_own_keys(self):
        self.start_server()
        self.login()
        admin = self.token
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-secret-1"}, expect=201)
        status, body = self.request("POST", "/api/users", {"username": "bob", "password": "another-1"}, token=admin)
        self.assert_error(status, body, 409, "already exists")
        status, body = self.request("POST", "/api/users", {"username": "Eve!", "password": "x"}, token=admin)
        self.assert_error(status, body, 400, "username")
        status, body = self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-secret-1"})
        self.assertEqual(status, 200, body)
        bob = body["token"]
        status, body = self.request("GET", "/api/users", token=bob)
        self.assert_error(status, body, 403, "not an admin")
        status, body = self.request("POST", "/api/keys", {"name": "bobs"}, token=bob)
        self.assertEqual(status, 201, body)
        bob_key = body["key"]
        status, body = self.request("POST", "/api/keys", {"name": "admins"}, token=admin)
        self.assertEqual(status, 201)
        admin_key_id = body["id"]
        status, body = self.request("GET", "/api/keys", token=bob)
        self.assertEqual([k["name"] for k in body["keys"]], ["bobs"], "bob sees only his keys")
        status, body = self.request("GET", "/api/keys", token=admin)
        self.assertEqual(sorted(k["name"] for k in body["keys"]), ["admins", "bobs"])
        status, body = self.request("DELETE", "/api/keys/" + admin_key_id, token=bob)
        self.assert_error(status, body, 404, "no such key")
        # a name is looked up among the caller's own keys only: the admin
        # revoking "bobs" by name must not revoke bob's key of that name
        status, body = self.request("POST", "/api/keys", {"name": "bobs"}, token=admin)
        self.assertEqual(status, 201, body)
        admins_bobs = body["id"]
        status, body = self.request("DELETE", "/api/keys/bobs", token=admin)
        self.assertEqual((status, body["deleted"]), (200, admins_bobs), body)
        self.assertEqual(self.request("GET", "/v1/models", token=bob_key)[0], 200, "bob's key still works")
        status, body = self.request("POST", "/api/keys", {"name": "twin"}, token=bob)
        twin1 = body["id"]
        status, body = self.request("POST", "/api/keys", {"name": "twin"}, token=bob)
        status, body = self.request("DELETE", "/api/keys/twin", token=bob)
        self.assert_error(status, body, 409, "several of your keys have that name", "by its id")
        self.assertEqual(self.request("DELETE", "/api/keys/" + twin1, token=bob)[0], 200, "by id it works")
        status, body = self.request("POST", "/api/keys", {"name": "x", "owner": "admin"}, token=bob)
        self.assert_error(status, body, 403, "only admins")
        status, body = self.request("DELETE", "/api/users/admin", token=admin)
        self.assert_error(status, body, 409, "cannot delete yourself")
        self.assertEqual(self.request("GET", "/v1/models", token=bob_key)[0], 200)
        self.api("DELETE", "/api/users/bob")
        self.assertEqual(self.request("GET", "/v1/models", token=bob_key)[0], 401, "a deleted user's keys stop working")
        self.assertEqual(self.request("GET", "/api/auth/me", token=bob)[0], 401, "and their sessions")
        self.assertEqual([u["username"] for u in self.api("GET", "/api/users")["users"]], ["admin"])
        self.env["CORRAL_SERVER_URL"] = self.url
        self.env["CORRAL_API_TOKEN"] = self.token
        self.assertIn("created user 'carol' (user)",
                      self.cli("users", "create", "carol", "--password-stdin", stdin="carol-secret\n").stdout)
        users = self.cli("users").stdout.splitlines()
        self.assertEqual(users[0].split(), ["USERNAME", "ROLE", "LIMITS"], "a header on every table")
        self.assertEqual([l.split()[0] for l in users[1:]], ["admin", "carol"], "rows by name")
        self.assertIn("deleted user 'carol'", self.cli("users", "rm", "carol").stdout)
