"""Stragglers cut short in synchronous rounds (--round_stragglers, --straggler_work): who, how many epochs, what
the round trains and counts, FedNova's step counts, the modes, the refusals."""

import json

import numpy as np
import pytest
import torch

from fedlearn import compose
from fedlearn.app import main
from fedlearn.client import LocalJobConfig, LocalTrainer
from fedlearn.client.stragglers import RoundStragglers, straggler_count
from fedlearn.core.seeding import select_clients
from fedlearn.core.training import count_batches
from fedlearn.data import load_dataset

BASE = ["--dataset", "synthetic", "--global_epoch", "4", "--local_epoch", "3", "--num_select_clients", "6",
        "--optimizer", "sgd", "--init_lr", "0.01", "--batch_size", "10", "--no_progress"]  # fmt: skip


def test_count_follows_fedprox_code():
    # FedProx keeps round(K (1 - drop_percent)) clients active: the others straggle
    assert [straggler_count(10, p) for p in (0.0, 0.5, 0.9, 0.96)] == [0, 5, 9, 10]
    assert straggler_count(1, 0.5) == 1 - round(0.5)  # Python rounds half to even: 0 active -> 1 straggler


def test_stragglers_are_picked_clients_with_fewer_epochs_each_round():
    plan = RoundStragglers(seed=3, num_clients=30, num_select=10, share=0.5, epochs=5, work="partial")
    seen = set()
    for r in range(1, 30):
        stragglers = plan.stragglers(r)
        picked = set(select_clients(3, r, 30, 10).tolist())
        assert len(stragglers) == 5 and set(stragglers) <= picked
        assert all(1 <= e <= 4 for e in stragglers.values())
        assert [plan.epochs_of(c, r) for c in sorted(picked - set(stragglers))] == [5] * 5
        seen.update(stragglers.values())
        assert RoundStragglers(3, 30, 10, 0.5, 5, "partial").stragglers(r) == stragglers  # a function of the seed
    assert seen == {1, 2, 3, 4}  # every allowed count drawn over the rounds
    assert plan.active(1, [1, 2]) == [1, 2]  # partial work: everyone trains
    dropping = RoundStragglers(3, 30, 10, 0.5, 5, "drop")
    picked = [int(c) for c in select_clients(3, 1, 30, 10)]
    assert dropping.active(1, picked) == [c for c in picked if c not in dropping.stragglers(1)]


def run(tmp_path, name, *extra):
    path = tmp_path / f"{name}.json"
    assert main("run_federated", [*BASE, *extra, "--save", str(path)]) == 0
    return json.loads(path.read_text())


def sizes(result):
    return result["partition"]["sizes"]


@pytest.mark.parametrize("work", ["drop", "partial"])
def test_rounds_train_and_count_what_the_stragglers_do(tmp_path, work):
    result = run(tmp_path, work, "--round_stragglers", "0.5", "--straggler_work", work)
    plan = RoundStragglers(0, 30, 6, 0.5, 3, work)
    n = sizes(result)
    picked = [[int(c) for c in select_clients(0, r, 30, 6)] for r in range(1, 5)]
    expected_updates = sum(len(plan.active(r, p)) for r, p in enumerate(picked, 1))
    expected_samples = sum(n[c] * plan.epochs_of(c, r) for r, p in enumerate(picked, 1) for c in plan.active(r, p))
    final = result["final"]
    assert final["client_updates"] == expected_updates == (4 * 3 if work == "drop" else 4 * 6)
    assert final["samples_trained"] == expected_samples
    assert final["bytes_down"] == 4 * 6 * 61 * 10 * 4  # every picked client was sent the model (logreg 60x10)
    plain = run(tmp_path, "plain")
    assert final["samples_trained"] < plain["final"]["samples_trained"]
    assert result["history"][-1]["test_loss"] != plain["history"][-1]["test_loss"]


