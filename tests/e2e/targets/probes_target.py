"""A loop for `probing PID probe`: the main thread steps at module level, a named thread calls a
method; both do arithmetic whose result tells whether a probe changed anything. Prints 'ready';
each line read from stdin is answered with 'state STEP TOTAL OK' (OK: TOTAL is what the steps so
far compute), and 'fork' with 'forked RC': a child forked from that thread calls the method 200
times and exits 0 when the results are right."""
import os
import sys
import threading
import time


class Attention:
    def forward(self, q, mask=None):
        out = [x * 2 for x in q]  # PROBE_FORWARD_BODY
        return sum(out)


# PROBE_NO_CODE: a comment, where no probe can go
def expected(steps):
    return sum(Attention().forward([s, s + 1]) for s in range(steps))


def helper_thread(a, stop):
    i = 0
    while not stop.is_set():
        a.forward([i], mask=i)
        i += 1
        time.sleep(0.002)


def answer(state):
    for line in sys.stdin:
        if line.strip() == "fork":
            pid = os.fork()
            if pid == 0:
                os._exit(0 if expected(200) == sum(4 * s + 2 for s in range(200)) else 1)
            print("forked %d" % os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
            continue
        step, total = state
        print("state %d %d %s" % (step, total, total == expected(step)), flush=True)


a = Attention()
threading.Thread(target=helper_thread, args=(a, threading.Event()), name="helper-1", daemon=True).start()
state = [0, 0]
threading.Thread(target=answer, args=(state,), name="stdin", daemon=True).start()
print("ready", flush=True)
step = total = 0
while True:
    total += a.forward([step, step + 1])  # PROBE_MAIN_LINE
    step += 1
    state[:] = [step, total]
    time.sleep(0.002)
