"""The `probing` command of the wheel: runs the CLI bundled in this package (_bundle/bin/probing),
which finds the agent beside it (_bundle/lib/probing/libprobing.so)."""
import os
import sys


def main():
    exe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bundle", "bin", "probing")
    try:
        os.execv(exe, [exe] + sys.argv[1:])
    except OSError as e:
        sys.exit("probing: cannot run the bundled CLI %s: %s (is this the wheel's probing package?)" % (exe, e))
