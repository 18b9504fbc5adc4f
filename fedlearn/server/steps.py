"""Server steps: how the combined update of a batch moves the global model; one registry entry each.

The pipeline (:mod:`fedlearn.server.pipeline`) hands a step what the rule made
of a batch: a *point* in weight space (the batch's origin plus the rule's
update: a FedAvg round, a FedAsync update) or a *delta* (a FedBuff buffer).
FedAsync mixes the point in; FedAvg and FedBuff hand the delta, the
pseudo-gradient, to a server optimizer (``--server_opt``: SGD, FedAvgM,
FedAdagrad, FedAdam, FedYogi). A step with state (momentum, moments) keeps it
in :meth:`state`, so checkpoints carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..registry import FEDERATED_SCRIPTS, Entry, Flag, Range, Registry


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


@dataclass
class Mix(Stateless):
    """FedAsync (Xie et al. 2019): ``w <- (1 - a) w + a w_new`` with ``a = alpha * scale`` (scale: S(staleness))."""

    alpha: float

    def apply(self, weights: torch.Tensor, combined: Combined, scale: float = 1.0) -> torch.Tensor:
        return fedasync_mix(weights, combined.vector, self.alpha * scale)


@dataclass(frozen=True)
class ServerOptConfig:
    """The server optimizer (``--server_opt``) and its settings; the pseudo-gradient ``D`` it steps on is the
    batch's combined update as a delta (after checks, clipping and the rule)."""

    name: str = "sgd"
    lr: float = 1.0  # eta
    momentum: float = 0.9  # FedAvgM's beta
    b1: float = 0.9
    b2: float = 0.99
    tau: float = 1e-3

    def describe(self) -> str:
        """The optimizer and the settings it uses, e.g. ``adam (eta 0.01, b1 0.9, b2 0.99, tau 0.001)``."""
        entry = SERVER_STEPS[self.name]
        used = ("server_lr", *(f.name for f in entry.flags), *entry.uses)
        values = {"server_lr": self.lr, "server_momentum": self.momentum, "server_b1": self.b1,
                  "server_b2": self.b2, "server_tau": self.tau}  # fmt: skip
        return f"{self.name} ({', '.join(f'{SYMBOLS[key]} {values[key]:g}' for key in used)})"


@dataclass
class ServerSGD(Stateless):
    """``w <- w + eta D``: FedAvg's replacement (the point itself, when ``eta = 1``) and FedBuff's ``eta_g``."""

    lr: float

    def apply(self, weights: torch.Tensor, combined: Combined, scale: float = 1.0) -> torch.Tensor:
        if combined.is_point and self.lr == 1.0:
            return combined.vector
        return weights + self.lr * combined.delta(weights)


@dataclass
class ServerMomentum:
    """FedAvgM (Hsu et al. 2019): ``u <- beta u + D; w <- w + eta u`` (``u`` starts at 0)."""

    lr: float
    momentum: float
    u: torch.Tensor | None = None

    def apply(self, weights: torch.Tensor, combined: Combined, scale: float = 1.0) -> torch.Tensor:
        delta = combined.delta(weights)
        self.u = delta.clone() if self.u is None else self.momentum * self.u + delta
        return weights + self.lr * self.u

    def state(self) -> dict[str, Any]:
        """The momentum buffer (absent before the first step)."""
        return {} if self.u is None else {"u": self.u}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.u = state.get("u")


SECOND_MOMENTS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "adagrad": lambda v, d2, b2: v + d2,
    "adam": lambda v, d2, b2: b2 * v + (1 - b2) * d2,
    "yogi": lambda v, d2, b2: v - (1 - b2) * d2 * torch.sign(v - d2),
}
"""Reddi et al. 2021's second-moment updates ``v <- f(v, D^2, b2)``."""


@dataclass
class Adaptive:
    """FedAdagrad, FedAdam, FedYogi (Reddi et al. 2021, Algorithm 2, no bias correction):
    ``m <- b1 m + (1 - b1) D``; ``v`` by :data:`SECOND_MOMENTS`; ``w <- w + eta m / (sqrt(v) + tau)``.
    ``m`` and ``v`` start at 0, as Flower and FedML start them (Algorithm 2 asks ``v_{-1} >= tau^2``; only the
    first steps differ), so that with a large ``tau`` FedAdam is SGD at ``eta / tau``."""

    kind: str
    lr: float
    b1: float
    b2: float
    tau: float
    m: torch.Tensor | None = None
    v: torch.Tensor | None = None

    def apply(self, weights: torch.Tensor, combined: Combined, scale: float = 1.0) -> torch.Tensor:
        delta = combined.delta(weights)
        m = torch.zeros_like(delta) if self.m is None else self.m
        v = torch.zeros_like(delta) if self.v is None else self.v
        self.m = self.b1 * m + (1 - self.b1) * delta
        self.v = SECOND_MOMENTS[self.kind](v, delta * delta, self.b2)
        return weights + self.lr * self.m / (self.v.sqrt() + self.tau)

    def state(self) -> dict[str, Any]:
        """The moments (absent before the first step)."""
        return {} if self.m is None else {"m": self.m, "v": self.v}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.m, self.v = state.get("m"), state.get("v")


