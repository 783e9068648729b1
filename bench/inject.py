#!/usr/bin/env python3
"""Attach cost: from starting `probing PID inject` to the first eval answer (`probing PID eval
1`), against gdb attaching and running `PyGILState_Ensure` + `PyRun_SimpleString` (the approach
of pyrasite and friends) on the same kind of target, in the same run. Each attach gets a fresh
target: an idle one (sleeping) and a PyTorch training loop (CPU, one thread).
Targets: <= 100 ms idle, <= 300 ms in training.
"""

import argparse
import shutil
import statistics
import subprocess
import time

from common import Target, build_paths

IDLE = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(0.5)\n"
TRAIN = (
    "import torch\n"
    "torch.set_num_threads(1)\n"
    "model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.01)\n"
    "x = torch.randn(32, 64)\n"
    "step = 0\n"
    "while True:\n"
    "    opt.zero_grad(); model(x).pow(2).mean().backward(); opt.step(); step += 1\n"
    "    if step == 3: print('ready', flush=True)\n"
)


def probing_attach(probing, pid):
    t0 = time.perf_counter()
    subprocess.run([probing, str(pid), "inject"], check=True, capture_output=True)
    out = subprocess.run([probing, str(pid), "eval", "1"], check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    assert out.stdout.strip() == "1", out.stdout
    return elapsed


def gdb_attach(pid):
    t0 = time.perf_counter()
    subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx",
         "-ex", "set $g = ((int (*)(void))PyGILState_Ensure)()",
         "-ex", "call ((int (*)(const char *))PyRun_SimpleString)(\"1\")",
         "-ex", "call ((void (*)(int))PyGILState_Release)($g)"],
        check=True, capture_output=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("-n", type=int, default=5, help="fresh targets per case")
    args = ap.parse_args()
    probing = build_paths(args.build)["probing"]
    have_gdb = shutil.which("gdb") is not None
    print("attach and first answer, median of %d fresh targets (ms)" % args.n)
    print("%-10s %10s %10s %8s" % ("target", "probing", "gdb", "ratio"))
    for name, code in (("idle", IDLE), ("training", TRAIN)):
        ours, theirs = [], []
        for _ in range(args.n):
            with Target(code) as t:
                ours.append(probing_attach(probing, t.pid))
            if have_gdb:
                with Target(code) as t:
                    theirs.append(gdb_attach(t.pid))
        a = statistics.median(ours) * 1000
        if theirs:
            b = statistics.median(theirs) * 1000
            print("%-10s %10.1f %10.1f %8.3f" % (name, a, b, a / b))
        else:
            print("%-10s %10.1f %10s %8s" % (name, a, "no gdb", "-"))


if __name__ == "__main__":
    main()
