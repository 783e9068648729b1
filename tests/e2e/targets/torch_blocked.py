"""A module's forward that waits, on a thread of its own, for the test: tracing's entries for the
calls in progress (`outer`, `inner`) are then held while the test switches tracing off. A line
'go' on stdin starts the call; `entered` is set once it waits in inner's forward, `release` lets it
return. Prints 'ready' first."""
import sys
import threading

import torch
from torch import nn

entered, release = threading.Event(), threading.Event()


class Waits(nn.Module):
    def forward(self, x):
        entered.set()
        release.wait()
        return x


inner = Waits()
outer = nn.Sequential(nn.Identity(), inner)


def call():
    outer(torch.zeros(1))


print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "go":
        threading.Thread(target=call, daemon=True).start()
