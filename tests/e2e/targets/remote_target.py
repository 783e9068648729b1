"""A loop for the remote-access tests: counts steps every 10 ms and keeps the longest gap between
two steps (max_gap, seconds), so a test can tell whether the agent ever stalled the program. It
prints 'ready' after its first step, so step > 0 from then on."""
import time

step = 0
max_gap = 0.0
last = time.monotonic()
while True:
    time.sleep(0.01)
    now = time.monotonic()
    max_gap = max(max_gap, now - last)
    last = now
    step += 1
    if step == 1:
        print("ready", flush=True)
