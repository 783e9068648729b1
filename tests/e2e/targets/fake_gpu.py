"""The torch tracer's CUDA path on a machine without a GPU: real PyTorch on the CPU, with the few
torch.cuda functions the tracer calls replaced (CUDA initialized, timing events that read
time.perf_counter, the allocator's figures, whether the stream is being captured), counting how
they are used. An MLP trains with SGD; every 10th step runs as if captured into a CUDA graph
(`is_current_stream_capturing()` is true throughout it). Prints 'ready' after the first step."""
import time

import torch
from torch import nn

from mlp import MLP  # targets/mlp.py, beside this script

counts = {"events_made": 0, "records": 0, "records_in_capture": 0, "memory_reads": 0}
capturing = False


class Event:
    def __init__(self, enable_timing=False):
        counts["events_made"] += 1
        self.at = None

    def record(self, stream=None):
        counts["records"] += 1
        if capturing:
            counts["records_in_capture"] += 1
        self.at = time.perf_counter()

    def query(self):
        return self.at is not None

    def elapsed_time(self, end):
        return (end.at - self.at) * 1000.0


def memory_allocated(device=None):
    counts["memory_reads"] += 1
    return 64 << 20


torch.cuda.is_initialized = lambda: True
torch.cuda.Event = Event
torch.cuda.memory_allocated = memory_allocated
torch.cuda.max_memory_allocated = lambda device=None: 96 << 20
torch.cuda.is_current_stream_capturing = lambda: capturing


torch.manual_seed(0)
model = MLP()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(16, 8), torch.randn(16, 1)
step = 0
while True:
    capturing = step % 10 == 9
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    capturing = False
    step += 1
    if step == 1:
        print("ready", flush=True)
    time.sleep(0.005)
