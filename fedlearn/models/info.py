"""What a model entry says of itself: the inputs it accepts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """A model's accepted input: one sample's shape (None: any shape; ``takes_input_shape``: its factory is told
    the data's). Its output is ``num_classes`` logits."""

    input_shape: tuple[int, ...] | None = None
    takes_input_shape: bool = False

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether the model takes samples of ``shape``."""
        return self.input_shape is None or tuple(self.input_shape) == tuple(shape)
