"""A user's function named on the command line as ``MODULE:FUNCTION`` (an importable module) or
``path/to/file.py:FUNCTION``, loaded and called so that every failure is one line naming the flag.

A file is executed once per version of it (its path, size and modification time): the scripts, the worker
processes and repeated :func:`fedlearn.run` calls see the same module until the file changes.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import UsageError

SPEC_FORMS = "MODULE:FUNCTION or FILE.py:FUNCTION"


def names_a_function(value: str) -> bool:
    """Whether ``value`` has the form of a function's name (``something:NAME``)."""
    where, sep, name = value.rpartition(":")
    return bool(sep and where and name)


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _from_file(path: Path, flag: str, spec: str) -> ModuleType:
    """The module a Python file defines (executed once per version of the file)."""
    if not path.is_file():
        raise UsageError(f"{flag} {spec}: no such file {path}")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    name = f"fedlearn_user_{key}"
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"{flag} {spec}: {path} is not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # classes defined there can be pickled (worker processes) by this name
    try:
        loader_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a user's file failing to import is one line
        del sys.modules[name]
        raise UsageError(f"{flag} {spec}: {path} failed to import ({first_line(exc)})") from None
    return module


def _importable(module: str, flag: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or module
        detail = f"no module named {missing}" if missing == module else f"it needs {missing}, not installed"
        raise UsageError(f"{flag} {spec}: {detail}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a user's module failing to import is one line
        raise UsageError(f"{flag} {spec}: module {module} failed to import ({first_line(exc)})") from None


def load_function(spec: str, flag: str) -> Callable[..., Any]:
    """The function ``spec`` names (UsageError naming ``flag``: no such module, file or function, or an import
    that fails)."""
    where, _, name = spec.rpartition(":")
    if not names_a_function(spec):
        raise UsageError(f"{flag} {spec!r}: expected {SPEC_FORMS}")
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    module = _from_file(Path(where), flag, spec) if is_file else _importable(where, flag, spec)
    function: Any = module
    for part in name.split("."):
        function = getattr(function, part, None)
    if not callable(function):
        raise UsageError(f"{flag} {spec}: {where} has no function {name}")
    return function


def call(function: Callable[..., Any], flag: str, spec: str, **arguments: Any) -> Any:
    """``function(**arguments)``; an exception it raises is one UsageError line naming ``flag``."""
    try:
        return function(**arguments)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code failing is reported in one line
        raise UsageError(f"{flag} {spec}: calling it raised {first_line(exc)}") from None
