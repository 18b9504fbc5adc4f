"""The command line of the three scripts: one parser assembled from every part's declared flags, grouped for
``--help`` as :data:`~.flags.GROUPS` says."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import OneLineParser
from ..registry import Flag
from .flags import GROUPS
from .status import all_flags, baseline_ignores

DESCRIPTIONS = {
    "run_baseline": "Centralized training on the whole training set: the reference for the federated runs.",
    "run_federated": "Synchronous FedAvg: --num_clients clients, --num_select_clients picked at random each round.",
    "run_async": "Asynchronous aggregation (FedAsync, FedBuff) on a deterministic virtual clock.",
}


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless its help already says it (or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


class ScriptParser(OneLineParser):
    """A script's parser; ``federated_flags`` names the flags the baseline accepts but ignores."""

    federated_flags: frozenset[str] = frozenset()


def argument(flag: Flag) -> dict[str, Any]:
    """``add_argument``'s keywords for ``flag``."""
    help_text = flag.help + (f"; valid: {flag.valid}" if flag.valid is not None else "")
    options: dict[str, Any] = {"default": flag.default, "help": help_text}
    if flag.switch:
        options["action"] = "store_true"
        return options
    options["type"] = flag.type
    for key in ("choices", "metavar", "action"):
        if getattr(flag, key) is not None:
            options[key] = getattr(flag, key)
    return options


def build_parser(script: str) -> ScriptParser:
    """The parser for ``script`` (``run_baseline``, ``run_federated``, ``run_async``): every flag its parts
    declare for it, in the groups ``--help`` shows."""
    parser = ScriptParser(prog=f"{script}.py", description=DESCRIPTIONS.get(script), formatter_class=DefaultsFormatter)
    groups: dict[str, Any] = {}
    for flag in all_flags(script):
        if flag.group not in groups:
            title, description = GROUPS.get(flag.group, (flag.group, None))
            groups[flag.group] = parser.add_argument_group(title, description)
        groups[flag.group].add_argument(f"--{flag.name}", **argument(flag))
    parser.federated_flags = baseline_ignores()
    return parser
