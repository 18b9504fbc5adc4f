"""Run a grid of settings across the scripts, save every JSON in one folder, end with the compare table.

    python3 -m fedlearn.sweep --out results/noniid --scripts run_federated run_async \\
        --vary partition=iid,dirichlet -- --global_epoch 10 --local_epoch 1 --init_lr 1e-3

Flags after ``--`` go to every run. Each ``--vary FLAG=V1,V2,...`` adds a grid
axis; a script gets only the axes it uses (the baseline, which trains on all
the data, is run once rather than once per partition, unless clients hold out
test sets with ``--client_test_frac``; ``--algorithm`` only varies ``run_async``).
``--seeds 0,1,2`` runs every grid point once per seed; the compare table then
shows each group's mean and 95 % interval over the seeds.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from .. import app
from ..config import Script, build_parser, from_namespace
from ..data.partitions import PARTITIONS
from ..errors import FedlearnError, OneLineParser, UsageError
from .compare import compare, folder_problem

SCRIPTS = ("run_baseline", "run_federated", "run_async")


def parse_axis(text: str) -> tuple[str, list[str]]:
    """``partition=iid,dirichlet`` -> ``("partition", ["iid", "dirichlet"])``."""
    flag, sep, values = text.partition("=")
    flag = flag.strip().lstrip("-")
    choices = [v for v in values.split(",") if v]
    if not sep or not flag or not choices:
        raise UsageError(f"--vary {text!r}: expected FLAG=VALUE[,VALUE...]")
    return flag, choices


def split_flags(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """``["--a", "1", "--b=2", "--c"]`` -> ``[("a", ["--a", "1"]), ("b", ["--b=2"]), ("c", ["--c"])]``."""
    groups: list[tuple[str, list[str]]] = []
    for token in tokens:
        if token.startswith("--"):
            groups.append((token[2:].split("=", 1)[0], [token]))
        elif groups:
            groups[-1][1].append(token)
        else:
            raise UsageError(f"flags after -- must start with --, got {token!r}")
    return groups


def flags_accepted(script: str) -> set[str]:
    """Every flag ``script`` accepts."""
    return {action.dest for action in build_parser(script)._actions if action.option_strings} - {"help"}


def partition_flags() -> frozenset[str]:
    """What decides the clients' data, which the baseline trains on when the clients hold out test sets: the
    number of clients and the partition's settings."""
    return frozenset({"num_clients"} | {flag.name for flag in PARTITIONS.declared() if flag.federated and flag.setting})


