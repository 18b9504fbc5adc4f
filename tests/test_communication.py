"""Bytes, compressed updates and bandwidth: each against a hand computation."""

import math

import numpy as np
import pytest
import torch

from fedlearn.client.uplink import Uplink
from fedlearn.comm.clock import ClientLinks, ClientSpeeds, ClockConfig, draw_links
from fedlearn.comm.codecs import QSGD, QSGD_BUCKET, DecodeError, TopK, describe_upload, job_bytes
from fedlearn.server.asynchronous import AsyncConfig, AsyncServer
from fedlearn.server.synchronous import SyncServer


def test_topk_keeps_the_largest_entries_as_int32_indices_then_float32_values():
    delta = torch.tensor([0.5, -3.0, 0.0, 2.0, -0.25, 1.0, 0.0, 0.0, 0.1, 0.0])
    codec = TopK(0.25)  # floor(0.25 * 10) = 2 entries
    payload = codec.encode(delta)
    assert codec.kept(10) == 2 and payload.numel() == codec.payload_bytes(10) == 16
    assert payload[:8].numpy().view("<i4").tolist() == [1, 3]  # ascending indices of -3 and 2
    assert payload[8:].numpy().view("<f4").tolist() == [-3.0, 2.0]
    assert codec.decode(payload, 10).tolist() == [0, -3, 0, 2, 0, 0, 0, 0, 0, 0]
    assert TopK(1e-9).kept(10) == 1  # at least one entry


def test_qsgd_bytes_are_norms_then_sign_and_level_bits():
    # s = 16: 5 level bits + 1 sign bit per entry; 1,000 entries in 2 buckets of 512
    assert QSGD(16).level_bits == 5 and QSGD(16).payload_bytes(1000) == 4 * 2 + math.ceil(1000 * 6 / 8)
    assert QSGD(1).payload_bytes(8) == 4 + 2  # 8 entries x 2 bits
    assert QSGD(3).level_bits == 2 and QSGD(4).level_bits == 3


def test_qsgd_is_exact_where_no_rounding_is_needed():
    delta = torch.tensor([3.0, -4.0])  # norm 5; with s = 5 the levels are exactly 3 and 4
    payload = QSGD(5).encode(delta, torch.Generator().manual_seed(0))
    assert payload.numel() == 4 + 1  # norm, then 2 entries x (1 sign + 3 level bits) = 1 byte
    assert payload[:4].numpy().view("<f4").tolist() == [5.0]
    assert QSGD(5).decode(payload, 2).tolist() == [3.0, -4.0]


