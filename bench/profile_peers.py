#!/usr/bin/env python3
"""probing's profiler beside the sampling profilers people attach from outside, on the same target
in the same run: austin 3.7 on CPython 3.13 (Debian 13's chroot) and CPython 3.15's own
`python3.15 -m profiling.sampling attach` (Debian sid's chroot), both from the version matrix
(`make test-matrix` builds the chroots; austin is in the Debian 13 one).

The target is a pure-Python workload (a recursive walk 20 frames deep doing arithmetic), the agent
preloaded, run in the chroot. Each round runs one block of BLOCK seconds under each setting, the
order reversed every other round: nothing sampling (profile.recorder_hz 0), probing at 100 Hz and
1 kHz (`POST /profile`), and the peer at 100 Hz and 1 kHz (attached for the block, all threads,
its output thrown away). Per setting: the target's work per second against the unsampled block of
the same round (median over rounds), and the CPU the sampler used: probing's sampler thread, or
the peer's process, per second of the block. Then each profiler's view of shares.py (50/30/20 %
of the main thread's time in three functions, the last asleep) at 100 Hz, both attached at once,
against the truth.

Needs root (chroot, a private mount namespace for the bind mounts).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import AgentConnection, build_paths, wait_for_agent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("PROBING_MATRIX_CACHE", "/var/cache/probing-matrix")

WORKLOAD = r'''
import sys, time
def walk(depth, n):
    if depth == 0:
        s = 0
        for i in range(n):
            s += i * i
        return s
    return walk(depth - 1, n)
print("ready", flush=True)
for line in sys.stdin:
    end = time.perf_counter() + float(line)
    work = 0
    while time.perf_counter() < end:
        walk(20, 200)
        work += 1
    print(work, flush=True)
'''

PEERS = {
    "trixie": ("python3.13", "austin"),
    "sid": ("python3.15", "profiling.sampling"),
}


def peer_command(root, python, peer, pid, hz, out):
    if peer == "austin":
        return ["chroot", root, "/usr/bin/austin", "-i", str(int(1e6 / hz)), "-p", str(pid), "-o", out]
    return ["chroot", root, "/usr/bin/" + python, "-m", "profiling.sampling", "attach", "-r", str(hz), "-a",
            "--collapsed", "-o", out, str(pid)]


def cpu_s(pid, tid=None):
    path = "/proc/%d/task/%d/stat" % (pid, tid) if tid else "/proc/%d/stat" % pid
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sampler_tid(pid):
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().strip() == "probing-sampler":
                return int(tid)
    raise RuntimeError("no probing-sampler thread in %d" % pid)


def mount_chroot(root, build):
    for src in ("/proc", "/sys", "/dev", "/dev/pts", "/tmp", REPO, build):
        dst = root + src
        os.makedirs(dst, exist_ok=True)
        subprocess.run(["mount", "--bind", src, dst], check=True)


class Run:
    def __init__(self, suite, build, block):
        self.root = os.path.join(CACHE, suite)
        self.python, self.peer = PEERS[suite]
        self.block_s = block
        env = dict(os.environ, LD_PRELOAD=build_paths(build)["library"], PROBING_TORCH="off")
        self.proc = subprocess.Popen(["chroot", self.root, "/usr/bin/" + self.python, "-u", "-c", WORKLOAD],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        wait_for_agent(self.proc.pid)
        self.conn = AgentConnection(self.proc.pid)
        self.sampler = sampler_tid(self.proc.pid)

    def sql(self, text):
        status, reply = self.conn.request("POST", "/query", {"sql": text})
        assert status == 200, reply

    def block(self, setting):
        """(work per second, sampler CPU per second) of one block."""
        self.sql("SET profile.recorder_hz = 0")
        peer = None
        who, _, rate = setting.partition(" ")
        hz = int(rate) if rate else 0
        if who == "probing":
            status, reply = self.conn.request("POST", "/profile", {"hz": hz, "seconds": self.block_s + 0.5})
            assert status == 200, reply
            time.sleep(0.6)  # the sampler reads its rate every 0.5 s
        elif who == "peer":
            peer = subprocess.Popen(peer_command(self.root, self.python, self.peer, self.proc.pid, hz, "/dev/null"),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached and sampling
        c0 = cpu_s(peer.pid) if peer else cpu_s(self.proc.pid, self.sampler)
        t0 = time.monotonic()
        self.proc.stdin.write("%g\n" % self.block_s)
        self.proc.stdin.flush()
        work = int(self.proc.stdout.readline())
        wall = time.monotonic() - t0
        used = (cpu_s(peer.pid) if peer else cpu_s(self.proc.pid, self.sampler)) - c0
        if peer and peer.poll() is not None:
            raise RuntimeError("%s exited during the block (status %s)" % (self.peer, peer.returncode))
        if peer:
            peer.send_signal(signal.SIGINT)
            try:
                peer.wait(10)
            except subprocess.TimeoutExpired:
                peer.kill()
                peer.wait()
        elif who == "probing":
            time.sleep(0.6)  # the session ends
        return work / wall, used / wall

    def close(self):
        self.proc.kill()
        self.proc.wait()


def cost(suite, build, rounds, block):
    settings = ("none", "probing 100", "probing 1000", "peer 100", "peer 1000")
    run = Run(suite, build, block)
    try:
        work = {s: [] for s in settings}
        cpu = {s: [] for s in settings}
        for r in range(rounds):
            for s in settings if r % 2 == 0 else tuple(reversed(settings)):
                w, c = run.block(s)
                work[s].append(w)
                cpu[s].append(c)
        print("%s, CPython %s: pure-Python work, %d rounds of %g s blocks" % (suite, run.python[6:], rounds, block))
        print("  %-34s %12s %14s" % ("sampling", "slowdown", "sampler CPU"))
        for s in settings:
            slow = statistics.median(100.0 * (1 - w / n) for w, n in zip(work[s], work["none"]))
            who, _, hz = s.partition(" ")
            name = (run.peer if who == "peer" else who) + ("" if not hz else " at 1 kHz" if hz == "1000" else " at 100 Hz")
            print("  %-34s %+11.2f%% %13.2f%%" % (name, slow, 100 * statistics.median(cpu[s])))
    finally:
        run.close()


SHARES = {"busy_a": 50.0, "busy_b": 30.0, "wait_c": 20.0}  # tests/e2e/targets/shares.py


def main_thread_shares(stacks, samples):
    """{name: percent} of the main thread's weight under each of SHARES, from (funcs, weight)."""
    total = sum(w for _, w in stacks)
    if total <= 0:
        raise RuntimeError("no samples of the main thread")
    return {n: 100.0 * sum(w for funcs, w in stacks if n in funcs) / total for n in SHARES}, samples


