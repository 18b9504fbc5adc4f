"""He et al.'s ResNet-20 for CIFAR-10, with GroupNorm in place of BatchNorm."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Entry
from .info import ModelInfo

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


ENTRY = Entry(
    "resnet20",
    resnet20,
    "He et al.'s ResNet-20 (270k) with GroupNorm instead of BatchNorm, since batch statistics averaged over "
    "non-IID clients hurt (Hsieh et al. 2020)",
    info=ModelInfo((3, 32, 32)),
)
