"""Client-level DP: the clipped, noised sum by hand, and epsilon from dp-accounting itself."""

import math

import dp_accounting
import pytest
import torch
from dp_accounting.rdp import RdpAccountant

from fedlearn.server.pipeline import RobustAggregator
from fedlearn.server.privacy import Accountant, GaussianSum, PrivacyConfig


def config(clip=1.0, noise=0.0, per_round=2, num_clients=10, delta=1e-5):
    return PrivacyConfig(clip, noise, delta, per_round, num_clients)


def test_each_update_is_clipped_to_s_then_summed_over_the_fixed_denominator():
    origin = torch.tensor([1.0, 1.0])
    rows = torch.stack([origin + torch.tensor([3.0, 4.0]), origin + torch.tensor([0.3, 0.4])])  # norms 5 and 0.5
    part = GaussianSum(config(clip=1.0, per_round=4))  # K = 4 though 2 arrived: the fixed denominator
    point = part.combine(rows, origin, key=1)
    assert torch.allclose(point, origin + (torch.tensor([0.6, 0.8]) + torch.tensor([0.3, 0.4])) / 4)
    assert part.clipped == 1


def test_clipped_norms_never_exceed_s():
    deltas = torch.randn(50, 30, generator=torch.Generator().manual_seed(0)) * torch.logspace(-2, 2, 50).unsqueeze(1)
    part = GaussianSum(config(clip=0.7, per_round=1))
    for row in deltas:
        assert float(part.combine(row.unsqueeze(0), None, key=0).norm()) <= 0.7 * (1 + 1e-6)


def test_the_noise_has_standard_deviation_z_s_on_the_sum():
    part = GaussianSum(config(clip=0.5, noise=2.0, per_round=3), seed=4)
    noise = part.combine(torch.zeros(1, 200_000), None, key=7) * 3  # times K: the noise on the sum
    assert float(noise.std()) == pytest.approx(1.0, rel=0.01) and abs(float(noise.mean())) < 0.01
    again = GaussianSum(config(clip=0.5, noise=2.0, per_round=3), seed=4).combine(torch.zeros(1, 200_000), None, 7)
    assert torch.equal(again * 3, noise)  # seeded by (seed, round)
    assert not torch.equal(part.combine(torch.zeros(1, 200_000), None, key=8) * 3, noise)


def test_the_aggregator_hands_checked_rows_to_the_dp_sum():
    aggregator = RobustAggregator(2, privacy=GaussianSum(config(clip=1.0, per_round=2)))
    sent = [torch.tensor([3.0, 4.0]), torch.tensor([float("nan"), 0.0])]
    assert torch.allclose(aggregator.combine(sent, [0, 1], [5, 5], key=1), torch.tensor([0.3, 0.4]))
    assert aggregator.summary()["rejected_by_reason"] == {"non-finite": 1}
    assert aggregator.summary()["dp_clipped_updates"] == 1


@pytest.mark.parametrize("rounds", [1, 10, 100])
def test_epsilon_is_dp_accountings_answer_for_the_same_event(rounds):
    c = config(noise=1.1, per_round=10, num_clients=100)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(100, 10, dp_accounting.GaussianDpEvent(1.1 / 2)), rounds
    )
    reference = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    reference.compose(event)
    assert Accountant(c).epsilon_rdp(rounds) == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)


def attained_delta(epsilon, q, sigma, sensitivity=2.0):
    """delta(epsilon) of the pair fedlearn's mechanism attains in one round, by hand: the others send -x, the one
    that differs x or -x; ``(1 - q) N(0, s^2) + q N(2S, s^2)`` against ``N(0, s^2)``, both orders (S = 1)."""
    from scipy.stats import norm

    def one_way(p_mix):  # H_e^eps(P || Q): the likelihood ratio is monotone in x, so {P > e^eps Q} is a half-line
        if p_mix:  # P = mixture, Q = N(0): L(x) = log(1 - q + q exp((d x - d^2/2) / s^2)) > eps  <=>  x > t
            ratio = (math.exp(epsilon) - (1 - q)) / q
            t = sigma**2 / sensitivity * math.log(ratio) + sensitivity / 2
            p = (1 - q) * norm.sf(t / sigma) + q * norm.sf((t - sensitivity) / sigma)
            return p - math.exp(epsilon) * norm.sf(t / sigma)
        # P = N(0), Q = mixture: N(0) > e^eps mixture  <=>  x < t (when e^-eps > 1 - q)
        if math.exp(-epsilon) <= 1 - q:
            return 0.0
        t = sigma**2 / sensitivity * math.log((math.exp(-epsilon) - (1 - q)) / q) + sensitivity / 2
        mix = (1 - q) * norm.cdf(t / sigma) + q * norm.cdf((t - sensitivity) / sigma)
        return norm.cdf(t / sigma) - math.exp(epsilon) * mix

    return max(one_way(True), one_way(False))


@pytest.mark.parametrize("clients, per_round, noise", [(100, 10, 1.1), (1000, 100, 1.0), (50, 25, 2.0)])
def test_one_round_is_the_attained_pairs_epsilon(clients, per_round, noise):
    from scipy.optimize import brentq

    q, sigma = per_round / clients, noise  # clip S = 1: std z, sensitivity 2
    exact = brentq(lambda e: attained_delta(e, q, sigma) - 1e-5, 1e-9, 50)
    tight = Accountant(config(noise=noise, per_round=per_round, num_clients=clients)).epsilon(1)
    assert exact <= tight <= exact * 1.002 + 1e-3  # never below what the mechanism attains; pessimistic by rounding


