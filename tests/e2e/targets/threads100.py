"""A target with 100 extra threads, each waiting in a loop of short sleeps."""
import threading
import time

counter = 0
model = {"layers": 3}
started = threading.Barrier(101)


def worker(i):
    started.wait()
    while True:
        time.sleep(0.05 + i * 0.001)


for i in range(100):
    threading.Thread(target=worker, args=(i,), name="worker-%d" % i, daemon=True).start()
started.wait()
print("ready", flush=True)
while True:
    counter += 1
    time.sleep(0.05)
