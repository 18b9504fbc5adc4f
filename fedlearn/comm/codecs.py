"""How a client's update is encoded for upload: top-k sparsification or QSGD quantization of its delta.

An encoding is a ``uint8`` payload, the bytes a client would send; the server
decodes it back into a float32 delta before its checks and rule. Without
``--compress`` a client sends its trained weights as float32 (4 bytes each).

- ``topk`` (Stich et al. 2018, "Sparsified SGD with Memory"): the
  ``k = max(1, floor(ratio * D))`` entries of largest magnitude, as ``k``
  int32 indices (ascending) then ``k`` float32 values: ``8 k`` bytes.
- ``qsgd`` (Alistarh et al. 2017, "QSGD"): in buckets of ``QSGD_BUCKET``
  entries (the paper's experiments use 512), each entry ``v_i`` of a bucket
  with norm ``||v||`` becomes ``||v|| sign(v_i) l_i / s``, where ``l_i`` is
  ``floor(s |v_i| / ||v||)`` plus one with probability equal to the fraction
  dropped, so the decoded delta is unbiased. Sent: one float32 norm per bucket,
  then per entry a sign bit and ``ceil(log2(s + 1))`` level bits, packed:
  ``4 ceil(D / 512) + ceil(D (1 + ceil(log2(s + 1))) / 8)`` bytes (no Elias
  coding: the figure is the plain fixed-width code).

Decoding trusts nothing: a payload of the wrong length, an index out of range
or repeated, a level above ``s``, a norm that is negative or not finite raise
:class:`DecodeError` (the server counts the update as rejected).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..core.client_state import refuse_outside_checkpoints
from ..registry import FEDERATED_SCRIPTS, Entry, Flag, Flags, Range, Registry, require

QSGD_BUCKET = 512


class DecodeError(ValueError):
    """A payload that is not a valid encoding (never applied)."""


class Codec(Protocol):
    """Encodes a float32 delta into bytes and back."""

    name: str

    def payload_bytes(self, dim: int) -> int:
        """Bytes of the encoding of a ``dim``-entry delta."""

    def encode(self, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The ``uint8`` payload of ``delta`` (``generator``: the job's seeded draws, if the codec needs any)."""

    def decode(self, payload: torch.Tensor, dim: int) -> torch.Tensor:
        """The float32 delta a payload stands for; :class:`DecodeError` if it is not a valid encoding."""

    def describe(self, dim: int) -> str:
        """What is sent, in words (for the tables)."""


def _as_bytes(*parts: torch.Tensor) -> torch.Tensor:
    return torch.cat([p.detach().cpu().contiguous().view(torch.uint8) for p in parts])


def _expect_length(payload: torch.Tensor, length: int) -> None:
    if payload.dtype != torch.uint8 or payload.dim() != 1 or payload.numel() != length:
        raise DecodeError(f"expected {length} bytes, got {payload.numel()} of {payload.dtype}")


