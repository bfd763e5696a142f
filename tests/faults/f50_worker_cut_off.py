"""Fault: a worker cut off by network namespaces (tier 75's hosts: the server
and three workers, each in a namespace of its own). The link between the
server and the worker that runs the model's one replica goes down: the worker
is not_ready and the instance unreachable; after --reschedule-grace the
replica is placed on another worker and runs there; when the link comes back,
the worker stops its old engine (the server no longer wants it), and at no
time do two engines of the replica serve as its leader once the cut worker is
back. Prints the times of each step."""
import os
import subprocess
import time
import unittest

import t75_netns
from t50_engines import LLAMA_BIN

GRACE_S = 5


def engines_of(ns):
    """PIDs of llama-server processes in the network namespace ns."""
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    out = []
    for pid in r.stdout.split():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if b"llama-server" in f.read().split(b"\0")[0]:
                    out.append(int(pid))
        except OSError:
            pass
    return out


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class WorkerCutOff(t75_netns.MultiHost):
    # tier 75's own tests are not run again here
    test_a_worker_the_others_cannot_reach_is_left_out_of_the_group = None
    test_latency_on_one_link_fails_the_round_trip_check = None
    test_a_replica_whose_link_goes_silent_is_skipped_after_the_connect_timeout = None

    def instances(self):
        return self.api("GET", "/api/instances?model=tiny")["instances"]

    def test_a_worker_cut_off_is_rescheduled_and_its_old_engine_reaped(self):
        self.cluster(extra=("--reschedule-grace", str(GRACE_S)))
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model, "ctx": 1024, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]})
        first = self.wait(lambda: (lambda i: i and i[0]["state"] == "running" and i[0])(self.instances()),
                          "tiny running", timeout=60)
        names = {w["id"]: w["name"] for w in self.api("GET", "/api/workers")["workers"]}
        cut = names[first["placement"]["leader"]][len("gpu-"):]
        ns = self.ns[cut]
        old_engines = engines_of(ns)
        self.assertEqual(len(old_engines), 1, "one engine on gpu-%s" % cut)
        link = "crs%s%s" % (cut, self.tag)
        t0 = time.monotonic()
        t75_netns.sh("ip", "-n", self.ns["s"], "link", "set", link, "down")
        try:
            self.wait(lambda: [w["state"] for w in self.api("GET", "/api/workers")["workers"]
                               if w["name"] == "gpu-" + cut] == ["not_ready"], "gpu-%s not_ready" % cut)
            t_lost = time.monotonic() - t0
            self.wait(lambda: first["id"] in [i["id"] for i in self.instances() if i["state"] == "unreachable"],
                      "the instance unreachable")
            t_unreachable = time.monotonic() - t0
            second = self.wait(lambda: (lambda i: i and i[0]["id"] != first["id"] and i[0]["state"] == "running"
                                        and i[0])(self.instances()), "the replica running elsewhere", timeout=60)
            t_moved = time.monotonic() - t0
            self.assertNotEqual(names[second["placement"]["leader"]], "gpu-" + cut)
            self.assertEqual(len(self.instances()), 1, "one replica, not two")
            # cut off, the old engine still runs: nothing told it otherwise
            self.assertEqual(engines_of(ns), old_engines)
        finally:
            t75_netns.sh("ip", "-n", self.ns["s"], "link", "set", link, "up")
        t_back = time.monotonic()
        self.wait(lambda: not engines_of(ns), "the old engine on gpu-%s stopped" % cut, timeout=60)
        t_reaped = time.monotonic() - t_back
        self.wait(lambda: [w["state"] for w in self.api("GET", "/api/workers")["workers"]
                           if w["name"] == "gpu-" + cut] == ["ready"], "gpu-%s ready again" % cut)
        insts = self.instances()
        self.assertEqual([(i["id"], i["state"]) for i in insts], [(second["id"], "running")])
        total = sum(len(engines_of(self.ns[k])) for k in ("a", "b", "c"))
        self.assertEqual(total, 1, "one engine serves the replica")
        print("\nfault worker-cut-off: not_ready %.1f s after the cut, instance unreachable at %.1f s, running on "
              "another worker at %.1f s (grace %d s); the old engine stopped %.1f s after the link came back; "
              "engines of the replica afterwards: 1" % (t_lost, t_unreachable, t_moved, GRACE_S, t_reaped))


if __name__ == "__main__":
    unittest.main()
