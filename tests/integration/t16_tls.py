"""Tier 16: TLS on the server's port. --tls-self-signed makes a CA once and a
certificate naming this host; workers pin the CA by its public-key hash
(--ca-hash, printed in the join command) or trust a CA file (--cacert) and
send their token to nothing else; expired and wrong-host certificates are
refused with the cause and the fix; the CLI remembers the CA it logged in
with. The gateway tier runs again over TLS (GatewayOverTLS)."""
import hashlib
import http.server
import json
import os
import re
import ssl
import stat
import subprocess
import threading
import unittest
import urllib.error
import urllib.request

from harness import ClusterCase, CORRAL, free_port
import t65_gateway


def spki_hash(pem_file):
    """sha256:HEX of a certificate's public key, computed by the openssl CLI (independent of corral)."""
    pub = subprocess.run(["openssl", "x509", "-in", pem_file, "-pubkey", "-noout"], capture_output=True,
                         check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def make_ca(d, name="test-ca"):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", os.path.join(d, name + ".key"), "-out", os.path.join(d, name + ".pem"), "-days", "30",
                    "-subj", "/CN=" + name], check=True, capture_output=True)
    return os.path.join(d, name + ".pem")


def make_cert(d, name, ca, san, days=30):
    """A server certificate signed by ca (from make_ca) for san ("IP:127.0.0.1"); days -1: already expired."""
    key, csr, pem, ext = (os.path.join(d, name + s) for s in (".key", ".csr", ".pem", ".ext"))
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                    key, "-out", csr, "-subj", "/CN=" + name], check=True, capture_output=True)
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\n" % san)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca[:-4] + ".key", "-out", pem,
                    "-days", str(days), "-extfile", ext], check=True, capture_output=True)
    return pem, key


class Recorder(http.server.BaseHTTPRequestHandler):
    """An https server that only notes what reaches it."""
    seen = None

    def handle_one(self):
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"{}")

    do_GET = do_POST = do_HEAD = handle_one

    def log_message(self, *args):
        pass


