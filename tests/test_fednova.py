"""FedNova (Wang et al. 2020): normalized averaging against hand computations and against FedAvg."""

import json

import pytest
import torch

from fedlearn.app import main
from fedlearn.server.fednova import FedNova, momentum_norm, normalized_rows
from fedlearn.server.pipeline import Batch, RobustAggregator, ServerPipeline
from fedlearn.server.steps import build_step
from fedlearn.server.synchronous import SyncServer


def test_momentum_norm_sums_each_gradients_weight():
    assert momentum_norm(4, 0.0) == 4.0
    # rho = 0.5, 3 steps: the gradients of steps 1, 2, 3 are counted 1.75, 1.5 and 1 times: 4.25
    assert momentum_norm(3, 0.5) == pytest.approx(4.25)
    assert momentum_norm(1, 0.9) == pytest.approx(1.0)


def fednova_round(rows, counts, steps, momentum=0.0):
    origin = torch.zeros(2, dtype=torch.float32)
    server = SyncServer(
        origin,
        ServerPipeline(RobustAggregator(2), build_step(), FedNova(lambda c, key: steps[c], momentum)),
    )
    server.step([torch.tensor(r, dtype=torch.float32) for r in rows], list(range(len(rows))), counts, key=1)
    return server.weights


def test_unequal_steps_give_the_formula_by_hand():
    # p = (1/4, 3/4); ||a|| = (2, 4); tau_eff = 0.5 + 3 = 3.5
    # x+ = 3.5 * (1/4 * [1, 2] / 2 + 3/4 * [3, 0] / 4) = 3.5 * [0.6875, 0.25] = [2.40625, 0.875]
    got = fednova_round([[1.0, 2.0], [3.0, 0.0]], [1, 3], [2, 4])
    assert got.tolist() == pytest.approx([2.40625, 0.875], rel=1e-6)
    fedavg = 0.25 * torch.tensor([1.0, 2.0]) + 0.75 * torch.tensor([3.0, 0.0])  # [2.5, 0.5]: over-weights client 1
    assert not torch.allclose(got.float(), fedavg)


def test_momentum_changes_the_normalization():
    # rho = 0.5: ||a|| = (momentum_norm(2), momentum_norm(4)) = (2.5, 6.125)
    a = [momentum_norm(2, 0.5), momentum_norm(4, 0.5)]
    tau_eff = 0.25 * a[0] + 0.75 * a[1]
    expected = tau_eff * (0.25 * torch.tensor([1.0, 2.0]) / a[0] + 0.75 * torch.tensor([3.0, 0.0]) / a[1])
    got = fednova_round([[1.0, 2.0], [3.0, 0.0]], [1, 3], [2, 4], momentum=0.5)
    assert got.tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_equal_steps_are_fedavg_bit_for_bit():
    origin = torch.zeros(3)
    rows = [torch.randn(3) for _ in range(10)]
    assert all(a is b for a, b in zip(normalized_rows(origin, rows, [5] * 5 + [7] * 5, [3.0] * 10), rows))
    # with momentum, sum_i p_i ||a|| rounds away from ||a|| itself (850.0044981962249 vs ...225): still FedAvg
    norm = momentum_norm(94, 0.9)
    assert all(a is b for a, b in zip(normalized_rows(origin, rows, [6000] * 10, [norm] * 10), rows))


def test_a_malformed_row_is_left_for_the_checks():
    origin = torch.zeros(3)
    rows = [torch.ones(3), torch.ones(4)]
    out = normalized_rows(origin, rows, [1, 1], [1.0, 2.0])
    assert out[1] is rows[1] and torch.allclose(out[0], torch.full((3,), 1.5))


def test_fednova_needs_an_origin():
    with pytest.raises(ValueError, match="origin"):
        FedNova(lambda c, key: 1)(Batch([torch.ones(2)], [0], [1.0]), 1)


@pytest.mark.slow
def test_run_federated_with_fednova_is_fedavg_when_clients_take_equal_steps(tiny_data_dir, tmp_path):
    from test_end_to_end import TINY

    def run(script, data_dir, out, *extra):  # in this process: four runs, no interpreter start-up each
        argv = ["--data_dir", str(data_dir), "--save", str(out), "--no_progress", *TINY, *extra]
        assert main(script.removesuffix(".py"), argv) == 0
        return None, json.loads(out.read_text())

    sgd = ("--optimizer", "sgd", "--init_lr", "0.05")  # 400 samples, 5 IID clients of 80: 4 batches each
    _, fedavg = run("run_federated.py", tiny_data_dir, tmp_path / "a.json", *sgd)
    _, fednova = run("run_federated.py", tiny_data_dir, tmp_path / "b.json", *sgd, "--drift_correction", "fednova")

    def strip(doc):
        return [{k: v for k, v in e.items() if k not in ("wall_time_s", "time_breakdown_s")} for e in doc["history"]]

    assert strip(fedavg) == strip(fednova)
    _, skewed = run("run_federated.py", tiny_data_dir, tmp_path / "c.json", *sgd, "--drift_correction", "fednova",
                    "--size_skew", "1")  # fmt: skip
    _, skewed_avg = run("run_federated.py", tiny_data_dir, tmp_path / "d.json", *sgd, "--size_skew", "1")
    assert strip(skewed) != strip(skewed_avg)
    assert json.loads((tmp_path / "c.json").read_text())["args"]["drift_correction"] == "fednova"
