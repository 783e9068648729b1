"""A program that traces itself (sys.settrace, as coverage and pdb do) and calls a function in a
loop; each line read from stdin is answered with 'calls N', N growing while the loop runs."""
import sys
import threading

calls = 0


def tracer(frame, event, arg):
    return None  # call events only: the thread still runs in tracing mode


def work():
    global calls
    calls += 1


def answer():
    for _ in sys.stdin:
        print("calls %d" % calls, flush=True)


threading.Thread(target=answer, daemon=True).start()
sys.settrace(tracer)
print("ready", flush=True)
while True:
    work()
