"""Byzantine attacks: which clients misbehave, and what their updates become.

An update (delta) is a client's weights minus the weights it started from.
:func:`corrupt` rewrites the Byzantine rows of one aggregation batch; label
flipping instead acts at training time through :func:`flip_labels`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch

from ..core import seeding
from ..registry import FEDERATED_SCRIPTS, Entry, Flag, Flags, Range, Registry, require


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


@dataclass(frozen=True)
class Attack:
    """What a Byzantine client does: ``rewrite(deltas, mask, scale, generator)`` gives the Byzantine rows of an
    aggregation batch (None: it leaves updates alone); ``default_scale`` its strength unless ``--attack_scale``
    says (None: derived from the batch); ``needs_honest``: it sees the honest updates of its batch (omniscient);
    ``flips_labels``: it acts at training time instead."""

    rewrite: Callable[[torch.Tensor, torch.Tensor, Any, Any], torch.Tensor] | None = None
    default_scale: float | None = None
    needs_honest: bool = False
    flips_labels: bool = False
    positive_scale: bool = True  # --attack_scale must be positive


def _signflip(deltas: torch.Tensor, mask: torch.Tensor, scale: float, generator: Any) -> torch.Tensor:
    return -scale * deltas[mask]


def _gaussian(deltas: torch.Tensor, mask: torch.Tensor, scale: float, generator: Any) -> torch.Tensor:
    if scale < 0:
        raise ValueError(f"gaussian needs scale (sigma) >= 0, got {scale}")
    noise = torch.randn((int(mask.sum()), deltas.shape[1]), generator=generator, dtype=deltas.dtype)
    return scale * noise.to(deltas.device)


def _honest(deltas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The honest rows (or, when every row is Byzantine, the Byzantine rows' own honestly computed deltas)."""
    return deltas[~mask] if int(mask.sum()) < deltas.shape[0] else deltas


def _ipm(deltas: torch.Tensor, mask: torch.Tensor, scale: float, generator: Any) -> torch.Tensor:
    return -scale * _honest(deltas, mask).mean(dim=0)


def _alie(deltas: torch.Tensor, mask: torch.Tensor, scale: float | None, generator: Any) -> torch.Tensor:
    reference = _honest(deltas, mask)
    z = alie_z(deltas.shape[0], int(mask.sum())) if scale is None else float(scale)
    return reference.mean(dim=0) + z * reference.std(dim=0, correction=0)


def _check_threat(flags: Flags, script: str) -> None:
    """The Byzantine count, and the attack's need of them and of a positive strength."""
    require(
        0 <= flags.byzantine < flags.num_clients,
        f"--byzantine must be between 0 and --num_clients - 1 ({flags.num_clients - 1}), got {flags.byzantine}",
    )
    # --byzantine F with --attack none: F clients are declared but behave (the attack-free reference)
    require(flags.attack == "none" or flags.byzantine > 0, f"--attack {flags.attack} needs --byzantine F with F >= 1")
    attack = ATTACK_KINDS[flags.attack].part
    if flags.attack_scale is not None and attack.rewrite is not None and attack.positive_scale:
        require(flags.attack_scale > 0, f"--attack_scale must be positive for {flags.attack}, got {flags.attack_scale}")


ATTACK_KINDS = Registry.of(
    "attacks",
    Flag("attack", "none", str, group="byzantine", federated=True,
         help="what the Byzantine clients do: signflip sends -c * update; gaussian sends N(0, sigma^2) noise; "
              "labelflip trains on labels y -> C-1-y; alie ('a little is enough', sees honest updates) sends "
              "mean + z * std of the honest updates per coordinate; ipm (inner-product manipulation, sees honest "
              "updates) sends -eps * their mean"),
    [
        Entry("none", Attack(), "honest"),
        Entry("signflip", Attack(_signflip, 4.0), "-c * own update"),
        Entry("gaussian", Attack(_gaussian, 1.0), "N(0, sigma^2) noise"),
        Entry("labelflip", Attack(flips_labels=True), "trains on flipped labels"),
        Entry("alie", Attack(_alie, None, needs_honest=True, positive_scale=False), "a little is enough"),
        Entry("ipm", Attack(_ipm, 0.5, needs_honest=True), "inner-product manipulation"),
    ],
    flags=(
        Flag("byzantine", 0, int, group="byzantine", federated=True, metavar="F",
             help="Byzantine clients, chosen by --seed, fixed for the run (with --attack none they behave)"),
        Flag("attack_scale", None, float, group="byzantine", federated=True, valid=Range(-1e6, 1e6),
             help="the attack's strength: c for signflip (default 4), sigma for gaussian (1), eps for ipm (0.5), "
                  "z for alie (default from n and f, Baruch et al. 2019)"),
    ),
    check=_check_threat,
    active=lambda flags, script: flags.byzantine > 0 or flags.attack != "none",
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""Every attack by name (``--attack``); adding one is a rewrite function and one entry here."""
ATTACKS = tuple(ATTACK_KINDS)
NEEDS_HONEST = frozenset(name for name, entry in ATTACK_KINDS.entries.items() if entry.part.needs_honest)
"""The built-in attacks that see the honest updates of their batch."""
DEFAULT_SCALE = {name: e.part.default_scale for name, e in ATTACK_KINDS.entries.items() if e.part.default_scale}
"""The built-in attacks' strengths when ``--attack_scale`` is not given (alie's comes from the batch)."""


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
    if attack not in ATTACK_KINDS:
        raise ValueError(f"unknown attack {attack!r}; choose from {', '.join(ATTACK_KINDS)}")
    if deltas.dim() != 2 or not deltas.is_floating_point():
        raise ValueError(f"expected a floating (K, D) stack, got {deltas.dtype} of shape {tuple(deltas.shape)}")
    if byzantine.shape != (deltas.shape[0],) or byzantine.dtype != torch.bool:
        raise ValueError(f"expected a ({deltas.shape[0]},) bool mask, got {byzantine.dtype} {tuple(byzantine.shape)}")
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    out = deltas.clone()
    mask = byzantine.to(deltas.device)
    kind = ATTACK_KINDS[attack].part
    if kind.rewrite is None or int(mask.sum()) == 0:
        return out
    out[mask] = kind.rewrite(deltas, mask, kind.default_scale if scale is None else float(scale), generator)
    return out


def flip_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label flipping: ``y -> num_classes - 1 - y`` (a new tensor)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return num_classes - 1 - labels
