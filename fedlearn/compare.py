"""Lay saved runs side by side: ``python3 -m fedlearn.compare RESULT.json ... [--plot FILE.png]``.

Prints one table with a column per run, warns when the runs were not measured
on the same dataset and test set, and with ``--plot`` draws test accuracy
against client updates and against simulated time (matplotlib, imported only then).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .errors import FedlearnError, UsageError

REQUIRED_FINAL = ("test_accuracy", "test_loss", "wall_time_s")
REQUIRED_ENTRY = ("step", "test_accuracy")
SCRIPT_TITLES = {"run_baseline": "baseline", "run_federated": "FedAvg", "run_async": None}


def load_result(path: str | Path) -> dict[str, Any]:
    """Read one results JSON and check the keys this command relies on; UsageError if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    problem = _contract_problem(doc)
    if problem:
        raise UsageError(f"{path}: not a fedlearn results file ({problem})")
    return doc


def _contract_problem(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "top level is not an object"
    for key, kind in (("script", str), ("args", dict), ("dataset", str), ("final", dict), ("history", list)):
        if not isinstance(doc.get(key), kind):
            return f"missing or malformed '{key}'"
    for key in REQUIRED_FINAL:
        if not isinstance(doc["final"].get(key), (int, float)):
            return f"missing 'final.{key}'"
    for entry in doc["history"]:
        if not isinstance(entry, dict) or any(key not in entry for key in REQUIRED_ENTRY):
            return "a history entry lacks 'step' or 'test_accuracy'"
    return None


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
        ("samples trained", lambda d: str(d["final"].get("samples_trained", "-"))),
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


def plot_runs(names: list[str], docs: list[dict[str, Any]], path: str | Path) -> None:
    """Accuracy against client updates (left) and simulated time (right); baselines as dashed reference lines."""
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(paths: list[str], plot: str | None = None) -> str:
    """Load ``paths``, print warnings to stderr, draw the plot if asked; returns the table."""
    docs = [load_result(p) for p in paths]
    names = [Path(p).stem for p in paths]
    for warning in comparability_warnings(names, docs):
        print(f"warning: {warning}", file=sys.stderr)
    if plot:
        plot_runs(names, docs, plot)
    return comparison_table(names, docs)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m fedlearn.compare", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results JSON files written with --save")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw accuracy curves into this PNG")
    args = parser.parse_args(argv)
    try:
        if args.plot and not Path(args.plot).resolve().parent.is_dir():
            raise UsageError(f"--plot {args.plot}: folder does not exist")
        print(compare(args.results, args.plot))
    except FedlearnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
