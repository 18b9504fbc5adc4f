"""Lay saved runs side by side: ``python3 -m fedlearn.compare RESULT.json ... [--plot FILE.png]``.

Prints one table with a column per run, warns when the runs were not measured
on the same dataset and test set, and with ``--plot`` draws test accuracy
against client updates and against simulated time (matplotlib, imported only then).

Every field the table or the plot reads is checked first (:data:`TOP` and the
tables after it): a file that breaks the contract is one line naming the file
and the field, exit status 2. A bad ``--plot`` path is exit status 2 too, found
before anything is drawn; the PNG is then written whole or not at all, and a
failure while writing it (disk full) is exit status 1.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tabulate import tabulate

from .errors import FedlearnError, UsageError
from .files import write_atomically

SCRIPT_TITLES = {"run_baseline": "baseline", "run_federated": "FedAvg", "run_async": None}
MAX_SECONDS = 1e12  # about 30,000 years: larger times or counts are not from a run (and break matplotlib's axes)
MAX_COUNT = 10**15


@dataclass(frozen=True)
class Kind:
    """What one field must hold; ``expected`` names it in the error message."""

    expected: str
    accepts: Callable[[Any], bool]


def _number(low: float | None = None, high: float | None = None, integer: bool = False, null: bool = False) -> Kind:
    """A finite JSON number (not a boolean) from ``low`` to ``high``; an integer if ``integer``; or null if ``null``."""

    def accepts(value: Any) -> bool:
        if value is None:
            return null
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return False
        return -math.inf < value < math.inf and (low is None or value >= low) and (high is None or value <= high)

    name = "an integer" if integer else "a number"
    bounds = "" if low is None or high is None else f" from {low:g} to {high:g}"
    return Kind(name + bounds + (" or null" if null else ""), accepts)


def _kind(expected: str, json_type: type, null: bool = False) -> Kind:
    """A value of ``json_type`` (str, dict, list), or null if ``null``."""
    return Kind(expected + (" or null" if null else ""), lambda v: (null and v is None) or isinstance(v, json_type))


REQUIRED, OPTIONAL = True, False
SCRIPT = Kind(f"one of {', '.join(SCRIPT_TITLES)}", lambda v: isinstance(v, str) and v in SCRIPT_TITLES)
HISTORY = Kind("a non-empty list", lambda v: isinstance(v, list) and len(v) > 0)
STRING, OBJECT = _kind("a string", str), _kind("an object", dict)
STRING_OR_NULL, OBJECT_OR_NULL = _kind("a string", str, null=True), _kind("an object", dict, null=True)
ACCURACY, ACCURACY_OR_NULL = _number(0, 1), _number(0, 1, null=True)
SECONDS, SECONDS_OR_NULL = _number(0, MAX_SECONDS), _number(0, MAX_SECONDS, null=True)
COUNT, COUNT_OR_NULL = _number(0, MAX_COUNT, integer=True), _number(0, MAX_COUNT, integer=True, null=True)
NUMBER_OR_NULL, INTEGER_OR_NULL = _number(null=True), _number(integer=True, null=True)

# Each table: field -> (kind, required). They list what this command reads; other fields are not looked at.
Schema = dict[str, tuple[Kind, bool]]
TOP: Schema = {"script": (SCRIPT, REQUIRED), "args": (OBJECT, REQUIRED), "dataset": (STRING, REQUIRED),
               "run": (OBJECT, OPTIONAL), "final": (OBJECT, REQUIRED), "history": (HISTORY, REQUIRED)}
ARGS: Schema = {
    **{key: (STRING_OR_NULL, OPTIONAL) for key in ("algorithm", "partition", "model", "delay")},
    **{key: (NUMBER_OR_NULL, OPTIONAL) for key in ("prox_mu", "init_lr")},
    **{key: (COUNT_OR_NULL, OPTIONAL) for key in ("concurrency", "num_select_clients", "num_clients", "epoch",
                                                  "local_epoch")},
    "seed": (INTEGER_OR_NULL, OPTIONAL),
}
RUN: Schema = {"partition": (STRING_OR_NULL, OPTIONAL), "test set fingerprint": (STRING_OR_NULL, OPTIONAL)}
FINAL: Schema = {
    "test_accuracy": (ACCURACY, REQUIRED),
    "test_loss": (NUMBER_OR_NULL, REQUIRED),  # null: the loss was NaN or infinite (a diverged run)
    "wall_time_s": (SECONDS, REQUIRED),
    "best_test_accuracy": (ACCURACY_OR_NULL, OPTIONAL),
    "sim_time": (SECONDS_OR_NULL, OPTIONAL),
    "client_updates": (COUNT_OR_NULL, OPTIONAL),
    "samples_trained": (COUNT_OR_NULL, OPTIONAL),
    "target_accuracy": (ACCURACY_OR_NULL, OPTIONAL),
    "time_to_target": (OBJECT_OR_NULL, OPTIONAL),
}
TARGET: Schema = {"step": (COUNT, REQUIRED), "wall_time_s": (SECONDS, REQUIRED),
                  "sim_time": (SECONDS_OR_NULL, OPTIONAL)}
ENTRY: Schema = {"step": (COUNT, REQUIRED), "test_accuracy": (ACCURACY, REQUIRED),
                 "sim_time": (SECONDS_OR_NULL, OPTIONAL), "client_updates": (COUNT_OR_NULL, OPTIONAL)}


def load_result(path: str | Path) -> dict[str, Any]:
    """Read one results JSON and check the fields this command reads; UsageError if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except RecursionError:
        raise UsageError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer with too many digits
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    problem = _contract_problem(doc)
    if problem:
        raise UsageError(f"{path}: not a fedlearn results file ({problem})")
    return doc


