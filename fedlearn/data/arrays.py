"""A user's data as arrays: ``--dataset FILE.npz``, ``--dataset MODULE:FUNCTION`` or ``FILE.py:FUNCTION`` (a
function returning a mapping), or from Python a mapping given to :func:`fedlearn.run`.

The arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test``, and optionally ``client_train`` (an integer client id per
training sample) and ``client_test`` (per test sample). Inputs are float images of any shape, flat feature vectors
or integer token sequences (8-bit ``(N, C, H, W)`` images are scaled and normalized exactly as the built-in image
sets are); labels are integers ``0..C-1``. Float inputs are normalized with the training split's mean and standard
deviation, in float64 (the same bits on every run), per channel for ``(N, C, ...)`` inputs and per feature for
``(N, D)`` ones, unless ``--no_normalize``. Everything is checked before any training; a ``.npz`` is read with
``allow_pickle=False`` (no object arrays, so no code runs). Every problem is one line naming the flag and file.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.usercode import call, load_function, names_a_function
from ..errors import UsageError
from ..registry import Entry, Flag
from .dataset import Dataset, DatasetInfo, image_dataset

FLAG = "--dataset"
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("client_train", "client_test")
MAX_CLASSES = 1_000_000  # labels index the model's logits: a larger label is a mistake, not a class

NO_NORMALIZE = Flag("no_normalize", False, group="data", headline=False, older=False,
                    help="your arrays (--dataset FILE.npz, MODULE:FUNCTION) are already normalized: use them as they "
                         "are")  # fmt: skip


@dataclass(frozen=True)
class Arrays:
    """A user's dataset, checked: both splits, the clients' ids if given, and where they came from (for
    messages)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    client_train: np.ndarray | None
    client_test: np.ndarray | None
    where: str


def _as_array(value: Any, name: str, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise UsageError(f"{FLAG} {where}: {name} is a {type(value).__name__}, not an array")
    if value.dtype.kind not in "biuf":
        raise UsageError(f"{FLAG} {where}: {name} holds {value.dtype}, not numbers")
    return value


def _integers(array: np.ndarray, name: str, where: str, length: int) -> np.ndarray:
    """A 1-d integer array of ``length`` (labels, client ids)."""
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise UsageError(f"{FLAG} {where}: {name} must be one integer per sample, got {array.dtype} {array.shape}")
    if len(array) != length:
        raise UsageError(f"{FLAG} {where}: {name} has {len(array)} entries for {length} samples")
    return array


def _checked_split(x: np.ndarray, y: np.ndarray, split: str, where: str) -> None:
    if x.ndim < 2 or len(x) == 0:
        raise UsageError(f"{FLAG} {where}: x_{split} must hold at least one sample of at least one value, "
                         f"got shape {x.shape}")  # fmt: skip
    _integers(y, f"y_{split}", where, len(x))
    if y.min() < 0 or y.max() >= MAX_CLASSES:
        raise UsageError(f"{FLAG} {where}: y_{split} holds labels outside 0..C-1 (from {y.min()} to {y.max()})")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise UsageError(f"{FLAG} {where}: x_{split} holds NaN or infinite values")
    if x.dtype.kind in "iu" and x.dtype != np.uint8 and x.min() < 0:
        raise UsageError(f"{FLAG} {where}: x_{split} holds negative integers (token ids index an embedding)")


def check_arrays(raw: Any, where: str) -> Arrays:
    """The arrays of a user's dataset, checked (UsageError naming ``--dataset`` and ``where`` otherwise)."""
    if not isinstance(raw, Mapping):
        raise UsageError(f"{FLAG} {where}: expected a mapping of arrays, got {type(raw).__name__}")
    missing = [name for name in REQUIRED if name not in raw]
    if missing:
        raise UsageError(f"{FLAG} {where}: has no array {missing[0]} (needs {', '.join(REQUIRED)})")
    arrays = {name: _as_array(raw[name], name, where) for name in (*REQUIRED, *OPTIONAL) if name in raw}
    for split in ("train", "test"):
        _checked_split(arrays[f"x_{split}"], arrays[f"y_{split}"], split, where)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise UsageError(f"{FLAG} {where}: x_train's samples are {arrays['x_train'].shape[1:]}, x_test's "
                         f"{arrays['x_test'].shape[1:]}")  # fmt: skip
    if arrays["x_train"].dtype.kind != arrays["x_test"].dtype.kind:
        raise UsageError(f"{FLAG} {where}: x_train holds {arrays['x_train'].dtype}, x_test {arrays['x_test'].dtype}")
    clients = {split: _integers(arrays[f"client_{split}"], f"client_{split}", where, len(arrays[f"y_{split}"]))
               if f"client_{split}" in arrays else None for split in ("train", "test")}  # fmt: skip
    if clients["test"] is not None and clients["train"] is None:
        raise UsageError(f"{FLAG} {where}: client_test without client_train")
    return Arrays(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], clients["train"],
                  clients["test"], where)  # fmt: skip


