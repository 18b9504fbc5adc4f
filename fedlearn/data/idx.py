"""MNIST and Fashion-MNIST: four IDX files in torchvision's layout, read and downloaded by torchvision.

``DATA_DIR/MNIST/raw/`` and ``DATA_DIR/FashionMNIST/raw/`` hold the four IDX files
(plain or ``.gz``). Files already there are used as they are (a folder with some
but not all of them is refused, never topped up from elsewhere). An empty folder
is filled from Debian's package ``dataset-fashion-mnist`` (Fashion-MNIST only) or
with torchvision's own download, staged and checked first (:mod:`.provision`).
"""

from __future__ import annotations

import gzip
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from ..registry import Entry
from .dataset import Dataset, DatasetInfo, image_dataset
from .provision import REPLACE_ADVICE, DatasetNotFound, corrupt, download, move_in, staging, torchvision_download

FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # torchvision's classes
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_ADVICE = "reinstall Debian's package dataset-fashion-mnist"


def dataset_class(name: str) -> type:
    """torchvision's dataset class for ``name`` (torchvision is imported on first use: processes that are handed
    their data, such as ``--workers``' workers, never load it)."""
    from torchvision import datasets

    return getattr(datasets, FOLDERS[name])


def raw_folder(name: str, data_dir: str | os.PathLike) -> Path:
    """Where torchvision keeps the IDX files of ``name`` under ``data_dir``."""
    return Path(data_dir) / FOLDERS[name] / "raw"


def _missing_files(folder: Path) -> list[str]:
    return [f for f in RAW_FILES if not (folder / f).is_file()]


def _present_files(folder: Path) -> list[str]:
    """The IDX files of ``folder`` that are there, plain or as ``.gz``."""
    return [f for f in RAW_FILES if (folder / f).is_file() or (folder / f"{f}.gz").is_file()]


