import numpy as np
import pytest
import torch

from fedlearn.client import LocalJobConfig, LocalTrainer
from fedlearn.client.uplink import Uplink
from fedlearn.comm.clock import ClientSpeeds
from fedlearn.comm.codecs import TopK
from fedlearn.core import seeding
from fedlearn.core.flat import get_flat
from fedlearn.data import load_dataset
from fedlearn.data.partitions import iid_partition
from fedlearn.loops.rounds import Rounds, run_fedavg, select_clients
from fedlearn.loops.skeleton import LoopOptions
from fedlearn.models import build_model
from fedlearn.server.synchronous import SyncServer


def test_selection_is_fresh_every_round_and_covers_all_clients():
    rounds = [tuple(select_clients(seed=0, round_index=r, num_clients=8, k=4)) for r in range(1, 101)]
    assert all(len(set(p)) == 4 and all(0 <= c < 8 for c in p) for p in rounds)
    assert len(set(rounds)) > 20  # not drawn once and reused
    counts = np.bincount(np.concatenate(rounds), minlength=8)
    assert (counts > 0).all() and counts.min() > 25  # roughly uniform: expected 50 each


def test_selection_is_reproducible_for_a_seed_and_differs_across_seeds():
    a = [select_clients(1, r, 20, 5).tolist() for r in range(1, 11)]
    b = [select_clients(1, r, 20, 5).tolist() for r in range(1, 11)]
    c = [select_clients(2, r, 20, 5).tolist() for r in range(1, 11)]
    assert a == b and a != c


@pytest.fixture()
def setup(tiny_data_dir):
    data = load_dataset("mnist", tiny_data_dir)
    parts = iid_partition(400, 7, seeding.numpy_rng(0, seeding.PARTITION))  # sizes 58 and 57: unequal
    torch.manual_seed(0)
    global_model = build_model("cnn")
    config = LocalJobConfig(optimizer="adam", lr=1e-3, batch_size=16, epochs=1, seed=0)
    trainer = LocalTrainer(build_model("cnn"), data, parts, config)
    return data, parts, global_model, trainer


def test_a_local_job_has_fresh_optimizer_state_and_depends_only_on_its_inputs(setup):
    _, _, global_model, trainer = setup
    w0 = get_flat(global_model)
    first = trainer.run(3, w0, job_key=1)
    trainer.run(5, first.payload, job_key=9)  # other work in between must not leak into the next job
    again = trainer.run(3, w0, job_key=1)
    assert torch.equal(first.payload, again.payload)
    assert not torch.equal(first.payload, w0)
    assert not torch.equal(trainer.run(3, w0, job_key=2).payload, first.payload)  # new round, new shuffles


def test_fedavg_round_is_the_sample_weighted_average_of_clients_trained_from_the_global_model(setup):
    _, parts, global_model, trainer = setup
    w0 = get_flat(global_model)
    speeds = ClientSpeeds(rates=np.full(7, 100.0))
    server = SyncServer(w0)
    recorder = run_fedavg(trainer, global_model, server, speeds, Rounds(2, 3), LoopOptions(seed=0, show_progress=False))
    final = server.weights

    # Recompute both rounds by hand from the same selection and the same job keys.
    w = w0
    for r in (1, 2):
        picked = select_clients(0, r, 7, 3)
        updates = [trainer.run(int(c), w, job_key=r) for c in picked]
        n = torch.tensor([float(parts[int(c)].numel()) for c in picked])
        w = sum(u.payload * (nk / n.sum()) for u, nk in zip(updates, n))
    assert torch.allclose(final, w, atol=1e-6)
    assert len(recorder.history) == 2
    last = recorder.history[-1]
    assert last["client_updates"] == 6
    picked_sizes = [parts[int(c)].numel() for r in (1, 2) for c in select_clients(0, r, 7, 3)]
    assert last["samples_trained"] == sum(picked_sizes)
    # every client trains at 100 samples/s, so a round lasts (largest picked partition) / 100
    expected = sum(max(parts[int(c)].numel() for c in select_clients(0, r, 7, 3)) / 100.0 for r in (1, 2))
    assert last["sim_time"] == pytest.approx(expected)


def test_fedavg_rounds_improve_the_global_model(setup):
    data, _, global_model, trainer = setup
    speeds = ClientSpeeds(rates=np.full(7, 100.0))
    server = SyncServer(get_flat(global_model))
    recorder = run_fedavg(trainer, global_model, server, speeds, Rounds(3, 4), LoopOptions(seed=0, show_progress=False))
    accuracies = [e["test_accuracy"] for e in recorder.history]
    assert accuracies[-1] > 0.5 and accuracies[-1] > accuracies[0] - 0.05


def test_prox_mu_reaches_the_local_jobs(setup):
    data, parts, global_model, trainer = setup
    w0 = get_flat(global_model)
    plain = trainer.run(2, w0, job_key=1).payload
    proximal = LocalTrainer(trainer.model, data, parts, LocalJobConfig("adam", 1e-3, 16, 1, 0, prox_mu=5.0))
    pulled = proximal.run(2, w0, job_key=1).payload
    assert (pulled - w0).norm() < (plain - w0).norm()


def test_the_uplink_part_decides_what_the_server_receives(setup):
    data, parts, global_model, trainer = setup
    w0 = get_flat(global_model)
    trained = trainer.run(2, w0, job_key=1).payload
    topk = LocalTrainer(trainer.model, data, parts, trainer.config, uplink=Uplink(TopK(0.1)))
    update = topk.run(2, w0, job_key=1)
    assert update.payload.dtype == torch.uint8 and update.upload_bytes == 8 * (w0.numel() // 10)
    assert torch.equal(TopK(0.1).decode(update.payload, w0.numel()), TopK(0.1).decode(
        TopK(0.1).encode(trained - w0), w0.numel()))  # fmt: skip
