"""LEAF's own output (Caldas et al. 2018): FEMNIST, and Shakespeare as LEAF's scripts write it, so results can be
compared on LEAF's exact data.

LEAF's layout: ``DATA_DIR/femnist/data/train/*.json`` and ``.../test/*.json`` (``DATA_DIR/shakespeare/data/...``
for Shakespeare), each file ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y":
[...]}}}``. A user is one client (in the order users first appear in the training files); its test samples are
its own test set. FEMNIST's ``x`` are 784 floats (a 28x28 image), ``y`` a class of 62; Shakespeare's ``x`` are
80-character strings and ``y`` the next character, turned into windows over the text they overlap on (a window
that continues the one before shares its text). The files are read one at a time, each user's samples turned
into arrays and dropped from the parsed file as they are, so a file's parsed text is held once; every problem
is one line naming the file. No real FEMNIST can be had on this project's machines: the tests write small files
in LEAF's format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..registry import Entry
from .arrays import Arrays, to_dataset
from .dataset import Dataset, DatasetInfo
from .provision import DatasetNotFound
from .shakespeare import SEQUENCE, VOCABULARY, encode
from .windows import Windows

FEMNIST_CLASSES = 62


def _files(folder: Path, split: str) -> list[Path]:
    found = sorted((folder / "data" / split).glob("*.json"))
    if not found:
        where = folder / "data" / split
        raise DatasetNotFound(f"LEAF data: no {split} files in {where} (run LEAF's preprocess.sh there, or put its "
                              "data/train and data/test folders under DATA_DIR)")  # fmt: skip
    return found


def users_of(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``(user, {"x": ..., "y": ...})`` of a LEAF file, each dropped from the parsed file once handed on."""
    try:
        with open(path, encoding="utf-8") as handle:
            parsed = json.load(handle)
    except (OSError, ValueError) as exc:
        raise DataError(f"LEAF file {path} is not readable JSON ({type(exc).__name__}: {exc}); replace it") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("users"), list):
        raise DataError(f"LEAF file {path}: expected an object with users, num_samples and user_data")
    data = parsed.get("user_data")
    if not isinstance(data, dict):
        raise DataError(f"LEAF file {path}: user_data is not an object")
    for user in parsed["users"]:
        samples = data.pop(str(user), None)
        if (
            not isinstance(samples, dict)
            or not isinstance(samples.get("x"), list)
            or not isinstance(samples.get("y"), list)
        ):
            raise DataError(f"LEAF file {path}: user {user} has no x and y lists")
        if len(samples["x"]) != len(samples["y"]):
            raise DataError(f"LEAF file {path}: user {user} has {len(samples['x'])} x for {len(samples['y'])} y")
        yield str(user), samples


def _client_ids(order: dict[str, int], user: str) -> int:
    return order.setdefault(user, len(order))


