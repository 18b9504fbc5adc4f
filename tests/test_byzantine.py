"""The server's defences wired into both federated scripts: attack simulation, checks, clipping, rules."""

import json

import pytest
import torch
from test_cli import call

from conftest import run_script
from fedlearn.client import LocalJobConfig, LocalTrainer
from fedlearn.core import seeding
from fedlearn.core.flat import get_flat
from fedlearn.data import load_dataset
from fedlearn.data.partitions import iid_partition
from fedlearn.models import build_model
from fedlearn.server.asynchronous import AsyncConfig, AsyncServer
from fedlearn.server.pipeline import RobustAggregator, Threat
from fedlearn.server.rules import RuleConfig, weighted_average

D = 4


def points(*rows):
    return [torch.tensor(r, dtype=torch.float32) for r in rows]


def test_plain_mean_is_bit_identical_to_fedavg():
    g = torch.Generator().manual_seed(0)
    sent = list(torch.randn(5, 1000, generator=g))
    counts = [10, 20, 30, 40, 55]
    got = RobustAggregator(1000).combine(sent, range(5), counts, key=1, origin=torch.zeros(1000))
    assert torch.equal(got, weighted_average(torch.stack(sent), torch.tensor(counts, dtype=torch.float64)))


@pytest.mark.parametrize(
    "bad, reason",
    [
        (torch.tensor([float("nan"), 0.0, 0.0, 0.0]), "non-finite"),
        (torch.tensor([float("inf"), 0.0, 0.0, 0.0]), "non-finite"),
        (torch.zeros(3), "shape"),
        (torch.zeros(4, dtype=torch.float64), "dtype"),
    ],
)
def test_a_malformed_update_is_rejected_and_counted_never_applied(bad, reason):
    agg = RobustAggregator(D)
    sent = [*points([1, 1, 1, 1], [3, 3, 3, 3]), bad]
    got = agg.combine(sent, [0, 1, 2], [1, 1, 1], key=1, origin=torch.zeros(D))
    assert torch.equal(got, torch.full((D,), 2.0))
    assert agg.summary()["rejected_updates"] == 1 and agg.summary()["rejected_by_reason"] == {reason: 1}


def test_a_batch_with_too_few_valid_updates_is_skipped():
    agg = RobustAggregator(D, RuleConfig("median", f=1))  # needs 3
    sent = [*points([1, 1, 1, 1], [2, 2, 2, 2]), torch.full((D,), float("nan"))]
    assert agg.combine(sent, [0, 1, 2], [1, 1, 1], key=1, origin=torch.zeros(D)) is None
    assert agg.summary()["skipped_aggregations"] == 1


def test_signflip_under_the_mean_is_the_mean_of_what_the_attackers_send():
    origin = torch.ones(D)
    sent = points([2, 2, 2, 2], [3, 3, 3, 3], [1.5, 1.5, 1.5, 1.5])  # deltas 1, 2, 0.5
    agg = RobustAggregator(D, threat=Threat(byzantine=(2,), attack="signflip", scale=4.0))
    got = agg.combine(sent, [0, 1, 2], [1, 1, 2], key=1, origin=origin)
    # the Byzantine client sends origin - 4 * 0.5 = -1: mean of (2, 3, -1, -1) with counts 1, 1, 2
    assert torch.allclose(got, torch.full((D,), (2 + 3 - 2) / 4))
    assert agg.summary()["byzantine_updates"] == 1


def test_krum_never_selects_a_far_away_byzantine_update_and_counts_it():
    honest = [[1.0 + 0.01 * i, 1, 1, 1] for i in range(5)]
    sent = points(*honest, [1, 1, 1, 1.2])  # client 5 is Byzantine, sign-flipped far away
    agg = RobustAggregator(D, RuleConfig("krum", f=1), Threat(byzantine=(5,), attack="signflip", scale=100.0))
    got = agg.combine(sent, range(6), [1] * 6, key=1, origin=torch.zeros(D))
    assert any(torch.equal(got, h) for h in points(*honest))
    summary = agg.summary()
    assert summary["selected_updates"] == 1 and summary["byzantine_selected"] == 0


