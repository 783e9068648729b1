"""An MLP compiled with torch.compile (backend aot_eager: no C compiler needed) trained for 30
SGD steps; prints the last loss, TorchDynamo's counters (frames compiled, graphs, graph breaks) as
JSON, then 'ready', then waits for a line on stdin before it exits."""
import json
import sys

import torch
from torch import nn

torch.manual_seed(0)
torch.set_num_threads(1)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
compiled = torch.compile(model, backend="aot_eager")
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(8, 16)
for step in range(30):
    optimizer.zero_grad()
    loss = compiled(x).pow(2).mean()
    loss.backward()
    optimizer.step()
print("loss %.10f" % loss.item(), flush=True)
from torch._dynamo.utils import counters
print(json.dumps({k: dict(v) for k, v in sorted(counters.items())}, sort_keys=True), flush=True)
print("ready", flush=True)
sys.stdin.readline()
