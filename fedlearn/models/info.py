"""What a model entry says of itself: the inputs it accepts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """A model's accepted input: one sample's shape (None: any shape). Its output is ``num_classes`` logits."""

    input_shape: tuple[int, ...] | None = None

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether the model takes samples of ``shape``."""
        return self.input_shape is None or tuple(self.input_shape) == tuple(shape)
