"""Getting dataset files onto disk safely: a staging folder, torchvision's downloads, moving checked files in.

New files are staged in a hidden folder inside ``DATA_DIR``, checked, and only
then moved into place; a failure midway leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import DataError, UsageError

DOWNLOAD_TIMEOUT_S = 20.0
STAGING_PREFIX = ".fedlearn-staging-"
REPLACE_ADVICE = "replace or delete it"


class DatasetNotFound(DataError):
    """None of the dataset's files are in its folder and none could be had elsewhere."""


def corrupt(path: Path | str, exc: BaseException, advice: str, what: str = "") -> DataError:
    """The one-line error for a dataset file that cannot be decompressed or parsed."""
    kind = type(exc).__name__ if type(exc) is not zlib.error else "zlib.error"
    lines = str(exc).strip().splitlines()
    detail = f": {lines[0]}" if lines else ""
    return DataError(f"dataset file {path} is corrupt ({what}{kind}{detail}); {advice}")


def check_writable(data_dir: Path) -> None:
    """UsageError naming ``--data_dir`` unless files can be stored under it."""
    probe = data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UsageError(f"--data_dir {data_dir}: not writable, cannot store dataset files there")


@contextlib.contextmanager
def staging(data_dir: Path) -> Iterator[Path]:
    """A hidden scratch folder in ``data_dir``, always removed afterwards (``data_dir`` too if new and left empty)."""
    check_writable(data_dir)
    new_dir = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_dir))
    except OSError as exc:
        raise UsageError(f"--data_dir {data_dir}: cannot create a staging folder there ({exc})") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if new_dir:
            with contextlib.suppress(OSError):
                data_dir.rmdir()


def move_in(source: Path, files: list[str], folder: Path) -> None:
    """Move checked files from ``source`` into ``folder`` (created only now); undone if it fails midway."""
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


def try_download(fetch: Callable[[Path], None], root: Path) -> bool:
    """Run ``fetch(root)`` (a torchvision download) quietly; False when offline or refused."""
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            fetch(root)
        return True
    except Exception:  # noqa: BLE001 - any network/HTTP/checksum failure means "not downloadable"
        return False
    finally:
        socket.setdefaulttimeout(previous_timeout)


def torchvision_download(cls: type) -> Callable[[Path], None]:
    """A fetch that downloads both splits of torchvision's dataset class ``cls`` under a root folder."""

    def fetch(root: Path) -> None:
        cls(root=str(root), train=True, download=True)
        cls(root=str(root), train=False, download=True)

    return fetch


def download(
    data_dir: Path, fetch: Callable[[Path], None], folder: Callable[[Path], Path], keep: Callable[[Path], list[str]]
) -> bool:
    """Download with ``fetch`` into a staging folder, then move the files ``keep`` accepts (it checks them) from
    the staged ``folder(staging)`` into ``folder(data_dir)``; False when not downloadable."""
    with staging(data_dir) as scratch:
        if not try_download(fetch, scratch):
            return False
        fetched = folder(scratch)
        move_in(fetched, keep(fetched), folder(data_dir))
    return True
