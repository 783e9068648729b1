"""A Python -> C -> Python stack, for `probing PID backtrace --native`: sorted() calls key() from
C, so two C-level eval calls run the Python frames. Prints 'ready' once parked in key()."""
import sys


def key(x):
    print("ready", flush=True)
    sys.stdin.readline()  # BT_KEY_LINE
    return x


def sort():
    return sorted([1], key=key)  # BT_SORT_LINE


sort()  # BT_MODULE_LINE
