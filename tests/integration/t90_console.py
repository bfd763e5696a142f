"""Tier 90: the web console in a real browser. Debian's chromium, driven by
playwright-core (npm, pinned, installed once into a cache outside the
repository), logs in, sees the CPU-only worker, deploys the test model
through the form after its dry run (and sees why another cannot be placed),
watches it run, tails its log, chats in the playground and sees the answer
stream in, embeds, creates a key and a user, sees usage, the audit log and
live events, fits a phone's width, and changes the password. Screenshots of
each page are kept in build/test-artifacts/console/. Without chromium or npm
the test is skipped, which fails it under CI=true."""
import json
import os
import shutil
import subprocess
import unittest
import urllib.request

from harness import ROOT, npm_package
from t50_engines import EngineCase, LLAMA_BIN

PLAYWRIGHT = "1.65.1"
SCRIPT = os.path.join(ROOT, "tests", "integration", "browser", "console_check.cjs")
SHOTS = os.path.join(ROOT, "build", "test-artifacts", "console")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def install_playwright():
    """playwright-core's node_modules folder, or None with the reason."""
    return npm_package("playwright-core", PLAYWRIGHT)


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
@unittest.skipUnless(os.access(CHROMIUM, os.X_OK), "chromium not installed (scripts/deps.sh installs Debian's)")
class Console(EngineCase):
    def test_a_user_runs_the_cluster_from_the_browser(self):
        mods, why = install_playwright()
        if not mods:
            self.skipTest(why)
        self.cluster(("w1", None))
        path = self.model()
        # an embeddings model for the playground's second tab, deployed the CLI's way
        self.api("POST", "/api/models", {"name": "embed", "path": path, "ctx": 512, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1", "--embeddings", "--pooling", "mean"]}, expect=201)
        self.wait_running("embed")
        shutil.rmtree(SHOTS, ignore_errors=True)
        os.makedirs(SHOTS)
        env = dict(self.env, NODE_PATH=mods, BASE_URL=self.url, ADMIN_PASSWORD=self.admin_password(),
                   MODEL_PATH=path, SHOTS_DIR=SHOTS, CHROMIUM=CHROMIUM, HOME=self.tmp)
        r = subprocess.run(["node", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        out = json.loads(r.stdout.strip().split("\n")[-1])
        self.assertNotIn("error", out, "%s\n%s" % (out.get("error"), out.get("failure_text", "")))
        self.assertEqual(out["page_errors"], [], "no script errors, no CSP violations")
        for page, missing in out["labels_missing"].items():
            self.assertEqual(missing, [], "controls without a label on %s" % page)
        self.assertIn("wrong username or password", out["bad_login"])
        self.assertIn("ready", out["pages"]["overview"])
        self.assertIn("CPU only", out["pages"]["overview"])
        self.assertIn("1/1 workers ready", out["health"].replace("\n", " "))
        # the refusal carries its reason and fix, and nothing can be deployed from it
        self.assertIn("Cannot place:", out["refused"])
        self.assertIn("No such file or directory", out["refused"])
        self.assertFalse(out["refused_deploy_enabled"])
        self.assertIn("Placement:", out["plan"])
        self.assertIn("1/1 running", out["pages"]["model"])
        self.assertTrue(out["log_has_server"])
        self.assertIn("Rolling update: 1 instance(s) being replaced", out["update"])
        # a streamed answer: the text arrived in several updates, and as many tokens as asked
        self.assertGreater(len(out["answer"].strip()), 0)
        self.assertGreater(out["answer_updates"], 2, "the answer streamed in, piece by piece")
        self.assertIn("finish: length", out["chat_meta"])
        self.assertIn("12 completion tokens", out["chat_meta"])
        self.assertIn("64 dimensions", out["embedding"])
        self.assertTrue(out["new_key"].startswith("sk-corral_"))
        self.assertIn("tiny", out["pages"]["usage"])
        self.assertIn("model.create", out["pages"]["audit"])
        self.assertIn("model 'tiny' changed by admin", out["pages"]["events"])
        self.assertLessEqual(out["phone_overflow"], 0, "the overview fits a phone's width")
        self.assertLessEqual(out["phone_overflow_playground"], 0, "the playground fits a phone's width")
        self.assertTrue(out["relogin"])
        # what the browser did is what the server has (the password change ended the test's session too)
        self.login("a-new-admin-password")
        self.assertEqual(self.instance("tiny")["state"], "running")
        self.assertIn("alice", [u["username"] for u in self.api("GET", "/api/users")["users"]])
        self.assertIn("web", [k["name"] for k in self.api("GET", "/api/keys")["keys"]])
        for name in ("login", "overview", "deploy-refused", "deploy-plan", "model", "instance", "playground",
                     "playground-embeddings", "keys", "usage", "users", "audit", "events", "overview-phone"):
            self.assertGreater(os.path.getsize(os.path.join(SHOTS, name + ".png")), 1000, name)

    def test_the_console_is_served_from_the_binary_with_a_strict_policy(self):
        self.start_server()
        with urllib.request.urlopen(self.url + "/", timeout=10) as r:
            html = r.read().decode()
            csp = r.headers["Content-Security-Policy"]
            etag = r.headers["ETag"]
        self.assertIn('<script src="/console/app.js"', html)
        self.assertIn("script-src 'self'", csp)
        self.assertNotIn("unsafe-inline", csp)
        req = urllib.request.Request(self.url + "/", headers={"If-None-Match": etag})
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(ctx.exception.code, 304)
        total = 0
        for name in ("app.js", "app.css"):
            with urllib.request.urlopen(self.url + "/console/" + name, timeout=10) as r:
                total += len(r.read())
        self.assertLess(total + len(html), 300 * 1024, "first load under 300 KB")
        status, body = self.request("GET", "/console/nope.js")
        self.assert_error(status, body, 404, "open the console at /")
        # no other origin anywhere in the assets: no CDN, no external font
        for name in ("app.js", "app.css"):
            with urllib.request.urlopen(self.url + "/console/" + name, timeout=10) as r:
                text = r.read().decode()
            self.assertNotRegex(text, r"https?://(?!…)[a-z]", name)


if __name__ == "__main__":
    unittest.main()
