"""An idle target: some globals, a main loop that sleeps, and a background thread that prints a
line every 50 ms (so tests can see that the target's own output keeps flowing to its stdout
while an eval captures output)."""
import sys
import threading
import time

counter = 0
model = {"layers": 3}
ticks = 0


def ticker():
    global ticks
    while True:
        ticks += 1
        # One write per line, so lines of two threads never interleave.
        sys.stdout.write("tick %d\n" % ticks)
        sys.stdout.flush()
        time.sleep(0.05)


print("ready", flush=True)
threading.Thread(target=ticker, name="ticker", daemon=True).start()
while True:
    counter += 1
    time.sleep(0.05)
