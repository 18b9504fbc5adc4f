"""The flags of a run's processes and checkpoints: ``--distributed`` (torchrun), ``--workers``, ``--checkpoint`` and
``--resume`` (:data:`PROCESSES`), and what they rule out."""

from __future__ import annotations

from pathlib import Path

from ..core.files import check_new_file, same_file
from ..core.runtime import usable_cores
from ..registry import FEDERATED_SCRIPTS, Flag, Flags, FlagSet, Range, require


def _check_processes(flags: Flags, script: str) -> None:
    """Distributed runs and checkpoints: which script may use them, and with what."""
    for flag in ("distributed", "checkpoint", "resume"):
        require(not (script == "run_baseline" and flags[flag]),
                f"--{flag} is for the federated scripts, not run_baseline.py")  # fmt: skip
    most = 4 * usable_cores()
    require(
        1 <= flags.workers <= most, f"--workers must be between 1 and {most} (4 per core here), got {flags.workers}"
    )
    require(
        flags.workers == 1 or not flags.distributed,
        "--workers runs clients in parallel in the simulation; with --distributed torchrun starts the worker "
        "processes: drop --workers",
    )
    if flags.checkpoint is not None:
        check_new_file(flags.checkpoint, "--checkpoint")
    if flags.resume is not None:
        require(Path(flags.resume).is_file(), f"--resume {flags.resume}: no such file")
    if flags.save is not None:
        for flag, other in (("--checkpoint", flags.checkpoint), ("--resume", flags.resume)):
            require(
                other is None or not same_file(flags.save, other),
                f"--save {flags.save} and {flag} {other} are the same file: the results JSON would overwrite the "
                "checkpoint; give --save another path",
            )


def _flag(name: str, default: object, kind: type | None, help: str, **options: object) -> Flag:
    return Flag(name, default, kind, group="multi", federated=True, resumable=True, help=help, **options)


PROCESSES = FlagSet(
    "processes and checkpoints",
    (
        _flag("distributed", False, None, "run over torch.distributed (gloo) as started by torchrun"),
        _flag("workers", 1, int, "local worker processes training clients in parallel in the simulation (federated "
              "scripts; the numbers equal --workers 1's; run_baseline trains in one process)", older=1),
        _flag("threads_per_worker", None, int, "torch threads of each process, workers and server (default: the "
              "workers share the cores, the server keeps torch's default); the numbers are the same for any --workers "
              "at one value", count=True, valid=Range(1, 1024), older=None, headline=False),
        _flag("timeout", 300.0, float, "seconds any wait for another process may last", setting=False,
              valid=Range(0, 1e6, low_open=True), headline=False),
        _flag("checkpoint", None, str, "save the server's state here (atomically)", metavar="PATH", setting=False),
        _flag("checkpoint_every", 1, int, "rounds (run_federated) or received updates (run_async) between "
              "checkpoints", count=True, setting=False, headline=False),
        _flag("resume", None, str, "continue the run saved in this checkpoint", metavar="PATH", setting=False),
    ),
    check=_check_processes,
    active=lambda flags, script: bool(flags.distributed or flags.workers > 1 or flags.checkpoint or flags.resume),
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""The flags of processes and checkpoints (federated scripts)."""