def flags_used(script: str, clients_hold_out: bool = False) -> set[str]:
    """The flags ``script`` acts on (the baseline ignores the federated ones, but for the partition's when the
    clients hold out test sets: it trains on what they keep)."""
    accepted = flags_accepted(script)
    if script != "run_baseline":
        return accepted
    return accepted - build_parser(script).federated_flags | (partition_flags() if clients_hold_out else set())


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` -> ``[0, 1, 2]``; UsageError unless distinct non-negative integers."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise UsageError(f"--seeds {text!r}: expected distinct non-negative integers separated by commas, e.g. 0,1,2")
    return seeds


def _holds_out(axes: list[tuple[str, list[str]]], groups: list[tuple[str, list[str]]]) -> bool:
    """Whether some run's clients hold out test sets (--client_test_frac other than 0)."""
    values = [v for flag, vs in axes if flag == "client_test_frac" for v in vs]
    values += [tokens[-1].split("=")[-1] for flag, tokens in groups if flag == "client_test_frac"]
    return any(_nonzero(v) for v in values)


def _nonzero(text: str) -> bool:
    try:
        return float(text) != 0
    except ValueError:
        return False  # not a number: the run's own parser says so


def plan_runs(
    scripts: list[str], axes: list[tuple[str, list[str]]], common: list[str], seeds: list[int] | None = None
) -> list[tuple[str, str, list[str]]]:
    """Every ``(script, run name, argv)`` of the grid, once per seed of ``seeds`` (if given).

    A script gets the common flags it accepts and the axes it uses; a flag no
    script knows is a usage error.
    """
    accepted = {script: flags_accepted(script) for script in SCRIPTS}
    groups = split_flags(common)
    used = {script: flags_used(script, _holds_out(axes, groups)) for script in SCRIPTS}
    for flag in [flag for flag, _ in axes] + [flag for flag, _ in groups]:
        if not any(flag in flags for flags in accepted.values()):
            raise UsageError(f"--{flag}: no script has this flag")
    if seeds is not None:
        if "seed" in [flag for flag, _ in axes] + [flag for flag, _ in groups]:
            raise UsageError("--seeds and --seed (or --vary seed=...) cannot be combined: give the seeds to --seeds")
        axes = [*axes, ("seed", [str(s) for s in seeds])]
    runs = []
    for script in scripts:
        shared = [token for flag, tokens in groups if flag in accepted[script] for token in tokens]
        mine = [(flag, values) for flag, values in axes if flag in used[script]]
        for combo in itertools.product(*[values for _, values in mine]):
            settings = list(zip([flag for flag, _ in mine], combo))
            name = "_".join([script.removeprefix("run_"), *[f"{flag}-{value}" for flag, value in settings]])
            varied = [item for flag, value in settings for item in (f"--{flag}", value)]
            runs.append((script, name, shared + varied))
    return runs


def check_runs(runs: list[tuple[str, str, list[str]]]) -> None:
    """Parse and check every planned run's flags as its script would, before the first one starts: UsageError
    naming the run on the first bad one (a sweep never stops half-way on a value it could have refused)."""
    parsers = {script: build_parser(script) for script in {script for script, _, _ in runs}}
    for script, name, argv in runs:
        parser = parsers[script]

        def refuse(message: str, name: str = name) -> None:
            raise UsageError(f"run {name}: {message}")

        parser.error = refuse  # type: ignore[method-assign]  # one line, not argparse's exit
        args = parser.parse_args(argv)
        try:
            from_namespace(args, Script(script))
        except UsageError as exc:
            raise UsageError(f"run {name}: {exc}") from None


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    return [folder for folder in (path, *path.parents) if not folder.exists()]


def prepare_out(text: str) -> Path:
    """Create the ``--out`` folder (and its parents); UsageError if it is a file or cannot be made or written."""
    if not text:
        raise UsageError("--out '': empty path")
    out = Path(text)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {text}: exists and is not a folder") from None
    except OSError as exc:
        raise UsageError(f"--out {text}: cannot create this folder ({exc.strerror or exc})") from None
    problem = folder_problem(out)
    if problem:
        raise UsageError(f"--out {text}: {problem}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    common = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = OneLineParser(
        prog="python3 -m fedlearn.sweep",
        description=__doc__.split("\n\n")[0],
        epilog="Flags after -- are passed to every run.",
    )
    parser.add_argument(
        "--out", required=True, help="folder for the results JSON files (created; checked before the first run)"
    )
    parser.add_argument("--scripts", nargs="+", default=list(SCRIPTS), choices=SCRIPTS, help="scripts to run")
    parser.add_argument("--vary", action="append", default=[], metavar="FLAG=V1,V2", help="a grid axis (repeatable)")
    parser.add_argument("--seeds", metavar="S1,S2,...", help="run every grid point once per seed, e.g. 0,1,2")
    parser.add_argument("--plot", action="store_true", help="also draw OUT/curves.png")
    args = parser.parse_args(own)
    try:
        axes = [parse_axis(text) for text in args.vary]
        seeds = None if args.seeds is None else parse_seeds(args.seeds)
        runs = plan_runs(args.scripts, axes, common, seeds)
        made = _missing_folders(Path(args.out)) if args.out else []
        out = prepare_out(args.out)  # first: a run's --log or --checkpoint may point into it
        try:
            check_runs(runs)
        except UsageError:
            for folder in made:  # nothing is left behind (rmdir: only the empty folders made here)
                folder.rmdir()
            raise
        paths = []
        for i, (script, name, run_argv) in enumerate(runs, start=1):
            path = out / f"{name}.json"
            print(f"== sweep run {i}/{len(runs)}: {script}.py {' '.join(run_argv)}", flush=True)
            try:
                code = app.main(script, [*run_argv, "--save", str(path)])
            except SystemExit as exc:  # argparse rejected a flag
                code = exc.code if isinstance(exc.code, int) else 2
            if code != 0:
                raise FedlearnError(f"run {name} failed (exit status {code}); results so far are in {out}")
            paths.append(str(path))
        print(f"== {len(paths)} runs saved in {out}")
        print(compare(paths, str(out / "curves.png") if args.plot else None))
    except FedlearnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
