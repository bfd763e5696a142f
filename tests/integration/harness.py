"""Integration-test harness: starts the real corral binaries on loopback with
free ports and private data directories, talks HTTP to them, polls for
conditions instead of sleeping, and dumps every process log when a test fails."""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("CORRAL_BUILD", "build"))
CORRAL = os.path.join(BUILD, "corral")
FAKE_NVML = os.path.join(BUILD, "fakes", "nvml", "libnvidia-ml.so.1")
FAKE_NVML_NOUUID = os.path.join(BUILD, "fakes", "nvml-nouuid", "libnvidia-ml.so.1")
NO_NVML = "/nonexistent/libnvidia-ml.so.1"


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports for servers, workers and engines come from below the kernel's
# ephemeral range, so that no outgoing connection can take one between the
# moment it is chosen and the moment it is bound. Each test process starts
# at its own offset so that two runs on one machine rarely meet.
_PORT_LOW = 10200
_PORT_HIGH = min(_ephemeral_low(), 65536)
_next_port = [_PORT_LOW + (os.getpid() * 97) % max(1, _PORT_HIGH - _PORT_LOW - 2000)]


def _bindable(port, host="127.0.0.1"):
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_ports(n):
    """The first of n consecutive free ports below the ephemeral range."""
    for _ in range(_PORT_HIGH - _PORT_LOW):
        lo = _next_port[0]
        if lo + n > _PORT_HIGH:
            lo = _PORT_LOW
        _next_port[0] = lo + n
        if all(_bindable(p) for p in range(lo, lo + n)):
            return lo
    raise OSError("no %d free ports between %d and %d" % (n, _PORT_LOW, _PORT_HIGH))


def free_port(host="127.0.0.1"):
    return free_ports(1)


class Proc:
    """A corral process with its output in a log file."""

    def __init__(self, name, args, env, log_dir, wrap=()):
        self.name = name
        self.log_path = os.path.join(log_dir, name.replace("/", "_") + ".log")
        self.log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(list(wrap) + [CORRAL] + args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)

    def alive(self):
        return self.popen.poll() is None

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, timeout=10):
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if not self.log.closed:
            self.log.close()

    def kill(self):
        if self.alive():
            self.popen.kill()
            self.popen.wait()


def marked_pids(mark):
    """Processes whose environment has CORRAL_TEST_RUN=mark."""
    needle = b"CORRAL_TEST_RUN=" + mark.encode() + b"\0"
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read() + b"\0"
            with open("/proc/%s/stat" % d) as f:
                zombie = f.read().rsplit(") ", 1)[1][0] == "Z"
        except OSError:
            continue
        if needle in env and not zombie:
            pids.append(int(d))
    return pids


