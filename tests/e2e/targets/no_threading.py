"""A target that has not imported threading (checked), blocked on stdin. On the line `check` it
imports threading on its own main thread and prints whether threading agrees that this is the
main thread: an agent that imported threading first, on its own thread, would make it False."""
import sys

print("threading imported at start: %s" % ("threading" in sys.modules), flush=True)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "check":
        import threading

        print("main thread is main: %s" % (threading.main_thread() is threading.current_thread()), flush=True)
