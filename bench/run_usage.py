#!/usr/bin/env python3
"""What durable metering costs the gateway: the same load, interleaved in one
run, through three Corral servers that differ only in how usage and requests
are recorded:

  before   usage written every 30 s, no access log (what Corral did before)
  usage1   usage written every second (--usage-interval 1, the default now)
  now      the defaults: usage every second and one access-log line per request

Each server has its own worker running the fast C upstream (bench/upstream.c)
as its engine. Reports the server's CPU per request (small JSON answers) and
per stream, medians over rounds, as ratios to 'before'. Goal: under 5% more
CPU per request. See bench/README.md."""
import argparse
import json
import os
import statistics
import sys
import tempfile

from run_gateway import Setup, measure

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--chunks", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 2
    tmp = tempfile.mkdtemp(prefix="corral-bench-usage-")
    variants = [("before", ["--usage-interval", "30", "--access-log", "off"]),
                ("usage1", ["--usage-interval", "1", "--access-log", "off"]),
                ("now", ["--access-log", os.path.join(tmp, "access.log")])]
    s = Setup(args.build, tmp, args.chunks, servers=variants)
    res = {name: {"json": [], "stream": []} for name, _ in variants}
    try:
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else list(reversed(variants))  # neither goes first every time
            for mode in ("json", "stream"):
                for name, _ in order:
                    res[name][mode].append(measure(s, name, mode, args.conns, args.seconds, 1))
    finally:
        s.stop()
    lines = sum(1 for _ in open(os.path.join(tmp, "access.log"))) if os.path.exists(os.path.join(tmp, "access.log")) else 0
    summary = {}
    for name, _ in variants:
        summary[name] = {
            "cpu_us_per_request": statistics.median(x["cpu_us_per_req"] for x in res[name]["json"]),
            "cpu_us_per_stream": statistics.median(x["cpu_us_per_req"] for x in res[name]["stream"]),
            "requests_per_s": statistics.median(x["rate"] for x in res[name]["json"]),
            "errors": sum(x["errors"] for m in ("json", "stream") for x in res[name][m]),
        }
    # the machine drifts between rounds (2 cores shared with the load): each
    # round's ratio to 'before' measured beside it, then their median
    def paired(name, mode):
        r = [x["cpu_us_per_req"] / b["cpu_us_per_req"] for x, b in zip(res[name][mode], res["before"][mode])
             if b["cpu_us_per_req"]]
        return {"median": statistics.median(r), "min": min(r), "max": max(r)}
    ratios = {name: {"cpu_per_request": paired(name, "json"), "cpu_per_stream": paired(name, "stream")}
              for name in ("usage1", "now")}
    out = {"args": vars(args), "summary": summary, "ratios_to_before": ratios, "access_log_lines": lines, "raw": res}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "usage.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("durable metering (%d rounds x %.0f s, %d conns; medians):" % (args.rounds, args.seconds, args.conns))
    for name, _ in variants:
        x = summary[name]
        print("  %-7s CPU %6.1f us/request %7.1f us/stream  %7.0f req/s  errors %d" %
              (name, x["cpu_us_per_request"], x["cpu_us_per_stream"], x["requests_per_s"], x["errors"]))
    for name in ("usage1", "now"):
        q, st = ratios[name]["cpu_per_request"], ratios[name]["cpu_per_stream"]
        print("  %s/before, median of per-round ratios: CPU per request %.3f (%.2f-%.2f), per stream %.3f "
              "(%.2f-%.2f)" % (name, q["median"], q["min"], q["max"], st["median"], st["min"], st["max"]))
    print("  access log lines written by 'now': %d" % lines)
    failed = any(summary[n]["errors"] for n in summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
