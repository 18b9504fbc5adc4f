"""Your own model and data from Python: the six hospitals' patients (examples/hospitals.py) and an MLP
(examples/models.py), trained centrally, with FedAvg and with FedAsync, each hospital one client.

    python3 examples/own_data_api.py [--rounds 10]
"""

import argparse
import contextlib
import io
import sys
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # fedlearn, when run from a checkout

from hospitals import hospitals  # noqa: E402
from models import mlp  # noqa: E402

import fedlearn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="FedAvg rounds (the baseline: as many epochs)")
    rounds = parser.parse_args().rounds
    data = hospitals()
    common = {"dataset": data, "model": mlp, "optimizer": "sgd", "init_lr": 0.05, "batch_size": 32,
              "no_progress": True}  # fmt: skip
    federated = {"global_epoch": rounds, "local_epoch": 1, "num_select_clients": 3}
    with contextlib.redirect_stdout(io.StringIO()):  # each run's own tables: this script prints its own
        runs = {
            "centralized": fedlearn.run("run_baseline", epoch=rounds, **common),
            "FedAvg": fedlearn.run("run_federated", **federated, **common),
            "FedAsync": fedlearn.run("run_async", **federated, **common),
        }
    rows = [[name, f"{100 * doc['final']['test_accuracy']:.2f}", f"{doc['final']['test_loss']:.4f}",
             "-" if doc["final"]["sim_time"] is None else f"{doc['final']['sim_time']:.1f}",
             f"{100 * doc['final'].get('client_accuracy', {}).get('worst_10pct', float('nan')):.2f}"]
            for name, doc in runs.items()]  # fmt: skip
    print(tabulate(rows, headers=["run", "test accuracy (%)", "test loss", "simulated s", "worst hospital (%)"],
                   tablefmt="github"))  # fmt: skip


if __name__ == "__main__":
    main()