def test_clip_norm_bounds_every_update_around_its_origin():
    origin = torch.ones(D)
    agg = RobustAggregator(D, clip=1.0)
    got = agg.combine(points([1, 1, 1, 11]), [0], [1], key=1, origin=origin)  # delta norm 10
    assert torch.allclose(got, torch.tensor([1.0, 1, 1, 2])) and agg.summary()["clipped_updates"] == 1


def test_fedasync_rejects_a_nan_update_and_keeps_its_model():
    w0 = torch.zeros(D)
    server = AsyncServer(w0, AsyncConfig(algorithm="fedasync", staleness="constant"))
    assert not server.receive(torch.full((D,), float("nan")), w0, tau=0, client=3, num_samples=10)
    assert torch.equal(server.weights, w0) and server.version == 0
    assert server.summary()["rejected_updates"] == 1


def test_fedbuff_buffer_goes_through_the_robust_rule():
    w0 = torch.zeros(D)
    cfg = AsyncConfig(algorithm="fedbuff", buffer_size=3, staleness="constant")
    server = AsyncServer(w0, cfg, RobustAggregator(D, RuleConfig("median", f=1)))
    for client, row in enumerate(([1.0] * D, [2.0] * D, [1000.0] * D)):
        server.receive(torch.tensor(row), w0, tau=0, client=client, num_samples=1)
    assert server.version == 1 and torch.equal(server.weights, torch.full((D,), 2.0))  # the mean would be 334.3


def test_label_flip_clients_train_on_flipped_labels(tiny_data_dir):
    data = load_dataset("mnist", tiny_data_dir)
    parts = iid_partition(400, 4, seeding.numpy_rng(0, seeding.PARTITION))
    config = LocalJobConfig(optimizer="adam", lr=1e-3, batch_size=40, epochs=1, seed=0)
    torch.manual_seed(0)
    start = get_flat(build_model("mlp"))
    honest = LocalTrainer(build_model("mlp"), data, parts, config)
    flipping = LocalTrainer(build_model("mlp"), data, parts, config, label_flip=frozenset({1}))
    flipped_data = type(data)(**{**data.__dict__, "train_y": 9 - data.train_y})
    by_hand = LocalTrainer(build_model("mlp"), flipped_data, parts, config)
    assert torch.equal(flipping.run(0, start, 1).payload, honest.run(0, start, 1).payload)  # honest client untouched
    assert torch.equal(flipping.run(1, start, 1).payload, by_hand.run(1, start, 1).payload)
    assert not torch.equal(flipping.run(1, start, 1).payload, honest.run(1, start, 1).payload)


BYZ_BAD_FLAGS = [
    (["--byzantine", "8"], "--byzantine"),
    (["--byzantine", "-1"], "--byzantine"),
    (["--attack", "signflip"], "--attack"),
    (["--byzantine", "1", "--attack", "signflip", "--attack_scale", "0"], "--attack_scale"),
    (["--byzantine", "1", "--attack", "teleport"], "--attack"),
    (["--gar", "average"], "--gar"),
    (["--gar_f", "-1"], "--gar_f"),
    (["--trim", "-1"], "--trim"),
    (["--gm_iters", "0"], "--gm_iters"),
    (["--clip_norm", "0"], "--clip_norm"),
    (["--clip_norm", "inf"], "--clip_norm"),
]
CONDITION_CASES = [  # (script, argv, words the one-line message must hold)
    (
        "run_federated",
        ["--byzantine", "1", "--attack", "signflip", "--gar", "krum"],
        "krum needs n >= 2f + 3 (n=4, f=1)",
    ),
    (
        "run_federated",
        ["--byzantine", "1", "--attack", "alie", "--num_select_clients", "6", "--gar", "bulyan"],
        "bulyan needs n >= 4f + 3 (n=6, f=1)",
    ),
    ("run_federated", ["--gar", "trimmed-mean", "--trim", "2"], "trimmed-mean needs n > 2 * trim (n=4, trim=2)"),
    (
        "run_async",
        ["--algorithm", "fedbuff", "--buffer_size", "4", "--byzantine", "1", "--attack", "signflip", "--gar", "krum"],
        "--buffer_size must be at least 5",
    ),
    ("run_async", ["--gar", "median"], "use --algorithm fedbuff"),
    ("run_async", ["--byzantine", "1", "--attack", "ipm"], "use --algorithm fedbuff"),
]


