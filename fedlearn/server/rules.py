"""Robust aggregation rules (GARs) over a ``(K, D)`` stack of flat update vectors.

Each rule tolerates up to ``f`` Byzantine rows when its condition on ``n = K``
holds (see :func:`min_inputs`). Pairwise distances are computed in float64 on
median-centred rows (Gram-matrix form), and aggregates come back in the stack's
dtype. Rows must be finite: reject bad updates first (:mod:`fedlearn.server.checks`).
Each rule is one entry of :data:`AGGREGATION_RULES` (``--gar``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UsageError
from ..registry import FEDERATED_SCRIPTS, Entry, Flag, Flags, Registry, require
from .geomedian import Weiszfeld, check_stack, check_weights, weiszfeld


@dataclass(frozen=True)
class RuleConfig:
    """A rule and its parameters: ``f`` tolerated Byzantine rows, ``trim`` values dropped per side
    (default ``f``), Multi-Krum's ``multikrum_m`` (default ``n - f``), the geometric median's Weiszfeld
    iterations (``gm_eps`` is no longer used, the exact step on a data point replaced the smoothing; kept so that
    existing configurations still build)."""

    name: str = "mean"
    f: int = 0
    trim: int | None = None
    multikrum_m: int | None = None
    gm_iters: int = 100
    gm_eps: float = 1e-6


@dataclass(frozen=True)
class Aggregate:
    """The aggregated vector and, for selection rules, the picked row indices (ascending); else None."""

    vector: torch.Tensor
    selected: tuple[int, ...] | None
    solver: Weiszfeld | None = None  # how an iterative rule found its vector (geomedian)


def coordinate_median(stack: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median; for an even number of rows, the mean of the two middle values."""
    check_stack(stack)
    n = stack.shape[0]
    if n < 1:
        raise ValueError("median of an empty stack")
    ordered = stack.sort(dim=0).values
    if n % 2:
        return ordered[n // 2].clone()
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def trimmed_mean(stack: torch.Tensor, trim: int) -> torch.Tensor:
    """Coordinate-wise mean after dropping the ``trim`` lowest and ``trim`` highest values of each coordinate."""
    check_stack(stack)
    check_condition(RuleConfig("trimmed-mean", trim=trim), stack.shape[0])
    n = stack.shape[0]
    return stack.sort(dim=0).values[trim : n - trim].mean(dim=0)


def _pairwise_sq_dists(stack: torch.Tensor) -> torch.Tensor:
    """``(K, K)`` float64 squared Euclidean distances, zero diagonal.

    Gram form on rows centred at their coordinate-wise (lower) median: a data value, so the
    centring is exact for float32 input, cancels any large common offset, and keeps exact ties.
    """
    x = stack.to(torch.float64)
    x = x - x.median(dim=0, keepdim=True).values
    sq = (x * x).sum(dim=1)
    dist = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.T)
    dist = ((dist + dist.T) / 2).clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist


