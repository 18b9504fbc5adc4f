"""CIFAR-10's python version, in torchvision's layout: ``DATA_DIR/cifar-10-batches-py/`` holds the pickled
batches ``data_batch_1`` .. ``data_batch_5`` (training) and ``test_batch``.

torchvision's ``CIFAR10`` names the files, gives their published checksums and downloads them
(:mod:`.provision` stages and moves them in). The batches are read here with the layout torchvision reads
(``data``: ``(n, 3072)`` uint8 rows, red then green then blue planes of 32x32; ``labels``: n ints) but through an
unpickler that only rebuilds numpy arrays, so a data file cannot run code as a plain ``pickle.load`` lets it.
Files whose checksums differ from the published ones (a subset, a test's tiny copy) are used, and said so.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..registry import Entry
from .dataset import Dataset, DatasetInfo, image_dataset
from .provision import DatasetNotFound, download, torchvision_download

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
MAX_BATCH_BYTES = 40 * 2**20
"""The largest batch file read: a released batch holds 10,000 x 3,072 bytes (30.7 MB) and a little pickle."""
MAX_MEMO = 2**16
"""The largest memo index accepted (a batch uses a few dozen; the unpickler would allocate a memo that large)."""


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


def _plain_dtype(*args: object) -> np.dtype:
    """``numpy.dtype`` for the integer and boolean types a batch holds; an object, void or string dtype (which
    could make numpy allocate or call anything) is refused."""
    dtype = np.dtype(*args)  # type: ignore[call-overload]
    if dtype.kind not in "iub" or dtype.itemsize > 8:
        raise pickle.UnpicklingError(f"dtype {dtype} is not allowed in a CIFAR-10 batch")
    return dtype


class _ArraysOnly(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, numbers and integer numpy arrays; refuses every other class or function."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("numpy", "dtype"):
            return _plain_dtype
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")


def _bounded(raw: bytes) -> None:
    """Walk the pickle's opcodes before unpickling: every length must fit in the file and every memo index stay
    small, so that nothing the file claims makes the unpickler allocate more than the file holds."""
    try:
        opcodes = list(pickletools.genops(io.BytesIO(raw)))
    except ValueError as exc:  # a length past the end of the file, an unknown opcode, no STOP
        raise ValueError(f"truncated or not a pickle: {exc}") from None
    for opcode, arg, position in opcodes:
        if opcode.name == "FRAME" and arg > len(raw) - position:
            raise ValueError(f"a frame of {arg} bytes in a file of {len(raw)}")
        if "PUT" in opcode.name and isinstance(arg, int) and arg >= MAX_MEMO:
            raise ValueError(f"memo index {arg}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch's ``(n, 3072)`` uint8 rows and ``n`` integer labels (ValueError if it holds anything else)."""
    size = path.stat().st_size
    if size > MAX_BATCH_BYTES:
        raise ValueError(f"{size} bytes, more than a CIFAR-10 batch holds")
    raw = path.read_bytes()
    _bounded(raw)
    entry = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise ValueError("not a dict with 'data' and 'labels'")
    data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        raise ValueError(f"'data' is {data.dtype} {data.shape}, not uint8 (n, {CHANNELS * SIDE * SIDE})")
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"'labels' is {labels.dtype} {labels.shape}, not a list of integers")
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise ValueError(f"labels {labels.min()} to {labels.max()} fall outside 0..9")
    if len(labels) != data.shape[0]:
        raise ValueError(f"{data.shape[0]} images for {len(labels)} labels")
    return data, labels


def _read_checked(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read_batch`, any failure a one-line DataError naming the file."""
    try:
        return _read_batch(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, OSError, MemoryError, SystemError) as exc:  # fmt: skip  # numpy: SystemError on bad flags
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
    from torchvision.datasets.utils import check_md5  # reads in chunks: a file of any size takes no memory

    differ = []
    for train in (True, False):
        for name, md5 in batch_files(train):
            if not check_md5(folder / name, md5):
                differ.append(name)
    return differ


def prepare(data_dir: Path, download_allowed: bool = True) -> str:
    """CIFAR-10's batches in place (as they are, or downloaded); how they got there, and whether they are the
    published files."""
    folder, files = data_dir / FOLDER, all_files()
    missing = [f for f in files if not (folder / f).is_file()]
    # torchvision checked the archive and every batch against their md5: keep the whole extracted folder
    keep = lambda fetched: sorted(p.name for p in fetched.iterdir() if p.is_file())  # noqa: E731
    fetch = torchvision_download(_torchvision_class()) if download_allowed and len(missing) == len(files) else None
    if fetch is not None and download(data_dir, fetch, lambda root: root / FOLDER, keep):
        return "downloaded, checksums match the published CIFAR-10"
    if len(missing) == len(files):
        tried = "could not be downloaded" if download_allowed else "downloading is off (--no_download)"
        raise DatasetNotFound(
            f"CIFAR-10 not found in {folder} and {tried}: put the python version's batches {', '.join(files)} "
            f"there (cifar-10-python.tar.gz, unpacked)"
        )
    if missing:
        raise DataError(f"CIFAR-10 files in {folder} are incomplete: {', '.join(missing)} missing; "
                        f"add them or delete the folder")  # fmt: skip
    differ = differing_checksums(folder)
    if len(differ) == len(files):
        return "local files, not the published CIFAR-10: no batch has its published checksum"
    if differ:
        return f"local files; {', '.join(differ)} differ from the published CIFAR-10's checksums"
    return "local files, checksums match the published CIFAR-10"


class CifarSource:
    """CIFAR-10 under ``DATA_DIR/cifar-10-batches-py``."""

    def folder(self, data_dir: str | os.PathLike) -> Path:
        """Where its batches are."""
        return Path(data_dir) / FOLDER

    def prepare(self, data_dir: str | os.PathLike, download_allowed: bool = True) -> str:
        """Its batches in place (:func:`prepare`); how they got there."""
        return prepare(Path(data_dir), download_allowed)

    def load(self, data_dir: str | os.PathLike) -> Dataset:
        """Both splits, normalized per channel (held channels-last)."""
        folder = self.folder(data_dir)
        return image_dataset("cifar10", INFO, read_split(folder, True), read_split(folder, False), str(folder))


INFO = DatasetInfo("CIFAR-10", (CHANNELS, SIDE, SIDE), default_model="cnn-cifar", default_augment="crop-flip")
ENTRY = Entry("cifar10", CifarSource(), "32x32 colour images of 10 classes (Krizhevsky 2009)", info=INFO)
