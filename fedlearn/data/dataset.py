"""A dataset as in-memory tensors, and what a dataset says of itself (:class:`DatasetInfo`)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .windows import take


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset entry describes of itself, before any file is read: checks of the flags use it (a model
    fits the input shape, a label-flip attack knows the classes) and so does ``--help``."""

    title: str  # for messages and tables, e.g. "Fashion-MNIST"
    input_shape: tuple[int, ...]  # one sample, e.g. (1, 28, 28) or (3, 32, 32)
    num_classes: int = 10
    input_dtype: torch.dtype = torch.float32
    task: str = "image classification"
    client_ids: bool = False  # samples carry the client they belong to (a natural partition)
    default_model: str | None = "cnn"  # None: no built-in model takes its inputs
    default_augment: str = "none"
    num_clients: int | None = None  # how many clients the samples belong to (with client ids)
    client_tests: bool = False  # the test samples carry their client too: each client's own test set
    count_clients: Callable[[Mapping[str, Any]], int | None] | None = None  # num_clients found from the files

    def clients(self, flags: Mapping[str, Any]) -> int | None:
        """How many clients the samples belong to (None: unknown until the data are read); ``flags``: the run's
        (where the files are)."""
        return self.num_clients if self.count_clients is None else self.count_clients(flags)

    @property
    def default_partition(self) -> str:
        """The clients the data come with, when the samples carry them; else an IID split."""
        return "natural" if self.client_ids else "iid"


def describe_input(shape: tuple[int, ...] | None) -> str:
    """One sample's shape in words, e.g. ``28x28 greyscale images`` or ``32x32 colour images``."""
    if shape is None:
        return "any input"
    if len(shape) == 3 and shape[0] in (1, 3):
        channels, height, width = shape
        return f"{height}x{width} {'greyscale' if channels == 1 else 'colour'} images"
    return f"inputs of shape {tuple(shape)}"


@dataclass(frozen=True)
class Dataset:
    """Train and test split as tensors: inputs (images ``(N, C, H, W)`` float32 normalized per channel), labels
    int64; with a natural partition, the client of each training and test sample (int64, None otherwise)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    source: str
    test_fingerprint: str = ""  # sha256 (16 hex digits) of the raw test images and labels
    num_classes: int = 10
    train_clients: torch.Tensor | None = None
    test_clients: torch.Tensor | None = None
    kept_clients: tuple[int, ...] | None = None  # with --data_fraction: the client ids kept

    def shared_for_training(self) -> Dataset:
        """The training split moved into shared memory (other processes map it, never copy it), without the test
        split: what worker processes train on."""
        empty = torch.empty(0)
        clients = self.train_clients.share_memory_() if self.train_clients is not None else None
        return replace(self, train_x=self.train_x.share_memory_(), train_y=self.train_y.share_memory_(),
                       test_x=empty, test_y=empty.long(), train_clients=clients, test_clients=None)  # fmt: skip

    def to(self, device: torch.device, channels_last: bool = False) -> Dataset:
        """The same dataset with every tensor on ``device`` (images channels-last if asked)."""
        fmt = torch.channels_last if channels_last and self.train_x.dim() == 4 else torch.contiguous_format
        return replace(
            self,
            train_x=self.train_x.to(device, memory_format=fmt),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device, memory_format=fmt),
            test_y=self.test_y.to(device),
        )

    def black(self) -> torch.Tensor:
        """Each channel's value of a black pixel after normalization (``-mean / std``): padding for crops."""
        return torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32)

    def describe_normalization(self) -> str:
        """``mean, std`` with 4 decimals (one value each for greyscale, per channel in brackets for colour, their
        ranges for many features; ``none`` for inputs used as they are)."""
        if not self.mean:
            return "none (the inputs as they are)"
        if len(self.mean) == 1:
            return f"{self.mean[0]:.4f}, {self.std[0]:.4f}"
        if len(self.mean) > 3:
            span = lambda v: f"{min(v):.4f} to {max(v):.4f}"  # noqa: E731
            return f"{len(self.mean)} features or channels: mean {span(self.mean)}, std {span(self.std)}"
        return ", ".join("(" + ", ".join(f"{v:.4f}" for v in values) + ")" for values in (self.mean, self.std))


