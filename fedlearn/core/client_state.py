"""State a client keeps between its jobs (SCAFFOLD's control variate, error-feedback residuals): how a
checkpoint holds it, and the runs that cannot keep it.

Such state lives where the client trains. In a simulation that is this process, and checkpoints hold it; with
``--workers`` or ``--distributed`` it lives on the worker that hosts the client, where no checkpoint reaches.
"""

from __future__ import annotations

from typing import Any

import torch

from ..registry import Flags, require


def per_client(values: dict[int, torch.Tensor]) -> dict[str, list[Any]]:
    """One vector per client (control variates, error-feedback residuals) as a checkpoint holds them."""
    clients = sorted(values)
    return {"clients": clients, "values": [values[c] for c in clients]}


def from_per_client(saved: dict[str, list[Any]]) -> dict[int, torch.Tensor]:
    """The vectors :func:`per_client` saved, by client."""
    return dict(zip(saved["clients"], saved["values"]))


def refuse_outside_checkpoints(flags: Flags, holder: str, what: str) -> None:
    """A part that keeps per-client state (``holder``, e.g. ``--error_feedback``; ``what`` it keeps) cannot be
    checkpointed once its clients train in other processes: refuse such runs."""
    saving = flags.checkpoint or flags.resume
    require(
        not (flags.workers > 1 and saving),
        f"{holder} with --workers keeps each client's state on its worker, outside checkpoints: run without "
        "--checkpoint/--resume, or with --workers 1",
    )
    require(
        not (flags.distributed and saving),
        f"{holder} with --distributed keeps each client's {what} on its worker, outside checkpoints: run without "
        "--checkpoint/--resume, or simulated",
    )
