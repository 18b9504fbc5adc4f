"""Device choice, deterministic settings and version facts for a run."""

from __future__ import annotations

import os
import platform

import numpy as np
import torch

from ..errors import UsageError
from ..version import __version__


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a usage error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(requested)


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_deterministic() -> None:
    """Same seed, same numbers: deterministic kernels (and cuBLAS workspace) everywhere."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms(True) would also import the compiler's config to set its flag: 1.5 s at
    # the start of every process, workers included. Nothing here compiles but the benchmark's torch.compile
    # variant (which sets that flag itself), so set the eager flag the public call wraps.
    torch._C._set_deterministic_algorithms(True)
    assert torch.are_deterministic_algorithms_enabled()
    torch.backends.cudnn.benchmark = False


def versions() -> dict[str, str]:
    """Versions that decide the numbers of a run."""
    import torchvision  # only here: processes that never read a dataset need not load it

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "fedlearn": __version__,
        "platform": platform.platform(),
    }
