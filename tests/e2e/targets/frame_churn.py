"""A main thread that calls and returns from short functions as fast as it can while garbage
with finalizers that let the GIL go piles up, and a collection runs at nearly every allocation:
what a stack reader on another thread meets in the worst case. On CPython 3.11 a frame's Python
object is made on the first request, and a collection during that allocation used to let this
thread return from the frame before the object was linked to it.

argv: seconds to run. Prints 'ready', then 'done CALLS' and exits 0."""
import gc
import sys
import time


class Finalized:
    def __del__(self):
        time.sleep(0)  # lets the GIL go from inside a collection


def leaf(n):
    garbage = [Finalized()]
    garbage.append(garbage)  # a cycle: only a collection frees it
    time.sleep(0)  # a C call without the GIL, as a PyTorch operation makes
    return n + 1


def narrow(n, depth):
    return leaf(n) if depth == 0 else wide(n, depth - 1) - 1


def wide(n, depth):
    a, b, c, d, e, f, g, h = n, n, n, n, n, n, n, n
    total = a + b + c + d + e + f + g + h - 7 * n
    return leaf(total) if depth == 0 else narrow(total, depth - 1) + 1


def generator(n):
    yield wide(n, n % 3)


def outer(n):
    # Stacks of different depths and frame sizes, so that a stale frame pointer meets other data.
    return narrow(n, n % 7) if n % 2 else next(generator(n))


gc.set_threshold(int(sys.argv[2]) if len(sys.argv) > 2 else 50, 10, 10)
seconds = float(sys.argv[1])
print("ready", flush=True)
calls = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(100):
        outer(calls)
        calls += 1
print("done", calls, flush=True)
