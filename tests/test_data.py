import functools
import hashlib
import http.server
import threading

import pytest
import torch
from conftest import RAW_NAMES, synthetic_digits, write_dataset

from fedlearn import data as data_module
from fedlearn.data import load_dataset, prepare_files, raw_folder, resolve_dataset
from fedlearn.errors import DataError


def test_loader_reads_idx_files_in_torchvision_layout(tmp_path):
    write_dataset(tmp_path, n_train=300, n_test=50)
    ds = load_dataset("mnist", tmp_path)
    assert ds.train_x.shape == (300, 1, 28, 28) and ds.test_x.shape == (50, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    _, labels = synthetic_digits(300, 0)
    assert torch.equal(ds.train_y, torch.from_numpy(labels).long())
    # normalized once with the training set's own statistics
    assert abs(float(ds.train_x.mean())) < 1e-4 and abs(float(ds.train_x.std()) - 1) < 1e-3
    images, _ = synthetic_digits(300, 0)
    expected = (torch.from_numpy(images[0]).float() / 255 - ds.mean) / ds.std
    assert torch.allclose(ds.train_x[0, 0], expected, atol=1e-5)


def test_gzipped_files_already_present_are_used_without_download(tmp_path):
    write_dataset(tmp_path, gz=True)
    assert prepare_files("mnist", tmp_path, download=False) == "local files"
    assert load_dataset("mnist", tmp_path).train_x.shape[0] == 400


def test_corrupt_idx_file_is_a_clear_data_error(tmp_path):
    raw = write_dataset(tmp_path)
    (raw / RAW_NAMES["train_images"]).write_bytes(b"this is not an IDX file at all")
    with pytest.raises(DataError, match="corrupt or not IDX"):
        load_dataset("mnist", tmp_path)


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path):
    raw = write_dataset(tmp_path)
    other = write_dataset(tmp_path / "other", n_train=399)
    (raw / RAW_NAMES["train_labels"]).write_bytes((other / RAW_NAMES["train_labels"]).read_bytes())
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", tmp_path)


def test_explicit_mnist_that_is_missing_names_the_folder(tmp_path):
    with pytest.raises(DataError, match=str(raw_folder("mnist", tmp_path))):
        resolve_dataset("mnist", tmp_path, download=False)


@pytest.fixture()
def debian_fashion(tmp_path, monkeypatch):
    """A stand-in for /usr/share/datasets/fashion-mnist holding gzipped IDX files."""
    debian = write_dataset(tmp_path / "debian", folder="pkg", seed=7, gz=True)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", debian)
    return debian


def test_auto_falls_back_to_fashion_mnist_loudly(tmp_path, debian_fashion):
    notices = []
    name, how = resolve_dataset("auto", tmp_path / "data", download=False, notify=notices.append)
    assert name == "fashion-mnist" and "dataset-fashion-mnist" in how
    assert len(notices) == 1 and "MNIST" in notices[0] and "Fashion-MNIST" in notices[0]
    assert load_dataset("fashion-mnist", tmp_path / "data").train_x.shape[0] == 400


def test_explicit_mnist_never_switches_to_fashion_mnist(tmp_path, debian_fashion):
    with pytest.raises(DataError, match="MNIST not found"):
        resolve_dataset("mnist", tmp_path / "data", download=False, notify=pytest.fail)


def test_auto_prefers_mnist_when_present(tmp_path, debian_fashion):
    write_dataset(tmp_path)
    assert resolve_dataset("auto", tmp_path, download=False, notify=pytest.fail) == ("mnist", "local files")


def test_missing_files_are_downloaded_with_torchvision(tmp_path, monkeypatch):
    """A local HTTP mirror stands in for the MNIST servers (no internet needed)."""
    served = write_dataset(tmp_path / "mirror", folder="m", gz=True)
    resources = [(f"{name}.gz", hashlib.md5((served / f"{name}.gz").read_bytes()).hexdigest())
                 for name in (RAW_NAMES["train_images"], RAW_NAMES["train_labels"],
                              RAW_NAMES["test_images"], RAW_NAMES["test_labels"])]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cls = data_module.DATASET_CLASSES["mnist"]
        monkeypatch.setattr(cls, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
        monkeypatch.setattr(cls, "resources", resources)
        assert prepare_files("mnist", tmp_path / "data", download=True) == "downloaded"
    finally:
        server.shutdown()
    assert load_dataset("mnist", tmp_path / "data").test_x.shape[0] == 100
