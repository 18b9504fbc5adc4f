"""Datasets chosen by ``--dataset``: one registry entry each (:data:`DATASETS`), read once into in-memory tensors.

An entry's ``part`` is a source with ``folder(data_dir)``, ``prepare(data_dir, download_allowed) -> how`` (the
files in place, downloaded if need be) and ``load(data_dir) -> Dataset``, each also given the values of the flags
the entry declares as keywords; its ``info`` is a
:class:`~.dataset.DatasetInfo` (input shape, classes, task, whether samples carry a client id, the default
model and augmentation), which the flags' checks read before any file is. MNIST and Fashion-MNIST:
:mod:`.idx`; CIFAR-10: :mod:`.cifar`. Partitions among clients: :mod:`.partitions`; augmentation:
:mod:`.augment`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..core.usercode import SPEC_FORMS
from ..registry import Flag, Flags, Range, Registry, require
from . import arrays, cifar, idx, leaf, shakespeare, synthetic
from .dataset import Dataset, DatasetInfo, pixel_statistics
from .provision import DatasetNotFound

AUTO = "auto"
AUTO_ORDER = ("mnist", "fashion-mnist")  # what auto tries, in order; never CIFAR-10


def _check_data(flags: Flags, script: str) -> None:
    """``--data_dir``, when it exists, is a readable folder; ``--data_fraction`` is for data that come with clients."""
    path = Path(flags.data_dir)
    if path.exists():
        require(path.is_dir(), f"--data_dir {path}: not a directory")
        require(os.access(path, os.R_OK | os.X_OK), f"--data_dir {path}: not readable")
    if flags.data_fraction < 1:
        require(dataset_info(flags.dataset).client_ids, f"--data_fraction keeps a share of the clients a dataset "
                f"comes with; --dataset {flags.dataset}'s samples carry none")  # fmt: skip


DATASETS = Registry.of(
    "datasets",
    Flag("dataset", "auto", str, group="data",
         help="auto: MNIST if present or downloadable, else Fashion-MNIST (with a notice; never CIFAR-10); your own "
              "data: a FILE.npz of arrays x_train, y_train, x_test, y_test (client_train, client_test), or a "
              "function returning them (docs/own-data.md)"),
    [*idx.ENTRIES, cifar.ENTRY, shakespeare.ENTRY, synthetic.ENTRY, *leaf.ENTRIES],
    flags=(
        Flag("data_dir", "./data", str, group="data", setting=False, resumable=True,
             help="dataset folder in torchvision's layout (DATA_DIR/MNIST/raw/..., DATA_DIR/cifar-10-batches-py/...)"),
        Flag("no_download", False, group="data", setting=False, resumable=True, headline=False,
             help="never try to download a missing dataset"),
        arrays.NO_NORMALIZE,
        Flag("data_fraction", 1.0, float, group="data", valid=Range(0, 1, low_open=True), older=1.0,
             help="keep this seeded random share of the clients a dataset comes with, each whole (LEAF's --sf), "
                  "for runs that fit a machine; the baseline trains on what the kept clients hold"),
    ),
    check=_check_data,
    extra_choices=(AUTO,),
    resolve=arrays.resolve,
    spec=f"FILE.npz, {SPEC_FORMS} (your arrays)",
)  # fmt: skip
"""Every dataset by name (``--dataset``); adding one is a module with its source and one entry here."""


def dataset_info(name: str) -> DatasetInfo:
    """What the dataset ``name`` describes of itself (``auto``: MNIST's, which Fashion-MNIST shares)."""
    return DATASETS[AUTO_ORDER[0] if name == AUTO else name].info


def title(name: str) -> str:
    """The dataset's name for people (``Fashion-MNIST``)."""
    return dataset_info(name).title


def raw_folder(name: str, data_dir: str | os.PathLike, flags: Mapping[str, Any] | None = None) -> Path:
    """Where the files of ``name`` are under ``data_dir`` (IDX files, or CIFAR-10's batches)."""
    entry = DATASETS[name]
    return entry.part.folder(data_dir, **entry.own(flags))


def prepare_files(
    name: str, data_dir: str | os.PathLike, download: bool = True, flags: Mapping[str, Any] | None = None
) -> str:
    """Make sure the files of ``name`` are in ``data_dir``; return how they got there. Files in place are used as
    they are; new ones are staged and checked before they are moved in. Raises DataError naming the folder."""
    entry = DATASETS[name]
    return entry.part.prepare(Path(data_dir), download, **entry.own(flags))


def resolve_dataset(
    requested: str,
    data_dir: str | os.PathLike,
    download: bool = True,
    notify: Callable[[str], None] = print,
    flags: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Pick the dataset to use and make its files ready; returns ``(name, how)``.

    ``auto`` means MNIST when it is present or downloadable, else Fashion-MNIST with a one-line
    notice (never CIFAR-10). A dataset named explicitly is never swapped for another.
    """
    if requested != AUTO:
        return requested, prepare_files(requested, data_dir, download, flags)
    first, fallback = AUTO_ORDER
    try:
        return first, prepare_files(first, data_dir, download)
    except DatasetNotFound:  # an incomplete or corrupt MNIST folder is reported, not swapped
        pass
    how = prepare_files(fallback, data_dir, download)
    notify(
        f"note: MNIST is not in {raw_folder(first, data_dir)} and could not be downloaded; "
        f"using Fashion-MNIST ({how}) instead. Pass --dataset mnist to require MNIST."
    )
    return fallback, how


def forget() -> None:
    """Drop what was read or built for a run (users' arrays, LEAF's files, the Shakespeare build): nothing is kept
    from one run to the next."""
    arrays.forget()
    leaf.forget()
    shakespeare.forget()


def load_dataset(name: str, data_dir: str | os.PathLike, flags: Mapping[str, Any] | None = None) -> Dataset:
    """Read both splits of ``name`` once, normalized (images: each channel with the training set's mean and std)."""
    entry = DATASETS[name]
    return entry.part.load(Path(data_dir), **entry.own(flags))


__all__ = ["DATASETS", "Dataset", "DatasetInfo", "DatasetNotFound", "dataset_info", "load_dataset",
           "pixel_statistics", "prepare_files", "raw_folder", "resolve_dataset", "title"]  # fmt: skip
