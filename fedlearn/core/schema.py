"""Small, composable checks of untrusted nested data (results files, checkpoints); torch only for tensors.

A check is a function ``check(value, where)`` that raises :class:`SchemaError`
with a message naming the place and what was expected, e.g.
``history[1].test_accuracy is the string '0.5', expected a number from 0 to 1``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

Check = Callable[[Any, str], None]


class SchemaError(ValueError):
    """A value that does not fit its schema; the message names where it is."""


def describe(value: Any) -> str:
    """A value as an error message shows it: short numbers and strings as such, others by their kind."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return json.dumps(value)  # null, true, false, NaN, Infinity
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 24 else f"a {len(text)}-digit number"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 24 else "a string"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    if type(value).__name__ == "Tensor":
        return f"a tensor of shape {tuple(value.shape)}"
    return "an object" if isinstance(value, dict) else f"a {type(value).__name__}"


def fail(where: str, message: str) -> None:
    """Raise the error for ``where`` (the top level when empty)."""
    raise SchemaError(f"{where or 'the top level'} {message}")


def leaf(expected: str, accepts: Callable[[Any], bool]) -> Check:
    """A value ``accepts`` says yes to; ``expected`` names it in the message."""

    def check(value: Any, where: str) -> None:
        if not accepts(value):
            fail(where, f"is {describe(value)}, expected {expected}")

    return check


def number(
    low: float | None = None, high: float | None = None, *, integer: bool = False, null: bool = False, nan: bool = False
) -> Check:
    """A number (not a bool; an int if ``integer``) in ``[low, high]``, never infinite; NaN if ``nan``; None if
    ``null``."""

    def accepts(value: Any) -> bool:
        if value is None:
            return null
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return False
        if isinstance(value, float) and math.isnan(value):
            return nan
        return -math.inf < value < math.inf and (low is None or value >= low) and (high is None or value <= high)

    bounds = f" from {low:g} to {high:g}" if low is not None and high is not None else ""
    bounds = bounds or (f" >= {low:g}" if low is not None else f" <= {high:g}" if high is not None else "")
    return leaf(("an integer" if integer else "a number") + bounds + (" or null" if null else ""), accepts)


def integer(low: int | None = 0, high: int | None = None, null: bool = False) -> Check:
    """An int (not a bool) in ``[low, high]`` (default: not negative)."""
    return number(low, high, integer=True, null=null)


def text(null: bool = False) -> Check:
    """A string (or None if ``null``)."""
    return leaf("a string" + (" or null" if null else ""), lambda v: isinstance(v, str) or (null and v is None))


def one_of(values: Iterable[Any]) -> Check:
    """One of ``values``."""
    allowed = list(values)
    return leaf(f"one of {', '.join(map(str, allowed))}", lambda v: isinstance(v, (str, int)) and v in allowed)


def vector(size: int, low: float | None = None) -> Check:
    """A dense, finite, floating-point tensor of shape ``(size,)`` (with ``low``: no entry below it)."""
    import torch  # here: results files are checked without loading torch

    def check(value: Any, where: str) -> None:
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided or not value.is_floating_point():
            fail(where, f"is {describe(value)}, expected a dense floating-point tensor")
        if tuple(value.shape) != (size,):
            fail(where, f"has shape {tuple(value.shape)}, expected ({size},) for this model")
        if not bool(torch.isfinite(value).all()):
            fail(where, "holds NaN or infinite values")
        if low is not None and bool((value < low).any()):
            fail(where, f"holds values below {low:g}")

    return check


def list_of(item: Check, min_len: int = 0, max_len: int | None = None) -> Check:
    """A list (or tuple) of ``min_len`` to ``max_len`` elements, each accepted by ``item``."""
    shape = leaf(
        "a non-empty list" if min_len else "a list", lambda v: isinstance(v, (list, tuple)) and len(v) >= min_len
    )

    def check(value: Any, where: str) -> None:
        shape(value, where)
        if max_len is not None and len(value) > max_len:
            fail(where, f"has {len(value)} entries, at most {max_len} possible")
        for i, element in enumerate(value):
            item(element, f"{where}[{i}]")

    return check


def dict_of(item: Check) -> Check:
    """An object with string keys whose every value ``item`` accepts."""
    shape = leaf("an object", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v))

    def check(value: Any, where: str) -> None:
        shape(value, where)
        for key, element in value.items():
            item(element, field(where, key))

    return check


def record(
    required: dict[str, Check],
    optional: dict[str, Check] | None = None,
    *,
    null: bool = False,
    same_length: tuple[str, ...] = (),
) -> Check:
    """An object holding every ``required`` key, and maybe the ``optional`` ones, each accepted by its check
    (other keys are not looked at); the keys in ``same_length`` hold lists of one length; None if ``null``."""
    shape = leaf("an object" + (" or null" if null else ""), lambda v: isinstance(v, dict) or (null and v is None))

    def check(value: Any, where: str) -> None:
        shape(value, where)
        if value is None:
            return
        for key, inner in required.items():
            if key not in value:
                fail(field(where, key), "is missing")
            inner(value[key], field(where, key))
        for key, inner in (optional or {}).items():
            if key in value:
                inner(value[key], field(where, key))
        if len({len(value[key]) for key in same_length}) > 1:
            fail(where, f"has lists {', '.join(same_length)} of different lengths")

    return check


def field(where: str, key: str) -> str:
    """The name of ``key`` inside ``where``: ``final.test_loss``, ``run['test set fingerprint']``."""
    if not where:
        return key
    return f"{where}.{key}" if key.isidentifier() else f"{where}[{key!r}]"
