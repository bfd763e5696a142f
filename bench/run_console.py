#!/usr/bin/env python3
"""Console benchmark: the first load of the web console (its size, and the time
until the login form can be used, in headless chromium with a cold cache)
from Corral's server against nginx serving the very same files as the
yardstick, interleaved in one run. Writes bench/results/console.json. Needs
chromium and playwright-core (installed into the cache as the tests do)."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from run_gateway import free_port
from run_status import wait_http

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 5
    from t90_console import install_playwright, CHROMIUM
    mods, why = install_playwright()
    if not mods:
        print("bench console: skipped: " + why)
        return 0
    tmp = tempfile.mkdtemp(prefix="corral-bench-console-")
    os.chmod(tmp, 0o755)  # nginx's workers read the files as another user
    procs = []
    try:
        port = free_port()
        procs.append(subprocess.Popen([os.path.join(ROOT, args.build, "corral"), "server", "--disable-worker", "--host",
                                       "127.0.0.1", "--port", str(port), "--data-dir", os.path.join(tmp, "data")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http("http://127.0.0.1:%d/healthz" % port)
        site = os.path.join(tmp, "site")
        os.makedirs(os.path.join(site, "console"))
        for f in ("index.html", "app.css", "app.js"):
            shutil.copy(os.path.join(ROOT, "console", f), os.path.join(site, "console", f))
        shutil.copy(os.path.join(ROOT, "console", "index.html"), os.path.join(site, "index.html"))
        ng = free_port()
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write("worker_processes 1; daemon off; pid %s/nginx.pid; error_log %s/nginx.err;\n"
                    "events {}\nhttp { include /etc/nginx/mime.types; access_log off;\n"
                    "  server { listen 127.0.0.1:%d; root %s; location /api/ { return 401 '{}'; } } }\n"
                    % (tmp, tmp, ng, site))
        procs.append(subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                                       os.path.join(tmp, "nginx.conf"), "-p", tmp]))
        wait_http("http://127.0.0.1:%d/" % ng)
        corral_url, nginx_url = "http://127.0.0.1:%d/" % port, "http://127.0.0.1:%d/" % ng
        r = subprocess.run(["node", os.path.join(HERE, "console_tti.cjs"), str(args.rounds), corral_url, nginx_url],
                           capture_output=True, text=True, env=dict(os.environ, NODE_PATH=mods, CHROMIUM=CHROMIUM),
                           timeout=600)
        if r.returncode:
            print("bench console: failed: " + r.stderr[-800:])
            return 1
        res = json.loads(r.stdout)
        c, n = res[corral_url], res[nginx_url]
        out = {"rounds": args.rounds, "corral": c, "nginx": n, "tti_ratio": c["median_ms"] / n["median_ms"]}
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "console.json"), "w") as f:
            json.dump(out, f, indent=1)
        print("console first load (%d cold loads each, medians): corral %.0f ms, %d bytes; nginx (same files) "
              "%.0f ms, %d bytes; corral/nginx time to interactive %.2f"
              % (args.rounds, c["median_ms"], c["bytes"], n["median_ms"], n["bytes"], out["tti_ratio"]))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM if p is procs[0] else signal.SIGQUIT)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
