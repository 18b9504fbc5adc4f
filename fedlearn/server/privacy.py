"""Client-level differential privacy: DP-FedAvg (McMahan et al. 2018) and its privacy loss.

Each round the server clips every client's delta to norm ``S``, sums them, adds
Gaussian noise of standard deviation ``z S`` per coordinate and divides by the
number of clients picked per round ``K`` (the fixed-denominator estimator: a
rejected update still counts in ``K``). Clients count equally, whatever their
sample counts: a sample-weighted sum would have a sensitivity that depends on the
weights. The noise is drawn from a stream keyed by (seed, round).

The privacy loss is computed by Google's ``dp-accounting`` (RDP accountant) for
the sampling the rounds actually use: ``K`` of ``N`` clients uniformly without
replacement, composed over the rounds. Sampling without replacement is analysed
under the replace-one relation (a client's data swapped for another's), for
which the sum of clipped deltas has sensitivity ``2 S``, so the accountant is
told the noise multiplier ``z / 2``. The RDP of one round is computed once; ``r``
rounds compose to ``r`` times it, as the accountant composes, and the library's
``compute_epsilon`` turns that into epsilon for ``delta``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core import seeding
from ..registry import FEDERATED_SCRIPTS, Flag, Flags, FlagSet, Range, require


def _check_privacy(flags: Flags, script: str) -> None:
    """DP-FedAvg: synchronous, the plain mean, no other clipping or drift correction."""
    if flags.dp_clip is None:
        return
    require(script != "run_async", "--dp_clip: client-level DP is accounted for synchronous rounds "
            "(K of N clients sampled without replacement); use run_federated.py")  # fmt: skip
    require(
        flags.gar == "mean",
        f"--dp_clip with --gar {flags.gar}: the privacy accounting bounds one client's effect on a sum of clipped "
        "updates; a robust rule's output has another sensitivity. Use --gar mean",
    )
    require(flags.clip_norm is None, "--dp_clip with --clip_norm: DP clips each update itself; drop --clip_norm")
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
            "delta of the (epsilon, delta) reported by dp-accounting's RDP accountant",
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


class Accountant:
    """Epsilon after ``r`` rounds of the Gaussian sum, from ``dp-accounting``'s RDP accountant."""

    def __init__(self, config: PrivacyConfig) -> None:
        import dp_accounting  # imported on the DP path only
        from dp_accounting.rdp import rdp_privacy_accountant as rdp

        self.config, self._compute_epsilon = config, rdp.compute_epsilon
        self.orders = self.one_round = None
        if config.noise > 0:  # without noise there is no privacy to account for (epsilon is infinite)
            accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
            accountant.compose(one_round_event(config))
            self.orders, self.one_round = accountant.orders, accountant.rdp

    def epsilon(self, rounds: int) -> float:
        """The privacy loss after ``rounds`` rounds at the configured delta (inf without noise)."""
        if rounds == 0:
            return 0.0
        if self.one_round is None:
            return float("inf")
        return float(self._compute_epsilon(self.orders, rounds * self.one_round, self.config.delta)[0])


def one_round_event(config: PrivacyConfig) -> Any:
    """The ``dp-accounting`` event of one round: ``K`` of ``N`` without replacement, then the Gaussian sum
    (noise multiplier ``z / 2`` against the replace-one sensitivity ``2 S``)."""
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(config.noise / 2)
    return dp_accounting.SampledWithoutReplacementDpEvent(config.num_clients, config.per_round, gaussian)
