#!/usr/bin/env python3
"""Attach cost: from starting `probing PID inject` to the first eval answer (`probing PID eval
1`), against gdb attaching and running `PyGILState_Ensure` + `PyRun_SimpleString` (the approach
of pyrasite and friends) on the same kind of target, in the same run. Each attach gets a fresh
target: an idle one (sleeping), a PyTorch training loop (CPU, one thread), and three hung ones
whose every thread waits: in queue.Queue().get(), in a deadlock of two threading.Locks, and for
the GIL that one thread holds in C calls of about 0.3 s.
Targets: <= 100 ms idle, <= 300 ms in training and when hung.
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

QUEUE = "import queue\nprint('ready', flush=True)\nqueue.Queue().get()\n"
DEADLOCK = (
    "import threading\n"
    "a, b, both = threading.Lock(), threading.Lock(), threading.Barrier(2)\n"
    "def take(mine, theirs):\n"
    "    with mine:\n"
    "        both.wait()\n"
    "        with theirs: pass\n"
    "ts = [threading.Thread(target=take, args=p) for p in ((a, b), (b, a))]\n"
    "[t.start() for t in ts]\n"
    "print('ready', flush=True)\n"
    "ts[0].join()\n"
)
GIL = (
    "import threading, time\n"
    "def hold():\n"
    "    while True:\n"
    "        sum(range(8_000_000)); time.sleep(0.01)\n"
    "threading.Thread(target=hold, daemon=True).start()\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.001)\n"
)


def probing_attach(probing, pid):
    t0 = time.perf_counter()
    subprocess.run([probing, str(pid), "inject"], check=True, capture_output=True)
    out = subprocess.run([probing, str(pid), "eval", "1"], check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    assert out.stdout.strip() == "1", out.stdout
    return elapsed


def gdb_attach(pid):
    """Seconds to the answer, or None when gdb failed (its calls fail on threads stopped in futex)."""
    t0 = time.perf_counter()
    p = subprocess.run(
        ["gdb", "-p", str(pid), "-batch", "-nx",
         "-ex", "set $g = ((int (*)(void))PyGILState_Ensure)()",
         "-ex", "call ((int (*)(const char *))PyRun_SimpleString)(\"1\")",
         "-ex", "call ((void (*)(int))PyGILState_Release)($g)"],
        capture_output=True)
    return time.perf_counter() - t0 if p.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("-n", type=int, default=5, help="fresh targets per case")
    args = ap.parse_args()
    probing = build_paths(args.build)["probing"]
    have_gdb = shutil.which("gdb") is not None
    print("attach and first answer, median of %d fresh targets (ms)" % args.n)
    print("%-10s %10s %10s %8s" % ("target", "probing", "gdb", "ratio"))
    for name, code in (("idle", IDLE), ("training", TRAIN), ("queue.get", QUEUE), ("deadlock", DEADLOCK),
                       ("GIL held", GIL)):
        ours, theirs = [], []
        for _ in range(args.n):
            with Target(code) as t:
                time.sleep(0.2)  # its threads settle into their waits
                ours.append(probing_attach(probing, t.pid))
            if have_gdb:
                with Target(code) as t:
                    time.sleep(0.2)
                    theirs.append(gdb_attach(t.pid))
        a = statistics.median(ours) * 1000
        answered = [x for x in theirs if x is not None]
        if answered and len(answered) == len(theirs):
            b = statistics.median(answered) * 1000
            print("%-10s %10.1f %10.1f %8.3f" % (name, a, b, a / b))
        elif theirs:
            print("%-10s %10.1f %10s %8s" % (name, a, "failed %d/%d" % (len(theirs) - len(answered), len(theirs)), "-"))
        else:
            print("%-10s %10.1f %10s %8s" % (name, a, "no gdb", "-"))


if __name__ == "__main__":
    main()
