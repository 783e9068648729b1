"""A target whose threads spin in pure Python: never a blocking call that releases the GIL."""
import threading

counter = 0
model = {"layers": 3}
spins = 0


def spin():
    global spins
    while True:
        spins += 1


threading.Thread(target=spin, name="spinner", daemon=True).start()
print("ready", flush=True)
while True:
    counter += 1
