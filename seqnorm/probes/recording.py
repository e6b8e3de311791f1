"""Recording every hidden state of the seqnorm layers of a model during a forward pass."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from torch import Tensor, nn

from ..layers import DiagonalRecurrentLayer, RecurrentLayer

__all__ = ["StateRecording", "find_layers", "record_hidden_states"]

#: What the probes take as a seqnorm sequence layer: ``SpectralRNN/GRU/LSTM``, and the layers
#: of diagonal recurrences (``LRU``, ``LRUStack``).
PROBED = (RecurrentLayer, DiagonalRecurrentLayer)


def find_layers(model: nn.Module) -> list[tuple[str, RecurrentLayer | DiagonalRecurrentLayer]]:
    """Every seqnorm sequence layer in ``model`` (``model`` itself included), module order.

    A layer inside another (an ``LRU`` in an ``LRUStack``) is probed through the outer one.

    Args:
        model: any module: a bare ``SpectralRNN/GRU/LSTM`` or ``LRU``, a user's model, a
            LightningModule.

    Returns:
        ``(qualified name, layer)`` pairs, as ``model.named_modules()`` lists them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found: list[tuple[str, nn.Module]] = []
    for n, m in model.named_modules():  # parents before children
        if isinstance(m, PROBED) and not any(f == "" or n.startswith(f + ".") for f, _ in found):
            found.append((n, m))
    return found


def _require_layers(model: nn.Module) -> list[tuple[str, RecurrentLayer]]:
    layers = find_layers(model)
    if not layers:
        raise ValueError(
            f"model must contain a seqnorm layer (SpectralRNN, SpectralGRU, SpectralLSTM or "
            f"LRU), found none in {type(model).__name__}"
        )
    return layers


class StateRecording:
    """The hidden states recorded by :func:`record_hidden_states`.

    ``calls[i]`` holds what the ``i``-th seqnorm layer of the model recorded (see
    :meth:`~seqnorm.layers.RecurrentLayer.recording`): one entry per forward call, each a
    list with one row per unit (stacked layer and direction, ``h_n``'s order) of ``T``
    tensors ``h[t]`` ``(B, H)``.
    """

    def __init__(
        self, layers: list[tuple[str, RecurrentLayer]], calls: list[list[list[list[Tensor]]]]
    ) -> None:
        self.names = [n for n, _ in layers]
        self.layers = [m for _, m in layers]
        self.calls = calls

    def row_names(self) -> list[str]:
        """A name per row of :meth:`states`: ``<module name>.l0``, ``<module name>.l0_reverse``,
        ... (no prefix for the model itself)."""
        return [f"{name}.{unit}" if name else unit
                for name, layer in zip(self.names, self.layers, strict=True)
                for unit in layer.unit_names]  # fmt: skip

    def states(self) -> list[list[Tensor]]:
        """One row per unit (stacked layer and direction) of every seqnorm layer, module
        order: ``T`` states each, in time order.

        Raises:
            ValueError: if a seqnorm layer was called other than exactly once.
        """
        rows: list[list[Tensor]] = []
        for name, calls in zip(self.names, self.calls, strict=True):
            if len(calls) != 1:
                raise ValueError(
                    f"seqnorm layer {name or '<model>'!r} must run exactly once per forward to "
                    f"be probed, it ran {len(calls)} times"
                )
            rows.extend(calls[0])
        return rows


@contextmanager
def record_hidden_states(model: nn.Module) -> Iterator[StateRecording]:
    """Record every hidden state of every seqnorm layer of ``model`` while inside.

    Inside the block the layers run their unrolled path (each ``h[t]`` is its own autograd
    node); on exit, even on error, they go back to normal. Built on each layer's public
    :meth:`~seqnorm.layers.RecurrentLayer.recording`.

    Args:
        model: any module containing seqnorm layers.

    Raises:
        ValueError: if ``model`` contains no seqnorm layer.
        RuntimeError: if a layer is already being recorded.

    >>> import torch
    >>> from seqnorm import SpectralGRU
    >>> gru = SpectralGRU(3, 4, num_layers=2)
    >>> with record_hidden_states(gru) as rec:
    ...     _ = gru(torch.randn(5, 2, 3))
    >>> rows = rec.states()
    >>> len(rows), len(rows[0]), tuple(rows[0][0].shape), gru.is_recording
    (2, 5, (2, 4), False)
    """
    layers = _require_layers(model)
    for name, layer in layers:
        if layer.is_recording:
            raise RuntimeError(f"seqnorm layer {name or '<model>'!r} is already being recorded")
    with ExitStack() as stack:
        calls = [stack.enter_context(layer.recording()) for _, layer in layers]
        yield StateRecording(layers, calls)
