"""CIFAR-10: the loader on a tiny dataset written in the python version's layout, its refusals, and the three
scripts end to end on it."""

import hashlib
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

import fedlearn.data.cifar as cifar_module
from conftest import CIFAR_TRAIN_BATCHES, http_mirror, run_script, synthetic_colour, write_cifar
from fedlearn.data import DatasetNotFound, load_dataset, prepare_files, resolve_dataset
from fedlearn.errors import DataError

QUICK = ["--dataset", "cifar10", "--batch_size", "50", "--init_lr", "1e-3", "--no_progress"]


def test_loader_reads_the_pickled_batches_with_per_channel_normalization(tiny_cifar_dir):
    ds = load_dataset("cifar10", tiny_cifar_dir)
    assert ds.train_x.shape == (500, 3, 32, 32) and ds.test_x.shape == (100, 3, 32, 32)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    images, labels = synthetic_colour(500, 0)  # what write_cifar split over the five training batches, in order
    assert torch.equal(ds.train_y, torch.from_numpy(labels).long())
    scaled = images.astype(np.float64) / 255
    mean, std = scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3), ddof=1)
    assert np.allclose(ds.mean, mean, rtol=1e-12) and np.allclose(ds.std, std, rtol=1e-12)
    expected = (scaled[7] - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(ds.train_x[7].double(), torch.from_numpy(expected), atol=1e-6)
    per_channel = ds.train_x.double().mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert ds.train_x.is_contiguous(memory_format=torch.channels_last)  # kept in the files' HWC order
    assert torch.allclose(ds.black(), torch.tensor(-mean / std, dtype=torch.float32))


def test_published_checksums_are_recognised(tmp_path, monkeypatch):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    assert "not the published CIFAR-10" in prepare_files("cifar10", tmp_path, download=False)
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    published = {True: [(n, md5[n]) for n in CIFAR_TRAIN_BATCHES], False: [("test_batch", md5["test_batch"])]}
    monkeypatch.setattr(cifar_module, "batch_files", published.get)
    assert prepare_files("cifar10", tmp_path, download=False) == "local files, checksums match the published CIFAR-10"
    blob = bytearray((folder / "data_batch_2").read_bytes())
    blob[len(blob) // 2] ^= 1  # one pixel one level off: still a readable batch
    (folder / "data_batch_2").write_bytes(bytes(blob))
    assert prepare_files("cifar10", tmp_path, download=False).endswith(
        "data_batch_2 differ from the published CIFAR-10's checksums"
    )


def test_a_partial_folder_is_refused_naming_what_is_missing(tmp_path):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=f"{folder}.*incomplete: data_batch_3 missing"):
        prepare_files("cifar10", tmp_path, download=True)  # never topped up from a download


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: pickle.dumps([1, 2, 3]), "not a dict with 'data' and 'labels'"),
        (lambda b: pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}), "not uint8 \\(n, 3072\\)"),
        (lambda b: pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}), "4 images for 3 labels"),
    ],
)
def test_a_corrupt_batch_is_one_line_naming_the_file(damage, says, tmp_path):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    batch = folder / "test_batch"
    batch.write_bytes(damage(batch.read_bytes()))
    with pytest.raises(DataError, match=f"CIFAR-10 file {batch} is corrupt.*{says}"):
        load_dataset("cifar10", tmp_path)


def test_batches_pickled_by_python_3_with_numpy_labels_are_read(tmp_path):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    images, labels = synthetic_colour(10, 1)
    entry = {"data": images.reshape(10, -1), "labels": list(labels.astype(np.int64))}  # numpy scalars
    (folder / "test_batch").write_bytes(pickle.dumps(entry, protocol=5))  # arrays by _frombuffer
    assert torch.equal(load_dataset("cifar10", tmp_path).test_y, torch.from_numpy(labels))


@pytest.mark.parametrize("labels", [[1.7] * 10, ["cat"] * 10, [[1, 2]] * 10])
def test_labels_that_are_not_integers_are_refused(labels, tmp_path):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((10, 3072), np.uint8), "labels": labels}))
    with pytest.raises(DataError, match="test_batch is corrupt \\('labels' is .*, not a list of integers\\)"):
        load_dataset("cifar10", tmp_path)