def _contract_problem(doc: Any) -> str | None:
    """The first field of ``doc`` that breaks the schema tables, or None."""
    problem = _schema_problem("", doc, TOP)
    if problem:
        return problem
    final = doc["final"]
    parts = [("args", doc["args"], ARGS), ("run", doc.get("run", {}), RUN), ("final", final, FINAL)]
    if isinstance(final.get("time_to_target"), dict):
        parts.append(("final.time_to_target", final["time_to_target"], TARGET))
    parts += [(f"history[{i}]", entry, ENTRY) for i, entry in enumerate(doc["history"])]
    return next(filter(None, (_schema_problem(*part) for part in parts)), None)


def _schema_problem(where: str, value: Any, schema: Schema) -> str | None:
    """The first way the object ``value`` (called ``where``; "" at the top level) breaks ``schema``, or None."""
    if not isinstance(value, dict):
        return f"{where or 'the top level'} is {_describe(value)}, expected an object"
    for key, (kind, required) in schema.items():
        name = _field_name(where, key)
        if key not in value:
            if required:
                return f"{name} is missing"
        elif not kind.accepts(value[key]):
            return f"{name} is {_describe(value[key])}, expected {kind.expected}"
    return None


def _field_name(where: str, key: str) -> str:
    """``final.test_loss``, ``run['test set fingerprint']``."""
    if not where:
        return key
    return f"{where}.{key}" if key.isidentifier() else f"{where}[{key!r}]"


