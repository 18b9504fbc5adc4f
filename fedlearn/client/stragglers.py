"""Stragglers that cannot finish their round (FedProx's systems heterogeneity; Li et al., MLSys 2020, section 5.2).

In every synchronous round ``--round_stragglers`` P of the ``K`` picked clients (``K - round(K (1 - P))`` of them,
as the paper's code counts) cannot do their ``E`` local epochs in time. ``--straggler_work drop``: the round goes on
without them (FedAvg as the paper runs it: they train nothing and send nothing); ``partial``: each sends what it
trained in a uniformly drawn ``1 .. E-1`` epochs (FedProx's partial work).

Who straggles, and for how many epochs, is a function of the seed, the round and the round's picked clients (which
are themselves one of the seed and the round): the server, the simulation and every worker of a distributed run
compute the same stragglers, so nobody is told what it could get wrong, and the server counts a straggler's steps
itself (FedNova).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core import seeding
from ..registry import FEDERATED_SCRIPTS, Flag, Flags, FlagSet, Range, require

WORK = ("drop", "partial")


def _check(flags: Flags, script: str) -> None:
    if flags.round_stragglers == 0:
        return
    require(script != "run_async", "--round_stragglers: stragglers are cut short in synchronous rounds; run_async's "
            "clients are slow, not cut short (use --delay there)")  # fmt: skip
    if flags.straggler_work == "partial":
        require(flags.local_epoch >= 2, "--straggler_work partial: stragglers train 1 to --local_epoch - 1 epochs; "
                f"--local_epoch {flags.local_epoch} leaves none (use 2 or more)")  # fmt: skip
    elif script == "run_federated":
        picked = flags.num_select_clients
        require(straggler_count(picked, flags.round_stragglers) < picked,
                f"--round_stragglers {flags.round_stragglers:g} --straggler_work drop drops all {picked} clients "
                "picked each round (--num_select_clients): nothing would train")  # fmt: skip


STRAGGLERS = FlagSet(
    "stragglers",
    (
        Flag("round_stragglers", 0.0, float, group="federation", federated=True, valid=Range(0, 1, high_open=True),
             older=0.0, help="share of each round's picked clients that cannot finish their local epochs "
                             "(FedProx's systems heterogeneity; run_federated)"),
        Flag("straggler_work", "drop", str, choices=WORK, group="federation", federated=True, older="drop",
             help="what stragglers send: drop = nothing, the round goes on without them (FedAvg in FedProx's "
                  "experiments); partial = what they trained in 1 to --local_epoch - 1 epochs, drawn uniformly"),
    ),
    check=_check,
    active=lambda flags, script: flags.round_stragglers > 0,
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""The stragglers' flags (``--round_stragglers`` turns them on)."""


def straggler_count(picked: int, share: float) -> int:
    """Stragglers among ``picked`` clients: all but ``round(picked (1 - share))`` (FedProx's count)."""
    return picked - int(round(picked * (1 - share)))


@dataclass
class RoundStragglers:
    """Each round's stragglers and the epochs each trains (``epochs`` for the others); ``work`` is drop or
    partial."""

    seed: int
    num_clients: int
    num_select: int
    share: float
    epochs: int
    work: str = "drop"
    _cached: tuple[int, dict[int, int]] = field(default=(-1, {}), repr=False)

    def stragglers(self, round_index: int) -> dict[int, int]:
        """Round ``round_index``'s stragglers -> the epochs each would train with partial work."""
        if self._cached[0] != round_index:
            picked = seeding.select_clients(self.seed, round_index, self.num_clients, self.num_select)
            rng = seeding.numpy_rng(self.seed, seeding.STRAGGLERS, round_index)
            chosen = np.sort(rng.choice(picked, size=straggler_count(len(picked), self.share), replace=False))
            epochs = rng.integers(1, max(self.epochs, 2), size=len(chosen))  # 1 .. E-1
            self._cached = (round_index, {int(c): int(e) for c, e in zip(chosen, epochs)})
        return self._cached[1]

    def active(self, round_index: int, picked: list[int]) -> list[int]:
        """The picked clients that train this round: all, or with dropped work all but the stragglers."""
        if self.work != "drop":
            return picked
        stragglers = self.stragglers(round_index)
        return [c for c in picked if c not in stragglers]

    def epochs_of(self, client: int, round_index: int) -> int:
        """The local epochs ``client`` trains in round ``round_index``."""
        return self.stragglers(round_index).get(client, self.epochs)
