import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import RAW_NAMES, http_mirror, idx_images, run_script, synthetic_digits, write_dataset
from fedlearn.data import idx as data_module
from fedlearn.data import load_dataset, pixel_statistics, prepare_files, raw_folder, resolve_dataset
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
    expected = (torch.from_numpy(images[0]).float() / 255 - ds.mean[0]) / ds.std[0]
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
    resources = [
        (f"{name}.gz", hashlib.md5((served / f"{name}.gz").read_bytes()).hexdigest())
        for name in (
            RAW_NAMES["train_images"],
            RAW_NAMES["train_labels"],
            RAW_NAMES["test_images"],
            RAW_NAMES["test_labels"],
        )
    ]
    with http_mirror(served) as url:
        cls = data_module.dataset_class("mnist")
        monkeypatch.setattr(cls, "mirrors", [url])
        monkeypatch.setattr(cls, "resources", resources)
        assert prepare_files("mnist", tmp_path / "data", download=True) == "downloaded"
    assert load_dataset("mnist", tmp_path / "data").test_x.shape[0] == 100
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["MNIST"]  # the staging folder is gone


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too) with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _garbage_with_gzip_header(valid: bytes) -> bytes:
    return valid[:10] + b"\xff" * 64  # a gzip header, then deflate data no decoder accepts (zlib.error)


def _short_idx_payload(valid: bytes) -> bytes:
    images, _ = synthetic_digits(400, 0)
    return gzip.compress(idx_images(images)[: -28 * 28])  # the header promises 400 images, 399 are there


CORRUPTIONS = {
    "garbage": lambda valid: b"this is not a gzip file at all",
    "garbage-deflate": _garbage_with_gzip_header,
    "truncated": lambda valid: valid[: len(valid) // 2],
    "not-idx": lambda valid: gzip.compress(b"a perfectly fine gzip holding no IDX data"),
    "short-idx": _short_idx_payload,
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_gz_is_a_one_line_error_and_leaves_nothing_behind(tmp_path, kind):
    raw = write_dataset(tmp_path, gz=True)
    archive = raw / f"{RAW_NAMES['train_images']}.gz"
    archive.write_bytes(CORRUPTIONS[kind](archive.read_bytes()))
    before = _snapshot(tmp_path)
    with pytest.raises(DataError) as info:
        prepare_files("mnist", tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and "corrupt" in message and "replace or delete" in message
    assert str(archive) in message
    assert _snapshot(tmp_path) == before  # no plain file, no staging folder


def test_gz_that_disagrees_with_a_plain_file_is_refused_before_anything_is_written(tmp_path):
    raw = write_dataset(tmp_path)
    short = write_dataset(tmp_path / "short", n_train=399, gz=True)
    (raw / RAW_NAMES["train_labels"]).unlink()
    (raw / f"{RAW_NAMES['train_labels']}.gz").write_bytes((short / f"{RAW_NAMES['train_labels']}.gz").read_bytes())
    before = _snapshot(tmp_path)
    with pytest.raises(DataError, match="corrupt: 400 images for 399 labels"):
        prepare_files("mnist", tmp_path, download=False)
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_corrupt_gz_ends_the_script_with_one_line_and_exit_1(tmp_path):
    raw = write_dataset(tmp_path, gz=True)
    (raw / f"{RAW_NAMES['test_labels']}.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 64)
    proc = run_script("run_baseline.py", "--data_dir", str(tmp_path), "--dataset", "mnist", "--no_download")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("gz", [False, True])
def test_partial_folder_is_refused_and_never_topped_up_from_debian(tmp_path, debian_fashion, gz):
    raw = write_dataset(tmp_path / "data", folder="FashionMNIST", gz=gz)
    next(raw.glob("t10k-labels-idx1-ubyte*")).unlink()
    before = _snapshot(tmp_path / "data")
    with pytest.raises(DataError, match="incomplete") as info:
        prepare_files("fashion-mnist", tmp_path / "data", download=False)
    assert str(raw) in str(info.value) and RAW_NAMES["test_labels"] in str(info.value)
    assert _snapshot(tmp_path / "data") == before


def test_auto_reports_a_partial_mnist_folder_instead_of_switching(tmp_path, debian_fashion):
    raw = write_dataset(tmp_path)
    (raw / RAW_NAMES["train_labels"]).unlink()
    with pytest.raises(DataError, match="incomplete"):
        resolve_dataset("auto", tmp_path, download=False, notify=pytest.fail)
    assert not (tmp_path / "FashionMNIST").exists()


def test_gz_files_are_decompressed_next_to_the_plain_ones(tmp_path):
    raw = write_dataset(tmp_path, gz=True)
    write_dataset(tmp_path / "plain")
    (raw / f"{RAW_NAMES['test_images']}.gz").unlink()
    (raw / RAW_NAMES["test_images"]).write_bytes((tmp_path / "plain/MNIST/raw" / RAW_NAMES["test_images"]).read_bytes())
    assert prepare_files("mnist", tmp_path, download=False) == "local files"
    for name in RAW_NAMES.values():
        assert (raw / name).read_bytes() == (tmp_path / "plain/MNIST/raw" / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MNIST", "plain"]  # no staging folder left


def test_corrupt_debian_file_is_reported_and_creates_no_folder(tmp_path, debian_fashion):
    (debian_fashion / f"{RAW_NAMES['train_labels']}.gz").write_bytes(b"\x1f\x8b\x08\x00junk")
    with pytest.raises(DataError, match="corrupt.*reinstall"):
        prepare_files("fashion-mnist", tmp_path / "data", download=False)
    assert not (tmp_path / "data").exists()


def test_interrupt_while_staging_leaves_nothing_behind(tmp_path, debian_fashion, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_module, "_validate", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare_files("fashion-mnist", tmp_path / "data", download=False)
    assert not (tmp_path / "data").exists()


def test_failed_download_creates_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module.dataset_class("mnist"), "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(DataError, match="could not be downloaded"):
        prepare_files("mnist", tmp_path / "data", download=True)
    assert not (tmp_path / "data").exists()


def read_train_images(data_dir):
    raw = (Path(data_dir) / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 28, 28).copy()


def test_dataset_statistics_are_exact_whatever_the_thread_count(tiny_data_dir):
    # a float32 sum of 47M pixels differs with the threads adding it up (so did the data of a 1- and a 2-thread run)
    images = torch.randint(0, 256, (60_000, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    threads, stats = torch.get_num_threads(), []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            stats.append(pixel_statistics(images))
    finally:
        torch.set_num_threads(threads)
    assert stats[0] == stats[1]
    exact = images[:2000].double() / 255  # float64 over fewer pixels: exact to 1e-15
    mean, std = pixel_statistics(images[:2000])
    assert mean == pytest.approx(float(exact.mean()), rel=1e-14) and std == pytest.approx(float(exact.std()), rel=1e-12)
    data = load_dataset("mnist", tiny_data_dir)
    mean, std = pixel_statistics(torch.from_numpy(read_train_images(tiny_data_dir)))
    assert (data.mean, data.std) == ((mean,), (std,))
