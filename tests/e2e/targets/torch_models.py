"""Training and inference loops for the torch tracing tests (tests/e2e/test_torch.py), chosen by
argv[1]:
  mlp          an MLP (model.encoder.{0,1,2}, model.head) trained with SGD
  transformer  a small transformer encoder (layers.N.self_attn, ...) trained with Adam
  inference    the MLP called forward-only, no optimizer
  slow_inference  the same with a 20 ms pause in the middle of each forward (SlowMLP), so that
               tracing switched on lands inside a forward that began without hooks
  raising      the MLP forward-only, every other call raising in its head (caught by the loop)
  checkpointed the MLP trained with SGD, its encoder under activation checkpointing; each
               recomputation of it pauses 20 ms before it begins; torch.utils.checkpoint with
               use_reentrant=False, with use_reentrant=True (CHECKPOINT=reentrant), or an autograd
               Function of the script's own (CHECKPOINT=own)
  slow_backward  the MLP trained with SGD, its encoder.1 a ReLU whose backward takes 30 ms more
               (SlowGradReLU), then an in-place ReLU (encoder.3) and an Identity (encoder.4);
               `losses` holds every step's loss
  loader       the MLP trained with SGD on batches from a DataLoader (no worker processes)
  workers      the same from a DataLoader with 2 forked workers, whose dataset runs a module
               (an nn.Linear "transform") on each item; `workers` holds their pids
  two_optimizers  the MLP's encoder trained with SGD and its head with Adam, stepped after it;
               every third Adam step raises in its closure (caught by the loop)
Each step sleeps a little so that the test's queries get CPU. Prints 'ready' after the first
step. A line 'spans' on stdin runs three nested probing.span blocks (when probing is importable).
With PROBING_TEST_MODE=1 (PyTorch 2.x) the main thread runs under a TorchFunctionMode that notes
the name of every function it sees in `seen_by_mode`."""
import os
import sys
import threading
import time

import torch
from torch import nn

from mlp import MLP  # targets/mlp.py, beside this script

torch.manual_seed(0)
torch.set_num_threads(1)
kind = sys.argv[1] if len(sys.argv) > 1 else "mlp"
seen_by_mode = set()
if os.environ.get("PROBING_TEST_MODE") == "1":
    class Watch(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen_by_mode.add(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    Watch().__enter__()  # for the rest of the program, on the main thread


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.layers(self.embed(x))).mean(dim=1)


class RaisingHead(nn.Linear):
    calls = 0

    def forward(self, x):
        RaisingHead.calls += 1
        if RaisingHead.calls % 2 == 0:
            raise ValueError("every other call")
        return super().forward(x)


class _SlowGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        time.sleep(0.03)
        x, = ctx.saved_tensors
        return grad * (x > 0)


class SlowGradReLU(nn.Module):
    def forward(self, x):
        return _SlowGrad.apply(x)


in_backward = False


class OwnCheckpoint(torch.autograd.Function):
    """Activation checkpointing of its own, as Megatron's and DeepSpeed's are: forward without
    keeping activations, run again in backward."""
    @staticmethod
    def forward(ctx, run, x):
        ctx.run = run
        ctx.save_for_backward(x)
        with torch.no_grad():
            return run(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        x = x.detach().requires_grad_()
        with torch.enable_grad():
            out = ctx.run(x)
        torch.autograd.backward(out, grad)
        return None, x.grad


class CheckpointedMLP(MLP):
    """Its encoder under activation checkpointing: run again during the backward pass, 20 ms after
    the recomputation begins (where tracing switched on then lands)."""
    def forward(self, x):
        from torch.utils.checkpoint import checkpoint
        how = os.environ.get("CHECKPOINT", "hooks")
        if how == "own":
            return self.head(OwnCheckpoint.apply(self.encode, x.detach().requires_grad_()))
        if how == "reentrant":  # recomputes only for an input that needs a gradient
            return self.head(checkpoint(self.encode, x.detach().requires_grad_(), use_reentrant=True))
        return self.head(checkpoint(self.encode, x, use_reentrant=False))

    def encode(self, x):
        if in_backward:
            time.sleep(0.02)
        return self.encoder(x)


class SlowMLP(MLP):
    def forward(self, x):
        h = self.encoder(x)
        time.sleep(0.02)
        return self.head(h)


if kind == "transformer":
    model = Tiny()
    x = torch.randn(4, 6, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
else:
    model = {"slow_inference": SlowMLP, "checkpointed": CheckpointedMLP}.get(kind, MLP)()
    if kind == "raising":
        model.head = RaisingHead(32, 1)
    if kind == "slow_backward":
        model.encoder[1] = SlowGradReLU()
        model.encoder.add_module("3", nn.ReLU(inplace=True))  # in place: no node of its input's
        model.encoder.add_module("4", nn.Identity())  # makes no node
    x = torch.randn(16, 8)
    trained = ("mlp", "loader", "workers", "slow_backward", "checkpointed")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01) if kind in trained else None
    if kind == "two_optimizers":
        optimizer = torch.optim.SGD(model.encoder.parameters(), lr=0.01)
        second = torch.optim.Adam(model.head.parameters(), lr=1e-3)
losses = []
y = torch.randn(x.shape[0], 1)
step = 0


def batches():
    """(x, y) for each step: the same batch, or a DataLoader's, epoch after epoch."""
    if kind == "workers":
        yield from worker_batches()
    if kind != "loader":
        while True:
            yield x, y
    from torch.utils.data import DataLoader, TensorDataset
    loader = DataLoader(TensorDataset(torch.randn(64, 8), torch.randn(64, 1)), batch_size=16)
    while True:
        yield from loader


class Transformed(torch.utils.data.Dataset):
    """Items made by a module, as a learned augmentation or a frozen encoder would."""
    def __init__(self):
        self.transform = nn.Linear(8, 8)
        self.calls = 0

    def __len__(self):
        return 1 << 30

    def __getitem__(self, i):
        self.calls += 1
        with torch.no_grad():
            return self.transform(torch.ones(8) * (i % 7)), torch.ones(1)


workers = []


def worker_batches():
    from torch.utils.data import DataLoader
    loader = DataLoader(Transformed(), batch_size=16, num_workers=2, multiprocessing_context="fork")
    batches = iter(loader)
    workers.extend(w.pid for w in batches._workers)
    yield from batches


def spans_on_request():
    for line in sys.stdin:
        if line.strip() == "spans":
            import probing
            with probing.span("epoch", n=1):
                with probing.span("batch"):
                    with probing.span("forward", size=16):
                        probing.event("deep")
            print("spans done", flush=True)


if kind != "workers":  # a thread reading stdin holds its lock: a forked worker's close of stdin would wait forever
    threading.Thread(target=spans_on_request, daemon=True).start()
for bx, by in batches():
    if optimizer is None:
        with torch.no_grad():
            try:
                model(bx)
            except ValueError:
                pass
    else:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(bx), by)
        in_backward = True
        loss.backward()
        in_backward = False
        optimizer.step()
        if kind == "two_optimizers":
            def closure():
                if step % 3 == 2:
                    raise ValueError("a step that raises")
            try:
                second.step(closure)
            except ValueError:
                pass
        losses.append(loss.item())
    step += 1
    if step == 1:
        print("ready", flush=True)
    time.sleep(0.005)
