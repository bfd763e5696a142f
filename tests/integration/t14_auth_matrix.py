"""Tier 14: every route of the server against every kind of credential. The
expected answer of each pair is written below as a table: who may call a
route is part of its contract, and a route that lets the wrong credential
through, or locks the right one out, fails here."""
import hashlib
import http.client
import json
import os
import sqlite3
import time

from harness import ClusterCase

CREDS = ("none", "garbage", "expired", "revoked_key", "user", "admin", "api_key", "cluster", "worker")

# "ok": the route ran (any answer but 401 and 403: 200, or 400/404 for the
# deliberately empty bodies and unknown names below).
EXPECT = {
    #              none garbage expired revoked user  admin api_key cluster worker
    "open":       ("ok", "ok",  "ok",   "ok",   "ok", "ok", "ok",   "ok",   "ok"),
    "session":    (401,  401,   401,    401,    "ok", "ok", 401,    401,    401),
    "admin":      (401,  401,   401,    401,    403,  "ok", 401,    401,    401),
    "worker":     (401,  401,   401,    401,    401,  401,  401,    401,    "ok"),
    "api_key":    (401,  401,   401,    401,    401,  401,  "ok",   401,    401),
    "register":   (401,  401,   401,    401,    401,  401,  401,    "ok",   401),
}

W = "{worker}"  # the id of the worker the test registered

ROUTES = [  # method, path, body, who may call it
    ("GET", "/healthz", None, "open"),
    ("POST", "/api/auth/login", "ADMIN_LOGIN", "open"),
    ("GET", "/api/auth/me", None, "session"),
    ("GET", "/api/auth/sessions", None, "session"),
    ("DELETE", "/api/auth/sessions/0000000000000000", None, "session"),
    ("POST", "/api/auth/password", {}, "session"),
    ("POST", "/api/auth/logout", None, "session"),
    ("GET", "/api/health", None, "session"),
    ("GET", "/api/workers", None, "session"),
    ("GET", "/api/workers/nope", None, "session"),
    ("GET", "/api/models", None, "session"),
    ("GET", "/api/models/nope", None, "session"),
    ("GET", "/api/instances", None, "session"),
    ("GET", "/api/instances/nope/logs", None, "session"),
    ("GET", "/api/keys", None, "session"),
    ("POST", "/api/keys", {}, "session"),
    ("DELETE", "/api/keys/nope", None, "session"),
    ("GET", "/api/usage", None, "session"),
    ("GET", "/api/events", None, "session"),
    ("GET", "/api/events?follow=1", None, "session"),
    ("GET", "/api/files", None, "session"),
    ("GET", "/metrics", None, "open"),
    ("GET", "/", None, "open"),
    ("GET", "/console/app.js", None, "open"),
    ("POST", "/api/models", {}, "admin"),
    ("POST", "/api/models/plan", {}, "admin"),
    ("PATCH", "/api/models/nope", {}, "admin"),
    ("DELETE", "/api/models/nope", None, "admin"),
    ("GET", "/api/users", None, "admin"),
    ("POST", "/api/users", {}, "admin"),
    ("DELETE", "/api/users/nobody", None, "admin"),
    ("POST", "/api/users/nobody/password", {}, "admin"),
    ("DELETE", "/api/workers/nope", None, "admin"),
    ("POST", "/api/workers/nope/cordon", None, "admin"),
    ("POST", "/api/workers/nope/uncordon", None, "admin"),
    ("POST", "/api/workers/nope/drain", None, "admin"),
    ("GET", "/api/audit", None, "admin"),
    ("DELETE", "/api/files?file=nope", None, "admin"),
    ("POST", "/api/workers/register", {}, "register"),
    ("POST", "/api/workers/%s/status" % W, {}, "worker"),
    ("POST", "/api/workers/%s/instances" % W, {}, "worker"),
    ("POST", "/api/workers/%s/files" % W, {}, "worker"),
    ("GET", "/api/workers/%s/peers" % W, None, "worker"),
    ("GET", "/api/workers/%s/watch" % W, None, "worker"),
    ("POST", "/v1/chat/completions", {}, "api_key"),
    ("POST", "/v1/completions", {}, "api_key"),
    ("POST", "/v1/embeddings", {}, "api_key"),
    ("POST", "/v1/rerank", {}, "api_key"),
    ("GET", "/v1/models", None, "api_key"),
    ("GET", "/v1/models/nope", None, "api_key"),
    ("POST", "/api/token/rotate", None, "admin"),  # last: it replaces the cluster token
]