def _femnist_split(folder: Path, split: str, order: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, ids = [], [], []
    for path in _files(folder, split):
        for user, samples in users_of(path):
            try:
                x = np.asarray(samples["x"], dtype=np.float32).reshape(-1, 1, 28, 28)
                y = np.asarray(samples["y"], dtype=np.int64)
            except (ValueError, TypeError) as exc:
                raise DataError(f"LEAF file {path}: user {user}'s samples are not 784 numbers and a class "
                                f"({exc})") from None  # fmt: skip
            xs.append(x)
            ys.append(y)
            ids.append(np.full(len(y), _client_ids(order, user), dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ids)


def read_femnist(folder: Path) -> Arrays:
    """LEAF's FEMNIST under ``folder`` as arrays: 28x28 images, 62 classes, one client per writer."""
    order: dict[str, int] = {}
    train, test = _femnist_split(folder, "train", order), _femnist_split(folder, "test", order)
    for (x, y, _), split in ((train, "train"), (test, "test")):
        if len(y) and (y.min() < 0 or y.max() >= FEMNIST_CLASSES):
            raise DataError(f"LEAF FEMNIST {split} labels in {folder} fall outside 0..{FEMNIST_CLASSES - 1}")
        if not np.isfinite(x).all():
            raise DataError(f"LEAF FEMNIST {split} images in {folder} hold NaN or infinite values")
    return Arrays(train[0], train[1], test[0], test[1], train[2], test[2], str(folder))


def _windows(folder: Path, split: str, order: dict[str, int]) -> tuple[Windows, np.ndarray, np.ndarray]:
    """A split's samples as windows over the text they overlap on, their targets and their clients."""
    text, starts, targets, ids, length = [], [], [], [], 0
    for path in _files(folder, split):
        for user, samples in users_of(path):
            client, previous = _client_ids(order, user), None
            for x, y in zip(samples["x"], samples["y"]):
                if not (isinstance(x, str) and len(x) == SEQUENCE and isinstance(y, str) and len(y) == 1):
                    raise DataError(f"LEAF file {path}: user {user} has a sample that is not {SEQUENCE} characters "
                                    "and the next one")  # fmt: skip
                if previous is None or x != previous:  # a window that does not continue the last: its own text
                    text.append(x)
                    length += SEQUENCE
                starts.append(length - SEQUENCE)
                text.append(y)
                length += 1
                previous = x[1:] + y
                targets.append(y)
                ids.append(client)
    tokens = torch.from_numpy(encode("".join(text)))
    windows = Windows(tokens, torch.tensor(starts, dtype=torch.int64), SEQUENCE)
    return windows, encode("".join(targets)).astype(np.int64), np.asarray(ids, dtype=np.int64)


def read_shakespeare(folder: Path) -> Dataset:
    """LEAF's Shakespeare under ``folder`` as a dataset of windows, one client per role."""
    order: dict[str, int] = {}
    (train_x, train_y, train_c), (test_x, test_y, test_c) = (_windows(folder, s, order) for s in ("train", "test"))
    return Dataset("leaf-shakespeare", train_x, torch.from_numpy(train_y), test_x, torch.from_numpy(test_y), (), (),
                   str(folder), "", len(VOCABULARY), torch.from_numpy(train_c), torch.from_numpy(test_c))  # fmt: skip


_READ: dict[str, Any] = {}


def forget() -> None:
    """Drop what was read for a run."""
    _READ.clear()


class LeafSource:
    """LEAF's output of one dataset (``femnist`` or ``shakespeare``) under ``DATA_DIR/<name>``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def folder(self, data_dir: str | os.PathLike) -> Path:
        return Path(data_dir) / self.name

    def prepare(self, data_dir: str | os.PathLike, download_allowed: bool = True) -> str:
        for split in ("train", "test"):
            _files(self.folder(data_dir), split)
        return "LEAF's JSON files"

    def read(self, data_dir: str | os.PathLike) -> Dataset:
        """The dataset (read once per run)."""
        key = f"{self.name}:{Path(data_dir).resolve()}"
        if key not in _READ:
            folder = self.folder(data_dir)
            self.prepare(data_dir)
            if self.name == "femnist":
                arrays = read_femnist(folder)
                _READ[key] = to_dataset(arrays, "femnist", FEMNIST)
            else:
                _READ[key] = read_shakespeare(folder)
        return _READ[key]

    def load(self, data_dir: str | os.PathLike) -> Dataset:
        return self.read(data_dir)

    def count_clients(self, flags: Mapping[str, Any]) -> int:
        return len(torch.unique(self.read(flags["data_dir"]).train_clients))


FEMNIST_SOURCE, SHAKESPEARE_SOURCE = LeafSource("femnist"), LeafSource("shakespeare")
FEMNIST = DatasetInfo(
    "FEMNIST (LEAF)",
    (1, 28, 28),
    num_classes=FEMNIST_CLASSES,
    client_ids=True,
    default_model="cnn-femnist",
    client_tests=True,
    count_clients=FEMNIST_SOURCE.count_clients,
)
SHAKESPEARE = DatasetInfo(
    "Shakespeare (LEAF's files)",
    (SEQUENCE,),
    num_classes=len(VOCABULARY),
    input_dtype=torch.int64,
    task="next-character prediction",
    client_ids=True,
    default_model="lstm-leaf",
    client_tests=True,
    count_clients=SHAKESPEARE_SOURCE.count_clients,
)
ENTRIES = (
    Entry("femnist", FEMNIST_SOURCE, "LEAF's FEMNIST from its JSON files (one client per writer)", info=FEMNIST),
    Entry("leaf-shakespeare", SHAKESPEARE_SOURCE, "LEAF's Shakespeare from its JSON files", info=SHAKESPEARE),
)  # fmt: skip
