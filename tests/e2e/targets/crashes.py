"""Prints 'ready', then reads one word from stdin and dies as it says: 'segv' reads address 0 in
native code (ctypes.string_at: a fault in the C library, called from Python), 'abort' calls
os.abort(). 'fork-segv' forks a child that does 'segv', prints its wait status, and reads the
next word. An idle second thread runs meanwhile."""
import ctypes
import os
import sys
import threading
import time


def idle():
    while True:
        time.sleep(0.05)


def read_null():
    return ctypes.string_at(0)  # CRASH_LINE


threading.Thread(target=idle, name="idle", daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    word = line.strip()
    if word == "segv":
        read_null()
    elif word == "abort":
        os.abort()
    elif word == "fork-segv":
        child = os.fork()
        if child == 0:
            read_null()
        _, status = os.waitpid(child, 0)
        print("child %d status %d" % (child, status), flush=True)
