"""The one-gate RNNs' native ops: ``seqnorm::rnn_forward`` / ``seqnorm::rnn_backward``.

Modes ``rnn_tanh``, ``rnn_relu`` and ``rnn_modrelu`` (``extra`` is modReLU's bias). The
schemas, fake (meta) shapes and autograd are defined here, so importing this module never
needs the compiled library; ``csrc/rnn.cpp`` registers the CPU kernels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import build
from .reference import regrad

__all__ = ["MODES", "recurrence"]

MODES = ("rnn_tanh", "rnn_relu", "rnn_modrelu")

torch.library.define(
    "seqnorm::rnn_forward",
    "(str mode, Tensor gi, Tensor h0, Tensor w_hh, Tensor? b_hh, Tensor? extra, "
    "Tensor batch_sizes, bool reverse, bool save) -> (Tensor, Tensor, Tensor)",
)
torch.library.define(
    "seqnorm::rnn_backward",
    "(str mode, Tensor grad_out, Tensor grad_hn, Tensor out, Tensor hprev, Tensor w_hh, "
    "Tensor batch_sizes, bool reverse) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.register_fake("seqnorm::rnn_forward")
def _forward_fake(mode, gi, h0, w_hh, b_hh, extra, batch_sizes, reverse, save):  # noqa: ANN001, ANN202
    build.load_library()  # tracing runs this: the compiled graph will call the kernel
    N, H = gi.shape[0], h0.shape[1]
    hprev = gi.new_empty(N, H) if save else gi.new_empty(0)  # saved for the backward
    return gi.new_empty(N, H), h0.new_empty(h0.shape), hprev  # out, h_n, h_prev


@torch.library.register_fake("seqnorm::rnn_backward")
def _backward_fake(mode, grad_out, grad_hn, out, hprev, w_hh, batch_sizes, reverse):  # noqa: ANN001, ANN202
    H = out.shape[1]
    extra = out.new_empty(H if mode == "rnn_modrelu" else 0)
    return (
        out.new_empty(out.shape),
        grad_hn.new_empty(grad_hn.shape),
        w_hh.new_empty(w_hh.shape),
        out.new_empty(H),
        extra,
    )


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    mode, gi, h0, w_hh, b_hh, extra, batch_sizes, reverse, _ = inputs
    out, _, hprev = output
    ctx.mode, ctx.reverse, ctx.has_b, ctx.has_extra = (
        mode,
        reverse,
        b_hh is not None,
        extra is not None,
    )
    ctx.save_for_backward(gi, h0, w_hh, b_hh, extra, out, hprev, batch_sizes)


def _backward(ctx: Any, grad_out: Tensor | None, grad_hn: Tensor | None, _: Any) -> tuple[Any, ...]:
    gi, h0, w_hh, b_hh, extra, out, hprev, batch_sizes = ctx.saved_tensors
    grad_out = torch.zeros_like(out) if grad_out is None else grad_out
    grad_hn = torch.zeros_like(h0) if grad_hn is None else grad_hn
    if torch.is_grad_enabled():  # create_graph=True: differentiate the step loop instead
        d_gi, d_h0, d_w, d_b, d_x = regrad(
            ctx.mode, (gi, h0, w_hh, b_hh, extra), (grad_out, grad_hn), (batch_sizes, ctx.reverse)
        )
    else:
        d_gi, d_h0, d_w, d_b, d_x = torch.ops.seqnorm.rnn_backward(
            ctx.mode, grad_out, grad_hn, out, hprev, w_hh, batch_sizes, ctx.reverse
        )
    return (None, d_gi, d_h0, d_w, d_b if ctx.has_b else None, d_x if ctx.has_extra else None,
            None, None, None)  # fmt: skip


torch.library.register_autograd("seqnorm::rnn_forward", _backward, setup_context=_setup)


def recurrence(
    mode: str,
    gi: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    extra: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, Tensor]:
    """One unit of a one-gate RNN over packed ``gi``: see :func:`seqnorm.native.recurrence`."""
    if not build.is_loaded() and not torch.compiler.is_compiling():
        build.load_library()
    save = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (gi, h0, w_hh, b_hh, extra)
    )  # keep h_{t-1} only when a backward can come
    out, h_n, _ = torch.ops.seqnorm.rnn_forward(
        mode, gi, h0, w_hh, b_hh, extra, batch_sizes, reverse, save
    )
    return out, h_n
