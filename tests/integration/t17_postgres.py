"""Tier 17: the server on PostgreSQL (--store), each class with a private
PostgreSQL cluster (scripts/pg-test.sh) and each test a database of its own:
state that lives in PostgreSQL, not the data directory; a newer schema and
an unreachable server refused at start with the fix; PostgreSQL stopped under
a running server (reads go on, writes get a clear 503, and everything works
again once it is back, usage included); `corral migrate` from a SQLite data
directory; and tiers 60 (keys) and 65 (the gateway) again on PostgreSQL."""
import json
import os
import shutil
import signal
import subprocess
import threading
import unittest
import urllib.error
import urllib.request

import t60_keys
import t65_gateway
import time

from harness import CORRAL, ROOT, ClusterCase, free_port
from t50_engines import EngineCase, LLAMA_BIN, pid_alive, port_range


class Postgres(ClusterCase):
    postgres = True

    def server_exits(self, *extra):
        """Run a server expected to refuse to start: its exit status and output."""
        data = [] if "--data-dir" in extra else ["--data-dir", os.path.join(self.tmp, "refused")]
        r = subprocess.run([CORRAL, "server", "--host", "127.0.0.1", "--port", str(free_port()), "--disable-worker"]
                           + data + list(extra),
                           capture_output=True, text=True, env=self.env, timeout=60)
        return r.returncode, r.stdout + r.stderr

    def test_state_lives_in_postgresql_not_the_data_directory(self):
        self.start_server()
        self.login()
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-password-1", "role": "user"}, expect=201)
        key = self.api("POST", "/api/keys", {"name": "k1"}, expect=201)
        self.api("POST", "/api/models", {"name": "m", "path": "/models/m.gguf"}, expect=201)
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "corral.db")), "no SQLite store beside it")
        self.assertEqual(self.psql(self.store, "SELECT name FROM models"), "m")
        self.assertEqual(self.psql(self.store, "SELECT count(*) FROM users"), "2")
        self.assertEqual(self.psql(self.store, "SELECT max(version) FROM corral_schema"), "11")
        # another server on the same database, with another data directory, has all of it; it needs the
        # cluster's registration token (a new one would lock the workers out)
        with open(os.path.join(self.data_dir, "initial_admin_password")) as f:
            password = f.read().strip()
        first = self.data_dir
        self.procs[-1].stop()
        second = os.path.join(self.tmp, "second")
        rc, out = self.server_exits("--store", self.store, "--data-dir", second)
        self.assertNotEqual(rc, 0)
        self.assertIn("the store belongs to a cluster whose registration token this data directory lacks", out)
        self.assertIn("copy DATA_DIR/token from a server of the cluster", out)
        os.makedirs(second, mode=0o700, exist_ok=True)
        shutil.copy(os.path.join(first, "token"), os.path.join(second, "token"))
        self.start_server(data_dir=second)
        self.login(password)
        self.assertEqual([m["name"] for m in self.api("GET", "/api/models")["models"]], ["m"])
        self.assertIn("bob", [u["username"] for u in self.api("GET", "/api/users")["users"]])
        self.assertIn(key["id"], [k["id"] for k in self.api("GET", "/api/keys")["keys"]])

    def test_a_newer_schema_and_an_unreachable_server_are_refused_with_the_fix(self):
        self.start_server()
        self.procs[-1].stop()
        self.psql(self.store, "UPDATE corral_schema SET version = 99")
        rc, out = self.server_exits("--store", self.store)
        self.assertNotEqual(rc, 0)
        self.assertIn("the store has schema version 99 but this corral knows only up to 11", out)
        self.assertIn("newer corral binary", out)
        rc, out = self.server_exits("--store", "postgresql://corral:s3cret@127.0.0.1:1/corral")
        self.assertNotEqual(rc, 0)
        self.assertIn("cannot connect to PostgreSQL at corral@127.0.0.1:1/corral", out)
        self.assertIn("check that PostgreSQL runs", out)
        self.assertNotIn("s3cret", out, "the password is never printed")
        rc, out = self.server_exits("--store", "mysql://x")
        self.assertEqual(rc, 2)
        self.assertIn("--store takes a PostgreSQL URL", out)

    def test_postgresql_stopped_under_a_running_server(self):
        self.start_server()
        self.login()
        self.api("POST", "/api/models", {"name": "m", "path": "/models/m.gguf"}, expect=201)
        pg = os.path.join(ROOT, "scripts", "pg-test.sh")
        subprocess.run([pg, "down", self.pg_dir], check=True)
        try:
            # what the server knows it still answers; a write says why it cannot be kept
            self.assertEqual([m["name"] for m in self.api("GET", "/api/models")["models"]], ["m"])
            status, body = self.request("POST", "/api/models", {"name": "n", "path": "/models/n.gguf"},
                                        token=self.token)
            self.assertEqual(status, 503, body)
            self.assertIn("PostgreSQL at corral@127.0.0.1", body["error"]["message"])
            self.assertIn("unreachable", body["error"]["message"])
            self.assertIn("check that PostgreSQL runs", body["error"]["fix"])
            self.assertEqual([m["name"] for m in self.api("GET", "/api/models")["models"]], ["m"],
                             "nothing half-made is left")
        finally:
            subprocess.run([pg, "up", self.pg_dir], check=True)
        # back: writes work again on a new connection (reconnections are tried
        # at most every 2 s, so the first seconds may still answer 503)
        self.wait_for(lambda: self.request("POST", "/api/models", {"name": "n", "path": "/models/n.gguf"},
                                           token=self.token)[0] == 201, "a write once PostgreSQL is back")
        self.assertEqual(self.psql(self.store, "SELECT string_agg(name, ',' ORDER BY name) FROM models"), "m,n")


