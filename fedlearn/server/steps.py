"""Server steps: how the combined update of a batch moves the global model; one registry entry each.

The pipeline (:mod:`fedlearn.server.pipeline`) hands a step what the rule made
of a batch: a *point* in weight space (the batch's origin plus the rule's
update: a FedAvg round, a FedAsync update) or a *delta* (a FedBuff buffer).
A step with state (a server optimizer's moments) keeps it in :meth:`state`, so
checkpoints carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class Combined:
    """The rule's output over one batch: a point in weight space (``is_point``), or a delta."""

    vector: torch.Tensor
    is_point: bool

    def delta(self, weights: torch.Tensor) -> torch.Tensor:
        """The update as a delta from ``weights`` (the model the batch's point was trained from)."""
        return self.vector - weights if self.is_point else self.vector


class ServerStep(Protocol):
    """Applies a batch's combined update to the global weights (returns new weights; never in place)."""

    def apply(self, weights: torch.Tensor, combined: Combined, scale: float = 1.0) -> torch.Tensor: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class Stateless:
    """A step with nothing to checkpoint."""

    def state(self) -> dict[str, Any]:
        """Nothing."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""


class Replace(Stateless):
    """FedAvg (McMahan et al. 2017): the new model is the rule's point, ``w <- sum_k p_k w_k``."""

    def apply(self, weights: torch.Tensor, combined: Combined, scale: float = 1.0) -> torch.Tensor:
        return combined.vector if combined.is_point else weights + combined.vector


@dataclass
class Mix(Stateless):
    """FedAsync (Xie et al. 2019): ``w <- (1 - a) w + a w_new`` with ``a = alpha * scale`` (scale: S(staleness))."""

    alpha: float

    def apply(self, weights: torch.Tensor, combined: Combined, scale: float = 1.0) -> torch.Tensor:
        return fedasync_mix(weights, combined.vector, self.alpha * scale)


@dataclass
class ScaledDelta(Stateless):
    """FedBuff (Nguyen et al. 2022): ``w <- w + eta_g * delta``."""

    lr: float

    def apply(self, weights: torch.Tensor, combined: Combined, scale: float = 1.0) -> torch.Tensor:
        return weights + self.lr * combined.delta(weights)


def fedasync_mix(weights: torch.Tensor, client_weights: torch.Tensor, alpha_t: float) -> torch.Tensor:
    """FedAsync's server step: ``(1 - alpha_t) * w + alpha_t * w_new`` (a new tensor)."""
    if not 0.0 <= alpha_t <= 1.0:
        raise ValueError(f"mixing weight must be in [0, 1], got {alpha_t}")
    return (1.0 - alpha_t) * weights + alpha_t * client_weights


STEPS: dict[str, Callable[..., ServerStep]] = {
    "fedavg": lambda **_: Replace(),
    "fedasync": lambda alpha, **_: Mix(alpha),
    "fedbuff": lambda server_lr, **_: ScaledDelta(server_lr),
}
"""Every server step by name, built from keyword settings (``alpha``, ``server_lr``, ...); adding one
(a server optimizer) is one class and one entry here."""


def build_step(name: str, **settings: Any) -> ServerStep:
    """The step registered as ``name`` with ``settings``."""
    if name not in STEPS:
        raise ValueError(f"unknown server step {name!r}; choose from {', '.join(STEPS)}")
    return STEPS[name](**settings)
