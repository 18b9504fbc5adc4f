"""A model with a body and a head for the personalization tests (FedPer needs layers to share)."""

from torch import nn


def two_layers(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """60 features -> 16 hidden -> the classes: 976 weights of body, 170 of head."""
    return nn.Sequential(nn.Linear(input_shape[0], 16), nn.ReLU(), nn.Linear(16, num_classes))
