"""The benefit tables and the per-client gains plot of docs/experiments/personalization.md, from the JSON files
beside this script: each client's accuracy on its own test set minus its accuracy alone, per method and partition.

    python3 docs/experiments/personalization/summary.py [gains.png]
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from fedlearn.analysis.stats import summarize  # noqa: E402

HERE = Path(__file__).resolve().parent
PARTITIONS = {"iid": "IID", "dir0.1": "Dir(0.1)", "2cls": "2 classes per client", "synthetic": "Synthetic(1, 1)"}
METHODS = {  # (folder, the figure read from its runs)
    "FedAvg (global model)": ("finetune", "client_accuracy"),
    "FedAvg + fine-tuning": ("finetune", "personal_client_accuracy"),
    "FedPer": ("fedper", "personal_client_accuracy"),
    "Ditto (lambda 1)": ("ditto", "personal_client_accuracy"),
}


def per_client(folder: Path, key: str) -> dict[int, np.ndarray]:
    """Each seed's per-client accuracies (%) of the runs in ``folder``."""
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return {r["seed"]: 100 * np.array(r["final"][key]["per_client"], dtype=float) for r in runs}


def gains(partition: str, folder: str, key: str) -> dict[int, np.ndarray]:
    """Per seed, every client's gain (points) over training alone."""
    alone = per_client(HERE / partition / "local", "client_accuracy")
    method = per_client(HERE / partition / folder, key)
    return {seed: method[seed] - alone[seed] for seed in method if seed in alone}


def spread(values: list[float], digits: int = 2) -> str:
    s = summarize(values)
    return f"{s.mean:+.{digits}f} ± {s.std:.{digits}f}" if s.n > 1 else "-"


def table(partition: str) -> None:
    """Clients better off (%), mean and worst gain (points): mean ± std over the seeds."""
    alone = per_client(HERE / partition / "local", "client_accuracy")
    mean_alone = spread([float(a.mean()) for a in alone.values()])[1:]
    print(f"\n{PARTITIONS[partition]} (each client alone: {mean_alone} % on average)\n")
    print("| method | clients better off (%) | mean gain (points) | worst client's gain (points) |")
    print("| --- | --- | --- | --- |")
    for name, (folder, key) in METHODS.items():
        by_seed = gains(partition, folder, key)
        if by_seed:
            better = [100 * float((g > 0).mean()) for g in by_seed.values()]
            mean, worst = [float(g.mean()) for g in by_seed.values()], [float(g.min()) for g in by_seed.values()]
            print(f"| {name} | {spread(better)[1:]} | {spread(mean)} | {spread(worst)} |")


def plot(path: str) -> None:
    """Every client's gain, all seeds, one panel per partition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    partitions = [p for p in PARTITIONS if (HERE / p / "local").exists()]
    fig, axes = plt.subplots(1, len(partitions), figsize=(4 * len(partitions), 4), sharey=True, squeeze=False)
    rng = np.random.default_rng(0)  # the dots' horizontal jitter only
    for ax, partition in zip(axes[0], partitions):
        for i, (folder, key) in enumerate(METHODS.values()):
            values = np.concatenate(list(gains(partition, folder, key).values()) or [np.array([])])
            ax.scatter(i + rng.uniform(-0.2, 0.2, len(values)), values, s=8, alpha=0.5)
            if len(values):
                ax.plot([i - 0.3, i + 0.3], [values.mean()] * 2, color="black")
        ax.axhline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(METHODS)), [n.split(" (")[0] for n in METHODS], rotation=30, ha="right")
        ax.set_title(PARTITIONS[partition])
    axes[0][0].set_ylabel("gain over training alone (points)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    for partition in PARTITIONS:
        if (HERE / partition / "local").exists():
            table(partition)
    if len(sys.argv) > 1:
        plot(sys.argv[1])


if __name__ == "__main__":
    main()
