"""The GRU's native ops: ``seqnorm::gru_forward`` / ``seqnorm::gru_backward``.

torch's equations (``b_hn`` inside ``r * (W_hn h + b_hn)``). The schemas, fake (meta) shapes
and autograd are defined here, so importing this module never needs the compiled library;
``csrc/gru.cpp`` registers the CPU kernels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import build
from .reference import regrad

__all__ = ["MODES", "recurrence"]

MODES = ("gru",)

torch.library.define(
    "seqnorm::gru_forward",
    "(Tensor gi, Tensor h0, Tensor w_hh, Tensor? b_hh, Tensor batch_sizes, bool reverse, "
    "bool save) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
)
torch.library.define(
    "seqnorm::gru_backward",
    "(Tensor grad_out, Tensor grad_hn, Tensor w_hh, Tensor gates, Tensor hprev, "
    "Tensor batch_sizes, bool reverse) -> (Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.register_fake("seqnorm::gru_forward")
def _forward_fake(gi, h0, w_hh, b_hh, batch_sizes, reverse, save):  # noqa: ANN001, ANN202
    build.load_library()  # tracing runs this: the compiled graph will call the kernel
    N, H = gi.shape[0], h0.shape[1]
    # out, h_n, and saved for the backward: gates (r, z, n, W_hn h + b_hn), h_prev
    gates, hprev = (gi.new_empty(N, 4 * H), gi.new_empty(N, H)) if save else (gi.new_empty(0),) * 2
    return gi.new_empty(N, H), h0.new_empty(h0.shape), gates, hprev


@torch.library.register_fake("seqnorm::gru_backward")
def _backward_fake(grad_out, grad_hn, w_hh, gates, hprev, batch_sizes, reverse):  # noqa: ANN001, ANN202
    N, H = hprev.shape
    return (hprev.new_empty(N, 3 * H), grad_hn.new_empty(grad_hn.shape),
            w_hh.new_empty(w_hh.shape), hprev.new_empty(3 * H))  # fmt: skip


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    gi, h0, w_hh, b_hh, batch_sizes, reverse, _ = inputs
    _, _, gates, hprev = output
    ctx.reverse, ctx.has_b = reverse, b_hh is not None
    ctx.save_for_backward(gi, h0, w_hh, b_hh, gates, hprev, batch_sizes)


def _backward(
    ctx: Any, grad_out: Tensor | None, grad_hn: Tensor | None, *_: Any
) -> tuple[Any, ...]:
    gi, h0, w_hh, b_hh, gates, hprev, batch_sizes = ctx.saved_tensors
    grad_out = torch.zeros_like(hprev) if grad_out is None else grad_out
    grad_hn = torch.zeros_like(h0) if grad_hn is None else grad_hn
    if torch.is_grad_enabled():  # create_graph=True: differentiate the step loop instead
        d_gi, d_h0, d_w, d_b, _ = regrad(
            "gru", (gi, h0, w_hh, b_hh, None), (grad_out, grad_hn), (batch_sizes, ctx.reverse)
        )
    else:
        d_gi, d_h0, d_w, d_b = torch.ops.seqnorm.gru_backward(
            grad_out, grad_hn, w_hh, gates, hprev, batch_sizes, ctx.reverse
        )
    return d_gi, d_h0, d_w, d_b if ctx.has_b else None, None, None, None


torch.library.register_autograd("seqnorm::gru_forward", _backward, setup_context=_setup)


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
    """One GRU unit over packed ``gi``: see :func:`seqnorm.native.recurrence`."""
    if extra is not None:
        raise ValueError(
            f"extra must be None for mode 'gru', got a tensor of shape {tuple(extra.shape)}"
        )
    if not build.is_loaded() and not torch.compiler.is_compiling():
        build.load_library()
    save = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (gi, h0, w_hh, b_hh)
    )  # keep the gates and h_{t-1} only when a backward can come
    out, h_n, _, _ = torch.ops.seqnorm.gru_forward(gi, h0, w_hh, b_hh, batch_sizes, reverse, save)
    return out, h_n
