"""A client job's local objective, as a part the trainer is given (chosen by :mod:`.algorithms`).

Training minimizes cross-entropy; an objective may add a term through the
gradients, after every backward pass and before the optimizer's step, and may
return something besides the weights when the job ends. Plain local training
adds nothing; FedProx (Li et al. 2020) adds ``mu/2 * ||w - w_global||^2``;
SCAFFOLD (Karimireddy et al. 2020) corrects every gradient by ``c - c_i`` and
returns the change of the client's control variate. (FedNova changes only how
the server averages: :mod:`fedlearn.server.fednova`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..core.client_state import from_per_client, per_client
from ..core.flat import unflatten_like
from ..core.training import StepHooks


@dataclass(frozen=True)
class Job:
    """One local job as an objective sees it: whose, from which weights, with the server's control variate
    (SCAFFOLD's ``c``; None otherwise)."""

    client: int
    start: torch.Tensor
    control: torch.Tensor | None = None


class Objective(StepHooks, Protocol):
    """Hooks of one local job: ``start``, around every optimizer step (:class:`fedlearn.core.training.StepHooks`),
    ``finish`` with the trained weights and the optimizer steps taken (returns what the client sends besides
    its weights, or None); ``state``/``restore``: what it keeps per client between jobs, for checkpoints."""

    def start(self, model: nn.Module, job: Job) -> None: ...

    def finish(self, job: Job, trained: torch.Tensor, steps: int) -> torch.Tensor | None: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class Plain:
    """Cross-entropy alone."""

    def start(self, model: nn.Module, job: Job) -> None:
        """Nothing to remember."""

    def adjust_gradients(self, params: list[nn.Parameter]) -> None:
        """Nothing to add."""

    def after_step(self, params: list[nn.Parameter]) -> None:
        """Nothing to correct."""

    def finish(self, job: Job, trained: torch.Tensor, steps: int) -> torch.Tensor | None:
        """Nothing to send besides the weights."""
        return None

    def state(self) -> dict[str, Any]:
        """Nothing kept between jobs."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Nothing to continue."""


def acts_on_steps(objective: Objective) -> bool:
    """Whether an objective's hooks around the optimizer's steps do anything (plain training's do not: the loop
    then skips them)."""
    kind = type(objective)
    return not isinstance(objective, Plain) or (
        kind.adjust_gradients is not Plain.adjust_gradients or kind.after_step is not Plain.after_step
    )


@dataclass
class Proximal(Plain):
    """FedProx's term ``mu/2 * ||w - anchor||^2``, added through its gradient ``mu (w - anchor)``; the anchor
    is the global weights the job started from (set by :meth:`start`, or given)."""

    mu: float
    anchor: list[torch.Tensor] = field(default_factory=list)  # one tensor per model parameter

    def start(self, model: nn.Module, job: Job) -> None:
        """Anchor the term at the job's starting weights."""
        self.anchor = unflatten_like(model, job.start)

    def adjust_gradients(self, params: list[nn.Parameter]) -> None:
        """``grad += mu (w - anchor)``, parameter by parameter."""
        with torch.no_grad():
            for param, anchor in zip(params, self.anchor):
                param.grad.add_(param - anchor, alpha=self.mu)


@dataclass
class Scaffold(Plain):
    """SCAFFOLD's client (Karimireddy et al. 2020, option II): every step is corrected by ``c - c_i``, as
    ``w <- w - eta_l (c - c_i)`` after the optimizer's step (with plain SGD the same as adding ``c - c_i`` to
    the gradient; with momentum the correction stays outside the momentum buffer, as NIID-Bench applies it,
    since ``c_i`` already measures the momentum-amplified drift). After ``K`` steps from ``x`` to ``y_i``,
    ``c_i+ = c_i - c + (x - y_i) / (K eta_l)``, and the job returns ``c_i+ - c_i``. ``controls`` holds
    ``c_i`` of every client that has trained here (zero before): its memory grows with the clients seen."""

    lr: float
    controls: dict[int, torch.Tensor] = field(default_factory=dict)
    correction: list[torch.Tensor] = field(default_factory=list)

    def start(self, model: nn.Module, job: Job) -> None:
        """The job's correction ``c - c_i``, one tensor per parameter."""
        if job.control is None:
            raise ValueError("a SCAFFOLD job needs the server's control variate")
        own = self.controls.get(job.client)
        self.correction = unflatten_like(model, job.control if own is None else job.control - own)

    def after_step(self, params: list[nn.Parameter]) -> None:
        """``w -= eta_l (c - c_i)``, parameter by parameter."""
        with torch.no_grad():
            for param, correction in zip(params, self.correction):
                param.sub_(correction, alpha=self.lr)

    def finish(self, job: Job, trained: torch.Tensor, steps: int) -> torch.Tensor | None:
        """Update the client's ``c_i`` and return its change."""
        assert job.control is not None
        own = self.controls.get(job.client, torch.zeros_like(job.control))
        updated = own - job.control + (job.start - trained) / (steps * self.lr)
        self.controls[job.client] = updated
        return updated - own

    def state(self) -> dict[str, Any]:
        """Every client's control variate, for a checkpoint."""
        return {STATE_KEY: per_client(self.controls)}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        if STATE_KEY in state:
            self.controls = from_per_client(state[STATE_KEY])


STATE_KEY = "client_controls"
"""Where a checkpoint holds the clients' control variates."""
