"""Targets for the stack-dumper behaviours tests/e2e/test_fidelity.py checks. argv[1]:
  sleep    the main thread sleeps in nap()
  busy     the main thread spins in spin_forever()
  reuse    threads that start, run a moment and end, all the time
  recurse  recursion to depth 20 and back, over and over (busy)
  lines    a call whose arguments come on later lines than the call: the line table steps back
  classes  a method of a nested class
Prints 'ready' once there."""
import sys
import threading
import time


def nap():
    time.sleep(1000)  # FID_NAP_LINE


def spin_forever():
    n = 0
    while True:  # FID_SPIN_LINE
        n += 1


def reuse():
    print("ready", flush=True)
    while True:
        threads = [threading.Thread(target=time.sleep, args=(0.01,), name="short-%d" % i) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def recurse(depth):
    if depth < 20:
        return recurse(depth + 1)  # FID_RECURSE_LINE
    return depth


def recurse_forever():
    print("ready", flush=True)
    while True:  # FID_RECURSE_LOOP_LINE
        recurse(0)  # FID_RECURSE_CALL_LINE


def wait_with(seconds, label):
    time.sleep(seconds)  # FID_WAIT_LINE
    return label


def lines():
    print("ready", flush=True)
    result = wait_with(  # FID_CALL_LINE
        1000,
        "a label on a later line",
    )
    return result


class Outer:
    class Inner:
        def method(self):
            print("ready", flush=True)
            time.sleep(1000)  # FID_METHOD_LINE


def main(mode):
    if mode == "sleep":
        print("ready", flush=True)
        nap()  # FID_NAP_CALL_LINE
    elif mode == "busy":
        print("ready", flush=True)
        spin_forever()
    elif mode == "reuse":
        reuse()
    elif mode == "recurse":
        recurse_forever()
    elif mode == "lines":
        lines()
    elif mode == "classes":
        Outer.Inner().method()


main(sys.argv[1])  # FID_MAIN_LINE
