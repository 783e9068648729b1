"""A deterministic training run for the soak test: a small MLP fitted to fixed data on one thread,
printing each step's loss exactly (float.hex), then exiting 0. Its output depends on nothing but
the step count, so a run under load must print exactly what the same run alone prints. Where
PyTorch is not installed for this interpreter, the same loop fits a linear model in plain Python.

argv: steps step_pause_s. Prints 'ready' once the model exists, before the first step, and
'torch' or 'python' before that."""
import random
import sys
import time

steps = int(sys.argv[1])
pause = float(sys.argv[2])

try:
    import torch
except ImportError:
    torch = None

if torch is not None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(128, 32)
    y = torch.randn(128, 8)

    def train_step():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return float(loss.item())
else:
    rng = random.Random(0)
    xs = [[rng.uniform(-1, 1) for _ in range(8)] for _ in range(64)]
    ys = [sum((i + 1) * v for i, v in enumerate(row)) + rng.gauss(0, 0.1) for row in xs]
    weights = [0.0] * 8

    def train_step():
        grad = [0.0] * 8
        loss = 0.0
        for row, target in zip(xs, ys):
            err = sum(w * v for w, v in zip(weights, row)) - target
            loss += err * err
            for i, v in enumerate(row):
                grad[i] += 2 * err * v / len(xs)
        for i in range(8):
            weights[i] -= 0.05 * grad[i]
        return loss / len(xs)

print("torch" if torch is not None else "python", flush=True)
print("ready", flush=True)
for step in range(steps):
    loss = train_step()
    print("step", step, loss.hex())
    if pause:
        time.sleep(pause)
print("done", flush=True)
