#!/usr/bin/env python3
"""What tracing allocations costs, for `probing PID memory diff`: tracemalloc must be on from the
start (PYTHONTRACEMALLOC: probing never starts it in a running process, which can crash it), so
three target processes run side by side (the agent preloaded in each): tracing off, on with 1
frame, on with 10 frames. Workloads: a pure-Python loop that allocates (dicts, lists, strings:
the worst case for tracemalloc, which hooks every allocation) and a small PyTorch training step
(torch's tensors come from its C++ allocator, which tracemalloc does not see). Each round runs one
block in each process, the order reversed every other round. Overhead: the block's median
iteration time against the `off` block of the same round, median over rounds."""

import argparse
import json
import os
import statistics
import subprocess
import sys

from common import PYTHON, build_paths, wait_for_agent

TARGET = r'''
import json, sys, time
def python_work():
    rows = []
    for i in range(2000):
        rows.append({"i": i, "name": "row-%d" % i, "values": [i, i + 1, i + 2]})
    return len(rows)
torch_step = None
try:
    import torch
    torch.set_num_threads(1)
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(8)])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 64)
    def torch_step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
except ImportError:
    pass
print("ready", flush=True)
for line in sys.stdin:
    kind, k = line.split()
    work = python_work if kind == "python" else torch_step
    times = []
    for _ in range(int(k)):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    print(json.dumps(times), flush=True)
'''

SETTINGS = (("off", 0), ("traced, 1 frame", 1), ("traced, 10 frames", 10))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    print("machine: %d CPUs, load %.2f; python %s" % (os.cpu_count(), os.getloadavg()[0], PYTHON))
    procs = {}
    try:
        for name, frames in SETTINGS:
            env = dict(os.environ, LD_PRELOAD=build_paths(args.build)["library"], PROBING_TORCH="off")
            env.pop("PYTHONTRACEMALLOC", None)
            if frames:
                env["PYTHONTRACEMALLOC"] = str(frames)
            procs[name] = subprocess.Popen([PYTHON, "-u", "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           env=env, text=True)
        for proc in procs.values():
            assert proc.stdout.readline().strip() == "ready"
            wait_for_agent(proc.pid)

        def block(kind, name):
            proc = procs[name]
            proc.stdin.write("%s %d\n" % (kind, args.k))
            proc.stdin.flush()
            return statistics.median(json.loads(proc.stdout.readline()))

        for kind in ("python", "torch"):
            res = {name: [] for name, _ in SETTINGS}
            for r in range(args.rounds):
                for name, _ in SETTINGS if r % 2 == 0 else tuple(reversed(SETTINGS)):
                    res[name].append(block(kind, name))
            print("%s: %s, %d rounds of %d iterations" % (kind, "2,000 dicts and lists" if kind == "python"
                                                         else "8 x Linear(64, 64), batch 32, SGD", args.rounds, args.k))
            print("  %-18s %12s %10s" % ("setting", "iteration ms", "overhead"))
            for name, _ in SETTINGS:
                ovh = statistics.median(100.0 * (a / n - 1) for a, n in zip(res[name], res["off"]))
                print("  %-18s %12.3f %+9.1f%%" % (name, 1e3 * statistics.median(res[name]), ovh))
        return 0
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
