"""The benchmark's tables: those of the sections a report holds, in the benchmark's order (the CIFAR-10, client
state and workers sections render their own)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from .cifar import render_cifar
from .data import BATCH_SIZE
from .natural import render_natural
from .state import render_state
from .workers import render_workers


def render(report: dict[str, Any]) -> str:
    """The benchmark's tables (those of the sections the report holds)."""
    out: list[str] = []
    if report.get("throughput"):
        tp = report["throughput"]
        rows = [[name, f"{tp['seconds'][name]:.2f}", f"{tp['samples_per_s'][name]:,.0f}", f"{tp['spread'][name]:.3f}"]
                for name in tp["seconds"]]  # fmt: skip
        out += [f"Training throughput: one epoch of {tp['samples']:,} samples, batch {BATCH_SIZE}, median of "
                f"{report['reps']} interleaved repetitions after a warm-up (evaluation excluded)",
                tabulate(rows, headers=["run", "seconds", "samples/s", "slowest / fastest repetition"],
                         tablefmt="github", disable_numparse=True),
                "",
                tabulate([[k, f"{v:.3f}"] for k, v in tp["ratios"].items()],
                         headers=["time per trained sample", "ratio"], tablefmt="github",
                         disable_numparse=True)]  # fmt: skip
    if report.get("cifar"):
        out += render_cifar(report["cifar"], report["reps"])
    if report.get("client_evaluation"):
        ce = report["client_evaluation"]
        rows = [[name, f"{ce['samples'][name]:,}", f"{s:.3f}", f"{ce['samples_per_s'][name]:,.0f}",
                 f"{ce['vs_global_test_set'][name]:.3f}"] for name, s in ce["seconds"].items()]  # fmt: skip
        out += ["", "Evaluation: the global test set and every client's held-out set "
                    f"(--client_test_frac {ce['client_test_frac']:g}, IID clients), one evaluation each",
                tabulate(rows, headers=["evaluated", "samples", "seconds", "samples/s", "vs global test set"],
                         tablefmt="github", disable_numparse=True)]  # fmt: skip
    if report.get("scaling"):
        rows = []
        for r in report["scaling"]:
            b = r["breakdown_s"]
            rows.append([r["partition"], r["clients"], r["picked"], f"{r['samples_per_round']:,.0f}",
                         f"{r['samples_per_round'] / r['batches_per_round']:.0f}",
                         f"{r['round_s']:.2f}", f"{b['training']:.2f}", f"{b['aggregation']:.4f}",
                         f"{b['evaluation']:.2f}", f"{b['other']:.4f}", f"{1e6 * r['s_per_sample_excl_eval']:.1f}",
                         f"{1e6 * r['plain_same_jobs_s_per_sample']:.1f}", f"{r['fedlearn_vs_plain_same_jobs']:.3f}",
                         f"{r['peak_rss_mib']:.0f}"])  # fmt: skip
        first = report["scaling"][0]
        out += ["", "FedAvg scaling: 10 % of the clients per round, 1 local epoch; medians of rounds "
                    f"2-{first['rounds']} (round 1 is the warm-up) pooled over {first['processes']} process(es) "
                    "per row, run round-robin",
                tabulate(rows, headers=["partition", "clients", "picked", "samples/round", "samples/batch", "round (s)",
                                        "training",
                                        "aggregation", "evaluation", "other", "us/sample (excl. eval)",
                                        "plain loop, same jobs (us/sample)", "local training / plain loop",
                                        "peak RSS (MiB)"], tablefmt="github", disable_numparse=True)]  # fmt: skip
    if report.get("client_state"):
        out += render_state(report["client_state"])
    if report.get("workers"):
        out += render_workers(report["workers"])
    if report.get("natural"):
        out += render_natural(report["natural"])
    if report.get("variants"):
        rows = [[name, f"{v['seconds']:.2f}", f"{v['vs_default']:.3f}"] for name, v in report["variants"].items()]
        out += [
            "",
            "Hot-path options, each against the default it would replace (interleaved repetitions)",
            tabulate(rows, headers=["option", "seconds", "vs default"], tablefmt="github", disable_numparse=True),
        ]
    return "\n".join(out).lstrip("\n")
