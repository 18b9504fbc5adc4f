"""The summary table of docs/experiments/baselines.md from the JSON files beside this script:
final test accuracy, mean ± standard deviation [95 % t interval] over the seeds, per method and partition.

    python3 docs/experiments/baselines/summary.py
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from fedlearn.analysis.stats import summarize  # noqa: E402

HERE = Path(__file__).resolve().parent
PARTITIONS = {"iid": "IID", "dir0.5": "Dir(0.5)", "dir0.1": "Dir(0.1)", "2cls": "2 classes per client"}
METHODS = {"fedavg": "FedAvg", "fedprox": "FedProx (mu 0.01)", "scaffold": "SCAFFOLD", "fednova": "FedNova",
           "fedavgm": "FedAvgM (eta 1, beta 0.9)", "fedadam": "FedAdam (eta 0.01, tau 1e-3)"}  # fmt: skip


def cell(folder: Path) -> str:
    """Mean ± std [interval] of the final test accuracy (%) of the runs in ``folder``."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    s = summarize([100 * r["final"]["test_accuracy"] for r in runs])
    return f"{s.mean:.2f} ± {s.std:.2f} [{s.low:.2f}, {s.high:.2f}]" if s.n > 1 else "-"


def main() -> None:
    print("| method | " + " | ".join(PARTITIONS.values()) + " |")
    print("| --- |" + " --- |" * len(PARTITIONS))
    print("| centralized baseline | " + " | ".join([cell(HERE / "baseline")] * len(PARTITIONS)) + " |")
    for key, name in METHODS.items():
        print(f"| {name} | " + " | ".join(cell(HERE / p / key) for p in PARTITIONS) + " |")


if __name__ == "__main__":
    main()