def kill_marked(mark, timeout=10):
    """SIGKILL every process of a test; the names of any still there after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        pids = marked_pids(mark)
        if not pids:
            return []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if time.monotonic() > deadline:
            names = []
            for pid in pids:
                try:
                    with open("/proc/%d/comm" % pid) as f:
                        names.append("%d %s" % (pid, f.read().strip()))
                except OSError:
                    pass
            return names
        time.sleep(0.05)


def npm_package(name, version):
    """node_modules holding the npm package name@version, installed once into a cache outside the
    repository (pinned), or None with the reason."""
    cache = os.path.join(os.environ.get("CORRAL_ENGINE_CACHE", os.path.expanduser("~/.cache/corral")), "npm",
                         "%s-%s" % (name, version))
    mods = os.path.join(cache, "node_modules")
    if os.path.exists(os.path.join(mods, name, "package.json")):
        return mods, None
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node and npm are not installed"
    os.makedirs(cache, exist_ok=True)
    r = subprocess.run(["npm", "i", "-E", "--no-audit", "--no-fund", "--prefix", cache, "%s@%s" % (name, version)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return None, "npm could not install %s@%s: %s" % (name, version, r.stderr[-300:])
    return mods, None


class PgDatabaseCounter:
    n = 0


class ClusterCase(unittest.TestCase):
    """Base class: a temporary directory, process bookkeeping, HTTP helpers.
    With tls = True every server runs --tls-self-signed and every client of
    the test (urllib, workers, the CLI) trusts its CA. With postgres = True
    the class gets a private PostgreSQL (scripts/pg-test.sh) and every test a
    database of its own on it, which its servers use (--store)."""

    tls = False
    postgres = False
    pg_url = None  # the class's PostgreSQL (admin database) when postgres

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.postgres:
            cls.pg_dir = tempfile.mkdtemp(prefix="corral-pg-")
            r = subprocess.run([os.path.join(ROOT, "scripts", "pg-test.sh"), "start", cls.pg_dir], capture_output=True,
                               text=True)
            if r.returncode != 0:
                shutil.rmtree(cls.pg_dir, ignore_errors=True)
                raise unittest.SkipTest("no private PostgreSQL: %s" % r.stderr.strip()[-300:])
            cls.pg_url = r.stdout.strip()

    @classmethod
    def tearDownClass(cls):
        if cls.postgres and cls.pg_url:
            subprocess.run([os.path.join(ROOT, "scripts", "pg-test.sh"), "stop", cls.pg_dir], capture_output=True)
        super().tearDownClass()

    def pg_database(self):
        """A fresh database on the class's PostgreSQL: its URL."""
        PgDatabaseCounter.n += 1
        name = "t_%d_%d" % (os.getpid(), PgDatabaseCounter.n)
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", self.pg_url, "-c", "CREATE DATABASE " + name],
                       check=True, capture_output=True)
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def store_rows(self, sql):
        """Rows of sql on this test's store (SQLite in the data dir, or its
        PostgreSQL database), every value as text."""
        if self.store:
            out = self.psql(self.store, sql.replace("\n", " "))
            return [tuple(line.split("|")) for line in out.splitlines()] if out else []
        import sqlite3
        with sqlite3.connect(os.path.join(self.data_dir, "corral.db")) as db:
            return [tuple("" if v is None else str(v) for v in row) for row in db.execute(sql).fetchall()]

    def psql(self, url, sql):
        r = subprocess.run(["psql", "-qAt", "-v", "ON_ERROR_STOP=1", url, "-c", sql], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("psql: %s" % r.stderr)
        return r.stdout.strip()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="corral-it-")
        self.procs = []
        self.token = None
        self.env = dict(os.environ)
        self.env["XDG_CONFIG_HOME"] = os.path.join(self.tmp, "config")
        self.env["CORRAL_NVML_LIBRARY"] = NO_NVML
        self.env["CORRAL_SYSFS_ROOT"] = os.path.join(self.tmp, "no-sysfs")
        self.env.pop("CORRAL_SERVER_URL", None)
        self.env.pop("CORRAL_API_TOKEN", None)
        self.env.pop("CORRAL_TOKEN", None)
        self.env.pop("CORRAL_DATA_DIR", None)
        # every process of this test (servers, workers, and the engines they
        # start, which inherit the environment) carries this mark
        self.env["CORRAL_TEST_RUN"] = self.tmp
        self.ca_file = None
        self.store = self.pg_database() if self.postgres else None

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        failed = result is not None and any(t is self for t, _ in result.failures + result.errors)
        for p in self.procs:
            p.stop()
        urllib.request.install_opener(None)
        # under SANITIZE=address,undefined every finding fails the test
        findings = [p for p in self.procs
                    if any(m in p.output() for m in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                                     "runtime error:", "WARNING: ThreadSanitizer"))]
        if failed or findings:
            for p in self.procs:
                print("\n----- log of %s -----\n%s" % (p.name, p.output()[-6000:]))
        # engines outlive their workers by design: stop those this test
        # started, found by their mark whatever their command line
        survivors = kill_marked(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if findings:
            raise AssertionError("sanitizer findings in: " + ", ".join(p.name for p in findings))
        if survivors:
            raise AssertionError("processes of this test survived SIGKILL: %s" % survivors)

    # ---- processes ----

    def spawn(self, name, args, env=None, wrap=()):
        """corral ARGS (after the command wrap, e.g. nsenter ...), logged."""
        p = Proc(name, args, env or self.env, self.tmp, wrap)
        self.procs.append(p)
        return p

    def start_server(self, name="server", disable_worker=True, extra=(), data_dir=None, port=None, env=None,
                     ca_file=None, wrap=(), host="127.0.0.1"):
        self.port = port or free_port()
        self.data_dir = data_dir or os.path.join(self.tmp, "server")
        args = ["server", "--host", host, "--port", str(self.port), "--data-dir", self.data_dir,
                "--probe-interval", "1", "--keepalive", "1", "--shutdown-timeout", "5"]
        if disable_worker:
            args.append("--disable-worker")
        if self.store and "--store" not in extra:
            args += ["--store", self.store]
        tls = self.tls or any(a in extra for a in ("--tls-self-signed", "--tls-cert"))
        if self.tls and "--tls-cert" not in extra and "--tls-self-signed" not in extra:
            args.append("--tls-self-signed")
        self.url = "%s://%s:%d" % ("https" if tls else "http", host, self.port)
        if tls:
            self.trust(ca_file or os.path.join(self.data_dir, "tls", "ca.pem"))
        p = self.spawn(name, args + list(extra), env, wrap)
        self.wait_for(lambda: self.healthy(), "server /healthz", proc=p)
        return p

    def trust(self, ca_file):
        """Every client of this test trusts ca_file: urllib (once it exists), the CLI, new workers."""
        self.ca_file = ca_file
        self.env["CORRAL_CACERT"] = ca_file
        urllib.request.install_opener(None)

    def ssl_context(self):
        if not self.url.startswith("https:") or not self.ca_file or not os.path.exists(self.ca_file):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx)))
        return ctx

    def healthy(self):
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def cluster_token(self):
        with open(os.path.join(self.data_dir, "token")) as f:
            return f.read().strip()

    def admin_password(self):
        with open(os.path.join(self.data_dir, "initial_admin_password")) as f:
            return f.read().strip()

    def start_worker(self, name, nvml_config=None, nvml_lib=None, sysfs_root=None, extra=(), data_dir=None,
                     port=None, token=None, interval=1, wrap=()):
        env = dict(self.env)
        if nvml_config is not None:
            path = os.path.join(self.tmp, name + "-nvml.json")
            with open(path, "w") as f:
                json.dump(nvml_config, f)
            env["FAKE_NVML_CONFIG"] = path
            env["CORRAL_NVML_LIBRARY"] = nvml_lib or FAKE_NVML
        elif nvml_lib:
            env["CORRAL_NVML_LIBRARY"] = nvml_lib
        if sysfs_root:
            env["CORRAL_SYSFS_ROOT"] = sysfs_root
        port = port or free_port()
        args = ["worker", "--server-url", self.url, "--token", token or self.cluster_token(), "--name", name,
                "--data-dir", data_dir or os.path.join(self.tmp, "w-" + name), "--worker-port", str(port),
                "--listen-host", "127.0.0.1", "--status-interval", str(interval)]
        p = self.spawn("worker-" + name, args + list(extra), env, wrap)
        p.port = port
        return p

    def cli(self, *args, stdin=None, check=True):
        r = subprocess.run([CORRAL] + list(args), input=stdin, capture_output=True, text=True, env=self.env,
                           timeout=30)
        if check and r.returncode != 0:
            self.fail("corral %s exited %d:\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    # ---- HTTP ----

    def request(self, method, path, body=None, token=None, headers=None, raw=None, timeout=10):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as r:
                text = r.read().decode()
                return r.status, json.loads(text) if text.strip() else None
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def login(self, password=None):
        status, body = self.request("POST", "/api/auth/login",
                                    {"username": "admin", "password": password or self.admin_password()})
        self.assertEqual(status, 200, body)
        self.token = body["token"]
        return self.token

    def api(self, method, path, body=None, expect=200):
        status, answer = self.request(method, path, body, token=self.token)
        self.assertEqual(status, expect, answer)
        return answer

    def workers(self):
        return {w["name"]: w for w in self.api("GET", "/api/workers")["workers"]}

    def assert_error(self, status, body, expect_status, *needles):
        self.assertEqual(status, expect_status, body)
        self.assertIsInstance(body, dict, "error bodies are JSON: %r" % (body,))
        err = body.get("error", {})
        for key in ("code", "message", "fix"):
            self.assertIn(key, err, body)
        self.assertTrue(err["fix"], "every error carries a fix: %r" % body)
        for n in needles:
            self.assertIn(n, err["message"] + " " + err["fix"])

    # ---- polling ----

    def wait_for(self, cond, what, timeout=20, proc=None, show=None):
        """Polls cond until it is true. On a timeout, show() (when given)
        says what was seen instead, for a failure that explains itself."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = cond()
                if last:
                    return last
            except (OSError, KeyError, AssertionError) as e:
                last = e
            if proc is not None and not proc.alive():
                self.fail("%s exited while waiting for %s:\n%s" % (proc.name, what, proc.output()))
            time.sleep(0.1)
        seen = ""
        if show is not None:
            try:
                seen = "\nseen instead: %s" % (show(),)
            except Exception as e:  # what failed is the wait; this only explains it
                seen = "\n(could not show what was seen: %r)" % e
        self.fail("timed out after %ss waiting for %s (last: %r)%s" % (timeout, what, last, seen))

    def wait_state(self, name, state, timeout=20, show=None):
        # one read per try: behind a load balancer two reads may reach two servers
        return self.wait_for(lambda: (lambda w: w["state"] == state and w)(self.workers()[name]),
                             "worker %s to be %s" % (name, state), timeout, show=show)


H100 = {"driver_version": "550.54.15", "cuda_driver_version": 12040, "devices": [
    {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-h100-0", "memory_total": 85899345920,
     "memory_used": 1073741824, "utilization": 10, "temperature": 40, "cc": [9, 0],
     "pci_bus_id": "00000000:17:00.0", "processes": [{"pid": 777, "memory": 1073741824}]},
    {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-h100-1", "memory_total": 85899345920,
     "memory_used": 0, "utilization": 0, "temperature": 35, "cc": [9, 0], "pci_bus_id": "00000000:18:00.0"}]}

L4 = {"driver_version": "535.104.05", "cuda_driver_version": 12020, "devices": [
    {"name": "NVIDIA L4", "uuid": "GPU-l4-0", "memory_total": 24159191040, "memory_used": 0, "cc": [8, 9]}]}


def amd_sysfs(root, name="AMD Instinct MI210", total=68702699520, used=2097152):
    """A fake /sys tree with one amdgpu card, as the amdgpu driver lays it out."""
    dev = os.path.join(root, "class", "drm", "card0", "device")
    os.makedirs(os.path.join(dev, "hwmon", "hwmon2"))
    for fname, value in (("vendor", "0x1002"), ("mem_info_vram_total", str(total)),
                         ("mem_info_vram_used", str(used)), ("gpu_busy_percent", "12"),
                         ("product_name", name), ("hwmon/hwmon2/temp1_input", "51000")):
        with open(os.path.join(dev, fname), "w") as f:
            f.write(value + "\n")
    return root
