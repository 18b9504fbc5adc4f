"""The tqdm progress bar every script shows while training: a listener of the run's loop events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from . import Listener, LoopStart

# counts shown with one decimal: a federated bar counts client updates and advances by a fraction per batch
FRACTIONAL = "{l_bar}{bar}| {n:.1f}/{total_fmt} {unit}s [{elapsed}<{remaining}{postfix}]"


def progress_bar(
    total: float, desc: str, enabled: bool = True, unit: str = "batch", initial: float = 0, fractional: bool = False
) -> tqdm:
    """A bar counting optimizer steps (or other ``unit``s) up to ``total``, from ``initial``, on stderr."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        dynamic_ncols=True,
        mininterval=0.5,
        disable=not enabled,
        bar_format=FRACTIONAL if fractional else None,
    )


def batch_ticks(update: Callable[[float], object], batches: int) -> Callable[[], None]:
    """A per-batch callback that advances a bar counting client updates by one over a job's ``batches``."""
    step = 1.0 / max(batches, 1)
    return lambda: update(step)


class ProgressBar(Listener):
    """Shows each training loop as a bar on stderr, with the last status after it."""

    def __init__(self) -> None:
        self._bar: Any = None

    def on_loop(self, loop: LoopStart) -> None:
        self.close()
        self._bar = progress_bar(loop.total, loop.title, True, loop.unit, loop.initial, loop.fractional)

    def on_progress(self, units: float) -> None:
        if self._bar is not None:
            self._bar.update(units)

    def on_status(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def on_loop_end(self) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
