"""Tier 82: cluster events. A deploy, a refused placement and an engine
killed mid-run appear as events in the order they happened, with their
causes; the SSE stream resumes after Last-Event-ID without losing or
repeating one; `corral events` lists them and -f follows them."""
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import unittest

from harness import CORRAL
from t50_engines import EngineCase, LLAMA_BIN


class Stream:
    """GET /api/events as SSE in a thread: (id, kind, event) tuples in arrival order."""

    def __init__(self, port, token, last_id=None):
        self.events, self.conn = [], http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Authorization": "Bearer " + token, "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        self.conn.request("GET", "/api/events", headers=headers)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        assert self.resp.getheader("Content-Type").startswith("text/event-stream")
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        ev = {}
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if not line:
                    if "data" in ev:
                        self.events.append((int(ev["id"]), ev["event"], json.loads(ev["data"])))
                    ev = {}
                elif not line.startswith(":"):
                    k, _, v = line.partition(": ")
                    ev[k] = v
        except (OSError, ValueError):
            pass

    def close(self):
        self.conn.close()


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class Events(EngineCase):
    def test_events_tell_what_happened_in_order_and_the_stream_resumes(self):
        self.cluster(("w1", None))
        live = Stream(self.port, self.token)
        self.addCleanup(live.close)
        listed = self.api("GET", "/api/events")["events"]
        kinds = [(e["kind"], e["subject"]) for e in listed]
        self.assertIn(("worker.joined", "w1"), kinds)
        self.assertLess(kinds.index(("worker.joined", "w1")), kinds.index(("worker.ready", "w1")))

        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 1024, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("tiny")
        self.api("POST", "/api/models", {"name": "nowhere", "path": self.model("n.gguf"), "allow_cpu_offload": True,
                                          "selector": {"zone": "mars"}}, expect=201)
        os.kill(self.leader_report(inst)["pid"], signal.SIGKILL)
        self.wait_for(lambda: self.instance("tiny")["state"] == "error", "the error state")
        self.wait_running("tiny")

        def seen(kind, subject):
            return [e for e in live.events if e[1] == kind and e[2]["subject"] == subject]
        self.wait_for(lambda: len(seen("instance.running", inst["id"])) == 2, "the instance running twice", timeout=30)
        self.wait_for(lambda: seen("placement.refused", "nowhere"), "the refused placement")
        ids = [e[0] for e in live.events]
        self.assertEqual(ids, sorted(ids), "in order")
        self.assertEqual(len(ids), len(set(ids)), "each once")
        order = [(k, e["subject"]) for _, k, e in live.events]
        deployed = order.index(("model.deployed", "tiny"))
        placed = order.index(("placement.decided", "tiny"))
        first_run = order.index(("instance.running", inst["id"]))
        crashed = order.index(("instance.error", inst["id"]))
        second_run = len(order) - 1 - order[::-1].index(("instance.running", inst["id"]))
        self.assertTrue(deployed < placed < first_run < crashed < second_run, order)
        err = live.events[crashed][2]
        self.assertIn("killed by signal 9", err["message"])
        self.assertEqual(err["detail"]["model"], "tiny")
        refused = seen("placement.refused", "nowhere")[0][2]
        self.assertIn("do not match the selector", refused["message"])
        self.assertTrue(refused["detail"]["reasons"], "the per-worker reasons come with it")
        self.assertIn("deployed by admin", seen("model.deployed", "tiny")[0][2]["message"])

        # resuming after an event replays exactly the ones after it, then goes on live
        mid = live.events[len(live.events) // 2][0]
        again = Stream(self.port, self.token, last_id=mid)
        self.addCleanup(again.close)
        self.wait_for(lambda: len(again.events) >= len([i for i in ids if i > mid]), "the replay")
        self.assertEqual([e[0] for e in again.events][:len([i for i in ids if i > mid])], [i for i in ids if i > mid])
        self.api("DELETE", "/api/models/nowhere")
        self.wait_for(lambda: any(k == "model.deleted" for _, k, _ in again.events), "a new event on the resumed stream")
        self.assertEqual(listed[0]["id"] if listed else 0, self.api("GET", "/api/events?limit=10000")["events"][0]["id"])
        after = self.api("GET", "/api/events?after=%d" % mid)["events"]
        self.assertEqual([e["id"] for e in after][:len([i for i in ids if i > mid])], [i for i in ids if i > mid])
        status, body = self.request("GET", "/api/events?after=x", token=self.token)
        self.assert_error(status, body, 400, "event id")
        status, body = self.request("GET", "/api/events")
        self.assertEqual(status, 401)

        # the CLI: a list, JSON lines, and -f following new events
        out = self.cli("events", "--limit", "500").stdout
        self.assertIn("model 'tiny' deployed by admin", out)
        self.assertIn("instance.error", out)
        lines = self.cli("events", "--json", "--limit", "3").stdout.strip().split("\n")
        self.assertEqual(len(lines), 3)
        self.assertEqual([json.loads(l)["id"] for l in lines], sorted(json.loads(l)["id"] for l in lines))
        f = subprocess.Popen([CORRAL, "events", "-f", "--limit", "1"], stdout=subprocess.PIPE, text=True, env=self.env)
        self.addCleanup(lambda: (f.kill(), f.wait()))
        f.stdout.readline()  # the last event
        self.api("PATCH", "/api/models/tiny", {"replicas": 2})
        line = f.stdout.readline()
        self.assertIn("model.updated", line)
        self.assertIn("changed by admin", line)


if __name__ == "__main__":
    unittest.main()