@pytest.mark.parametrize("clients, per_round, noise, rounds, delta",
                         [(1000, 100, 1.0, 30, 1e-5), (100, 10, 1.1, 50, 1e-6), (500, 50, 2.0, 200, 1e-5)])  # fmt: skip
def test_tight_epsilon_is_the_pld_of_the_dominating_pair(clients, per_round, noise, rounds, delta):
    from dp_accounting.pld import PLDAccountant

    reference = PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=1e-4)
    event = dp_accounting.PoissonSampledDpEvent(per_round / clients, dp_accounting.GaussianDpEvent(noise / 2))
    reference.compose(event, rounds)
    accountant = Accountant(config(noise=noise, per_round=per_round, num_clients=clients, delta=delta))
    tight = accountant.epsilon(rounds)
    assert tight == pytest.approx(reference.get_epsilon(delta), rel=1e-4)
    assert tight < accountant.epsilon_rdp(rounds)  # the RDP bound stays beside it, never below


def test_epsilon_falls_as_the_noise_grows_and_grows_with_the_rounds():
    by_noise = [Accountant(config(noise=z, per_round=10, num_clients=100)).epsilon(20) for z in (1.0, 2.0, 4.0)]
    assert by_noise[0] > by_noise[1] > by_noise[2] > 0
    accountant = Accountant(config(noise=1.0, per_round=10, num_clients=100))
    by_rounds = [accountant.epsilon(r) for r in (1, 10, 100)]
    assert 0 < by_rounds[0] < by_rounds[1] < by_rounds[2] and accountant.epsilon(0) == 0
    assert Accountant(config(noise=0.0)).epsilon(1) == float("inf")  # clipping alone gives no privacy


def test_run_federated_reports_epsilon_after_every_round(tiny_data_dir, tmp_path, capsys):
    import json

    from test_end_to_end import TINY

    from fedlearn.app import main

    out = tmp_path / "dp.json"
    argv = ["--data_dir", str(tiny_data_dir), "--save", str(out), "--no_progress", *TINY, "--dp_clip", "0.5",
            "--dp_noise", "0.8", "--dp_delta", "1e-4"]  # fmt: skip
    assert main("run_federated", argv) == 0
    doc = json.loads(out.read_text())
    accountant = Accountant(config(clip=0.5, noise=0.8, per_round=2, num_clients=5, delta=1e-4))
    assert [e["dp_epsilon"] for e in doc["history"]] == [accountant.epsilon(r) for r in (1, 2, 3)]
    assert [e["dp_epsilon_rdp"] for e in doc["history"]] == [accountant.epsilon_rdp(r) for r in (1, 2, 3)]
    assert doc["final"]["dp_epsilon_rdp"] > doc["final"]["dp_epsilon"] and "tight" in doc["final"]["dp_accountant"]
    assert doc["final"]["dp_epsilon"] == doc["history"][-1]["dp_epsilon"] and doc["final"]["dp_delta"] == 1e-4
    assert "Privacy loss epsilon (delta 0.0001)" in capsys.readouterr().out


def test_parts_built_from_python_refuse_what_the_flags_refuse(tiny_data_dir, capsys):
    """Every combination the flags refuse is refused where the part is built, by the same rule (one message)."""
    from fedlearn import compose
    from fedlearn.app import main
    from fedlearn.client import LocalJobConfig, LocalTrainer
    from fedlearn.client.uplink import Uplink
    from fedlearn.comm.codecs import QSGD, TopK
    from fedlearn.errors import UsageError
    from fedlearn.models import build_model
    from fedlearn.personal.strategies import FedPer
    from fedlearn.server.rules import RuleConfig

    def flag_message(*argv):
        assert main("run_federated", ["--data_dir", str(tiny_data_dir), "--dataset", "mnist", *argv]) == 2
        return capsys.readouterr().err.strip().split(": error: ", 1)[1]

    qsgd_ef = flag_message("--compress", "qsgd", "--error_feedback")
    with pytest.raises(UsageError) as refused:
        Uplink(QSGD(16), error_feedback=True)
    assert str(refused.value) == qsgd_ef
    Uplink(TopK(0.01), error_feedback=True)  # what the flags accept, the part accepts
    dp_median = flag_message("--dp_clip", "1", "--gar", "median")
    with pytest.raises(UsageError) as refused:
        RobustAggregator(10, RuleConfig("median"), privacy=GaussianSum(config()))
    assert str(refused.value) == dp_median
    dp_clip = flag_message("--dp_clip", "1", "--clip_norm", "2")
    with pytest.raises(UsageError) as refused:
        RobustAggregator(10, clip=2.0, privacy=GaussianSum(config()))
    assert str(refused.value) == dp_clip
    cfg = compose.config_for("run_federated", data_dir=str(tiny_data_dir), dataset="mnist")
    data = compose.load_data(cfg, "mnist", torch.device("cpu"))
    parts = [torch.arange(10)]
    scaffold = flag_message("--drift_correction", "scaffold", "--optimizer", "sgd", "--compress", "topk")
    with pytest.raises(UsageError) as refused:
        LocalTrainer(build_model("mlp"), data, parts, LocalJobConfig("sgd", 0.1, 10, 1, 0, drift_correction="scaffold"),
                     uplink=Uplink(TopK(0.01)))  # fmt: skip
    assert str(refused.value) == scaffold
    fedper = flag_message("--personalize", "fedper", "--client_test_frac", "0.2", "--compress", "qsgd")
    with pytest.raises(UsageError) as refused:
        LocalTrainer(build_model("mlp"), data, parts, LocalJobConfig("sgd", 0.1, 10, 1, 0), uplink=Uplink(QSGD(16)),
                     personal=FedPer(index=torch.arange(10)))  # fmt: skip
    assert str(refused.value) == fedper
