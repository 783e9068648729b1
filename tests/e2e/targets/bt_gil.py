"""A thread named 'gil-holder' that, told 'hold' on stdin, calls libc sleep() through
ctypes.PyDLL, which keeps the GIL for HOLD_S seconds (argv[1], default 30). The main thread sits
in main_loop() -> wait_for_line(). It prints 'ready' at start and 'holding' just before the call."""
import ctypes
import sys
import threading

hold_s = int(sys.argv[1]) if len(sys.argv) > 1 else 30
libc = ctypes.PyDLL(None)
go = threading.Event()


def hold():
    go.wait()
    print("holding", flush=True)
    libc.sleep(hold_s)  # BT_HOLD_LINE


def wait_for_line():
    return sys.stdin.readline()  # BT_WAIT_LINE


def main_loop():
    while True:
        line = wait_for_line()
        if not line:
            return
        if line.strip() == "hold":
            go.set()


threading.Thread(target=hold, name="gil-holder", daemon=True).start()
print("ready", flush=True)
main_loop()
