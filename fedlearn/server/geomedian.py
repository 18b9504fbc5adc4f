"""The weighted geometric median, exactly: an optimal data point is found by its optimality condition, otherwise
Weiszfeld's iteration runs until the point meets a tolerance (``--gm_iters`` caps it); every aggregation reports its
iterations and whether it converged."""

from __future__ import annotations

from dataclasses import dataclass

import torch

GM_TOL = 1e-10  # Weiszfeld stops once a step is below GM_TOL * (1 + |z|)


def check_stack(stack: torch.Tensor) -> None:
    """A floating ``(K, D)`` stack, or ValueError."""
    if stack.dim() != 2 or not stack.is_floating_point():
        raise ValueError(f"expected a floating (K, D) stack, got {stack.dtype} of shape {tuple(stack.shape)}")


def check_weights(weights: torch.Tensor, n: int) -> None:
    """``n`` finite, non-negative weights, or ValueError."""
    if weights.shape != (n,):
        raise ValueError(f"expected {n} weights, got shape {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("weights must be finite and non-negative")


@dataclass(frozen=True)
class Weiszfeld:
    """A geometric median and how it was found: the Weiszfeld ``iterations`` taken, and whether the point met the
    tolerance (``converged``; an optimum on a data point is exact, found in 0 iterations)."""

    point: torch.Tensor
    iterations: int
    converged: bool


def optimal_data_point(x: torch.Tensor, w: torch.Tensor) -> int | None:
    """The data point that is the weighted geometric median, if one is: ``x_k`` is optimal iff
    ``|| sum_{j != k} w_j (x_j - x_k) / ||x_j - x_k|| || <= w_k`` (points equal to ``x_k`` count in ``w_k``)."""
    distances = torch.cdist(x, x)
    for k in range(x.shape[0]):
        same = distances[k] == 0
        pull = ((w * ~same / distances[k].clamp(min=1e-300)).unsqueeze(1) * (x - x[k])).sum(dim=0)
        if float(torch.linalg.vector_norm(pull)) <= float(w[same].sum()) * (1 + 1e-12):
            return k
    return None


def weiszfeld(stack: torch.Tensor, weights: torch.Tensor, iters: int = 100, tol: float = GM_TOL) -> Weiszfeld:
    """Weighted geometric median (in float64). A data point that satisfies the optimality condition is returned
    exactly; otherwise the median lies off the data points and Weiszfeld's iteration, from the weighted mean,
    converges to it: it stops once a step is below ``tol * (1 + |z|)``, or after ``iters`` steps (not converged).
    An iterate that lands on a data point steps off it as Vardi and Zhang (2000) do."""
    check_stack(stack)
    check_weights(weights, stack.shape[0])
    if iters < 1:
        raise ValueError(f"need iters >= 1 (iters={iters})")
    x = stack.to(torch.float64)
    w = weights.to(dtype=torch.float64, device=stack.device)
    if not w.sum() > 0:
        raise ValueError("weights must have a positive sum")
    on_point = optimal_data_point(x, w)
    if on_point is not None:
        return Weiszfeld(stack[on_point].clone(), 0, True)
    z = (w / w.sum()) @ x
    for step in range(1, iters + 1):
        z_next = _weiszfeld_step(x, w, z)
        moved = float(torch.linalg.vector_norm(z_next - z))
        z = z_next
        if moved <= tol * (1.0 + float(torch.linalg.vector_norm(z))):
            return Weiszfeld(z.to(stack.dtype), step, True)
    return Weiszfeld(z.to(stack.dtype), iters, False)


def _weiszfeld_step(x: torch.Tensor, w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One Weiszfeld step from ``z``; from a data point, Vardi and Zhang's modified step."""
    distances = torch.linalg.vector_norm(x - z, dim=1)
    here = distances == 0
    beta = w * ~here / distances.clamp(min=1e-300)
    t = (beta / beta.sum()) @ x
    if not bool(here.any()):
        return t
    pull = float(torch.linalg.vector_norm((beta.unsqueeze(1) * (x - z)).sum(dim=0)))
    share = min(1.0, float(w[here].sum()) / pull) if pull > 0 else 1.0
    return (1 - share) * t + share * z


def geometric_median(stack: torch.Tensor, weights: torch.Tensor, iters: int = 100, tol: float = GM_TOL) -> torch.Tensor:
    """Weighted geometric median: :func:`weiszfeld`'s point."""
    return weiszfeld(stack, weights, iters, tol).point
