"""Hot-path options measured by ``python3 -m fedlearn.bench --variants``.

Each option is timed against the default with interleaved repetitions (so
drift in the machine's speed hits both alike): memory layout, torch.compile of
the model, the evaluation batch size, and a vectorized step over many small
clients (torch.func.vmap) against the sequential one fedlearn runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ..core.timing import interleaved_medians
from ..core.training import Passes, evaluate, make_optimizer, train
from ..data import Dataset
from ..models import build_model

LR = 1e-3
BATCH_SIZE = 100


def _epoch_runner(data: Dataset, channels_last: bool, compiled: bool = False) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model("cnn", channels_last=channels_last)
    if compiled:
        torch.use_deterministic_algorithms(True)  # the compiler's flag too (fedlearn's runs set only the eager one)
    forward = torch.compile(model) if compiled else model
    optimizer = make_optimizer("adam", model.parameters(), LR)
    d = data.to(torch.device("cpu"), channels_last)
    indices = torch.arange(d.train_y.numel())
    generator = torch.Generator().manual_seed(0)
    return lambda: train(forward, optimizer, d.train_x, d.train_y, Passes(indices, 1, BATCH_SIZE, generator))


def _eval_runner(data: Dataset, channels_last: bool, batch_size: int) -> Callable[[], None]:
    model = build_model("cnn", channels_last=channels_last)
    d = data.to(torch.device("cpu"), channels_last)
    return lambda: evaluate(model, d.test_x, d.test_y, batch_size)


def many_clients_step(
    data: Dataset, clients: int, samples: int, vectorized: bool
) -> Callable[[], dict[str, torch.Tensor]]:
    """One SGD step of ``clients`` clients, each from the same weights on its own ``samples`` samples.

    Sequential (what fedlearn runs: one model, reloaded per client) or all at
    once with ``vmap(grad(...))``; both return each client's new weights, stacked.
    """
    torch.manual_seed(0)
    model = build_model("cnn")
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    x = data.train_x[: clients * samples].contiguous().view(clients, samples, 1, 28, 28)
    y = data.train_y[: clients * samples].view(clients, samples)

    def sequential() -> dict[str, torch.Tensor]:
        results: dict[str, list[torch.Tensor]] = {name: [] for name in start}
        for k in range(clients):
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(start[name])
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[k]), y[k]).backward()
            for name, p in model.named_parameters():
                results[name].append(p.detach() - LR * p.grad)
        return {name: torch.stack(v) for name, v in results.items()}

    def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (xb,)), yb)

    per_client_grad = vmap(grad(loss), in_dims=(None, 0, 0))

    def vectorized_step() -> dict[str, torch.Tensor]:
        grads = per_client_grad(start, x, y)
        return {name: start[name] - LR * grads[name] for name in start}

    return vectorized_step if vectorized else sequential


def variants_section(data: Dataset, reps: int, compile_model: bool = True) -> dict[str, Any]:
    """Every option with its seconds and its ratio to the default it would replace."""
    results: dict[str, Any] = {}
    epochs = {"training epoch, channels_last (default)": _epoch_runner(data, True),
              "training epoch, NCHW (--no_channels_last)": _epoch_runner(data, False)}  # fmt: skip
    if compile_model:
        epochs["training epoch, torch.compile + channels_last"] = _epoch_runner(data, True, compiled=True)
    timed = interleaved_medians(epochs, reps)
    default = timed["training epoch, channels_last (default)"]
    results.update({name: {"seconds": s, "vs_default": s / default} for name, s in timed.items()})

    evals = {f"evaluation, batch {b}{', NCHW' if not cl else ''}": _eval_runner(data, cl, b)
             for b, cl in ((500, True), (2000, True), (500, False))}  # fmt: skip
    timed = interleaved_medians(evals, reps)
    default = timed["evaluation, batch 500"]
    results.update({name: {"seconds": s, "vs_default": s / default} for name, s in timed.items()})

    samples = 60
    clients = min(100, int(data.train_y.numel()) // samples)
    steps = {f"{clients} clients x {samples} samples, one step each: sequential (default)":
             many_clients_step(data, clients, samples, vectorized=False),
             f"{clients} clients x {samples} samples, one step each: vmap":
             many_clients_step(data, clients, samples, vectorized=True)}  # fmt: skip
    timed = interleaved_medians(steps, reps)
    default = next(iter(timed.values()))
    results.update({name: {"seconds": s, "vs_default": s / default} for name, s in timed.items()})
    return results
