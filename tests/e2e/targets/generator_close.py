"""A main thread inside a generator, in a function of a module it has just written to a file of
its own, busy on the CPU; the generator yields and is dropped at once (closed and freed), and the
next round writes the next module. A stack reader that reads a source file (a new one each time)
lets the GIL go to this thread, which then returns from the frames the reader holds and closes the
generator. CPython 3.13.0-3.13.5 then leave the generator frame's object with freed locals
(gh-125723): a reader that goes on to read that frame's locals reads garbage, or crashes.

argv: seconds to run. Prints 'ready', then 'done ROUNDS' and exits 0; every local `payload` a
stack of it shows is PAYLOAD."""
import importlib.util
import os
import shutil
import sys
import tempfile
import time

PAYLOAD = ["payload", 1, 2.5]
BODY = """import time


def inner(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
"""


def fresh_module(directory, i):
    path = os.path.join(directory, "generated_%d.py" % i)
    with open(path, "w") as f:
        f.write(BODY)
    spec = importlib.util.spec_from_file_location("generated_%d" % i, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generator(module):
    payload = list(PAYLOAD)
    module.inner(0.03)
    yield payload


directory = tempfile.mkdtemp(prefix="probing-generator-close-")
try:
    print("ready", flush=True)
    rounds = 0
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        got = next(generator(fresh_module(directory, rounds)))  # the generator is dropped here
        assert got == PAYLOAD, got
        rounds += 1
    print("done", rounds, flush=True)
finally:
    shutil.rmtree(directory, ignore_errors=True)
