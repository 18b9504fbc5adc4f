"""Models chosen by ``--model``; all take ``(N, 1, 28, 28)`` images and return 10 logits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def cnn_004(num_classes: int = 10) -> nn.Module:
    """The reference system's CNN: two 5x5 conv blocks (16, 32 channels) and one linear layer."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, num_classes),
    )


def cnn_fedavg(num_classes: int = 10) -> nn.Module:
    """McMahan et al. (2017)'s CNN: conv 5x5 32, pool, conv 5x5 64, pool, FC 512, FC 10 (1.66M parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def mlp(num_classes: int = 10) -> nn.Module:
    """A 784-128-10 perceptron."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, num_classes))


def lenet5(num_classes: int = 10) -> nn.Module:
    """LeNet-5 style: conv 6, pool, conv 16, pool, FC 120, FC 84, FC 10 (ReLU, max pooling)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "cnn": cnn_004,
    "cnn-fedavg": cnn_fedavg,
    "mlp": mlp,
    "lenet5": lenet5,
}


def build_model(name: str, num_classes: int = 10, channels_last: bool = False) -> nn.Module:
    """A freshly initialised model (uses torch's global RNG: seed it first).

    ``channels_last`` stores conv weights (and so activations) channels-last:
    the same numbers' layout, faster convolutions on CPU (see fedlearn.bench).
    """
    model = MODELS[name](num_classes)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
