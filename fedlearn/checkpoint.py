"""Server state on disk: ``--checkpoint PATH`` saves it atomically, ``--resume PATH`` continues from it.

A checkpoint is a dictionary of tensors, numbers, strings and lists, written
with ``torch.save`` and read back with ``weights_only=True`` (no pickled code).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import DataError

FORMAT = 1
# flags that may differ between a run and its resumption (they do not change the numbers)
RESUMABLE = frozenset({"global_epoch", "max_updates", "save", "checkpoint", "checkpoint_every", "resume",
                       "no_progress", "timeout", "distributed", "data_dir", "no_download", "target_acc"})  # fmt: skip


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often (in rounds or updates) the server saves its state, and what identifies the run."""

    path: str
    every: int
    args: dict[str, Any]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` so that a reader (or a crash) never sees a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": FORMAT, "fedlearn": __version__, **state}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, script: str, args: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint of ``script`` and check it was made with the same settings (``args``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"--resume {path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear message
        raise DataError(f"--resume {path}: not a fedlearn checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"--resume {path}: not a fedlearn checkpoint (format {FORMAT})")
    if state.get("script") != script:
        raise DataError(f"--resume {path}: made by {state.get('script')}, not {script}")
    saved = state.get("args", {})
    differ = sorted(k for k in set(saved) | set(args) if k not in RESUMABLE and saved.get(k) != args.get(k))
    if differ:
        shown = ", ".join(f"--{k} {saved.get(k)!r} (now {args.get(k)!r})" for k in differ[:3])
        raise DataError(f"--resume {path}: made with other settings: {shown}")
    return state
