"""The native whole-sequence LSTM (with and without ``proj_size``) as ``torch.library`` ops.

``seqnorm::lstm_forward`` and ``seqnorm::lstm_backward`` are defined here (schemas, fake
impls, autograd); their CPU kernels are in ``csrc/lstm.cpp``. Importing this module never
needs the compiled library; :func:`lstm_recurrence` loads it before the first call.

The forward also returns what the backward needs: the activated gates ``(N, 4H)`` (i, f,
g, o), the cell state of every row ``(N, H)`` and, with ``proj_size``, the unprojected
hidden state ``m = o * tanh(c)`` ``(N, H)`` (else an empty tensor). A double backward
(``create_graph=True``) recomputes through the differentiable step loop
(``seqnorm.layers.steps.STEPS["lstm"]``) instead of calling the C++ backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["lstm_recurrence", "lstm_reference"]

torch.library.define(
    "seqnorm::lstm_forward",
    "(Tensor gi, Tensor h0, Tensor c0, Tensor w_hh, Tensor? b_hh, Tensor? w_hr, "
    "Tensor batch_sizes, bool reverse, bool save) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)
torch.library.define(
    "seqnorm::lstm_backward",
    "(Tensor grad_out, Tensor grad_hn, Tensor grad_cn, Tensor h0, Tensor c0, Tensor w_hh, "
    "Tensor? w_hr, Tensor out, Tensor gates, Tensor cs, Tensor m, Tensor batch_sizes, "
    "bool reverse, bool need_bias) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.register_fake("seqnorm::lstm_forward")
def _forward_fake(gi, h0, c0, w_hh, b_hh, w_hr, batch_sizes, reverse, save):  # noqa: ANN001, ANN202
    n, h = gi.shape[0], gi.shape[1] // 4
    r = h0.shape[1]
    if not save:
        return (gi.new_empty((n, r)), torch.empty_like(h0), torch.empty_like(c0),
                gi.new_empty((0,)), gi.new_empty((0,)), gi.new_empty((0,)))  # fmt: skip
    m = gi.new_empty((n, h)) if w_hr is not None else gi.new_empty((0,))
    return (gi.new_empty((n, r)), torch.empty_like(h0), torch.empty_like(c0),
            gi.new_empty((n, 4 * h)), gi.new_empty((n, h)), m)  # fmt: skip


@torch.library.register_fake("seqnorm::lstm_backward")
def _backward_fake(grad_out, grad_hn, grad_cn, h0, c0, w_hh, w_hr, out, gates, cs, m,  # noqa: ANN001, ANN202
                   batch_sizes, reverse, need_bias):  # fmt: skip
    db = gates.new_empty((gates.shape[1],)) if need_bias else gates.new_empty((0,))
    dw_hr = torch.empty_like(w_hr) if w_hr is not None else gates.new_empty((0,))
    return (torch.empty_like(gates), torch.empty_like(h0), torch.empty_like(c0),
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
    ``STEPS["lstm"]`` (the double backward and the tests use it).

    Packed layout as in the native kernel: one state of ``B`` rows; at step ``t`` only rows
    ``[0, batch_sizes[t])`` step, the others keep their value.
    """
    from seqnorm.layers.steps import STEPS

    step = STEPS["lstm"]
    sizes = batch_sizes.tolist()
    offs = [0]
    for b in sizes[:-1]:
        offs.append(offs[-1] + b)
    rows = list(gi.split(sizes))  # step t's rows (bs_t, 4H)
    h, c = state  # (B, R), (B, H)
    outs: list[Tensor] = [gi] * len(sizes)
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    for t in order:
        b = sizes[t]
        h_t, c_t = step(rows[t], (h[:b], c[:b]), w_hh, b_hh, w_hr)  # (b, R), (b, H)
        outs[t] = h_t
        h = torch.cat([h_t, h[b:]]) if b < h.shape[0] else h_t
        c = torch.cat([c_t, c[b:]]) if b < c.shape[0] else c_t
    return torch.cat(outs), (h, c)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    gi, h0, c0, w_hh, b_hh, w_hr, batch_sizes, reverse, _save = inputs
    out, _, _, gates, cs, m = output
    ctx.reverse = reverse
    ctx.has_bias = b_hh is not None
    ctx.has_proj = w_hr is not None
    ctx.save_for_backward(gi, h0, c0, w_hh, b_hh, w_hr, batch_sizes, out, gates, cs, m)


def _backward(ctx: Any, g_out, g_hn, g_cn, *_unused):  # noqa: ANN001, ANN202
    gi, h0, c0, w_hh, b_hh, w_hr, batch_sizes, out, gates, cs, m = ctx.saved_tensors
    g_out = torch.zeros_like(out) if g_out is None else g_out
    g_hn = torch.zeros_like(h0) if g_hn is None else g_hn
    g_cn = torch.zeros_like(c0) if g_cn is None else g_cn
    if torch.is_grad_enabled():  # create_graph=True: a differentiable recomputation
        return _double_backward(ctx, (gi, h0, c0, w_hh, b_hh, w_hr), batch_sizes,
                                (g_out, g_hn, g_cn))  # fmt: skip
    dgi, dh0, dc0, dw_hh, db_hh, dw_hr = torch.ops.seqnorm.lstm_backward(
        g_out, g_hn, g_cn, h0, c0, w_hh, w_hr if ctx.has_proj else None, out, gates, cs, m,
        batch_sizes, ctx.reverse, ctx.has_bias and ctx.needs_input_grad[4],
    )  # fmt: skip
    return (dgi, dh0, dc0, dw_hh, db_hh if ctx.has_bias else None,
            dw_hr if ctx.has_proj else None, None, None, None)  # fmt: skip


def _double_backward(ctx: Any, inputs: tuple, batch_sizes: Tensor, grads: tuple) -> tuple:
    wanted = [i for i, x in enumerate(inputs) if x is not None and ctx.needs_input_grad[i]]
    with torch.enable_grad():
        gi, h0, c0, w_hh, b_hh, w_hr = inputs
        out, (h_n, c_n) = lstm_reference(gi, (h0, c0), w_hh, b_hh, w_hr, batch_sizes, ctx.reverse)
        got = torch.autograd.grad(
            (out, h_n, c_n), [inputs[i] for i in wanted], grads,
            create_graph=True, allow_unused=True,
        )  # fmt: skip
    result: list[Tensor | None] = [None] * 9
    for i, g in zip(wanted, got, strict=True):
        result[i] = g
    return tuple(result)


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
    save = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    out, h_n, c_n, *_ = torch.ops.seqnorm.lstm_forward(
        gi, h0, c0, w_hh, b_hh, w_hr, batch_sizes, reverse, save
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
