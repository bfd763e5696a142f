"""Tier 80: GET /metrics of the server and of workers. The exposition passes
`promtool check metrics`; its values agree with what the API, the fake NVML
device and the engines themselves say; a real Prometheus scrapes a server and
two workers and answers queries about them; the alerting rules and the
Grafana dashboard in docs/monitoring use only metrics Corral exports."""
import json
import os
import re
import shutil
import subprocess
import unittest
import urllib.parse
import urllib.request

from harness import ClusterCase, free_port
from t50_engines import EngineCase, LLAMA_BIN, GIB

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(HERE, "..", "..", "docs", "monitoring")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers["Content-Type"]
        return r.read().decode()


def parse(text):
    """{(name, frozenset of (label, value)): value} and the set of family names."""
    samples, families = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples, families


def get(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def promtool_clean(case, text):
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    case.assertEqual(r.returncode, 0, "promtool check metrics: %s%s" % (r.stdout, r.stderr))


@unittest.skipUnless(shutil.which("promtool") and shutil.which("prometheus"),
                     "promtool and prometheus not installed (scripts/deps.sh installs Debian's prometheus)")
class MetricsToken(ClusterCase):
    def test_metrics_are_open_unless_a_token_is_set(self):
        self.start_server()
        self.assertIn("corral_workers", scrape(self.url + "/metrics"))
        self.procs[-1].stop()
        self.start_server(extra=("--metrics-token", "scrape-secret"), port=self.port)
        status, body = self.request("GET", "/metrics")
        self.assert_error(status, body, 401, "--metrics-token")
        status, body = self.request("GET", "/metrics", token="wrong")
        self.assertEqual(status, 401)
        text = scrape(self.url + "/metrics", token="scrape-secret")
        promtool_clean(self, text)


@unittest.skipUnless(os.access(os.path.join(LLAMA_BIN, "llama-server"), os.X_OK), "llama-server not built")
@unittest.skipUnless(shutil.which("promtool") and shutil.which("prometheus"),
                     "promtool and prometheus not installed (scripts/deps.sh installs Debian's prometheus)")
class Metrics(EngineCase):
    def test_server_and_worker_metrics_agree_with_the_cluster_and_prometheus_reads_them(self):
        dev = {"name": "NVIDIA L4", "uuid": "GPU-L4-0", "memory_total": 24 * GIB, "memory_used": GIB,
               "utilization": 37, "temperature": 55, "power_mw": 71000, "cc": [8, 9],
               "processes": [{"pid": 1, "memory": GIB}]}  # someone else's process: foreign memory
        self.cluster(("w1", {"driver_version": "550.54.15", "cuda_driver_version": 12040, "devices": [dev]}),
                     ("w2", None))
        key = self.cli("keys", "create", "m").stdout.strip()
        self.api("POST", "/api/models", {"name": "tiny", "path": self.model(), "ctx": 1024, "allow_cpu_offload": True,
                                          "engine_args": ["-t", "1"]}, expect=201)
        inst = self.wait_running("tiny")
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 6}
        for body in (msg, msg, dict(msg, stream=True)):
            self.assertEqual(self.gw("/v1/chat/completions", body, key)[0], 200)
        self.assertEqual(self.gw("/v1/chat/completions", dict(msg, model="made-up"), key)[0], 404)

        text = scrape(self.url + "/metrics")
        promtool_clean(self, text)
        s, server_families = parse(text)
        self.assertEqual(get(s, "corral_workers", state="ready"), 2)
        self.assertEqual(get(s, "corral_workers", state="unreachable"), 0)
        g = dict(worker="w1", gpu="0")
        self.assertEqual(get(s, "corral_gpu_memory_bytes", kind="total", **g), 24 * GIB)
        self.assertEqual(get(s, "corral_gpu_memory_bytes", kind="used", **g), GIB)
        self.assertEqual(get(s, "corral_gpu_memory_bytes", kind="foreign", **g), GIB, "pid 1 is no engine of ours")
        claims = sum(gg.get("claim", 0) for pw in inst["placement"]["workers"] if pw["name"] == "w1"
                     for gg in pw.get("gpus", []) if gg["index"] == 0)
        self.assertEqual(get(s, "corral_gpu_memory_bytes", kind="claimed", **g), claims)
        self.assertAlmostEqual(get(s, "corral_gpu_utilization_ratio", **g), 0.37)
        self.assertEqual(get(s, "corral_gpu_temperature_celsius", **g), 55)
        self.assertAlmostEqual(get(s, "corral_gpu_power_watts", **g), 71)
        self.assertIsNone(get(s, "corral_gpu_memory_bytes", worker="w2", gpu="0", kind="total"), "w2 has no GPU")
        self.assertEqual(get(s, "corral_model_replicas_desired", model="tiny"), 1)
        self.assertEqual(get(s, "corral_model_replicas_running", model="tiny"), 1)
        self.assertEqual(get(s, "corral_instances", model="tiny", state="running"), 1)
        self.assertEqual(get(s, "corral_instances", model="tiny", state="crash_loop"), 0)
        self.assertGreaterEqual(get(s, "corral_scheduler_placements_total"), 1)
        self.assertGreaterEqual(get(s, "corral_scheduler_placement_seconds_count"), 1)
        self.assertEqual(get(s, "corral_gateway_requests_total", model="tiny", code="200"), 3)
        self.assertEqual(get(s, "corral_gateway_requests_total", model="", code="404"), 1,
                         "made-up model names are not labels")
        self.assertEqual(get(s, "corral_gateway_time_to_first_token_seconds_count", model="tiny"), 1)
        self.assertEqual(get(s, "corral_gateway_request_duration_seconds_count", model="tiny"), 3)
        self.assertEqual(get(s, "corral_gateway_requests_in_flight"), 0)
        completion = get(s, "corral_gateway_completion_tokens_total", model="tiny")
        self.assertEqual(completion, 18, "6 tokens x 3 answers")

        # the worker running the engine: node, GPU, and the engine's own counts under Corral's names
        leader = [pw["name"] for pw in inst["placement"]["workers"]][0]
        wport = [p.port for p in self.procs if p.name == "worker-" + leader][0]
        worker_url = "http://127.0.0.1:%d/metrics" % wport
        labels = dict(model="tiny", instance=inst["id"])
        self.wait_for(lambda: get(parse(scrape(worker_url))[0], "corral_engine_generation_tokens_total", **labels)
                      == completion, "the engine's own token count, read by the worker")
        wtext = scrape(worker_url)
        promtool_clean(self, wtext)
        w, worker_families = parse(wtext)
        # llama.cpp counts prompt tokens it did not find in its cache: fewer than the answers' usage says
        self.assertGreater(get(w, "corral_engine_prompt_tokens_total", **labels), 0)
        self.assertLessEqual(get(w, "corral_engine_prompt_tokens_total", **labels),
                             get(s, "corral_gateway_prompt_tokens_total", model="tiny"))
        self.assertEqual(get(w, "corral_engine_requests_running", **labels), 0)
        self.assertEqual(get(w, "corral_node_cpu_cores", worker=leader), os.cpu_count())
        w1 = parse(scrape("http://127.0.0.1:%d/metrics" % [p.port for p in self.procs if p.name == "worker-w1"][0]))[0]
        self.assertEqual(get(w1, "corral_gpu_memory_bytes", worker="w1", gpu="0", kind="total"), 24 * GIB)

        # docs/monitoring: rules load, and every metric they or the dashboard use is exported
        r = subprocess.run(["promtool", "check", "rules", os.path.join(DOCS, "alerts.yml")], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(DOCS, "alerts.yml")) as f:
            used = set(re.findall(r"\bcorral_[a-z_]+", f.read()))
        with open(os.path.join(DOCS, "grafana-dashboard.json")) as f:
            dash = json.load(f)
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        self.assertGreater(len(exprs), 10)
        used |= set(n for e in exprs for n in re.findall(r"\bcorral_[a-z_]+", e))
        exported = server_families | worker_families
        for name in used:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            self.assertIn(base, exported, "docs/monitoring uses %s, which Corral does not export" % name)

        # a real Prometheus scrapes the server and both workers and answers a query
        prom_port = free_port()
        targets = ["127.0.0.1:%d" % self.port] + ["127.0.0.1:%d" % p.port for p in self.procs
                                                  if p.name.startswith("worker-")]
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "rule_files: [%s]\n"
                    "scrape_configs:\n  - job_name: corral\n    static_configs: [{targets: %s}]\n"
                    % (os.path.abspath(os.path.join(DOCS, "alerts.yml")), json.dumps(targets)))
        with open(os.path.join(self.tmp, "prometheus.log"), "w") as log:
            prom = subprocess.Popen(["prometheus", "--config.file", cfg, "--storage.tsdb.path",
                                     os.path.join(self.tmp, "tsdb"), "--web.listen-address",
                                     "127.0.0.1:%d" % prom_port], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.addCleanup(lambda: (prom.kill(), prom.wait()))

        def query(q):
            url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (prom_port, urllib.parse.quote(q))
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return json.load(r)["data"]["result"]
            except OSError:
                return None
        self.wait_for(lambda: (lambda r: r and len(r) == 3 and all(x["value"][1] == "1" for x in r))(query("up")),
                      "Prometheus scraping 3 targets", timeout=60)
        self.wait_for(lambda: (lambda r: r and r[0]["value"][1] == "2")(
            query('corral_workers{state="ready"}')), "corral_workers{state=ready} in Prometheus", timeout=30)
        r = self.wait_for(lambda: query('sum(corral_engine_generation_tokens_total{model="tiny"})'),
                          "engine tokens in Prometheus", timeout=30)
        self.assertEqual(float(r[0]["value"][1]), completion)


if __name__ == "__main__":
    unittest.main()
