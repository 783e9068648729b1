"""A rank of a small DDP job (gloo, CPU), started by torchrun: trains the MLP forever, one step
every 50 ms. Each rank prints "rank R step S" once it has trained a step.

When the file named by $STALL_FILE appears, rank $STALL_RANK stops in `wait_for_batch`, blocked
on a queue.get() that never returns, as a rank whose data loader is stuck would; the others stop
in DDP's gradient all-reduce, waiting for it.
"""
import os
import queue
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlp import MLP  # noqa: E402

# torchrun tees each rank's stdout only (--tee 1, which PyTorch 1.13 on 3.11 needs): errors too.
os.dup2(1, 2)

STALL_FILE = os.environ.get("STALL_FILE", "")
STALL_RANK = int(os.environ.get("STALL_RANK", "-1"))


def wait_for_batch(rank, batches):
    if rank == STALL_RANK and STALL_FILE and os.path.exists(STALL_FILE):
        return batches.get()  # nothing is ever put: the rank stalls here
    return torch.randn(16, 8)


def train(rank):
    torch.manual_seed(rank)
    model = DistributedDataParallel(MLP())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = queue.Queue()
    step = 0
    while True:
        x = wait_for_batch(rank, batches)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step == 1:
            print(f"rank {rank} step {step}", flush=True)
        time.sleep(0.05)


def main():
    dist.init_process_group("gloo")
    train(dist.get_rank())


if __name__ == "__main__":
    main()
