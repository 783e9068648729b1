"""Leaks a list of floats every 10 ms into a global list, for `probing PID memory`."""
import time

kept = []


def step(i):
    kept.append([float(i)] * 100)  # LEAK_LINE
    return len(kept)


print("ready", flush=True)
i = 0
while True:
    step(i)
    i += 1
    time.sleep(0.01)
