"""Files a run writes (results JSON, checkpoints): whole or not at all, and a failure is one line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import DataError
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
