"""Synthetic(alpha, beta) of Li et al. (FedProx, MLSys 2020, section 5.1 and appendix C.1): devices whose
models (alpha) and data (beta) differ, generated from a seed, for multinomial logistic regression.

Device ``k`` (of ``--synthetic_devices``, 30 in the paper) draws ``u_k ~ N(0, alpha)`` and ``B_k ~ N(0, beta)``;
its model ``W_k`` (60 x 10) and ``b_k`` have entries ``~ N(u_k, 1)``; its inputs ``x ~ N(v_k, Sigma)`` with
``v_k ~ N(B_k, 1)`` per feature and ``Sigma`` diagonal, ``Sigma_jj = j^-1.2``; its labels ``y = argmax(W_k^T x +
b_k)``. Its sample count follows a power law, ``int(lognormal(4, 2)) + 50``; 90 % of its samples (shuffled) are
its training part, the rest its test part. As in the authors' generator (``generate_synthetic.py``), the ``N(0,
alpha)`` and ``N(0, beta)`` draws take alpha and beta as standard deviations (the same for the paper's
Synthetic(0,0), (0.5,0.5) read as variances differ) and the inputs are used as drawn (no normalization). The
draws come from ``--synthetic_seed`` (numpy's PCG64, not the authors' global generator: the same process, other
numbers), so every run of a seed sees the same devices, whatever ``--seed``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import seeding
from ..registry import Entry, Flag, Range
from .dataset import Dataset, DatasetInfo

FEATURES, CLASSES = 60, 10
TRAIN_FRACTION = 0.9


def device_sizes(devices: int, rng: np.random.Generator) -> np.ndarray:
    """Every device's sample count: ``int(lognormal(4, 2)) + 50`` (the authors' power law)."""
    return rng.lognormal(4, 2, devices).astype(np.int64) + 50


@dataclass(frozen=True)
class Device:
    """One device's model (``w``: features x classes, ``b``) and input mean ``v``."""

    w: np.ndarray
    b: np.ndarray
    v: np.ndarray


def draw_devices(alpha: float, beta: float, devices: int, rng: np.random.Generator) -> list[Device]:
    """Every device's model and input mean: ``u_k ~ N(0, alpha)``, ``B_k ~ N(0, beta)``, ``W_k, b_k ~ N(u_k, 1)``,
    ``v_k ~ N(B_k, 1)`` (alpha and beta as standard deviations, as the authors' generator draws them)."""
    u, b_mean = rng.normal(0, alpha, devices), rng.normal(0, beta, devices)
    v = rng.normal(b_mean[:, None], 1, (devices, FEATURES))
    return [Device(rng.normal(u[k], 1, (FEATURES, CLASSES)), rng.normal(u[k], 1, CLASSES), v[k])
            for k in range(devices)]  # fmt: skip


SCALE = np.arange(1, FEATURES + 1, dtype=np.float64) ** -0.6
"""The inputs' standard deviations: the square roots of ``Sigma_jj = j^-1.2``."""


def samples(device: Device, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` samples of a device: ``x ~ N(v, Sigma)``, ``y = argmax(x W + b)``."""
    x = device.v + rng.standard_normal((count, FEATURES)) * SCALE
    return x, (x @ device.w + device.b).argmax(axis=1)


def generate(alpha: float, beta: float, devices: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every device's samples ``(x, y, device)``, devices one after another, from ``seed``."""
    rng = seeding.numpy_rng(seed, seeding.SYNTHETIC)
    sizes = device_sizes(devices, rng)
    drawn = [samples(device, int(n), rng) for device, n in zip(draw_devices(alpha, beta, devices, rng), sizes)]
    return (np.concatenate([x for x, _ in drawn]), np.concatenate([y for _, y in drawn]),
            np.repeat(np.arange(devices), sizes))  # fmt: skip


def split(device: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Whether each sample is in its device's training part: a shuffled 90 % of each device's samples."""
    train = np.zeros(len(device), dtype=bool)
    for k in np.unique(device):
        members = rng.permutation(np.flatnonzero(device == k))
        train[members[: int(TRAIN_FRACTION * len(members))]] = True
    return train


class SyntheticSource:
    """Synthetic(alpha, beta) generated in memory (no files)."""

    def folder(self, data_dir: str | os.PathLike, **settings: Any) -> Path:
        return Path(data_dir)

    def prepare(self, data_dir: str | os.PathLike, download_allowed: bool = True, **settings: Any) -> str:
        return f"generated from --synthetic_seed {settings['synthetic_seed']} (Li et al. 2020's process)"

    def load(self, data_dir: str | os.PathLike, synthetic_alpha: float, synthetic_beta: float,
             synthetic_devices: int, synthetic_seed: int) -> Dataset:  # fmt: skip
        x, y, device = generate(synthetic_alpha, synthetic_beta, synthetic_devices, synthetic_seed)
        train = split(device, seeding.numpy_rng(synthetic_seed, seeding.SYNTHETIC, 1))
        tensors = {name: torch.from_numpy(a) for name, a in (("x", x.astype(np.float32)), ("y", y), ("c", device))}
        digest = hashlib.sha256(x[~train].astype(np.float32).tobytes() + y[~train].tobytes()).hexdigest()[:16]
        title = f"Synthetic({synthetic_alpha:g}, {synthetic_beta:g})"
        x, y, c = tensors["x"], tensors["y"], tensors["c"]
        return Dataset("synthetic", x[train], y[train], x[~train], y[~train], (), (), title, digest, CLASSES,
                       c[train], c[~train])  # fmt: skip


def _flag(name: str, default: Any, kind: type, help: str, **options: Any) -> Flag:
    return Flag(name, default, kind, group="data", help=help, older=default, **options)


INFO = DatasetInfo("Synthetic(alpha, beta)", (FEATURES,), num_classes=CLASSES, task="classification",
                   client_ids=True, default_model="logreg", client_tests=True,
                   count_clients=lambda flags: flags["synthetic_devices"])  # fmt: skip
ENTRY = Entry(
    "synthetic",
    SyntheticSource(),
    "Synthetic(alpha, beta) of FedProx (Li et al. 2020): devices of different models and data",
    flags=(
        _flag("synthetic_alpha", 1.0, float, "how much the devices' models differ (--dataset synthetic)",
              valid=Range(0, 100)),
        _flag("synthetic_beta", 1.0, float, "how much the devices' data differ (--dataset synthetic)",
              valid=Range(0, 100)),
        _flag("synthetic_devices", 30, int, "devices of Synthetic(alpha, beta) (the paper's 30)", count=True),
        _flag("synthetic_seed", 0, int, "the seed the devices are drawn from (the same data for every --seed)",
              valid=Range(0, 2**63 - 1)),
    ),
    info=INFO,
)  # fmt: skip
