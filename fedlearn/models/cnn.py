"""The reference system's CNN, McMahan et al.'s and LEAF's FEMNIST CNN, for 28x28 greyscale images."""

from __future__ import annotations

from torch import nn

from ..registry import Entry
from .info import ModelInfo


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


def _two_conv_dense(hidden: int, num_classes: int) -> nn.Module:
    """conv 5x5 32 (same), pool, conv 5x5 64 (same), pool, dense ``hidden``, dense ``num_classes`` on 28x28."""
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def cnn_fedavg(num_classes: int = 10) -> nn.Module:
    """McMahan et al. (2017)'s CNN: conv 5x5 32, pool, conv 5x5 64, pool, FC 512, FC 10 (1.66M parameters)."""
    return _two_conv_dense(512, num_classes)


def cnn_femnist(num_classes: int = 62) -> nn.Module:
    """LEAF's FEMNIST CNN (Caldas et al. 2018): conv 5x5 32 (same), pool, conv 5x5 64 (same), pool, dense 2048,
    dense ``num_classes`` (6,603,710 parameters for 62 classes)."""
    return _two_conv_dense(2048, num_classes)


ENTRIES = (
    Entry("cnn", cnn_004, "two 5x5 conv blocks and a linear layer (29k weights)", info=ModelInfo((1, 28, 28))),
    Entry("cnn-fedavg", cnn_fedavg, "McMahan et al.'s (1.66M)", info=ModelInfo((1, 28, 28))),
    Entry("cnn-femnist", cnn_femnist, "LEAF's FEMNIST CNN (6.6M)", info=ModelInfo((1, 28, 28))),
)
