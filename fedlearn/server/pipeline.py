"""One batch of client updates through the server's parts: simulated attack, checks, clipping, rule, step.

Both federated scripts (and the distributed servers) hand every batch they
aggregate to a :class:`ServerPipeline`, whose :class:`RobustAggregator` does the
first four parts and whose server step (:mod:`fedlearn.server.steps`) the last: a FedAvg round's picked clients, a
FedBuff buffer, or a single FedAsync update. Updates arrive as points (the
weights a client sends) with the origin they were trained from, or as deltas
(origin ``None``); with ``--compress`` the servers have decoded them first
(:func:`decode_delta`: an undecodable upload is rejected and counted there). In order:

0. FedAvg rounds with ``--drift_correction fednova``: FedNova's normalized
   points in place of the clients' weights (:mod:`fedlearn.server.fednova`);
1. the attack: Byzantine clients' rows are replaced by what the attack sends
   (the adversary sees the whole batch: "a little is enough" and
   inner-product manipulation use the honest rows of it);
2. checks: a row with the wrong shape or dtype, NaN or inf is rejected and
   counted, never applied;
3. ``--clip_norm``: each update's norm is bounded;
4. the rule (``--gar``) over what is left, if enough is left for its
   condition on n and f; otherwise the batch is skipped and counted; with
   ``--dp_clip``, DP-FedAvg's clipped and noised sum in its place
   (:mod:`fedlearn.server.privacy`);
5. the server step: FedAsync's mix, or a server optimizer (FedAvg's replacement, FedBuff's ``eta_g``, FedAdam...).

The rules are translation-equivariant, so applying one to points gives the
origin plus the rule applied to deltas. With the mean rule, no attack and no
clipping the result is bit-identical to plain FedAvg / FedBuff.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..comm.codecs import Codec, DecodeError
from ..core import seeding
from ..errors import UsageError
from .attacks import ATTACK_KINDS, corrupt
from .checks import clip_norm, rejection_reason
from .privacy import GaussianSum, aggregation_problem
from .rules import AGGREGATION_RULES, Aggregate, RuleConfig, aggregate, min_inputs, weighted_average
from .steps import Combined, ServerStep


@dataclass(frozen=True)
class Threat:
    """Who is Byzantine and what they send."""

    byzantine: tuple[int, ...] = ()
    attack: str = "none"
    scale: float | None = None  # the attack's strength (None: its default)

    @property
    def active(self) -> bool:
        """Whether any update is corrupted at aggregation time (label flip acts in training instead)."""
        return bool(self.byzantine) and ATTACK_KINDS[self.attack].part.rewrite is not None

    @property
    def omniscient(self) -> bool:
        """Whether the attack needs the honest updates of its batch."""
        return ATTACK_KINDS[self.attack].part.needs_honest


class RobustAggregator:
    """Aggregates batches of updates under a :class:`Threat` with a rule; counts what it rejected and selected."""

    def __init__(
        self,
        dim: int,
        rule: RuleConfig = RuleConfig(),
        threat: Threat = Threat(),
        clip: float | None = None,
        seed: int = 0,
        privacy: GaussianSum | None = None,
    ) -> None:
        if privacy is not None and (problem := aggregation_problem(rule.name, clip)) is not None:
            raise UsageError(problem)  # the rule the flags are checked by, for parts built from Python too
        self.dim = dim
        self.privacy = privacy  # DP-FedAvg's clipped, noised sum in place of the rule
        self.rule = rule
        self.threat = threat
        self.clip = clip
        self.seed = seed
        self._byzantine = frozenset(threat.byzantine)
        self.received = 0
        self.rejected: Counter[str] = Counter()
        self.skipped_batches = 0
        self.clipped = 0
        self.byzantine_received = 0
        self.byzantine_selected = 0
        self.selected = 0
        self.solver_steps: list[int] = []  # geomedian: the Weiszfeld iterations of every aggregation
        self.solver_unconverged = 0

    def combine(
        self,
        sent: Sequence[torch.Tensor],
        clients: Sequence[int],
        weights: Sequence[float],
        key: int,
        origin: torch.Tensor | None = None,
        scales: Sequence[float] | None = None,
    ) -> torch.Tensor | None:
        """The rule's output over one batch (a point when ``origin`` is given, else a delta); None if skipped.

        ``weights`` are the rows' sample counts (the mean uses them); ``scales``
        multiply the deltas after the checks (FedBuff's staleness weights, with
        the unweighted mean FedBuff uses); ``key`` seeds the attack's noise.
        """
        self.received += len(sent)
        byz = [c in self._byzantine for c in clients]
        self.byzantine_received += sum(byz)
        rows = list(sent)
        if self.threat.active and any(byz):
            rows = self._attack(rows, byz, origin, key)
        keep = []
        for i, row in enumerate(rows):  # shape and dtype, row by row (cheap)
            reason = rejection_reason(row, self.dim, check_values=False)
            if reason is None:
                keep.append(i)
            else:
                self.rejected[reason] += 1
        stack = torch.stack([rows[i] for i in keep]) if keep else None
        if stack is not None:  # values, for the whole stack at once
            # a row's sum is finite only if all its values are (NaN and inf propagate); only rows whose
            # sum is not (a NaN or inf, or an overflow of huge values) get the exact, slower test
            finite = torch.isfinite(stack.sum(dim=1)).tolist()
            for j, ok in enumerate(finite):
                if not ok:
                    finite[j] = bool(torch.isfinite(stack[j]).all())
            if not all(finite):
                self.rejected["non-finite"] += finite.count(False)
                keep = [i for i, ok in zip(keep, finite) if ok]
                stack = stack[torch.tensor(finite)]
        if len(keep) < max(1, min_inputs(self.rule)):
            self.skipped_batches += 1
            return None
        if self.privacy is not None:
            return self.privacy.combine(stack, origin, key)
        if self.clip is not None:
            stack = self._clip(stack, origin)
        counts = torch.tensor([float(weights[i]) for i in keep], dtype=torch.float64)
        if scales is not None:
            factors = torch.tensor([float(scales[i]) for i in keep], dtype=stack.dtype)
            stack = stack * factors.unsqueeze(1)  # deltas only: FedBuff's staleness weights
        if self.rule.name == "mean":
            return weighted_average(stack, counts) if scales is None else stack.mean(dim=0)
        result = aggregate(stack, counts if scales is None else torch.ones(len(keep), dtype=torch.float64), self.rule)
        self._count_selection(result, [clients[i] for i in keep])
        if result.solver is not None:
            self.solver_steps.append(result.solver.iterations)
            self.solver_unconverged += not result.solver.converged
        return result.vector

    def _attack(
        self, rows: list[torch.Tensor], byz: list[bool], origin: torch.Tensor | None, key: int
    ) -> list[torch.Tensor]:
        """Replace the Byzantine rows by what the attack sends (malformed rows are left for the checks)."""
        usable = [i for i, row in enumerate(rows) if rejection_reason(row, self.dim) is None]
        if not any(byz[i] for i in usable):
            return rows
        stack = torch.stack([rows[i] for i in usable])
        deltas = stack if origin is None else stack - origin
        mask = torch.tensor([byz[i] for i in usable])
        generator = seeding.torch_generator(self.seed, seeding.BYZANTINE, key)
        attacked = corrupt(self.threat.attack, deltas, mask, scale=self.threat.scale, generator=generator)
        out = list(rows)
        for j, i in enumerate(usable):
            if byz[i]:
                out[i] = attacked[j] if origin is None else origin + attacked[j]
        return out

    def _clip(self, stack: torch.Tensor, origin: torch.Tensor | None) -> torch.Tensor:
        deltas = stack if origin is None else stack - origin
        norms = deltas.norm(dim=1)
        over = norms > self.clip
        if not bool(over.any()):
            return stack
        self.clipped += int(over.sum())
        clipped = torch.stack([clip_norm(d, self.clip) if o else d for d, o in zip(deltas, over.tolist())])
        return clipped if origin is None else origin + clipped

    def _count_selection(self, result: Aggregate, clients: list[int]) -> None:
        if result.selected is None:
            return
        self.selected += len(result.selected)
        self.byzantine_selected += sum(clients[i] in self._byzantine for i in result.selected)

    def note_rejected(self, reason: str) -> None:
        """Count an update rejected before it reached a batch (say, by the asynchronous server)."""
        self.received += 1
        self.rejected[reason] += 1

    COUNTERS = ("received", "skipped_batches", "clipped", "byzantine_received", "byzantine_selected", "selected")

    def state(self) -> dict[str, Any]:
        """The counters, for a checkpoint."""
        privacy = self.privacy.state() if self.privacy is not None else {}
        solver = {"solver_steps": list(self.solver_steps), "solver_unconverged": self.solver_unconverged}
        return {**{name: getattr(self, name) for name in self.COUNTERS}, "rejected": dict(self.rejected), **solver,
                **privacy}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Continue counting from :meth:`state`."""
        for name in self.COUNTERS:
            setattr(self, name, int(state[name]))
        self.rejected = Counter(state["rejected"])
        self.solver_steps = [int(s) for s in state.get("solver_steps", [])]  # (checkpoints before it: none)
        self.solver_unconverged = int(state.get("solver_unconverged", 0))
        if self.privacy is not None:
            self.privacy.restore(state)

    def summary(self) -> dict[str, Any]:
        """Counts for the Results table and JSON."""
        out: dict[str, Any] = {
            "rule": self.rule.name,
            "byzantine_clients": list(self.threat.byzantine),
            "attack": self.threat.attack,
            "updates_checked": self.received,
            "rejected_updates": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected),
            "skipped_aggregations": self.skipped_batches,
            "byzantine_updates": self.byzantine_received,
        }
        if self.clip is not None:
            out["clipped_updates"] = self.clipped
        if self.privacy is not None:
            out["dp_clipped_updates"] = self.privacy.clipped
        if self.rule.name == "geomedian":
            out["geomedian_iterations"] = list(self.solver_steps)
            out["geomedian_unconverged"] = self.solver_unconverged
        if AGGREGATION_RULES[self.rule.name].part.selects:
            out["selected_updates"] = self.selected
            out["byzantine_selected"] = self.byzantine_selected
        return out


