"""The tqdm progress bar every script shows while training."""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(total: int, desc: str, enabled: bool = True) -> tqdm:
    """A bar counting optimizer steps (batches) up to ``total``, on stderr."""
    return tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True, mininterval=0.5, disable=not enabled)
