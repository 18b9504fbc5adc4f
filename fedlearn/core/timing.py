"""Where a run's wall-clock time goes: named sections summed over the run."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Stopwatch:
    """Accumulates seconds per named section (``with watch.section("train"): ...``)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time the body and add it to ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - start


def interleaved_times(
    runners: dict[str, Callable[[], Any]], reps: int, self_timed: bool = False
) -> dict[str, list[float]]:
    """Seconds of every repetition of each runner: one warm-up call each, then ``reps`` rounds
    taking turns, so a slow spell of the machine falls on every runner alike.

    With ``self_timed`` each runner returns the seconds to count (say, its training
    time without evaluation) instead of being timed from outside.
    """
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(reps):
        for name, run in runners.items():
            start = time.perf_counter()
            result = run()
            times[name].append(float(result) if self_timed else time.perf_counter() - start)
    return times


def interleaved_medians(runners: dict[str, Callable[[], Any]], reps: int, self_timed: bool = False) -> dict[str, float]:
    """Median seconds of each runner over :func:`interleaved_times`."""
    return {name: statistics.median(t) for name, t in interleaved_times(runners, reps, self_timed).items()}
