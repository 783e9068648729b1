#!/usr/bin/env python3
"""What the `subprocesses` setting costs a program that forks: the same program under `probing
launch` with subprocesses off (the child inherits the agent library and runs none of it) and on
(the child loads an agent of its own in Python's after-fork hook), and with no agent at all.

Per fork, two times: from fork() to the child's first line of Python (its after-fork hooks run
before it), and the child's exit (sys.exit: atexit handlers, finalization, the agent's exit
handler), measured in the parent from the child's last write to waitpid()'s return.
"""

import argparse
import json
import os
import subprocess

from common import PYTHON, build_paths

PROGRAM = r"""
import json, os, sys, time
time.sleep(0.5)  # the agent's hook is in by now
start_ms, exit_ms = [], []
for i in range(%(n)d):
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.write(w, b"s")
        time.sleep(0.02)
        os.write(w, b"e")
        sys.exit(0)
    os.read(r, 1)
    start_ms.append((time.perf_counter() - t0) * 1e3)
    os.read(r, 1)
    t1 = time.perf_counter()
    os.waitpid(pid, 0)
    exit_ms.append((time.perf_counter() - t1) * 1e3)
    os.close(r); os.close(w)
start_ms.sort(); exit_ms.sort()
print(json.dumps([start_ms[len(start_ms) // 2], exit_ms[len(exit_ms) // 2]]))
"""


def run(cmd, n):
    out = subprocess.run(cmd + [PYTHON, "-c", PROGRAM % {"n": n}], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(cmd), out.stderr))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    parser.add_argument("-n", type=int, default=50, help="forks per case")
    args = parser.parse_args()
    probing = build_paths(args.build)["probing"]
    cases = [("no agent", []),
             ("launch, subprocesses=off", [probing, "launch", "-D", "subprocesses=off", "--"]),
             ("launch, subprocesses=on", [probing, "launch", "--"])]
    print("%s, %d forks per case, medians" % (PYTHON, args.n))
    print("%-26s %14s %14s" % ("case", "fork to child", "child exit"))
    for name, cmd in cases:
        start, end = run(cmd, args.n)
        print("%-26s %11.2f ms %11.2f ms" % (name, start, end))


if __name__ == "__main__":
    main()