def test_qsgd_is_unbiased_and_deterministic_for_a_seed():
    delta = torch.randn(700, generator=torch.Generator().manual_seed(1))
    codec, draws = QSGD(4), 4000
    generator = torch.Generator().manual_seed(2)
    mean = torch.stack([codec.decode(codec.encode(delta, generator), 700) for _ in range(draws)]).mean(dim=0)
    # each entry is off by at most norm / s per draw: the mean's std is at most norm / (2 s sqrt(draws))
    norms = torch.stack([delta[:QSGD_BUCKET].norm(), delta[QSGD_BUCKET:].norm()]).repeat_interleave(QSGD_BUCKET)[:700]
    assert bool(((mean - delta).abs() <= 5 * norms / (2 * 4 * math.sqrt(draws))).all())
    same = [codec.encode(delta, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(same[0], same[1])
    assert not torch.equal(same[0], codec.encode(delta, torch.Generator().manual_seed(8)))


@pytest.mark.parametrize(
    "codec, payload",
    [
        (TopK(0.25), torch.zeros(15, dtype=torch.uint8)),  # one byte short
        (TopK(0.25), torch.zeros(4, dtype=torch.float32)),  # not bytes
        (TopK(0.25), torch.cat([torch.tensor([1, 10], dtype=torch.int32).view(torch.uint8),
                                torch.zeros(2).view(torch.uint8)])),  # index 10 of 10 entries
        (TopK(0.25), torch.cat([torch.tensor([3, 3], dtype=torch.int32).view(torch.uint8),
                                torch.zeros(2).view(torch.uint8)])),  # repeated index
        (QSGD(5), torch.cat([torch.tensor([-1.0]).view(torch.uint8), torch.zeros(5, dtype=torch.uint8)])),
        (QSGD(5), torch.cat([torch.tensor([1.0]).view(torch.uint8), torch.full((5,), 0x70, dtype=torch.uint8)])),
    ],
    ids=["short", "floats", "index-out-of-range", "index-repeated", "negative-norm", "level-above-s"],
)  # fmt: skip
def test_a_malformed_payload_is_a_decode_error(codec, payload):
    with pytest.raises(DecodeError):
        codec.decode(payload, 10)


def test_error_feedback_carries_exactly_what_was_dropped_and_the_sums_converge():
    start, step = torch.zeros(50), torch.linspace(-1, 1, 50)  # every job moves the weights by the same delta
    with_memory, without, codec = Uplink(TopK(0.1), error_feedback=True), Uplink(TopK(0.1)), TopK(0.1)
    sent, unsent, carried, gaps = torch.zeros(50), torch.zeros(50), torch.zeros(50), {}
    for job in range(1, 401):
        payload = with_memory.send(0, job, start, start + step)
        assert torch.allclose(with_memory.residuals[0], step + carried - codec.decode(payload, 50))  # what was dropped
        carried = with_memory.residuals[0]
        sent += codec.decode(payload, 50)
        unsent += codec.decode(without.send(0, job, start, start + step), 50)
        gaps[job] = float((job * step - sent).norm())
    true = 400 * step
    assert torch.allclose(true - sent, carried, atol=1e-3)  # the gap is the residual carried...
    assert gaps[400] < 1.2 * max(gaps[j] for j in range(1, 201))  # ...which stays bounded: no growth with the jobs
    assert gaps[400] < 0.02 * float(true.norm())
    assert float((true - unsent).norm()) > 0.5 * float(true.norm())  # without it, the dropped entries never arrive


def test_residuals_are_per_client_and_survive_a_checkpoint():
    uplink = Uplink(TopK(0.1), error_feedback=True)
    uplink.send(3, 1, torch.zeros(20), torch.arange(20.0))
    restored = Uplink(TopK(0.1), error_feedback=True)
    restored.restore(uplink.state())
    assert list(restored.residuals) == [3] and torch.equal(restored.residuals[3], uplink.residuals[3])
    assert Uplink().state() == {} and Uplink().send(0, 1, torch.zeros(3), torch.ones(3)).dtype == torch.float32


def test_job_bytes_by_hand():
    assert job_bytes(1000, None) == (4000, 4000)
    assert job_bytes(1000, None, with_control=True) == (8000, 8000)  # SCAFFOLD: c down, delta c_i up
    assert job_bytes(1000, TopK(0.01)) == (4000, 80)
    assert "10 of 1,000 entries (80 bytes per update" in describe_upload(TopK(0.01), 1000)


def test_a_bandwidth_limited_job_lasts_download_training_upload_and_two_latencies():
    links = ClientLinks(np.array([8e6, 1e6]), np.array([2e6, np.inf]), latency=0.05, job_bytes=(1_000_000, 250_000))
    speeds = ClientSpeeds(rates=np.array([100.0, 50.0]), comm_delay=0.5, links=links)
    assert speeds.job_duration(0, 300) == pytest.approx(300 / 100 + 0.5 + 2 * 0.05 + 8e6 / 8e6 + 2e6 / 2e6)
    assert speeds.job_duration(1, 300) == pytest.approx(300 / 50 + 0.5 + 2 * 0.05 + 8e6 / 1e6 + 0.0)
    assert speeds.round_duration([0, 1], [300, 300]) == speeds.job_duration(1, 300)


def test_links_are_drawn_once_from_the_seed():
    assert draw_links(5, np.random.default_rng(0), ClockConfig(), (10, 10)) is None  # nothing limited
    fixed = draw_links(4, np.random.default_rng(0), ClockConfig(uplink_mbps=2, latency=0.1), (10, 10))
    assert fixed.up_bps.tolist() == [2e6] * 4 and np.isinf(fixed.down_bps).all() and fixed.latency == 0.1
    config = ClockConfig(uplink_mbps=2, downlink_mbps=20, bandwidth="lognormal", bandwidth_spread=0.5)
    a, b = (draw_links(2001, np.random.default_rng(3), config, (10, 10)) for _ in range(2))
    assert np.array_equal(a.up_bps, b.up_bps) and np.allclose(a.down_bps / a.up_bps, 10)
    assert np.median(a.up_bps) == pytest.approx(2e6, rel=0.05)  # lognormal around the rate given


def test_servers_decode_before_anything_else_and_count_what_they_cannot():
    weights, codec = torch.zeros(10), TopK(0.2)
    good = codec.encode(torch.arange(10.0))
    server = SyncServer(weights, codec=codec)
    server.step([good, torch.zeros(3, dtype=torch.uint8)], [0, 1], [1, 1], key=1)
    assert server.weights.tolist() == [0.0] * 8 + [8.0, 9.0]  # the decodable update alone
    assert server.summary()["rejected_by_reason"] == {"undecodable": 1}
    buffered = AsyncServer(weights, AsyncConfig("fedbuff", buffer_size=1), codec=codec)
    assert buffered.receive(good, weights, 0) and buffered.weights.tolist() == [0.0] * 8 + [8.0, 9.0]
    assert not buffered.receive(good[:-1], weights, 1)


@pytest.mark.parametrize(
    "script, extra, codec",
    [
        ("run_federated", ["--compress", "topk", "--compress_ratio", "0.05", "--byzantine", "1", "--attack",
                           "signflip", "--gar", "median", "--num_select_clients", "3"], TopK(0.05)),
        ("run_async", ["--compress", "qsgd", "--qsgd_levels", "8"], QSGD(8)),
        ("run_async", ["--compress", "topk", "--error_feedback", "--algorithm", "fedbuff", "--buffer_size", "3",
                       "--gar", "trimmed-mean", "--byzantine", "1", "--attack", "gaussian"], TopK(0.01)),
    ],
    ids=["fedavg-topk-median", "fedasync-qsgd", "fedbuff-topk-trimmed-mean"],
)  # fmt: skip
def test_compressed_runs_count_every_encoded_byte(script, extra, codec, tiny_data_dir, tmp_path):
    import json

    from test_end_to_end import TINY

    from fedlearn.app import main

    out = tmp_path / "c.json"
    assert main(script, ["--data_dir", str(tiny_data_dir), "--save", str(out), "--no_progress", *TINY, *extra]) == 0
    doc = json.loads(out.read_text())
    final, dim = doc["final"], doc["run"]["model parameters"]
    assert final["bytes_up"] == final["client_updates"] * codec.payload_bytes(dim)
    assert final["bytes_down"] == final["client_updates"] * 4 * dim
    assert final["rejected_updates"] == 0 and 0 < final["test_accuracy"] <= 1
    assert [e["bytes_up"] for e in doc["history"]] == sorted(e["bytes_up"] for e in doc["history"])


def test_a_diverged_job_clears_the_residual_instead_of_poisoning_later_jobs():
    uplink, codec, start = Uplink(TopK(0.2), error_feedback=True), TopK(0.2), torch.zeros(10)
    uplink.send(0, 1, start, torch.arange(10.0))
    assert 0 in uplink.residuals
    uplink.send(0, 2, start, torch.full((10,), float("nan")))  # this update is rejected by the server's checks
    assert 0 not in uplink.residuals
    assert bool(torch.isfinite(codec.decode(uplink.send(0, 3, start, torch.arange(10.0)), 10)).all())
