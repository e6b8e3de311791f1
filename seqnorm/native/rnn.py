"""The one-gate RNNs' native ops: ``seqnorm::rnn_forward`` / ``seqnorm::rnn_backward``.

Modes ``rnn_tanh``, ``rnn_relu`` and ``rnn_modrelu`` (``extra`` is modReLU's bias). The
schemas, fake (meta) shapes and autograd are defined here, so importing this module never
needs the compiled library; ``csrc/rnn.cpp`` registers the CPU kernels and checks their
inputs. A double backward differentiates the mode's step of :mod:`seqnorm.steps`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..steps import modrelu_step, rnn_relu_step, rnn_tanh_step
from . import build
from .reference import regrad

__all__ = ["MODES", "sequence"]

#: The step equation of each mode this kernel runs (its double backward differentiates it).
STEPS = {"rnn_tanh": rnn_tanh_step, "rnn_relu": rnn_relu_step, "rnn_modrelu": modrelu_step}
#: The modes this kernel runs (read by :mod:`seqnorm.native.dispatch`).
MODES = tuple(STEPS)

torch.library.define(
    "seqnorm::rnn_forward",
    "(str mode, Tensor x, Tensor? w_ih, Tensor? b_ih, Tensor h0, Tensor w_hh, Tensor? b_hh, "
    "Tensor? extra, Tensor batch_sizes, bool reverse) -> (Tensor, Tensor)",
)
torch.library.define(
    "seqnorm::rnn_backward",
    "(str mode, Tensor? grad_out, Tensor? grad_hn, Tensor x, Tensor? w_ih, bool has_b_ih, "
    "Tensor h0, Tensor w_hh, Tensor out, Tensor batch_sizes, bool reverse) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.register_fake("seqnorm::rnn_forward")
def _forward_fake(mode, x, w_ih, b_ih, h0, w_hh, b_hh, extra, batch_sizes, reverse):  # noqa: ANN001, ANN202
    build.load_library()  # tracing runs this: the compiled graph will call the kernel
    return x.new_empty(x.shape[0], h0.shape[1]), h0.new_empty(h0.shape)  # out, h_n


@torch.library.register_fake("seqnorm::rnn_backward")
def _backward_fake(mode, grad_out, grad_hn, x, w_ih, has_b_ih, h0, w_hh, out, batch_sizes,  # noqa: ANN001, ANN202
                   reverse):  # fmt: skip
    H, none = out.shape[1], x.new_empty(0)
    if w_ih is None:
        d_w_ih = d_b_ih = none
    else:
        d_w_ih, d_b_ih = w_ih.new_empty(w_ih.shape), w_ih.new_empty(H) if has_b_ih else none
    return (x.new_empty(x.shape), d_w_ih, d_b_ih, h0.new_empty(h0.shape),
            w_hh.new_empty(w_hh.shape), out.new_empty(H),
            out.new_empty(H if mode == "rnn_modrelu" else 0))  # fmt: skip


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    mode, x, w_ih, b_ih, h0, w_hh, b_hh, extra, batch_sizes, reverse = inputs
    ctx.mode, ctx.reverse = mode, reverse
    ctx.set_materialize_grads(False)  # an unused output costs no zero-filled gradient
    ctx.save_for_backward(x, w_ih, b_ih, h0, w_hh, b_hh, extra, output[0], batch_sizes)


def _backward(ctx: Any, grad_out: Tensor | None, grad_hn: Tensor | None) -> tuple[Any, ...]:
    x, w_ih, b_ih, h0, w_hh, b_hh, extra, out, batch_sizes = ctx.saved_tensors
    if grad_out is None and grad_hn is None:
        return (None,) * 10
    if torch.is_grad_enabled():  # create_graph=True: differentiate the step loop instead
        d = regrad(STEPS[ctx.mode], (x, w_ih, b_ih, h0, w_hh, b_hh, extra),
                   (grad_out, grad_hn), batch_sizes, ctx.reverse)  # fmt: skip
        return (None, *d, None, None)
    d_x, d_w_ih, d_b_ih, d_h0, d_w, d_b, d_extra = torch.ops.seqnorm.rnn_backward(
        ctx.mode, grad_out, grad_hn, x, w_ih, b_ih is not None, h0, w_hh, out, batch_sizes,
        ctx.reverse,
    )  # fmt: skip
    return (None, d_x, d_w_ih if w_ih is not None else None,
            d_b_ih if b_ih is not None else None, d_h0, d_w, d_b if b_hh is not None else None,
            d_extra if extra is not None else None, None, None)  # fmt: skip


torch.library.register_autograd("seqnorm::rnn_forward", _backward, setup_context=_setup)


def sequence(
    mode: str,
    x: Tensor,
    w_ih: Tensor | None,
    b_ih: Tensor | None,
    h0: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    extra: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, Tensor]:
    """One unit of a one-gate RNN over packed ``x``: see :func:`seqnorm.native.sequence`."""
    return torch.ops.seqnorm.rnn_forward(
        mode, x, w_ih, b_ih, h0, w_hh, b_hh, extra, batch_sizes, reverse
    )
