"""SIGTERM ends a run like Ctrl-C: an exception that unwinds (temporary files removed), one line, exit 143.

Short critical sections (creating and discarding a temporary file) run under
:func:`deferred`: a signal arriving there takes effect when the section ends,
so no interruption can leave a stray file behind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

EXIT_TERMINATED = 128 + signal.SIGTERM
_HANDLED = (signal.SIGINT, signal.SIGTERM)
_depth = 0
_pending: int | None = None


class Terminated(BaseException):
    """The process was sent SIGTERM (a BaseException, like KeyboardInterrupt: no ``except Exception`` eats it)."""


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated


def _handler(signum: int, frame: Any) -> None:
    global _pending
    if _depth:
        _pending = signum
        return
    _raise_for(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (they are raised then)."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)


def install() -> Callable[[], None]:
    """Route SIGINT and SIGTERM through this module; returns the call that puts the old handlers back.

    Outside the main thread (where Python cannot set handlers) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.signal(signum, _handler) for signum in _HANDLED}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
