"""The tables and plots of docs/experiments/costs.md from the JSON files beside this script.

    python3 docs/experiments/costs/summary.py     # prints the three tables, writes the three plots here

Every figure is mean ± standard deviation [95 % t interval] over the seeds (fedlearn.analysis.stats); a time to
target that a seed never reached is counted as "never", not averaged in.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from fedlearn.analysis.stats import summarize  # noqa: E402

HERE = Path(__file__).resolve().parent
CODECS = {"none": "none (float32 weights)", "topk10-ef": "top-k 10 %, error feedback",
          "topk1-ef": "top-k 1 %, error feedback", "topk1": "top-k 1 %, no error feedback",
          "qsgd16": "QSGD, 16 levels", "qsgd2": "QSGD, 2 levels"}  # fmt: skip
SLOW = {"fedavg": "FedAvg", "fedavg-topk1-ef": "FedAvg + top-k 1 % EF", "fedasync": "FedAsync",
        "fedbuff": "FedBuff", "fedbuff-topk1-ef": "FedBuff + top-k 1 % EF"}  # fmt: skip
TARGETS = (0.75, 0.82)  # from the history: the first evaluation at or above each
PRIVACY = {"no-dp": "no DP", "z0": "clip 0.5, no noise", "z1": "clip 0.5, z = 1", "z2": "clip 0.5, z = 2",
           "z4": "clip 0.5, z = 4"}  # fmt: skip


def runs(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def show(values: list, scale: float = 1.0, digits: int = 2) -> str:
    s = summarize([None if v is None else v * scale for v in values])
    if s.mean is None:
        return f"never ({s.never} of {s.n})"
    text = f"{s.mean:.{digits}f}"
    if s.std is not None:
        text += f" ± {s.std:.{digits}f} [{s.low:.{digits}f}, {s.high:.{digits}f}]"
    return text + (f", never in {s.never} of {s.n}" if s.never else "")


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def mean_curve(docs: list[dict], x_key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """The seeds' mean accuracy (%) at each evaluation, against the seeds' mean of ``x_key``."""
    steps = min(len(d["history"]) for d in docs)
    xs = [sum(d["history"][i][x_key] for d in docs) / len(docs) * scale for i in range(steps)]
    ys = [100 * sum(d["history"][i]["test_accuracy"] for d in docs) / len(docs) for i in range(steps)]
    return xs, ys


def plot(name: str, curves: dict[str, tuple[list[float], list[float]]], xlabel: str, log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%, mean of 3 seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / name, dpi=120)
    plt.close(fig)


def compression() -> str:
    rows, curves = [], {}
    for key, label in CODECS.items():
        docs = runs(HERE / "compression" / key)
        per_update = docs[0]["final"]["bytes_up"] // docs[0]["final"]["client_updates"]
        rows.append([label, f"{per_update:,}", f"{docs[0]['final']['bytes_up'] / 1e6:.3f}",
                     show([d["final"]["test_accuracy"] for d in docs], 100)])  # fmt: skip
        curves[label] = mean_curve(docs, "bytes_up", 1e-6)
    plot("accuracy-vs-upload.png", curves, "megabytes uploaded (all clients)", log_x=True)
    return table(["upload", "bytes per update", "MB uploaded (8 rounds)", "test accuracy (%)"], rows)


def reached(doc: dict, target: float, key: str) -> float | None:
    """``key`` (simulated time, bytes up) at the first evaluation at or above ``target`` (None: never)."""
    return next((e[key] for e in doc["history"] if e["test_accuracy"] >= target), None)


def slow_uplink() -> str:
    rows, curves = [], {}
    for key, label in SLOW.items():
        docs = runs(HERE / "slow-uplink" / key)
        row = [label]
        for target in TARGETS:
            row += [show([reached(d, target, "sim_time") for d in docs], 1, 1),
                    show([reached(d, target, "bytes_up") for d in docs], 1e-6, 3)]  # fmt: skip
        rows.append(row + [show([d["final"]["sim_time"] for d in docs], 1, 1),
                           show([d["final"]["test_accuracy"] for d in docs], 100)])  # fmt: skip
        curves[label] = mean_curve(docs, "sim_time")
    plot("accuracy-vs-time-slow-uplink.png", curves, "simulated time (s)")
    headers = ["method"]
    for target in TARGETS:
        headers += [f"simulated time to {target:.0%} (s)", f"MB uploaded to {target:.0%}"]
    return table(headers + ["simulated time, 100 updates (s)", "test accuracy (%)"], rows)


def privacy() -> str:
    rows, curves = [], {}
    for key, label in PRIVACY.items():
        docs = runs(HERE / "privacy" / key)
        final = docs[0]["final"]
        epsilon = "-" if key == "no-dp" else ("inf" if final["dp_epsilon"] is None else f"{final['dp_epsilon']:.2f}")
        clipped = "-" if key == "no-dp" else show([d["final"]["dp_clipped_updates"] / d["final"]["client_updates"]
                                                    for d in docs], 100, 1)  # fmt: skip
        rows.append([label, epsilon, clipped, show([d["final"]["test_accuracy"] for d in docs], 100)])
        if key not in ("no-dp", "z0"):
            curves[label] = mean_curve(docs, "dp_epsilon")
    plot("accuracy-vs-epsilon.png", curves, "epsilon (delta 1e-5)", log_x=True)
    return table(["setting", "epsilon after 30 rounds (delta 1e-5)", "updates clipped (%)", "test accuracy (%)"], rows)


def main() -> None:
    for title, make in (("Compression", compression), ("Slow uplink", slow_uplink), ("Privacy", privacy)):
        print(f"{title}\n\n{make()}\n")


if __name__ == "__main__":
    main()
