"""Files a run writes (results JSON, checkpoints): whole or not at all, and a failure is one line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import DataError
from ..registry import require
from . import signals


def write_atomically(path: str | os.PathLike, payload: bytes, flag: str, private: bool = False) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder and one rename.

    A reader, a crash or a signal never leaves a partial file or a stray temporary
    one; a failure to write (disk full, folder gone) is a :class:`DataError` naming
    ``flag`` and ``path``. ``private`` files are readable by their owner only.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        with signals.deferred():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            if not private:  # mkstemp makes it private; a results file is an ordinary file
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(handle.fileno(), 0o666 & ~umask)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise DataError(f"{flag} {path}: cannot write ({exc.strerror or exc}); nothing was written") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        with signals.deferred():
            Path(tmp).unlink(missing_ok=True)


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (after links and ``..``), existing or not."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_new_file(path: str | os.PathLike, flag: str) -> None:
    """UsageError naming ``flag`` unless a file can be written at ``path`` (not a folder; its folder exists and
    takes new files)."""
    path = Path(path)
    require(not path.is_dir(), f"{flag} {path}: is a directory, give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    require(parent.is_dir(), f"{flag} {path}: folder {parent} does not exist")
    require(os.access(parent, os.W_OK), f"{flag} {path}: folder {parent} is not writable")
