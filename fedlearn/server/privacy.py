"""Client-level differential privacy: DP-FedAvg (McMahan et al. 2018) and its privacy loss.

Each round the server clips every client's delta to norm ``S``, sums them, adds
Gaussian noise of standard deviation ``z S`` per coordinate and divides by the
number of clients picked per round ``K`` (the fixed-denominator estimator: a
rejected update still counts in ``K``). Clients count equally, whatever their
sample counts: a sample-weighted sum would have a sensitivity that depends on the
weights. The noise is drawn from a stream keyed by (seed, round).

The privacy loss is computed by Google's ``dp-accounting`` for the sampling the rounds actually use: ``K`` of
``N`` clients uniformly without replacement, under the replace-one relation (a client's data swapped for
another's: the sum of clipped deltas moves by ``2 S``), composed over the rounds. The headline figure is tight: the
PLD accountant for the pair that dominates, and is attained by, this mechanism (:func:`dominating_pair`); the RDP
bound for the same event is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core import seeding
from ..registry import FEDERATED_SCRIPTS, Flag, Flags, FlagSet, Range, require


def aggregation_problem(rule: str, clip_norm: float | None) -> str | None:
    """Why DP's noisy sum cannot go with ``rule`` or server-side clipping (None: it can). The flag check and the
    server's aggregator both ask."""
    if rule != "mean":
        return (f"--dp_clip with --gar {rule}: the privacy accounting bounds one client's effect on a sum of clipped "
                "updates; a robust rule's output has another sensitivity. Use --gar mean")  # fmt: skip
    if clip_norm is not None:
        return "--dp_clip with --clip_norm: DP clips each update itself; drop --clip_norm"
    return None


def _check_privacy(flags: Flags, script: str) -> None:
    """DP-FedAvg: synchronous, the plain mean, no other clipping or drift correction."""
    if flags.dp_clip is None:
        return
    require(script != "run_async", "--dp_clip: client-level DP is accounted for synchronous rounds "
            "(K of N clients sampled without replacement); use run_federated.py")  # fmt: skip
    problem = aggregation_problem(flags.gar, flags.clip_norm)
    require(problem is None, problem or "")
    require(
        flags.drift_correction == "none",
        f"--dp_clip with --drift_correction {flags.drift_correction}: its extra state (control variates, step "
        "counts) would reach the server without noise; run DP without it",
    )


def _dp_flag(name: str, default: Any, help: str, **options: Any) -> Flag:
    return Flag(name, default, float, group="privacy", federated=True, older=default, help=help, **options)


PRIVACY = FlagSet(
    "client-level differential privacy",
    (
        _dp_flag(
            "dp_clip",
            None,
            "bound each client's update norm by S and add Gaussian noise to the sum (McMahan et al. 2018)",
            valid=Range(0, 1e12, low_open=True),
        ),
        _dp_flag("dp_noise", 1.0, "noise multiplier z: the noise std on the sum is z S", valid=Range(0, 1e6)),
        _dp_flag(
            "dp_delta",
            1e-5,
            "delta of the (epsilon, delta) reported (dp-accounting: the tight PLD figure, the RDP bound beside it)",
            valid=Range(0, 1, low_open=True, high_open=True),
        ),
    ),
    check=_check_privacy,
    active=lambda flags, script: flags.dp_clip is not None,
    scripts=FEDERATED_SCRIPTS,
)
"""DP-FedAvg's flags (``--dp_clip`` turns it on)."""


@dataclass(frozen=True)
class PrivacyConfig:
    """``--dp_clip`` S, ``--dp_noise`` z, ``--dp_delta``, and the clients per round K of N."""

    clip: float
    noise: float
    delta: float
    per_round: int
    num_clients: int

    def describe(self) -> str:
        """One line for the tables."""
        return (f"DP-FedAvg: clip {self.clip:g}, noise z = {self.noise:g} (std {self.noise * self.clip:g} on the "
                f"sum), {self.per_round} of {self.num_clients} clients a round, delta {self.delta:g}")  # fmt: skip


class GaussianSum:
    """Clip each delta to ``S``, sum, add ``N(0, (z S)^2)`` per coordinate, divide by ``K``."""

    def __init__(self, config: PrivacyConfig, seed: int = 0) -> None:
        self.config, self.seed = config, seed
        self.clipped = 0

    def combine(self, stack: torch.Tensor, origin: torch.Tensor | None, key: int) -> torch.Tensor:
        """The noisy mean of the rows of ``stack`` (points when ``origin`` is given, else deltas), as a point
        or a delta like its input; ``key`` (the round) seeds the noise."""
        c = self.config
        deltas = stack if origin is None else stack - origin
        norms = deltas.norm(dim=1, keepdim=True)
        self.clipped += int((norms > c.clip).sum())
        clipped = deltas * (c.clip / norms.clamp(min=1e-30)).clamp(max=1.0)
        generator = seeding.torch_generator(self.seed, seeding.DP_NOISE, key)
        noise = torch.randn(deltas.shape[1], generator=generator, dtype=torch.float64) * (c.noise * c.clip)
        mean = (clipped.sum(dim=0) + noise.to(clipped)) / c.per_round
        return mean if origin is None else origin + mean

    def state(self) -> dict[str, Any]:
        """The count of clipped updates, for a checkpoint."""
        return {"dp_clipped": self.clipped}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.clipped = int(state["dp_clipped"])


