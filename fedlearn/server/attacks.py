"""Byzantine attacks: which clients misbehave, and what their updates become.

An update (delta) is a client's weights minus the weights it started from.
:func:`corrupt` rewrites the Byzantine rows of one aggregation batch; label
flipping instead acts at training time through :func:`flip_labels`.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from fedlearn.core import seeding

ATTACKS = ("none", "signflip", "gaussian", "labelflip", "alie", "ipm")
NEEDS_HONEST = frozenset({"alie", "ipm"})  # omniscient: these see the honest updates of the batch
DEFAULT_SCALE = {"signflip": 4.0, "gaussian": 1.0, "ipm": 0.5}


def choose_byzantine(seed: int, num_clients: int, f: int) -> tuple[int, ...]:
    """The ``f`` Byzantine client ids (sorted, distinct), fixed by ``seed``."""
    if not 0 <= f <= num_clients:
        raise ValueError(f"need 0 <= f <= num_clients (f={f}, num_clients={num_clients})")
    rng = seeding.numpy_rng(seed, seeding.BYZANTINE)
    return tuple(sorted(int(i) for i in rng.choice(num_clients, size=f, replace=False)))


def alie_z(n: int, f: int) -> float:
    """ALIE's deviation (Baruch et al. 2019): ``z = Phi^-1((n - s) / n)`` with ``s = floor(n/2 + 1) - f``.

    Where that probability leaves (0, 1) (``s <= 0``: a Byzantine majority; ``s >= n``: tiny
    ``n``) it is clamped into ``[1/(2n), 1 - 1/(2n)]``, just beyond the values reachable
    inside, so ``z`` stays finite and non-decreasing in ``f`` (``n = 1`` gives 0).
    """
    if n < 1 or not 0 <= f <= n:
        raise ValueError(f"need n >= 1 and 0 <= f <= n (n={n}, f={f})")
    s = math.floor(n / 2 + 1) - f
    p = min(max((n - s) / n, 1 / (2 * n)), 1 - 1 / (2 * n))
    return NormalDist().inv_cdf(p)


def _scale(attack: str, scale: float | None) -> float:
    value = DEFAULT_SCALE[attack] if scale is None else float(scale)
    if attack == "gaussian" and value < 0:
        raise ValueError(f"gaussian needs scale (sigma) >= 0, got {scale}")
    return value


def corrupt(
    attack: str,
    deltas: torch.Tensor,
    byzantine: torch.Tensor,
    *,
    scale: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A new ``(K, D)`` stack whose Byzantine rows (``byzantine``: a ``(K,)`` bool mask) are replaced.

    signflip: ``-c * own delta`` (``c = scale``, default 4). gaussian: i.i.d. ``N(0, sigma^2)``
    from ``generator`` (``sigma = scale``, default 1). labelflip: unchanged (acts at training
    time). alie: ``mu + z * sigma`` per coordinate, from the honest rows' mean and population std
    (``z = scale``, default ``alie_z(K, #Byzantine)``). ipm: ``-eps * honest mean`` (``eps =
    scale``, default 0.5). If every row is Byzantine, alie and ipm use the statistics of the
    Byzantine rows' own honestly computed deltas. Honest rows and ``deltas`` are left unchanged.
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {', '.join(ATTACKS)}")
    if deltas.dim() != 2 or not deltas.is_floating_point():
        raise ValueError(f"expected a floating (K, D) stack, got {deltas.dtype} of shape {tuple(deltas.shape)}")
    if byzantine.shape != (deltas.shape[0],) or byzantine.dtype != torch.bool:
        raise ValueError(f"expected a ({deltas.shape[0]},) bool mask, got {byzantine.dtype} {tuple(byzantine.shape)}")
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    out = deltas.clone()
    mask = byzantine.to(deltas.device)
    bad = int(mask.sum())
    if attack in ("none", "labelflip") or bad == 0:
        return out
    if attack == "signflip":
        out[mask] = -_scale(attack, scale) * deltas[mask]
    elif attack == "gaussian":
        noise = torch.randn((bad, deltas.shape[1]), generator=generator, dtype=deltas.dtype)
        out[mask] = _scale(attack, scale) * noise.to(deltas.device)
    else:
        reference = deltas[~mask] if bad < deltas.shape[0] else deltas
        mu = reference.mean(dim=0)
        if attack == "ipm":
            out[mask] = -_scale(attack, scale) * mu
        else:  # alie
            z = alie_z(deltas.shape[0], bad) if scale is None else float(scale)
            out[mask] = mu + z * reference.std(dim=0, correction=0)
    return out


def flip_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label flipping: ``y -> num_classes - 1 - y`` (a new tensor)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return num_classes - 1 - labels
