"""The benchmark's CIFAR-10 section: training throughput of each CIFAR-10 model, with and without ``--augment
crop-flip``.

The data are random CIFAR-shaped tensors (3x32x32, channels-last as the scripts hold them): CIFAR-10 itself
cannot be downloaded on the machines this project runs on, and the time of a training step does not depend on
the pixel values. Each figure is one epoch of ``run_baseline``'s loop (Adam, batch 100), evaluation excluded.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from tabulate import tabulate

from ..core.timing import interleaved_times
from ..data import Dataset
from ..data.cifar import INFO as CIFAR
from ..models import MODELS, build_model, count_parameters
from .data import BATCH_SIZE
from .runs import baseline_seconds


def synthetic_cifar(num_train: int, num_test: int, seed: int = 0) -> Dataset:
    """CIFAR-shaped random images (already 'normalized', channels-last) and labels."""
    g = torch.Generator().manual_seed(seed)
    images = {n: torch.randn(n, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
              for n in (num_train, num_test)}  # fmt: skip
    labels = {n: torch.randint(0, 10, (n,), generator=g) for n in (num_train, num_test)}
    return Dataset("synthetic-cifar", images[num_train], labels[num_train], images[num_test], labels[num_test],
                   mean=(0.0,) * 3, std=(1.0,) * 3, source="synthetic")  # fmt: skip


def epoch_seconds(data: Dataset, model_name: str, augment: str, seed: int = 0) -> float:
    """One epoch of the baseline's training of ``model_name`` on ``data`` (evaluation excluded), configured as
    ``run_baseline --dataset cifar10 --model model_name --augment augment`` would be."""
    return baseline_seconds(data, seed, dataset="cifar10", model=model_name, augment=augment)


def cifar_models() -> list[str]:
    """The models that take CIFAR-10's images."""
    return sorted(name for name, entry in MODELS.entries.items() if entry.info.input_shape == CIFAR.input_shape)


def cifar_section(num_train: int, reps: int) -> dict[str, Any]:
    """Samples per second of each CIFAR-10 model, without and with crop-flip augmentation."""
    data = synthetic_cifar(num_train, BATCH_SIZE)
    runners = {f"{model} / {augment}": (lambda m=model, a=augment: epoch_seconds(data, m, a))
               for model in cifar_models() for augment in ("none", "crop-flip")}  # fmt: skip
    times = interleaved_times(runners, reps, self_timed=True)
    seconds = {k: statistics.median(v) for k, v in times.items()}
    return {
        "samples": num_train,
        "parameters": {m: count_parameters(build_model(m)) for m in cifar_models()},
        "seconds": seconds,
        "repetitions_s": times,
        "samples_per_s": {k: num_train / v for k, v in seconds.items()},
    }


def render_cifar(section: dict[str, Any], reps: int) -> list[str]:
    """The section's table: each model and augmentation, and what the augmentation costs."""
    rows = []
    for name, per_s in section["samples_per_s"].items():
        model, augment = name.split(" / ")
        plain = section["samples_per_s"][f"{model} / none"]
        rows.append([model, f"{section['parameters'][model]:,}", augment, f"{section['seconds'][name]:.2f}",
                     f"{per_s:,.0f}", f"{plain / per_s:.3f}"])  # fmt: skip
    return [
        "",
        f"CIFAR-10 models: one epoch of {section['samples']:,} CIFAR-shaped random images (3x32x32, channels-last), "
        f"run_baseline's loop, Adam, batch {BATCH_SIZE}; median of {reps} interleaved repetitions, evaluation excluded",
        tabulate(rows, headers=["model", "parameters", "augment", "seconds", "samples/s", "time vs none"],
                 tablefmt="github", disable_numparse=True),
    ]  # fmt: skip
