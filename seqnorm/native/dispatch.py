"""One unit (one layer, one direction) over a whole packed sequence, on its mode's kernel.

Each cell type's kernel is one module of this package (``rnn``, ``gru``, ``lstm``, ``lru``): its
ops, the ``MODES`` it runs and its ``sequence``, which all take the same arguments. The one
line that lists those modules routes every mode to its kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..steps import State
from . import build, gru, lru, lstm, rnn

__all__ = ["MODES", "recurrence", "sequence"]

_KERNELS = {mode: cell.sequence for cell in (rnn, gru, lstm, lru) for mode in cell.MODES}

#: The modes that have a native kernel.
MODES = tuple(_KERNELS)
_FLOATS = (torch.float32, torch.float64)


def recurrence(
    mode: str,
    gi: Tensor,
    state: State,
    w_hh: Tensor,
    b_hh: Tensor | None,
    extra: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, State]:
    """Run one recurrent unit over a whole packed sequence with the native CPU kernel.

    Differentiable (the backward is one reverse walk in C++; a double backward recomputes
    through the step loop) and one op under ``torch.compile``.

    Args:
        mode: one of :data:`MODES` (``rnn_tanh``, ``rnn_relu``, ``rnn_modrelu``, ``gru``,
            ``lstm``, or ``lru``: ``w_hh`` is then lambda ``(2P,)`` as real planes,
            :mod:`seqnorm.native.lru`).
        gi: the input projections ``x_t @ W_ih^T + b_ih`` of every step ``(N, G*H)``, packed:
            step ``t``'s rows follow step ``t - 1``'s, ``batch_sizes[t]`` of them.
        state: ``h0`` ``(B, H)`` (for an LSTM ``(h0 (B, R), c0 (B, H))``, ``R`` its
            ``proj_size`` or ``H``), ``B = batch_sizes[0]``.
        w_hh: the recurrent matrix ``(G*H, R)``.
        b_hh: the recurrent bias ``(G*H,)`` or ``None``.
        extra: modReLU's bias ``(H,)`` for ``rnn_modrelu`` (the LSTM's ``W_hr``), else ``None``.
        batch_sizes: CPU int64 ``(T,)``, non-increasing (as a ``PackedSequence`` has them).
        reverse: walk ``t = T-1 .. 0`` (a bidirectional layer's reverse direction).

    Returns:
        ``(out, h_n)``: every step's hidden state ``(N, H)`` packed like ``gi``, and each
        sequence's state after its own last step (``t = 0`` in reverse) ``(B, H)``.

    Raises:
        ValueError: for an unknown mode, a non-CPU or non-float tensor.
        RuntimeError: from the kernel, for shapes, dtypes or batch sizes that do not fit
            together (the message names the argument, what was expected and what was given).
        NativeUnavailable: if the kernels cannot be built here.
    """
    return sequence(mode, gi, None, None, state, w_hh, b_hh, extra, batch_sizes, reverse)


def sequence(
    mode: str,
    x: Tensor,
    w_ih: Tensor | None,
    b_ih: Tensor | None,
    state: State,
    w_hh: Tensor,
    b_hh: Tensor | None,
    extra: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, State]:
    """:func:`recurrence` with the input projection inside the op: ``gi = x @ w_ih^T + b_ih``
    for all steps as one GEMM into reused memory (``gi`` is not kept for the backward, and
    ``dx``, ``dw_ih``, ``db_ih`` come back as one GEMM or reduction each); for an input of at
    most 16 features (``kStepInput`` in ``csrc/input.h``), per step into a buffer that stays
    in cache (its gradients taken per step too), so that the ``N x G*H`` projections never
    travel through main memory.

    Args:
        x: the unit's input ``(N, I)``, packed like ``gi``; with ``w_ih=None``, ``gi`` itself.
        w_ih: ``(G*H, I)`` or ``None``.
        b_ih: ``(G*H,)`` or ``None``.
        The others as in :func:`recurrence`.

    Returns:
        ``(out, h_n)`` as :func:`recurrence`.

    Raises:
        ValueError: for an unknown mode, a non-CPU or non-float tensor.
        RuntimeError: from the kernel, as :func:`recurrence`.
        NativeUnavailable: if the kernels cannot be built here.
    """
    if mode not in _KERNELS:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if x.device.type != "cpu" or x.dtype not in _FLOATS:
        name = "gi" if w_ih is None else "x"
        raise ValueError(
            f"{name} must be a float32 or float64 CPU tensor, got {x.dtype} on {x.device}"
        )
    if not build.is_loaded() and not torch.compiler.is_compiling():
        build.load_library()
    return _KERNELS[mode](mode, x, w_ih, b_ih, state, w_hh, b_hh, extra, batch_sizes, reverse)
