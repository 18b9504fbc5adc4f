"""The results JSON (``--save PATH``): the run's document written whole when it ends, never a partial file."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from ..core.files import write_atomically
from . import Listener


def json_safe(value: Any) -> Any:
    """NaN and infinities become null so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_results(path: str | os.PathLike, document: dict[str, Any]) -> None:
    """Write the results JSON (``--save``) atomically: a reader never sees a partial file."""
    text = json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n"
    write_atomically(path, text.encode(), "--save")


class ResultsFile(Listener):
    """Writes the run's document to ``path`` when the run ends (and says so on stderr)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path

    def on_end(self, document: dict[str, Any]) -> None:
        write_results(self.path, document)
        print(f"results written to {self.path}", file=sys.stderr, flush=True)
