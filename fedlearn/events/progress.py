"""The tqdm progress bar every script shows while training."""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

# counts shown with one decimal: a federated bar counts client updates and advances by a fraction per batch
FRACTIONAL = "{l_bar}{bar}| {n:.1f}/{total_fmt} {unit}s [{elapsed}<{remaining}{postfix}]"


def progress_bar(
    total: int, desc: str, enabled: bool = True, unit: str = "batch", initial: int = 0, fractional: bool = False
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
