"""A multilayer perceptron for 28x28 greyscale images."""

from __future__ import annotations

from torch import nn

from ..registry import Entry
from .info import ModelInfo


def mlp(num_classes: int = 10) -> nn.Module:
    """A 784-128-10 perceptron."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, num_classes))


ENTRY = Entry("mlp", mlp, "784-128-10 perceptron", info=ModelInfo((1, 28, 28)))