class Migrate(ClusterCase):
    postgres = True

    def test_migrate_moves_a_sqlite_installation_to_postgresql(self):
        url, self.store = self.store, None  # first on SQLite
        self.start_server()
        self.login()
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-password-1", "role": "user"}, expect=201)
        key = self.api("POST", "/api/keys", {"name": "k1"}, expect=201)["key"]
        self.api("POST", "/api/models", {"name": "m", "path": "/models/m.gguf"}, expect=201)
        w = self.start_worker("w1")
        self.wait_state("w1", "ready")
        events = len(self.api("GET", "/api/events?limit=1000")["events"])
        password = open(os.path.join(self.data_dir, "initial_admin_password")).read().strip()
        # copied while the server runs (a snapshot), then the server moves
        r = subprocess.run([CORRAL, "migrate", "--from", "sqlite:" + self.data_dir, "--to", url], capture_output=True,
                           text=True, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("users      2 row(s)", r.stdout)
        self.assertIn("models     1 row(s)", r.stdout)
        w.stop()
        self.procs[0].stop()
        self.store = url
        self.start_server(port=self.port, data_dir=self.data_dir)
        self.login(password)
        self.assertEqual([m["name"] for m in self.api("GET", "/api/models")["models"]], ["m"])
        self.assertEqual(sorted(u["username"] for u in self.api("GET", "/api/users")["users"]), ["admin", "bob"])
        status, _ = self.request("GET", "/v1/models", token=key)
        self.assertEqual(status, 200, "the API key still opens /v1")
        self.assertGreaterEqual(len(self.api("GET", "/api/events?limit=1000")["events"]), events)
        # the worker comes back as itself, with the secret it kept
        self.start_worker("w1")
        self.wait_state("w1", "ready")
        self.assertEqual(list(self.workers()), ["w1"])
        # new rows get new ids past the copied ones
        self.api("POST", "/api/users", {"username": "carol", "password": "carol-password-1", "role": "user"},
                 expect=201)
        # a database that holds a cluster already is refused, and left as it was
        r = subprocess.run([CORRAL, "migrate", "--from", "sqlite:" + self.data_dir, "--to", url], capture_output=True,
                           text=True, env=self.env)
        self.assertEqual(r.returncode, 1)
        self.assertIn("already holds users, models or workers", r.stderr)
        self.assertIn("empty database", r.stderr)
        self.assertEqual(self.psql(url, "SELECT count(*) FROM users"), "3")
        r = subprocess.run([CORRAL, "migrate", "--from", "sqlite:" + self.tmp, "--to", url], capture_output=True,
                           text=True, env=self.env)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no SQLite store at", r.stderr)


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Failover(EngineCase):
    """Two servers on one PostgreSQL: one leads, the other follows and serves
    /v1 and /api from the shared state meanwhile; the follower leads when the
    leader is killed; the worker, given both URLs, reports to the leader;
    its engine is untouched."""
    postgres = True

    def two_servers(self, host_a="127.0.0.1", host_b="127.0.0.1", port=None):
        """Server a (leading) and b (following) on this test's database: (a, b, port_a, port_b). With port,
        both listen on that one port (at two addresses)."""
        a = self.start_server(extra=("--gpu-reserve", "0"), host=host_a, port=port)
        port_a = self.port
        self.login()
        self.env["CORRAL_API_TOKEN"] = self.token
        self.env["CORRAL_SERVER_URL"] = self.url
        port_b = port or free_port()
        b = self.follower("b", port_b, port_a, host_b)
        return a, b, port_a, port_b

    def follower(self, name, port, port_leader, host="127.0.0.1"):
        """Another server on this test's database, following the one on port_leader."""
        data = os.path.join(self.tmp, "server-" + name)
        os.makedirs(data, mode=0o700)
        shutil.copy(os.path.join(self.data_dir, "token"), os.path.join(data, "token"))
        f = self.spawn("server-" + name, ["server", "--host", host, "--port", str(port), "--data-dir", data,
                                          "--store", self.store, "--disable-worker", "--probe-interval", "1",
                                          "--keepalive", "1", "--gpu-reserve", "0"])
        self.wait_for(lambda: "server listening" in f.output(), "server %s listening" % name, proc=f)
        self.assertIn("following as", f.output())
        self.assertIn(":%d" % port_leader, f.output().split("following as", 1)[1])  # the leader, named
        return f

    def deploy_tiny(self):
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 1024, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        return self.leader_report(self.wait_running("tiny"))["pid"]

    def wait_engine_reported(self):
        return self.wait_for(lambda: (lambda i: i and i["state"] == "running" and self.workers()["w1"]["state"] == "ready"
                                      and i["placement"]["leader"] in i.get("members", {}) and i)(self.instance("tiny")),
                             "w1 reporting its engine to the new leader", timeout=30)

    def on(self, url, method, path, body=None, token=None):
        """(status, JSON answer) of one call to the server at url."""
        req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + (token or self.token),
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def test_the_follower_serves_v1_and_api_meanwhile(self):
        a, b, port_a, port_b = self.two_servers()
        url_a, url_b = "http://127.0.0.1:%d" % port_a, "http://127.0.0.1:%d" % port_b
        self.assertFalse(self.on(url_b, "GET", "/healthz")[1]["leading"])
        self.assertTrue(self.on(url_a, "GET", "/healthz")[1]["leading"])
        self.url = url_b + "," + url_a  # the worker tries the follower first, and moves on to the leader
        self.worker("w1")
        self.url = url_a
        self.wait_state("w1", "ready")
        # an event stream on the follower gets the leader's events
        seen = []
        stream = urllib.request.urlopen(urllib.request.Request(url_b + "/api/events?follow=1", headers={
            "Authorization": "Bearer " + self.token}), timeout=30)
        self.addCleanup(stream.close)

        def read_events():
            for line in stream:
                if line.startswith(b"event: "):
                    seen.append(line[7:].decode().strip())
                    if seen[-1] == "model.deployed":
                        return

        reader = threading.Thread(target=read_events, daemon=True)
        reader.start()
        self.deploy_tiny()
        reader.join(20)
        self.assertIn("model.deployed", seen)
        # the follower's view: the model, its running instance, the worker
        self.wait_for(lambda: [i["state"] for i in self.on(url_b, "GET", "/api/instances")[1].get("instances", [])]
                      == ["running"], "the follower seeing the instance running")
        self.assertEqual([m["name"] for m in self.on(url_b, "GET", "/api/models")[1]["models"]], ["tiny"])
        self.wait_for(lambda: [w["state"] for w in self.on(url_b, "GET", "/api/workers")[1]["workers"]] == ["ready"],
                      "the follower seeing w1 ready")
        # what the leader's scheduler and workers found, shown by the follower too: the file's format, and why a
        # model is short of replicas, with each worker's reason
        self.wait_for(lambda: self.on(url_b, "GET", "/api/models/tiny")[1]["format"] == "gguf", "tiny's format on b")
        st, _ = self.on(url_b, "POST", "/api/models", {"name": "nowhere", "path": self.model("n.gguf"),
                                                        "allow_cpu_offload": True, "selector": {"zone": "mars"}})
        self.assertEqual(st, 201)
        nowhere = self.wait_for(lambda: (lambda m: m["status"] and m)(self.on(url_b, "GET", "/api/models/nowhere")[1]),
                                "the follower showing why 'nowhere' is not placed")
        self.assertIn("do not match the selector", nowhere["status"])
        self.assertEqual([(r["worker"], bool(r["fix"])) for r in nowhere["reasons"]], [("w1", True)], nowhere)
        self.assertEqual(nowhere, self.on(url_a, "GET", "/api/models/nowhere")[1])
        self.assertIn("do not match the selector", self.cli("models").stdout)
        self.assertEqual(self.on(url_b, "DELETE", "/api/models/nowhere")[0], 200)
        # accounts on any server: a key made on the follower works on both at once
        st, made = self.on(url_b, "POST", "/api/keys", {"name": "kb"})
        self.assertEqual(st, 201, made)
        key = made["key"]
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        self.url = url_a
        self.assertEqual(self.gw("/v1/chat/completions", msg, key)[0], 200)
        self.url = url_b
        for _ in range(3):
            self.assertEqual(self.gw("/v1/chat/completions", msg, key)[0], 200)
        # a user made on the follower logs in on the leader; the session works on the follower at once;
        # deleted on the leader, the user's session is refused on the follower within a second or so
        st, made_user = self.on(url_b, "POST", "/api/users", {"username": "ann", "password": "correct horse 1234"})
        self.assertEqual(st, 201, made_user)
        st, ann = self.on(url_a, "POST", "/api/auth/login", {"username": "ann", "password": "correct horse 1234"})
        self.assertEqual(st, 200, ann)
        self.assertEqual(self.on(url_b, "GET", "/api/auth/me", token=ann["token"])[1]["username"], "ann")
        self.assertEqual(self.on(url_a, "DELETE", "/api/users/ann")[0], 200)
        self.wait_for(lambda: self.on(url_b, "GET", "/api/auth/me", token=ann["token"])[0] == 401,
                      "the deleted user's session refused on the follower")
        # usage of both servers, summed once
        time.sleep(1.5)  # each server adds its counts 4 times a second
        self.assertEqual(self.on(url_a, "GET", "/api/usage?key=kb")[1]["total"]["requests"], 4)
        self.assertEqual(self.on(url_b, "GET", "/api/usage?key=kb")[1]["total"]["requests"], 4)
        # a model deployed on the follower: the leader places it, and its deletion there stops it
        st, made = self.on(url_b, "POST", "/api/models", {"name": "other", "path": self.model(), "ctx": 1024,
                                                            "allow_cpu_offload": True, "engine_args": ["-t", "1"]})
        self.assertEqual(st, 201, made)
        self.url = url_a
        other = self.wait_running("other")
        pid = self.leader_report(other)["pid"]
        self.url = url_b
        self.wait_for(lambda: self.gw("/v1/chat/completions", dict(msg, model="other"), key)[0] == 200,
                      "the follower serving the model deployed on it")
        self.assertEqual(self.on(url_b, "DELETE", "/api/models/other")[0], 200)
        self.wait_for(lambda: not pid_alive(pid), "the engine of the model deleted on the follower stopped")
        self.assertEqual([m["name"] for m in self.on(url_a, "GET", "/api/models")[1]["models"]], ["tiny"])
        # only the leader changes workers: the follower says which server leads
        st, err = self.on(url_b, "POST", "/api/workers/w1/cordon")
        self.assertEqual(st, 503, err)
        self.assertEqual(err["error"]["code"], "not_leader")
        self.assertIn(":%d" % port_a, err["error"]["message"])
        self.assertIn("--server-url", err["error"]["fix"])
        # the CLI given the follower first moves on to the leader for a change
        self.env["CORRAL_SERVER_URL"] = url_b + "," + url_a
        r = self.cli("workers", "cordon", "w1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(self.on(url_a, "GET", "/api/workers/w1")[1]["cordoned"])
        self.assertEqual(self.cli("workers", "uncordon", "w1").returncode, 0)
        # a key revoked on the leader stops working on the follower within a second or so
        st, made = self.on(url_a, "POST", "/api/keys", {"name": "ka"})
        self.assertEqual(self.gw("/v1/chat/completions", msg, made["key"])[0], 200)  # made on a, used on b
        self.assertEqual(self.on(url_a, "DELETE", "/api/keys/ka")[0], 200)
        self.wait_for(lambda: self.gw("/v1/chat/completions", msg, made["key"])[0] == 401, "the revoked key refused on b")


    def test_a_leader_whose_lock_went_to_a_follower_exits_to_follow(self):
        a, b, port_a, port_b = self.two_servers()
        url_b = "http://127.0.0.1:%d" % port_b
        # a's lock connection ends (as when its network to PostgreSQL breaks), a itself lives on
        self.psql(self.store, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name "
                              "LIKE 'corral-server %%:%d'" % port_a)
        self.wait_for(lambda: self.on(url_b, "GET", "/healthz")[1].get("leading"), "b leading", proc=b)
        self.wait_for(lambda: not a.alive(), "a exiting", timeout=30)
        self.assertEqual(a.popen.returncode, 75, a.output())
        self.assertIn("lost the leader lock", a.output())
        self.assertIn("exiting so that a restart loads the current state, as a follower", a.output())
        self.assertTrue(self.on(url_b, "GET", "/healthz")[1]["leading"])

    def test_a_worker_that_knows_only_the_follower_reports_through_it(self):
        """The follower takes the worker's registration, reports and watch stream: the reports reach the leader
        as mail in the store, and the leader's instances reach the worker through the follower."""
        a, b, port_a, port_b = self.two_servers()
        url_a, url_b = "http://127.0.0.1:%d" % port_a, "http://127.0.0.1:%d" % port_b
        self.url = url_b
        w1 = self.worker("w1")
        out = lambda: w1.output()[-3000:]
        self.url = url_a
        self.wait_state("w1", "ready", show=out)  # on the leader, from what the follower took
        self.assertIn("registered with %s as worker 'w1'" % url_b, w1.output())
        self.assertNotIn("not_leader", w1.output())
        seen = self.on(url_a, "GET", "/api/workers/w1")[1]
        self.assertEqual(seen["state"], "ready")
        self.assertTrue(seen.get("system"), seen)  # its full report reached the leader
        self.assertEqual(self.cli("workers", "uncordon", "w1").returncode, 0)
        # placed by the leader; the worker learns it through the follower's watch stream, and its engine
        # report reaches the leader through the follower
        engine = self.deploy_tiny()
        inst = self.instance("tiny")
        self.assertIn(inst["placement"]["leader"], inst.get("members", {}))
        key = self.cli("keys", "create", "k").stdout.strip()
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for url in (url_a, url_b):
            self.url = url
            self.wait_for(lambda: self.gw("/v1/chat/completions", msg, key)[0] == 200, "tiny served by " + url)
        # the model deleted on the leader: the worker hears of it through the follower and stops the engine
        self.url = url_a
        self.api("DELETE", "/api/models/tiny", expect=200)
        self.wait_for(lambda: not pid_alive(engine), "the engine stopped", timeout=60, show=out)
        # the leader killed: b leads and keeps the worker, which never moved
        a.popen.kill()
        a.popen.wait()
        self.wait_for(lambda: self.on(url_b, "GET", "/healthz")[1].get("leading"), "b leading", proc=b)
        self.url = url_b
        self.wait_state("w1", "ready", show=out)
        self.assertEqual(w1.output().count("registered with"), 1, out())

    def test_a_new_leader_lacking_a_workers_full_report_gets_one_through_the_follower(self):
        """Three servers; a worker (raw HTTP here, to choose its reports) reports to follower c only. The
        leader is killed and b leads (c is stopped meanwhile, so that it does not): b never saw the worker's full report, so it cannot apply the light ones
        c takes. It lists the worker as wanting a full report; c then refuses the next light report (409),
        the worker sends a full one, and light ones are taken again."""
        a, b, port_a, port_b = self.two_servers()
        port_c = free_port()
        c = self.follower("c", port_c, port_a)
        url_b, url_c = "http://127.0.0.1:%d" % port_b, "http://127.0.0.1:%d" % port_c
        token = open(os.path.join(self.data_dir, "token")).read().strip()
        st, reg = self.on(url_c, "POST", "/api/workers/register", {"name": "raw", "port": free_port(),
                                                                  "address": "127.0.0.1", "status_interval_s": 1},
                          token=token)
        self.assertEqual(st, 201, reg)
        path = "/api/workers/%s/status" % reg["id"]
        full = lambda base: {"system": {"cpu": {"cores": 2}}, "gpus": [], "notes": [], "drivers": {}, "base": base,
                             "status_interval_s": 1}
        light = lambda base: {"base": base, "dynamic": {"gpus": []}, "status_interval_s": 1}
        # a worker registered on the leader a moment ago reports to a follower at once (it reads that
        # worker's identity when it does not know it); a wrong secret is still refused
        st, other = self.on(self.url, "POST", "/api/workers/register", {"name": "raw2", "port": free_port(),
                                                                        "address": "127.0.0.1"}, token=token)
        self.assertEqual(st, 201, other)
        other_path = "/api/workers/%s/status" % other["id"]
        self.assertEqual(self.on(url_b, "POST", other_path, full(1), token=other["secret"])[0], 200)
        st, refused = self.on(url_c, "POST", other_path, full(1), token=reg["secret"])
        self.assertEqual(st, 401, refused)
        self.assertEqual(self.on(url_c, "POST", path, full(1), token=reg["secret"])[0], 200)
        self.assertEqual(self.on(url_c, "POST", path, light(1), token=reg["secret"])[0], 200)
        self.wait_for(lambda: self.on(self.url, "GET", "/api/workers/raw")[1].get("system"), "the leader has the "
                      "worker's full report")
        os.kill(c.popen.pid, signal.SIGSTOP)  # so that b, not c, takes the lead
        try:
            a.popen.kill()
            a.popen.wait()
            self.wait_for(lambda: self.on(url_b, "GET", "/healthz")[1].get("leading"), "b leading", proc=b)
        finally:
            os.kill(c.popen.pid, signal.SIGCONT)
        answers = []
        self.wait_for(lambda: answers.append(self.on(url_c, "POST", path, light(1), token=reg["secret"])) or
                      answers[-1][0] == 409, "c asking for a full report", timeout=30,
                      show=lambda: "%s\n%s" % (answers[-3:], c.output()[-2000:]))
        self.assertIn("send a full report", answers[-1][1]["error"]["fix"])
        self.assertEqual(self.on(url_c, "POST", path, full(2), token=reg["secret"])[0], 200)
        for _ in range(4):  # light reports on the new base are taken again, the new leader has it
            self.assertEqual(self.on(url_c, "POST", path, light(2), token=reg["secret"])[0], 200)
            time.sleep(0.5)
        seen = self.on(url_b, "GET", "/api/workers/raw")[1]
        self.assertEqual(seen["system"]["cpu"]["cores"], 2, seen)

    def test_a_follower_that_cannot_keep_a_report_says_why(self):
        """PostgreSQL stopped: a follower cannot leave a worker's report for the leader. The worker gets 503
        naming PostgreSQL and the fix, and the same report is taken once PostgreSQL is back."""
        a, b, port_a, port_b = self.two_servers()
        url_b = "http://127.0.0.1:%d" % port_b
        token = open(os.path.join(self.data_dir, "token")).read().strip()
        st, reg = self.on(url_b, "POST", "/api/workers/register", {"name": "raw", "port": free_port(),
                                                                  "address": "127.0.0.1"}, token=token)
        self.assertEqual(st, 201, reg)
        path, files = "/api/workers/%s/files" % reg["id"], {"files": [{"source": "/models/x.gguf", "exists": False}]}
        self.assertEqual(self.on(url_b, "POST", path, files, token=reg["secret"])[0], 200)
        pg = os.path.join(ROOT, "scripts", "pg-test.sh")
        subprocess.run([pg, "down", self.pg_dir], check=True)
        try:
            st, body = self.on(url_b, "POST", path, files, token=reg["secret"])
            self.assertEqual(st, 503, body)
            self.assertIn("keeps what workers send for the leader in the store", body["error"]["message"])
            self.assertIn("PostgreSQL at corral@127.0.0.1", body["error"]["message"])
            self.assertIn("the worker sends it again by itself", body["error"]["fix"])
        finally:
            subprocess.run([pg, "up", self.pg_dir], check=True)
        self.wait_for(lambda: self.on(url_b, "POST", path, files, token=reg["secret"])[0] == 200,
                      "the report taken once PostgreSQL is back", timeout=30)

    def test_one_name_with_the_addresses_of_both_servers(self):
        """--server-url with one DNS name for several servers: here the name has the addresses of both in
        /etc/hosts, seen only by the worker's and the CLI's own mount namespace (unshare -m). The follower's
        address comes first: the worker reports through it, the CLI reaches the leader by moving on to the
        next address, and the worker moves on to the leader's address when the follower dies."""
        hosts = os.path.join(self.tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n127.0.0.2 corral-servers\n127.0.0.3 corral-servers\n")
        wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                hosts]
        port = free_port()
        a, b, _, _ = self.two_servers(host_a="127.0.0.3", host_b="127.0.0.2", port=port)
        url_a = "http://127.0.0.3:%d" % port
        self.url = "http://corral-servers:%d" % port
        w1 = self.start_worker("w1", extra=("--port-range", port_range()), wrap=wrap)
        out = lambda: w1.output()[-3000:]
        self.wait_for(lambda: "registered with http://corral-servers:%d as worker 'w1'" % port in w1.output(),
                      "the worker registered through the name", proc=w1, show=out)
        self.assertIn("server http://corral-servers:%d has 2 addresses" % port, w1.output())
        self.url = url_a
        self.wait_state("w1", "ready", show=out)
        self.assertNotIn("(at 127.0.0.3)", w1.output(), "the follower at the first address took it all")
        # the CLI given the name: a change only the leader takes goes through the second address
        env = dict(self.env, CORRAL_SERVER_URL="http://corral-servers:%d" % port)
        r = subprocess.run(wrap + [CORRAL, "workers", "cordon", "w1"], env=env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(self.on(url_a, "GET", "/api/workers/w1")[1]["cordoned"])
        # the follower killed: the worker moves on to the leader's address
        b.popen.kill()
        b.popen.wait()
        self.wait_for(lambda: "(at 127.0.0.3)" in w1.output().split("registered with", 1)[1],
                      "the worker moving on to the second address", show=out)
        seen = self.workers()["w1"]["last_seen"]
        self.wait_for(lambda: self.workers()["w1"]["last_seen"] != seen and self.workers()["w1"]["state"] == "ready",
                      "the worker reporting to a directly", show=out)
        self.assertEqual(subprocess.run(wrap + [CORRAL, "workers", "uncordon", "w1"], env=env, capture_output=True,
                                        timeout=60).returncode, 0)
        self.assertFalse(self.on(url_a, "GET", "/api/workers/w1")[1]["cordoned"])

    def test_the_follower_leads_when_the_leader_is_killed(self):
        a, b, port_a, port_b = self.two_servers()
        url_a, url_b = "http://127.0.0.1:%d" % port_a, "http://127.0.0.1:%d" % port_b
        doctor = self.cli("doctor", "--cluster").stdout
        self.assertIn("store: postgresql; servers: ", doctor)
        self.assertIn(":%d (leads)" % port_a, doctor)
        self.assertIn(":%d (follows)" % port_b, doctor)
        servers = self.api("GET", "/api/health")["servers"]
        self.assertEqual(sorted((s["name"].rsplit(":", 1)[1], s["leader"]) for s in servers),
                         sorted([(str(port_a), True), (str(port_b), False)]), servers)
        self.url = url_a + "," + url_b  # the worker gets both
        self.worker("w1")
        self.url = url_a
        self.wait_state("w1", "ready")
        engine = self.deploy_tiny()
        key = self.cli("keys", "create", "k").stdout.strip()
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        self.url = url_b
        self.wait_for(lambda: self.gw("/v1/chat/completions", msg, key)[0] == 200, "the follower serving tiny")
        results, stop = [], threading.Event()

        def load():  # on the follower, all along
            while not stop.is_set():
                try:
                    status = self.gw("/v1/chat/completions", msg, key, timeout=30)[0]
                except OSError:
                    status = 0
                results.append(status)

        t = threading.Thread(target=load)
        t.start()
        try:
            time.sleep(1)
            t0 = time.monotonic()
            a.kill()  # the leader dies
            self.wait_for(lambda: self.on(url_b, "GET", "/healthz")[1].get("leading"), "server b leading",
                          timeout=30, proc=b)
            took = time.monotonic() - t0
            inst = self.wait_engine_reported()
            served = time.monotonic() - t0
            time.sleep(1)
        finally:
            stop.set()
            t.join()
        self.assertIn("leading the servers on this PostgreSQL now", b.output())
        self.assertLess(took, 10)
        self.assertEqual(self.leader_report(inst)["pid"], engine, "the engine was not restarted")
        self.assertEqual([s for s in results if s != 200], [], "every request on the follower answered")
        self.assertEqual([m["name"] for m in self.api("GET", "/api/models")["models"]], ["tiny"])
        # the CLI given both URLs finds the one that answers
        self.env["CORRAL_SERVER_URL"] = url_a + "," + url_b
        self.assertIn("tiny", self.cli("models").stdout)
        print("\nfailover: server b led %.2f s after the leader's kill -9; the worker reported to it after %.2f s; "
              "%d requests on b meanwhile, 0 failed; engine restarts 0" % (took, served, len(results)))

    @unittest.skipUnless(shutil.which("haproxy") or os.path.exists("/usr/sbin/haproxy"), "haproxy not installed")
    def test_behind_haproxy_only_the_request_in_flight_on_the_killed_leader_fails(self):
        a, b, port_a, port_b = self.two_servers()
        lb_port = free_port()
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:  # docs/ops.md shows the same
            f.write("""global
    maxconn 512
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend corral
    bind 127.0.0.1:%d
    default_backend servers
backend servers
    option httpchk GET /healthz
    server a 127.0.0.1:%d check inter 250ms fall 1 rise 1
    server b 127.0.0.1:%d check inter 250ms fall 1 rise 1
""" % (lb_port, port_a, port_b))
        lb = subprocess.Popen([shutil.which("haproxy") or "/usr/sbin/haproxy", "-f", cfg, "-db"], env=self.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.addCleanup(lambda: (lb.kill(), lb.wait()))
        lb_url = "http://127.0.0.1:%d" % lb_port
        self.url = lb_url  # workers, the CLI and clients know only the load balancer
        self.env["CORRAL_SERVER_URL"] = lb_url
        self.wait_for(lambda: self.healthy(), "haproxy in front of server a")
        w1 = self.worker("w1")  # it registers through the load balancer
        # the leader's view (a follower reads the workers' reports only every few seconds), and the engine's pid
        # as the leader has it (followers keep no member reports)
        self.url = "http://127.0.0.1:%d" % port_a
        self.wait_state("w1", "ready", show=lambda: w1.output()[-3000:])
        engine = self.deploy_tiny()
        key = self.cli("keys", "create", "k").stdout.strip()
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for port in (port_a, port_b):  # both serve it (a follower sees a change within a second)
            self.url = "http://127.0.0.1:%d" % port
            self.wait_for(lambda: self.gw("/v1/chat/completions", msg, key)[0] == 200, "server :%d serving" % port)
        self.url = lb_url
        results, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    status, _, text = self.gw("/v1/chat/completions", msg, key, timeout=30)
                except OSError:  # the connection cut: a request in flight on the killed server
                    status, text = 0, ""
                results.append((time.monotonic(), status))
                if status not in (0, 200):
                    print("failed: %d %s" % (status, text[:300]))

        t = threading.Thread(target=load)
        t.start()
        try:
            time.sleep(1)
            t0 = time.monotonic()
            a.kill()
            self.wait_for(lambda: "leading the servers on this PostgreSQL now" in b.output(), "server b leading", proc=b)
            inst = self.wait_engine_reported()
            t_led = time.monotonic()
            time.sleep(2)
        finally:
            stop.set()
            t.join()
        failed = [(round(at - t0, 1), s) for at, s in results if s != 200]
        after = [s for at, s in results if at > t_led]
        print("\nfailover behind haproxy: %d chat requests, %d failed (%s); engine restarts 0"
              % (len(results), len(failed), failed[:10] or "none"))
        self.assertEqual(self.leader_report(inst)["pid"], engine, "the engine was not restarted")
        self.assertTrue(after and all(s == 200 for s in after), "every request answered once b leads")
        # one client: at most its request in flight on the killed server fails, none before the kill
        self.assertLessEqual(len(failed), 1, failed)
        self.assertTrue(all(at >= 0 for at, _ in failed), failed)
        self.assertEqual(self.cli("models").returncode, 0)


class KeysOnPostgres(t60_keys.Keys):
    """Tier 60 again on PostgreSQL: keys, limits, revocation."""
    postgres = True


class GatewayOnPostgres(t65_gateway.Gateway):
    """Tier 65 again on PostgreSQL: chat, streams, keys, usage."""
    postgres = True


if __name__ == "__main__":
    unittest.main()
