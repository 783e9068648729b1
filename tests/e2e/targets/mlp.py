"""The small MLP the torch targets train (torch_models.py, fake_gpu.py): model.encoder.{0,1,2},
model.head."""
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32))
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        return self.head(self.encoder(x))
