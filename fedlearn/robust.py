"""Robust aggregation rules (GARs) over a ``(K, D)`` stack of flat update vectors.

Each rule tolerates up to ``f`` Byzantine rows when its condition on ``n = K``
holds (see :func:`min_inputs`). Pairwise distances are computed in float64 on
median-centred rows (Gram-matrix form), and aggregates come back in the stack's
dtype. Rows must be finite: reject bad updates first (see ``update_checks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedlearn.aggregation import weighted_average

RULES = ("mean", "median", "trimmed-mean", "krum", "multi-krum", "bulyan", "geomedian")
SELECTION_RULES = ("krum", "multi-krum", "bulyan")

GM_TOL = 1e-10  # Weiszfeld stops once a step is below GM_TOL * (1 + |z|)


@dataclass(frozen=True)
class RuleConfig:
    """A rule and its parameters: ``f`` tolerated Byzantine rows, ``trim`` values dropped per side
    (default ``f``), Multi-Krum's ``multikrum_m`` (default ``n - f``), Weiszfeld's iterations and smoothing."""

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


def _trim_of(config: RuleConfig) -> int:
    return config.f if config.trim is None else config.trim


def _check_config(config: RuleConfig) -> None:
    if config.name not in RULES:
        raise ValueError(f"unknown rule {config.name!r}; choose from {', '.join(RULES)}")
    if config.f < 0:
        raise ValueError(f"f must be >= 0 (f={config.f})")
    if config.name == "trimmed-mean" and _trim_of(config) < 0:
        raise ValueError(f"trim must be >= 0 (trim={config.trim})")
    if config.name == "geomedian":
        if config.gm_iters < 1:
            raise ValueError(f"gm_iters must be >= 1 (gm_iters={config.gm_iters})")
        if not config.gm_eps > 0:
            raise ValueError(f"gm_eps must be > 0 (gm_eps={config.gm_eps})")


def min_inputs(config: RuleConfig) -> int:
    """The smallest number of rows ``n`` for which ``config``'s condition holds."""
    _check_config(config)
    f = config.f
    name = config.name
    if name == "mean":
        return 1
    if name in ("median", "geomedian"):
        return 2 * f + 1
    if name == "trimmed-mean":
        return 2 * _trim_of(config) + 1
    if name == "krum":
        return 2 * f + 3
    if name == "multi-krum":
        m = config.multikrum_m
        if m is not None and m < 1:
            raise ValueError(f"multi-krum needs m >= 1 (m={m})")
        return 2 * f + 3 if m is None else max(2 * f + 3, m + f)
    return 4 * f + 3  # bulyan


def check_condition(config: RuleConfig, n: int) -> None:
    """Raise ValueError (naming the condition and the numbers) unless ``config`` can run on ``n`` rows."""
    _check_config(config)
    f = config.f
    name = config.name
    if name == "mean":
        if n < 1:
            raise ValueError(f"mean needs n >= 1 (n={n})")
    elif name in ("median", "geomedian"):
        if n <= 2 * f:
            raise ValueError(f"{name} needs n > 2f (n={n}, f={f})")
    elif name == "trimmed-mean":
        trim = _trim_of(config)
        if n <= 2 * trim:
            raise ValueError(f"trimmed-mean needs n > 2 * trim (n={n}, trim={trim})")
    elif name in ("krum", "multi-krum"):
        if n < 2 * f + 3:
            raise ValueError(f"{name} needs n >= 2f + 3 (n={n}, f={f})")
        if name == "multi-krum":
            m = n - f if config.multikrum_m is None else config.multikrum_m
            if not 1 <= m <= n - f:
                raise ValueError(f"multi-krum needs 1 <= m <= n - f (n={n}, f={f}, m={m})")
    elif n < 4 * f + 3:  # bulyan
        raise ValueError(f"bulyan needs n >= 4f + 3 (n={n}, f={f})")


def _check_stack(stack: torch.Tensor) -> None:
    if stack.dim() != 2 or not stack.is_floating_point():
        raise ValueError(f"expected a floating (K, D) stack, got {stack.dtype} of shape {tuple(stack.shape)}")


