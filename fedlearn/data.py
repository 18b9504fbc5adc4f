"""Datasets as in-memory, normalized tensors (torchvision reads the IDX files).

``--data_dir`` follows torchvision's layout: ``DATA_DIR/MNIST/raw/`` and
``DATA_DIR/FashionMNIST/raw/`` hold the four IDX files (plain or ``.gz``).
Files already there are used as they are; missing ones are downloaded with
torchvision's own code. Offline, Fashion-MNIST is taken from Debian's package
``dataset-fashion-mnist`` when it is installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torchvision import datasets
from torchvision.datasets.utils import extract_archive

from .errors import DataError, UsageError

DATASET_CLASSES = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}
DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
NUM_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Dataset:
    """Train and test split as tensors: images ``(N, 1, 28, 28)`` float32 normalized, labels int64."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: float
    std: float
    source: str
    test_fingerprint: str = ""  # sha256 (16 hex digits) of the raw test images and labels
    num_classes: int = NUM_CLASSES

    def to(self, device: torch.device, channels_last: bool = False) -> "Dataset":
        """The same dataset with every tensor on ``device`` (images channels-last if asked)."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return replace(
            self,
            train_x=self.train_x.to(device, memory_format=fmt),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device, memory_format=fmt),
            test_y=self.test_y.to(device),
        )


def raw_folder(name: str, data_dir: str | os.PathLike) -> Path:
    """Where torchvision keeps the IDX files of ``name`` under ``data_dir``."""
    return Path(data_dir) / DATASET_CLASSES[name].__name__ / "raw"


def _missing_files(folder: Path) -> list[str]:
    return [f for f in RAW_FILES if not (folder / f).is_file()]


def _extract_gz_files(folder: Path, source: Path) -> None:
    """Decompress ``source/<file>.gz`` into ``folder/<file>`` for every missing IDX file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in _missing_files(folder):
        archive = source / f"{name}.gz"
        if archive.is_file():
            try:
                extract_archive(str(archive), str(folder))
            except (OSError, EOFError) as exc:
                raise DataError(f"cannot decompress {archive}: {exc}") from None


def _try_download(name: str, data_dir: Path) -> bool:
    """Download ``name`` with torchvision; False (quietly) when offline or refused."""
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            DATASET_CLASSES[name](root=str(data_dir), train=True, download=True)
            DATASET_CLASSES[name](root=str(data_dir), train=False, download=True)
        return True
    except Exception:  # noqa: BLE001 - any network/HTTP/checksum failure means "not downloadable"
        return False
    finally:
        socket.setdefaulttimeout(previous_timeout)


def prepare_files(name: str, data_dir: str | os.PathLike, download: bool = True) -> str:
    """Make sure the four IDX files of ``name`` are in ``data_dir``; return how they got there.

    Order: files already in place (plain or .gz), Debian's Fashion-MNIST package,
    then torchvision's download. Raises DataError naming the folder to fill.
    """
    data_dir = Path(data_dir)
    folder = raw_folder(name, data_dir)
    if not _missing_files(folder):
        return "local files"
    if folder.is_dir() and all((folder / f"{f}.gz").is_file() for f in _missing_files(folder)):
        _extract_gz_files(folder, folder)
        return "local files"
    if name == "fashion-mnist" and all((DEBIAN_FASHION_MNIST / f"{f}.gz").is_file() for f in RAW_FILES):
        _check_writable(data_dir)
        _extract_gz_files(folder, DEBIAN_FASHION_MNIST)
        return f"from Debian's dataset-fashion-mnist in {DEBIAN_FASHION_MNIST}"
    if download:
        _check_writable(data_dir)
        if _try_download(name, data_dir):
            return "downloaded"
    title = DATASET_TITLES[name]
    hint = " or install Debian's package dataset-fashion-mnist" if name == "fashion-mnist" else ""
    tried = "could not be downloaded" if download else "downloading is off (--no_download)"
    raise DataError(
        f"{title} not found in {folder} and {tried}: put the IDX files "
        f"{', '.join(RAW_FILES)} (or their .gz) there{hint}"
    )


def _check_writable(data_dir: Path) -> None:
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UsageError(f"--data_dir {data_dir}: not writable, cannot store dataset files there")


def resolve_dataset(
    requested: str,
    data_dir: str | os.PathLike,
    download: bool = True,
    notify: Callable[[str], None] = print,
) -> tuple[str, str]:
    """Pick the dataset to use and make its files ready; returns ``(name, how)``.

    ``requested`` is ``auto``, ``mnist`` or ``fashion-mnist``. ``auto`` means MNIST
    when it is present or downloadable, else Fashion-MNIST with a one-line notice.
    A dataset named explicitly is never swapped for another.
    """
    if requested != "auto":
        return requested, prepare_files(requested, data_dir, download)
    try:
        return "mnist", prepare_files("mnist", data_dir, download)
    except DataError:
        pass
    how = prepare_files("fashion-mnist", data_dir, download)
    notify(
        f"note: MNIST is not in {raw_folder('mnist', data_dir)} and could not be downloaded; "
        f"using Fashion-MNIST ({how}) instead. Pass --dataset mnist to require MNIST."
    )
    return "fashion-mnist", how


def _read_split(name: str, data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    split = "training" if train else "test"
    folder = raw_folder(name, data_dir)
    try:
        ds = DATASET_CLASSES[name](root=str(data_dir), train=train, download=False)
        images, labels = ds.data, ds.targets
    except (AssertionError, TypeError, ValueError, RuntimeError, KeyError, IndexError, OSError) as exc:
        detail = f": {exc}" if str(exc) else ""
        raise DataError(
            f"{DATASET_TITLES[name]} {split} files in {folder} are corrupt or not IDX "
            f"({type(exc).__name__}{detail}); replace or delete them"
        ) from None
    if images.dim() != 3 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise DataError(
            f"{DATASET_TITLES[name]} {split} files in {folder} do not match: "
            f"{tuple(images.shape)} images for {tuple(labels.shape)} labels"
        )
    if int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{DATASET_TITLES[name]} {split} labels in {folder} fall outside 0..{NUM_CLASSES - 1}")
    return images, labels


def load_dataset(name: str, data_dir: str | os.PathLike) -> Dataset:
    """Read both splits once, scale to [0, 1] and normalize with the training set's mean and std."""
    data_dir = Path(data_dir)
    train_images, train_labels = _read_split(name, data_dir, train=True)
    test_images, test_labels = _read_split(name, data_dir, train=False)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{DATASET_TITLES[name]} training and test images differ in size: "
            f"{tuple(train_images.shape[1:])} vs {tuple(test_images.shape[1:])}"
        )
    train_x = train_images.to(torch.float32).div_(255.0)
    mean = float(train_x.mean())
    std = float(train_x.std()) or 1.0
    test_x = test_images.to(torch.float32).div_(255.0)
    digest = hashlib.sha256(test_images.numpy().tobytes())
    digest.update(test_labels.numpy().tobytes())
    return Dataset(
        name=name,
        train_x=train_x.sub_(mean).div_(std).unsqueeze(1).contiguous(),
        train_y=train_labels.to(torch.int64),
        test_x=test_x.sub_(mean).div_(std).unsqueeze(1).contiguous(),
        test_y=test_labels.to(torch.int64),
        mean=mean,
        std=std,
        source=str(raw_folder(name, data_dir)),
        test_fingerprint=digest.hexdigest()[:16],
    )
