"""What a model entry says of itself: the inputs it accepts."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelInfo:
    """A model's accepted input: one sample's shape (None: any shape; ``takes_input_shape``: its factory is told
    the data's) and dtype (float32 for images and features, int64 for token ids; None: any). Its output is
    ``num_classes`` logits."""

    input_shape: tuple[int, ...] | None = None
    takes_input_shape: bool = False
    input_dtype: torch.dtype | None = torch.float32

    def accepts(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> bool:
        """Whether the model takes samples of ``shape`` and ``dtype``."""
        fits_shape = self.input_shape is None or tuple(self.input_shape) == tuple(shape)
        return fits_shape and (self.input_dtype is None or self.input_dtype == dtype)