def _check_weights(weights: torch.Tensor, n: int) -> None:
    if weights.shape != (n,):
        raise ValueError(f"expected {n} weights, got shape {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("weights must be finite and non-negative")


def coordinate_median(stack: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median; for an even number of rows, the mean of the two middle values."""
    _check_stack(stack)
    n = stack.shape[0]
    if n < 1:
        raise ValueError("median of an empty stack")
    ordered = stack.sort(dim=0).values
    if n % 2:
        return ordered[n // 2].clone()
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def trimmed_mean(stack: torch.Tensor, trim: int) -> torch.Tensor:
    """Coordinate-wise mean after dropping the ``trim`` lowest and ``trim`` highest values of each coordinate."""
    _check_stack(stack)
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
    _check_stack(stack)
    n = stack.shape[0]
    if f < 0 or n - f - 2 < 1:
        raise ValueError(f"krum scores need f >= 0 and n - f - 2 >= 1 (n={n}, f={f})")
    return _scores_from_dists(_pairwise_sq_dists(stack), n - f - 2)


def krum(stack: torch.Tensor, f: int) -> int:
    """Krum (Blanchard et al. 2017): the index of the row with the lowest score (ties: lowest index)."""
    _check_stack(stack)
    check_condition(RuleConfig("krum", f=f), stack.shape[0])
    return int(torch.argmin(krum_scores(stack, f)))


def multi_krum(stack: torch.Tensor, f: int, m: int | None = None) -> list[int]:
    """Multi-Krum: the ``m`` rows (default ``n - f``) with the lowest Krum scores, best first (ties: lowest index)."""
    _check_stack(stack)
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
    _check_stack(stack)
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


def geometric_median(
    stack: torch.Tensor,
    weights: torch.Tensor,
    iters: int = 100,
    eps: float = 1e-6,
    *,
    tol: float = GM_TOL,
) -> torch.Tensor:
    """Weighted geometric median by Weiszfeld's algorithm (in float64), from the weighted mean.

    At most ``iters`` steps; distances are floored at ``eps`` so a data point never divides by
    zero; stops early once a step is below ``tol * (1 + |z|)``.
    """
    _check_stack(stack)
    _check_weights(weights, stack.shape[0])
    if iters < 1 or not eps > 0:
        raise ValueError(f"need iters >= 1 and eps > 0 (iters={iters}, eps={eps})")
    x = stack.to(torch.float64)
    w = weights.to(dtype=torch.float64, device=stack.device)
    if not w.sum() > 0:
        raise ValueError("weights must have a positive sum")
    z = (w / w.sum()) @ x
    for _ in range(iters):
        beta = w / torch.linalg.vector_norm(x - z, dim=1).clamp(min=eps)
        z_next = (beta / beta.sum()) @ x
        step = float(torch.linalg.vector_norm(z_next - z))
        z = z_next
        if step <= tol * (1.0 + float(torch.linalg.vector_norm(z))):
            break
    return z.to(stack.dtype)


def aggregate(stack: torch.Tensor, weights: torch.Tensor, config: RuleConfig) -> Aggregate:
    """Apply ``config``'s rule to a ``(K, D)`` stack; ``weights`` (e.g. sample counts) are used by
    mean, multi-krum (restricted to the selected rows) and geomedian, ignored by the others."""
    _check_stack(stack)
    n = stack.shape[0]
    check_condition(config, n)
    _check_weights(weights, n)
    if not bool(torch.isfinite(stack).all()):
        raise ValueError("stack has non-finite values; reject such updates first")
    name = config.name
    if name == "mean":
        return Aggregate(weighted_average(stack, weights), None)
    if name == "median":
        return Aggregate(coordinate_median(stack), None)
    if name == "trimmed-mean":
        return Aggregate(trimmed_mean(stack, _trim_of(config)), None)
    if name == "geomedian":
        return Aggregate(geometric_median(stack, weights, config.gm_iters, config.gm_eps), None)
    if name == "krum":
        pick = krum(stack, config.f)
        return Aggregate(stack[pick].clone(), (pick,))
    if name == "multi-krum":
        picks = sorted(multi_krum(stack, config.f, config.multikrum_m))
        idx = torch.tensor(picks, device=stack.device)
        return Aggregate(weighted_average(stack[idx], weights.to(stack.device)[idx]), tuple(picks))
    vector, picks = bulyan(stack, config.f)
    return Aggregate(vector, tuple(sorted(picks)))
