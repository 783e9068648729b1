#!/usr/bin/env python3
"""What a probe costs the program, in one target, against the same loop with no probe measured in
the same run: a loop that calls a small function (the work a probe sits in), measured with no
probe, with a probe on a function the loop never calls, with a line probe hit at every call (one
local captured), with a probe at the loop's call whose condition is false, after a probe ended
by its limit at its first hit, and after the probes are removed. Each figure is the median of 5 rounds of 200,000 calls; the order of the cases is the
same in each round, and the no-probe case is measured again last.

usage: bench/probes.py [--build build] [--python /usr/bin/python3.11] [--calls 200000]
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PYTHON, AgentConnection, StdinTarget, build_paths  # noqa: E402

CODE = r'''
import sys, time
def work(x):
    y = x + 1  # BENCH_WORK_LINE
    return y
def unused(x):
    return x
def run(n):
    t = time.perf_counter()
    for i in range(n):
        work(i)
    return (time.perf_counter() - t) / n * 1e9
print("ready", flush=True)
for line in sys.stdin:
    print("%.1f" % run(int(line)), flush=True)
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build"))
    ap.add_argument("--python", default=PYTHON)
    ap.add_argument("--calls", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    paths = build_paths(args.build)
    line = CODE.splitlines().index("    y = x + 1  # BENCH_WORK_LINE") + 1
    where = "<string>"
    with StdinTarget(CODE, {"LD_PRELOAD": paths["library"]}, python=args.python) as t:
        conn = AgentConnection(t.pid)

        def timed():
            t.proc.stdin.write("%d\n" % args.calls)
            t.proc.stdin.flush()
            return float(t.proc.stdout.readline())

        def probe(spec, **extra):
            status, reply = conn.request("POST", "/probes", dict({"action": "add", "where": spec}, **extra))
            if status != 200:
                raise SystemExit("probe add %s: %s" % (spec, reply.decode()))
            return json.loads(reply)["probe"]["id"]

        def remove_all():
            conn.request("POST", "/probes", {"action": "remove", "id": 0})

        status, health = conn.request("GET", "/health")
        health = json.loads(health)
        # Measured whole: the cost rule would end the probes hit at every call partway.
        conn.request("PUT", "/config/probes.max_overhead", {"value": "1000"})
        cases = ["no probe", "probe elsewhere", "line probe hit", "condition false", "ended by its limit",
                 "removed"]
        times = {c: [] for c in cases}
        for _ in range(args.rounds):
            times["no probe"].append(timed())
            probe("%s:unused" % where)
            times["probe elsewhere"].append(timed())
            remove_all()
            probe("%s:%d" % (where, line), capture="x")
            times["line probe hit"].append(timed())
            remove_all()
            probe("%s:%d" % (where, line), when="x < 0")
            times["condition false"].append(timed())
            remove_all()
            probe("%s:%d" % (where, line), limit=1)  # ends at its first hit, inside the loop
            times["ended by its limit"].append(timed())
            remove_all()
            times["removed"].append(timed())
        base = statistics.median(times["no probe"])
        print("probes on %s (Python %s), %d calls a round, median of %d rounds"
              % (args.python, health.get("python"), args.calls, args.rounds))
        print("%-20s %12s %10s %14s" % ("case", "ns a call", "ratio", "over no probe"))
        for c in cases:
            m = statistics.median(times[c])
            print("%-20s %12.1f %10.2f %12.1f ns" % (c, m, m / base, m - base))


if __name__ == "__main__":
    main()
