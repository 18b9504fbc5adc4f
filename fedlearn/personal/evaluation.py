"""Each client's accuracy with its own weights on its own test set: how personalized models are evaluated."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..core.flat import set_flat
from ..core.training import ClientTests, evaluate
from ..data.windows import take


def own_test_sets(tests: ClientTests) -> list[torch.Tensor]:
    """Every client's test samples, as indices into ``tests`` (one tensor per client, possibly empty)."""
    sizes = torch.bincount(tests.owner, minlength=tests.num_clients).tolist()
    return list(torch.argsort(tests.owner, stable=True).split(sizes))


def accuracies_with(
    model: nn.Module,
    params: list[nn.Parameter],
    tests: ClientTests,
    shared: torch.Tensor,
    own: Callable[[int], torch.Tensor | None],
) -> list[float | None]:
    """Each client's accuracy on its own test set with ``own(client)``'s weights, or with ``shared`` when it has
    none (those clients in one pass); None for a client without test samples."""
    slices = own_test_sets(tests)
    set_flat(params, shared)
    shared_hits = tests.accuracies(model)
    figures: list[float | None] = []
    for client, index in enumerate(slices):
        weights = own(client) if len(index) else None
        if weights is None:
            figures.append(shared_hits[client])
            continue
        set_flat(params, weights)
        figures.append(evaluate(model, take(tests.x, index), tests.y[index]).accuracy)
    return figures
