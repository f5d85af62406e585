"""Scaler: standardizes 8 features (x * scale + shift). Served eagerly from a state_dict
(models/scaler.pth): TorchServe imports this file and loads the weights into `Scaler()`."""

import torch
from torch import nn


class Scaler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))
        self.shift = nn.Parameter(torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift
