"""A loop in main() that raises and catches exceptions: each step a ValueError raised by int() (in
C), every 3rd step a KeyError raised in lookup() two calls down, every 5th a FileNotFoundError
(an OSError) by open(). Writes 'step N' on 'state'. Prints 'ready', then 20 steps a second until
killed."""
import sys
import threading
import time

STEP = [0]


def lookup(table, key):
    return table[key]  # RAISES_KEY


def fetch(step):
    return lookup({"a": 1}, "k%d" % step)


def main():
    while True:
        STEP[0] += 1
        step = STEP[0]
        try:
            int("x%d" % step)  # RAISES_VALUE
        except ValueError:
            pass
        if step % 3 == 0:
            try:
                fetch(step)
            except KeyError:
                pass
        if step % 5 == 0:
            try:
                open("/nonexistent/%d" % step)
            except OSError:
                pass
        time.sleep(0.05)


def answer():
    for line in sys.stdin:
        if line.strip() == "state":
            print("step %d" % STEP[0], flush=True)


threading.Thread(target=answer, daemon=True).start()
print("ready", flush=True)
main()
