"""Datasets as in-memory, normalized tensors (torchvision reads the IDX files, and downloads).

``--data_dir`` follows torchvision's layout: ``DATA_DIR/MNIST/raw/`` and
``DATA_DIR/FashionMNIST/raw/`` hold the four IDX files (plain or ``.gz``);
``DATA_DIR/cifar-10-batches-py/`` holds CIFAR-10's pickled batches (:mod:`fedlearn.data.cifar`).
Files already there are used as they are (a folder with some but not all of
them is refused, never topped up from elsewhere). An empty folder is filled
from Debian's package ``dataset-fashion-mnist`` (Fashion-MNIST only) or with
torchvision's own download. New files are staged in a hidden folder inside
``DATA_DIR``, checked, and only then moved in.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import shutil
import socket
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import torch

from . import cifar
from ..errors import DataError, UsageError

FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}  # torchvision's classes


def dataset_class(name: str) -> type:
    """torchvision's dataset class for ``name`` (torchvision is imported on first use: processes that are handed
    their data, such as ``--workers``' workers, never load it)."""
    from torchvision import datasets

    return getattr(datasets, FOLDERS[name])


DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
COLOUR_DATASETS = frozenset({"cifar10"})  # 3-channel 32x32 images; the others are 1-channel 28x28
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
NUM_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 20.0
STAGING_PREFIX = ".fedlearn-staging-"
REPLACE_ADVICE = "replace or delete it"
DEBIAN_ADVICE = "reinstall Debian's package dataset-fashion-mnist"


@dataclass(frozen=True)
class Dataset:
    """Train and test split as tensors: images ``(N, C, H, W)`` float32 normalized per channel, labels int64."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    source: str
    test_fingerprint: str = ""  # sha256 (16 hex digits) of the raw test images and labels
    num_classes: int = NUM_CLASSES

    def shared_for_training(self) -> Dataset:
        """The training split moved into shared memory (other processes map it, never copy it), without the test
        split: what worker processes train on."""
        empty = torch.empty(0)
        return replace(self, train_x=self.train_x.share_memory_(), train_y=self.train_y.share_memory_(),
                       test_x=empty, test_y=empty.long())  # fmt: skip

    def to(self, device: torch.device, channels_last: bool = False) -> Dataset:
        """The same dataset with every tensor on ``device`` (images channels-last if asked)."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
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
        """``mean, std`` with 4 decimals (one value each for greyscale, per channel in brackets for colour)."""
        if len(self.mean) == 1:
            return f"{self.mean[0]:.4f}, {self.std[0]:.4f}"
        return ", ".join("(" + ", ".join(f"{v:.4f}" for v in values) + ")" for values in (self.mean, self.std))


def raw_folder(name: str, data_dir: str | os.PathLike) -> Path:
    """Where torchvision keeps the files of ``name`` under ``data_dir`` (IDX files, or CIFAR-10's batches)."""
    if name in COLOUR_DATASETS:
        return Path(data_dir) / cifar.FOLDER
    return Path(data_dir) / FOLDERS[name] / "raw"


def _missing_files(folder: Path) -> list[str]:
    return [f for f in RAW_FILES if not (folder / f).is_file()]


def _present_files(folder: Path) -> list[str]:
    """The IDX files of ``folder`` that are there, plain or as ``.gz``."""
    return [f for f in RAW_FILES if (folder / f).is_file() or (folder / f"{f}.gz").is_file()]


class DatasetNotFound(DataError):
    """None of the dataset's files are in its folder and none could be had elsewhere."""


def _corrupt(path: Path | str, exc: BaseException, advice: str, what: str = "") -> DataError:
    """The one-line error for a dataset file that cannot be decompressed or parsed."""
    kind = type(exc).__name__ if type(exc) is not zlib.error else "zlib.error"
    lines = str(exc).strip().splitlines()
    detail = f": {lines[0]}" if lines else ""
    return DataError(f"dataset file {path} is corrupt ({what}{kind}{detail}); {advice}")


@contextlib.contextmanager
def _staging(data_dir: Path) -> Iterator[Path]:
    """A hidden scratch folder in ``data_dir``, always removed afterwards (``data_dir`` too if new and left empty)."""
    _check_writable(data_dir)
    new_dir = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_dir))
    except OSError as exc:
        raise UsageError(f"--data_dir {data_dir}: cannot create a staging folder there ({exc})") from None
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if new_dir:
            with contextlib.suppress(OSError):
                data_dir.rmdir()


