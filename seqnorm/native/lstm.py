"""The native whole-sequence LSTM (with and without ``proj_size``) as ``torch.library`` ops.

``seqnorm::lstm_forward`` and ``seqnorm::lstm_backward`` are defined here (schemas, fake
impls, autograd); their CPU kernels are in ``csrc/lstm.cpp``. Importing this module never
needs the compiled library; :func:`lstm_recurrence` loads it before the first call.

The forward also returns what the backward needs: the activated gates ``(N, 4H)`` (i, f,
g, o), the cell state of every row ``(N, H)`` and, with ``proj_size``, the unprojected
hidden state ``m = o * tanh(c)`` ``(N, H)`` (else an empty tensor). A double backward
(``create_graph=True``) recomputes through the differentiable step loop
(the LSTM step of ``seqnorm.layers.spec.SPECS``) instead of calling the C++ backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .reference import reference, regrad

__all__ = ["lstm_recurrence", "lstm_reference"]

torch.library.define(
    "seqnorm::lstm_forward",
    "(Tensor x, Tensor? w_ih, Tensor? b_ih, Tensor h0, Tensor c0, Tensor w_hh, Tensor? b_hh, "
    "Tensor? w_hr, Tensor batch_sizes, bool reverse, bool save) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)
torch.library.define(
    "seqnorm::lstm_backward",
    "(Tensor? grad_out, Tensor? grad_hn, Tensor? grad_cn, Tensor x, Tensor? w_ih, "
    "bool has_b_ih, Tensor h0, Tensor c0, Tensor w_hh, Tensor? w_hr, Tensor out, "
    "Tensor gates, Tensor cs, Tensor m, Tensor batch_sizes, bool reverse, bool need_bias) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.register_fake("seqnorm::lstm_forward")
def _forward_fake(x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, batch_sizes, reverse, save):  # noqa: ANN001, ANN202
    from .build import load_library

    load_library()  # tracing runs this: the compiled graph will call the kernel
    n, h, r = x.shape[0], c0.shape[1], h0.shape[1]
    if not save:
        return (x.new_empty((n, r)), torch.empty_like(h0), torch.empty_like(c0),
                x.new_empty((0,)), x.new_empty((0,)), x.new_empty((0,)))  # fmt: skip
    m = x.new_empty((n, h)) if w_hr is not None else x.new_empty((0,))
    return (x.new_empty((n, r)), torch.empty_like(h0), torch.empty_like(c0),
            x.new_empty((n, 4 * h)), x.new_empty((n, h)), m)  # fmt: skip


@torch.library.register_fake("seqnorm::lstm_backward")
def _backward_fake(grad_out, grad_hn, grad_cn, x, w_ih, has_b_ih, h0, c0, w_hh, w_hr, out,  # noqa: ANN001, ANN202
                   gates, cs, m, batch_sizes, reverse, need_bias):  # fmt: skip
    none = gates.new_empty((0,))
    db = gates.new_empty((gates.shape[1],)) if need_bias else none
    dw_hr = torch.empty_like(w_hr) if w_hr is not None else none
    if w_ih is None:
        d_w_ih = d_b_ih = none
    else:
        d_w_ih = torch.empty_like(w_ih)
        d_b_ih = w_ih.new_empty((w_ih.shape[0],)) if has_b_ih else none
    return (torch.empty_like(x), d_w_ih, d_b_ih, torch.empty_like(h0), torch.empty_like(c0),
            torch.empty_like(w_hh), db, dw_hr)  # fmt: skip


def lstm_reference(
    gi: Tensor,
    state: tuple[Tensor, Tensor],
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The same recurrence as :func:`lstm_recurrence`, as a differentiable loop of
    the LSTM step (the double backward and the tests use it).

    Packed layout as in the native kernel: one state of ``B`` rows; at step ``t`` only rows
    ``[0, batch_sizes[t])`` step, the others keep their value.
    """
    out, final = reference("lstm", gi, state, w_hh, b_hh, w_hr, batch_sizes, reverse)
    return out, final


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, batch_sizes, reverse, _save = inputs
    out, _, _, gates, cs, m = output
    ctx.reverse = reverse
    ctx.mark_non_differentiable(gates, cs, m)
    ctx.set_materialize_grads(False)  # an unused output costs no zero-filled gradient
    ctx.save_for_backward(x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, batch_sizes, out, gates, cs, m)


def _backward(ctx: Any, g_out, g_hn, g_cn, *_unused):  # noqa: ANN001, ANN202
    x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, batch_sizes, out, gates, cs, m = ctx.saved_tensors
    if g_out is None and g_hn is None and g_cn is None:
        return (None,) * 11
    if torch.is_grad_enabled():  # create_graph=True: a differentiable recomputation
        d = regrad("lstm", (x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr), (g_out, g_hn, g_cn),
                   (batch_sizes, ctx.reverse))  # fmt: skip
        return (*d, None, None, None)
    need_bias = b_hh is not None and ctx.needs_input_grad[6]
    dx, dw_ih, db_ih, dh0, dc0, dw_hh, db_hh, dw_hr = torch.ops.seqnorm.lstm_backward(
        g_out, g_hn, g_cn, x, w_ih, b_ih is not None, h0, c0, w_hh, w_hr, out, gates, cs, m,
        batch_sizes, ctx.reverse, need_bias,
    )  # fmt: skip
    return (dx, dw_ih if w_ih is not None else None, db_ih if b_ih is not None else None,
            dh0, dc0, dw_hh, db_hh if need_bias else None, dw_hr if w_hr is not None else None,
            None, None, None)  # fmt: skip


