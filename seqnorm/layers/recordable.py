"""What the probes ask of a layer whose hidden states they record: ``recording()``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

__all__ = ["Record", "Recordable"]

#: One forward call's states: per unit (in ``h_n``'s order), the states ``h[0..T-1]``.
Record = list[list[Tensor]]


class Recordable:
    """Mixin of the layers whose every hidden state the probes can take.

    While :meth:`recording`, the layer runs its step-by-step path and appends one
    :data:`Record` per forward call to ``self._records``; the layer's own docs say how each
    state is laid out.
    """

    _records: list[Record] | None = None  # a list only inside recording()

    @property
    def is_recording(self) -> bool:
        """Whether the layer is inside :meth:`recording`."""
        return self._records is not None

    @contextmanager
    def recording(self) -> Iterator[list[Record]]:
        """Record every hidden state of every forward call made inside the block.

        Inside, the layer runs its step-by-step path, so each state is its own autograd node
        (``torch.autograd.grad`` can take ``dL/dh[t]``). The yielded list gets one entry per
        call: per unit, in ``h_n``'s order (``l0``, ``l0_reverse``, ``l1``, ...), the states
        ``h[0..T-1]`` in time order. Recurrent layers: each ``(B, R)`` (``R = proj_size or
        hidden_size``; for packed input ``(batch_sizes[t], R)``, sorted by length), and for
        the reverse direction ``h[t]`` is its state after reading ``x[t]``. Diagonal (LRU)
        layers: each complex state as real planes ``[Re h | Im h]`` ``(B, 2P)``.

        Raises:
            RuntimeError: if the layer is already recording.

        >>> import torch
        >>> from seqnorm import SpectralGRU
        >>> gru = SpectralGRU(3, 4, bidirectional=True)
        >>> with gru.recording() as calls:
        ...     out, _ = gru(torch.randn(5, 2, 3))
        >>> (rows,) = calls  # one call: rows l0, l0_reverse
        >>> len(rows), len(rows[1]), bool((rows[1][0] == out[0, :, 4:]).all())
        (2, 5, True)
        """
        if self._records is not None:
            raise RuntimeError(f"this {type(self).__name__} is already recording")
        self._records = []
        try:
            yield self._records
        finally:
            self._records = None
