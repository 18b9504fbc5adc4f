"""Flags added after runs were saved: the value each takes in an older results file or checkpoint that lacks it
(what those runs did), so an old run still groups with, and resumes as, the same settings today."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OLDER_RUN_VALUES: dict[str, Any] = {
    "augment": "none",  # issue 17: before --augment, no run augmented
}


def with_older_values(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` (a saved run's flags) with every later flag it lacks set to what the run did."""
    return {**OLDER_RUN_VALUES, **args}
