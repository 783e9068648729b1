"""A workload whose functions take known shares of the main thread's time: each round spends 50%
in busy_a, 30% in busy_b (both pure Python on the CPU) and 20% in wait_c (asleep). On a busy
machine a sleep ends late, so the shares move a little: SPENT holds the seconds each function
really took (`probing PID eval 'print(spent())'`). A second
thread waits on a queue the whole time (idle). With `hang` as argument it stops after STEPS
rounds (argv[2]), blocked on the queue HANG after printing `hung`, until something is put there;
then it prints `moving` and goes on."""
import queue
import sys
import threading
import time

ROUND_S = 0.1
HANG = queue.Queue()
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 30


def spin_for(seconds):
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def busy_a():
    return spin_for(0.5 * ROUND_S)


def busy_b():
    return spin_for(0.3 * ROUND_S)


def wait_c():
    time.sleep(0.2 * ROUND_S)


def idle_worker(q):
    q.get()


SPENT = {"busy_a": 0.0, "busy_b": 0.0, "wait_c": 0.0}


def step():
    t0 = time.perf_counter()
    busy_a()
    t1 = time.perf_counter()
    busy_b()
    t2 = time.perf_counter()
    wait_c()
    t3 = time.perf_counter()
    SPENT["busy_a"] += t1 - t0
    SPENT["busy_b"] += t2 - t1
    SPENT["wait_c"] += t3 - t2


def spent():
    return dict(SPENT)


def main():
    threading.Thread(target=idle_worker, args=(queue.Queue(),), name="idler", daemon=True).start()
    hang = len(sys.argv) > 1 and sys.argv[1] == "hang"
    print("ready", flush=True)
    rounds = 0
    while True:
        step()
        rounds += 1
        if hang and rounds == STEPS:
            print("hung", flush=True)
            HANG.get()
            print("moving", flush=True)


main()
