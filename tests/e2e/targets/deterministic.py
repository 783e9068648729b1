"""Computes and prints a fixed sequence of results over about 2 s. The output does not depend on
timing, so a run with an inject in the middle must print exactly what a run without one prints.
It prints 'step 10' after the tenth result so a test can inject mid-run."""
import hashlib
import time

model = {"layers": 3}
state = b"probing"
total = 0

print("ready", flush=True)
for i in range(40):
    for _ in range(2000):
        state = hashlib.sha256(state).digest()
    total = (total * 31 + int.from_bytes(state[:8], "little")) % (1 << 61)
    print("%d %s %d %r" % (i, state.hex()[:16], total, sorted({i % 7, i % 5, i % 3})), flush=True)
    if i == 10:
        print("step 10", flush=True)
    time.sleep(0.05)
print("done", flush=True)