def fedasync_mix(weights: torch.Tensor, client_weights: torch.Tensor, alpha_t: float) -> torch.Tensor:
    """FedAsync's server step: ``(1 - alpha_t) * w + alpha_t * w_new`` (a new tensor)."""
    if not 0.0 <= alpha_t <= 1.0:
        raise ValueError(f"mixing weight must be in [0, 1], got {alpha_t}")
    return (1.0 - alpha_t) * weights + alpha_t * client_weights


@dataclass(frozen=True)
class StepInfo:
    """A server optimizer's default learning rate and the tensors its :meth:`state` holds once it has stepped
    (checked on ``--resume``)."""

    default_lr: float
    state_keys: tuple[str, ...] = ()


def _server_flag(name: str, default: Any, help: str, **options: Any) -> Flag:
    options.setdefault("older", default)  # runs saved before server optimizers stepped with plain SGD
    return Flag(name, default, float, group="server", federated=True, help=help, **options)


SYMBOLS = {"server_lr": "eta", "server_momentum": "beta", "server_b1": "b1", "server_b2": "b2", "server_tau": "tau"}
_ADAPTIVE = ("server_b1", "server_b2", "server_tau")
D = ServerOptConfig()
SERVER_STEPS = Registry.of(
    "server optimizers",
    Flag("server_opt", "sgd", str, group="server", federated=True, older="sgd",
         help="step on the pseudo-gradient D (the combined update): sgd w+eta*D (FedAvg, FedBuff); avgm: FedAvgM "
              "(Hsu et al. 2019); adam, yogi, adagrad: FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021)"),
    [
        Entry("sgd", lambda c: ServerSGD(c.lr), "w + eta D", info=StepInfo(1.0)),
        Entry("avgm", lambda c: ServerMomentum(c.lr, c.momentum), "FedAvgM", info=StepInfo(1.0, ("u",)), flags=(
            _server_flag("server_momentum", D.momentum, "avgm's beta (Hsu et al. 2019: 0.9)",
                         valid=Range(0, 1, high_open=True)),)),
        *(Entry(kind, lambda c, kind=kind: Adaptive(kind, c.lr, c.b1, c.b2, c.tau), f"Fed{kind.capitalize()}",
                info=StepInfo(0.01, ("m", "v")), uses=_ADAPTIVE if kind != "adagrad" else ("server_b1", "server_tau"))
          for kind in ("adam", "yogi", "adagrad")),
    ],
    flags=(
        _server_flag("server_lr", None, "server learning rate eta (FedBuff's eta_g); default 1 for sgd and avgm, "
                     "0.01 for adam, yogi and adagrad (Reddi et al. tune it per task)", older=1.0,
                     valid=Range(0, 100, low_open=True),
                     derive=lambda flags, script: SERVER_STEPS[flags.server_opt].info.default_lr),
        _server_flag("server_b1", D.b1, "adam/yogi/adagrad first moment decay (Reddi et al.)",
                     valid=Range(0, 1, high_open=True), headline=False),
        _server_flag("server_b2", D.b2, "adam/yogi second moment decay (Reddi et al.)",
                     valid=Range(0, 1, high_open=True), headline=False),
        _server_flag("server_tau", D.tau, "adaptivity tau (Reddi et al.'s experiments: 1e-3; from 1e-12, "
                     "so that tau^2 stays a float32)", valid=Range(1e-12, 1e9), headline=False),
    ),
    off="sgd",
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""Every server optimizer by name (``--server_opt``): an entry's part builds the step from a
:class:`ServerOptConfig`; adding one is one class and one entry here. ``--server_lr``'s default per optimizer:
1 keeps FedAvg / FedBuff as published (and FedAvgM as Hsu et al. 2019 run it); Reddi et al. 2021 tune eta per
task over a grid, 0.01 is in it (and is Flower's FedYogi default)."""


def build_step(optimizer: ServerOptConfig = ServerOptConfig(), mix: float | None = None) -> ServerStep:
    """The server step: FedAsync's mix with weight ``mix`` when given, else the server optimizer."""
    if mix is not None:
        return Mix(mix)
    if optimizer.name not in SERVER_STEPS:
        raise ValueError(f"unknown server optimizer {optimizer.name!r}; choose from {', '.join(SERVER_STEPS)}")
    return SERVER_STEPS[optimizer.name].part(optimizer)
