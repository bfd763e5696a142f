"""Fault: PostgreSQL goes away for 30 s under gateway load, then comes back.
The server (--store on a private PostgreSQL) keeps relaying /v1 from what it
knows, refuses writes with a clear 503, and catches up when PostgreSQL
returns: no desired state lost, no usage lost (the counts kept in memory are
written once it is back). Prints requests failed per second, the time to the
first successful write after PostgreSQL is back, and what was lost."""
import os
import subprocess
import threading
import time
import unittest

from harness import ROOT
from t50_engines import EngineCase, LLAMA_BIN

AWAY_S = float(os.environ.get("CORRAL_FAULT_AWAY_S", "30"))


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
class PostgresAway(EngineCase):
    postgres = True

    def test_postgresql_away_for_30_s_under_load(self):
        self.cluster(("w1", None))
        key = self.cli("keys", "create", "load").stdout.strip()
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 1024, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        self.wait_running("tiny")
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        results, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                status = self.gw("/v1/chat/completions", msg, key, timeout=30)[0]
                results.append((time.monotonic(), status))

        t = threading.Thread(target=load)
        t.start()
        pg = os.path.join(ROOT, "scripts", "pg-test.sh")
        try:
            time.sleep(2)
            down_at = time.monotonic()
            subprocess.run([pg, "down", self.pg_dir], check=True)
            status, body = self.request("POST", "/api/models", {"name": "n", "path": "/models/n.gguf"},
                                        token=self.token)
            self.assert_error(status, body, 503, "PostgreSQL at", "unreachable", "check that PostgreSQL runs")
            self.assertEqual([m["name"] for m in self.api("GET", "/api/models")["models"]], ["tiny"])
            time.sleep(max(0.0, AWAY_S - (time.monotonic() - down_at)))
        finally:
            subprocess.run([pg, "up", self.pg_dir], check=True)
        up_at = time.monotonic()
        self.wait_for(lambda: self.request("POST", "/api/models", {"name": "n", "path": "/models/n.gguf"},
                                           token=self.token)[0] == 201, "a write once PostgreSQL is back")
        catch_up = time.monotonic() - up_at
        # the leader lock went with the connection: leader work stopped, and resumed once the lock was back
        server = self.procs[0]
        self.assertIn("lost the leader lock", server.output())
        self.wait_for(lambda: "leading again" in server.output(), "the lock taken back", timeout=30)
        lead_again = time.monotonic() - up_at
        time.sleep(2)
        stop.set()
        t.join()
        failed = [(at, s) for at, s in results if s != 200]
        per_s = {}
        for at, _ in failed:
            per_s[int(at - down_at)] = per_s.get(int(at - down_at), 0) + 1
        usage = self.api("GET", "/api/usage?by=key")["total"]
        lost_usage = len(results) - usage["requests"]
        models = {m["name"] for m in self.api("GET", "/api/models")["models"]}
        print("\nfault postgres-away: %d requests in %.0f s, %d failed (per second from the stop: %s); "
              "first write %.2f s after PostgreSQL was back, leading again after %.1f s; usage lost %d; "
              "models lost %d" % (len(results), results[-1][0] - results[0][0], len(failed), per_s or "none",
                                  catch_up, lead_again, lost_usage, len({"tiny", "n"} - models)))
        self.assertFalse(failed, "/v1 kept answering while PostgreSQL was away")
        self.assertEqual(lost_usage, 0, "every request metered once PostgreSQL was back")
        self.assertEqual(models, {"tiny", "n"})
        self.assertEqual(self.instance("tiny")["state"], "running")


if __name__ == "__main__":
    unittest.main()
