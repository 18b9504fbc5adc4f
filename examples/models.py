"""A model for the examples' tabular data: a small multilayer perceptron, built from the data's shape."""

import math

from torch import nn


def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two hidden layers of 64 units (the inputs flattened)."""
    features = math.prod(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, num_classes))  # fmt: skip
