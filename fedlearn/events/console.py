"""What a run prints: the Hyperparameters table (and the partition's, if asked) before training, the Results
table after it; the :class:`Console` listener prints them."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

from ..config.status import group_of, shown_flags
from . import Listener, RunStart

TABLE_FORMAT = "github"
NOT_APPLICABLE = "-"
DRIFT_TITLES = {"scaffold": "SCAFFOLD", "fednova": "FedNova"}


def hyperparameter_table(flags: Mapping[str, Any], context: Mapping[str, Any], shown: Sequence[str]) -> str:
    """The ``shown`` flags with their (resolved) values, by ``--help`` group, then facts of the run (dataset,
    device, ...) as the group ``run``."""
    rows, last = [], None
    for name in shown:
        group = group_of(name)
        rows.append([group if group != last else "", f"--{name}", _show(flags[name])])
        last = group
    rows += [["run" if i == 0 else "", name, _show(value)] for i, (name, value) in enumerate(context.items())]
    return "Hyperparameters\n" + tabulate(
        rows, headers=["Group", "Setting", "Value"], tablefmt=TABLE_FORMAT, disable_numparse=True
    )


def partition_table(histograms: Any, skew: Any) -> str:
    """One row per client: sample count, label histogram, and its label skew."""
    num_classes = histograms.shape[1]
    rows = [
        [k, int(h.sum()), *[int(v) for v in h], f"{float(d):.3f}"] for k, (h, d) in enumerate(zip(histograms, skew))
    ]
    headers = ["Client", "Samples", *[str(c) for c in range(num_classes)], "TV distance"]
    return "Partition (samples per label)\n" + tabulate(
        rows, headers=headers, tablefmt=TABLE_FORMAT, disable_numparse=True
    )


def results_table(final: dict[str, Any], step_name: str | None) -> str:
    """The figures every script reports, in one fixed order so tables line up across scripts.

    Then, where the run has them: time to the target accuracy, the asynchronous
    server's staleness and discard counts, and the number of rounds or epochs.
    """
    rows = [
        ["Test accuracy (%)", _fmt(final["test_accuracy"], 100, 2)],
        ["Test loss", _fmt(final["test_loss"], 1, 4)],
        ["Best test accuracy (%)", _fmt(final["best_test_accuracy"], 100, 2)],
        ["Wall-clock time (s)", _fmt(final["wall_time_s"], 1, 1)],
        ["  training / aggregation / evaluation / other (s)", _breakdown(final["time_breakdown_s"])],
        ["Simulated time (s)", _fmt(final["sim_time"], 1, 1)],
        ["Samples trained", _show(final["samples_trained"])],
        ["Client updates", _show(final["client_updates"])],
    ]
    if "bytes_up" in final:
        rows += _traffic_rows(final, step_name)
    if final.get("target_accuracy") is not None:
        rows += _target_rows(final["target_accuracy"], final["time_to_target"])
    for key, title in (("client_accuracy", "Client accuracy"), ("personal_client_accuracy", "Personalized")):
        if key in final:
            rows += _client_rows(final[key], title)
    if "server_optimizer" in final:
        rows.append(["Server optimizer", final["server_optimizer"]])
    if final.get("drift_correction", "none") != "none":
        rows.append(["Drift correction", DRIFT_TITLES.get(final["drift_correction"], final["drift_correction"])])
    if "clients_with_control_variates" in final:
        rows.append(["SCAFFOLD control variates", f"{final['clients_with_control_variates']} clients, "
                                                  f"{final['client_control_variates_mib']:.2f} MiB"])  # fmt: skip
    if "mean_staleness" in final:
        rows += [
            ["Mean staleness", f"{final['mean_staleness']:.2f}"],
            ["Max staleness", _show(final["max_staleness"])],
            ["Discarded updates", _show(final["discarded_updates"])],
            ["Server steps (model versions)", _show(final["server_steps"])],
        ]
        if final.get("unapplied_updates"):
            rows.append(["Buffered, never applied", _show(final["unapplied_updates"])])
    if "rule" in final:
        rows += _defence_rows(final)
    if "lost_workers" in final:
        lost = final["lost_workers"]
        shown = "; ".join(f"rank {w['rank']} after {w['after_updates']} updates ({w['reason']})" for w in lost)
        rows.append(["Lost workers", shown or "none"])
    if final.get("unexpected_updates"):
        rows.append(["Unexpected updates (ignored)", _show(final["unexpected_updates"])])
    if step_name is not None:
        rows.append([step_name, _show(final["steps"])])
    if final.get("diverged"):
        rows.append(["Diverged", f"at step {final['diverged']['step']}: {final['diverged']['why']}"])
    return "Results\n" + tabulate(rows, headers=["Metric", "Value"], tablefmt=TABLE_FORMAT, disable_numparse=True)


def _client_rows(clients: dict[str, Any], title: str) -> list[list[str]]:
    """Accuracy over the clients' own test sets: mean, spread, the worst and best tenth."""
    return [
        [f"{title}, {clients['clients']} client test sets: mean / std (%)",
         f"{_fmt(clients['mean'], 100, 2)} / {_fmt(clients['std'], 100, 2)}"],
        [f"{title}: worst 10 % / best 10 % (%)",
         f"{_fmt(clients['worst_10pct'], 100, 2)} / {_fmt(clients['best_10pct'], 100, 2)}"],
    ]  # fmt: skip


