"""SCAFFOLD (Karimireddy et al. 2020) on a convex problem where FedAvg provably drifts, and its bookkeeping."""

import pytest
import torch
from torch import nn

from fedlearn.client import LocalJobConfig, LocalTrainer
from fedlearn.core.flat import get_flat
from fedlearn.data import Dataset
from fedlearn.loops.rounds import RoundTask, local_rounds
from fedlearn.server.scaffold import ServerControl
from fedlearn.server.synchronous import SyncServer

CLIENTS, PER_CLIENT, FEATURES, CLASSES = 4, 50, 3, 3


def heterogeneous_data() -> tuple[Dataset, list[torch.Tensor]]:
    """Multinomial logistic regression (convex), every client with its own feature shift and label mix."""
    g = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for k in range(CLIENTS):
        x = torch.randn(PER_CLIENT, FEATURES, generator=g) + 1.0 * torch.randn(FEATURES, generator=g)
        y = (torch.rand(PER_CLIENT, generator=g) * CLASSES * (0.3 + 0.7 * k / CLIENTS)).long().clamp(max=CLASSES - 1)
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    data = Dataset("convex", x, y, x, y, (0.0,), (1.0,), "test", num_classes=CLASSES)
    return data, [torch.arange(k * PER_CLIENT, (k + 1) * PER_CLIENT) for k in range(CLIENTS)]


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(FEATURES, CLASSES)


def optimum(data: Dataset) -> torch.Tensor:
    """The centralized minimizer (clients are of equal size: FedAvg's objective), by full-batch L-BFGS."""
    m = model()
    opt = torch.optim.LBFGS(m.parameters(), max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(m(data.train_x), data.train_y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return get_flat(m)


def federate(data, parts, drift_correction, rounds, picked=None):
    """``rounds`` rounds of 10 full-batch SGD steps per client at rate 0.5; returns the server and trainer."""
    config = LocalJobConfig("sgd", 0.5, PER_CLIENT, 10, seed=0, drift_correction=drift_correction)
    trainer = LocalTrainer(model(), data, parts, config)
    start = get_flat(trainer.model)
    control = ServerControl(start.numel(), CLIENTS) if drift_correction == "scaffold" else None
    server, execute = SyncServer(start, control=control), local_rounds(trainer)
    for r in range(1, rounds + 1):
        chosen = picked(r) if picked else list(range(CLIENTS))
        results = execute(RoundTask(chosen, server.weights, r, control.c if control else None), lambda _: None)
        server.step([u.payload for u in results], chosen, [u.num_samples for u in results], r,
                    [u.control_delta for u in results])  # fmt: skip
    return server, trainer


def test_scaffold_reaches_the_optimum_where_fedavg_drifts():
    data, parts = heterogeneous_data()
    best = optimum(data)
    fedavg, _ = federate(data, parts, "none", rounds=150)
    scaffold, _ = federate(data, parts, "scaffold", rounds=150)
    drift, corrected = (float((s.weights - best).norm()) for s in (fedavg, scaffold))
    assert drift > 0.3  # FedAvg's fixed point with 10 local steps is not the optimum (measured: 0.336)
    assert corrected < 1e-4  # SCAFFOLD's is (measured: about 1e-5, float32)


def test_full_participation_keeps_c_the_mean_of_the_client_controls():
    data, parts = heterogeneous_data()
    server, trainer = federate(data, parts, "scaffold", rounds=3)
    mean = torch.stack([trainer.objective.controls[k] for k in range(CLIENTS)]).mean(dim=0)
    assert torch.allclose(server.control.c, mean, atol=1e-6)
    assert server.control.summary()["clients_with_control_variates"] == CLIENTS


def test_clients_not_picked_keep_their_control_variates():
    data, parts = heterogeneous_data()

    def picked(r):
        return [0, 1] if r % 2 else [2, 3]

    server, trainer = federate(data, parts, "scaffold", rounds=2, picked=picked)
    snapshots = {k: v.clone() for k, v in trainer.objective.controls.items()}
    # round 3 picks 0 and 1 again: 2 and 3 must be untouched, 0 and 1 must change
    results = local_rounds(trainer)(RoundTask([0, 1], server.weights, 3, server.control.c), lambda _: None)
    assert all(torch.equal(trainer.objective.controls[k], snapshots[k]) for k in (2, 3))
    assert not any(torch.equal(trainer.objective.controls[k], snapshots[k]) for k in (0, 1))
    assert all(torch.allclose(u.control_delta, trainer.objective.controls[u.client] - snapshots[u.client])
               for u in results)  # fmt: skip


def test_the_server_applies_a_third_of_the_deltas_for_one_of_three_clients():
    control = ServerControl(2, num_clients=3)
    control.update([1], [torch.zeros(2)], [torch.tensor([3.0, -6.0])])
    assert control.c.tolist() == pytest.approx([1.0, -2.0])  # (|S|/N) mean(delta c_i) = (1/3) [3, -6]
    control.update([0, 2], [torch.zeros(2), torch.zeros(3)], [torch.ones(2), torch.ones(2)])  # client 2's row is bad
    assert control.c.tolist() == pytest.approx([1.0 + 1 / 3, -2.0 + 1 / 3]) and control.seen == {0, 1}


def test_the_client_control_variate_follows_option_ii_by_hand():
    from fedlearn.client.objectives import Job, Scaffold

    client = Scaffold(lr=0.25)
    job = Job(7, start=torch.tensor([1.0, 1.0]), control=torch.tensor([0.5, 0.5]))
    # c_i = 0 at first; (x - y) / (K eta) = [0.5, -1] / 0.5 = [1, -2]; c_i+ = 0 - [0.5, 0.5] + [1, -2]
    delta = client.finish(job, trained=torch.tensor([0.5, 2.0]), steps=2)
    assert delta.tolist() == [0.5, -2.5] and client.controls[7].tolist() == [0.5, -2.5]
    # again, from c_i = [0.5, -2.5] with c = 0 and no movement: c_i+ = c_i - 0 + 0, a zero change
    again = client.finish(Job(7, torch.tensor([1.0, 1.0]), torch.zeros(2)), torch.tensor([1.0, 1.0]), steps=4)
    assert again.tolist() == [0.0, 0.0] and client.controls[7].tolist() == [0.5, -2.5]


def test_one_local_step_moves_by_minus_eta_times_the_correction():
    data, parts = heterogeneous_data()
    one_step = LocalJobConfig("sgd", 0.5, PER_CLIENT, 1, seed=0)
    start = get_flat(model())
    plain = LocalTrainer(model(), data, parts, one_step).run(0, start, 1)
    corrected_trainer = LocalTrainer(model(), data, parts, LocalJobConfig("sgd", 0.5, PER_CLIENT, 1, seed=0,
                                                                          drift_correction="scaffold"))  # fmt: skip
    c = torch.linspace(-1, 1, start.numel())
    corrected = corrected_trainer.run(0, start, 1, control=c)  # c_i = 0: the correction is c
    assert torch.allclose(corrected.payload - plain.payload, -0.5 * c, atol=1e-6)
