"""Real digits with natural clients: the MNIST test set (10,000 digits) split into 20 "writer groups": its two
halves (LeCun et al.: the first 5,000 from NIST's original training set, written by Census Bureau employees; the
last 5,000 from its test set, written by students) times ten bands of ink (how many pixels a digit's strokes
cover: pen and hand). Each group keeps a fifth of its digits as its own test samples.

    python3 examples/mnist_writers.py [MNIST_T10K_FOLDER] OUT.npz     # arrays for --dataset OUT.npz
    --dataset examples/mnist_writers.py:writers                      # the same arrays from this function

The folder holds t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) (default: $MNIST_T10K, else
../shared/data/mnist-t10k); torchvision reads them.
"""

import os
import sys
from pathlib import Path

import numpy as np

DEFAULT = Path(os.environ.get("MNIST_T10K", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"))


def _read(folder: Path, name: str) -> np.ndarray:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    plain = folder / name
    if not plain.exists():
        import gzip
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=name) as tmp:
            tmp.write(gzip.decompress((folder / f"{name}.gz").read_bytes()))
            tmp.flush()
            return _read(Path(tmp.name).parent, Path(tmp.name).name)
    reader = read_image_file if "images" in name else read_label_file
    return reader(str(plain)).numpy()


def writers(folder: Path = DEFAULT, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays: 28x28 8-bit digits (N, 1, 28, 28), labels, and each digit's writer group (0..19)."""
    images = _read(Path(folder), "t10k-images-idx3-ubyte")
    labels = _read(Path(folder), "t10k-labels-idx1-ubyte")
    ink = (images > 127).sum(axis=(1, 2))
    half = np.arange(len(images)) >= 5000
    band = np.empty(len(images), dtype=np.int64)
    for h in (False, True):  # ten bands of equal size within each half
        rows = np.flatnonzero(half == h)
        band[rows[np.argsort(ink[rows], kind="stable")]] = np.arange(len(rows)) * 10 // len(rows)
    group = 10 * half + band
    test = np.random.default_rng(seed).random(len(images)) < 0.2
    x = images[:, None]
    return {"x_train": x[~test], "y_train": labels[~test], "client_train": group[~test],
            "x_test": x[test], "y_test": labels[test], "client_test": group[test]}  # fmt: skip


if __name__ == "__main__":
    folder, out = (Path(sys.argv[1]), sys.argv[2]) if len(sys.argv) > 2 else (DEFAULT, sys.argv[1])
    np.savez_compressed(out, **writers(folder))
