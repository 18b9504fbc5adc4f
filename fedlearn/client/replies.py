"""What a client sends back, as a part the trainer is given (one registry entry each).

A reply maps the weights a job started from and the weights it trained to what
the server receives, as weights (the server differences them with the start
where its step needs a delta). Every client sends its full weights today; an
encoding that loses or saves something (quantization, sparsification) is one
function and one entry in :data:`REPLIES`, and the servers stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Reply = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``reply(start, trained)``: the weights the server receives for a job that trained ``start`` into ``trained``."""


def full_weights(start: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
    """The trained weights, exactly."""
    return trained


REPLIES: dict[str, Reply] = {"weights": full_weights}
"""Every reply by name; adding one is a function and one entry here."""
