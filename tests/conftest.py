"""Shared fixtures: small, learnable, made-up datasets written as IDX files in torchvision's layout."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RAW_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_images(images: np.ndarray) -> bytes:
    """IDX3 bytes (magic 2051) for uint8 images of shape (N, H, W)."""
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """IDX1 bytes (magic 2049) for uint8 labels."""
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes, each a bright 6x6 patch at its own place on a noisy 28x28 canvas: easy to learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28))
    for c in range(10):
        r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
        images[labels == c, r : r + 6, col : col + 6] += 180
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_dataset(
    data_dir: Path, folder: str = "MNIST", n_train: int = 400, n_test: int = 100, seed: int = 0, gz: bool = False
) -> Path:
    """Write a synthetic train/test split under ``data_dir/folder/raw``; returns that raw folder."""
    raw = data_dir / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_digits(n_train, seed)
    test_x, test_y = synthetic_digits(n_test, seed + 1)
    blobs = {
        "train_images": idx_images(train_x),
        "train_labels": idx_labels(train_y),
        "test_images": idx_images(test_x),
        "test_labels": idx_labels(test_y),
    }
    for key, blob in blobs.items():
        if gz:
            (raw / f"{RAW_NAMES[key]}.gz").write_bytes(gzip.compress(blob))
        else:
            (raw / RAW_NAMES[key]).write_bytes(blob)
    return raw


def synthetic_colour(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes on a noisy 32x32 RGB canvas: class c is a bright 8x8 patch at its own place, in colour c % 3."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 3, 32, 32))
    for c in range(10):
        r, col = 2 + 8 * (c // 4), 2 + 8 * (c % 4)
        images[labels == c, c % 3, r : r + 8, col : col + 8] += 180
    return np.clip(images, 0, 255).astype(np.uint8), labels


CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def write_cifar(data_dir: Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """Write a synthetic CIFAR-10 in the python version's layout (``data_dir/cifar-10-batches-py``: five pickled
    training batches, a test batch, batches.meta); returns that folder."""
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_colour(n_train, seed)
    test_x, test_y = synthetic_colour(n_test, seed + 1)
    parts = np.array_split(np.arange(n_train), len(CIFAR_TRAIN_BATCHES))
    batches = {name: (train_x[p], train_y[p]) for name, p in zip(CIFAR_TRAIN_BATCHES, parts)}
    batches["test_batch"] = (test_x, test_y)
    for name, (x, y) in batches.items():
        entry = {"batch_label": name, "data": x.reshape(len(x), -1), "labels": [int(v) for v in y],
                 "filenames": [f"{name}_{i}.png" for i in range(len(x))]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


@contextlib.contextmanager
def http_mirror(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on loopback (a stand-in for a dataset's servers); yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def tiny_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA_DIR holding a tiny synthetic CIFAR-10 (500 train, 100 test); treat as read-only."""
    root = tmp_path_factory.mktemp("tiny-cifar")
    write_cifar(root)
    return root


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA_DIR holding a tiny synthetic 'MNIST' (400 train, 100 test); treat as read-only."""
    root = tmp_path_factory.mktemp("tiny")
    write_dataset(root)
    return root


def run_torchrun(script: str, *args: str, nproc: int = 3) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node NPROC SCRIPT --distributed ARGS`` as the README shows."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), script,
         "--distributed", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip


def run_script(
    script: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run an entry script as a user would, capturing its output (``env``: variables to add)."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**os.environ, **env} if env else None,
        timeout=600,
    )