ACCOUNTANT = "tight: dp-accounting PLD of the dominating pair; RDP bound beside it"
"""What ``final.dp_accountant`` says: ``dp_epsilon`` is the tight figure (runs before it reported the RDP bound)."""
TIGHT_CAP = 100.0
"""Above this RDP bound the tight figure is not computed and ``dp_epsilon`` is the RDP bound: such an epsilon promises
no privacy either way, and the PLD's grid grows with epsilon (at z = 0.001 one round would need 30 GiB)."""
ACCOUNTANT_CAPPED = f"RDP bound: above {TIGHT_CAP:g} the tight PLD is not computed (no privacy either way)"
PLD_DISCRETIZATION = 1e-3
"""The privacy-loss discretization of the tight accountant (its estimate stays pessimistic; at 1e-3 epsilon agrees
with 1e-4 to 5 digits, ten times faster)."""


class Accountant:
    """Epsilon after ``r`` rounds of the Gaussian sum: the tight figure (:meth:`epsilon`, ``dp-accounting``'s PLD
    accountant for the pair that dominates fedlearn's sampling, see :func:`dominating_pair`) and the RDP bound
    (:meth:`epsilon_rdp`, for sampling without replacement under replace-one)."""

    def __init__(self, config: PrivacyConfig) -> None:
        import dp_accounting  # imported on the DP path only
        from dp_accounting.rdp import rdp_privacy_accountant as rdp

        self.config, self._compute_epsilon = config, rdp.compute_epsilon
        self.orders = self.one_round = self.pld = None
        self._composed: dict[int, float] = {}
        if config.noise > 0:  # without noise there is no privacy to account for (epsilon is infinite)
            accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
            with np.errstate(divide="ignore", over="ignore"):  # a vanishing z: infinite RDP, said as inf
                accountant.compose(one_round_event(config))
            self.orders, self.one_round = accountant.orders, accountant.rdp

    def is_tight(self, rounds: int) -> bool:
        """Whether :meth:`epsilon` is the tight figure after ``rounds`` rounds (else the RDP bound, above
        :data:`TIGHT_CAP`, or infinite without noise)."""
        return self.one_round is not None and self.epsilon_rdp(rounds) <= TIGHT_CAP

    def epsilon(self, rounds: int) -> float:
        """The tight privacy loss after ``rounds`` rounds at the configured delta (inf without noise; the RDP bound
        where that is above :data:`TIGHT_CAP`)."""
        if rounds == 0:
            return 0.0
        if not self.is_tight(rounds):
            return self.epsilon_rdp(rounds)
        if self.pld is None:
            self.pld = dominating_pair(self.config)
        if rounds not in self._composed:
            self._composed[rounds] = float(self.pld.self_compose(rounds).get_epsilon_for_delta(self.config.delta))
        return self._composed[rounds]

    def epsilon_rdp(self, rounds: int) -> float:
        """The RDP bound on the privacy loss after ``rounds`` rounds (never below :meth:`epsilon`)."""
        if rounds == 0:
            return 0.0
        if self.one_round is None:
            return float("inf")
        with np.errstate(over="ignore", invalid="ignore"):
            return float(self._compute_epsilon(self.orders, rounds * self.one_round, self.config.delta)[0])


def accountant_used(noise: float, rdp_bound: float) -> str:
    """What ``final.dp_accountant`` says of ``dp_epsilon``, from the noise multiplier and the RDP bound reached
    (:meth:`Accountant.is_tight`'s rule: without noise, epsilon is infinite either way)."""
    return ACCOUNTANT if noise == 0 or rdp_bound <= TIGHT_CAP else ACCOUNTANT_CAPPED


def dominating_pair(config: PrivacyConfig) -> Any:
    """The privacy loss distribution of one round's dominating pair, under both orders: ``(1 - q) N(0, s^2) +
    q N(2S, s^2)`` against ``N(0, s^2)``, ``q = K / N``, ``s = z S``.

    One round samples ``K`` of ``N`` clients without replacement and adds ``N(0, s^2)`` to the sum of deltas clipped
    to ``S``; neighbouring datasets differ in one client's data (replace-one), which moves the sum by at most ``2S``
    when that client is sampled. Zhu, Dong and Wang (AISTATS 2022) show that sampling without replacement under
    replace-one is dominated by the mixture of the mechanism's own replace-one pair with weight ``q``; for the
    Gaussian sum that is the pair above, which is the Poisson-subsampled Gaussian of noise multiplier ``z / 2``
    under add-or-remove (both orders), computed exactly by ``dp-accounting``'s PLD. The pair is attained: all other
    clients send ``-x``, the one that differs sends ``x`` instead of ``-x`` (and the reverse), so the epsilon is
    tight for fedlearn's mechanism, not only an upper bound.
    """
    from dp_accounting.pld import privacy_loss_distribution

    return privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=config.noise / 2,
        sensitivity=1.0,
        sampling_prob=config.per_round / config.num_clients,
        value_discretization_interval=PLD_DISCRETIZATION,
    )


def one_round_event(config: PrivacyConfig) -> Any:
    """The ``dp-accounting`` event of one round: ``K`` of ``N`` without replacement, then the Gaussian sum
    (noise multiplier ``z / 2`` against the replace-one sensitivity ``2 S``)."""
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(config.noise / 2)
    return dp_accounting.SampledWithoutReplacementDpEvent(config.num_clients, config.per_round, gaussian)
