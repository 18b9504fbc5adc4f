"""Small, composable checks of untrusted nested data (checkpoints): types, ranges, shapes, finiteness.

A check is a function ``check(value, where)`` that raises :class:`SchemaError`
naming the place (``server.buffer[2]``) and what is wrong with it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

Check = Callable[[Any, str], None]


class SchemaError(ValueError):
    """A value that does not fit its schema; the message names where it is."""


def _fail(where: str, what: str) -> None:
    raise SchemaError(f"{where or 'the top level'} {what}")


def integer(low: int = 0, high: int | None = None) -> Check:
    """An int (not a bool) in ``[low, high]``."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(where, f"is {type(value).__name__}, expected an integer")
        if value < low or (high is not None and value > high):
            _fail(where, f"is {value}, expected {low} to {high if high is not None else 'any'}")

    return check


def number(low: float = -math.inf, high: float = math.inf, allow_nan: bool = False) -> Check:
    """An int or float (not a bool) in ``[low, high]``; NaN only if ``allow_nan``; never infinite."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            _fail(where, f"is {type(value).__name__}, expected a number")
        if math.isnan(value):
            if not allow_nan:
                _fail(where, "is NaN")
            return
        if not (low <= value <= high) or math.isinf(value):
            _fail(where, f"is {value}, expected {low:g} to {high:g}")

    return check


def text() -> Check:
    """A string."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, str):
            _fail(where, f"is {type(value).__name__}, expected a string")

    return check


def equals(expected: Any) -> Check:
    """Exactly ``expected``."""

    def check(value: Any, where: str) -> None:
        if value != expected:
            _fail(where, f"is {value!r}, expected {expected!r}")

    return check


def optional(inner: Check) -> Check:
    """None, or what ``inner`` accepts."""
    return lambda value, where: None if value is None else inner(value, where)


def vector(size: int) -> Check:
    """A dense, finite, floating-point tensor of shape ``(size,)``."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided or not value.is_floating_point():
            _fail(where, "is not a dense floating-point tensor")
        if tuple(value.shape) != (size,):
            _fail(where, f"has shape {tuple(value.shape)}, expected ({size},) for this model")
        if not bool(torch.isfinite(value).all()):
            _fail(where, "holds NaN or infinite values")

    return check


def list_of(item: Check, max_len: int | None = None) -> Check:
    """A list (or tuple) whose every element ``item`` accepts, at most ``max_len`` long."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, (list, tuple)):
            _fail(where, f"is {type(value).__name__}, expected a list")
        if max_len is not None and len(value) > max_len:
            _fail(where, f"has {len(value)} entries, at most {max_len} possible")
        for i, element in enumerate(value):
            item(element, f"{where}[{i}]")

    return check


def dict_of(item: Check) -> Check:
    """A dict with string keys whose every value ``item`` accepts."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            _fail(where, f"is {type(value).__name__}, expected a mapping")
        for key, element in value.items():
            if not isinstance(key, str):
                _fail(where, f"has a key {key!r} that is not a string")
            item(element, f"{where}.{key}")

    return check


def record(fields: dict[str, Check], same_length: tuple[str, ...] = ()) -> Check:
    """A dict holding every key of ``fields`` (others may be there too), each accepted by its check;
    the keys in ``same_length`` hold lists of one length."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            _fail(where, f"is {type(value).__name__}, expected a mapping")
        for key, inner in fields.items():
            if key not in value:
                _fail(where, f"lacks '{key}'")
            inner(value[key], f"{where}.{key}" if where else key)
        lengths = {len(value[key]) for key in same_length}
        if len(lengths) > 1:
            _fail(where, f"has lists {', '.join(same_length)} of different lengths")

    return check
