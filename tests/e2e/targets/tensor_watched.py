"""A training loop in train(): SGD updates model.weight in place each step; every 4th step buf is
filled with nan in place, and the next step it is replaced by a new tensor of zeros. Prints
'ready', then 20 steps a second until killed."""
import time

import torch


def train():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    buf = torch.zeros(3)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    step = 0
    print("ready", flush=True)
    while True:
        step += 1
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()  # TENSOR_STEP
        if step % 4 == 0:
            buf.fill_(float("nan"))  # TENSOR_NAN
        elif step % 4 == 1 and step > 1:
            buf = torch.zeros(3)  # TENSOR_NEW
        time.sleep(0.05)


train()
