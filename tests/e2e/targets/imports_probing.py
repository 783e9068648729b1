"""A target that starts the agent itself with `import probing; probing.init()`
(PYTHONPATH points at the build's package dir)."""
import time

import probing

where = probing.init()
counter = 0
model = {"layers": 3}
print("agent at %s" % where, flush=True)
print("ready", flush=True)
while True:
    counter += 1
    time.sleep(0.05)
