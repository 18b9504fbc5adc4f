"""Flower's side of the peer benchmark: FedAvg on Fashion-MNIST with Flower's simulation runtime (Ray backend).

Written the way a Flower user writes it: a ``NumPyClient`` inside a ``ClientApp``, the stock
``flwr.server.strategy.FedAvg`` inside a ``ServerApp`` with centralized evaluation, both run by
``flwr.simulation.run_simulation`` on Ray. The workload mirrors fedlearn's ``run_federated.py``: the same
model (``fedlearn.models.build_model("cnn")``), the same data normalization, IID shards of the same sizes,
1 local epoch of plain SGD per round, batch 100.

Run with the benchmark's venv (see README.md), e.g.::

    benchmarks/flower/.venv/bin/python benchmarks/flower/flower_fedavg.py --num_clients 8 --num_select 4 --rounds 1

The last line on stdout is ``FINAL accuracy=<float> loss=<float>`` (the global model on the test set after the
last round).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Before flwr and ray are imported: no telemetry to Flower's or Ray's servers from a benchmark.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    # Flower's Ray backend hands the driver's sys.path to every actor as PYTHONPATH, so fedlearn (and this
    # module, from the script's folder) import there too.
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from flwr.app import Context  # noqa: E402
from flwr.client import NumPyClient  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common import NDArrays, Scalar, ndarrays_to_parameters  # noqa: E402
from flwr.server import ServerAppComponents, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.serverapp import ServerApp  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from fedlearn.models import build_model  # noqa: E402

MODEL = "cnn"
NUM_CLASSES = 10
EVAL_BATCH = 1000


@dataclass(frozen=True)
class Settings:
    """The workload, from the command line; travels to the Ray actors inside the ClientApp."""

    num_clients: int
    num_select: int
    rounds: int
    batch_size: int
    lr: float
    data_dir: str
    seed: int
    cpus_per_client: float
    threads: int


# ---------------------------------------------------------------- data: loaded once per process (driver, actor)

_CACHE: dict[tuple, object] = {}


def load_data(data_dir: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as float tensors (N, 1, 28, 28) normalized with the training set's mean and std; cached."""
    key = ("data", str(Path(data_dir).resolve()))
    if key not in _CACHE:
        start = time.perf_counter()
        train = torchvision.datasets.FashionMNIST(root=data_dir, train=True, download=False)
        test = torchvision.datasets.FashionMNIST(root=data_dir, train=False, download=False)
        train_x = train.data.float().div_(255.0)
        test_x = test.data.float().div_(255.0)
        mean, std = float(train_x.mean()), float(train_x.std())
        _CACHE[key] = (
            train_x.sub_(mean).div_(std).unsqueeze(1).contiguous(),
            train.targets.long(),
            test_x.sub_(mean).div_(std).unsqueeze(1).contiguous(),
            test.targets.long(),
        )
        print(
            f"[flower_fedavg] pid {os.getpid()} loaded Fashion-MNIST in {time.perf_counter() - start:.2f}s "
            f"(torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})",
            file=sys.stderr,
            flush=True,
        )
    return _CACHE[key]  # type: ignore[return-value]


def iid_shards(num_samples: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """A seeded permutation cut into ``num_clients`` near-equal parts (sizes as fedlearn's IID partition)."""
    key = ("shards", num_samples, num_clients, seed)
    if key not in _CACHE:
        _CACHE[key] = np.array_split(np.random.default_rng(seed).permutation(num_samples), num_clients)
    return _CACHE[key]  # type: ignore[return-value]


# ---------------------------------------------------------------- model helpers


def get_weights(model: nn.Module) -> NDArrays:
    return [v.detach().cpu().numpy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: NDArrays) -> None:
    state = {k: torch.from_numpy(np.asarray(w)) for k, w in zip(model.state_dict().keys(), weights)}
    model.load_state_dict(state, strict=True)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), EVAL_BATCH):
            logits = model(x[i : i + EVAL_BATCH])
            target = y[i : i + EVAL_BATCH]
            loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    return loss_sum / len(x), correct / len(x)


# ---------------------------------------------------------------- client side


class FlowerClient(NumPyClient):
    """One virtual client: its IID shard, one local epoch of plain SGD per fit."""

    def __init__(self, partition_id: int, settings: Settings) -> None:
        self.settings = settings
        self.partition_id = partition_id
        train_x, train_y, _, _ = load_data(settings.data_dir)
        idx = torch.from_numpy(iid_shards(len(train_x), settings.num_clients, settings.seed)[partition_id])
        self.x, self.y = train_x[idx], train_y[idx]
        self.model = build_model(MODEL, NUM_CLASSES)

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return get_weights(self.model)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        set_weights(self.model, parameters)
        server_round = int(config.get("server_round", 0))
        gen = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + server_round * 10_007 + self.partition_id)
        loader = DataLoader(
            TensorDataset(self.x, self.y), batch_size=self.settings.batch_size, shuffle=True, generator=gen
        )
        optimizer = torch.optim.SGD(self.model.parameters(), lr=self.settings.lr)
        criterion = nn.CrossEntropyLoss()
        self.model.train()
        loss_sum, seen = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = criterion(self.model(xb), yb)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(yb)
            seen += len(yb)
        return get_weights(self.model), len(self.x), {"train_loss": loss_sum / max(seen, 1)}


