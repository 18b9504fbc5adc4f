"""Figures over repeated seeds: mean, standard deviation and a 95 % Student's t interval; client fairness.

With ``n`` seeds the interval is ``mean +- t(0.975, n - 1) * s / sqrt(n)``, ``s``
the sample standard deviation (``n - 1`` in the denominator). It says where the
mean over *all* seeds would lie, if seed-to-seed variation were normal; with 3
seeds ``t = 4.30``, so it is wide. A time to target that was never reached is
counted (``never``), not averaged in: the mean is over the seeds that reached it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """One figure over ``n`` seeds: its mean, standard deviation and interval (over the values present), and how
    many seeds had no value (``never``: the target was not reached)."""

    n: int
    mean: float | None
    std: float | None  # None with fewer than 2 values
    low: float | None  # the interval; None with fewer than 2 values
    high: float | None
    never: int = 0


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student's t critical value for ``df`` degrees of freedom (scipy)."""
    from scipy.stats import t  # here: only the comparison needs scipy

    return float(t.ppf(0.5 + confidence / 2, df))


def summarize(values: Sequence[float | None]) -> Summary:
    """Mean, sample standard deviation and 95 % t interval of the values that are not None."""
    present = [float(v) for v in values if v is not None]
    never, k = len(values) - len(present), len(present)
    if k == 0:
        return Summary(len(values), None, None, None, None, never)
    mean = math.fsum(present) / k
    if k == 1:
        return Summary(len(values), mean, None, None, None, never)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in present) / (k - 1))
    half = t_quantile(k - 1) * std / math.sqrt(k)
    return Summary(len(values), mean, std, mean - half, mean + half, never)


def fairness(accuracies: Sequence[float | None], share: float = 0.1) -> dict[str, float | int] | None:
    """Mean, standard deviation (population), worst and best ``share`` of the clients' accuracies (the mean of the
    lowest / highest ``ceil(share * n)``); clients without a held-out set (None) are left out."""
    present = sorted(float(a) for a in accuracies if a is not None)
    if not present:
        return None
    n, tail = len(present), max(1, math.ceil(share * len(present)))
    mean = math.fsum(present) / n
    return {
        "clients": n,
        "mean": mean,
        "std": math.sqrt(math.fsum((a - mean) ** 2 for a in present) / n),
        "worst_10pct": math.fsum(present[:tail]) / tail,
        "best_10pct": math.fsum(present[-tail:]) / tail,
    }
