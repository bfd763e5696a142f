"""Tier 10: the server alone — first start, login and auth, bad input, limits,
restart persistence, the embedded worker, and --help for every command."""
import json
import os
import signal
import shutil
import socket
import stat
import subprocess
import time
import unittest

from harness import BUILD, CORRAL, ROOT, ClusterCase, free_port


class FirstStart(ClusterCase):
    def test_creates_admin_and_token_files_once(self):
        server = self.start_server()
        out = server.output()
        pw_file = os.path.join(self.data_dir, "initial_admin_password")
        tok_file = os.path.join(self.data_dir, "token")
        for f in (pw_file, tok_file):
            self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o600, f)
        self.assertIn(self.admin_password(), out, "the password is printed with its file")
        self.assertIn(pw_file, out)
        self.assertIn(self.cluster_token(), out)
        self.assertTrue(self.cluster_token().startswith("crt_"))
        # a join command to paste on another machine, which works as printed
        join = [l.strip() for l in out.splitlines() if l.strip().startswith("corral worker ")]
        self.assertEqual(join, ["corral worker --server-url %s --token-file /etc/corral/token" % self.url], out)
        self.assertIn("copy %s to it (mode 0600" % tok_file, out)
        copied = os.path.join(self.tmp, "etc-token")
        shutil.copy(tok_file, copied)
        os.chmod(copied, 0o600)
        args = join[0].split()[1:]
        args[args.index("/etc/corral/token")] = copied
        self.spawn("worker-joined", args + ["--name", "joined", "--data-dir", os.path.join(self.tmp, "wj"),
                                            "--worker-port", str(free_port()), "--listen-host", "127.0.0.1",
                                            "--status-interval", "1"], self.env)
        self.login()
        self.wait_state("joined", "ready")
        # the store holds only the token's hash
        with open(os.path.join(self.data_dir, "corral.db"), "rb") as f:
            db = f.read()
        self.assertNotIn(self.cluster_token().encode(), db)
        self.assertNotIn(self.admin_password().encode(), db)

    def test_login_and_bearer_auth(self):
        self.start_server()
        status, body = self.request("POST", "/api/auth/login", {"username": "admin", "password": "wrong"})
        self.assert_error(status, body, 401, "wrong username or password", "initial_admin_password")
        status, body = self.request("POST", "/api/auth/login", {"username": "nobody", "password": "x"})
        self.assert_error(status, body, 401, "wrong username or password")
        status, body = self.request("GET", "/api/workers")
        self.assert_error(status, body, 401, "missing bearer token", "corral login")
        status, body = self.request("GET", "/api/workers", token="crs_forged")
        self.assert_error(status, body, 401, "invalid or revoked token")
        token = self.login()
        self.assertTrue(token.startswith("crs_"))
        self.assertEqual(self.api("GET", "/api/auth/me"), {"username": "admin", "role": "admin"})
        self.assertEqual(self.api("GET", "/api/workers"), {"workers": []})
        self.api("POST", "/api/auth/logout")
        status, body = self.request("GET", "/api/workers", token=token)
        self.assert_error(status, body, 401, "invalid or revoked token")

    def test_cli_login_and_workers(self):
        self.start_server()
        r = self.cli("login", "--server-url", self.url, "--password-stdin", stdin=self.admin_password() + "\n")
        self.assertIn("logged in", r.stdout)
        cfg = os.path.join(self.env["XDG_CONFIG_HOME"], "corral", "cli.json")
        self.assertEqual(stat.S_IMODE(os.stat(cfg).st_mode), 0o600)
        r = self.cli("workers")
        self.assertIn("no workers yet", r.stdout)
        r = self.cli("login", "--server-url", self.url, "--password-stdin", stdin="bad\n", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("wrong username or password", r.stderr)
        self.assertIn("fix:", r.stderr)

    def test_password_change_ends_every_session_and_the_first_password_file(self):
        self.start_server()
        first = self.admin_password()
        pw_file = os.path.join(self.data_dir, "initial_admin_password")
        other = self.login()
        self.cli("login", "--server-url", self.url, "--password-stdin", stdin=first + "\n")
        # a wrong current password changes nothing
        r = self.cli("passwd", "--password-stdin", stdin="wrong-one\nnew-password-1\n", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("the current password is wrong", r.stderr)
        r = self.cli("passwd", "--password-stdin", stdin=first + "\nshort\n", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("at least 8 characters", r.stderr)
        self.assertEqual(self.request("GET", "/api/auth/me", token=other)[0], 200)
        # the change: every other session ends, the CLI's is replaced, the first password file goes
        r = self.cli("passwd", "--password-stdin", stdin=first + "\nnew-password-1\n")
        self.assertIn("password changed", r.stdout)
        self.assertEqual(self.request("GET", "/api/auth/me", token=other)[0], 401)
        self.assertFalse(os.path.exists(pw_file), "the first password is not left on disk once changed")
        sessions = json.loads(self.cli("sessions", "--json").stdout)["sessions"]
        self.assertEqual([s["current"] for s in sessions], [True], "the CLI goes on with a new session")
        status, body = self.request("POST", "/api/auth/login", {"username": "admin", "password": first})
        self.assertEqual(status, 401)
        self.token = self.login(password="new-password-1")
        # an admin resets a user's password: their sessions end
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-password-1"}, expect=201)
        bob = [self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-password-1"})[1]["token"]
               for _ in range(2)]
        mine = self.request("GET", "/api/auth/sessions", token=bob[0])[1]["sessions"]
        self.assertEqual(sorted(s["current"] for s in mine), [False, True])
        # one of bob's sessions ended by bob; another user's session id is not found
        other_id = [s["id"] for s in mine if not s["current"]][0]
        status, _ = self.request("DELETE", "/api/auth/sessions/" + sessions[0]["id"], token=bob[0])
        self.assertEqual(status, 404, "admin's session is not bob's to end")
        self.assertEqual(self.request("DELETE", "/api/auth/sessions/" + other_id, token=bob[0])[0], 200)
        self.assertEqual(self.request("GET", "/api/auth/me", token=bob[1])[0], 401)
        status, body = self.request("POST", "/api/users/admin/password", {"password": "taken-over-1"}, token=bob[0])
        self.assertEqual(status, 403, body)
        r = self.cli("users", "passwd", "bob", "--password-stdin", stdin="bob-password-2\n")
        self.assertIn("password of 'bob' changed; 1 session(s) ended", r.stdout)
        self.assertEqual(self.request("GET", "/api/auth/me", token=bob[0])[0], 401)
        status, _ = self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-password-2"})
        self.assertEqual(status, 200)
        # across a restart: the new passwords hold
        self.procs[0].stop()
        self.start_server(data_dir=self.data_dir, name="server2")
        self.assertTrue(self.login(password="new-password-1"))
        self.assertFalse(os.path.exists(pw_file), "not written again at a restart")

    def test_cli_reports_unreachable_server(self):
        r = self.cli("workers", "--server-url", "http://127.0.0.1:1", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("fix: check that the server runs at http://127.0.0.1:1", r.stderr)


class BadInput(ClusterCase):
    def setUp(self):
        super().setUp()
        self.start_server(extra=["--max-body", "4096"])
        self.login()

    def test_each_bad_request_gets_a_json_4xx_and_changes_nothing(self):
        token = self.cluster_token()
        cases = [
            ("POST", "/api/auth/login", b'{"username": "admin", ', None, 400, "malformed JSON"),
            ("POST", "/api/auth/login", b'[1, 2]', None, 400, "must be a JSON object"),
            ("POST", "/api/auth/login", json.dumps({"username": 5, "password": "x"}).encode(), None, 400,
             "field 'username' must be"),
            ("POST", "/api/auth/login", b'{"password": "x"}', None, 400, "field 'username' is required"),
            ("POST", "/api/workers/register", b'{"name": "w", "port": 1}', None, 401, "cluster registration token"),
            ("POST", "/api/workers/register", b'{"name": "w", "port": 1}', "crt_wrong", 401,
             "cluster registration token"),
            ("POST", "/api/workers/register", b'{"name": "bad name!", "port": 10150}', token, 400,
             "worker name 'bad name!' is not valid"),
            ("POST", "/api/workers/register", b'{"name": "w", "port": "10150"}', token, 400,
             "field 'port' must be an integer"),
            ("POST", "/api/workers/register", b'{"name": "w", "port": 99999}', token, 400, "outside 1..65535"),
            ("POST", "/api/workers/register", b'{"name": "w", "port": 1, "labels": {"a": 1}}', token, 400,
             "label 'a' must be a string"),
            ("POST", "/api/workers/deadbeef/status", b'{"system": {}}', "crw_wrong", 401, "wrong worker secret"),
            ("POST", "/api/auth/login", b"x" * 10000, None, 413, "larger than the limit of 4096 bytes"),
            ("GET", "/api/nothing-here", None, self.token, 404, "no route"),
            ("DELETE", "/api/auth/login", None, None, 405, "method not allowed"),
        ]
        for method, path, raw, tok, want, needle in cases:
            with self.subTest(path=path, needle=needle):
                status, body = self.request(method, path, raw=raw, token=tok)
                self.assert_error(status, body, want, needle)
        status, body = self.request("GET", "/api/workers", token=self.token, headers={"X-Big": "a" * 40000})
        self.assert_error(status, body, 431, "headers are larger")
        # nothing was stored, and the server still serves
        self.assertEqual(self.api("GET", "/api/workers"), {"workers": []})
        self.login()

    def test_slow_client_does_not_block_others(self):
        with socket.create_connection(("127.0.0.1", self.port)) as slow:
            slow.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            self.assertEqual(self.api("GET", "/api/auth/me")["username"], "admin")


class Restart(ClusterCase):
    def test_restart_keeps_users_sessions_workers_and_token(self):
        server = self.start_server()
        token = self.login()
        cluster_token, password = self.cluster_token(), self.admin_password()
        self.start_worker("keep")
        w = self.wait_state("keep", "ready")
        server.stop()
        self.assertEqual(server.popen.returncode, 0, server.output())
        server2 = self.start_server(name="server2", data_dir=self.data_dir, port=self.port)
        self.assertNotIn("created user", server2.output(), "the admin is created only once")
        self.assertEqual(self.cluster_token(), cluster_token)
        self.assertEqual(self.admin_password(), password)
        self.token = token  # the session survived
        w2 = self.wait_state("keep", "ready")
        self.assertEqual(w2["id"], w["id"])
        self.assertEqual(len(self.workers()), 1)

    def test_restart_with_a_new_token_rejects_the_old_one(self):
        server = self.start_server()
        old = self.cluster_token()
        server.stop()
        self.start_server(name="server2", data_dir=self.data_dir, port=self.port, extra=["--token", "crt_mine"])
        self.assertEqual(self.cluster_token(), "crt_mine")
        status, body = self.request("POST", "/api/workers/register", {"name": "w", "port": 1}, token=old)
        self.assert_error(status, body, 401, "cluster registration token")
        status, body = self.request("POST", "/api/workers/register", {"name": "w", "port": 1}, token="crt_mine")
        self.assertEqual(status, 201, body)


class LostStore(ClusterCase):
    def test_database_files_are_private(self):
        server = self.start_server()
        self.login()  # a write: the WAL exists
        for name in ("corral.db", "corral.db-wal", "corral.db-shm"):
            path = os.path.join(self.data_dir, name)
            self.assertTrue(os.path.exists(path), name)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600, name)
        server.stop()

    def check_refused(self, how):
        server = self.start_server()
        self.login()
        server.stop()
        db = os.path.join(self.data_dir, "corral.db")
        for side in ("-wal", "-shm"):
            if os.path.exists(db + side):
                os.unlink(db + side)
        if how == "missing":
            os.unlink(db)
        else:
            open(db, "w").close()
        password = self.admin_password()
        p = self.spawn("server2", ["server", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir",
                                   self.data_dir, "--disable-worker"])
        self.wait_for(lambda: not p.alive(), "the server to refuse to start")
        self.assertEqual(p.popen.returncode, 1)
        out = p.output()
        self.assertIn("the store '%s' is %s" % (db, how), out)
        self.assertIn("restore corral.db", out)
        self.assertNotIn("created user", out, "no new admin over lost state")
        self.assertEqual(self.admin_password(), password, "the first admin password file is untouched")

    def test_a_missing_store_in_a_used_data_dir_is_refused(self):
        self.check_refused("missing")

    def test_an_empty_store_in_a_used_data_dir_is_refused(self):
        self.check_refused("empty")


class Embedded(ClusterCase):
    def test_cpu_only_server_with_embedded_worker(self):
        server = self.start_server(disable_worker=False,
                                   extra=["--worker-port", str(self._port()), "--worker-name", "ctl",
                                          "--status-interval", "1"])
        self.login()
        w = self.wait_state("ctl", "ready")
        self.assertEqual(w["gpus"], [])
        self.assertTrue(any("no NVIDIA GPUs" in n for n in w["notes"]), w["notes"])
        self.assertGreaterEqual(w["system"]["cpu"]["cores"], 1)
        self.assertTrue(w["watch_connected"])
        self.assertEqual(len(self.workers()), 1)
        self.assertNotIn("error", server.output())

    def test_embedded_worker_takes_its_options_from_the_server(self):
        from harness import free_ports
        lo = free_ports(8)
        self.start_server(disable_worker=False,
                          extra=["--worker-port", str(self._port()), "--worker-name", "ctl", "--status-interval", "1",
                                 "--worker-port-range", "%d-%d" % (lo, lo + 7), "--worker-labels", "zone=ctl,tier=cpu"])
        self.login()
        w = self.wait_state("ctl", "ready")
        self.assertEqual(w["labels"], {"zone": "ctl", "tier": "cpu"})
        args = subprocess.run(["pgrep", "-af", "worker --server-url=http://127.0.0.1:%d" % self.port],
                              capture_output=True, text=True).stdout
        self.assertIn("--port-range=%d-%d" % (lo, lo + 7), args)

    def test_embedded_worker_is_restarted_when_it_dies(self):
        server = self.start_server(disable_worker=False,
                                   extra=["--worker-port", str(self._port()), "--worker-name", "ctl",
                                          "--status-interval", "1"])
        self.login()
        first = self.wait_state("ctl", "ready")
        pid = self.wait_for(lambda: self._child_pid(server), "embedded worker pid")
        os.kill(pid, signal.SIGKILL)
        self.wait_for(lambda: "embedded worker killed by signal 9" in server.output(), "restart notice")
        self.wait_for(lambda: self._child_pid(server) not in (None, pid), "a new embedded worker")
        again = self.wait_state("ctl", "ready")
        self.assertEqual(again["id"], first["id"], "the restarted worker is the same worker")
        server.stop()
        self.assertIsNone(self._child_pid(server), "stopping the server stops its worker")

    def _port(self):
        from harness import free_port
        return free_port()

    def _child_pid(self, server):
        out = subprocess.run(["pgrep", "-P", str(server.popen.pid)], capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None


class EnvFlags(ClusterCase):
    """Every flag of 'corral server' and 'corral worker' can come from a
    CORRAL_* variable (what the systemd units' environment files set); the
    command line wins."""

    def test_server_and_worker_flags_from_corral_variables(self):
        from harness import free_port
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.data_dir = os.path.join(self.tmp, "envsrv")
        env = dict(self.env, CORRAL_HOST="127.0.0.1", CORRAL_PORT=str(self.port), CORRAL_DATA_DIR=self.data_dir,
                   CORRAL_WORKER_NAME="ctl", CORRAL_WORKER_PORT=str(free_port()), CORRAL_STATUS_INTERVAL="1",
                   CORRAL_WORKER_LABELS="zone=env", CORRAL_ACCESS_LOG=os.path.join(self.tmp, "access.log"),
                   CORRAL_SHUTDOWN_TIMEOUT="5")
        server = self.spawn("server", ["server", "--worker-labels", "zone=cli"], env)
        self.wait_for(self.healthy, "server /healthz from CORRAL_HOST and CORRAL_PORT", proc=server)
        self.assertTrue(os.path.exists(os.path.join(self.data_dir, "corral.db")), "CORRAL_DATA_DIR was used")
        self.login()
        w = self.wait_state("ctl", "ready")
        self.assertEqual(w["labels"], {"zone": "cli"}, "the command line wins over CORRAL_WORKER_LABELS")
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "access.log")), "CORRAL_ACCESS_LOG was used")
        # a worker entirely from its environment, the token from a file
        tok = os.path.join(self.tmp, "token")
        with open(tok, "w") as f:
            f.write(self.cluster_token())
        os.chmod(tok, 0o600)
        base = os.path.join(self.tmp, "wbase")
        wenv = dict(self.env, CORRAL_SERVER_URL=self.url, CORRAL_TOKEN_FILE=tok, CORRAL_NAME="envw",
                    CORRAL_WORKER_PORT=str(free_port()), CORRAL_LISTEN_HOST="127.0.0.1", CORRAL_STATUS_INTERVAL="1",
                    CORRAL_LABELS="rack=r7", CORRAL_DATA_DIR=base, CORRAL_EMBEDDED="no")
        self.spawn("worker-envw", ["worker"], wenv)
        w = self.wait_state("envw", "ready")
        self.assertEqual(w["labels"], {"rack": "r7"})
        self.assertTrue(os.path.isdir(os.path.join(base, "worker")), "CORRAL_DATA_DIR/worker is the worker's dir")
        # a flag without a value takes a yes or a no, and says so otherwise
        r = subprocess.run([CORRAL, "server", "--help"], env=dict(self.env, CORRAL_DISABLE_WORKER="maybe"),
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("CORRAL_DISABLE_WORKER is 'maybe', but --disable-worker takes no value", r.stderr)
        self.assertIn("fix: set CORRAL_DISABLE_WORKER to 1 or 0", r.stderr)
        for cmd in ("server", "worker"):
            self.assertIn("CORRAL_", subprocess.run([CORRAL, cmd, "--help"], capture_output=True, text=True).stdout)


class Audit(ClusterCase):
    def test_every_change_and_failed_login_is_in_the_audit_trail_and_old_entries_go(self):
        import sqlite3
        self.start_server(extra=("--flush-interval", "1"))
        self.request("POST", "/api/auth/login", {"username": "admin", "password": "not-it"})
        self.login()
        self.cli("login", "--server-url", self.url, "--password-stdin", stdin=self.admin_password() + "\n")
        self.api("POST", "/api/users", {"username": "bob", "password": "bob-password-1"}, expect=201)
        status, bob = self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-password-1"})
        status, key = self.request("POST", "/api/keys", {"name": "ci"}, token=bob["token"])
        self.assertEqual(status, 201, key)
        self.api("DELETE", "/api/keys/" + key["id"])
        self.api("POST", "/api/models", {"name": "m1", "path": "/nowhere/m.gguf"}, expect=201)
        self.api("PATCH", "/api/models/m1", {"ctx": 4096})
        self.api("DELETE", "/api/models/m1")
        self.cli("token", "rotate")
        self.cli("users", "passwd", "bob", "--password-stdin", stdin="bob-password-2\n")
        got = json.loads(self.cli("audit", "--json").stdout)["entries"]
        seen = [(e["actor"], e["action"], e["target"]) for e in reversed(got)]
        self.assertEqual(seen, [
            ("admin", "login.fail", "admin"), ("admin", "login", "admin"), ("admin", "login", "admin"),
            ("admin", "user.create", "bob"), ("bob", "login", "bob"), ("bob", "key.create", "ci"),
            ("admin", "key.revoke", "ci"), ("admin", "model.create", "m1"), ("admin", "model.update", "m1"),
            ("admin", "model.delete", "m1"), ("admin", "token.rotate", "cluster"),
            ("admin", "user.password.reset", "bob")])
        self.assertTrue(all(e["address"] == "127.0.0.1" for e in got))
        self.assertEqual(got[-1 - 5]["detail"], {"prefix": key["prefix"], "owner": "bob"})
        self.assertEqual(got[-1 - 8]["detail"], {"ctx": 4096})
        models = json.loads(self.cli("audit", "--action", "model.", "--json").stdout)["entries"]
        self.assertEqual([e["action"] for e in models], ["model.delete", "model.update", "model.create"])
        out = self.cli("audit").stdout
        self.assertIn("ACTION", out.splitlines()[0])
        self.assertIn("login.fail", out)
        status, body = self.request("GET", "/api/audit?since=last-week", token=self.token)
        self.assert_error(status, body, 400, "'since' is a number of days like 7d", "since=7d")
        status, body = self.request("PATCH", "/api/users/nobody", {"rpm": 1}, token=self.token)
        self.assert_error(status, body, 404, "no such user", "corral users")
        status, body = self.request("GET", "/api/audit", token=bob["token"])
        self.assertEqual(status, 401, "bob's sessions ended with the reset")
        status, bob = self.request("POST", "/api/auth/login", {"username": "bob", "password": "bob-password-2"})
        status, body = self.request("GET", "/api/audit", token=bob["token"])
        self.assertEqual(status, 403, body)
        # kept for --audit-days: an entry from 100 days ago goes at the next trim
        self.procs[0].stop()
        db = sqlite3.connect(os.path.join(self.data_dir, "corral.db"))
        db.execute("INSERT INTO audit (at_ms, actor, address, action, target) VALUES (?, 'old', '', 'login', 'x')",
                   (int((time.time() - 100 * 86400) * 1000),))
        db.commit()
        db.close()
        self.start_server(data_dir=self.data_dir, name="server2", extra=("--flush-interval", "1", "--audit-days", "90"))
        self.login()
        self.wait_for(lambda: "entries older than 90 days deleted" in self.procs[-1].output(), "the trim")
        self.assertNotIn("old", [e["actor"] for e in self.api("GET", "/api/audit")["entries"]])


class Help(ClusterCase):
    def test_every_command_has_help(self):
        for cmd in ("server", "worker", "login", "logout", "workers", "gpus", "doctor", "deploy", "models", "instances",
                    "rm", "scale", "update", "engines", "logs", "keys", "users", "chat", "usage", "inspect",
                    "token", "passwd", "sessions", "audit"):
            with self.subTest(cmd=cmd):
                r = self.cli(cmd, "--help")
                self.assertIn("usage: corral " + cmd, r.stdout)
        r = self.cli("--help")
        self.assertIn("usage: corral COMMAND", r.stdout)
        r = self.cli("frobnicate", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)
        r = self.cli("worker", "--server-url", "http://x", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--token-file (or --token) is required", r.stderr)
        r = self.cli("update", "tiny", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("nothing to change: give a deploy option", r.stderr)


class Install(ClusterCase):
    def make_install(self, *args):
        binary = os.path.join(BUILD, "corral")
        r = subprocess.run(["make", "-s", "-C", ROOT, "BUILD=" + BUILD, "-o", binary, "install"] + list(args),
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed (scripts/deps.sh)")
    def test_make_install_puts_the_binary_and_units_systemd_accepts(self):
        prefix = os.path.join(self.tmp, "prefix")
        self.make_install("PREFIX=" + prefix)
        corral = os.path.join(prefix, "bin", "corral")
        self.assertIn("usage: corral", subprocess.run([corral, "--help"], capture_output=True, text=True).stdout)
        self.assertTrue(os.path.exists(os.path.join(prefix, "share", "doc", "corral", "cli.md")))
        for unit in ("corral-server", "corral-worker"):
            path = os.path.join(prefix, "lib", "systemd", "system", unit + ".service")
            with open(path) as f:
                text = f.read()
            self.assertIn("ExecStart=%s " % corral, text)
            self.assertIn("EnvironmentFile=-%s/etc/corral/%s.env" % (prefix, unit.split("-")[1]), text)
            r = subprocess.run(["systemd-analyze", "verify", "--man=no", path], capture_output=True, text=True)
            self.assertEqual((r.returncode, r.stderr.strip()), (0, ""), "systemd accepts %s as it is" % unit)
        # the manual page: every command's help, rendered by man's formatter without a warning
        page = os.path.join(prefix, "share", "man", "man1", "corral.1")
        with open(page) as f:
            roff = f.read()
        for cmd in ("server", "worker", "deploy", "update", "workers", "keys", "usage"):
            self.assertIn(".SS %s\n" % cmd, roff)
            self.assertIn("usage: corral %s" % cmd, roff)
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", page], capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertIn("CORRAL_DISABLE_WORKER", r.stdout)
        self.assertIn("--worker-port-range", r.stdout)
        env = os.path.join(prefix, "etc", "corral", "worker.env")
        self.assertEqual(stat.S_IMODE(os.stat(env).st_mode), 0o600)
        with open(env, "a") as f:
            f.write("CORRAL_WORKER_ARGS=--name kept\n")
        self.make_install("PREFIX=" + prefix)
        with open(env) as f:
            self.assertIn("--name kept", f.read(), "a second install keeps the edited environment file")

    def test_make_install_with_destdir_stages_a_system_install(self):
        dest = os.path.join(self.tmp, "stage")
        self.make_install("DESTDIR=" + dest, "PREFIX=/usr")
        for f in ("usr/bin/corral", "lib/systemd/system/corral-server.service", "etc/corral/server.env"):
            self.assertTrue(os.path.exists(os.path.join(dest, f)), f)
        with open(os.path.join(dest, "lib/systemd/system/corral-worker.service")) as f:
            text = f.read()
        self.assertIn("ExecStart=/usr/bin/corral worker", text, "paths are the installed ones, not the stage's")
        self.assertIn("EnvironmentFile=-/etc/corral/worker.env", text)
        self.assertNotIn(dest, text)
