"""Prints 'ready', keeps a loop busy for argv[1] seconds, then returns from the main module:
the interpreter finalizes and the process runs its exit handlers with exit status 0. With
argv[2] == "torch", imports torch first."""
import sys
import time

if sys.argv[2:] == ["torch"]:
    import torch  # noqa: F401

step = 0
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    step += 1
    time.sleep(0.001)
