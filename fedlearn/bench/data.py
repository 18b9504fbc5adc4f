"""The benchmark's data and its reference: MNIST-shaped random tensors, and the plainest PyTorch loop over them
(no fedlearn code), which fedlearn's runs are measured against."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset

BATCH_SIZE = 100  # every timed run: Adam, lr 1e-3, batch 100 (the scripts' model and layout)
LR = 1e-3


def synthetic_dataset(num_train: int, num_test: int, seed: int = 0) -> Dataset:
    """MNIST-shaped random images and labels, already 'normalized'."""
    g = torch.Generator().manual_seed(seed)
    return Dataset(
        name="synthetic",
        train_x=torch.randn(num_train, 1, 28, 28, generator=g),
        train_y=torch.randint(0, 10, (num_train,), generator=g),
        test_x=torch.randn(num_test, 1, 28, 28, generator=g),
        test_y=torch.randint(0, 10, (num_test,), generator=g),
        mean=(0.0,),
        std=(1.0,),
        source="synthetic",
    )


def plain_model(seed: int = 0, channels_last: bool = False) -> nn.Module:
    """The reference CNN declared from scratch (no fedlearn code)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip
    return model.to(memory_format=torch.channels_last) if channels_last else model


def plain_jobs_seconds(
    data: Dataset, jobs: list[list[torch.Tensor]], seed: int = 0, channels_last: bool = False
) -> float:
    """The plainest loop over given batches of indices: a fresh Adam per job, one step per batch."""
    model = plain_model(seed, channels_last)
    x, y = data.train_x, data.train_y
    start = time.perf_counter()
    for batches in jobs:
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        for batch in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return time.perf_counter() - start


def plain_pytorch_seconds(
    data: Dataset, seed: int = 0, channels_last: bool = False, batch_size: int = BATCH_SIZE
) -> float:
    """One epoch of the plainest loop over the same tensors: the reference (no fedlearn code).

    With ``channels_last`` the model is converted to that layout, as fedlearn's default does.
    """
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(seed))
    return plain_jobs_seconds(data, [list(order.split(batch_size))], seed, channels_last)
