"""Fault: PostgreSQL's own disk fills up. A private PostgreSQL whose data
directory is a small tmpfs in a mount namespace of its own serves a corral
server (--store). Writes while the disk is full are refused with the cause
and the fix (507 when PostgreSQL says it is out of space, 503 while it
recovers), what the server holds keeps being answered, and once there is
room again writes succeed without restarting anything; every acknowledged
write is in PostgreSQL afterwards."""
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import ROOT, ClusterCase
from f10_disk_full import can_mount

PG = os.path.join(ROOT, "scripts", "pg-test.sh")


@unittest.skipUnless(can_mount(), "mount namespaces with tmpfs need root (CAP_SYS_ADMIN)")
class PostgresDiskFull(ClusterCase):
    def setUp(self):
        super().setUp()
        self.mnt = tempfile.mkdtemp(prefix="corral-pgdisk-")  # the postgres user must reach it
        os.chmod(self.mnt, 0o755)
        self.addCleanup(shutil.rmtree, self.mnt, True)
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs -o size=96m,mode=0755 tmpfs %s && touch %s/.mounted && exec sleep 100000"
             % (self.mnt, self.mnt)], env=self.env, start_new_session=True)
        self.addCleanup(self.holder.kill)
        self.wait_for(lambda: self.inside("test -e %s/.mounted" % self.mnt).returncode == 0, "the tmpfs")
        r = self.inside("%s start %s/pg" % (PG, self.mnt))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.store = r.stdout.strip()

    def tearDown(self):
        # PostgreSQL first, while the namespace's holder (which the base class stops) still lets us in
        self.inside("%s stop %s/pg" % (PG, self.mnt))
        super().tearDown()

    def inside(self, command):
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--", "sh", "-c", command],
                              capture_output=True, text=True)

    def test_postgresql_out_of_disk_refuses_writes_clearly_and_recovers(self):
        self.start_server()
        self.login()
        self.api("POST", "/api/models", {"name": "m1", "path": "/models/m1.gguf"}, expect=201)
        self.inside("dd if=/dev/zero of=%s/filler bs=64k 2>/dev/null; sync" % self.mnt)
        answers = []
        for i in range(40):  # PostgreSQL's buffers may take a few writes before the disk is touched
            status, body = self.request("POST", "/api/models", {"name": "x%d" % i, "path": "/models/x.gguf"},
                                        token=self.token)
            answers.append((status, body))
            if status != 201:
                break
        status, body = answers[-1]
        self.assertIn(status, (503, 507), body)
        self.assertIn("PostgreSQL at", body["error"]["message"])
        self.assertTrue("disk" in body["error"]["fix"] or "PostgreSQL runs" in body["error"]["fix"], body)
        acknowledged = {"m1"} | {"x%d" % i for i, (s, _) in enumerate(answers) if s == 201}
        self.assertEqual({m["name"] for m in self.api("GET", "/api/models")["models"]}, acknowledged,
                         "what the server holds is still answered, nothing half-made")
        print("\nfault postgres-disk-full: %d write(s) acknowledged before the refusal, which was %d: %s"
              % (len(acknowledged) - 1, status, body["error"]["message"][:160]))
        # room again: writes succeed without a restart of anything
        self.inside("rm -f %s/filler" % self.mnt)
        t0 = time.monotonic()
        self.wait_for(lambda: self.request("POST", "/api/models", {"name": "after", "path": "/models/a.gguf"},
                                           token=self.token)[0] == 201, "a write once there is room", timeout=60)
        print("fault postgres-disk-full: writes again %.1f s after the space was freed" % (time.monotonic() - t0))
        acknowledged.add("after")
        stored = set(self.psql(self.store, "SELECT string_agg(name, ',') FROM models").split(","))
        self.assertEqual(stored, acknowledged, "every acknowledged write is in PostgreSQL")


if __name__ == "__main__":
    unittest.main()