def _is_image(x: np.ndarray) -> bool:
    return x.dtype == np.uint8 and x.ndim == 4


def describe(arrays: Arrays, title: str) -> DatasetInfo:
    """What a user's arrays describe: one sample's shape and dtype, the classes, the clients (the default model:
    a built-in one that takes such samples, if any, chosen by :mod:`fedlearn.models`)."""
    x = arrays.x_train
    tokens = x.dtype.kind in "iu" and not _is_image(x)
    shape = tuple(int(d) for d in x.shape[1:])
    ids = None if arrays.client_train is None else len(np.unique(arrays.client_train))
    return DatasetInfo(
        title,
        shape,
        num_classes=int(max(arrays.y_train.max(), arrays.y_test.max())) + 1,
        input_dtype=torch.int64 if tokens else torch.float32,
        task="classification of token sequences" if tokens else "classification",
        client_ids=ids is not None,
        default_model=None,
        num_clients=ids,
        client_tests=arrays.client_test is not None,
    )


def _statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (unbiased) in float64: per channel (axis 1) of ``(N, C, ...)`` inputs, per
    feature of ``(N, D)`` ones; a zero deviation becomes 1."""
    axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64, keepdims=True)
    std = x.std(axis=axes, dtype=np.float64, ddof=1 if len(x) > 1 else 0, keepdims=True)
    return mean, np.where(std > 0, std, 1.0)


def to_dataset(arrays: Arrays, name: str, info: DatasetInfo, normalize: bool = True) -> Dataset:
    """The checked arrays as an in-memory dataset: 8-bit images as the built-in sets are, other float inputs
    normalized with the training split's statistics (unless ``normalize`` is False), token ids as int64."""
    a = arrays
    if _is_image(a.x_train):
        splits = ((a.x_train, a.y_train), (a.x_test, a.y_test))
        tensors = ((torch.from_numpy(x), torch.from_numpy(y).long()) for x, y in splits)
        data = image_dataset(name, info, *tensors, a.where)
    else:
        mean = std = np.zeros(0)  # not normalized
        if info.input_dtype == torch.int64:
            inputs = [torch.from_numpy(x.astype(np.int64)) for x in (a.x_train, a.x_test)]
        elif normalize:
            mean, std = _statistics(a.x_train)
            inputs = [torch.from_numpy(((x - mean) / std).astype(np.float32)) for x in (a.x_train, a.x_test)]
        else:
            inputs = [torch.from_numpy(x.astype(np.float32)) for x in (a.x_train, a.x_test)]
        digest = hashlib.sha256(np.ascontiguousarray(a.x_test).tobytes())
        digest.update(np.ascontiguousarray(a.y_test).tobytes())
        data = Dataset(name, inputs[0], torch.from_numpy(a.y_train.astype(np.int64)), inputs[1],
                       torch.from_numpy(a.y_test.astype(np.int64)), tuple(mean.ravel().tolist()),
                       tuple(std.ravel().tolist()), a.where, digest.hexdigest()[:16], info.num_classes)  # fmt: skip
    clients = {f"{split}_clients": None if ids is None else torch.from_numpy(ids.astype(np.int64))
               for split, ids in (("train", a.client_train), ("test", a.client_test))}  # fmt: skip
    return Dataset(**{**vars(data), **clients})


