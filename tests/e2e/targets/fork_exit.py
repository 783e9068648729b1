"""Forks on each 'fork' line read from stdin, after the agent serves (the test has used it). The
child runs a little Python and leaves through sys.exit(7), so it runs the exit handlers it
inherited; the parent prints 'child STATUS SECONDS' (how long the child took, fork to reaped)."""
import os
import sys
import time

print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "fork":
        continue
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        total = sum(i * i for i in range(1000))
        sys.exit(7 if total else 1)
    _, status = os.waitpid(pid, 0)
    print("child %d %.3f" % (os.waitstatus_to_exitcode(status), time.monotonic() - start), flush=True)
