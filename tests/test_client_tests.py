"""--client_test_frac: every client's own held-out test set, and the per-client accuracy on it."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from fedlearn.app import main
from fedlearn.core.training import ClientTests, evaluate
from fedlearn.data.partitions import ClientPartition, PartitionSpec, hold_out

TINY = ["--dataset", "mnist", "--batch_size", "50", "--init_lr", "1e-3", "--local_epoch", "1", "--num_clients", "4",
        "--num_select_clients", "2", "--model", "mlp", "--no_progress", "--epoch", "1",
        "--global_epoch", "1"]  # fmt: skip
ASYNC = ["--max_updates", "2", "--eval_every", "2"]


def test_held_out_sets_are_disjoint_from_training_complete_and_stratified():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 5)
    parts = [torch.arange(0, 20), torch.arange(20, 35)]  # client 0: 10 of label 0, 10 of label 1
    train, test = hold_out(parts, labels, 0.2, np.random.default_rng(0))
    for part, kept, held in zip(parts, train, test):
        assert set(kept.tolist()) | set(held.tolist()) == set(part.tolist())  # complete
        assert not set(kept.tolist()) & set(held.tolist())  # disjoint
    assert torch.bincount(labels[test[0]], minlength=3).tolist() == [2, 2, 0]  # 20 % of 10 and of 10
    assert torch.bincount(labels[test[1]], minlength=3).tolist() == [0, 2, 1]  # 20 % of 10 and of 5 (1.0)


def test_the_held_out_sets_depend_on_the_seed_only():
    labels = torch.arange(100) % 10
    parts = [torch.arange(0, 50), torch.arange(50, 100)]
    a = hold_out(parts, labels, 0.3, np.random.default_rng(5))
    b = hold_out(parts, labels, 0.3, np.random.default_rng(5))
    c = hold_out(parts, labels, 0.3, np.random.default_rng(6))
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert not all(torch.equal(x, y) for x, y in zip(a[1], c[1]))


def test_a_fraction_that_leaves_a_client_nothing_to_train_on_is_refused():
    partition = ClientPartition.create(PartitionSpec(), torch.arange(4) % 2, 4, np.random.default_rng(0))
    with pytest.raises(Exception, match="--client_test_frac 0.5 leaves client 0"):
        partition.holding_out(0.5, torch.arange(4) % 2, np.random.default_rng(0))  # one sample each: 1 held out


class Lookup(nn.Module):
    """Predicts the class stored in the image's first pixel."""

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float()


def test_per_client_accuracy_equals_a_direct_evaluation_of_each_clients_set():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (30,), generator=g)
    guess = torch.where(torch.rand(30, generator=g) < 0.6, y, (y + 1) % 3)
    x = guess.float().view(30, 1, 1, 1)
    held = [torch.tensor([0, 3, 5, 7]), torch.tensor([1, 2, 9, 10, 11, 20]), torch.tensor([], dtype=torch.int64),
            torch.tensor([29])]  # fmt: skip
    got = ClientTests.gather(x, y, held).accuracies(Lookup(), batch_size=4)
    direct = [evaluate(Lookup(), x[h], y[h]).accuracy if len(h) else None for h in held]
    assert got == pytest.approx(direct) and got[2] is None


def _run(script, tiny_data_dir, tmp_path, *extra):
    path = tmp_path / f"{script}.json"
    own = ASYNC if script == "run_async" else []
    assert main(script, ["--data_dir", str(tiny_data_dir), *TINY, *own, "--save", str(path), *extra]) == 0
    return json.loads(path.read_text())


def test_the_three_scripts_hold_out_the_same_samples_and_the_baseline_trains_on_the_rest(tiny_data_dir, tmp_path):
    docs = {s: _run(s, tiny_data_dir, tmp_path, "--client_test_frac", "0.25")
            for s in ("run_baseline", "run_federated", "run_async")}  # fmt: skip
    partitions = [doc["partition"] for doc in docs.values()]
    assert all(p == partitions[0] for p in partitions)  # sizes, label histograms, held-out sizes
    held, kept = sum(partitions[0]["held_out_sizes"]), sum(partitions[0]["sizes"])
    assert held + kept == 400 and 90 <= held <= 110  # a quarter of each client's labels, rounded per label
    assert docs["run_baseline"]["final"]["samples_trained"] == kept  # one epoch over the clients' training parts
    for doc in docs.values():
        clients = doc["final"]["client_accuracy"]
        assert clients["clients"] == 4 and len(doc["history"][-1]["client_accuracy"]) == 4
        assert clients["worst_10pct"] == min(clients["per_client"]) <= clients["mean"] <= clients["best_10pct"]


def test_without_held_out_sets_nothing_changes(tiny_data_dir, tmp_path):
    doc = _run("run_baseline", tiny_data_dir, tmp_path)
    assert "client_accuracy" not in doc["final"] and "partition" not in doc
    assert doc["final"]["samples_trained"] == 400


@pytest.mark.parametrize("value", ["1", "-0.1", "nan"])
def test_a_fraction_outside_0_1_is_a_usage_error(value, tiny_data_dir, capsys):
    code = main("run_federated", ["--data_dir", str(tiny_data_dir), *TINY, "--client_test_frac", value])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "--client_test_frac" in err[0]


def test_a_fraction_leaving_a_client_without_training_data_exits_2(tiny_data_dir, capsys):
    flags = ["--data_dir", str(tiny_data_dir), *TINY, "--num_clients", "400", "--client_test_frac", "0.5"]
    code = main("run_federated", flags)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "--client_test_frac 0.5 leaves client" in err[0]