def decode_delta(codec: Codec, payload: torch.Tensor, aggregator: RobustAggregator) -> torch.Tensor | None:
    """The delta an encoded upload stands for, or None (counted as rejected: ``undecodable``)."""
    try:
        return codec.decode(payload, aggregator.dim)
    except DecodeError:
        aggregator.note_rejected("undecodable")
        return None


@dataclass(frozen=True)
class Batch:
    """Updates the server aggregates together: the rows, who sent them and their sample counts; ``origin``,
    the weights they were trained from (rows are points), or None (rows are deltas); FedBuff's ``scales``."""

    rows: Sequence[torch.Tensor]
    clients: Sequence[int]
    counts: Sequence[float]
    origin: torch.Tensor | None = None
    scales: Sequence[float] | None = None


class ServerPipeline:
    """A batch of updates through the defences (:class:`RobustAggregator`), then the server step."""

    def __init__(
        self, aggregator: RobustAggregator, step: ServerStep, normalize: Callable[[Batch, int], Batch] | None = None
    ) -> None:
        self.aggregator = aggregator
        self.step = step
        self.normalize = normalize  # FedNova's normalized averaging (fedlearn.server.fednova), before the checks

    def apply(self, weights: torch.Tensor, batch: Batch, key: int, scale: float = 1.0) -> torch.Tensor | None:
        """The new global weights after ``batch``, or None when the defences left nothing to apply;
        ``key`` seeds the attack's noise, ``scale`` weighs the step (FedAsync's staleness)."""
        if self.normalize is not None:
            batch = self.normalize(batch, key)
        combined = self.aggregator.combine(
            batch.rows, batch.clients, batch.counts, key, origin=batch.origin, scales=batch.scales
        )
        if combined is None:
            return None
        return self.step.apply(weights, Combined(combined, is_point=batch.origin is not None), scale)
