"""Counts every torch.cuda call that initializes CUDA or needs it (is_available, device_count,
memory queries, ...), made by anyone, while a small model trains and the process forks a child
that uses torch, as DataLoader workers do. Only the program itself may initialize CUDA: a
tracer that does poisons fork for the children. `calls` is the list of names called; the program
makes none itself. Prints 'ready' after its first step and 'forked N' after each fork."""
import os
import time

import torch

calls = []
for _name in ("is_available", "device_count", "init", "current_device", "get_device_name",
              "get_device_properties", "memory_allocated", "max_memory_allocated", "memory_reserved",
              "mem_get_info", "synchronize", "set_device"):
    _orig = getattr(torch.cuda, _name, None)
    if _orig is not None:
        def _counted(*args, _name=_name, _orig=_orig, **kwargs):
            calls.append(_name)
            return _orig(*args, **kwargs)
        setattr(torch.cuda, _name, _counted)

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(32, 8)
y = torch.randn(32, 1)
step = 0
forks = 0
while True:
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    step += 1
    if step == 1:
        print("ready", flush=True)
    if step % 50 == 0:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if float(model(x).sum()) == float(model(x).sum()) else 1)
        forks += 1
        print("forked", os.waitpid(pid, 0)[1], flush=True)
    time.sleep(0.002)