def _gunzip(archive: Path, dest: Path, advice: str) -> None:
    """Decompress ``archive`` into ``dest``; a damaged archive is a corrupt-file DataError."""
    try:
        with gzip.open(archive, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise corrupt(archive, exc, advice) from None
    except OSError as exc:
        raise DataError(f"cannot decompress {archive}: {exc}") from None


def _read_idx(reader: Callable[[str], torch.Tensor], path: Path, origin: str, advice: str) -> torch.Tensor:
    """One IDX file read with torchvision's own reader; any failure names ``origin`` as corrupt."""
    try:
        return reader(str(path))
    except (AssertionError, TypeError, ValueError, RuntimeError, KeyError, IndexError, OSError) as exc:
        raise corrupt(origin, exc, advice, what="not a readable IDX file: ") from None


def _validate(name: str, paths: dict[str, Path], origins: dict[str, str], advice: str) -> None:
    """Every IDX file parses and each split has as many labels as images (else a corrupt-file DataError)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for prefix, split in (("train", "training"), ("t10k", "test")):
        images_file, labels_file = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        images = _read_idx(read_image_file, paths[images_file], origins[images_file], advice)
        labels = _read_idx(read_label_file, paths[labels_file], origins[labels_file], advice)
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise DataError(
                f"{INFO[name].title} {split} files {origins[images_file]} and {origins[labels_file]} are corrupt: "
                f"{images.shape[0]} images for {labels.shape[0]} labels; {advice}"
            )


def _install_gz(name: str, data_dir: Path, archives: dict[str, Path], advice: str) -> None:
    """Decompress ``archives`` (IDX name -> .gz) in a staging folder, validate, then move them into place."""
    folder = raw_folder(name, data_dir)
    with staging(data_dir) as scratch:
        for f, archive in archives.items():
            _gunzip(archive, scratch / f, advice)
        paths = {f: scratch / f if f in archives else folder / f for f in RAW_FILES}
        origins = {f: str(archives.get(f, folder / f)) for f in RAW_FILES}
        _validate(name, paths, origins, advice)
        move_in(scratch, list(archives), folder)


def _complete_from_gz(name: str, data_dir: Path) -> None:
    """Fill the missing plain files of a started folder from its own .gz files; refuse an incomplete set."""
    folder = raw_folder(name, data_dir)
    missing = _missing_files(folder)
    absent = [f for f in missing if not (folder / f"{f}.gz").is_file()]
    if absent:
        raise DataError(
            f"{INFO[name].title} files in {folder} are incomplete: {', '.join(absent)} missing "
            f"(neither plain nor .gz); add them or delete the folder"
        )
    _install_gz(name, data_dir, {f: folder / f"{f}.gz" for f in missing}, REPLACE_ADVICE)


def _downloaded_files(name: str) -> Callable[[Path], list[str]]:
    """The four IDX files of a download, once they parse (else a corrupt-file DataError)."""

    def keep(fetched: Path) -> list[str]:
        origins = {f: f"{f} (downloaded, not kept)" for f in RAW_FILES}
        advice = "try again later or put the files there by hand"
        _validate(name, {f: fetched / f for f in RAW_FILES}, origins, advice)
        return list(RAW_FILES)

    return keep


def prepare(name: str, data_dir: Path, download_allowed: bool = True) -> str:
    """Make sure the four IDX files of ``name`` are in ``data_dir``; return how they got there.

    Order: plain files in place; the folder's own .gz files; else (only when the folder holds
    no IDX file at all) Debian's Fashion-MNIST package, then torchvision's download.
    """
    folder = raw_folder(name, data_dir)
    if not _missing_files(folder):
        return "local files"
    if _present_files(folder):
        _complete_from_gz(name, data_dir)
        return "local files"
    if name == "fashion-mnist" and all((DEBIAN_FASHION_MNIST / f"{f}.gz").is_file() for f in RAW_FILES):
        _install_gz(name, data_dir, {f: DEBIAN_FASHION_MNIST / f"{f}.gz" for f in RAW_FILES}, DEBIAN_ADVICE)
        return f"from Debian's dataset-fashion-mnist in {DEBIAN_FASHION_MNIST}"
    if download_allowed and download(data_dir, torchvision_download(dataset_class(name)),
                                     lambda root: raw_folder(name, root), _downloaded_files(name)):  # fmt: skip
        return "downloaded"
    hint = " or install Debian's package dataset-fashion-mnist" if name == "fashion-mnist" else ""
    tried = "could not be downloaded" if download_allowed else "downloading is off (--no_download)"
    raise DatasetNotFound(
        f"{INFO[name].title} not found in {folder} and {tried}: put the IDX files "
        f"{', '.join(RAW_FILES)} (or their .gz) there{hint}"
    )


def read_split(name: str, data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, H, W)`` and labels read by torchvision's MNIST-family class."""
    try:
        ds = dataset_class(name)(root=str(data_dir), train=train, download=False)
        images, labels = ds.data, ds.targets
    except (AssertionError, TypeError, ValueError, RuntimeError, KeyError, IndexError, OSError) as exc:
        detail = f": {exc}" if str(exc) else ""
        raise DataError(
            f"{INFO[name].title} {'training' if train else 'test'} files in {raw_folder(name, data_dir)} are "
            f"corrupt or not IDX ({type(exc).__name__}{detail}); replace or delete them"
        ) from None
    if images.dim() != 3:
        raise DataError(f"{INFO[name].title} files in {raw_folder(name, data_dir)} hold {images.dim()}-d images")
    return images.unsqueeze(1), labels


@dataclass(frozen=True)
class IdxSource:
    """A dataset of the MNIST family (``name``: its ``--dataset`` value)."""

    name: str

    def folder(self, data_dir: str | os.PathLike) -> Path:
        """Where its files are."""
        return raw_folder(self.name, data_dir)

    def prepare(self, data_dir: str | os.PathLike, download_allowed: bool = True) -> str:
        """Its files in place (:func:`prepare`); how they got there."""
        return prepare(self.name, Path(data_dir), download_allowed)

    def load(self, data_dir: str | os.PathLike) -> Dataset:
        """Both splits, normalized."""
        data_dir = Path(data_dir)
        splits = [read_split(self.name, data_dir, train) for train in (True, False)]
        return image_dataset(self.name, INFO[self.name], *splits, str(self.folder(data_dir)))


INFO = {
    "mnist": DatasetInfo("MNIST", (1, 28, 28)),
    "fashion-mnist": DatasetInfo("Fashion-MNIST", (1, 28, 28)),
}
ENTRIES = (
    Entry("mnist", IdxSource("mnist"), "handwritten digits (LeCun et al.)", info=INFO["mnist"]),
    Entry("fashion-mnist", IdxSource("fashion-mnist"), "clothing images (Xiao et al. 2017)",
          info=INFO["fashion-mnist"]),
)  # fmt: skip