class AuthMatrix(ClusterCase):
    def call(self, method, path, body, token):
        """Status and body (None for a stream, which is not read)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = "Bearer " + token
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        r = c.getresponse()
        streamed = "event-stream" in (r.getheader("Content-Type") or "")
        text = None if streamed else r.read().decode(errors="replace")
        c.close()
        return r.status, text

    def test_every_route_against_every_credential(self):
        self.start_server()
        admin_pw = self.admin_password()
        self.login()
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-password-1"}, expect=201)
        # a session that will have expired: put in the store while the server is down
        expired = "crs_expired-session-of-the-matrix-test-000000"
        self.procs[0].stop()
        db = sqlite3.connect(os.path.join(self.data_dir, "corral.db"))
        now = int(time.time() * 1000)
        db.execute("INSERT INTO sessions (token_hash, user_id, created_ms, expires_ms) VALUES (?, 1, ?, ?)",
                   (hashlib.blake2b(expired.encode(), digest_size=32).hexdigest(), now, now + 8000))
        db.commit()
        db.close()
        self.start_server(name="server2", data_dir=self.data_dir)
        self.login()
        status, bob = self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-password-1"})
        key = self.request("POST", "/api/keys", {"name": "k"}, token=bob["token"])[1]
        revoked = self.request("POST", "/api/keys", {"name": "gone"}, token=bob["token"])[1]
        self.assertEqual(self.request("DELETE", "/api/keys/" + revoked["id"], token=bob["token"])[0], 200)
        status, reg = self.request("POST", "/api/workers/register", {"name": "matrix", "port": 1},
                                   token=self.cluster_token())
        self.assertEqual(status, 201, reg)
        creds = {"none": None, "garbage": "crs_garbage", "expired": expired, "revoked_key": revoked["key"],
                 "user": bob["token"], "admin": self.token, "api_key": key["key"], "cluster": self.cluster_token(),
                 "worker": reg["secret"]}
        self.assertEqual(self.call("GET", "/api/auth/me", None, expired)[0], 200, "loaded before it expires")
        while time.time() * 1000 < now + 8000:
            time.sleep(0.1)
        wrong = []
        for method, path, body, who in ROUTES:
            path = path.replace(W, reg["id"])
            if body == "ADMIN_LOGIN":
                body = {"username": "admin", "password": admin_pw}
            for cred, want in zip(CREDS, EXPECT[who]):
                token = creds[cred]
                if path == "/api/auth/logout" and cred in ("user", "admin"):  # it ends the session it is sent with
                    token = self.request("POST", "/api/auth/login", {"username": "bob" if cred == "user" else "admin",
                                         "password": "bob-password-1" if cred == "user" else admin_pw})[1]["token"]
                status, text = self.call(method, path, body, token)
                ok = status not in (401, 403) if want == "ok" else status == want
                if not ok:
                    wrong.append("%s %s with %s: %d, expected %s (%s)" % (method, path, cred, status, want,
                                                                         (text or "")[:120]))
                if status in (401, 403):  # a refusal says why, as JSON: ours with a fix, OpenAI's under /v1
                    err = json.loads(text)["error"]
                    if path.startswith("/v1/"):
                        self.assertEqual((err["type"], err["code"]), ("invalid_request_error", "invalid_api_key"))
                    else:
                        self.assertTrue(err["message"] and err["fix"], (method, path, cred, err))
        self.assertEqual(wrong, [], "\n".join(wrong))
        # the expired session said so
        status, text = self.call("GET", "/api/auth/me", None, expired)
        self.assertIn("session expired", text)
