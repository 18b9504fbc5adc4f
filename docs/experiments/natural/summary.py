"""The tables of docs/experiments/natural.md from the JSON files beside this script: final test accuracy and
the clients' own accuracies (mean, worst tenth), mean ± standard deviation [95 % t interval] over the seeds.

    python3 docs/experiments/natural/summary.py
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from fedlearn.analysis.stats import summarize  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAKESPEARE = {"baseline": "centralized baseline", "fedavg": "FedAvg", "fedprox": "FedProx (mu 0.001)",
               "scaffold": "SCAFFOLD", "fedadam": "FedAdam (eta 0.01, tau 1e-3)", "fedasync": "FedAsync",
               "fedbuff": "FedBuff (K 5)"}  # fmt: skip
STRAGGLERS = {"s0": "0 %", "s0.5": "50 %", "s0.9": "90 %"}
SYNTHETIC = {"fedavg": "FedAvg (stragglers dropped)", "fedprox-mu0": "FedProx mu 0 (partial work)",
             "fedprox-mu1": "FedProx mu 1 (partial work)"}  # fmt: skip


def runs(folder: Path) -> list[dict]:
    """Every results document in ``folder``."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def spread(values: list[float]) -> str:
    """Mean ± std [interval] of percentages."""
    s = summarize([100 * v for v in values])
    return f"{s.mean:.2f} ± {s.std:.2f} [{s.low:.2f}, {s.high:.2f}]" if s.n > 1 else "-"


def figures(folder: Path) -> list[str]:
    """Test accuracy, the clients' mean and worst-tenth accuracy, simulated time and MB uploaded."""
    docs = runs(folder)
    if not docs:
        return ["-"] * 5
    clients = [d["final"].get("client_accuracy") or {} for d in docs]
    sim = [d["final"]["sim_time"] for d in docs if d["final"]["sim_time"] is not None]
    up = [d["final"].get("bytes_up") for d in docs if d["final"].get("bytes_up") is not None]
    return [spread([d["final"]["test_accuracy"] for d in docs]),
            spread([c["mean"] for c in clients if c]) if all(clients) else "-",
            spread([c["worst_10pct"] for c in clients if c]) if all(clients) else "-",
            f"{sum(sim) / len(sim):,.0f}" if sim else "-", f"{sum(up) / len(up) / 1e6:.1f}" if up else "-"]  # fmt: skip


def table(rows: list[tuple[str, Path]]) -> None:
    print("| method | test accuracy (%) | clients: mean (%) | clients: worst 10 % (%) | simulated s | MB up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, folder in rows:
        print(f"| {name} | " + " | ".join(figures(folder)) + " |")


def main() -> None:
    print("Shakespeare\n")
    table([(name, HERE / "shakespeare" / key) for key, name in SHAKESPEARE.items()])
    print("\nSynthetic(1, 1)\n")
    synthetic = HERE / "synthetic"
    rows = [(f"{name}, {share} stragglers", synthetic / s / key) for s, share in STRAGGLERS.items()
            for key, name in SYNTHETIC.items() if (synthetic / s / key).exists()]  # fmt: skip
    table([("centralized baseline", synthetic / "baseline"), *rows])


if __name__ == "__main__":
    main()
