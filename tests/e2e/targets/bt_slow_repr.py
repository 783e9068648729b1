"""A local whose __repr__ runs Python for a minute, for `backtrace --locals`: the capture
interrupts it at its run timeout. Prints 'ready' once the main thread waits on stdin; each line
read is answered with 'echo LINE'."""
import sys
import time


class Slow:
    def __repr__(self):
        end = time.monotonic() + 60
        while time.monotonic() < end:  # Python code: the agent's interrupt lands here
            pass
        return "slow"


def wait(slow):
    print("ready", flush=True)
    for line in sys.stdin:  # BT_SLOW_WAIT_LINE
        print("echo " + line.strip(), flush=True)


wait(Slow())
