#!/usr/bin/env python3
"""backtrace latency over the unix socket, on one keep-alive connection:
- the main thread 50 frames deep with locals (target <= 5 ms median);
- the GIL-free path, while another thread holds the GIL in a C call (target <= 50 ms);
- every thread (`all=1`) of a target with 100 extra threads.
The baseline, on the same connection in the same run, is `GET /health` (no Python).
Then `probing PID backtrace --native`: the whole command (a new process each time, which also asks
the agent for thread names), and how long each thread was held stopped.
"""

import argparse
import json
import statistics
import subprocess
import time

from common import AgentConnection, Target, build_paths, measure, summary_ms, wait_for_agent

DEEP = (
    "import time\n"
    "def dive(n, payload):\n"
    "    label = 'frame %d' % n\n"
    "    if n == 0:\n"
    "        print('ready', flush=True)\n"
    "        while True: time.sleep(1)\n"
    "    return dive(n - 1, payload)\n"
    "dive(48, list(range(10)))\n"
)
GIL_HELD = (  # says ready, then a thread takes the GIL for good (the agent answers without it)
    "import ctypes, threading, time\n"
    "print('ready', flush=True)\n"
    "threading.Thread(target=lambda: ctypes.PyDLL(None).sleep(3600), daemon=True).start()\n"
    "while True: time.sleep(1)\n"
)
THREADS = (
    "import threading, time\n"
    "ev = threading.Event()\n"
    "for i in range(100): threading.Thread(target=ev.wait, name='worker-%d' % i, daemon=True).start()\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(1)\n"
)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args()
    lib = build_paths(args.build)["library"]
    # The GIL-free answer comes after backtrace.gil_timeout_s (40 ms by default) of waiting for
    # the GIL; the second GIL case waits 10 ms, which leaves the cost of the GIL-free read itself.
    gil_free = lambda j: j.get("gil_free") is True  # noqa: E731
    cases = (
        ("50 frames, locals", DEEP, "/backtrace?locals=1", {},
         lambda j: len(j["threads"][0]["frames"]) >= 50 and not j.get("gil_free")),
        ("GIL held (default wait, 40 ms)", GIL_HELD, "/backtrace?all=1", {}, gil_free),
        ("GIL held (wait 10 ms)", GIL_HELD, "/backtrace?all=1", {"PROBING_BACKTRACE_GIL_TIMEOUT_S": "0.01"}, gil_free),
        ("100 threads, --all", THREADS, "/backtrace?all=1", {},
         lambda j: len(j["threads"]) >= 101),
    )
    print("backtrace over @probing-<pid>, %d requests each (ms)" % args.n)
    print("%-22s %8s %8s %12s %8s" % ("case", "median", "p99", "health med", "ratio"))
    for name, code, path, env, ok in cases:
        with Target(code, env=dict(env, LD_PRELOAD=lib)) as t:
            wait_for_agent(t.pid)
            conn = AgentConnection(t.pid)

            def check(j, ok=ok):
                assert ok(j), json.dumps(j)[:300]

            n = args.n if "GIL held" not in name else max(10, args.n // 10)
            deadline = time.monotonic() + 10  # warm up; the GIL case until the holder holds it
            while not ok(json.loads(conn.request("GET", path)[1])):
                assert time.monotonic() < deadline, "the case never set up"
            health = summary_ms(measure(conn, "GET", "/health", n=n))
            bt = summary_ms(measure(conn, "GET", path, n=n, check=check))
            conn.close()
        print("%-22s %8.3f %8.3f %12.3f %8.1f" % (name, bt[0], bt[1], health[0], bt[0] / health[0]))

    probing = build_paths(args.build)["probing"]
    native_cases = (("50 frames, --native", DEEP, []), ("GIL held, --native --all", GIL_HELD, ["--all"]),
                    ("100 threads, --native --all", THREADS, ["--all"]))
    print()
    print("probing PID backtrace --native --json, %d runs each (ms)" % max(5, args.n // 10))
    print("%-28s %8s %8s %16s %14s" % ("case", "median", "p99", "threads", "held med/max"))
    for name, code, flags in native_cases:
        with Target(code, env={"LD_PRELOAD": lib}) as t:
            wait_for_agent(t.pid)
            walls, held, threads = [], [], 0
            for _ in range(max(5, args.n // 10)):
                start = time.perf_counter()
                out = subprocess.run([probing, str(t.pid), "backtrace", "--native", "--json", *flags],
                                     capture_output=True, text=True, check=True).stdout
                walls.append((time.perf_counter() - start) * 1e3)
                j = json.loads(out)
                threads = len(j["threads"])
                held += [th["stopped_ms"] for th in j["threads"]]
            walls.sort()
            print("%-28s %8.1f %8.1f %16d %7.2f/%-6.2f" % (name, statistics.median(walls), walls[int(0.99 * (len(walls) - 1))],
                                                            threads, statistics.median(held), max(held)))


if __name__ == "__main__":
    main()
