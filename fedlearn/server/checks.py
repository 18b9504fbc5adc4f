"""Server-side checks of a received update: reject malformed vectors, bound an update's norm."""

from __future__ import annotations

import math

import torch

from ..registry import FEDERATED_SCRIPTS, Flag, FlagSet, Range

CLIPPING = FlagSet(
    "norm clipping",
    (Flag("clip_norm", None, float, group="byzantine", federated=True, valid=Range(0, 1e12, low_open=True),
          help="bound every update's L2 norm by this (default: no clipping)"),),
    active=lambda flags, script: flags.clip_norm is not None,
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""``--clip_norm``: every received update's norm bounded (:func:`clip_norm`)."""


def rejection_reason(
    vector: torch.Tensor, expected_numel: int, dtype: torch.dtype = torch.float32, check_values: bool = True
) -> str | None:
    """None if ``vector`` is a finite 1-D tensor of ``expected_numel`` values of ``dtype``; else a short reason:
    "type" (not a tensor), "shape", "dtype" or "non-finite" (checked in that order; the last one only
    with ``check_values``, for a caller that checks many vectors' values at once)."""
    if not isinstance(vector, torch.Tensor):
        return "type"
    if vector.dim() != 1 or vector.numel() != expected_numel:
        return "shape"
    if vector.dtype != dtype:
        return "dtype"
    if check_values and not bool(torch.isfinite(vector).all()):
        return "non-finite"
    return None


def clip_norm(delta: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``delta`` scaled down to L2 norm ``max_norm`` if it is longer (a new tensor either way)."""
    if not (math.isfinite(max_norm) and max_norm >= 0):
        raise ValueError(f"max_norm must be finite and >= 0, got {max_norm}")
    norm = float(torch.linalg.vector_norm(delta.to(torch.float64)))
    if not math.isfinite(norm):
        raise ValueError("delta has non-finite values")
    if norm <= max_norm:
        return delta.clone()
    return delta * (max_norm / norm)
