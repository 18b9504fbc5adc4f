"""Lay saved runs side by side: ``python3 -m fedlearn.compare RESULT.json ... [--plot FILE.png]``.

Prints one table with a column per run, warns when the runs were not measured
on the same dataset and test set, and with ``--plot`` draws test accuracy
against client updates and against simulated time (matplotlib, imported only then).

Every field the table or the plot reads is checked first (:data:`RESULTS`): a file
that breaks the contract is one line naming the file and the field, exit status 2.
A bad ``--plot`` path is exit status 2 too, found before anything is drawn; the PNG
is then written whole or not at all, and a failure while writing it (disk full) is
exit status 1.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..core import schema
from ..core.files import write_atomically
from ..errors import FedlearnError, OneLineParser, UsageError
from ..events.console import DRIFT_TITLES, fixed
from .benefit import benefit_tables, is_local_only
from .groups import Group, cost_table, group_runs, group_table
from .stats import summarize

SCRIPT_TITLES = {"run_baseline": "baseline", "run_federated": "FedAvg", "run_async": None}
MAX_SECONDS = 1e300  # whatever finite time a script can write (a rate of 1 bit/s over a long run) is read
MAX_COUNT = 10**15


SECONDS = schema.number(0, MAX_SECONDS)
SECONDS_OR_NULL = schema.number(0, MAX_SECONDS, null=True)
ACCURACY, ACCURACY_OR_NULL = schema.number(0, 1), schema.number(0, 1, null=True)
COUNT, COUNT_OR_NULL = schema.integer(0, MAX_COUNT), schema.integer(0, MAX_COUNT, null=True)
# What this command reads of a results file; other fields are not looked at.
RESULTS = schema.record(
    {
        "script": schema.one_of(SCRIPT_TITLES),
        "args": schema.record({}, {
            **{key: schema.text(null=True) for key in ("algorithm", "partition", "model", "delay")},
            **{key: schema.number(null=True) for key in ("prox_mu", "init_lr")},
            **{key: COUNT_OR_NULL for key in ("concurrency", "num_select_clients", "num_clients", "epoch")},
            "local_epoch": COUNT_OR_NULL,
            "seed": schema.integer(None, null=True),
        }),
        "dataset": schema.text(),
        "final": schema.record(
            {"test_accuracy": ACCURACY, "wall_time_s": SECONDS,
             "test_loss": schema.number(null=True)},  # null: the loss was NaN or infinite (a diverged run)
            {"best_test_accuracy": ACCURACY_OR_NULL, "sim_time": SECONDS_OR_NULL, "client_updates": COUNT_OR_NULL,
             "samples_trained": COUNT_OR_NULL, "target_accuracy": ACCURACY_OR_NULL,
             "bytes_up": COUNT_OR_NULL, "bytes_down": COUNT_OR_NULL, "dp_epsilon": schema.number(0, null=True),
             "time_to_target": schema.record({"step": COUNT, "wall_time_s": SECONDS},
                                             {"sim_time": SECONDS_OR_NULL, "samples_trained": COUNT_OR_NULL,
                                              "client_updates": COUNT_OR_NULL, "bytes_up": COUNT_OR_NULL},
                                             null=True),
             "client_accuracy": schema.record({}, {key: ACCURACY for key in ("mean", "std", "worst_10pct",
                                                                                 "best_10pct")}, null=True)},
        ),
        "history": schema.list_of(schema.record({"step": COUNT, "test_accuracy": ACCURACY},
                                                {"sim_time": SECONDS_OR_NULL, "client_updates": COUNT_OR_NULL}),
                                  min_len=1),
    },
    {"run": schema.record({}, {"partition": schema.text(null=True), "test set fingerprint": schema.text(null=True)}),
     "partition": schema.record({}, {"label_skew_mean": schema.number(0, 1)}, null=True)},
)  # fmt: skip


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
    try:
        RESULTS(doc, "")
    except schema.SchemaError as exc:
        raise UsageError(f"{path}: not a fedlearn results file ({exc})") from None
    return doc


def run_label(doc: dict[str, Any]) -> str:
    """Short name of the method a run used: baseline, FedAvg, FedAsync, FedBuff (+ FedProx, + SCAFFOLD or
    FedNova, + server optimizer and its learning rate unless plain SGD at 1)."""
    args = doc["args"]
    if args.get("local_only"):
        return "each client alone"
    title = SCRIPT_TITLES.get(doc["script"]) or {"fedasync": "FedAsync", "fedbuff": "FedBuff"}.get(
        args.get("algorithm", ""), doc["script"]
    )
    if doc["script"] != "run_baseline" and args.get("prox_mu"):
        title += f" + FedProx {args['prox_mu']:g}"
    if doc["script"] == "run_federated" and args.get("drift_correction", "none") != "none":
        title += " + " + DRIFT_TITLES.get(args["drift_correction"], args["drift_correction"])
    stepped = doc["script"] == "run_federated" or args.get("algorithm") == "fedbuff"
    if stepped and (args.get("server_opt", "sgd") != "sgd" or args.get("server_lr", 1.0) != 1.0):
        title += f" + server {args.get('server_opt', 'sgd')} {args['server_lr']:g}"
    return title + _cost_label(doc)


def _cost_label(doc: dict[str, Any]) -> str:
    """`` + top-k 1 % EF``, `` + QSGD 16``, `` + DP z 1``, `` + 50% stragglers (drop)``: what a run paid for its
    traffic and privacy, and the work its clients could not do."""
    args, text = doc["args"], ""
    if doc["script"] == "run_baseline":
        return text
    if args.get("compress") == "topk":
        text += f" + top-k {args['compress_ratio'] * 100:g} %" + (" EF" if args.get("error_feedback") else "")
    elif args.get("compress") == "qsgd":
        text += f" + QSGD {args['qsgd_levels']}"
    if args.get("dp_clip") is not None:
        text += f" + DP z {args['dp_noise']:g}"
    if args.get("personalize", "none") != "none":
        text += f" + {args['personalize']}"
    if doc["script"] == "run_federated" and args.get("round_stragglers"):
        text += f" + {args['round_stragglers']:.0%} stragglers ({args.get('straggler_work', 'drop')})"
    return text


def _partition(doc: dict[str, Any]) -> str:
    if doc["script"] == "run_baseline":
        return "(all data)"
    return doc.get("run", {}).get("partition") or doc["args"].get("partition", "iid")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else fixed(value, digits)


def _traffic(doc: dict[str, Any]) -> str:
    final = doc["final"]
    if final.get("bytes_up") is None:
        return "-"
    return f"{final['bytes_up'] / 1e6:.3f} / {final['bytes_down'] / 1e6:.3f}"


def _epsilon(doc: dict[str, Any]) -> str:
    if doc["args"].get("dp_clip") is None or doc["script"] == "run_baseline":
        return "-"
    epsilon = doc["final"].get("dp_epsilon")
    return "inf" if epsilon is None else f"{epsilon:.2f} (delta {doc['final'].get('dp_delta', 0):g})"


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
        (
            "clients (picked / all)",
            lambda d: (
                "-"
                if d["script"] == "run_baseline"
                else f"{d['args'].get('concurrency') or d['args'].get('num_select_clients')} / "
                f"{d['args'].get('num_clients')}"
            ),
        ),
        (
            "epochs (local)",
            lambda d: arg(d, "epoch", False) if d["script"] == "run_baseline" else arg(d, "local_epoch"),
        ),
        ("learning rate", lambda d: arg(d, "init_lr", False)),
        ("server optimizer", lambda d: d["final"].get("server_optimizer", "-")),
        ("drift correction", lambda d: d["final"].get("drift_correction", "-")),
        ("delay", lambda d: arg(d, "delay")),
        ("seed", lambda d: arg(d, "seed", False)),
        ("test accuracy (%)", lambda d: _pct(d["final"]["test_accuracy"])),
        ("test loss", lambda d: _num(d["final"]["test_loss"], 4)),
        ("best accuracy (%)", lambda d: _pct(d["final"].get("best_test_accuracy"))),
        ("wall-clock (s)", lambda d: _num(d["final"]["wall_time_s"])),
        ("simulated time (s)", lambda d: _num(d["final"].get("sim_time"))),
        ("client updates", lambda d: str(d["final"].get("client_updates") or "-")),
        ("samples trained", lambda d: _num(d["final"].get("samples_trained"), 0)),
        ("uploaded / downloaded (MB)", _traffic),
        ("privacy loss epsilon", _epsilon),
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


def _curve(group: Group, x_of: Any) -> tuple[list[float], list[float], list[float], list[float]] | None:
    """The group's mean accuracy (%) per evaluation against the mean of ``x_of(entry)``, with its 95 % band
    (none for one run); runs are cut to the shortest history; None when some entry has no x."""
    length = min(len(doc["history"]) for doc in group.docs)
    xs, mean, low, high = [], [], [], []
    for i in range(length):
        entries = [doc["history"][i] for doc in group.docs]
        if any(x_of(e) is None for e in entries):
            return None
        xs.append(sum(x_of(e) for e in entries) / len(entries))
        acc = summarize([100 * e["test_accuracy"] for e in entries])
        mean.append(acc.mean)
        low.append(acc.mean if acc.low is None else acc.low)
        high.append(acc.mean if acc.high is None else acc.high)
    return xs, mean, low, high


def plot_runs(groups: list[Group], path: str | Path) -> None:
    """Accuracy against client updates (left) and simulated time (right), one mean curve per group with its 95 %
    band over the seeds; baselines as dashed reference lines.

    The PNG is drawn in memory and written whole to exactly ``path`` (a temporary file, then a rename);
    a failure to write is a one-line error (exit status 1) that leaves no file behind.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_updates, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for group in groups:
        method = run_label(group.docs[0])
        label = group.name if group.name.lower() == method.lower() else f"{group.name} ({method})"
        label += f", {len(group.docs)} seeds" if len(group.docs) > 1 else ""
        if group.docs[0]["script"] == "run_baseline":
            final = sum(100 * d["final"]["test_accuracy"] for d in group.docs) / len(group.docs)
            for axis in (by_updates, by_time):
                axis.axhline(final, linestyle="--", color="gray", label=f"{label}, final")
            continue
        x_of = {by_updates: lambda e: e.get("client_updates") or e["step"], by_time: lambda e: e.get("sim_time")}
        for axis, x in x_of.items():
            curve = _curve(group, x)
            if curve is not None:
                line = axis.plot(curve[0], curve[1], marker="o", markersize=3, label=label)[0]
                axis.fill_between(curve[0], curve[2], curve[3], color=line.get_color(), alpha=0.2, linewidth=0)
    by_updates.set(
        xlabel="client updates received (FedAvg: rounds x picked clients)",
        ylabel="test accuracy (%)",
        title="Accuracy per client update",
    )
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


