"""FedAvg's weighted mean and FedAsync's mixing: pure functions over flat parameter vectors (robust rules elsewhere)."""

from __future__ import annotations

import torch


def weighted_average(stack: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k (w_k / sum_j w_j) * stack[k]`` for a ``(K, D)`` stack and ``K`` non-negative weights.

    FedAvg uses the clients' sample counts as weights.
    """
    if stack.dim() != 2 or weights.shape != (stack.shape[0],):
        raise ValueError(f"expected a (K, D) stack and K weights, got {tuple(stack.shape)} and {tuple(weights.shape)}")
    weights = weights.to(dtype=stack.dtype, device=stack.device)
    total = weights.sum()
    if not total > 0:
        raise ValueError("weights must have a positive sum")
    return (weights / total) @ stack


def fedasync_mix(weights: torch.Tensor, client_weights: torch.Tensor, alpha_t: float) -> torch.Tensor:
    """FedAsync's server step: ``(1 - alpha_t) * w + alpha_t * w_new`` (a new tensor)."""
    if not 0.0 <= alpha_t <= 1.0:
        raise ValueError(f"mixing weight must be in [0, 1], got {alpha_t}")
    return (1.0 - alpha_t) * weights + alpha_t * client_weights