def _describe(value: Any) -> str:
    """A JSON value as an error message shows it: short numbers and strings as such, others by their type."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return json.dumps(value)  # null, true, false, NaN, Infinity
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 24 else f"a {len(text)}-digit number"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 24 else "a string"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "an object"


def run_label(doc: dict[str, Any]) -> str:
    """Short name of the method a run used: baseline, FedAvg, FedAsync, FedBuff (+ FedProx)."""
    args = doc["args"]
    title = SCRIPT_TITLES.get(doc["script"]) or {"fedasync": "FedAsync", "fedbuff": "FedBuff"}.get(
        args.get("algorithm", ""), doc["script"]
    )
    if doc["script"] != "run_baseline" and args.get("prox_mu"):
        title += f" + FedProx {args['prox_mu']:g}"
    return title


def _partition(doc: dict[str, Any]) -> str:
    if doc["script"] == "run_baseline":
        return "(all data)"
    return doc.get("run", {}).get("partition") or doc["args"].get("partition", "iid")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def comparison_table(names: list[str], docs: list[dict[str, Any]]) -> str:
    """One column per run; rows for the setting and the outcome."""

    def arg(doc: dict[str, Any], key: str, federated_only: bool = True) -> str:
        if federated_only and doc["script"] == "run_baseline":
            return "-"
        value = doc["args"].get(key)
        return "-" if value is None else str(value)

    def target(doc: dict[str, Any]) -> str:
        final = doc["final"]
        if final.get("target_accuracy") is None:
            return "-"
        reached = final.get("time_to_target")
        if reached is None:
            return f"never ({_pct(final['target_accuracy'])} %)"
        sim = f"sim {_num(reached['sim_time'])} s, " if reached.get("sim_time") is not None else ""
        return f"{sim}wall {_num(reached['wall_time_s'])} s, step {reached['step']}"

    rows = [
        ("method", lambda d: run_label(d)),
        ("script", lambda d: d["script"]),
        ("dataset", lambda d: d["dataset"]),
        ("partition", _partition),
        ("model", lambda d: arg(d, "model", False)),
        ("clients (picked / all)", lambda d: "-" if d["script"] == "run_baseline" else
            f"{d['args'].get('concurrency') or d['args'].get('num_select_clients')} / {d['args'].get('num_clients')}"),
        ("epochs (local)", lambda d: arg(d, "epoch", False) if d["script"] == "run_baseline" else arg(d, "local_epoch")),
        ("learning rate", lambda d: arg(d, "init_lr", False)),
        ("delay", lambda d: arg(d, "delay")),
        ("seed", lambda d: arg(d, "seed", False)),
        ("test accuracy (%)", lambda d: _pct(d["final"]["test_accuracy"])),
        ("test loss", lambda d: _num(d["final"]["test_loss"], 4)),
        ("best accuracy (%)", lambda d: _pct(d["final"].get("best_test_accuracy"))),
        ("wall-clock (s)", lambda d: _num(d["final"]["wall_time_s"])),
        ("simulated time (s)", lambda d: _num(d["final"].get("sim_time"))),
        ("client updates", lambda d: str(d["final"].get("client_updates") or "-")),
        ("samples trained", lambda d: _num(d["final"].get("samples_trained"), 0)),
        ("time to target", target),
    ]
    table = [[label, *[fn(doc) for doc in docs]] for label, fn in rows]
    return tabulate(table, headers=["run", *names], tablefmt="github", disable_numparse=True)


def comparability_warnings(names: list[str], docs: list[dict[str, Any]]) -> list[str]:
    """Why these runs may not be comparable: other datasets, other test sets."""
    warnings = []
    datasets = {doc["dataset"] for doc in docs}
    if len(datasets) > 1:
        listing = ", ".join(f"{n}: {d['dataset']}" for n, d in zip(names, docs))
        warnings.append(f"runs differ in dataset ({listing})")
    prints = {doc.get("run", {}).get("test set fingerprint") for doc in docs} - {None}
    if len(datasets) == 1 and len(prints) > 1:
        warnings.append("runs were evaluated on different test sets (test set fingerprints differ)")
    return warnings


def folder_problem(folder: Path) -> str | None:
    """Why no new file can be made in ``folder`` (missing, not a folder, refuses a probe file), or None.

    The probe is a real (unnamed, at once removed) file, since ``os.access`` says yes to root everywhere.
    """
    try:
        if not folder.is_dir():
            return "is not a folder" if folder.exists() else "does not exist"
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    return None


def check_plot_path(plot: str) -> Path:
    """``plot`` as a path; UsageError, before anything is drawn, unless it names a .png file that can be made."""
    path = Path(plot)
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot or repr(plot)}: the file name must end in .png")
    problem = folder_problem(path.parent)
    if problem:
        raise UsageError(f"--plot {plot}: folder {path.parent} {problem}")
    if path.is_dir():
        raise UsageError(f"--plot {plot}: is a folder")
    return path


def plot_runs(names: list[str], docs: list[dict[str, Any]], path: str | Path) -> None:
    """Accuracy against client updates (left) and simulated time (right); baselines as dashed reference lines.

    The PNG is drawn in memory and written whole to exactly ``path`` (a temporary file, then a rename);
    a failure to write is a one-line error (exit status 1) that leaves no file behind.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_updates, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for name, doc in zip(names, docs):
        method = run_label(doc)
        label = name if name.lower() == method.lower() else f"{name} ({method})"
        history = doc["history"]
        accuracy = [100 * e["test_accuracy"] for e in history]
        if doc["script"] == "run_baseline":
            for axis in (by_updates, by_time):
                axis.axhline(100 * doc["final"]["test_accuracy"], linestyle="--", color="gray", label=f"{label}, final")
            continue
        updates = [e.get("client_updates") or e["step"] for e in history]
        by_updates.plot(updates, accuracy, marker="o", markersize=3, label=label)
        if all(e.get("sim_time") is not None for e in history):
            by_time.plot([e["sim_time"] for e in history], accuracy, marker="o", markersize=3, label=label)
    by_updates.set(xlabel="client updates received (FedAvg: rounds x picked clients)", ylabel="test accuracy (%)",
                   title="Accuracy per client update")
    by_time.set(xlabel="simulated time (s)", ylabel="test accuracy (%)", title="Accuracy over simulated time")
    for axis in (by_updates, by_time):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=120)
    finally:
        plt.close(fig)
    write_atomically(path, png.getvalue(), "--plot")


def compare(paths: list[str], plot: str | None = None) -> str:
    """Load ``paths``, print warnings to stderr, draw the plot if asked; returns the table.

    ``plot`` is checked before any file is read (UsageError if no PNG can be written there).
    """
    plot_path = None if plot is None else check_plot_path(plot)
    docs = [load_result(p) for p in paths]
    names = [Path(p).stem for p in paths]
    for warning in comparability_warnings(names, docs):
        print(f"warning: {warning}", file=sys.stderr)
    if plot_path is not None:
        plot_runs(names, docs, plot_path)
    return comparison_table(names, docs)


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line usage error, exit status 2: ``fedlearn.cli.OneLineParser``, repeated so that
    this command does not import torch (``fedlearn.cli`` does; that costs seconds)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = OneLineParser(prog="python3 -m fedlearn.compare", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results JSON files written with --save")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw accuracy curves into this PNG file: the name must end in .png and the folder exist "
        "(else exit status 2, before drawing); written whole or not at all (a failed write: exit status 1)",
    )
    args = parser.parse_args(argv)
    try:
        print(compare(args.results, args.plot))
    except FedlearnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.plot is not None:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