class TLS(ClusterCase):
    def join_hash(self, proc):
        self.wait_for(lambda: "--ca-hash" in proc.output(), "the join command")
        m = re.search(r"corral worker --server-url (https://\S+) --token-file \S+ --ca-hash (sha256:[0-9a-f]{64})",
                      proc.output())
        self.assertIsNotNone(m, proc.output())
        return m.group(1), m.group(2)

    def test_self_signed_ca_is_made_once_and_names_this_host(self):
        server = self.start_server(extra=("--tls-self-signed",))
        tls = os.path.join(self.data_dir, "tls")
        self.assertEqual(stat.S_IMODE(os.stat(tls).st_mode), 0o700)
        for key in ("ca-key.pem", "server-key.pem"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(tls, key)).st_mode), 0o600, key)
        url, h = self.join_hash(server)
        self.assertEqual(h, spki_hash(os.path.join(tls, "ca.pem")), "the join command carries the CA's key hash")
        self.assertIn("--cacert %s" % os.path.join(tls, "ca.pem"), server.output())
        # the certificate names loopback by name and address; a client that checks the host name accepts both
        ctx = ssl.create_default_context(cafile=os.path.join(tls, "ca.pem"))
        for host in ("127.0.0.1", "localhost"):
            with urllib.request.urlopen("https://%s:%d/healthz" % (host, self.port), context=ctx, timeout=10) as r:
                self.assertEqual(json.loads(r.read())["status"], "ok")
        # plain HTTP to the TLS port is not served
        with self.assertRaises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.port, timeout=5).read()
        # a restart keeps the CA (and so every worker's --ca-hash), with a fresh server certificate
        with open(os.path.join(tls, "server.pem")) as f:
            first = f.read()
        server.stop()
        server = self.start_server(extra=("--tls-self-signed",), port=self.port)
        self.assertEqual(self.join_hash(server)[1], h)
        with open(os.path.join(tls, "server.pem")) as f:
            self.assertNotEqual(f.read(), first)

    def test_a_worker_pins_the_ca_by_hash_and_sends_its_token_nowhere_else(self):
        server = self.start_server(extra=("--tls-self-signed",))
        self.env.pop("CORRAL_CACERT", None)  # the worker trusts by hash alone
        url, h = self.join_hash(server)
        self.login()
        wrong = "sha256:" + "0" * 64
        w = self.start_worker("w-wrong", extra=("--ca-hash", wrong))
        self.assertEqual(w.popen.wait(timeout=20), 1)
        self.assertIn("is not the one --ca-hash names", w.output())
        self.assertIn(h, w.output(), "it lists the hashes the server offered")
        self.assertIn("The token was not sent", w.output())
        b = self.start_worker("w-bad", extra=("--ca-hash", "sha256:xyz"))
        self.assertEqual(b.popen.wait(timeout=20), 1)
        self.assertIn("--ca-hash must be sha256: and 64 hex digits, not 'sha256:xyz'", b.output())
        self.assertEqual(self.workers(), {}, "nothing registered")
        # an impostor's chain: a server whose CA is another one gets nothing, not even a request with the token
        other_ca = make_ca(self.tmp, "other-ca")
        pem, key = make_cert(self.tmp, "impostor", other_ca, "IP:127.0.0.1")
        seen = self.recorder(pem, key, other_ca)
        p = self.spawn("worker-imp", ["worker", "--server-url", "https://127.0.0.1:%d" % self.rec_port, "--token",
                                      self.cluster_token(), "--ca-hash", h, "--data-dir",
                                      os.path.join(self.tmp, "w-imp"), "--worker-port", str(free_port()),
                                      "--listen-host", "127.0.0.1"])
        self.assertEqual(p.popen.wait(timeout=20), 1, p.output())
        self.assertIn("is not the one --ca-hash names", p.output())
        self.assertTrue(all(auth is None for _, _, auth in seen), "no credential reached the impostor: %r" % seen)
        # the right hash: registered, the CA kept beside the worker's identity, verified from then on
        self.start_worker("w1", extra=("--ca-hash", h))
        self.wait_state("w1", "ready")
        with open(os.path.join(self.tmp, "w-w1", "server-ca.pem")) as f, \
                open(os.path.join(self.data_dir, "tls", "ca.pem")) as g:
            self.assertEqual(f.read().strip(), g.read().strip())
        # a server restart keeps the CA: the pinned worker comes back by itself
        server.stop()
        self.start_server(extra=("--tls-self-signed",), port=self.port)
        self.login()
        self.wait_state("w1", "ready")

    def recorder(self, pem, key, ca):
        seen = []
        handler = type("Rec", (Recorder,), {"seen": seen})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with open(pem) as f, open(ca) as g, open(os.path.join(self.tmp, "chain.pem"), "w") as out:
            out.write(f.read() + g.read())
        ctx.load_cert_chain(os.path.join(self.tmp, "chain.pem"), key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        self.rec_port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return seen

    def test_expired_and_wrong_host_certificates_are_refused_with_the_fix(self):
        ca = make_ca(self.tmp)
        # the server itself refuses an expired certificate
        pem, key = make_cert(self.tmp, "expired", ca, "IP:127.0.0.1", days=-1)
        r = subprocess.run([CORRAL, "server", "--port", "0", "--data-dir", os.path.join(self.tmp, "x"),
                            "--disable-worker", "--tls-cert", pem, "--tls-key", key], capture_output=True, text=True,
                           env=self.env, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("has expired", r.stderr)
        self.assertIn("fix: renew the certificate", r.stderr)
        # ... and a worker trusting the right CA refuses a server presenting one, before sending anything
        seen = self.recorder(pem, key, ca)
        token = "crt_secret-token-never-sent"
        p = self.spawn("worker-exp", ["worker", "--server-url", "https://127.0.0.1:%d" % self.rec_port, "--token",
                                      token, "--cacert", ca, "--data-dir", os.path.join(self.tmp, "w-exp"),
                                      "--worker-port", str(free_port()), "--listen-host", "127.0.0.1", "--name", "exp"])
        self.wait_for(lambda: "registration failed" in p.output(), "a refused registration", proc=p)
        self.assertIn("certificate has expired", p.output())
        self.assertIn("nothing was sent", p.output())
        self.assertEqual(seen, [])
        # a valid certificate for another host: the worker and the CLI refuse it and say how to fix it
        pem, key = make_cert(self.tmp, "elsewhere", ca, "DNS:other.example")
        self.port = free_port()
        self.url = "https://127.0.0.1:%d" % self.port
        self.data_dir = os.path.join(self.tmp, "server")
        srv = self.spawn("server", ["server", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir",
                                    self.data_dir, "--disable-worker", "--tls-cert", pem, "--tls-key", key])
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False  # the CA is right, only the name is wrong

        def healthy():
            try:
                return urllib.request.urlopen(self.url + "/healthz", context=ctx, timeout=5).status == 200
            except OSError:
                return False
        self.wait_for(healthy, "server /healthz", proc=srv)
        w = self.start_worker("w1", extra=("--cacert", ca))
        self.wait_for(lambda: "registration failed" in w.output(), "a refused registration", proc=w)
        self.assertIn("no alternative certificate subject name matches target host name '127.0.0.1'", w.output())
        self.assertIn("a name or address its certificate carries", w.output())
        r = self.cli("workers", "--server-url", self.url, "--cacert", ca, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no alternative certificate subject name matches", r.stderr)
        self.assertIn("fix: the server's certificate was not accepted", r.stderr)
        self.assertNotIn("registered", srv.output())
        # a --cacert that is no certificate is refused at once
        bad = os.path.join(self.tmp, "bad.pem")
        with open(bad, "w") as f:
            f.write("not a certificate\n")
        w = self.start_worker("w2", extra=("--cacert", bad))
        self.assertEqual(w.popen.wait(timeout=20), 1)
        self.assertIn("--cacert", w.output())
        r = self.cli("workers", "--cacert", bad, check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("holds no PEM certificate", r.stderr)

    def test_the_cli_remembers_the_ca_it_logged_in_with(self):
        self.start_server(extra=("--tls-self-signed",))
        ca = self.ca_file
        self.env.pop("CORRAL_CACERT")
        r = self.cli("workers", "--server-url", self.url, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("self-signed certificate", r.stderr)
        self.assertIn("--cacert FILE (CORRAL_CACERT)", r.stderr)
        self.cli("login", "--server-url", self.url, "--password-stdin", "--cacert", ca, stdin=self.admin_password())
        with open(os.path.join(self.env["XDG_CONFIG_HOME"], "corral", "cli.json")) as f:
            cfg = json.load(f)
        self.assertEqual(cfg["server_url"], self.url)
        with open(cfg["cacert"]) as f, open(ca) as g:
            self.assertEqual(f.read(), g.read(), "a copy of the CA is kept beside the config")
        os.rename(ca, ca + ".moved")  # the copy is what later commands use
        self.assertIn("no workers yet", self.cli("workers").stdout)
        os.rename(ca + ".moved", ca)
        env_only = self.cli("gpus", "--cacert", ca)
        self.assertEqual(env_only.returncode, 0)


class GatewayOverTLS(t65_gateway.Gateway):
    """Tier 65 again with the server on --tls-self-signed: chat, streams, keys and the CLI over https."""
    tls = True

    def test_chat_is_relayed_to_a_running_instance(self):
        super().test_chat_is_relayed_to_a_running_instance()
        self.assertTrue(self.url.startswith("https://"))


if __name__ == "__main__":
    unittest.main()
