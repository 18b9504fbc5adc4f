"""Staleness functions S(s) of FedAsync (Xie, Koyejo, Gupta 2019), also used to scale FedBuff deltas.

``s = t - tau``: how many model versions the server moved on while the client trained.
"""

from __future__ import annotations

from ..registry import Entry, Flag, Range, Registry

DEFAULT_B = 4


def _hinge(s: int, a: float, b: float) -> float:
    return 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)


STALENESS = Registry.of(
    "staleness functions",
    Flag("staleness", "polynomial", str, group="async", scripts=("run_async",),
         help="S(s): constant 1, polynomial (s+1)^-a, hinge; scales FedAsync's alpha and FedBuff's deltas "
              "(polynomial with a=0.5 is FedBuff's 1/sqrt(1+s))"),
    [
        Entry("constant", lambda s, a, b: 1.0, "S = 1", info=0.0),
        Entry("polynomial", lambda s, a, b: float((s + 1) ** -a), "S = (s + 1)^-a", uses=("staleness_a",), info=0.5),
        Entry("hinge", _hinge, "S = 1 up to b, then 1 / (a (s - b) + 1)", uses=("staleness_a",), info=10.0, flags=(
            Flag("staleness_b", DEFAULT_B, float, group="async", scripts=("run_async",), valid=Range(0, 1e9),
                 help="b of hinge S(s) (Xie et al. 2019)"),)),
    ],
    flags=(Flag("staleness_a", None, float, group="async", scripts=("run_async",), valid=Range(0, 100),
                headline=False, derive=lambda flags, script: STALENESS[flags.staleness].info,
                help="a of S(s); default from Xie et al. 2019: 0.5 for polynomial, 10 for hinge"),),
    scripts=("run_async",),
)  # fmt: skip
"""Every staleness function by name (``--staleness``): an entry's part is S(s, a, b), its info the paper's
default a (Xie et al. 2019, Sec. 6: polynomial a = 0.5; hinge a = 10, b = 4)."""


def staleness_weight(kind: str, s: int, a: float, b: float) -> float:
    """S(s): constant 1; polynomial (s + 1)^-a; hinge 1 if s <= b else 1 / (a (s - b) + 1)."""
    if s < 0:
        raise ValueError(f"staleness cannot be negative, got {s}")
    if kind not in STALENESS:
        raise ValueError(f"unknown staleness function {kind!r}; choose from {', '.join(STALENESS)}")
    return STALENESS[kind].part(s, a, b)
