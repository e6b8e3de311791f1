"""The GRU's native ops: ``seqnorm::gru_forward`` / ``seqnorm::gru_backward``.

torch's equations (``b_hn`` inside ``r * (W_hn h + b_hn)``). The forward takes the layer's
input and ``W_ih`` (the input projection of all steps is one GEMM inside the op, into reused
memory) or, with ``w_ih=None``, the projections ``gi`` themselves. The schemas, fake (meta)
shapes and autograd are defined here, so importing this module never needs the compiled
library; ``csrc/gru.cpp`` registers the CPU kernels and checks their inputs. A double
backward differentiates :func:`seqnorm.steps.gru_step`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..steps import gru_step
from . import build
from .reference import regrad

__all__ = ["MODES", "sequence"]

#: The modes this kernel runs (read by :mod:`seqnorm.native.dispatch`).
MODES = ("gru",)

torch.library.define(
    "seqnorm::gru_forward",
    "(Tensor x, Tensor? w_ih, Tensor? b_ih, Tensor h0, Tensor w_hh, Tensor? b_hh, "
    "Tensor batch_sizes, bool reverse, bool save) -> (Tensor, Tensor, Tensor)",
)
torch.library.define(
    "seqnorm::gru_backward",
    "(Tensor? grad_out, Tensor? grad_hn, Tensor x, Tensor? w_ih, bool has_b_ih, Tensor h0, "
    "Tensor w_hh, Tensor out, Tensor gates, Tensor batch_sizes, bool reverse) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.register_fake("seqnorm::gru_forward")
def _forward_fake(x, w_ih, b_ih, h0, w_hh, b_hh, batch_sizes, reverse, save):  # noqa: ANN001, ANN202
    build.load_library()  # tracing runs this: the compiled graph will call the kernel
    N, H = x.shape[0], h0.shape[1]
    gates = x.new_empty(N, 4 * H) if save else x.new_empty(0)  # r, z, n, W_hn h + b_hn
    return x.new_empty(N, H), h0.new_empty(h0.shape), gates


@torch.library.register_fake("seqnorm::gru_backward")
def _backward_fake(grad_out, grad_hn, x, w_ih, has_b_ih, h0, w_hh, out, gates, batch_sizes,  # noqa: ANN001, ANN202
                   reverse):  # fmt: skip
    none = x.new_empty(0)
    if w_ih is None:
        d_w_ih = d_b_ih = none
    else:
        d_w_ih = w_ih.new_empty(w_ih.shape)
        d_b_ih = w_ih.new_empty(w_ih.shape[0]) if has_b_ih else none
    return (x.new_empty(x.shape), d_w_ih, d_b_ih, h0.new_empty(h0.shape),
            w_hh.new_empty(w_hh.shape), w_hh.new_empty(w_hh.shape[0]))  # fmt: skip


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, w_ih, b_ih, h0, w_hh, b_hh, batch_sizes, reverse, _ = inputs
    out, _, gates = output
    ctx.reverse = reverse
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)  # an unused output costs no zero-filled gradient
    ctx.save_for_backward(x, w_ih, b_ih, h0, w_hh, b_hh, out, gates, batch_sizes)


def _backward(ctx: Any, grad_out: Tensor | None, grad_hn: Tensor | None, *_: Any) -> tuple:
    x, w_ih, b_ih, h0, w_hh, b_hh, out, gates, batch_sizes = ctx.saved_tensors
    if grad_out is None and grad_hn is None:
        return (None,) * 9
    if torch.is_grad_enabled():  # create_graph=True: differentiate the step loop instead
        d = regrad(gru_step, (x, w_ih, b_ih, h0, w_hh, b_hh, None), (grad_out, grad_hn),
                   batch_sizes, ctx.reverse)  # fmt: skip
        return (*d[:6], None, None, None)
    d_x, d_w_ih, d_b_ih, d_h0, d_w, d_b = torch.ops.seqnorm.gru_backward(
        grad_out, grad_hn, x, w_ih, b_ih is not None, h0, w_hh, out, gates, batch_sizes,
        ctx.reverse,
    )  # fmt: skip
    return (d_x, d_w_ih if w_ih is not None else None, d_b_ih if b_ih is not None else None,
            d_h0, d_w, d_b if b_hh is not None else None, None, None, None)  # fmt: skip


torch.library.register_autograd("seqnorm::gru_forward", _backward, setup_context=_setup)


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
    """One GRU unit over packed ``x``: see :func:`seqnorm.native.sequence`."""
    if extra is not None:
        raise ValueError(
            f"extra must be None for mode 'gru', got a tensor of shape {tuple(extra.shape)}"
        )
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, w_ih, b_ih, h0, w_hh, b_hh)
    )  # keep the gates only when a backward can come
    out, h_n, _ = torch.ops.seqnorm.gru_forward(
        x, w_ih, b_ih, h0, w_hh, b_hh, batch_sizes, reverse, save
    )
    return out, h_n
