"""Split the training set among clients: lists of index tensors into the shared data."""

from __future__ import annotations

import numpy as np
import torch

from .errors import UsageError


def iid_partition(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Shuffle the indices and cut them into ``num_clients`` near-equal parts.

    Sizes differ by at most one, for any client count (no divisibility needed).
    The parts are disjoint and together cover ``range(num_samples)``.
    """
    if num_clients < 1:
        raise UsageError(f"--num_clients must be at least 1, got {num_clients}")
    if num_clients > num_samples:
        raise UsageError(
            f"--num_clients {num_clients} exceeds the {num_samples} training samples: every client needs one"
        )
    order = torch.from_numpy(rng.permutation(num_samples).astype(np.int64))
    return [part.clone() for part in torch.tensor_split(order, num_clients)]


def partition_sizes(parts: list[torch.Tensor]) -> list[int]:
    """Number of samples held by each client."""
    return [int(p.numel()) for p in parts]
