import json

import numpy as np
import pytest
import torch

from fedlearn.client import LocalJobConfig, LocalTrainer
from fedlearn.comm.clock import ClientSpeeds, plan_async_jobs
from fedlearn.core import seeding
from fedlearn.core.flat import get_flat
from fedlearn.data import load_dataset
from fedlearn.data.partitions import iid_partition
from fedlearn.loops.skeleton import LoopOptions
from fedlearn.loops.virtual_clock import Updates, run_async
from fedlearn.models import build_model
from fedlearn.server.asynchronous import AsyncConfig, AsyncServer
from fedlearn.server.staleness import staleness_weight
from fedlearn.server.steps import ServerOptConfig, build_step, fedasync_mix


@pytest.mark.parametrize(
    "kind, s, a, b, expected",
    [
        ("constant", 0, 0, 0, 1.0),
        ("constant", 7, 0, 0, 1.0),
        ("polynomial", 0, 0.5, 0, 1.0),
        ("polynomial", 3, 0.5, 0, 0.5),
        ("polynomial", 8, 0.5, 0, 1 / 3),
        ("polynomial", 1, 2.0, 0, 0.25),
        ("hinge", 0, 10, 4, 1.0),
        ("hinge", 4, 10, 4, 1.0),
        ("hinge", 5, 10, 4, 1 / 11),
        ("hinge", 6, 10, 4, 1 / 21),
    ],
)
def test_staleness_functions_at_known_points(kind, s, a, b, expected):
    assert staleness_weight(kind, s, a, b) == pytest.approx(expected)


def test_negative_staleness_is_refused():
    with pytest.raises(ValueError):
        staleness_weight("polynomial", -1, 0.5, 4)


def test_fedasync_mixing_extremes_and_midpoint():
    w, w_new = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([5.0, 0.5, -1.0])
    assert torch.equal(fedasync_mix(w, w_new, 1.0), w_new)
    assert torch.equal(fedasync_mix(w, w_new, 0.0), w)
    assert torch.allclose(fedasync_mix(w, w_new, 0.25), torch.tensor([2.0, -1.375, 2.0]))


def test_fedasync_server_with_alpha_1_and_constant_staleness_takes_the_clients_model():
    server = AsyncServer(torch.zeros(3), AsyncConfig(algorithm="fedasync", alpha=1.0, staleness="constant"))
    client = torch.tensor([1.0, 2.0, 3.0])
    assert server.receive(client, torch.zeros(3), tau=0)
    assert torch.equal(server.weights, client) and server.version == 1


def test_fedasync_server_scales_alpha_by_staleness():
    cfg = AsyncConfig(algorithm="fedasync", alpha=0.5, staleness="polynomial", staleness_a=1.0)
    server = AsyncServer(torch.zeros(1), cfg)
    server.receive(torch.tensor([1.0]), torch.zeros(1), tau=0)  # s=0: alpha_t = 0.5 -> 0.5
    server.receive(torch.tensor([2.0]), torch.zeros(1), tau=0)  # s=1: alpha_t = 0.5 / 2 -> 0.75*0.5 + 0.25*2
    assert server.weights.item() == pytest.approx(0.875)
    assert server.staleness == [0, 1]


def test_fedbuff_server_buffers_k_deltas_then_steps():
    cfg = AsyncConfig(algorithm="fedbuff", buffer_size=2, staleness="polynomial", staleness_a=0.5)
    w0 = torch.tensor([1.0, 1.0])
    server = AsyncServer(w0, cfg, step=build_step(optimizer=ServerOptConfig(lr=0.5)))
    server.receive(torch.tensor([3.0, 1.0]), w0, tau=0)
    assert torch.equal(server.weights, w0) and server.version == 0 and server.buffered == 1
    server.receive(torch.tensor([1.0, 5.0]), w0, tau=0)
    w1 = w0 + 0.5 * torch.tensor([1.0, 2.0])  # mean of deltas [2,0] and [0,4]
    assert torch.allclose(server.weights, w1) and server.version == 1 and server.buffered == 0
    # two deltas trained from the old model (tau=0) arrive one version late: each scaled by (1+1)^-0.5
    server.receive(w0 + torch.tensor([2.0, 2.0]), w0, tau=0)
    server.receive(w0 + torch.tensor([4.0, 0.0]), w0, tau=0)
    expected = w1 + 0.5 * (2**-0.5) * torch.tensor([3.0, 1.0])
    assert torch.allclose(server.weights, expected)


