#!/usr/bin/env python3
"""`probing cluster` over many agents on this host: latency of `cluster nodes`, `cluster query`
(on each rank, and run here over the ranks' rows) and `cluster backtrace`, and the client's peak
memory. The agents are plain Python processes (no torch) with a launcher's variables, started
with `probing launch`; they are asked over their unix sockets, or over TCP with --tcp (each rank
on PROBING_PORT + LOCAL_RANK, rank 0's agent the registry).

usage: bench/cluster.py [--build build] [--ranks 256] [--repeat 5] [--tcp [--token T]]
"""
import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PYTHON, build_paths  # noqa: E402

SETTLE_S = 16
IDLE = "import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(1)\n"


def free_base(n):
    for base in range(21000, 60000 - n, 997):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("no %d free ports in a row" % n)


def run(probing, args, timeout=120):
    """Runs the CLI; (seconds, peak RSS of the child in MiB, stdout, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    p = subprocess.run([probing, *args], capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if p.returncode != 0:
        raise SystemExit("probing %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr[-2000:]))
    # ru_maxrss of all children is a running maximum: a run that used less than an earlier one
    # reads as that one (an upper bound), which is what a bound needs.
    return elapsed, max(before, peak) / 1024, p.stdout, p.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build"))
    ap.add_argument("--ranks", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tcp", action="store_true", help="ask the ranks over TCP (PROBING_PORT) instead of unix sockets")
    ap.add_argument("--token", help="with --tcp: the agents' PROBING_TOKEN (else a loopback port without one, "
                                    "whose clients are told by their uid in /proc/net/tcp)")
    args = ap.parse_args()
    probing = build_paths(args.build)["probing"]
    n = args.ranks
    base = free_base(n) if args.tcp else None
    master_port = free_base(1)
    procs = []
    t0 = time.time()
    print("starting %d agents ..." % n, file=sys.stderr, flush=True)
    try:
        for r in range(n):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(n),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(master_port), PROBING_CLUSTER_HEARTBEAT_S="2")
            if base:
                env["PROBING_PORT"] = str(base)
                if args.token:
                    env["PROBING_TOKEN"] = args.token
            procs.append(subprocess.Popen([probing, "launch", "--", PYTHON, "-c", IDLE], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env))
        for i, p in enumerate(procs):
            if p.stdout.readline().strip() != b"ready":
                raise SystemExit("agent %d did not start" % i)
        last_ready = time.time()
        target = ("127.0.0.1:%d" % (base + 1)) if base else str(procs[1].pid)
        extra = ["--tcp"] if base else []
        if base and args.token:
            os.environ["PROBING_TOKEN"] = args.token  # read by the CLI
        # Every rank registered (TCP) and answering.
        deadline = time.time() + 120
        while True:
            _, _, out, err = run(probing, ["cluster", "-t", target, "nodes", *extra])
            if "%d/%d ranks answered" % (n, n) in err:
                break
            if time.time() > deadline:
                raise SystemExit("not every rank answered: " + err[-1000:])
            time.sleep(1)
        print("%d agents up in %.0f s (%s)" % (n, time.time() - t0, "TCP" if base else "unix sockets"),
              file=sys.stderr, flush=True)
        # An agent's first seconds are busier than its life after (the exception hooks are looked
        # at every 0.2 s for 10 s, and the backtrace helper is compiled at 12 s): measure a job that
        # has been running, as a user attaching finds it.
        time.sleep(max(0.0, last_ready + SETTLE_S - time.time()))
        cases = [
            ("cluster nodes", ["nodes"]),
            ("cluster query (on each rank)", ["query", "SELECT _rank, count(*) FROM process.threads GROUP BY _rank"]),
            ("cluster query (run here)", ["query", "SELECT count(*), count(DISTINCT _rank) FROM process.threads"]),
            ("cluster backtrace", ["backtrace"]),
        ]
        how = "unix sockets" if not base else "TCP with a token" if args.token else "TCP, loopback without a token"
        print("\n%d ranks, %s, %d runs each" % (n, how, args.repeat))
        # The first run of each command is shown apart: it is when each agent compiles the Python
        # helpers of the request (a few ms of CPU each, but here hundreds of agents share 2 cores).
        print("%-32s %10s %10s %10s %14s" % ("command", "first s", "median s", "max s", "client MiB"))
        for name, cmd in cases:
            times = []
            peak = 0
            for _ in range(args.repeat + 1):
                elapsed, rss, out, err = run(probing, ["cluster", "-t", target, *cmd[:1], *extra, *cmd[1:]])
                if "%d/%d ranks answered" % (n, n) not in err:
                    raise SystemExit("%s: not every rank answered: %s" % (name, err[-500:]))
                times.append(elapsed)
                peak = max(peak, rss)
            first, rest = times[0], times[1:]
            print("%-32s %10.3f %10.3f %10.3f %14.1f" % (name, first, statistics.median(rest), max(rest), peak))
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
