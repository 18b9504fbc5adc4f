"""Is federating worth it for each client: the local-only baseline, personalization (finetune, FedPer, Ditto) and
the benefit table, against hand computations, convex cases and each other."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fedlearn
from fedlearn import compose
from fedlearn.analysis.benefit import FIGURES, benefit_cells, gains, paired_docs
from fedlearn.analysis.compare import main as compare_main
from fedlearn.analysis.groups import Group
from fedlearn.app import main
from fedlearn.core import seeding
from fedlearn.core.flat import get_flat, set_flat
from fedlearn.core.training import evaluate
from fedlearn.errors import UsageError
from fedlearn.personal.evaluation import own_test_sets

SYNTHETIC = {"dataset": "synthetic", "optimizer": "sgd", "init_lr": 0.05, "batch_size": 20, "no_progress": True,
             "synthetic_devices": 6}  # fmt: skip
ROUNDS = {"global_epoch": 3, "local_epoch": 1, "num_select_clients": 6}
TWO_LAYERS = f"{Path(__file__).with_name('personal_models.py')}:two_layers"  # 976 weights of body, 170 of head
BODY = 976


def run(script, **flags):
    return fedlearn.run(script, **{**SYNTHETIC, **flags})


def final_clients(doc, key="client_accuracy"):
    return doc["final"][key]["per_client"]


def test_local_only_is_each_client_alone_by_hand():
    doc = run("run_baseline", local_only=True, epoch=2)
    cfg = compose.config_for("run_baseline", **SYNTHETIC, local_only=True, epoch=2)
    data = compose.load_data(cfg, "synthetic", torch.device("cpu"))
    model = compose.initial_model(cfg, data)
    initial = get_flat(model)
    partition = compose.make_partition(cfg, data, {})
    tests = compose.client_tests(data, partition)
    correct = tested = 0.0
    for client, (part, own) in enumerate(zip(partition.parts, own_test_sets(tests))):
        set_flat(model, initial)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        generator = seeding.torch_generator(0, seeding.LOCAL_ONLY, client)
        for _ in range(2):
            order = part[torch.randperm(len(part), generator=generator)]
            for batch in order.split(20):
                optimizer.zero_grad()
                F.cross_entropy(model(data.train_x[batch]), data.train_y[batch]).backward()
                optimizer.step()
        result = evaluate(model, tests.x[own], tests.y[own])
        assert final_clients(doc)[client] == pytest.approx(result.accuracy, abs=1e-12)
        correct, tested = correct + result.accuracy * len(own), tested + len(own)
    assert doc["final"]["test_accuracy"] == pytest.approx(correct / tested)
    assert [e["step"] for e in doc["history"]] == [1, 2]


def test_local_only_api_equals_command_line(tmp_path, capsys):
    argv = [f"--{k}={v}" for k, v in SYNTHETIC.items() if k != "no_progress"]
    assert main("run_baseline", [*argv, "--no_progress", "--local_only", "--epoch", "1", "--save",
                                 str(tmp_path / "cli.json")]) == 0  # fmt: skip
    cli = json.loads((tmp_path / "cli.json").read_text())
    api = run("run_baseline", local_only=True, epoch=1)
    assert final_clients(cli) == final_clients(api) and cli["history"][0]["test_loss"] == api["history"][0]["test_loss"]


def test_finetuning_leaves_the_global_model_as_it_is():
    plain = run("run_federated", **ROUNDS)
    tuned = run("run_federated", **ROUNDS, personalize="finetune", finetune_epochs=2)
    keys = ("test_accuracy", "test_loss", "client_accuracy", "samples_trained", "bytes_up")
    assert [[e[k] for k in keys] for e in plain["history"]] == [[e[k] for k in keys] for e in tuned["history"]]
    personal = final_clients(tuned, "personal_client_accuracy")
    assert len(personal) == 6 and personal != final_clients(tuned)


def fedper_parts():
    cfg = compose.config_for("run_federated", **SYNTHETIC, **ROUNDS, personalize="fedper", model=TWO_LAYERS)
    data = compose.load_data(cfg, "synthetic", torch.device("cpu"))
    model = compose.initial_model(cfg, data)
    partition = compose.make_partition(cfg, data, {})
    return compose.setup_clients(cfg, data, partition, {}, get_flat(model)).trainer, get_flat(model)


def test_fedper_keeps_its_layers_and_sends_the_body():
    trainer, weights = fedper_parts()
    head = trainer.personal.index
    assert head.tolist() == list(range(BODY, BODY + 170))  # the last Linear: its weight 10 x 16, its bias
    update = trainer.run(2, weights, 1)
    assert torch.equal(update.payload[head], weights[head])  # nothing of the client's own head is sent
    assert not torch.equal(trainer.personal.kept[2], weights[head])  # ... which it trained and kept
    assert not torch.equal(update.payload[:BODY], weights[:BODY])
    assert update.upload_bytes == BODY * 4
    fresh = trainer.run(2, weights, 2).payload[:BODY]  # its next job starts from its own head ...
    trainer.personal.kept.clear()
    assert not torch.equal(fresh, trainer.run(2, weights, 2).payload[:BODY])  # ... not the global one


def test_fedper_bytes_are_the_body_and_the_server_keeps_its_head():
    doc = run("run_federated", **ROUNDS, personalize="fedper", model=TWO_LAYERS)
    assert doc["final"]["bytes_up"] == doc["final"]["bytes_down"] == 3 * 6 * BODY * 4
    plain = run("run_federated", **ROUNDS, model=TWO_LAYERS)
    assert plain["final"]["bytes_up"] == 3 * 6 * (BODY + 170) * 4


def test_fedper_server_part_ignores_what_a_client_puts_in_the_head():
    trainer, weights = fedper_parts()
    from fedlearn.server.pipeline import Batch

    lying = weights.clone()
    lying[BODY:] = 99.0
    kept = trainer.personal.server_part(Batch([lying, torch.zeros(3)], [0, 1], [1.0, 1.0], origin=weights), 1)
    assert torch.equal(kept.rows[0][BODY:], weights[BODY:]) and kept.rows[1].numel() == 3


def test_ditto_with_no_pull_is_local_training_by_hand():
    cfg = compose.config_for("run_federated", **SYNTHETIC, **ROUNDS, personalize="ditto", ditto_lambda=0.0)
    data = compose.load_data(cfg, "synthetic", torch.device("cpu"))
    model = compose.initial_model(cfg, data)
    initial = get_flat(model)
    partition = compose.make_partition(cfg, data, {})
    trainer = compose.setup_clients(cfg, data, partition, {}, initial).trainer
    global_weights = initial + 0.5  # what the server sends does not matter to a personal model without a pull
    for job in (1, 2):
        trainer.run(4, global_weights, job)
    set_flat(model, initial)
    part = partition.parts[4]
    for job in (1, 2):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        order = part[torch.randperm(len(part), generator=seeding.torch_generator(0, seeding.PERSONAL, job, 4))]
        for batch in order.split(20):
            optimizer.zero_grad()
            F.cross_entropy(model(data.train_x[batch]), data.train_y[batch]).backward()
            optimizer.step()
    assert torch.allclose(trainer.personal.kept[4], get_flat(model), atol=1e-6)


def ditto_parts(lam, lr):
    cfg = compose.config_for("run_federated", **{**SYNTHETIC, "init_lr": lr}, **ROUNDS, personalize="ditto",
                             ditto_lambda=lam)  # fmt: skip
    data = compose.load_data(cfg, "synthetic", torch.device("cpu"))
    model = compose.initial_model(cfg, data)
    partition = compose.make_partition(cfg, data, {})
    trainer = compose.setup_clients(cfg, data, partition, {}, get_flat(model)).trainer
    return trainer, get_flat(model), compose.client_tests(data, partition)


def test_ditto_with_a_strong_pull_stays_with_the_global_model():
    # lambda * lr = 1: every personal step lands on the global weights less one tiny gradient step
    trainer, initial, tests = ditto_parts(1e4, 1e-4)
    received = initial + 0.3 * torch.randn(initial.shape, generator=torch.Generator().manual_seed(0))
    trainer.run(4, received, 1)
    personal = trainer.personal.kept[4]
    assert (personal - received).norm() < 1e-3 * (received - initial).norm()
    figures = trainer.personal.accuracies(trainer, tests, received, 1)
    set_flat(trainer.model, received)
    assert figures[4] == tests.accuracies(trainer.model)[4]  # its accuracy is the global model's
    loose, initial, _ = ditto_parts(0.0, 1e-4)
    loose.run(4, received, 1)
    assert (loose.personal.kept[4] - received).norm() > 0.5 * (received - initial).norm()


@pytest.mark.parametrize("personal", ["ditto", "fedper"])
def test_personal_state_resumes_as_if_uninterrupted(tmp_path, personal):
    flags = {"personalize": personal, "model": TWO_LAYERS}
    whole = run("run_federated", **ROUNDS, **flags)
    run("run_federated", **{**ROUNDS, "global_epoch": 2}, **flags, checkpoint=str(tmp_path / "c.pt"))
    resumed = run("run_federated", **ROUNDS, **flags, resume=str(tmp_path / "c.pt"))
    keys = ("test_accuracy", "client_accuracy", "personal_client_accuracy")
    assert [[e[k] for k in keys] for e in resumed["history"]] == [[e[k] for k in keys] for e in whole["history"]]


@pytest.mark.slow
def test_finetuning_with_workers_equals_the_simulation():
    one = run("run_federated", **ROUNDS, personalize="finetune", threads_per_worker=1)
    two = run("run_federated", **ROUNDS, personalize="finetune", threads_per_worker=1, workers=2)
    keys = ("test_accuracy", "client_accuracy", "personal_client_accuracy")
    assert [[e[k] for k in keys] for e in one["history"]] == [[e[k] for k in keys] for e in two["history"]]


def test_ditto_runs_asynchronously():
    doc = run("run_async", **ROUNDS, personalize="ditto")
    assert len(final_clients(doc, "personal_client_accuracy")) == 6


def fake(script, seed, clients, personal=None, fingerprint="abc", local_only=False):
    final = {"client_accuracy": {"per_client": clients}}
    if personal is not None:
        final["personal_client_accuracy"] = {"per_client": personal}
    args = {"seed": seed, "local_only": local_only, "personalize": "ditto" if personal else "none"}
    return {"script": script, "args": args, "final": final, "run": {"client test sets fingerprint": fingerprint}}


def test_benefit_figures_by_hand():
    alone = [0.5, 0.8, 0.6, None]
    ours = [0.7, 0.7, 0.6, 0.9]
    assert gains(ours, alone) == pytest.approx([0.2, -0.1, 0.0])
    figures = {name: figure(gains(ours, alone)) for name, figure in FIGURES}
    assert figures == pytest.approx({"clients better off (%)": 1 / 3, "mean gain (points)": 0.1 / 3,
                                     "median gain (points)": 0.0, "worst client's gain (points)": -0.1})  # fmt: skip
    local = Group(
        ("lo_seed-0", "lo_seed-1"),
        (
            fake("run_baseline", 0, alone, local_only=True),
            fake("run_baseline", 1, [0.5, 0.5, 0.5, 0.5], local_only=True),
        ),
    )
    fed = Group(("fed_seed-0", "fed_seed-1"), (fake("run_federated", 0, ours, [0.9, 0.9, 0.9, 0.9]),
                                               fake("run_federated", 1, [0.6, 0.4, 0.5, 0.5])))  # fmt: skip
    cells = benefit_cells(fed, local, "client_accuracy")
    # seed 0: 1 of 3 better, mean +3.33; seed 1: 1 of 4, mean 0: over the two seeds 29.17 % and +1.67 points
    assert cells[0].startswith("29.17 ± ") and cells[1].startswith("+1.67 ± ")
    assert cells[3].startswith("-10.00 ± 0.00")  # the worst client loses 10 points in both seeds


def test_benefit_refuses_runs_of_other_clients():
    local = Group(("lo",), (fake("run_baseline", 0, [0.5], local_only=True),))
    other = Group(("fed",), (fake("run_federated", 0, [0.6], fingerprint="xyz"),))
    with pytest.raises(UsageError, match="fed: its clients' test sets are not those of the local-only run"):
        paired_docs(other, local)


def test_compare_prints_the_benefit_table(tmp_path, capsys):
    paths = []
    for seed in (0, 1):
        for script, flags in (("run_baseline", {"local_only": True, "epoch": 1}),
                              ("run_federated", {**ROUNDS, "personalize": "finetune"})):  # fmt: skip
            doc = run(script, seed=seed, **flags)
            path = tmp_path / f"{script}_{'lo' if script == 'run_baseline' else 'ft'}_seed-{seed}.json"
            path.write_text(json.dumps(doc))
            paths.append(str(path))
    capsys.readouterr()
    assert compare_main([*paths, "--clients"]) == 0
    out = capsys.readouterr().out
    assert "Benefit over training alone" in out and "global" in out and "finetune" in out
    assert "clients better off (%)" in out and "seed 1: each client's accuracy on its own test set" in out
    assert "Cost of federation" not in out  # a local-only run is no centralized baseline


@pytest.mark.parametrize(
    "script, flags, message",
    [
        ("run_baseline", {"personalize": "ditto"}, "--personalize ditto: run_baseline trains one model"),
        ("run_federated", {"personalize": "ditto", "partition": "iid"}, "--personalize ditto: each client is "
                                                                        "evaluated on its own test set"),
        ("run_async", {"personalize": "fedper"}, "--personalize fedper: the personal layers are kept out"),
        ("run_federated", {"personalize": "fedper", "compress": "topk"}, "--personalize fedper with --compress topk"),
        ("run_federated", {"personalize": "ditto", "workers": 2}, "--personalize ditto keeps each client's"),
        ("run_federated", {"personalize": "fedper", "drift_correction": "scaffold"}, "two kinds of per-client state"),
        ("run_baseline", {"local_only": True, "partition": "iid"}, "--local_only: each client's model is evaluated"),
        ("run_federated", {"personalize": "fedper", "personal_layers": "fc9", "model": TWO_LAYERS},
         "--personal_layers: the model has no module 'fc9' with parameters (it has 0, 2)"),
        ("run_federated", {"personalize": "fedper"}, "--personal_layers last: that is every layer"),
    ],
)  # fmt: skip
def test_refusals(capsys, script, flags, message):
    argv = [f"--{k}={v}" if v is not True else f"--{k}" for k, v in {**SYNTHETIC, **flags}.items()]
    assert main(script, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
