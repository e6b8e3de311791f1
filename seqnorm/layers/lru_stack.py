"""The deep LRU of Orvieto et al. (2023): a linear encoder, then blocks of

    x + dropout(GLU(dropout(GELU(LRU(norm(x))))))

with a torch recurrent layer's call (``out, h_n = stack(x, h0)``). The decoder (pooling and
a linear readout) belongs to the model around it (:class:`seqnorm.model.SeqModel` pools the
last step or the mean over steps).
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

from .checks import check_flag, check_size
from .lru import LRU, DiagonalRecurrentLayer, check_input, check_state

__all__ = ["NORMS", "LRUBlock", "LRUStack"]

#: The blocks' normalisations: ``layer`` (LayerNorm over features), ``batch`` (BatchNorm over
#: every step of every sequence), ``none``.
NORMS = ("layer", "batch", "none")


def _norm(kind: str, width: int, factory: dict[str, Any]) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width, **factory)
    if kind == "batch":
        return nn.BatchNorm1d(width, **factory)
    return nn.Identity()


class LRUBlock(nn.Module):
    """``x + dropout(GLU(dropout(GELU(LRU(norm(x))))))`` on packed rows ``(N, H)``.

    Args:
        hidden_size: ``H``, features in and out.
        state_size: ``P``, the LRU's complex state.
        norm: ``layer``, ``batch`` or ``none``.
        glu: the paper's gated output ``out1(z) * sigmoid(out2(z))`` (one ``Linear(H, 2H)``);
            ``False``: the GELU's output directly.
        dropout: after the GELU and after the GLU (training only).
        **lru: the LRU's keyword arguments (``r_min``, ``r_max``, ``max_phase``,
            ``constraint``, ``constraint_options``, ``device``, ``dtype``).
    """

    def __init__(
        self,
        hidden_size: int,
        state_size: int,
        *,
        norm: str = "layer",
        glu: bool = True,
        dropout: float = 0.0,
        **lru: Any,
    ) -> None:
        super().__init__()
        factory = {k: lru[k] for k in ("device", "dtype") if k in lru}
        self.norm = _norm(norm, hidden_size, factory)
        self.lru = LRU(hidden_size, state_size, **lru)
        self.glu = nn.Linear(hidden_size, 2 * hidden_size, **factory) if glu else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, batch_sizes: Tensor, hx: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` packed rows ``(N, H)`` (sorted by length), ``hx`` ``(1, B, P)`` complex;
        returns the block's rows ``(N, H)`` and the LRU's ``h_n`` ``(1, B, P)``."""
        z, h_n = self.lru(PackedSequence(self.norm(x), batch_sizes), hx)
        z = self.drop(F.gelu(z.data))  # (N, H)
        if self.glu is not None:
            z = self.drop(F.glu(self.glu(z), dim=-1))  # (N, H)
        return x + z, h_n


