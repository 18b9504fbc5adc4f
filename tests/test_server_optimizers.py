"""Server optimizers (--server_opt) against the formulas of Reddi et al. 2021 and Hsu et al. 2019, by hand."""

import math

import pytest
import torch

from fedlearn.server.steps import Combined, ServerOptConfig, build_step

W0 = [1.0, -2.0]
DELTAS = [[0.5, -1.0], [-0.25, 0.5], [1.0, 0.0]]


def run(config: ServerOptConfig, deltas=DELTAS, start=W0) -> list[list[float]]:
    """The weights after each step, stepping on ``deltas`` as pseudo-gradients."""
    step, w, out = build_step(optimizer=config), torch.tensor(start, dtype=torch.float64), []
    for d in deltas:
        w = step.apply(w, Combined(torch.tensor(d, dtype=torch.float64), is_point=False))
        out.append(w.tolist())
    return out


def by_hand(second_moment, eta, b1, b2, tau) -> list[list[float]]:
    """Algorithm 2 of Reddi et al., coordinate by coordinate in plain floats, from m = v = 0."""
    w, m, v, out = list(W0), [0.0, 0.0], [0.0, 0.0], []
    for d in DELTAS:
        for i in range(2):
            m[i] = b1 * m[i] + (1 - b1) * d[i]
            v[i] = second_moment(v[i], d[i] ** 2, b2)
            w[i] = w[i] + eta * m[i] / (math.sqrt(v[i]) + tau)
        out.append(list(w))
    return out


SIGN = lambda x: (x > 0) - (x < 0)  # noqa: E731
SECOND_MOMENTS = {
    "adagrad": lambda v, d2, b2: v + d2,
    "adam": lambda v, d2, b2: b2 * v + (1 - b2) * d2,
    "yogi": lambda v, d2, b2: v - (1 - b2) * d2 * SIGN(v - d2),
}


@pytest.mark.parametrize("name", SECOND_MOMENTS)
def test_adaptive_optimizers_follow_algorithm_2_for_three_steps(name):
    config = ServerOptConfig(name, lr=0.1, b1=0.9, b2=0.99, tau=0.01)
    expected = by_hand(SECOND_MOMENTS[name], 0.1, 0.9, 0.99, 0.01)
    for got, want in zip(run(config), expected):
        assert got == pytest.approx(want, rel=1e-12)


def test_fedadam_first_step_by_hand():
    # m = 0.1 * 0.5 = 0.05; v = 0.01 * 0.25 = 0.0025; w = 1 + 0.1 * 0.05 / (0.05 + 0.01) = 1 + 1/12
    # second coordinate: m = -0.1, v = 0.01, w = -2 + 0.1 * -0.1 / (0.1 + 0.01) = -2 - 1/11
    w = run(ServerOptConfig("adam", lr=0.1, b1=0.9, b2=0.99, tau=0.01))[0]
    assert w == pytest.approx([1 + 1 / 12, -2 - 1 / 11], rel=1e-12)


def test_fedyogi_differs_from_fedadam_where_v_is_above_d_squared():
    adam = run(ServerOptConfig("adam", lr=0.1, tau=0.01))
    yogi = run(ServerOptConfig("yogi", lr=0.1, tau=0.01))
    assert adam[0] == yogi[0]  # from v = 0 < D^2 both make v = (1 - b2) D^2
    assert adam[2] != pytest.approx(yogi[2])  # later Adam decays v by b2, Yogi only adds (1 - b2) D^2 here


def test_fedavgm_accumulates_momentum():
    # u1 = D1; u2 = 0.5 u1 + D2 = [0, 0]; u3 = 0.5 u2 + D3 = [1, 0]; w += 2 u
    got = run(ServerOptConfig("avgm", lr=2.0, momentum=0.5))
    assert got == [[2.0, -4.0], [2.0, -4.0], [4.0, -4.0]]


def test_sgd_at_rate_one_returns_the_rules_point_itself():
    step = build_step()
    point = torch.tensor([3.0, 4.0])
    assert step.apply(torch.zeros(2), Combined(point, is_point=True)) is point  # FedAvg, bit for bit
    assert run(ServerOptConfig("sgd", lr=0.5)) == [[1.25, -2.5], [1.125, -2.25], [1.625, -2.25]]


def test_fedadam_with_a_huge_tau_approaches_sgd_at_eta_over_tau():
    eta, tau = 1e3, 1e6
    adam = run(ServerOptConfig("adam", lr=eta, b1=0.0, tau=tau))
    sgd = run(ServerOptConfig("sgd", lr=eta / tau))
    for a, s in zip(adam, sgd):
        assert a == pytest.approx(s, rel=1e-6)
    small_tau = run(ServerOptConfig("adam", lr=eta, b1=0.0, tau=1.0))
    assert small_tau[0] != pytest.approx(sgd[0], rel=1e-3)


@pytest.mark.parametrize("name", ["avgm", "adam", "yogi", "adagrad"])
def test_state_restored_into_a_new_optimizer_continues_bit_for_bit(name):
    config = ServerOptConfig(name, lr=0.1, tau=0.01)
    first = build_step(optimizer=config)
    assert first.state() == {}
    w = torch.tensor(W0, dtype=torch.float64)
    for d in DELTAS[:2]:
        w = first.apply(w, Combined(torch.tensor(d, dtype=torch.float64), False))
    second = build_step(optimizer=config)
    second.restore(first.state())
    last = torch.tensor(DELTAS[2], dtype=torch.float64)
    assert torch.equal(first.apply(w, Combined(last, False)), second.apply(w, Combined(last, False)))


def test_a_point_is_stepped_on_as_its_delta_from_the_weights():
    config = ServerOptConfig("adam", lr=0.1, tau=0.01)
    w = torch.tensor(W0, dtype=torch.float64)
    as_delta = build_step(optimizer=config).apply(w, Combined(torch.tensor(DELTAS[0], dtype=torch.float64), False))
    as_point = build_step(optimizer=config).apply(w, Combined(w + torch.tensor(DELTAS[0], dtype=torch.float64), True))
    assert torch.allclose(as_delta, as_point, rtol=0, atol=1e-15)


def test_compare_names_the_server_optimizer_and_the_drift_correction():
    from fedlearn.analysis.compare import run_label

    doc = {"script": "run_federated", "args": {"server_opt": "adam", "server_lr": 0.01, "drift_correction": "scaffold"}}
    assert run_label(doc) == "FedAvg + SCAFFOLD + server adam 0.01"
    plain = {"script": "run_federated", "args": {"server_opt": "sgd", "server_lr": 1.0, "drift_correction": "none"}}
    assert run_label(plain) == "FedAvg"
    mixing = {"script": "run_async", "args": {"algorithm": "fedasync", "server_opt": "sgd", "server_lr": 0.5}}
    assert run_label(mixing) == "FedAsync"  # FedAsync has no server step to name
    buffered = {"script": "run_async", "args": {"algorithm": "fedbuff", "server_opt": "yogi", "server_lr": 0.01}}
    assert run_label(buffered) == "FedBuff + server yogi 0.01"