def trainer_with(epochs, stragglers=None):
    cfg = compose.config_for("run_federated", dataset="synthetic")
    data = load_dataset("synthetic", "./data", cfg.flags)
    parts = [torch.nonzero(torch.as_tensor(data.train_clients) == c).flatten() for c in range(30)]
    torch.manual_seed(0)
    model = compose.worker_model(cfg, data)
    job = LocalJobConfig("sgd", 0.01, 10, epochs, seed=0)
    return LocalTrainer(model, data, parts, job, stragglers=stragglers)


def test_a_straggler_job_is_a_shorter_job():
    plan = RoundStragglers(0, 30, 6, 0.5, 4, "partial")
    cut = trainer_with(4, plan)
    client, epochs = next(iter(plan.stragglers(2).items()))
    start = torch.zeros(sum(p.numel() for p in cut.params))
    got = cut.run(client, start, 2)
    want = trainer_with(epochs).run(client, start, 2)
    assert got.stats == want.stats and torch.equal(got.payload, want.payload)
    assert cut.num_batches(client, 2) == count_batches(cut.num_samples(client), 10, epochs) < cut.num_batches(client)


def test_fednova_normalizes_by_the_steps_stragglers_took(tmp_path):
    fednova = ["--drift_correction", "fednova", "--round_stragglers", "0.5", "--straggler_work", "partial"]
    result = run(tmp_path, "nova", *fednova)
    # FedNova with partial work differs from FedAvg with partial work (its step counts differ per client) ...
    fedavg = run(tmp_path, "avg", "--round_stragglers", "0.5", "--straggler_work", "partial")
    assert result["history"][0]["test_loss"] != fedavg["history"][0]["test_loss"]
    # ... and its steps are the stragglers' own: the same as a trainer counts for each job
    trainer = trainer_with(3, RoundStragglers(0, 30, 6, 0.5, 3, "partial"))
    steps = [trainer.num_batches(c, 1) for c in select_clients(0, 1, 30, 6)]
    assert len(set(steps)) > 1


@pytest.mark.slow
def test_stragglers_on_workers_and_resumed_equal_the_simulation(tmp_path):
    extra = ["--round_stragglers", "0.5", "--straggler_work", "partial", "--threads_per_worker", "1"]
    one = run(tmp_path, "one", *extra)
    two = run(tmp_path, "two", *extra, "--workers", "2")
    run(tmp_path, "first", *extra, "--global_epoch", "2", "--checkpoint", str(tmp_path / "c.pt"))
    resumed = run(tmp_path, "resumed", *extra, "--resume", str(tmp_path / "c.pt"))
    figures = [[(e["test_accuracy"], e["test_loss"], e["samples_trained"]) for e in r["history"]]
               for r in (one, two, resumed)]  # fmt: skip
    assert figures[0] == figures[1] == figures[2]


@pytest.mark.parametrize(
    "script, argv, message",
    [
        ("run_async", ["--round_stragglers", "0.5"], "--round_stragglers: stragglers are cut short in synchronous"),
        ("run_federated", ["--round_stragglers", "0.5", "--straggler_work", "partial", "--local_epoch", "1"],
         "--straggler_work partial: stragglers train 1 to --local_epoch - 1 epochs; --local_epoch 1 leaves none"),
        ("run_federated", ["--round_stragglers", "0.9", "--num_select_clients", "2"],
         "--round_stragglers 0.9 --straggler_work drop drops all 2 clients picked each round"),
        ("run_federated", ["--round_stragglers", "1"], "--round_stragglers"),
        ("run_federated", ["--straggler_work", "late"], "--straggler_work"),
    ],
)  # fmt: skip
def test_refusals(capsys, script, argv, message):
    try:
        code = main(script, ["--dataset", "synthetic", "--no_progress", *argv])
    except SystemExit as exc:  # the parser's own refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_off_by_default_and_recorded(tmp_path):
    result = run(tmp_path, "plain")
    assert result["args"]["round_stragglers"] == 0.0 and result["args"]["straggler_work"] == "drop"
    assert np.isclose(result["final"]["client_updates"], 4 * 6)
