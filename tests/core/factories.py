"""Small PyTorch models used by the tests as python:factories:NAME sources."""

from __future__ import annotations

import torch
from torch import nn


class TinyClassifier(nn.Module):
    names = ["red", "green", "blue"]

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def build_classifier() -> nn.Module:
    torch.manual_seed(0)
    return TinyClassifier()


def build_not_a_module() -> object:
    return object()


def build_with_args(num_classes: int) -> nn.Module:
    """A factory that needs an argument (cvdeploy calls factories with none)."""
    return nn.Linear(4, num_classes)
