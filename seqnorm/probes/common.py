"""Helpers shared by the probes: which module is a seqnorm layer, and buffers left as found."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..layers import RecurrentLayer

__all__ = ["check_layer", "preserved_buffers"]


def check_layer(layer: nn.Module) -> RecurrentLayer:
    """``layer`` itself if it is a seqnorm sequence layer.

    Raises:
        TypeError: if it is not a ``SpectralRNN``, ``SpectralGRU`` or ``SpectralLSTM``.
    """
    if not isinstance(layer, RecurrentLayer):
        raise TypeError(
            f"layer must be a SpectralRNN, SpectralGRU or SpectralLSTM, got {type(layer).__name__}"
        )
    return layer


@contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer's value on exit (a training-mode forward updates some)."""
    saved = [(m, n, b.detach().clone()) for m in model.modules() for n, b in m._buffers.items()
             if b is not None]  # fmt: skip
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, value in saved:
                current = module._buffers.get(name)
                if current is not None and current.shape == value.shape:
                    current.copy_(value)
