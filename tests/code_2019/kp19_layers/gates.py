import torch
from torch import nn


class ScaledGate(nn.Module):
    """Channel attention with a fixed temperature, as in the 2019 write-ups."""

    def __init__(self, channels, temperature=2.0):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.temperature = temperature

    def forward(self, x):
        weights = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)) / self.temperature)
        return x * weights