@pytest.mark.parametrize("script", ["run_federated", "run_async"])
@pytest.mark.parametrize("argv, flag", BYZ_BAD_FLAGS)
def test_bad_byzantine_flags_exit_2_naming_the_flag(script, argv, flag, tiny_data_dir, capsys):
    code, err = call(script, ["--data_dir", str(tiny_data_dir), "--dataset", "mnist", *argv], capsys)
    assert code == 2 and len(err) == 1 and flag in err[0]


@pytest.mark.parametrize("script, argv, words", CONDITION_CASES)
def test_rule_conditions_are_checked_before_training(script, argv, words, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "x.json"
    code, err = call(
        script, ["--data_dir", str(tiny_data_dir), "--dataset", "mnist", "--save", str(out), *argv], capsys
    )
    assert code == 2 and len(err) == 1 and words in err[0] and not out.exists()


TINY = [
    "--batch_size",
    "20",
    "--init_lr",
    "1e-3",
    "--global_epoch",
    "2",
    "--local_epoch",
    "1",
    "--num_clients",
    "6",
    "--num_select_clients",
    "6",
    "--byzantine",
    "1",
    "--no_progress",
]


@pytest.mark.parametrize(
    "script, extra",
    [
        ("run_federated.py", ["--attack", "signflip", "--gar", "multi-krum"]),
        (
            "run_async.py",
            [
                "--attack",
                "alie",
                "--gar",
                "multi-krum",
                "--algorithm",
                "fedbuff",
                "--buffer_size",
                "6",
                "--concurrency",
                "6",
            ],
        ),
    ],
)
@pytest.mark.slow
def test_scripts_report_the_rule_the_threat_and_the_counts(script, extra, tiny_data_dir, tmp_path):
    out = tmp_path / "r.json"
    proc = run_script(script, "--data_dir", str(tiny_data_dir), "--save", str(out), *TINY, *extra)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    final = doc["final"]
    assert final["rule"] == "multi-krum" and len(final["byzantine_clients"]) == 1
    assert doc["clients"]["byzantine"] == final["byzantine_clients"]
    assert final["updates_checked"] == 12 and final["rejected_updates"] == 0
    assert 0 < final["byzantine_updates"] <= 2 and final["selected_updates"] == 2 * 5  # m = n - f = 5 per step
    assert 0 <= final["byzantine_selected"] <= final["byzantine_updates"]
    for row in (
        "Aggregation rule",
        "Byzantine clients (attack)",
        "Rejected updates",
        "Byzantine updates selected / updates selected",
    ):
        assert row in proc.stdout
    assert "Byzantine clients" in proc.stdout.split("Results")[0]  # named in the Hyperparameters table


def test_huge_but_finite_values_are_not_mistaken_for_inf():
    agg = RobustAggregator(D)
    big = torch.full((D,), 3e38)  # its sum overflows, its values do not
    got = agg.combine([big, big, torch.full((D,), float("nan"))], [0, 1, 2], [1, 1, 1], key=1, origin=torch.zeros(D))
    assert torch.equal(got, big) and agg.summary()["rejected_by_reason"] == {"non-finite": 1}
