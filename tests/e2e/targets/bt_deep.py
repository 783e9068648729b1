"""The main thread recurses DEPTH (argv[1], default 5000) frames deep, then blocks on stdin."""
import sys

depth = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
sys.setrecursionlimit(depth + 100)


def recurse(n):
    if n == 0:
        print("ready", flush=True)
        return sys.stdin.readline()  # BT_BOTTOM_LINE
    return recurse(n - 1)


recurse(depth)
