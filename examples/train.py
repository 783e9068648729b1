"""A small PyTorch training loop for the demo: an MLP learning y = sin(x) on CPU.

Prints `ready` once training has started, then a line every 20 steps. Runs until killed (or
for --steps steps)."""

import argparse
import math
import sys
import time

import torch
from torch import nn


class Regressor(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


def batches(batch_size):
    while True:
        x = torch.rand(batch_size, 1) * 2 * math.pi
        yield x, torch.sin(x)


def train_step(batch, target):
    optimizer.zero_grad()
    loss = loss_fn(model(batch), target)
    loss.backward()
    optimizer.step()
    return loss.item()


parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: never)")
args = parser.parse_args()

torch.manual_seed(0)
torch.set_num_threads(1)
model = Regressor()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.MSELoss()
step = 0
last_loss = float("nan")

for batch, target in batches(32):
    last_loss = train_step(batch, target)
    step += 1
    if step == 1:
        print("ready", flush=True)
    if step % 20 == 0:
        print(f"step {step} loss {last_loss:.4f}", flush=True)
    if args.steps and step >= args.steps:
        break
    time.sleep(0.002)  # leave the CPU to the demo's probing commands on a small machine
sys.exit(0)
