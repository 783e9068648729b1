#!/usr/bin/env python3
"""What a probe costs the program, in one target, against the same loop with no probe measured in
the same run: a loop that calls a small function (the work a probe sits in), measured with no
probe, with a probe on a function the loop never calls, with a line probe hit at every call (one
local captured), with a probe at the loop's call whose condition is false, after a probe ended
by its limit at its first hit, and after the probes are removed. Each figure is the median of 5
rounds of 200,000 calls; the order of the cases is the same in each round, and the no-probe case
is measured again last.

Then, where torch imports, a training step of the small transformer (bench/common.py; PyTorch
tracing off, so that only the probe differs) with a line probe on a line of the training loop
that runs once a step, capturing the loss, added and removed in turn: the median step of each
round of --steps steps, the median of 2 x --rounds rounds each.

usage: bench/probes.py [--build build] [--python /usr/bin/python3.11] [--calls 200000] [--steps 40]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PYTHON, TRANSFORMER, AgentConnection, StdinTarget, build_paths  # noqa: E402

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


STEP_CODE = TRANSFORMER + r'''
model = Transformer()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randint(0, VOCAB, (BATCH, SEQ))

def train(n):
    times = []
    for i in range(n):
        t = time.perf_counter()
        loss = model(x).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        done = i  # BENCH_STEP_LINE
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3

train(5)
print("ready", flush=True)
for line in sys.stdin:
    print("%.4f" % train(int(line)), flush=True)
'''


def probed_target(code, env, python):
    """(target, connection, timed(n), probe(spec, **extra), remove_all())"""
    t = StdinTarget(code, env, python=python)
    conn = AgentConnection(t.pid)

    def timed(n):
        t.proc.stdin.write("%d\n" % n)
        t.proc.stdin.flush()
        return float(t.proc.stdout.readline())

    def probe(spec, **extra):
        status, reply = conn.request("POST", "/probes", dict({"action": "add", "where": spec}, **extra))
        if status != 200:
            raise SystemExit("probe add %s: %s" % (spec, reply.decode()))
        return json.loads(reply)["probe"]["id"]

    def remove_all():
        conn.request("POST", "/probes", {"action": "remove", "id": 0})

    # Measured whole: the cost rule would end the probes hit at every call partway.
    conn.request("PUT", "/config/probes.max_overhead", {"value": "1000"})
    return t, conn, timed, probe, remove_all


def training_step(args, paths):
    line = STEP_CODE.splitlines().index("        done = i  # BENCH_STEP_LINE") + 1
    t, conn, timed, probe, remove_all = probed_target(
        STEP_CODE, {"LD_PRELOAD": paths["library"], "PROBING_TORCH": "off"}, args.python)
    with t:
        # On and off in turn, the order swapped every round (ABBA), so that a drift of the machine
        # (the other core's load, the allocator's warming) falls on both alike; every "no probe"
        # round after the first comes after a probe was removed.
        cases = ["no probe", "a probe once a step"]
        times = {c: [] for c in cases}
        hit_cost, hits = 0.0, 0  # what the probe's hits took, by its own count (probe list's cost_s)
        before = timed(args.steps)
        for r in range(args.rounds * 2):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                if on:
                    probe("<string>:%d" % line, capture="loss.item()")
                times[cases[on]].append(timed(args.steps))
                if on:
                    [p] = json.loads(conn.request("GET", "/probes")[1])["probes"]
                    hit_cost, hits = hit_cost + p["cost_s"], hits + p["hits"]
                    remove_all()
    base = statistics.median(times["no probe"])
    print("\nthe transformer's training step: the median step of each round of %d steps, the median of %d "
          "rounds each, on and off in turn" % (args.steps, args.rounds * 2))
    print("%-20s %12s %10s" % ("case", "ms a step", "over none"))
    for c in cases:
        m = statistics.median(times[c])
        print("%-20s %12.3f %+9.2f %%" % (c, m, (m / base - 1) * 100))
    print("%-20s %12.3f %+9.2f %%   (one round, before any probe)" % ("before any probe", before,
                                                                       (before / base - 1) * 100))
    print("the probe's hits themselves: %d hits, %.1f us each, %.3f %% of a step (its own count: the step "
          "times above move by more than that with the machine's load)"
          % (hits, hit_cost / max(hits, 1) * 1e6, hit_cost / max(hits, 1) / (base / 1e3) * 100))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build"))
    ap.add_argument("--python", default=PYTHON)
    ap.add_argument("--calls", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="training steps a round (the transformer case)")
    args = ap.parse_args()
    paths = build_paths(args.build)
    line = CODE.splitlines().index("    y = x + 1  # BENCH_WORK_LINE") + 1
    where = "<string>"
    t, conn, timed_n, probe, remove_all = probed_target(CODE, {"LD_PRELOAD": paths["library"]}, args.python)
    with t:
        def timed():
            return timed_n(args.calls)

        status, health = conn.request("GET", "/health")
        health = json.loads(health)
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
    if subprocess.run([args.python, "-c", "import torch"], capture_output=True).returncode == 0:
        training_step(args, paths)
    else:
        print("\n(no transformer step: torch does not import under %s)" % args.python)


if __name__ == "__main__":
    main()
