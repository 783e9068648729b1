"""A target whose thread, once told to on stdin (a line 'hold'), calls libc sleep() through
ctypes.PyDLL: PyDLL does not release the GIL, so the GIL stays held for HOLD_S seconds (argv[1],
default 30). It prints 'holding TID' (the holder's native thread id) just before the call."""
import ctypes
import sys
import threading
import time

model = {"layers": 3}
hold_s = int(sys.argv[1]) if len(sys.argv) > 1 else 30
libc = ctypes.PyDLL(None)


def hold():
    print("holding %d" % threading.get_native_id(), flush=True)
    libc.sleep(hold_s)
    print("released", flush=True)


print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "hold":
        threading.Thread(target=hold, name="gil-holder", daemon=True).start()
    time.sleep(0.01)
time.sleep(3600)