@dataclass(frozen=True)
class TopK:
    """The ``ratio`` share of entries of largest magnitude, as indices and values."""

    ratio: float
    name: str = "topk"

    def kept(self, dim: int) -> int:
        """How many entries are sent: ``max(1, floor(ratio * dim))``."""
        return max(1, min(dim, math.floor(self.ratio * dim)))

    def payload_bytes(self, dim: int) -> int:
        """4 bytes of int32 index and 4 of float32 value per kept entry."""
        return 8 * self.kept(dim)

    def encode(self, delta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The kept entries' indices (ascending) then their values."""
        flat = delta.detach().float()
        index = torch.topk(flat.abs(), self.kept(flat.numel()), sorted=False).indices.sort().values
        return _as_bytes(index.to(torch.int32), flat[index])

    def decode(self, payload: torch.Tensor, dim: int) -> torch.Tensor:
        """Zeros but at the sent indices."""
        k = self.kept(dim)
        _expect_length(payload, 8 * k)
        index = payload[: 4 * k].clone().view(torch.int32).long()
        values = payload[4 * k :].clone().view(torch.float32)
        if index.numel() and (int(index[0]) < 0 or int(index[-1]) >= dim or not bool((index[1:] > index[:-1]).all())):
            raise DecodeError("top-k indices must be ascending, distinct and within the model")
        out = torch.zeros(dim, dtype=torch.float32)
        out[index] = values
        return out

    def describe(self, dim: int) -> str:
        """What is sent, in words."""
        return f"top-k delta, {self.kept(dim):,} of {dim:,} entries"


@dataclass(frozen=True)
class QSGD:
    """Stochastic quantization to ``levels`` levels per bucket of ``QSGD_BUCKET`` entries."""

    levels: int
    name: str = "qsgd"

    @property
    def level_bits(self) -> int:
        """Bits of one entry's level: ``ceil(log2(levels + 1))``."""
        return max(1, math.ceil(math.log2(self.levels + 1)))

    def payload_bytes(self, dim: int) -> int:
        """A float32 norm per bucket, then a sign bit and the level bits per entry, packed into bytes."""
        return 4 * math.ceil(dim / QSGD_BUCKET) + math.ceil(dim * (1 + self.level_bits) / 8)

    def encode(self, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Norms, then the packed sign and level bits (levels rounded up at random: unbiased)."""
        flat = delta.detach().float().cpu()
        dim, s = flat.numel(), self.levels
        buckets = torch.nn.functional.pad(flat, (0, -dim % QSGD_BUCKET)).view(-1, QSGD_BUCKET)
        norms = buckets.norm(dim=1)
        scaled = buckets.abs() * (s / torch.where(norms > 0, norms, 1.0)).unsqueeze(1)
        low = scaled.floor()
        level = (low + (torch.rand(scaled.shape, generator=generator) < scaled - low)).clamp_(max=s)
        level = level.reshape(-1)[:dim].to(torch.int64)
        negative = (flat < 0).to(torch.int64)
        shifts = torch.arange(self.level_bits, dtype=torch.int64)
        bits = torch.cat([negative.unsqueeze(1), (level.unsqueeze(1) >> shifts) & 1], dim=1)
        packed = torch.from_numpy(np.packbits(bits.to(torch.uint8).numpy().reshape(-1)))
        return _as_bytes(norms, packed)

    def decode(self, payload: torch.Tensor, dim: int) -> torch.Tensor:
        """``norm * sign * level / levels`` per entry."""
        _expect_length(payload, self.payload_bytes(dim))
        count = math.ceil(dim / QSGD_BUCKET)
        norms = payload[: 4 * count].clone().view(torch.float32)
        if not bool(torch.isfinite(norms).all()) or bool((norms < 0).any()):
            raise DecodeError("QSGD norms must be finite and non-negative")
        width = 1 + self.level_bits
        bits = np.unpackbits(payload[4 * count :].numpy())[: dim * width].reshape(dim, width)
        bits = torch.from_numpy(bits).to(torch.int64)
        level = (bits[:, 1:] << torch.arange(self.level_bits, dtype=torch.int64)).sum(dim=1)
        if bool((level > self.levels).any()):
            raise DecodeError(f"QSGD levels must be at most {self.levels}")
        sign = 1.0 - 2.0 * bits[:, 0].float()
        scale = norms.repeat_interleave(QSGD_BUCKET)[:dim] / self.levels
        return sign * level.float() * scale

    def describe(self, dim: int) -> str:
        """What is sent, in words."""
        return f"QSGD delta, {self.levels} levels, {1 + self.level_bits} bits per entry"


def error_feedback_problem(codec: str, error_feedback: bool) -> str | None:
    """Why error feedback cannot go with ``codec`` (None: it can): it carries what top-k sparsification drops;
    with QSGD's unbiased rounding its residual grows without bound. The flag check and the uplink both ask."""
    if error_feedback and codec != "topk":
        return f"--error_feedback carries what top-k sparsification drops: use it with --compress topk, not {codec}"
    return None


def withheld_layers_problem(codec: str) -> str | None:
    """Why an upload that withholds layers (FedPer) cannot be encoded by ``codec`` (None: it can); the flag check
    and the local trainer both ask."""
    if codec == "none":
        return None
    return (f"--personalize fedper with --compress {codec}: the codecs encode the whole model's delta; run FedPer "
            "uncompressed")  # fmt: skip


def _check_error_feedback(flags: Flags, script: str) -> None:
    """Error feedback carries what top-k drops, and lives with each client (not in checkpoints of other
    processes)."""
    problem = error_feedback_problem(flags.compress, flags.error_feedback)
    require(problem is None, problem or "")
    if flags.error_feedback:
        refuse_outside_checkpoints(flags, "--error_feedback", "residual")


CODECS = Registry.of(
    "codecs",
    Flag("compress", "none", str, group="comm", federated=True, older="none",
         help="encode each client's delta: topk (Stich et al. 2018) or qsgd (Alistarh et al. 2017); none: send the "
              "weights as float32"),
    [
        Entry("none", lambda flags: None, "the weights as float32"),
        Entry("topk", lambda flags: TopK(flags["compress_ratio"]), "top-k sparsified delta", flags=(
            Flag("compress_ratio", 0.01, float, group="comm", federated=True, older=0.01,
                 valid=Range(0, 1, low_open=True), help="share of the delta's entries topk sends"),
            Flag("error_feedback", False, group="comm", federated=True, older=False,
                 help="topk: keep what each client's encoding dropped and add it to its next delta"))),
        Entry("qsgd", lambda flags: QSGD(flags["qsgd_levels"]), "QSGD-quantized delta", flags=(
            Flag("qsgd_levels", 16, int, group="comm", federated=True, older=16, valid=Range(1, 2**16 - 1),
                 help="qsgd's quantization levels s per bucket of 512"),)),
    ],
    check=_check_error_feedback,
    off="none",
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""Every update encoding by name (``--compress``): an entry's part builds the codec from the flags (None: clients
send their weights); adding one is a codec class and one entry here."""


def build_codec(flags: Mapping[str, Any]) -> Codec | None:
    """The codec ``--compress`` names, with its settings from ``flags`` (None for ``none``)."""
    return CODECS[flags["compress"]].part(flags)


def upload_bytes(dim: int, codec: Codec | None) -> int:
    """Bytes of one update: the float32 weights, or the encoded delta."""
    return 4 * dim if codec is None else codec.payload_bytes(dim)


def job_bytes(dim: int, codec: Codec | None, with_control: bool = False) -> tuple[int, int]:
    """Bytes one job downloads (the float32 model; SCAFFOLD's control variate too) and uploads (the weights or
    the encoded delta; SCAFFOLD's ``delta c_i`` too)."""
    control = 4 * dim if with_control else 0
    return 4 * dim + control, upload_bytes(dim, codec) + control


def describe_upload(codec: Codec | None, dim: int, error_feedback: bool = False) -> str:
    """One line for the tables: what a client uploads, and its size."""
    size = f"{upload_bytes(dim, codec):,} bytes per update"
    if codec is None:
        return f"weights, float32 ({size})"
    return f"{codec.describe(dim)} ({size}{', error feedback' if error_feedback else ''})"
