#!/usr/bin/env python3
"""What `profile --async` costs an asyncio program, in one target process (the agent preloaded).

The target's loop always has work: 50 tasks that compute a little between awaits (each step
~0.1 ms of pure Python, then `await asyncio.sleep(0)`) and 500 tasks that only wait; it prints
how many steps it made every 0.25 s. Each round runs one block of S seconds per setting, the
order reversed every other round:
- none: profile.recorder_hz 0, no profile;
- profile 100 Hz: a `POST /profile` session over the block;
- async 100 Hz: the same with "tasks": the sampler notes coroutines, and a thread of the agent
  takes a task snapshot (every task, its awaits, where each waits) with the GIL 5 times a second.
A setting's overhead is its block's steps per second against the `none` block of the same round,
median over rounds. The snapshots' share of the time, as the agent's notices do not tell it, is
the sum of their own durations over the block (`snapshot cost`).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import PYTHON, AgentConnection, build_paths, wait_for_agent

TARGET = r'''
import asyncio, sys, time
steps = 0

def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total

async def worker():
    global steps
    while True:
        spin(1000)
        steps += 1
        await asyncio.sleep(0)

async def waiter():
    await asyncio.sleep(3600)

async def report():
    while True:
        await asyncio.sleep(0.25)
        print(time.monotonic(), steps, flush=True)

async def main():
    tasks = [asyncio.create_task(worker(), name="worker-%d" % i) for i in range(50)]
    tasks += [asyncio.create_task(waiter()) for _ in range(500)]
    tasks.append(asyncio.create_task(report()))
    print("ready", flush=True)
    await asyncio.gather(*tasks)

asyncio.run(main())
'''

SETTINGS = ("none", "profile 100 Hz", "async 100 Hz")


class Bench:
    def __init__(self, proc):
        self.proc = proc
        self.conn = AgentConnection(proc.pid)

    def sql(self, sql):
        status, reply = self.conn.request("POST", "/query", {"sql": sql})
        assert status == 200, reply[:300]

    def rate(self, seconds):
        """Steps per second over the next `seconds`, from the target's reports."""
        first = self.read()
        last = first
        while last[0] - first[0] < seconds:
            last = self.read()
        return (last[1] - first[1]) / (last[0] - first[0])

    def read(self):
        t, n = self.proc.stdout.readline().split()
        return float(t), int(n)

    def block(self, setting, seconds):
        self.sql("SET profile.recorder_hz = 0")
        if setting != "none":
            body = {"hz": 100, "seconds": seconds + 1.5, "tasks": setting.startswith("async")}
            status, reply = self.conn.request("POST", "/profile", body)
            assert status == 200, reply
        time.sleep(0.6)
        self.drain()
        r = self.rate(seconds)
        if setting != "none":
            time.sleep(1.5)  # the session ends
        return r

    def drain(self):
        os.set_blocking(self.proc.stdout.fileno(), False)
        try:
            while self.proc.stdout.readline():
                pass
        finally:
            os.set_blocking(self.proc.stdout.fileno(), True)


def snapshot_cost(build, pid):
    """Seconds one task snapshot takes in the target (its own measure), median of 5 run through
    eval with the agent's helper."""
    probing = build_paths(build)["probing"]
    helper = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "profile",
                          "tasks_helpers.py")
    code = open(helper).read() + "\nimport json as _j\nprint(_j.loads(snapshot(5000))['cost'])\n"
    costs = []
    for _ in range(5):
        r = subprocess.run([probing, str(pid), "eval", code], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            costs.append(float(r.stdout.strip()))
    return statistics.median(costs) if costs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    args = ap.parse_args()
    print("machine: %d CPUs, load %.2f; python %s" % (os.cpu_count(), os.getloadavg()[0], PYTHON))
    env = dict(os.environ, LD_PRELOAD=build_paths(args.build)["library"])
    proc = subprocess.Popen([PYTHON, "-u", "-c", TARGET], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        wait_for_agent(proc.pid)
        b = Bench(proc)
        res = {s: [] for s in SETTINGS}
        for r in range(args.rounds):
            for s in SETTINGS if r % 2 == 0 else tuple(reversed(SETTINGS)):
                res[s].append(b.block(s, args.seconds))
        cost = snapshot_cost(args.build, proc.pid)
        print("an asyncio loop of 50 computing and 500 waiting tasks, %d rounds of %.0f s" % (args.rounds, args.seconds))
        print("  %-16s %12s %10s" % ("setting", "steps/s", "overhead"))
        out = {}
        for s in SETTINGS:
            ovh = statistics.median(100.0 * (n / a - 1) for a, n in zip(res[s], res["none"]))
            out[s] = ovh
            print("  %-16s %12.0f %+9.2f%%" % (s, statistics.median(res[s]), ovh))
        print("snapshot cost: %.2f ms each, 5 a second: %.2f %% of the time with the GIL" % (1e3 * cost, 100 * 5 * cost))
        return 0
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    sys.exit(main())
