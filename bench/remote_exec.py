#!/usr/bin/env python3
"""CPython 3.14's own attach, sys.remote_exec (PEP 768), against `probing PID inject` + the first
`probing PID eval`, on the same kinds of fresh target: idle, a PyTorch training loop, hung in
queue.Queue().get(), and one thread holding the GIL in C calls of ~0.3 s. remote_exec asks the
target to run a script at its next safe evaluation point; the time is until that script has
written its file. A target that never reaches such a point (every thread blocked in C) never runs
it: the row says so after --timeout seconds.

Needs a 3.14+ interpreter: PROBING_BENCH_PYTHON=/var/cache/probing-matrix/bin/sid-3.14 (the
version matrix's chroot, mounted by scripts/test-matrix.sh or by hand).
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from common import PYTHON, Target, build_paths
from inject import GIL, IDLE, QUEUE, TRAIN, probing_attach


def remote_exec(pid, timeout_s):
    """Seconds until the script ran in the target, or None when it did not within timeout_s."""
    with tempfile.TemporaryDirectory(prefix="probing-remote-exec-") as d:
        os.chmod(d, 0o755)
        marker = os.path.join(d, "ran")
        script = os.path.join(d, "script.py")
        with open(script, "w") as f:
            f.write("open(%r, 'w').write('1')\n" % marker)
        t0 = time.perf_counter()
        subprocess.run([PYTHON, "-c", "import sys; sys.remote_exec(%d, %r)" % (pid, script)], check=True,
                       capture_output=True, timeout=timeout_s)
        while time.perf_counter() - t0 < timeout_s:
            if os.path.exists(marker):
                return time.perf_counter() - t0
            time.sleep(0.001)
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("-n", type=int, default=5, help="fresh targets per case")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for remote_exec's script")
    args = ap.parse_args()
    version = subprocess.run([PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    if tuple(map(int, version.split("."))) < (3, 14):
        print("remote_exec needs CPython 3.14+; PROBING_BENCH_PYTHON=%s is %s" % (PYTHON, version))
        return
    probing = build_paths(args.build)["probing"]
    print("CPython %s: attach and first answer, median of %d fresh targets (ms)" % (version, args.n))
    print("%-10s %10s %14s" % ("target", "probing", "remote_exec"))
    for name, code in (("idle", IDLE), ("training", TRAIN), ("queue.get", QUEUE), ("GIL held", GIL)):
        ours, theirs = [], []
        for _ in range(args.n):
            with Target(code) as t:
                time.sleep(0.2)  # its threads settle into their waits
                ours.append(probing_attach(probing, t.pid))
            with Target(code) as t:
                time.sleep(0.2)
                theirs.append(remote_exec(t.pid, args.timeout))
        answered = [x for x in theirs if x is not None]
        b = ("%.1f" % (statistics.median(answered) * 1000)) if len(answered) == len(theirs) else \
            "none in %g s: %d/%d" % (args.timeout, len(theirs) - len(answered), len(theirs))
        print("%-10s %10.1f %14s" % (name, statistics.median(ours) * 1000, b))


if __name__ == "__main__":
    main()