def pixel_statistics(images: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation (unbiased) of 8-bit ``images`` scaled to [0, 1], from exact integer sums, so
    they are the same bit for bit however many threads add them up (a float sum is not)."""
    counts = [int(c) for c in torch.bincount(images.flatten(), minlength=256)]  # pixels of each value 0..255
    n = sum(counts)
    total = sum(value * count for value, count in enumerate(counts))
    squares = sum(value * value * count for value, count in enumerate(counts))
    mean = Fraction(total, n * 255)
    variance = Fraction(n * squares - total * total, n * (n - 1) * 255 * 255) if n > 1 else Fraction(0)
    return float(mean), math.sqrt(variance) or 1.0


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`pixel_statistics` of each channel of ``(N, C, H, W)`` 8-bit images: (means, stds)."""
    stats = [pixel_statistics(images[:, c]) for c in range(images.shape[1])]
    return tuple(m for m, _ in stats), tuple(s for _, s in stats)


def _normalized(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """8-bit images scaled to [0, 1], minus each channel's mean, over its std (float32, the memory layout kept)."""
    shape = (1, len(mean), 1, 1)
    x = images.to(torch.float32).div_(255.0)
    return x.sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape))


Split = tuple[torch.Tensor, torch.Tensor]
"""One split's 8-bit images ``(N, C, H, W)`` and integer labels."""


def _checked(split: Split, info: DatasetInfo, what: str, where: str) -> Split:
    """``split`` if it has as many labels as images, at least one, and labels in ``0..C-1`` (else DataError)."""
    images, labels = split
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise DataError(f"{info.title} {what} files in {where} do not match: "
                        f"{tuple(images.shape)} images for {tuple(labels.shape)} labels")  # fmt: skip
    if int(labels.min()) < 0 or int(labels.max()) >= info.num_classes:
        raise DataError(f"{info.title} {what} labels in {where} fall outside 0..{info.num_classes - 1}")
    return split


def image_dataset(name: str, info: DatasetInfo, train: Split, test: Split, where: str) -> Dataset:
    """Both splits of 8-bit images checked, scaled to [0, 1] and normalized per channel with the training
    images' mean and std; ``where`` names the files in messages and the table."""
    (train_images, train_labels), (test_images, test_labels) = (
        _checked(train, info, "training", where),
        _checked(test, info, "test", where),
    )
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(f"{info.title} training and test images differ in size: "
                        f"{tuple(train_images.shape[1:])} vs {tuple(test_images.shape[1:])}")  # fmt: skip
    mean, std = channel_statistics(train_images)
    digest = hashlib.sha256(test_images.numpy().tobytes())
    digest.update(test_labels.numpy().tobytes())
    return Dataset(
        name=name,
        train_x=_normalized(train_images, mean, std),
        train_y=train_labels.to(torch.int64),
        test_x=_normalized(test_images, mean, std),
        test_y=test_labels.to(torch.int64),
        mean=mean,
        std=std,
        source=where,
        test_fingerprint=digest.hexdigest()[:16],
        num_classes=info.num_classes,
    )


def kept_count(clients: int, fraction: float) -> int:
    """How many of ``clients`` a share ``fraction`` keeps (at least one)."""
    return max(1, round(fraction * clients))


def keep_clients(data: Dataset, fraction: float, rng: np.random.Generator) -> Dataset:
    """A random share ``fraction`` of the data's clients, each whole (LEAF's ``--sf``): their training samples and,
    when test samples carry their client, their test samples."""
    ids = torch.unique(data.train_clients).cpu().numpy()
    chosen = np.sort(rng.choice(ids, kept_count(len(ids), fraction), replace=False))
    split = {}
    for name in ("train", "test"):
        clients = getattr(data, f"{name}_clients")
        if clients is None:
            continue
        index = torch.from_numpy(np.flatnonzero(np.isin(clients.cpu().numpy(), chosen)))
        split.update({f"{name}_x": take(getattr(data, f"{name}_x"), index),
                      f"{name}_y": getattr(data, f"{name}_y")[index], f"{name}_clients": clients[index]})  # fmt: skip
    return replace(data, **split, kept_clients=tuple(int(c) for c in chosen))
