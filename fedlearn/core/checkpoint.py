"""Server state on disk: ``--checkpoint PATH`` saves it atomically, ``--resume PATH`` continues from it.

A checkpoint is a dictionary of tensors, numbers, strings and lists, written
with ``torch.save`` and read back with ``weights_only=True`` (no pickled code).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..version import __version__
from . import schema
from .files import write_atomically
from .schema import SchemaError

FORMAT = 2  # 2: the server step's state (server_step) is saved


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often (in rounds or updates) the server saves its state, and what identifies the run."""

    path: str
    every: int
    args: dict[str, Any]
    script: str


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` so that a reader (or a crash) never sees a partial file."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "fedlearn": __version__, **state}, buffer)
    write_atomically(path, buffer.getvalue(), "--checkpoint", private=True)


@dataclass(frozen=True)
class Expected:
    """What a checkpoint must be to be resumed: made by ``script`` with the settings ``args`` but for those that
    are ``resumable`` (settings it lacks taking their ``older`` value), and holding what ``layout`` says."""

    script: str
    args: Mapping[str, Any]
    resumable: frozenset[str]
    older: Mapping[str, Any]
    layout: Layout


@dataclass(frozen=True)
class Layout:
    """The parts' state a checkpoint holds: the model's size, the rule's counters, the server step's tensors,
    the keys of what clients keep between jobs (control variates, residuals), and whether the server keeps a
    control variate (SCAFFOLD's ``c``)."""

    dim: int
    counters: tuple[str, ...] = ()
    step_keys: tuple[str, ...] = ()
    client_state: tuple[str, ...] = ()
    server_control: bool = False
    client_sizes: tuple[tuple[str, int], ...] = ()  # (key, length) where a client's vector is not the model's


def load_checkpoint(path: str | os.PathLike, expected: Expected) -> dict[str, Any]:
    """Read a checkpoint; check it was made by the same script with the same settings and that every field
    has its type, shape and range (:func:`checkpoint_schema`)."""
    script, args = expected.script, expected.args
    _check_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"--resume {path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear message
        raise DataError(f"--resume {path}: not a fedlearn checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not isinstance(state.get("format"), int):
        raise DataError(f"--resume {path}: not a fedlearn checkpoint")
    if state["format"] != FORMAT:
        raise DataError(f"--resume {path}: checkpoint format {state['format']}, this fedlearn reads format {FORMAT}")
    if state.get("script") != script:
        raise DataError(f"--resume {path}: made by {state.get('script')}, not {script}")
    saved = state.get("args")
    if not isinstance(saved, dict):
        raise DataError(f"--resume {path}: unusable checkpoint: args is not a mapping")
    saved = {**expected.older, **saved}
    resumable = expected.resumable
    differ = sorted(k for k in set(saved) | set(args) if k not in resumable and saved.get(k) != args.get(k))
    if differ:
        shown = ", ".join(f"--{k} {saved.get(k)!r} (now {args.get(k)!r})" for k in differ[:3])
        raise DataError(f"--resume {path}: made with other settings: {shown}")
    try:
        checkpoint_schema(script, state.get("mode"), args, expected.layout)(state, "")
    except SchemaError as exc:
        raise DataError(f"--resume {path}: unusable checkpoint: {exc}") from None
    return state


def _check_archive(path: str | os.PathLike) -> None:
    """A checkpoint is the zip archive ``torch.save`` writes, every entry stored as it is (never compressed), so
    that reading it takes no more memory than the file's size: a deflated entry (a decompression bomb) or an
    entry larger than the file is refused before anything is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries, size = archive.infolist(), os.path.getsize(path)
    except FileNotFoundError:
        raise DataError(f"--resume {path}: no such file") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"--resume {path}: not a fedlearn checkpoint ({type(exc).__name__})") from None
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size > size:
            raise DataError(f"--resume {path}: not a fedlearn checkpoint (entry {entry.filename!r} is compressed or "
                            "larger than the file; torch.save stores entries as they are)")  # fmt: skip


def checkpoint_schema(script: str, mode: Any, args: Mapping[str, Any], layout: Layout) -> schema.Check:
    """What a checkpoint of ``script`` (``mode``: simulated or distributed for run_async) must hold to be
    resumed by a run with settings ``args`` whose parts keep the state ``layout`` says."""
    clients, dim = args["num_clients"], layout.dim
    privacy = {"dp_clipped": schema.integer()} if args.get("dp_clip") is not None else {}
    aggregator = schema.record({**{name: schema.integer() for name in layout.counters},
                                "rejected": schema.dict_of(schema.integer()), **privacy},
                               {"solver_steps": schema.list_of(schema.integer(0)),
                                "solver_unconverged": schema.integer(0)})  # fmt: skip
    record = schema.record({"history": schema.list_of(_HISTORY_ENTRY), "elapsed_s": schema.number(0),
                            "sections_s": schema.dict_of(schema.number(0))})  # fmt: skip
    step = _optimizer_state(layout.step_keys, dim)
    sizes = dict(layout.client_sizes)
    kept = {key: _per_client(clients, sizes.get(key, dim)) for key in layout.client_state}
    if script == "run_federated":
        return schema.record({
            "round": schema.integer(1, args["global_epoch"]), "weights": schema.vector(dim),
            "sim_time": schema.number(0), "samples_trained": schema.integer(), "updates": schema.integer(),
            "bytes_up": schema.integer(), "bytes_down": schema.integer(),
            "record": record, "aggregator": aggregator, "server_step": step,
            **({"control": schema.vector(dim), "control_clients": schema.list_of(schema.integer(0, clients - 1))}
               if layout.server_control else {}),
            **kept,
        })  # fmt: skip
    server = schema.record({
        "weights": schema.vector(dim), "version": schema.integer(), "received": schema.integer(),
        "discarded": schema.integer(), "staleness": schema.list_of(schema.integer()),
        "buffer": schema.list_of(schema.vector(dim), max_len=args["buffer_size"] - 1),
        "scales": schema.list_of(schema.number(0)), "clients": schema.list_of(schema.integer(0, clients - 1)),
        "counts": schema.list_of(schema.integer()), "aggregator": aggregator, "server_step": step,
    }, same_length=("buffer", "scales", "clients", "counts"))  # fmt: skip
    tally = {"mode": schema.one_of([mode]), "server": server, "record": record,
             "arrivals": schema.integer(0, args["max_updates"]), "samples_trained": schema.integer(),
             "accepted_since_eval": schema.integer(), "loss_sum": schema.number(nan=True),
             "loss_samples": schema.integer(), "bytes_up": schema.integer(),
             "bytes_down": schema.integer()}  # fmt: skip
    if mode == "simulated":
        sent = {"sent_keys": schema.list_of(schema.integer()), "sent_weights": schema.list_of(schema.vector(dim)),
                "sent_versions": schema.list_of(schema.integer())}  # fmt: skip
        return schema.record({**tally, **sent, **kept}, same_length=tuple(sent))
    lost = schema.record({"rank": schema.integer(1), "reason": schema.text(), "after_updates": schema.integer()})
    return schema.record({**tally, "mode": schema.one_of(["distributed"]), "next_key": schema.integer(),
                          "rng": _rng_state, "lost": schema.list_of(lost)})  # fmt: skip


def _per_client(clients: int, dim: int) -> schema.Check:
    """One vector per client listed (clients' control variates, or their error-feedback residuals)."""
    return schema.record({"clients": schema.list_of(schema.integer(0, clients - 1), max_len=clients),
                          "values": schema.list_of(schema.vector(dim), max_len=clients)},
                         same_length=("clients", "values"))  # fmt: skip


def _optimizer_state(keys: tuple[str, ...], dim: int) -> schema.Check:
    """The server optimizer's state: none of its tensors (before its first step) or all of them."""
    vector, shape = schema.vector(dim), schema.record({})
    second_moment = schema.vector(dim, low=0.0)  # an adaptive optimizer's v: a sum of squares

    def check(value: Any, where: str) -> None:
        shape(value, where)
        present = [key for key in keys if key in value]
        if present and len(present) < len(keys):
            schema.fail(where, f"holds {', '.join(present)} but not {', '.join(k for k in keys if k not in present)}")
        for key in present:
            (second_moment if key == "v" else vector)(value[key], schema.field(where, key))

    return check


_HISTORY_ENTRY = schema.record({
    "step": schema.integer(), "sim_time": schema.number(0, null=True), "wall_time_s": schema.number(0),
    "test_accuracy": schema.number(0, 1), "test_loss": schema.number(0, nan=True),
    "train_loss": schema.number(nan=True), "samples_trained": schema.integer(),
    "client_updates": schema.integer(null=True), "time_breakdown_s": schema.dict_of(schema.number(0)),
})  # fmt: skip


def _rng_state(value: Any, where: str) -> None:
    """A numpy PCG64 generator state (as ``bit_generator.state`` gives it)."""
    try:
        np.random.default_rng().bit_generator.state = value
    except (TypeError, ValueError, KeyError, OverflowError):
        schema.fail(where, "is not a random generator state")
