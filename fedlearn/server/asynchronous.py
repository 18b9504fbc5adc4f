"""The asynchronous server (FedAsync, FedBuff): what it does with an arriving update, whatever carries it.

:func:`fedlearn.loops.virtual_clock.run_async` drives it with in-process clients
on the virtual clock; :func:`fedlearn.distributed.async_server.run_async_distributed`
with updates from worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..comm.codecs import Codec
from ..registry import Entry, Flag, Flags, Range, Registry, require
from .attacks import ATTACK_KINDS
from .checks import rejection_reason
from .pipeline import Batch, RobustAggregator, ServerPipeline, decode_delta
from .rules import check_rule_on
from .staleness import staleness_weight
from .steps import ServerStep, build_step


@dataclass(frozen=True)
class AsyncAlgorithm:
    """An asynchronous algorithm: its title, and whether arriving deltas wait in a buffer of ``--buffer_size``
    for a server step (FedBuff) rather than each being mixed in alone (FedAsync)."""

    title: str
    buffered: bool


def _async_check(flags: Flags, script: str) -> None:
    """The loop's budget and cadence; the concurrency a distributed run's processes set."""
    require(
        not (flags.distributed and "concurrency" in flags.given),
        "--concurrency: with --distributed every worker process trains one client at a time, "
        "so the number of worker processes sets it",
    )
    require(
        1 <= flags.concurrency <= flags.num_clients,
        f"--concurrency must be between 1 and --num_clients ({flags.num_clients}), got {flags.concurrency}",
    )
    if flags.max_staleness is not None:
        require(flags.max_staleness >= 0, f"--max_staleness must be >= 0, got {flags.max_staleness}")


def _fedasync_check(flags: Flags, script: str) -> None:
    """FedAsync applies each update alone: no rule over several, no attack that sees the others, no optimizer."""
    require(
        flags.gar == "mean",
        f"--gar {flags.gar} needs several updates at once, but FedAsync applies each update alone: "
        "use --algorithm fedbuff (the rule replaces the buffer's mean)",
    )
    require(
        not ATTACK_KINDS[flags.attack].part.needs_honest,
        f"--attack {flags.attack} needs the honest updates of a batch, but FedAsync applies each update alone: "
        "use --algorithm fedbuff",
    )
    require(
        flags.server_opt == "sgd",
        f"--server_opt {flags.server_opt}: FedAsync mixes each update in with --alpha and has no server optimizer; "
        "use --algorithm fedbuff",
    )


def _fedbuff_check(flags: Flags, script: str) -> None:
    """FedBuff steps on full buffers, which the rule must be able to combine."""
    require(
        flags.buffer_size <= flags.max_updates,
        f"--buffer_size ({flags.buffer_size}) exceeds --max_updates ({flags.max_updates}): FedBuff would never step",
    )
    check_rule_on(flags, flags.buffer_size, "--buffer_size")


def _async_flag(name: str, default: Any, kind: type, help: str, **options: Any) -> Flag:
    return Flag(name, default, kind, group="async", scripts=("run_async",), help=help, **options)


ASYNC_ALGORITHMS = Registry.of(
    "asynchronous algorithms",
    _async_flag("algorithm", "fedasync", str, "fedasync: mix every update in (Xie et al. 2019); fedbuff: step on "
                "buffered deltas (Nguyen et al. 2022)"),
    [
        Entry("fedasync", AsyncAlgorithm("FedAsync", buffered=False), "FedAsync", check=_fedasync_check, flags=(
            _async_flag("alpha", 0.6, float, "FedAsync mixing weight alpha (0.6: a value Xie et al. 2019 evaluate)",
                        valid=Range(0, 1, low_open=True)),)),
        Entry("fedbuff", AsyncAlgorithm("FedBuff", buffered=True), "FedBuff", check=_fedbuff_check, flags=(
            _async_flag("buffer_size", 10, int, "FedBuff K: deltas per server step (Nguyen et al. 2022)",
                        count=True),)),
    ],
    flags=(
        _async_flag("concurrency", None, int, "clients training at once (default --num_select_clients)",
                    derive=lambda flags, script: flags.num_select_clients, after=("num_select_clients",)),
        _async_flag("max_updates", None, int, "client updates to receive (default --global_epoch x "
                    "--num_select_clients: FedAvg's number of local jobs)", count=True, resumable=True,
                    derive=lambda flags, script: flags.global_epoch * flags.num_select_clients,
                    after=("num_select_clients",)),
        _async_flag("max_staleness", None, int, "discard (and count) updates staler than this; default: none",
                    headline=False),
        _async_flag("eval_every", None, int, "accepted updates between evaluations (default --num_select_clients)",
                    count=True, headline=False, derive=lambda flags, script: flags.num_select_clients,
                    after=("num_select_clients",)),
    ),
    check=_async_check,
    scripts=("run_async",),
)  # fmt: skip
"""Every asynchronous algorithm by name (``--algorithm``, run_async)."""


def title(algorithm: str) -> str:
    """The algorithm's name for people (``FedBuff``)."""
    return ASYNC_ALGORITHMS[algorithm].part.title


@dataclass(frozen=True)
class AsyncConfig:
    """The server's rule for arriving updates."""

    algorithm: str = "fedasync"
    alpha: float = 0.6  # FedAsync mixing weight
    staleness: str = "polynomial"
    staleness_a: float = 0.5
    staleness_b: float = 4
    buffer_size: int = 10  # FedBuff K
    max_staleness: int | None = None  # discard updates staler than this