def test_updates_staler_than_the_bound_are_discarded_and_counted():
    server = AsyncServer(torch.zeros(2), AsyncConfig(algorithm="fedasync", staleness="constant", max_staleness=1))
    for _ in range(2):
        server.receive(torch.ones(2), torch.zeros(2), tau=server.version)
    before = server.weights.clone()
    assert not server.receive(torch.full((2,), 9.0), torch.zeros(2), tau=0)  # s = 2 > 1
    assert torch.equal(server.weights, before)
    assert server.summary()["discarded_updates"] == 1 and server.summary()["max_staleness"] == 2


def test_with_concurrency_1_every_job_starts_from_the_newest_model():
    speeds = ClientSpeeds(rates=np.array([100.0, 10.0, 50.0, 100.0]))
    jobs = plan_async_jobs(speeds, [100] * 4, concurrency=1, num_jobs=30, rng=np.random.default_rng(0))
    assert all(job.dispatched_after == job.index for job in jobs)  # staleness 0
    assert all(b.dispatch_time == a.arrival_time for a, b in zip(jobs, jobs[1:]))


def test_a_client_ten_times_slower_arrives_later_and_staler():
    speeds = ClientSpeeds(rates=np.array([100.0, 100.0, 100.0, 10.0]))
    jobs = plan_async_jobs(speeds, [100] * 4, concurrency=4, num_jobs=60, rng=np.random.default_rng(0))
    slow = [j for j in jobs if j.client == 3]
    fast = [j for j in jobs if j.client != 3]
    assert slow and all(j.arrival_time - j.dispatch_time == pytest.approx(10.0) for j in slow)
    assert all(j.arrival_time - j.dispatch_time == pytest.approx(1.0) for j in fast)
    staleness = lambda j: j.index - j.dispatched_after  # noqa: E731 - arrivals in between
    assert min(staleness(j) for j in slow) > max(staleness(j) for j in fast)
    assert [j.arrival_time for j in jobs] == sorted(j.arrival_time for j in jobs)


def test_the_plan_is_fixed_by_the_seed():
    speeds = ClientSpeeds(rates=np.array([100.0, 30.0, 50.0, 70.0, 20.0]))
    plan = lambda seed: plan_async_jobs(speeds, [100] * 5, 3, 25, np.random.default_rng(seed))  # noqa: E731
    assert plan(1) == plan(1) and plan(1) != plan(2)


class RecordingTrainer(LocalTrainer):
    """Remembers the weights every local job started from."""

    def run(self, client, global_weights, job_key, on_batch=None):
        self.starts.append(global_weights.clone())
        return super().run(client, global_weights, job_key, on_batch)


class RecordingServer(AsyncServer):
    """Remembers the global model after every arrival."""

    def receive(self, client_weights, start_weights, tau, client=0, num_samples=1):
        accepted = super().receive(client_weights, start_weights, tau, client, num_samples)
        self.after.append(self.weights.clone())
        return accepted


@pytest.fixture()
def async_setup(tiny_data_dir):
    data = load_dataset("mnist", tiny_data_dir)
    parts = iid_partition(400, 5, seeding.numpy_rng(0, seeding.PARTITION))
    torch.manual_seed(0)
    model = build_model("mlp")
    trainer = RecordingTrainer(
        build_model("mlp"), data, parts, LocalJobConfig(optimizer="adam", lr=1e-3, batch_size=40, epochs=1, seed=0)
    )
    trainer.starts = []
    trainer.initial = get_flat(model)  # run_async evaluates into `model`, so keep the start apart
    return trainer, model


def run_recorded(trainer, model, speeds, concurrency, cfg=None, num_jobs=12):
    server = RecordingServer(trainer.initial, cfg or AsyncConfig(algorithm="fedasync", staleness="constant"))
    server.after = []
    budget = Updates(max_updates=num_jobs, eval_every=3, concurrency=concurrency)
    recorder = run_async(trainer, model, server, speeds, budget, LoopOptions(seed=0, show_progress=False))
    return server, recorder


