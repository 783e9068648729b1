"""A small data-parallel job for the demo: each rank (started by torchrun, gloo on CPU) trains an
MLP on y = sin(x), its gradients averaged across ranks by DistributedDataParallel.

Rank --stuck-rank (2) stops getting data after --stuck-after seconds (5): its loader waits on a
queue that nothing fills, as a stuck data pipeline would, and every other rank then waits for it
in the gradient all-reduce. The job stops moving; `probing cluster -t PID backtrace` shows which
rank is the odd one out. Each rank prints `rank R pid P training` once it has trained a step."""

import argparse
import math
import os
import queue
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class Loader:
    def __init__(self, rank, stuck_rank, stuck_after):
        self.rank, self.stuck_rank = rank, stuck_rank
        self.stuck_at = time.monotonic() + stuck_after
        self.pending = queue.Queue()  # filled by nobody once stuck

    def next_batch(self, batch_size=32):
        if self.rank == self.stuck_rank and time.monotonic() > self.stuck_at:
            return self.pending.get()
        x = torch.rand(batch_size, 1) * 2 * math.pi
        return x, torch.sin(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stuck-rank", type=int, default=2)
    parser.add_argument("--stuck-after", type=float, default=5.0)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = Loader(rank, args.stuck_rank, args.stuck_after)
    step = 0
    while True:
        x, y = loader.next_batch()
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step == 1:
            print(f"rank {rank} pid {os.getpid()} training", flush=True)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