class ArraysSource:
    """A dataset source over checked arrays (``describe``: what they hold; the arrays are read when loaded)."""

    def __init__(self, name: str, read: Callable[[], Arrays], how: str) -> None:
        self.name, self.read, self.how = name, read, how

    def folder(self, data_dir: str | os.PathLike, no_normalize: bool = False) -> Path:
        return Path(self.read().where).parent

    def prepare(self, data_dir: str | os.PathLike, download_allowed: bool = True, no_normalize: bool = False) -> str:
        return self.how

    def load(self, data_dir: str | os.PathLike, no_normalize: bool = False) -> Dataset:
        arrays = self.read()
        return to_dataset(arrays, self.name, describe(arrays, self.name), normalize=not no_normalize)


_READ: dict[str, Arrays] = {}
"""The arrays of the run going on, by name (read once: checking, describing and loading them reuse them)."""
_RESOLVED: dict[str, Entry | None] = {}


def forget() -> None:
    """Drop the arrays read for a run (called when a run ends: nothing is kept from one run to the next)."""
    _READ.clear()
    _RESOLVED.clear()


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _declared_sizes(path: str) -> None:
    """Before any array is read: each one's header (shape and dtype) must fit in what its entry holds, and all of
    them in half this machine's memory, so that a small compressed file cannot make numpy allocate terabytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            total = 0
            for entry in archive.infolist():
                with archive.open(entry) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f, max_header_size=10_000)
                claimed = math.prod(shape) * dtype.itemsize
                if claimed > entry.file_size and not dtype.hasobject:  # objects: refused by np.load, unread
                    raise UsageError(f"{FLAG} {path}: {entry.filename} claims {claimed} bytes but holds "
                                     f"{entry.file_size}")  # fmt: skip
                total += entry.file_size
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError):
        return  # np.load says what is wrong with it
    if total > memory_bytes() // 2:
        raise UsageError(f"{FLAG} {path}: its arrays take {total / 2**30:.1f} GiB once read, more than half this "
                         f"machine's memory ({memory_bytes() / 2**30:.1f} GiB)")  # fmt: skip


def _read_npz(path: str) -> Arrays:
    _declared_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise UsageError(f"{FLAG} {path}: no such file") from None
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise UsageError(f"{FLAG} {path}: holds a pickled object, which is never loaded; save plain arrays "
                             "(numpy.savez)") from None  # fmt: skip
        raise UsageError(f"{FLAG} {path}: not a readable .npz ({exc})") from None
    except (OSError, EOFError, KeyError) as exc:
        raise UsageError(f"{FLAG} {path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    return check_arrays(raw, path)


def _read_once(name: str, read: Callable[[], Arrays]) -> Callable[[], Arrays]:
    def cached() -> Arrays:
        if name not in _READ:
            _READ[name] = read()
        return _READ[name]

    return cached


def entry_for(name: str, read: Callable[[], Arrays], how: str) -> Entry:
    """The dataset entry of a user's arrays (``read`` gives them, checked)."""
    read = _read_once(name, read)
    return Entry(name, ArraysSource(name, read, how), "your arrays", flags=(NO_NORMALIZE,),
                 info=describe(read(), name))  # fmt: skip


def resolve(spec: str) -> Entry | None:
    """The entry of the user's data ``spec`` names: a ``.npz`` file, or a function returning arrays (None: it names
    neither); the same entry for the rest of the run."""
    if spec not in _RESOLVED:
        _RESOLVED[spec] = _resolve(spec)
    return _RESOLVED[spec]


def _resolve(spec: str) -> Entry | None:
    if spec.endswith(".npz"):
        return entry_for(spec, lambda: _read_npz(spec), f"your arrays, from {spec}")
    if names_a_function(spec):
        function = load_function(spec, FLAG)
        return entry_for(spec, lambda: check_arrays(call(function, FLAG, spec), spec), f"your arrays, from {spec}")
    return None


def from_mapping(raw: Mapping[str, Any], name: str = "python:arrays") -> Entry:
    """The dataset entry of arrays given from Python (checked now)."""
    arrays = check_arrays(raw, "(the arrays given)")
    return entry_for(name, lambda: arrays, "your arrays, given from Python")
