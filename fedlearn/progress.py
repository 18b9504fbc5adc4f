"""The tqdm progress bar every script shows while training."""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "batch", initial: int = 0) -> tqdm:
    """A bar counting optimizer steps (or other ``unit``s) up to ``total``, from ``initial``, on stderr."""
    return tqdm(
        total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, mininterval=0.5, disable=not enabled
    )
