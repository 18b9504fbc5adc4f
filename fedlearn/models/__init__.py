"""Models chosen by ``--model``: greyscale ones take ``(N, 1, 28, 28)`` images (MNIST, Fashion-MNIST), colour
ones ``(N, 3, 32, 32)`` (CIFAR-10); all return ``num_classes`` logits."""

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


GROUPS = 2
"""GroupNorm groups per layer in ``resnet20`` (divides 16, 32 and 64; the parameter count does not depend on it)."""


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; He et al. (2016)'s option A: when the block halves the image and
    doubles the channels, the shortcut subsamples and pads the new channels with zeros (no parameters)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            half = self.extra // 2
            shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, half, self.extra - half))
        return torch.relu(out + shortcut)


def resnet20(num_classes: int = 10) -> nn.Module:
    """He et al. (2016, section 4.2)'s CIFAR ResNet-20: conv 3x3 16, three stages of 3 basic blocks (16, 32, 64
    channels, the last two stages start with stride 2), global average pooling, FC 10; GroupNorm in place of
    BatchNorm (batch statistics averaged over non-IID clients hurt: Hsieh et al. 2020) (269,722 parameters)."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False), _norm(16), nn.ReLU()]
    channels = 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(3):
            layers.append(BasicBlock(channels, width, stride if block == 0 else 1))
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "cnn": cnn_004,
    "cnn-fedavg": cnn_fedavg,
    "mlp": mlp,
    "lenet5": lenet5,
    "cnn-cifar": cnn_cifar,
    "resnet20": resnet20,
}
COLOUR_MODELS = frozenset({"cnn-cifar", "resnet20"})
"""Models for 3-channel 32x32 images; the others take 1-channel 28x28 ones."""


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