def test_every_dispatched_client_gets_the_global_model_of_its_dispatch_time(async_setup):
    trainer, model = async_setup
    speeds = ClientSpeeds(rates=np.array([100.0, 25.0, 60.0, 100.0, 10.0]))
    initial = trainer.initial
    server, _ = run_recorded(trainer, model, speeds, concurrency=3)
    jobs = plan_async_jobs(speeds, [80] * 5, 3, 12, seeding.numpy_rng(0, seeding.DISPATCH))
    models_over_time = [initial, *server.after]  # model after k arrivals
    assert any(job.dispatched_after < job.index for job in jobs)  # some jobs really are stale
    for job, start in zip(jobs, trainer.starts):
        assert torch.equal(start, models_over_time[job.dispatched_after])
        if job.dispatched_after < job.index:  # neither the newest model nor the initial one
            assert not torch.equal(start, models_over_time[job.index])


def test_run_async_with_concurrency_1_sees_no_staleness_and_counts_everything(async_setup):
    trainer, model = async_setup
    server, recorder = run_recorded(trainer, model, ClientSpeeds(rates=np.full(5, 100.0)), concurrency=1)
    assert server.staleness == [0] * 12 and server.version == 12
    history = recorder.history
    assert [e["client_updates"] for e in history] == [3, 6, 9, 12]
    assert history[-1]["samples_trained"] == 12 * 80
    assert history[-1]["sim_time"] == pytest.approx(12 * 0.8)  # 80 samples at 100/s, one at a time


def test_run_async_is_deterministic_for_a_seed(async_setup):
    trainer, model = async_setup
    speeds = ClientSpeeds(rates=np.array([100.0, 25.0, 60.0, 100.0, 10.0]))
    cfg = AsyncConfig(algorithm="fedbuff", buffer_size=3)
    first, rec1 = run_recorded(trainer, model, speeds, 3, cfg)
    second, rec2 = run_recorded(trainer, model, speeds, 3, cfg)
    assert torch.equal(first.weights, second.weights)
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("wall_time_s", "time_breakdown_s")} for e in h]  # noqa: E731
    assert strip(rec1.history) == strip(rec2.history)
    assert first.version == 4 and rec1.history[-1]["test_accuracy"] > 0.3


@pytest.mark.slow
def test_simulated_async_checkpoint_then_resume_equals_an_uninterrupted_run(tiny_data_dir, tmp_path):
    from conftest import run_script

    flags = ["--data_dir", str(tiny_data_dir), "--dataset", "mnist", "--batch_size", "20", "--init_lr", "1e-3",
             "--local_epoch", "1", "--num_clients", "5", "--num_select_clients", "3", "--delay", "straggler",
             "--straggler_fraction", "0.4", "--eval_every", "2", "--no_progress", "--algorithm", "fedbuff",
             "--buffer_size", "2", "--server_opt", "yogi", "--compress", "topk", "--compress_ratio", "0.2",
             "--error_feedback"]  # fmt: skip
    whole = run_script("run_async.py", *flags, "--max_updates", "11", "--save", str(tmp_path / "whole.json"))
    first = run_script("run_async.py", *flags, "--max_updates", "7", "--checkpoint", str(tmp_path / "c.pt"),
                       "--checkpoint_every", "5")  # fmt: skip
    rest = run_script("run_async.py", *flags, "--max_updates", "11", "--resume", str(tmp_path / "c.pt"),
                      "--save", str(tmp_path / "resumed.json"))  # fmt: skip
    for proc in (whole, first, rest):
        assert proc.returncode == 0, proc.stderr
    strip = lambda doc: [  # noqa: E731
        {k: v for k, v in e.items() if k not in ("wall_time_s", "time_breakdown_s")} for e in doc["history"]
    ]
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("whole.json", "resumed.json"))
    assert strip(a) == strip(b) and a["final"]["test_loss"] == b["final"]["test_loss"]
    assert a["final"]["mean_staleness"] == b["final"]["mean_staleness"]
    assert a["final"]["bytes_up"] == b["final"]["bytes_up"] == 11 * 8 * int(0.2 * a["run"]["model parameters"])
