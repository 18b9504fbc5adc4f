"""A client job's local objective, as a part the trainer is given (one registry entry each).

Training minimizes cross-entropy; an objective may add a term through the
gradients, after every backward pass and before the optimizer's step. Plain
local training adds nothing; FedProx (Li et al. 2020) adds
``mu/2 * ||w - w_global||^2``. SCAFFOLD's and FedNova's corrections come next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..flat import unflatten_like


class Objective(Protocol):
    """Hooks of one local job: ``start`` with the global weights, ``adjust_gradients`` after each backward."""

    def start(self, model: nn.Module, global_weights: torch.Tensor) -> None: ...

    def adjust_gradients(self, params: list[nn.Parameter]) -> None: ...


class Plain:
    """Cross-entropy alone."""

    def start(self, model: nn.Module, global_weights: torch.Tensor) -> None:
        """Nothing to remember."""

    def adjust_gradients(self, params: list[nn.Parameter]) -> None:
        """Nothing to add."""


@dataclass
class Proximal:
    """FedProx's term ``mu/2 * ||w - anchor||^2``, added through its gradient ``mu (w - anchor)``; the anchor
    is the global weights the job started from (set by :meth:`start`, or given)."""

    mu: float
    anchor: list[torch.Tensor] = field(default_factory=list)  # one tensor per model parameter

    def start(self, model: nn.Module, global_weights: torch.Tensor) -> None:
        """Anchor the term at the job's starting weights."""
        self.anchor = unflatten_like(model, global_weights)

    def adjust_gradients(self, params: list[nn.Parameter]) -> None:
        """``grad += mu (w - anchor)``, parameter by parameter."""
        with torch.no_grad():
            for param, anchor in zip(params, self.anchor):
                param.grad.add_(param - anchor, alpha=self.mu)


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "plain": lambda **_: Plain(),
    "fedprox": lambda prox_mu, **_: Proximal(prox_mu),
}
"""Every local objective by name, built from keyword settings; adding one is a class and one entry here."""


def build_objective(prox_mu: float = 0.0, **settings: Any) -> Objective:
    """The objective the settings ask for: FedProx when ``prox_mu > 0``, else plain."""
    name = "fedprox" if prox_mu > 0 else "plain"
    return OBJECTIVES[name](prox_mu=prox_mu, **settings)
