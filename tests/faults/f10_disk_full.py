"""Fault: the disk of the server's data directory fills up (SQLite). The data
directory is a small tmpfs in a mount namespace of its own (unshare -m),
held by a process for the whole test, so that servers started inside it
(nsenter) see it across restarts. A write gets 507 with the cause and the
fix, what the server holds keeps being answered, and once there is room
again writes succeed without a restart; the store is intact afterwards
(PRAGMA integrity_check) and every acknowledged write is there."""
import os
import subprocess
import time
import unittest

from harness import ClusterCase


def can_mount():
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return r.returncode == 0


@unittest.skipUnless(can_mount(), "mount namespaces with tmpfs need root (CAP_SYS_ADMIN)")
class DiskFull(ClusterCase):
    def setUp(self):
        super().setUp()
        self.mnt = os.path.join(self.tmp, "disk")
        os.makedirs(self.mnt)
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs -o size=6m tmpfs %s && touch %s/.mounted && exec sleep 100000" % (self.mnt, self.mnt)],
            env=self.env, start_new_session=True)
        self.addCleanup(self.holder.kill)
        self.wait_for(lambda: self.inside("test -e %s/.mounted" % self.mnt).returncode == 0, "the tmpfs")

    def inside(self, command):
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "--", "sh", "-c", command],
                              capture_output=True, text=True)

    def test_a_full_disk_refuses_writes_clearly_and_loses_nothing(self):
        ns = ("nsenter", "-t", str(self.holder.pid), "-m", "--")
        data = os.path.join(self.mnt, "server")
        self.start_server(data_dir=data, wrap=ns)
        password = self.inside("cat %s/initial_admin_password" % data).stdout.strip()
        self.login(password)
        self.api("POST", "/api/models", {"name": "m1", "path": "/models/m1.gguf"}, expect=201)
        # fill the disk to the last byte
        self.inside("dd if=/dev/zero of=%s/filler bs=64k 2>/dev/null; sync" % self.mnt)
        self.assertIn("100%", self.inside("df %s" % self.mnt).stdout)
        refused, t0 = 0, time.monotonic()
        for i in range(20):  # SQLite's page cache may take a few writes before the disk is touched
            status, body = self.request("POST", "/api/models", {"name": "x%d" % i, "path": "/models/x.gguf"},
                                        token=self.token)
            if status != 201:
                refused += 1
                self.assertEqual(status, 507, body)
                self.assertEqual(body["error"]["code"], "insufficient_storage")
                self.assertIn("disk is full", body["error"]["message"])
                self.assertIn("free space", body["error"]["fix"])
                break
        self.assertEqual(refused, 1, "a write was refused once the disk was full")
        acknowledged = {m["name"] for m in self.api("GET", "/api/models")["models"]}
        self.assertIn("m1", acknowledged, "what the server holds is still answered")
        print("\nfault disk-full: first refusal after %.2f s; %d model(s) acknowledged before it"
              % (time.monotonic() - t0, len(acknowledged)))
        # room again: writes succeed without a restart
        self.inside("rm -f %s/filler" % self.mnt)
        self.wait_for(lambda: self.request("POST", "/api/models", {"name": "m2", "path": "/models/m2.gguf"},
                                           token=self.token)[0] == 201, "a write once there is room")
        acknowledged.add("m2")
        # restarted: intact, and every acknowledged write is there
        self.procs[-1].stop()
        check = self.inside("python3 -c \"import sqlite3; print(sqlite3.connect('%s/corral.db')"
                            ".execute('PRAGMA integrity_check').fetchone()[0])\"" % data)
        self.assertEqual(check.stdout.strip(), "ok", check.stderr)
        self.start_server(data_dir=data, wrap=ns, port=self.port)
        self.login(password)
        self.assertEqual({m["name"] for m in self.api("GET", "/api/models")["models"]}, acknowledged)


if __name__ == "__main__":
    unittest.main()