def _scores_from_dists(dist: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Each row's sum of squared distances to its ``neighbours`` nearest other rows."""
    others = dist + torch.diag(torch.full((dist.shape[0],), float("inf"), dtype=dist.dtype, device=dist.device))
    return others.sort(dim=1).values[:, :neighbours].sum(dim=1)


def krum_scores(stack: torch.Tensor, f: int) -> torch.Tensor:
    """Krum scores (float64): for each row, the sum of squared distances to its ``n - f - 2`` nearest other rows."""
    check_stack(stack)
    n = stack.shape[0]
    if f < 0 or n - f - 2 < 1:
        raise ValueError(f"krum scores need f >= 0 and n - f - 2 >= 1 (n={n}, f={f})")
    return _scores_from_dists(_pairwise_sq_dists(stack), n - f - 2)


def krum(stack: torch.Tensor, f: int) -> int:
    """Krum (Blanchard et al. 2017): the index of the row with the lowest score (ties: lowest index)."""
    check_stack(stack)
    check_condition(RuleConfig("krum", f=f), stack.shape[0])
    return int(torch.argmin(krum_scores(stack, f)))


def multi_krum(stack: torch.Tensor, f: int, m: int | None = None) -> list[int]:
    """Multi-Krum: the ``m`` rows (default ``n - f``) with the lowest Krum scores, best first (ties: lowest index)."""
    check_stack(stack)
    check_condition(RuleConfig("multi-krum", f=f, multikrum_m=m), stack.shape[0])
    n = stack.shape[0]
    m = n - f if m is None else m
    order = torch.sort(krum_scores(stack, f), stable=True).indices
    return [int(i) for i in order[:m]]


def bulyan(stack: torch.Tensor, f: int) -> tuple[torch.Tensor, list[int]]:
    """Bulyan (El Mhamdi et al. 2018) over Krum: the aggregate and the selected rows in selection order.

    Selects ``theta = n - 2f`` rows one at a time, each the Krum choice among the rows not yet
    taken (scores recomputed on that shrinking set); then, per coordinate, averages the
    ``beta = theta - 2f`` selected values closest to the selected rows' coordinate-wise median.
    As the candidate set shrinks below ``f + 3`` rows, Krum's neighbour count ``r - f - 2`` is
    clamped to at least 1 (and a single remaining row is taken as is).
    """
    check_stack(stack)
    n = stack.shape[0]
    check_condition(RuleConfig("bulyan", f=f), n)
    theta = n - 2 * f
    beta = theta - 2 * f
    dist = _pairwise_sq_dists(stack)
    remaining = list(range(n))
    chosen: list[int] = []
    for _ in range(theta):
        r = len(remaining)
        if r == 1:
            pick = remaining[0]
        else:
            idx = torch.tensor(remaining, device=dist.device)
            scores = _scores_from_dists(dist[idx][:, idx], min(max(r - f - 2, 1), r - 1))
            pick = remaining[int(torch.argmin(scores))]
        chosen.append(pick)
        remaining.remove(pick)
    selected = stack[torch.tensor(chosen, device=stack.device)]
    gap = (selected - coordinate_median(selected)).abs()
    closest = gap.argsort(dim=0, stable=True)[:beta]
    return selected.gather(0, closest).mean(dim=0), chosen


def _geomedian(stack: torch.Tensor, weights: torch.Tensor, config: RuleConfig) -> Aggregate:
    found = weiszfeld(stack, weights, config.gm_iters)
    return Aggregate(found.point, None, found)


def weighted_average(stack: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k (w_k / sum_j w_j) * stack[k]`` for a ``(K, D)`` stack and ``K`` non-negative weights
    (FedAvg's mean, with the clients' sample counts as weights)."""
    if stack.dim() != 2 or weights.shape != (stack.shape[0],):
        raise ValueError(f"expected a (K, D) stack and K weights, got {tuple(stack.shape)} and {tuple(weights.shape)}")
    weights = weights.to(dtype=stack.dtype, device=stack.device)
    total = weights.sum()
    if not total > 0:
        raise ValueError("weights must have a positive sum")
    return (weights / total) @ stack


@dataclass(frozen=True)
class Rule:
    """One aggregation rule: the fewest rows it needs, why it cannot run on ``n`` rows (None: it can),
    and how it combines a ``(K, D)`` stack with per-row weights."""

    min_inputs: Callable[[RuleConfig], int]
    problem: Callable[[RuleConfig, int], str | None]
    combine: Callable[[torch.Tensor, torch.Tensor, RuleConfig], Aggregate]
    selects: bool = False  # picks rows (its Aggregate names them)


def _at_least(
    name: str, need: Callable[[RuleConfig], int], condition: str, shown: str = "f"
) -> Callable[[RuleConfig, int], str | None]:
    """A condition ``n >= need(config)``, stated as ``condition`` (e.g. ``n > 2f``) with n and ``shown``."""

    def problem(config: RuleConfig, n: int) -> str | None:
        if n >= need(config):
            return None
        extra = {"f": f", f={config.f}", "trim": f", trim={_trim_of(config)}", "n": ""}[shown]
        return f"{name} needs {condition} (n={n}{extra})"

    return problem


def _trim_of(config: RuleConfig) -> int:
    return config.f if config.trim is None else config.trim


def _multikrum_m(config: RuleConfig, n: int) -> int:
    return n - config.f if config.multikrum_m is None else config.multikrum_m


def _multikrum_min(config: RuleConfig) -> int:
    if config.multikrum_m is not None and config.multikrum_m < 1:
        raise ValueError(f"multi-krum needs m >= 1 (m={config.multikrum_m})")
    return 2 * config.f + 3 if config.multikrum_m is None else max(2 * config.f + 3, config.multikrum_m + config.f)


def _multikrum_problem(config: RuleConfig, n: int) -> str | None:
    if n < 2 * config.f + 3:
        return f"multi-krum needs n >= 2f + 3 (n={n}, f={config.f})"
    m = _multikrum_m(config, n)
    return None if 1 <= m <= n - config.f else f"multi-krum needs 1 <= m <= n - f (n={n}, f={config.f}, m={m})"


def _krum_combine(stack: torch.Tensor, weights: torch.Tensor, config: RuleConfig) -> Aggregate:
    pick = krum(stack, config.f)
    return Aggregate(stack[pick].clone(), (pick,))


def _multikrum_combine(stack: torch.Tensor, weights: torch.Tensor, config: RuleConfig) -> Aggregate:
    picks = sorted(multi_krum(stack, config.f, config.multikrum_m))
    idx = torch.tensor(picks, device=stack.device)
    return Aggregate(weighted_average(stack[idx], weights.to(stack.device)[idx]), tuple(picks))


def _bulyan_combine(stack: torch.Tensor, weights: torch.Tensor, config: RuleConfig) -> Aggregate:
    vector, picks = bulyan(stack, config.f)
    return Aggregate(vector, tuple(sorted(picks)))


def _two_f_plus_1(config: RuleConfig) -> int:
    return 2 * config.f + 1


_RULES: dict[str, Rule] = {
    "mean": Rule(lambda c: 1, _at_least("mean", lambda c: 1, "n >= 1", "n"),
                 lambda s, w, c: Aggregate(weighted_average(s, w), None)),
    "median": Rule(_two_f_plus_1, _at_least("median", _two_f_plus_1, "n > 2f"),
                   lambda s, w, c: Aggregate(coordinate_median(s), None)),
    "trimmed-mean": Rule(lambda c: 2 * _trim_of(c) + 1,
                         _at_least("trimmed-mean", lambda c: 2 * _trim_of(c) + 1, "n > 2 * trim", "trim"),
                         lambda s, w, c: Aggregate(trimmed_mean(s, _trim_of(c)), None)),
    "krum": Rule(lambda c: 2 * c.f + 3, _at_least("krum", lambda c: 2 * c.f + 3, "n >= 2f + 3"), _krum_combine, True),
    "multi-krum": Rule(_multikrum_min, _multikrum_problem, _multikrum_combine, True),
    "bulyan": Rule(lambda c: 4 * c.f + 3, _at_least("bulyan", lambda c: 4 * c.f + 3, "n >= 4f + 3"),
                   _bulyan_combine, True),
    "geomedian": Rule(_two_f_plus_1, _at_least("geomedian", _two_f_plus_1, "n > 2f"),
                      _geomedian),
}  # fmt: skip


def rule_config(flags: Flags) -> RuleConfig:
    """The rule the flags ask for."""
    return RuleConfig(flags.gar, flags.gar_f, flags.trim, flags.multikrum_m, flags.gm_iters)


def check_rule_on(flags: Flags, n: int, where: str) -> None:
    """UsageError unless the rule the flags ask for can run on ``n`` updates (``where``: the flag that sets n)."""
    rule = rule_config(flags)
    try:
        check_condition(rule, n)
    except ValueError as exc:
        need = min_inputs(rule)
        hint = f"; {where} must be at least {need}" if n < need else ""
        raise UsageError(f"--gar {flags.gar}: {exc} (n is {where}){hint}") from None


def _check_rule(flags: Flags, script: str) -> None:
    """f and trim are counts; the rule's condition on a round's updates (run_async's algorithms check their
    own batches)."""
    require(flags.gar_f >= 0, f"--gar_f must be >= 0, got {flags.gar_f}")
    if flags.trim is not None:
        require(flags.trim >= 0, f"--trim must be >= 0, got {flags.trim}")
    if script != "run_async":
        check_rule_on(flags, flags.num_select_clients, "--num_select_clients")


def _rule_flag(name: str, default: Any, help: str, **options: Any) -> Flag:
    return Flag(name, default, int, group="byzantine", federated=True, help=help, **options)


AGGREGATION_RULES = Registry.of(
    "aggregation rules",
    Flag("gar", "mean", str, group="byzantine", federated=True,
         help="aggregation rule over a round's updates (run_async: over the FedBuff buffer): mean (FedAvg); "
              "coordinate-wise median; trimmed-mean (--trim per side); krum (n >= 2f+3); multi-krum (--multikrum_m); "
              "bulyan (n >= 4f+3); geomedian (Weiszfeld, --gm_iters)"),
    [
        Entry("mean", _RULES["mean"], "FedAvg's weighted mean"),
        Entry("median", _RULES["median"], "coordinate-wise median", uses=("gar_f",)),
        Entry("trimmed-mean", _RULES["trimmed-mean"], "coordinate-wise trimmed mean", uses=("gar_f",),
              flags=(_rule_flag("trim", None, "values trimmed per side by trimmed-mean (default f)"),)),
        Entry("krum", _RULES["krum"], "Krum", uses=("gar_f",)),
        Entry("multi-krum", _RULES["multi-krum"], "Multi-Krum", uses=("gar_f",),
              flags=(_rule_flag("multikrum_m", None, "updates multi-krum averages (default n - f)", count=True),)),
        Entry("bulyan", _RULES["bulyan"], "Bulyan", uses=("gar_f",)),
        Entry("geomedian", _RULES["geomedian"], "geometric median", uses=("gar_f",),
              flags=(_rule_flag("gm_iters", 100, "most Weiszfeld iterations of geomedian", count=True),)),
    ],
    flags=(_rule_flag("gar_f", None, "f the rule assumes (default --byzantine)", headline=False,
                      derive=lambda flags, script: flags.byzantine),),
    check=_check_rule,
    off="mean",
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""Every aggregation rule by name (``--gar``): adding one is a function (or three) and one entry here."""
RULES = tuple(AGGREGATION_RULES)
SELECTION_RULES = tuple(name for name, entry in AGGREGATION_RULES.entries.items() if entry.part.selects)


def _rule(config: RuleConfig) -> Rule:
    """The registered rule ``config`` names, after the checks every rule shares."""
    if config.name not in AGGREGATION_RULES:
        raise ValueError(f"unknown rule {config.name!r}; choose from {', '.join(AGGREGATION_RULES)}")
    if config.f < 0:
        raise ValueError(f"f must be >= 0 (f={config.f})")
    if config.name == "trimmed-mean" and _trim_of(config) < 0:
        raise ValueError(f"trim must be >= 0 (trim={config.trim})")
    if config.name == "geomedian" and (config.gm_iters < 1 or not config.gm_eps > 0):
        raise ValueError(f"geomedian needs gm_iters >= 1 and gm_eps > 0 (gm_iters={config.gm_iters}, "
                         f"gm_eps={config.gm_eps})")  # fmt: skip
    return AGGREGATION_RULES[config.name].part


def min_inputs(config: RuleConfig) -> int:
    """The smallest number of rows ``n`` for which ``config``'s condition holds."""
    return _rule(config).min_inputs(config)


def check_condition(config: RuleConfig, n: int) -> None:
    """Raise ValueError (naming the condition and the numbers) unless ``config`` can run on ``n`` rows."""
    problem = _rule(config).problem(config, n)
    if problem is not None:
        raise ValueError(problem)


def aggregate(stack: torch.Tensor, weights: torch.Tensor, config: RuleConfig) -> Aggregate:
    """Apply ``config``'s rule to a ``(K, D)`` stack; ``weights`` (e.g. sample counts) are used by
    mean, multi-krum (restricted to the selected rows) and geomedian, ignored by the others."""
    check_stack(stack)
    n = stack.shape[0]
    check_condition(config, n)
    check_weights(weights, n)
    if not bool(torch.isfinite(stack).all()):
        raise ValueError("stack has non-finite values; reject such updates first")
    return AGGREGATION_RULES[config.name].part.combine(stack, weights, config)