class LRUStack(DiagonalRecurrentLayer):
    """Encoder and ``num_layers`` LRU blocks, called like ``torch.nn.RNN``.

    ``out, h_n = stack(x, h0)``: ``x`` ``(T, B, input_size)`` (``(B, T, input_size)`` with
    ``batch_first``), unbatched ``(T, input_size)`` or a ``PackedSequence``; ``out`` has
    ``hidden_size`` features; ``h0`` and ``h_n`` are ``(num_layers, B, state_size)`` complex
    (every block's LRU state, torch's layout).

    Args:
        input_size: features of the input (the encoder is ``Linear(input_size, hidden_size)``).
        hidden_size: ``H``, the width of the blocks (the paper's ``d_model``).
        num_layers: blocks.
        state_size: ``P``, complex state entries of each LRU (``None``: ``hidden_size``).
        r_min, r_max, max_phase: the LRUs' ring initialisation (:class:`LRU`).
        norm: ``layer`` (default), ``batch`` or ``none``, before each LRU.
        glu: the gated output of each block (:class:`LRUBlock`).
        dropout: the blocks' dropout.
        batch_first: input and output are ``(B, T, F)``.
        constraint: ``none`` or ``bound`` on every LRU (:class:`LRU`).
        constraint_options: ``{"gamma": 0.99}`` for ``bound``.
        device: where to allocate the parameters.
        dtype: float dtype of the parameters.

    >>> stack = LRUStack(1, 16, num_layers=2, state_size=8, batch_first=True)
    >>> out, h_n = stack(torch.randn(3, 10, 1))
    >>> tuple(out.shape), tuple(h_n.shape), stack.unit_names
    ((3, 10, 16), (2, 3, 8), ['l0', 'l1'])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        state_size: int | None = None,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
        norm: str = "layer",
        glu: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
        constraint: str = "none",
        constraint_options: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_size("input_size", input_size)
        check_size("hidden_size", hidden_size)
        check_size("num_layers", num_layers)
        state_size = hidden_size if state_size is None else state_size
        check_size("state_size", state_size)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        check_flag("glu", glu)
        check_flag("batch_first", batch_first)
        if not (isinstance(dropout, (int, float)) and 0 <= dropout <= 1):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.state_size, self.batch_first = state_size, batch_first
        factory = {"device": device, "dtype": dtype}
        self.encoder = nn.Linear(input_size, hidden_size, **factory)
        lru = dict(r_min=r_min, r_max=r_max, max_phase=max_phase, constraint=constraint,
                   constraint_options=constraint_options, **factory)  # fmt: skip
        self.blocks = nn.ModuleList(
            LRUBlock(hidden_size, state_size, norm=norm, glu=glu, dropout=dropout, **lru)
            for _ in range(num_layers)
        )

    @property
    def unit_names(self) -> list[str]:
        """``l0``, ``l1``, ...: one per block, in ``h_n``'s order."""
        return [f"l{k}" for k in range(self.num_layers)]

    @property
    def unroll(self) -> bool:
        """Whether the LRUs step their scans in autograd ops instead of the native kernel."""
        return all(block.lru.unroll for block in self.blocks)

    @unroll.setter
    def unroll(self, value: bool) -> None:
        for block in self.blocks:
            block.lru.unroll = bool(value)

    def recurrent_eigenvalues(self) -> Tensor:
        """Every block's ``lambda``, ``(num_layers, P)`` complex, differentiable."""
        return torch.stack([block.lru.eigenvalues() for block in self.blocks])

    def forward(
        self, input: Tensor | PackedSequence, hx: Tensor | None = None
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """Run the encoder and the blocks.

        Args:
            input: ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first``),
                unbatched ``(T, input_size)``, or a ``PackedSequence`` (sorted or not).
            hx: ``(num_layers, B, state_size)`` complex (unbatched ``(num_layers,
                state_size)``), in the batch's own order for packed input; zeros if omitted.

        Returns:
            ``(output, h_n)``: ``output`` with ``hidden_size`` features, shaped like the input
            (packed for packed input); ``h_n`` ``(num_layers, B, state_size)`` complex.
        """
        dtype = self.encoder.weight.dtype
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_idx, unsorted_idx = input
            check_input("LRUStack", data, True, self.input_size, dtype, self.batch_first)
            B, batched = int(batch_sizes[0]), True
        else:
            check_input("LRUStack", input, False, self.input_size, dtype, self.batch_first)
            batched = input.dim() == 3
            x = input.transpose(0, 1) if batched and self.batch_first else input
            x = x if batched else x.unsqueeze(1)  # (T, B, I)
            T, B = x.shape[:2]
            data = x.reshape(T * B, self.input_size)  # time-major rows (T*B, I)
            batch_sizes, sorted_idx, unsorted_idx = torch.full((T,), B), None, None
        L, P = self.num_layers, self.state_size
        if hx is None:
            state = data.new_zeros(L, B, P, dtype=dtype.to_complex())
        else:
            state = check_state(hx, L, B, P, dtype, batched)  # (L, B, P)
            if sorted_idx is not None:
                state = state.index_select(1, sorted_idx)
        z = self.encoder(data)  # (N, H)
        finals = []
        with ExitStack() as recorders:
            calls = [recorders.enter_context(b.lru.recording()) for b in self.blocks
                     if self.is_recording]  # fmt: skip
            for k, block in enumerate(self.blocks):
                z, h_n = block(z, batch_sizes, state[k : k + 1])  # (N, H), (1, B, P)
                finals.append(h_n)
            if self._records is not None:
                self._records.append([c[0][0] for c in calls])  # per block: its T states
        h_n = torch.cat(finals)  # (L, B, P)
        if packed:
            if unsorted_idx is not None:
                h_n = h_n.index_select(1, unsorted_idx)
            return PackedSequence(z, batch_sizes, sorted_idx, unsorted_idx), h_n
        out = z.reshape(T, B, self.hidden_size)
        if not batched:
            return out.squeeze(1), h_n.squeeze(1)  # (T, H), (L, P)
        return (out.transpose(0, 1) if self.batch_first else out), h_n

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        s += f", state_size={self.state_size}"
        return s + (", batch_first=True" if self.batch_first else "")
