"""LeNet-5's shape: on 28x28 greyscale images (padded) and, as NIID-Bench's CNN, on CIFAR-10."""

from __future__ import annotations

from torch import nn

from ..registry import Entry
from .info import ModelInfo


def _lenet(in_channels: int, padding: int, num_classes: int) -> nn.Sequential:
    """conv 5x5 6, pool, conv 5x5 16, pool, FC 400-120-84-classes (ReLU, 2x2 max pooling); ``padding`` of the first
    convolution makes the image 32x32 (28 -> 14 -> 10 -> 5 after it)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, kernel_size=5, padding=padding),
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


def lenet5(num_classes: int = 10) -> nn.Module:
    """LeNet-5 style on 28x28 greyscale images padded to 32x32 (61,706 parameters)."""
    return _lenet(1, 2, num_classes)


def cnn_cifar(num_classes: int = 10) -> nn.Module:
    """NIID-Bench's CIFAR-10 CNN (Li et al. 2022, ``SimpleCNN``): LeNet-5's shape on 3-channel 32x32 images, no
    padding: conv 5x5 6, pool, conv 5x5 16, pool, FC 400-120-84-10 (62,006 parameters)."""
    return _lenet(3, 0, num_classes)


ENTRIES = (
    Entry("lenet5", lenet5, "LeNet-5 style", info=ModelInfo((1, 28, 28))),
    Entry("cnn-cifar", cnn_cifar, "NIID-Bench's CNN (62k)", info=ModelInfo((3, 32, 32))),
)
