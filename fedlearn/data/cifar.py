"""CIFAR-10's python version, in torchvision's layout: ``DATA_DIR/cifar-10-batches-py/`` holds the pickled
batches ``data_batch_1`` .. ``data_batch_5`` (training) and ``test_batch``.

torchvision's ``CIFAR10`` names the files, gives their published checksums and downloads them
(:mod:`fedlearn.data` stages and moves them in). The batches are read here with the layout torchvision reads
(``data``: ``(n, 3072)`` uint8 rows, red then green then blue planes of 32x32; ``labels``: n ints) but through an
unpickler that only rebuilds numpy arrays, so a data file cannot run code as a plain ``pickle.load`` lets it.
Files whose checksums differ from the published ones (a subset, a test's tiny copy) are used, and said so.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

FOLDER = "cifar-10-batches-py"
SIDE, CHANNELS = 32, 3
SAFE_GLOBALS = frozenset({
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),  # pickle protocol 5's arrays
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})  # fmt: skip
"""What an array, a numpy scalar or a Python 2 byte string needs to be rebuilt, and nothing else."""


def _torchvision_class() -> type:
    from torchvision.datasets import CIFAR10

    return CIFAR10


def batch_files(train: bool) -> list[tuple[str, str]]:
    """``(file name, published md5)`` of the training or test batches, as torchvision lists them."""
    cls = _torchvision_class()
    return [(name, md5) for name, md5 in (cls.train_list if train else cls.test_list)]


def all_files() -> list[str]:
    """Every batch file of both splits."""
    return [name for train in (True, False) for name, _ in batch_files(train)]


class _ArraysOnly(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, numbers and numpy arrays; refuses every other class or function."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch's ``(n, 3072)`` uint8 rows and ``n`` integer labels (ValueError if it holds anything else)."""
    with open(path, "rb") as f:
        entry = _ArraysOnly(f, encoding="latin1").load()
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise ValueError("not a dict with 'data' and 'labels'")
    data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        raise ValueError(f"'data' is {data.dtype} {data.shape}, not uint8 (n, {CHANNELS * SIDE * SIDE})")
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"'labels' is {labels.dtype} {labels.shape}, not a list of integers")
    if len(labels) != data.shape[0]:
        raise ValueError(f"{data.shape[0]} images for {len(labels)} labels")
    return data, labels


def _read_checked(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read_batch`, any failure a one-line DataError naming the file."""
    try:
        return _read_batch(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, OSError) as exc:  # fmt: skip
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"CIFAR-10 file {path} is corrupt ({detail}); replace or delete it") from None


def read_split(folder: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's images ``(N, 3, 32, 32)`` uint8 (channels-last in memory) and labels; a file that is not a
    CIFAR-10 batch is a one-line DataError naming it."""
    batches = [_read_checked(folder / name) for name, _ in batch_files(train)]
    n = sum(len(labels) for _, labels in batches)
    images = np.empty((n, SIDE, SIDE, CHANNELS), dtype=np.uint8)  # written batch by batch, in HWC order
    start = 0
    for data, labels in batches:
        images[start : start + len(labels)] = data.reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1)
        start += len(labels)
    labels = torch.from_numpy(np.concatenate([labels for _, labels in batches]).astype(np.int64))
    return torch.from_numpy(images).permute(0, 3, 1, 2), labels


def differing_checksums(folder: Path) -> list[str]:
    """The batch files whose md5 is not the published one (empty: this is CIFAR-10 as released)."""
    differ = []
    for train in (True, False):
        for name, md5 in batch_files(train):
            if hashlib.md5((folder / name).read_bytes(), usedforsecurity=False).hexdigest() != md5:
                differ.append(name)
    return differ