torch.library.register_autograd("seqnorm::lstm_forward", _backward, setup_context=_setup_context)


def lstm_recurrence(
    gi: Tensor,
    state: tuple[Tensor, Tensor],
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One LSTM unit (one layer, one direction) over a whole sequence, native CPU kernel.

    Args:
        gi: ``(N, 4H)`` input projection ``x_t @ W_ih^T + b_ih`` of every row, packed: the
            rows of step ``t`` are ``gi[off[t] : off[t] + batch_sizes[t]]``.
        state: ``(h0 (B, R), c0 (B, H))``; ``R`` is ``proj_size`` or ``H``.
        w_hh: ``(4H, R)`` recurrent weight, gates stacked ``i, f, g, o``.
        b_hh: ``(4H,)`` recurrent bias or ``None``.
        w_hr: ``(P, H)`` projection (``h = (o * tanh(c)) @ W_hr^T``) or ``None``.
        batch_sizes: CPU int64 ``(T,)``, positive and non-increasing, summing to ``N``.
        reverse: walk ``t = T-1 .. 0``.

    Returns:
        ``out (N, R)`` packed like ``gi`` and ``(h_n (B, R), c_n (B, H))``.

    Raises:
        seqnorm.native.build.NativeUnavailable: the kernels cannot be built or loaded.
        ValueError: shapes, dtypes or devices that do not fit together.
    """
    from .build import load_library

    h0, c0 = state
    if gi.dim() != 2 or gi.shape[1] % 4:
        raise ValueError(f"gi must be (N, 4H), got {tuple(gi.shape)}")
    hidden = gi.shape[1] // 4
    r = hidden if w_hr is None else w_hr.shape[0]
    if w_hr is not None and (w_hr.dim() != 2 or w_hr.shape[1] != hidden):
        raise ValueError(f"w_hr must be (P, {hidden}), got {tuple(w_hr.shape)}")
    if w_hh.shape != (4 * hidden, r):
        raise ValueError(f"w_hh must be ({4 * hidden}, {r}), got {tuple(w_hh.shape)}")
    if h0.dim() != 2 or h0.shape[1] != r or c0.shape != (h0.shape[0], hidden):
        raise ValueError(
            f"state must be (h0 (B, {r}), c0 (B, {hidden})), got "
            f"{tuple(h0.shape)} and {tuple(c0.shape)}"
        )
    if b_hh is not None and b_hh.shape != (4 * hidden,):
        raise ValueError(f"b_hh must be ({4 * hidden},), got {tuple(b_hh.shape)}")
    if batch_sizes.dtype != torch.int64 or batch_sizes.device.type != "cpu":
        raise ValueError(
            f"batch_sizes must be a CPU int64 tensor, got {batch_sizes.dtype} on "
            f"{batch_sizes.device}"
        )
    tensors = [gi, h0, c0, w_hh] + [t for t in (b_hh, w_hr) if t is not None]
    if any(t.device.type != "cpu" or t.dtype != gi.dtype for t in tensors):
        raise ValueError(f"every tensor must be on the CPU with gi's dtype {gi.dtype}")
    if gi.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"gi must be float32 or float64, got {gi.dtype}")
    load_library()
    return _run(gi, None, None, state, w_hh, b_hh, w_hr, batch_sizes, reverse)


def _run(
    x: Tensor,
    w_ih: Tensor | None,
    b_ih: Tensor | None,
    state: tuple[Tensor, Tensor],
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    h0, c0 = state
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr)
    )
    out, h_n, c_n, *_ = torch.ops.seqnorm.lstm_forward(
        x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, batch_sizes, reverse, save
    )
    return out, (h_n, c_n)


#: The modes this module's kernel runs (read by :mod:`seqnorm.native.dispatch`).
MODES = ("lstm",)


def recurrence(
    mode: str,
    gi: Tensor,
    state: tuple[Tensor, Tensor],
    w_hh: Tensor,
    b_hh: Tensor | None,
    extra: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """:func:`seqnorm.native.recurrence`'s entry for ``mode="lstm"`` (``extra``: ``W_hr``)."""
    if mode != "lstm":
        raise ValueError(f"mode must be 'lstm', got {mode!r}")
    return lstm_recurrence(gi, state, w_hh, b_hh, extra, batch_sizes, reverse)


def sequence(
    mode: str,
    x: Tensor,
    w_ih: Tensor | None,
    b_ih: Tensor | None,
    state: tuple[Tensor, Tensor],
    w_hh: Tensor,
    b_hh: Tensor | None,
    extra: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """:func:`seqnorm.native.sequence`'s entry for ``mode="lstm"`` (``extra``: ``W_hr``)."""
    if mode != "lstm":
        raise ValueError(f"mode must be 'lstm', got {mode!r}")
    if w_ih is None:
        return lstm_recurrence(x, state, w_hh, b_hh, extra, batch_sizes, reverse)
    from .build import load_library

    if not torch.compiler.is_compiling():
        load_library()
    return _run(x, w_ih, b_ih, state, w_hh, b_hh, extra, batch_sizes, reverse)