def parse_speedscope(path):
    """probing's speedscope file: the main thread's (functions, weight) per sample."""
    with open(path) as f:
        doc = json.load(f)
    frames = doc["shared"]["frames"]
    main = [p for p in doc["profiles"] if p["name"].startswith("MainThread")][0]
    return [({frames[i]["name"] for i in stack}, w) for stack, w in zip(main["samples"], main["weights"])]


def parse_peer(path, peer, main_tid):
    """austin: 'P<pid>;T<iid>:<tid>;file:func:line;... MICROSECONDS' (after '#' headers);
    CPython 3.15: 'tid:<tid>;file:func:line;... COUNT'."""
    out = []
    for line in open(path):
        if not line.strip() or line.startswith("#"):
            continue
        stack, weight = line.rstrip("\n").rsplit(" ", 1)
        frames = stack.split(";")
        if peer == "austin":
            tid, frames = int(frames[1].rsplit(":", 1)[1]), frames[2:]
        else:
            tid, frames = int(frames[0].split(":", 1)[1]), frames[1:]
        if tid == main_tid:
            out.append(({f.rsplit(":", 2)[1] for f in frames}, int(weight)))
    return out


def accuracy(suite, build, seconds):
    """shares.py's main thread as probing and the peer see it at 100 Hz, at the same time."""
    root = os.path.join(CACHE, suite)
    python, peer = PEERS[suite]
    env = dict(os.environ, LD_PRELOAD=build_paths(build)["library"], PROBING_TORCH="off")
    target = subprocess.Popen(["chroot", root, "/usr/bin/" + python, "-u",
                               os.path.join(REPO, "tests/e2e/targets/shares.py")],
                              stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert target.stdout.readline().strip() == "ready"
        wait_for_agent(target.pid)
        with tempfile.TemporaryDirectory() as tmp:
            ours, theirs = os.path.join(tmp, "probing.json"), os.path.join(tmp, "peer.txt")
            other = subprocess.Popen(peer_command(root, python, peer, target.pid, 100, theirs),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attached
            subprocess.run([build_paths(build)["probing"], str(target.pid), "profile", "--seconds", str(seconds),
                            "--hz", "100", "--idle", "-o", ours], check=True, stderr=subprocess.DEVNULL)
            other.send_signal(signal.SIGINT)
            other.wait(30)
            mine, seen = parse_speedscope(ours), parse_peer(theirs, peer, target.pid)
            # CPython's counts are samples; each of austin's lines is one
            rows = (("probing", main_thread_shares(mine, len(mine))),
                    (peer, main_thread_shares(seen, len(seen) if peer == "austin" else sum(w for _, w in seen))))
    finally:
        target.kill()
        target.wait()
    print("%s, CPython %s: shares.py's main thread at 100 Hz for %g s, both at once (truth %s)"
          % (suite, python[6:], seconds, " / ".join("%s %g %%" % kv for kv in SHARES.items())))
    print("  %-22s %8s %8s %8s %10s %9s" % ("profiler", *SHARES, "max error", "samples"))
    for name, (shares, n) in rows:
        error = max(abs(shares[k] - v) for k, v in SHARES.items())
        print("  %-22s %7.1f%% %7.1f%% %7.1f%% %9.1f pt %9d" % (name, *(shares[k] for k in SHARES), error, n))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the cost comparison (0: none)")
    ap.add_argument("--block", type=float, default=3.0, help="seconds per block")
    ap.add_argument("--suite", choices=sorted(PEERS), action="append")
    ap.add_argument("--accuracy-seconds", type=float, default=20.0,
                    help="how long both profile shares.py (0: no accuracy comparison)")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    if os.geteuid() != 0:
        sys.exit("profile_peers.py needs root (chroot and bind mounts)")
    for suite in args.suite or sorted(PEERS):
        if not os.path.isdir(os.path.join(CACHE, suite)):
            sys.exit("no %s chroot in %s: run make test-matrix first" % (suite, CACHE))
    if os.environ.get("PROBING_PEERS_NS") != "1":  # the mounts go in a namespace of our own
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv],
                   dict(os.environ, PROBING_PEERS_NS="1"))
    print("machine: %d CPUs, load %.2f" % (os.cpu_count(), os.getloadavg()[0]))
    for suite in args.suite or sorted(PEERS):
        mount_chroot(os.path.join(CACHE, suite), build)
        if args.rounds > 0:
            cost(suite, build, args.rounds, args.block)
        if args.accuracy_seconds > 0:
            accuracy(suite, build, args.accuracy_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
