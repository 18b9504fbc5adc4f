"""``--log tensorboard:DIR``: TensorBoard event files, one folder per run under DIR, written as the run goes.

Each evaluation's figures are scalars at the history's step numbers (``test/accuracy``, ``time/simulated_s``,
``traffic/up_mb``, ``clients/accuracy_mean``, ...), the clients' accuracies a histogram, flushed at once, so an
interrupted run leaves every figure so far readable. The run's settings are TensorBoard hparams (every flag), so
runs can be filtered by them. A resumed run writes into the same folder (named by the checkpoint, else ``--save``)
and purges what its first part logged past the checkpoint, so the curves continue without a step twice. The writer
is PyTorch's (``torch.utils.tensorboard``), which needs the ``tensorboard`` package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from .. import Listener, RunStart
from .common import figures, folder_problem, resumed_after, run_name

TAGS = {
    "test_accuracy": "test/accuracy", "test_loss": "test/loss", "train_loss": "train/loss",
    "sim_time": "time/simulated_s", "wall_time_s": "time/wall_s", "samples_trained": "work/samples_trained",
    "client_updates": "work/client_updates", "bytes_up": "traffic/up_mb", "bytes_down": "traffic/down_mb",
    "dp_epsilon": "privacy/epsilon", "client_accuracy_mean": "clients/accuracy_mean",
    "client_accuracy_worst_10pct": "clients/accuracy_worst_10pct", "personal_accuracy_mean": "personal/accuracy_mean",
    "personal_accuracy_worst_10pct": "personal/accuracy_worst_10pct",
}  # fmt: skip
"""Each streamed figure's TensorBoard tag."""
SCALE = {"bytes_up": 1e-6, "bytes_down": 1e-6}  # bytes -> MB
HISTOGRAMS = {"client_accuracy": "clients/accuracy", "personal_client_accuracy": "personal/accuracy"}


def problem(target: str) -> str | None:
    """Why TensorBoard files cannot be written under ``target`` (or without the package), or None."""
    if importlib.util.find_spec("tensorboard") is None:
        return "needs the tensorboard package: pip install tensorboard (sh requirements.sh installs it)"
    return folder_problem(target)


def _hparam(value: Any) -> Any:
    """A flag's value as TensorBoard takes it (numbers, text and switches as they are; others as text)."""
    return value if isinstance(value, bool | int | float | str) else str(value)


class TensorBoardSink(Listener):
    """Scalars and histograms of every evaluation, and the run's settings, in ``folder/<run name>``."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.writer: Any = None

    def on_start(self, run: RunStart) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        after = resumed_after(run)
        self.writer = SummaryWriter(str(self.folder / run_name(run)), purge_step=None if after is None else after + 1)
        if after is None:  # the settings once, when the curves begin
            settings = {name: _hparam(value) for name, value in run.flags.items()}
            for summary in hparams(settings, dict.fromkeys(TAGS.values(), 0.0)):
                self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def on_evaluation(self, entry: dict[str, Any]) -> None:
        step = entry["step"]
        for name, value in figures(entry).items():
            if value is not None:
                self.writer.add_scalar(TAGS[name], value * SCALE.get(name, 1.0), step)
        for key, tag in HISTOGRAMS.items():
            present = [a for a in entry.get(key) or [] if a is not None]
            if present:
                self.writer.add_histogram(tag, np.asarray(present, dtype=np.float64), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