def compare(paths: list[str], plot: str | None = None, baseline: list[str] | None = None, clients: bool = False) -> str:
    """Load ``paths`` (and the ``baseline`` runs), print warnings to stderr, draw the plot if asked; returns the
    tables: one column per run, or per group of runs differing only in the seed; then, when there is a baseline
    and a federated run, the cost of federation; when there is a local-only baseline, every client's benefit over
    training alone (``clients``: and each client's figures, seed by seed).

    ``plot`` is checked before any file is read (UsageError if no PNG can be written there).
    """
    plot_path = None if plot is None else check_plot_path(plot)
    paths = [*paths, *[b for b in baseline or [] if b not in paths]]
    docs = [load_result(p) for p in paths]
    for path, doc in zip(paths, docs):
        if path in (baseline or []) and doc["script"] != "run_baseline":
            raise UsageError(f"--baseline {path}: a {doc['script']} result, not run_baseline")
    names = [Path(p).stem for p in paths]
    for warning in comparability_warnings(names, docs):
        print(f"warning: {warning}", file=sys.stderr)
    groups = group_runs(names, docs)
    seeded = any(len(g.docs) > 1 for g in groups)
    if plot_path is not None:
        plot_runs(groups if seeded else [Group((n,), (d,)) for n, d in zip(names, docs)], plot_path)
    tables = [group_table(groups, run_label) if seeded else comparison_table(names, docs)]
    base = _baseline_group(groups, [Path(b).stem for b in baseline or []])
    if base is not None and any(g.docs[0]["script"] != "run_baseline" for g in groups):
        tables.append(cost_table(groups, base, run_label))
    tables += benefit_tables(groups, run_label, clients)
    return "\n\n".join(tables)


def _baseline_group(groups: list[Group], named: list[str]) -> Group | None:
    """The group of the ``--baseline`` runs, else the (first) group of baseline runs among the inputs."""
    bases = [g for g in groups if g.docs[0]["script"] == "run_baseline" and not is_local_only(g.docs[0])]
    chosen = [g for g in bases if set(g.names) & set(named)] or bases
    if len(chosen) > 1:
        print(f"warning: several baselines; the cost of federation is against {chosen[0].name}", file=sys.stderr)
    return chosen[0] if chosen else None


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
    parser.add_argument(
        "--baseline",
        nargs="+",
        metavar="FILE",
        help="the centralized runs (one per seed) to measure the cost of federation against; default: the "
        "run_baseline results among the inputs",
    )
    parser.add_argument(
        "--clients",
        action="store_true",
        help="with a local-only baseline: also every client's accuracy alone, global and personalized",
    )
    args = parser.parse_args(argv)
    try:
        print(compare(args.results, args.plot, args.baseline, args.clients))
    except FedlearnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.plot is not None:
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
