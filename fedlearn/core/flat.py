"""Model weights as one flat vector: what clients and server exchange."""

from __future__ import annotations

import torch
from torch import nn


def flat_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that make up the flat vector (refused for models with buffers, which it would miss).

    Keep the list to call :func:`get_flat` / :func:`set_flat` on it many times without walking the modules.
    """
    if any(True for _ in model.buffers()):
        raise ValueError("models with buffers (e.g. batch norm) are not supported by flat exchange")
    return list(model.parameters())


def get_flat(model: nn.Module | list[nn.Parameter]) -> torch.Tensor:
    """A detached copy of every parameter (of a model, or from :func:`flat_parameters`), concatenated in the
    parameters' logical (NCHW) order, whatever their memory format."""
    params = flat_parameters(model) if isinstance(model, nn.Module) else model
    return torch.cat([p.detach().reshape(-1) for p in params])


def unflatten_like(model: nn.Module, weights: torch.Tensor) -> list[torch.Tensor]:
    """Views of ``weights`` shaped like each parameter of ``model`` (no copy)."""
    views, offset = [], 0
    for param in model.parameters():
        n = param.numel()
        views.append(weights[offset : offset + n].view_as(param))
        offset += n
    return views


def set_flat(model: nn.Module | list[nn.Parameter], weights: torch.Tensor) -> None:
    """Copy ``weights`` into the parameters of ``model`` in place.

    (Unlike ``torch.nn.utils.vector_to_parameters``, which makes the parameters
    views of ``weights``, so training would silently change the caller's vector.)
    """
    params = model.parameters() if isinstance(model, nn.Module) else model
    offset = 0
    with torch.no_grad():
        for param in params:
            n = param.numel()
            param.copy_(weights[offset : offset + n].view_as(param))
            offset += n
    if offset != weights.numel():
        raise ValueError(f"weights hold {weights.numel()} values, the model {offset}")