class AsyncServer:
    """Holds the global model and its version; applies each arriving update.

    FedAsync: ``w <- (1 - a_t) w + a_t w_new`` with ``a_t = alpha * S(s)``, version + 1.
    FedBuff: buffer ``S(s) * (w_new - w_tau)``; after K of them
    ``w <- w + eta_g * mean(buffer)`` (or another server optimizer's step on that mean), version + 1.
    ``s = version - tau``.
    An update staler than ``max_staleness`` is discarded and counted.
    Every update goes through the server pipeline (attack simulation, checks,
    clipping, rule, then the algorithm's step from :mod:`fedlearn.server.steps`):
    alone for FedAsync, as the whole buffer for FedBuff, whose mean the rule
    replaces; a rejected update is counted and not applied.
    The server replaces ``weights`` on every step, never changes it in place,
    so a reference taken at dispatch stays the model that was sent. With a ``codec`` (``--compress``) clients
    send encoded deltas, decoded before anything else looks at them.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        config: AsyncConfig,
        aggregator: RobustAggregator | None = None,
        step: ServerStep | None = None,
        codec: Codec | None = None,
    ):
        if config.algorithm not in ASYNC_ALGORITHMS:
            raise ValueError(f"unknown algorithm {config.algorithm!r}")
        self.config = config
        self._buffers = ASYNC_ALGORITHMS[config.algorithm].part.buffered
        self.aggregator = aggregator or RobustAggregator(weights.numel())
        step = step or build_step(mix=None if self._buffers else config.alpha)
        self.pipeline = ServerPipeline(self.aggregator, step)
        self.weights = weights.clone()
        self.codec = codec
        self.version = 0
        self.received = 0
        self.discarded = 0
        self.staleness: list[int] = []
        self._deltas: list[torch.Tensor] = []
        self._scales: list[float] = []
        self._clients: list[int] = []
        self._counts: list[int] = []

    def receive(
        self, client_weights: torch.Tensor, start_weights: torch.Tensor, tau: int, client: int = 0, num_samples: int = 1
    ) -> bool:
        """Take ``client``'s new weights (with a codec: its encoded delta), trained from ``start_weights``
        (version ``tau``); True unless undecodable, discarded as too stale or (FedAsync) rejected by the checks."""
        cfg = self.config
        delta = None
        if self.codec is not None:  # an encoded delta: decoded, or rejected as undecodable
            delta = decode_delta(self.codec, client_weights, self.aggregator)
            if delta is None:
                return False
            delta = delta.to(start_weights)
            client_weights = start_weights + delta
        reason = rejection_reason(client_weights, self.weights.numel())
        if reason is not None:  # malformed: counted, never applied (nor differenced with the model)
            self.aggregator.note_rejected(reason)
            return False
        s = self.version - tau
        self.received += 1
        self.staleness.append(s)
        if cfg.max_staleness is not None and s > cfg.max_staleness:
            self.discarded += 1
            return False
        weight = staleness_weight(cfg.staleness, s, cfg.staleness_a, cfg.staleness_b)
        if not self._buffers:
            batch = Batch([client_weights], [client], [num_samples], origin=start_weights)
            mixed = self.pipeline.apply(self.weights, batch, self.received, scale=weight)
            if mixed is None:  # rejected by the checks (and counted there)
                return False
            self.weights = mixed
            self.version += 1
            return True
        self._deltas.append(client_weights - start_weights if delta is None else delta)
        self._scales.append(weight)
        self._clients.append(client)
        self._counts.append(num_samples)
        if len(self._deltas) == cfg.buffer_size:
            batch = Batch(self._deltas, self._clients, self._counts, scales=self._scales)
            stepped = self.pipeline.apply(self.weights, batch, self.received)
            if stepped is not None:  # else every buffered delta was rejected: no step
                self.weights = stepped
                self.version += 1
            for buffer in (self._deltas, self._scales, self._clients, self._counts):
                buffer.clear()
        return True

    def state(self) -> dict[str, Any]:
        """Everything needed to continue: model, version, counters, the FedBuff buffer."""
        return {
            "weights": self.weights.detach().cpu(),
            "version": self.version,
            "received": self.received,
            "discarded": self.discarded,
            "staleness": list(self.staleness),
            "buffer": [d.detach().cpu() for d in self._deltas],
            "scales": list(self._scales),
            "clients": list(self._clients),
            "counts": list(self._counts),
            "aggregator": self.aggregator.state(),
            "server_step": self.pipeline.step.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        device, dtype = self.weights.device, self.weights.dtype
        self.weights = state["weights"].to(device, dtype)
        self.version, self.received, self.discarded = state["version"], state["received"], state["discarded"]
        self.staleness = list(state["staleness"])
        self._deltas = [d.to(device, dtype) for d in state["buffer"]]
        self._scales, self._clients, self._counts = list(state["scales"]), list(state["clients"]), list(state["counts"])
        self.aggregator.restore(state["aggregator"])
        self.pipeline.step.restore(state["server_step"])

    @property
    def buffered(self) -> int:
        """Accepted FedBuff deltas waiting for the buffer to fill."""
        return len(self._deltas)

    def summary(self) -> dict[str, Any]:
        """Staleness and counting figures for the Results table and JSON."""
        return {
            "mean_staleness": sum(self.staleness) / len(self.staleness) if self.staleness else 0.0,
            "max_staleness": max(self.staleness, default=0),
            "discarded_updates": self.discarded,
            "server_steps": self.version,
            "unapplied_updates": self.buffered,
            **self.aggregator.summary(),
        }