@dataclass(frozen=True)
class ClientFactory:
    """``client_fn(context)`` with the settings bound (a class, so Ray pickles it by reference to this module)."""

    settings: Settings

    def __call__(self, context: Context):  # -> flwr.client.Client
        torch.set_num_threads(self.settings.threads)  # C CPUs per client = C torch threads in its actor
        partition_id = int(context.node_config["partition-id"])
        return FlowerClient(partition_id, self.settings).to_client()


# ---------------------------------------------------------------- server side

HISTORY: list[tuple[int, float, float]] = []  # (round, loss, accuracy) of the centralized evaluations, in the driver


def make_evaluate_fn(settings: Settings):
    def evaluate_fn(server_round: int, parameters: NDArrays, config: dict[str, Scalar]):
        _, _, test_x, test_y = load_data(settings.data_dir)
        model = build_model(MODEL, NUM_CLASSES)
        set_weights(model, parameters)
        loss, accuracy = evaluate(model, test_x, test_y)
        HISTORY.append((server_round, loss, accuracy))
        return loss, {"accuracy": accuracy}

    return evaluate_fn


def make_server_fn(settings: Settings):
    def server_fn(context: Context) -> ServerAppComponents:
        torch.manual_seed(settings.seed)
        initial = ndarrays_to_parameters(get_weights(build_model(MODEL, NUM_CLASSES)))
        strategy = FedAvg(
            fraction_fit=settings.num_select / settings.num_clients,
            fraction_evaluate=0.0,
            min_fit_clients=settings.num_select,
            min_evaluate_clients=0,
            min_available_clients=settings.num_clients,
            evaluate_fn=make_evaluate_fn(settings),
            on_fit_config_fn=lambda server_round: {"server_round": server_round},
            initial_parameters=initial,
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=settings.rounds))

    return server_fn


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num_clients", type=int, default=8)
    p.add_argument("--num_select", type=int, default=4, help="clients picked per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--data_dir", default="./data")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--num_cpus",
        type=int,
        default=None,
        help="CPUs Ray may hand out (ray.init(num_cpus=...)); default: Ray's own count of this machine's cores",
    )
    p.add_argument(
        "--cpus_per_client",
        type=float,
        default=float(os.cpu_count() or 1),
        help="Ray num_cpus per client (actors = cores // this); also the torch threads of each actor",
    )
    args = p.parse_args(argv)
    if not 1 <= args.num_select <= args.num_clients:
        p.error("--num_select must be between 1 and --num_clients")
    if args.num_cpus is not None and args.num_cpus < 1:
        p.error("--num_cpus must be at least 1")
    if args.cpus_per_client <= 0:
        p.error("--cpus_per_client must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        num_clients=args.num_clients,
        num_select=args.num_select,
        rounds=args.rounds,
        batch_size=args.batch_size,
        lr=args.lr,
        data_dir=str(Path(args.data_dir).resolve()),
        seed=args.seed,
        cpus_per_client=args.cpus_per_client,
        threads=max(1, int(args.cpus_per_client)),
    )
    random.seed(settings.seed)  # the client manager samples with Python's random, in this process
    np.random.seed(settings.seed)
    load_data(settings.data_dir)  # fail fast on missing files, before Ray starts
    backend_config: dict = {"client_resources": {"num_cpus": settings.cpus_per_client, "num_gpus": 0.0}}
    if args.num_cpus is not None:
        backend_config["init_args"] = {"num_cpus": args.num_cpus}
    run_simulation(
        server_app=ServerApp(server_fn=make_server_fn(settings)),
        client_app=ClientApp(client_fn=ClientFactory(settings)),
        num_supernodes=settings.num_clients,
        backend_name="ray",
        backend_config=backend_config,
    )
    if not HISTORY or HISTORY[-1][0] != settings.rounds:
        print(f"flower_fedavg: no evaluation of round {settings.rounds} (the simulation failed)", file=sys.stderr)
        return 1
    _, loss, accuracy = HISTORY[-1]
    print(f"FINAL accuracy={accuracy:.6f} loss={loss:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    # Run through the importable module, not __main__: Ray then pickles the ClientApp's callables by reference,
    # and each actor keeps this module (and its data cache) across client calls.
    import flower_fedavg

    sys.exit(flower_fedavg.main())
