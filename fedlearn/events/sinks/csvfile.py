"""``--log csv:FILE``: one row per evaluation appended to FILE, flushed as written, and the run's settings beside it.

The header comes first when the file is new or empty; rows appended to a file that already has one follow its
columns. A resumed run first drops the rows its first part wrote after the checkpoint, so every step appears once.
The settings (every flag, and the run's facts) go to ``FILE``'s companion ``<stem>.settings.json``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ...core.files import write_atomically
from .. import Listener, RunStart
from .common import figures, resumed_after

COLUMNS = ("step", "sim_time", "wall_time_s", "test_accuracy", "test_loss", "train_loss", "samples_trained",
           "client_updates", "bytes_up", "bytes_down", "dp_epsilon", "client_accuracy_mean",
           "client_accuracy_worst_10pct", "personal_accuracy_mean", "personal_accuracy_worst_10pct")  # fmt: skip


def settings_path(path: str | Path) -> Path:
    """Where a CSV file's companion settings go: ``runs/a.csv`` -> ``runs/a.settings.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.settings.json")


def _cell(value: Any) -> Any:
    return "" if value is None else value


class CsvSink(Listener):
    """One row per evaluation appended to a CSV file; its settings in the companion file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.columns: tuple[str, ...] = COLUMNS
        self._file: io.TextIOBase | None = None

    def on_start(self, run: RunStart) -> None:
        settings = {"script": run.script, "args": dict(run.flags), "run": dict(run.context)}
        write_atomically(settings_path(self.path), (json.dumps(settings, indent=2, default=str) + "\n").encode(),
                         "--log")  # fmt: skip
        existing = self._read()
        if existing:
            self.columns = tuple(existing[0])
            after = resumed_after(run)
            if after is not None:  # drop what the first part logged past its checkpoint
                kept = [existing[0], *[row for row in existing[1:] if row and int(row[0]) <= after]]
                if len(kept) < len(existing):
                    write_atomically(self.path, _rows_text(kept).encode(), "--log")
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if not existing:
            self._write(self.columns)

    def _read(self) -> list[list[str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as handle:
            return [row for row in csv.reader(handle)]

    def on_evaluation(self, entry: dict[str, Any]) -> None:
        values = {"step": entry["step"], **figures(entry)}
        self._write([_cell(values.get(column)) for column in self.columns])

    def _write(self, row: Any) -> None:
        if self._file is not None:
            csv.writer(self._file).writerow(row)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _rows_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()
