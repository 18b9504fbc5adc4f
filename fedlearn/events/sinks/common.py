"""What every metrics sink shares: the figures of a history entry, where a run's curves go, what a TARGET must be."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...analysis.stats import fairness
from .. import Listener, RunStart


@dataclass(frozen=True)
class SinkKind:
    """How a sink opens for a run (``open(target, flags)``), and why a TARGET cannot be used (None: it can)."""

    open: Callable[[str, Mapping[str, Any]], Listener]
    problem: Callable[[str], str | None]


FIGURES = ("sim_time", "wall_time_s", "test_accuracy", "test_loss", "train_loss", "samples_trained", "client_updates",
           "bytes_up", "bytes_down", "dp_epsilon")  # fmt: skip
"""An entry's figures every sink streams as they are (None, or not finite: the run has no such figure)."""
CLIENT_FIGURES = (("client_accuracy", "client_accuracy"), ("personal_client_accuracy", "personal_accuracy"))
"""Per-client accuracies streamed as their mean and worst tenth: (the entry's key, the figures' prefix)."""


def figures(entry: Mapping[str, Any]) -> dict[str, float | None]:
    """A history entry's figures by name, the clients' accuracies summarized (``client_accuracy_mean``,
    ``client_accuracy_worst_10pct``, and for personalized runs ``personal_accuracy_...``)."""
    out: dict[str, float | None] = {name: _finite(entry.get(name)) for name in FIGURES}
    for key, prefix in CLIENT_FIGURES:
        summary = fairness(entry.get(key) or []) or {}
        out[f"{prefix}_mean"] = summary.get("mean")
        out[f"{prefix}_worst_10pct"] = summary.get("worst_10pct")
    return out


def _finite(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def run_name(run: RunStart) -> str:
    """The name of a run's curves: its checkpoint's stem (both parts of a resumed run write the same curves), else
    its ``--save`` file's (a sweep names every run), else the script, the seed and the start time."""
    flags = run.flags
    for key in ("resume", "checkpoint", "save"):
        if flags.get(key):
            return Path(flags[key]).stem
    return f"{run.script}_seed-{flags.get('seed')}_{time.strftime('%Y%m%d-%H%M%S')}"


def resumed_after(run: RunStart) -> int | None:
    """The last step a resumed run had logged before its checkpoint (None: a fresh run)."""
    return run.history[-1]["step"] if run.history else None


def _writable_parent(path: Path) -> str | None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    if not os.access(parent, os.W_OK):
        return "cannot be written"
    return None


def file_problem(target: str) -> str | None:
    """Why a file cannot be written (or appended to) at ``target``, or None."""
    path = Path(target)
    if path.is_dir():
        return "is a folder, give a file path"
    if path.exists() and not path.is_file():
        return "exists and is not a regular file"
    if path.exists() and not os.access(path, os.W_OK):
        return "cannot be written"
    return _writable_parent(path)


def folder_problem(target: str) -> str | None:
    """Why a folder cannot be made or written at ``target``, or None."""
    path = Path(target)
    if path.exists():
        if not path.is_dir():
            return "exists and is not a folder"
        return None if os.access(path, os.W_OK) else "cannot be written"
    return _writable_parent(path)
