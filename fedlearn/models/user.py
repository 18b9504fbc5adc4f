"""A user's model: ``--model MODULE:FUNCTION`` or ``--model path/to/file.py:FUNCTION`` (or, from Python, a callable
given to :func:`fedlearn.run`), called as ``FUNCTION(input_shape=..., num_classes=...)`` and returning a
``torch.nn.Module`` that maps a batch to logits. Every process of a run builds it the same way from its name."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from torch import nn

from ..core.usercode import SPEC_FORMS, call, load_function, names_a_function
from ..errors import UsageError
from ..registry import Entry, Registry
from .info import ModelInfo

FLAG = "--model"


def _build(factory: Callable[..., Any], spec: str, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    model = call(factory, FLAG, spec, input_shape=tuple(input_shape), num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise UsageError(f"{FLAG} {spec}: returned {type(model).__name__}, not a torch.nn.Module")
    return model


def entry_for(spec: str, factory: Callable[..., Any]) -> Entry:
    """The model entry of a user's ``factory``, named ``spec``."""
    return Entry(
        spec,
        partial(_build, factory, spec),
        "your model",
        info=ModelInfo(None, takes_input_shape=True, input_dtype=None),
    )


def resolve(spec: str) -> Entry | None:
    """The entry of the user's model ``spec`` names (None: ``spec`` names no function)."""
    return entry_for(spec, load_function(spec, FLAG)) if names_a_function(spec) else None


def name_of(factory: Callable[..., Any]) -> str:
    """The name a callable runs under: ``MODULE:QUALNAME`` when that name finds it again (so worker processes
    can build it too), else ``python:QUALNAME``, known to this process alone."""
    spec = f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', '?')}"
    with contextlib.suppress(UsageError):
        if "<" not in spec and load_function(spec, FLAG) is factory:
            return spec
    return f"python:{getattr(factory, '__qualname__', 'model')}"


@contextlib.contextmanager
def given(models: Registry, factory: Callable[..., Any]) -> Iterator[str]:
    """``factory`` (a user's callable) as a model for the duration of a ``with`` block; yields its name."""
    if not callable(factory):
        raise UsageError(f"model: expected a callable (input_shape=..., num_classes=...) -> nn.Module or {SPEC_FORMS}")
    spec = name_of(factory)
    if spec in models.entries:  # the same callable given again
        yield spec
        return
    with models.registered(entry_for(spec, factory)):
        yield spec