def _gunzip(archive: Path, dest: Path, advice: str) -> None:
    """Decompress ``archive`` into ``dest``; a damaged archive is a corrupt-file DataError."""
    try:
        with gzip.open(archive, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _corrupt(archive, exc, advice) from None
    except OSError as exc:
        raise DataError(f"cannot decompress {archive}: {exc}") from None


def _read_idx(reader: Callable[[str], torch.Tensor], path: Path, origin: str, advice: str) -> torch.Tensor:
    """One IDX file read with torchvision's own reader; any failure names ``origin`` as corrupt."""
    try:
        return reader(str(path))
    except (AssertionError, TypeError, ValueError, RuntimeError, KeyError, IndexError, OSError) as exc:
        raise _corrupt(origin, exc, advice, what="not a readable IDX file: ") from None


def _validate(name: str, paths: dict[str, Path], origins: dict[str, str], advice: str) -> None:
    """Every IDX file parses and each split has as many labels as images (else a corrupt-file DataError)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for prefix, split in (("train", "training"), ("t10k", "test")):
        images_file, labels_file = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        images = _read_idx(read_image_file, paths[images_file], origins[images_file], advice)
        labels = _read_idx(read_label_file, paths[labels_file], origins[labels_file], advice)
        if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
            raise DataError(
                f"{DATASET_TITLES[name]} {split} files {origins[images_file]} and {origins[labels_file]} are corrupt: "
                f"{images.shape[0]} images for {labels.shape[0]} labels; {advice}"
            )


def _move_in(source: Path, files: list[str], folder: Path) -> None:
    """Move validated files from ``source`` into ``folder`` (created only now); undone if it fails midway."""
    created = not folder.is_dir()
    moved: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            os.replace(source / f, folder / f)
            moved.append(folder / f)
    except BaseException as exc:
        for path in moved:
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise DataError(f"cannot move dataset files into {folder}: {exc}") from None
        raise


def _install_gz(name: str, data_dir: Path, archives: dict[str, Path], advice: str) -> None:
    """Decompress ``archives`` (IDX name -> .gz) in a staging folder, validate, then move them into place."""
    folder = raw_folder(name, data_dir)
    with _staging(data_dir) as staging:
        for f, archive in archives.items():
            _gunzip(archive, staging / f, advice)
        paths = {f: staging / f if f in archives else folder / f for f in RAW_FILES}
        origins = {f: str(archives.get(f, folder / f)) for f in RAW_FILES}
        _validate(name, paths, origins, advice)
        _move_in(staging, list(archives), folder)


def _complete_from_gz(name: str, data_dir: Path) -> None:
    """Fill the missing plain files of a started folder from its own .gz files; refuse an incomplete set."""
    folder = raw_folder(name, data_dir)
    missing = _missing_files(folder)
    absent = [f for f in missing if not (folder / f"{f}.gz").is_file()]
    if absent:
        raise DataError(
            f"{DATASET_TITLES[name]} files in {folder} are incomplete: {', '.join(absent)} missing "
            f"(neither plain nor .gz); add them or delete the folder"
        )
    _install_gz(name, data_dir, {f: folder / f"{f}.gz" for f in missing}, REPLACE_ADVICE)


def _try_download(name: str, root: Path) -> bool:
    """Download ``name`` with torchvision under ``root``; False (quietly) when offline or refused."""
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            dataset_class(name)(root=str(root), train=True, download=True)
            dataset_class(name)(root=str(root), train=False, download=True)
        return True
    except Exception:  # noqa: BLE001 - any network/HTTP/checksum failure means "not downloadable"
        return False
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _download(name: str, data_dir: Path) -> bool:
    """Download into a staging folder, validate, then move the IDX files into place; False when not downloadable."""
    with _staging(data_dir) as staging:
        if not _try_download(name, staging):
            return False
        fetched = raw_folder(name, staging)
        if name in COLOUR_DATASETS:  # torchvision checked the archive and every batch against their md5
            files = sorted(p.name for p in fetched.iterdir() if p.is_file())  # batches.meta, readme.html too
        else:
            origins = {f: f"{f} (downloaded, not kept)" for f in RAW_FILES}
            advice = "try again later or put the files there by hand"
            _validate(name, {f: fetched / f for f in RAW_FILES}, origins, advice)
            files = list(RAW_FILES)
        _move_in(fetched, files, raw_folder(name, data_dir))
    return True


def _prepare_cifar(data_dir: Path, download: bool) -> str:
    """CIFAR-10's batches in place (as they are, or downloaded); how they got there, and whether they are the
    published files."""
    folder, files = raw_folder("cifar10", data_dir), cifar.all_files()
    missing = [f for f in files if not (folder / f).is_file()]
    if len(missing) == len(files) and download and _download("cifar10", data_dir):
        return "downloaded, checksums match the published CIFAR-10"
    if len(missing) == len(files):
        tried = "could not be downloaded" if download else "downloading is off (--no_download)"
        raise DatasetNotFound(
            f"CIFAR-10 not found in {folder} and {tried}: put the python version's batches {', '.join(files)} "
            f"there (cifar-10-python.tar.gz, unpacked)"
        )
    if missing:
        raise DataError(f"CIFAR-10 files in {folder} are incomplete: {', '.join(missing)} missing; "
                        f"add them or delete the folder")  # fmt: skip
    differ = cifar.differing_checksums(folder)
    if len(differ) == len(files):
        return "local files, not the published CIFAR-10: no batch has its published checksum"
    if differ:
        return f"local files; {', '.join(differ)} differ from the published CIFAR-10's checksums"
    return "local files, checksums match the published CIFAR-10"


def prepare_files(name: str, data_dir: str | os.PathLike, download: bool = True) -> str:
    """Make sure the files of ``name`` (four IDX files, or CIFAR-10's six batches) are in ``data_dir``; return
    how they got there.

    Order: plain files in place; the folder's own .gz files; else (only when the folder holds
    no IDX file at all) Debian's Fashion-MNIST package, then torchvision's download.
    CIFAR-10: its batches in place, else (folder empty) torchvision's download. New files
    are staged and validated before they are moved in. Raises DataError naming the folder.
    """
    data_dir = Path(data_dir)
    if name in COLOUR_DATASETS:
        return _prepare_cifar(data_dir, download)
    folder = raw_folder(name, data_dir)
    if not _missing_files(folder):
        return "local files"
    if _present_files(folder):
        _complete_from_gz(name, data_dir)
        return "local files"
    if name == "fashion-mnist" and all((DEBIAN_FASHION_MNIST / f"{f}.gz").is_file() for f in RAW_FILES):
        _install_gz(name, data_dir, {f: DEBIAN_FASHION_MNIST / f"{f}.gz" for f in RAW_FILES}, DEBIAN_ADVICE)
        return f"from Debian's dataset-fashion-mnist in {DEBIAN_FASHION_MNIST}"
    if download and _download(name, data_dir):
        return "downloaded"
    title = DATASET_TITLES[name]
    hint = " or install Debian's package dataset-fashion-mnist" if name == "fashion-mnist" else ""
    tried = "could not be downloaded" if download else "downloading is off (--no_download)"
    raise DatasetNotFound(
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

    ``requested`` is ``auto``, ``mnist``, ``fashion-mnist`` or ``cifar10``. ``auto`` means MNIST
    when it is present or downloadable, else Fashion-MNIST with a one-line notice (never CIFAR-10).
    A dataset named explicitly is never swapped for another.
    """
    if requested != "auto":
        return requested, prepare_files(requested, data_dir, download)
    try:
        return "mnist", prepare_files("mnist", data_dir, download)
    except DatasetNotFound:  # an incomplete or corrupt MNIST folder is reported, not swapped
        pass
    how = prepare_files("fashion-mnist", data_dir, download)
    notify(
        f"note: MNIST is not in {raw_folder('mnist', data_dir)} and could not be downloaded; "
        f"using Fashion-MNIST ({how}) instead. Pass --dataset mnist to require MNIST."
    )
    return "fashion-mnist", how


def _read_split(name: str, data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's uint8 images ``(N, C, H, W)`` and labels, checked (a one-line DataError naming the folder)."""
    split = "training" if train else "test"
    folder = raw_folder(name, data_dir)
    if name in COLOUR_DATASETS:
        images, labels = cifar.read_split(folder, train)
    else:
        images, labels = _read_idx_split(name, data_dir, train)
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise DataError(
            f"{DATASET_TITLES[name]} {split} files in {folder} do not match: "
            f"{tuple(images.shape)} images for {tuple(labels.shape)} labels"
        )
    if int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{DATASET_TITLES[name]} {split} labels in {folder} fall outside 0..{NUM_CLASSES - 1}")
    return images, labels


def _read_idx_split(name: str, data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, H, W)`` and labels read by torchvision's MNIST-family class."""
    try:
        ds = dataset_class(name)(root=str(data_dir), train=train, download=False)
        images, labels = ds.data, ds.targets
    except (AssertionError, TypeError, ValueError, RuntimeError, KeyError, IndexError, OSError) as exc:
        detail = f": {exc}" if str(exc) else ""
        raise DataError(
            f"{DATASET_TITLES[name]} {'training' if train else 'test'} files in {raw_folder(name, data_dir)} are "
            f"corrupt or not IDX ({type(exc).__name__}{detail}); replace or delete them"
        ) from None
    if images.dim() != 3:
        raise DataError(f"{DATASET_TITLES[name]} files in {raw_folder(name, data_dir)} hold {images.dim()}-d images")
    return images.unsqueeze(1), labels


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


def load_dataset(name: str, data_dir: str | os.PathLike) -> Dataset:
    """Read both splits once, scale to [0, 1] and normalize each channel with the training set's mean and std."""
    data_dir = Path(data_dir)
    train_images, train_labels = _read_split(name, data_dir, train=True)
    test_images, test_labels = _read_split(name, data_dir, train=False)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{DATASET_TITLES[name]} training and test images differ in size: "
            f"{tuple(train_images.shape[1:])} vs {tuple(test_images.shape[1:])}"
        )
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
        source=str(raw_folder(name, data_dir)),
        test_fingerprint=digest.hexdigest()[:16],
    )
