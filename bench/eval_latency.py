#!/usr/bin/env python3
"""eval round trip over the unix socket: `POST /eval {"code": "1"}` on one keep-alive
connection, on an idle target and on a busy one (a thread spinning in pure Python). The baseline,
measured in the same run on the same connection, is `GET /health`, which never touches Python:
the difference is the cost of getting the GIL and running the code. Target: <= 1 ms median idle.
"""

import argparse
import time

from common import AgentConnection, Target, build_paths, measure, summary_ms, wait_for_agent

IDLE = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(1)\n"
BUSY = (
    "import threading, time\n"
    "def spin():\n"
    "    x = 0\n"
    "    while True: x += 1\n"
    "threading.Thread(target=spin, daemon=True).start()\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(1)\n"
)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("-n", type=int, default=2000)
    args = ap.parse_args()
    lib = build_paths(args.build)["library"]
    print("eval round trip over @probing-<pid>, %d requests each (ms)" % args.n)
    print("%-8s %-10s %8s %8s %8s" % ("target", "request", "median", "p99", "ratio"))
    for name, code, n in (("idle", IDLE, args.n), ("busy", BUSY, max(50, args.n // 10))):
        with Target(code, env={"LD_PRELOAD": lib}) as t:
            wait_for_agent(t.pid)
            conn = AgentConnection(t.pid)
            measure(conn, "POST", "/eval", {"code": "1"}, n=20)  # warm up: helpers compiled once
            health = summary_ms(measure(conn, "GET", "/health", n=n))
            ev = summary_ms(measure(conn, "POST", "/eval", {"code": "1"}, n=n))
            conn.close()
        print("%-8s %-10s %8.3f %8.3f %8s" % (name, "health", health[0], health[1], "1.00"))
        print("%-8s %-10s %8.3f %8.3f %8.2f" % (name, "eval 1", ev[0], ev[1], ev[0] / health[0]))


if __name__ == "__main__":
    main()