def _traffic_rows(final: dict[str, Any], step_name: str | None) -> list[list[str]]:
    """Megabytes uploaded and downloaded: in all, per client update, per round; the privacy loss with DP."""
    updates, rounds = final["client_updates"] or 0, final["steps"] if step_name == "Rounds" else 0

    def mb(total: int) -> str:
        parts = [f"{total / 1e6:.3f}"] + [f"{total / n / 1e6:.4f}" for n in (updates, rounds) if n]
        return " / ".join(parts)

    label = "in all / per update" + (" / per round" if rounds else "")
    rows = [[f"Uploaded (MB, {label})", mb(final["bytes_up"])],
            [f"Downloaded (MB, {label})", mb(final["bytes_down"])]]  # fmt: skip
    if "upload" in final:
        rows.append(["Upload encoding", final["upload"]])
    if "dp_epsilon" in final:
        epsilon = "inf (no noise)" if final["dp_epsilon"] is None else f"{final['dp_epsilon']:.3f}"
        if final.get("dp_epsilon_rdp") is not None:
            epsilon += f" (RDP bound {final['dp_epsilon_rdp']:.3f})"
        rows.append([f"Privacy loss epsilon (delta {final['dp_delta']:g})", epsilon])
    return rows


def _defence_rows(final: dict[str, Any]) -> list[list[str]]:
    """Rule, threat and what the server's checks and rule did with the updates."""
    byzantine = final["byzantine_clients"]
    rows = [
        ["Aggregation rule", final["rule"]],
        ["Byzantine clients (attack)", f"{len(byzantine)} ({final['attack']})" if byzantine else "0"],
        ["Byzantine updates received", _show(final["byzantine_updates"])],
    ]
    reasons = final["rejected_by_reason"]
    detail = f" ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})" if reasons else ""
    rows.append(["Rejected updates", f"{final['rejected_updates']}{detail}"])
    if final["skipped_aggregations"]:
        rows.append(["Aggregations skipped (too few valid updates)", _show(final["skipped_aggregations"])])
    if "clipped_updates" in final:
        rows.append(["Clipped updates", _show(final["clipped_updates"])])
    if "dp_clipped_updates" in final:
        rows.append(["Updates clipped by DP", _show(final["dp_clipped_updates"])])
    if "geomedian_iterations" in final:
        steps = final["geomedian_iterations"]
        rows.append(["Weiszfeld iterations (max; aggregations not converged)",
                     f"{max(steps, default=0)}; {final['geomedian_unconverged']} of {len(steps)}"])  # fmt: skip
    if "byzantine_selected" in final:
        rows.append(["Byzantine updates selected / updates selected",
                     f"{final['byzantine_selected']} / {final['selected_updates']}"])  # fmt: skip
    return rows


def _target_rows(target: float, reached: dict[str, Any] | None) -> list[list[str]]:
    label = f"Time to {target * 100:.2f}% accuracy"
    if reached is None:
        return [[label, "never reached"]]
    return [
        [f"{label}: simulated (s)", _fmt(reached["sim_time"], 1, 1)],
        [f"{label}: wall-clock (s)", _fmt(reached["wall_time_s"], 1, 1)],
        [f"{label}: client updates", _show(reached["client_updates"])],
        [f"{label}: step", _show(reached["step"])],
    ]


def _breakdown(seconds: dict[str, float]) -> str:
    return " / ".join(f"{seconds[name]:.1f}" for name in ("training", "aggregation", "evaluation", "other"))


def fixed(value: float, digits: int, sign: str = "") -> str:
    """``value`` with ``digits`` decimals, or in scientific notation from 1e12 on (a time a slow link makes)."""
    return f"{value:{sign}.{digits}f}" if abs(value) < 1e12 else f"{value:{sign}.{digits + 2}e}"


def _fmt(value: float | None, scale: float, digits: int) -> str:
    return NOT_APPLICABLE if value is None else fixed(value * scale, digits)


def _show(value: Any) -> str:
    return NOT_APPLICABLE if value is None else str(value)


STEP_NAMES = {"run_baseline": "Epochs", "run_federated": "Rounds"}
"""What each script's steps are called in the Results table (run_async counts updates, already shown)."""


class Console(Listener):
    """Prints the Hyperparameters table (and with ``--show_partition`` the partition's) when the run starts, and
    the Results table when it ends, on stdout."""

    def on_start(self, run: RunStart) -> None:
        shown = shown_flags(run.flags, run.given, run.script)
        print(hyperparameter_table(run.flags, run.context, shown), flush=True)
        if run.flags.get("show_partition") and run.partition is not None:
            print(partition_table(run.partition.histograms, run.partition.skew), flush=True)

    def on_end(self, document: dict[str, Any]) -> None:
        print(results_table(document["final"], STEP_NAMES.get(document["script"])), flush=True)
        if document["final"].get("diverged"):
            diverged = document["final"]["diverged"]
            print(
                f"{document['script']}.py: warning: diverged at step {diverged['step']}: {diverged['why']}",
                file=sys.stderr,
                flush=True,
            )
