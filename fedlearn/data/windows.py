"""Fixed-length windows over texts, never materialized: the texts and each window's start, gathered per batch.

A next-character dataset (Shakespeare) has a sample for nearly every character of its text, each the ``length``
characters before it. Held as windows, that is ``length`` times the text; held here, it is the text (one byte a
character) and one start offset per sample. ``windows[index]`` gathers the batch ``(len(index), length)`` as int64
token ids; :func:`take` keeps a subset as windows (the clients' test sets, a share of the clients).
"""

from __future__ import annotations

from typing import Any

import torch


class Windows:
    """Samples ``text[start : start + length]`` for each ``start`` (``text``: uint8 token ids)."""

    def __init__(self, text: torch.Tensor, starts: torch.Tensor, length: int) -> None:
        self.text, self.starts, self.length = text, starts, length
        self._offsets = torch.arange(length, device=text.device)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.starts), self.length))

    @property
    def dtype(self) -> torch.dtype:
        return torch.int64

    @property
    def device(self) -> torch.device:
        return self.text.device

    def __len__(self) -> int:
        return len(self.starts)

    def dim(self) -> int:
        return 2

    def __getitem__(self, index: Any) -> torch.Tensor:
        starts = self.starts[index]
        if starts.dim() == 0:
            starts = starts[None]
        return self.text[starts.to(self.text.device)[:, None] + self._offsets].long()

    def subset(self, index: torch.Tensor) -> Windows:
        """The windows at ``index``, still as windows over the same text."""
        return Windows(self.text, self.starts[index.to(self.starts.device)], self.length)

    def to(self, device: torch.device | str, memory_format: Any = None) -> Windows:
        return Windows(self.text.to(device), self.starts.to(device), self.length)

    def share_memory_(self) -> Windows:
        self.text.share_memory_()
        self.starts.share_memory_()
        return self

    def nbytes(self) -> int:
        """Bytes held: the text and the starts."""
        return self.text.numel() * self.text.element_size() + self.starts.numel() * self.starts.element_size()


def take(x: torch.Tensor | Windows, index: torch.Tensor) -> torch.Tensor | Windows:
    """The samples of ``x`` at ``index``: a tensor's rows, or the windows (kept as windows)."""
    return x.subset(index) if isinstance(x, Windows) else x[index.to(x.device)]
