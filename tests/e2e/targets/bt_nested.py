"""Known nested calls with known locals, for `probing PID backtrace`. Prints 'ready' once the
main thread is parked in inner(); line numbers are checked by tests/e2e/test_backtrace.py."""
import sys
import threading


class Broken:
    def __repr__(self):
        raise RuntimeError("no repr for you")


def inner(count, label):
    text = "x" * 1000
    broken = Broken()
    numbers = [1, 2, 3]
    print("ready", flush=True)
    sys.stdin.readline()  # BT_INNER_LINE
    return count, label, text, broken, numbers


def middle(n):
    factor = n * 2
    return inner(factor, "hello")  # BT_MIDDLE_LINE


def outer():
    return middle(21)  # BT_OUTER_LINE


for i in range(3):
    ev = threading.Event()
    threading.Thread(target=ev.wait, name="worker-%d" % i, daemon=(i != 0)).start()
outer()  # BT_MODULE_LINE
