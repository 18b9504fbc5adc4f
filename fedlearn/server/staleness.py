"""Staleness functions S(s) of FedAsync (Xie, Koyejo, Gupta 2019), also used to scale FedBuff deltas.

``s = t - tau``: how many model versions the server moved on while the client trained.
"""

from __future__ import annotations

STALENESS_FUNCTIONS = ("constant", "polynomial", "hinge")

# Paper defaults (Xie et al. 2019, Sec. 6): Poly a = 0.5; Hinge a = 10, b = 4.
DEFAULT_A = {"constant": 0.0, "polynomial": 0.5, "hinge": 10.0}
DEFAULT_B = 4


def staleness_weight(kind: str, s: int, a: float, b: float) -> float:
    """S(s): constant 1; polynomial (s + 1)^-a; hinge 1 if s <= b else 1 / (a (s - b) + 1)."""
    if s < 0:
        raise ValueError(f"staleness cannot be negative, got {s}")
    if kind == "constant":
        return 1.0
    if kind == "polynomial":
        return float((s + 1) ** -a)
    if kind == "hinge":
        return 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)
    raise ValueError(f"unknown staleness function {kind!r}; choose from {', '.join(STALENESS_FUNCTIONS)}")
