"""The LSTM's native ops (with and without ``proj_size``): ``seqnorm::lstm_forward`` /
``seqnorm::lstm_backward``.

``extra`` is the projection ``W_hr`` ``(P, H)`` or ``None``. The forward also returns what
the backward needs: the activated gates ``(N, 4H)`` (i, f, g, o), the cell state of every
row ``(N, H)`` and, with ``proj_size``, the unprojected hidden state ``m = o * tanh(c)``
``(N, H)`` (else empty tensors, as when no backward can come). The schemas, fake (meta)
shapes and autograd are defined here, so importing this module never needs the compiled
library; ``csrc/lstm.cpp`` registers the CPU kernels and checks their inputs. A double
backward differentiates :func:`seqnorm.steps.lstm_step`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..steps import lstm_step
from . import build
from .reference import regrad

__all__ = ["MODES", "sequence"]

#: The modes this kernel runs (read by :mod:`seqnorm.native.dispatch`).
MODES = ("lstm",)

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
    build.load_library()  # tracing runs this: the compiled graph will call the kernel
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


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, batch_sizes, reverse, _save = inputs
    out, _, _, gates, cs, m = output
    ctx.reverse = reverse
    ctx.mark_non_differentiable(gates, cs, m)
    ctx.set_materialize_grads(False)  # an unused output costs no zero-filled gradient
    ctx.save_for_backward(x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, batch_sizes, out, gates, cs, m)


def _backward(ctx: Any, g_out: Tensor | None, g_hn: Tensor | None, g_cn: Tensor | None,
              *_: Any) -> tuple[Any, ...]:  # fmt: skip
    x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr, batch_sizes, out, gates, cs, m = ctx.saved_tensors
    if g_out is None and g_hn is None and g_cn is None:
        return (None,) * 11
    if torch.is_grad_enabled():  # create_graph=True: a differentiable recomputation
        d = regrad(lstm_step, (x, w_ih, b_ih, h0, c0, w_hh, b_hh, w_hr), (g_out, g_hn, g_cn),
                   batch_sizes, ctx.reverse)  # fmt: skip
        return (*d, None, None, None)
    need_bias = b_hh is not None and ctx.needs_input_grad[6]
    dx, dw_ih, db_ih, dh0, dc0, dw_hh, db_hh, dw_hr = torch.ops.seqnorm.lstm_backward(
        g_out, g_hn, g_cn, x, w_ih, b_ih is not None, h0, c0, w_hh, w_hr, out, gates, cs, m,
        batch_sizes, ctx.reverse, need_bias,
    )  # fmt: skip
    return (dx, dw_ih if w_ih is not None else None, db_ih if b_ih is not None else None,
            dh0, dc0, dw_hh, db_hh if need_bias else None, dw_hr if w_hr is not None else None,
            None, None, None)  # fmt: skip


torch.library.register_autograd("seqnorm::lstm_forward", _backward, setup_context=_setup)


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
    """One LSTM unit over packed ``x`` (``extra``: ``W_hr``): see
    :func:`seqnorm.native.sequence`."""
    h0, c0 = state
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, w_ih, b_ih, h0, c0, w_hh, b_hh, extra)
    )  # keep the gates only when a backward can come
    out, h_n, c_n, *_ = torch.ops.seqnorm.lstm_forward(
        x, w_ih, b_ih, h0, c0, w_hh, b_hh, extra, batch_sizes, reverse, save
    )
    return out, (h_n, c_n)