def test_labels_outside_the_ten_classes_are_refused(tmp_path):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    entry = {"data": np.zeros((10, 3072), np.uint8), "labels": [10] * 10}
    (folder / "test_batch").write_bytes(pickle.dumps(entry))
    with pytest.raises(DataError, match="labels .* fall outside 0..9"):
        load_dataset("cifar10", tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_a_batch_that_would_run_code_is_refused_without_running_it(tmp_path):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    payload = _RunsCode()
    payload.path = str(tmp_path / "ran")
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": payload, "labels": []}))
    with pytest.raises(DataError, match="posix.mkdir is not allowed"):
        load_dataset("cifar10", tmp_path)
    assert not (tmp_path / "ran").exists()


def test_missing_files_offline_name_the_folder(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DatasetNotFound, match=f"CIFAR-10 not found in {tmp_path / 'cifar-10-batches-py'} and could "
                       "not be downloaded: put the python version's batches data_batch_1"):  # fmt: skip
        prepare_files("cifar10", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone


def test_an_empty_folder_is_filled_by_torchvisions_download(tmp_path, monkeypatch):
    """A local HTTP mirror serves a tiny archive in CIFAR-10's layout; torchvision checks it against the md5s
    patched in for it, as it checks the real one."""
    from torchvision.datasets import CIFAR10

    source = write_cifar(tmp_path / "src", n_train=50, n_test=10)
    (tmp_path / "mirror").mkdir()
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in source.iterdir()}
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n in CIFAR_TRAIN_BATCHES])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    with http_mirror(tmp_path / "mirror") as url:
        monkeypatch.setattr(CIFAR10, "url", url + archive.name)
        how = prepare_files("cifar10", tmp_path / "data", download=True)
    assert how == "downloaded, checksums match the published CIFAR-10"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["cifar-10-batches-py"]  # no archive, no staging
    assert sorted(p.name for p in (tmp_path / "data" / "cifar-10-batches-py").iterdir()) == sorted(md5)
    assert torch.equal(load_dataset("cifar10", tmp_path / "data").test_y, torch.from_numpy(synthetic_colour(10, 1)[1]))
    assert prepare_files("cifar10", tmp_path / "data", download=True).startswith("local files, checksums match")


def test_auto_never_picks_cifar10(tiny_cifar_dir, tmp_path):
    write_cifar(tmp_path, n_train=50, n_test=10)
    try:
        name, _ = resolve_dataset("auto", tmp_path, download=False, notify=lambda message: None)
    except DatasetNotFound as exc:  # no MNIST, no Fashion-MNIST here: it says so rather than use CIFAR-10
        assert "Fashion-MNIST not found" in str(exc)
    else:  # Debian's Fashion-MNIST installed on this machine
        assert name == "fashion-mnist"


def test_the_scripts_refuse_a_missing_cifar10_in_one_line(tmp_path):
    proc = run_script("run_federated.py", "--data_dir", str(tmp_path), "--no_download", *QUICK)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"CIFAR-10 not found in {tmp_path / 'cifar-10-batches-py'}" in proc.stderr


def read(path):
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, extra",
    [
        ("run_baseline.py", ["--epoch", "1", "--model", "resnet20"]),
        ("run_federated.py", ["--global_epoch", "2", "--local_epoch", "1", "--partition", "dirichlet",
                              "--server_opt", "adam", "--compress", "topk", "--compress_ratio", "0.1",
                              "--dp_clip", "1", "--dp_noise", "0.3", "--workers", "2"]),
        ("run_async.py", ["--algorithm", "fedbuff", "--buffer_size", "3", "--max_updates", "6", "--gar", "median",
                          "--byzantine", "1", "--attack", "signflip", "--delay", "lognormal"]),
    ],
)  # fmt: skip
def test_each_script_runs_on_cifar10_end_to_end(script, extra, tiny_cifar_dir, tmp_path):
    proc = run_script(script, "--data_dir", str(tiny_cifar_dir), "--save", str(tmp_path / "r.json"), *QUICK, *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = read(tmp_path / "r.json")
    assert doc["dataset"] == "cifar10" and doc["args"]["augment"] == "crop-flip"
    assert doc["args"]["model"] == ("resnet20" if script == "run_baseline.py" else "cnn-cifar")
    assert doc["run"]["model parameters"] == (269_722 if script == "run_baseline.py" else 62_006)
    assert doc["run"]["training / test samples"] == "500 / 100"
    assert "not the published CIFAR-10" in doc["run"]["dataset source"]
    assert 0 <= doc["final"]["test_accuracy"] <= 1 and np.isfinite(doc["final"]["test_loss"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, budget",
    [("run_baseline.py", ["--epoch", "1"]), ("run_federated.py", ["--global_epoch", "1", "--local_epoch", "1"])],
)
def test_the_scripts_train_on_augmented_batches_unless_told_not_to(script, budget, tiny_cifar_dir, tmp_path):
    losses = []
    for augment in ("crop-flip", "none"):
        out = tmp_path / f"{augment}.json"
        proc = run_script(script, "--data_dir", str(tiny_cifar_dir), "--save", str(out), *QUICK, *budget,
                          "--augment", augment)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        losses.append(read(out)["final"]["test_loss"])
    assert losses[0] != losses[1]  # (run_async builds its clients as run_federated does)


@pytest.mark.slow
def test_torchrun_with_augmentation_equals_the_simulation(tiny_cifar_dir, tmp_path):
    from test_distributed import TINY, history, torchrun

    flags = ["--dataset", "cifar10", "--batch_size", "50", "--partition", "dirichlet"]
    proc = torchrun("run_federated.py", tiny_cifar_dir, tmp_path / "d.json", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sim = run_script("run_federated.py", "--data_dir", str(tiny_cifar_dir), "--save", str(tmp_path / "s.json"),
                     *TINY, *flags, env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert sim.returncode == 0, sim.stderr[-2000:]
    assert read(tmp_path / "d.json")["args"]["augment"] == "crop-flip"
    assert history(read(tmp_path / "d.json")) == history(read(tmp_path / "s.json"))  # bit for bit
