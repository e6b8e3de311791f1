"""The modReLU RNN over a whole sequence, one autograd Function with a hand-written backward.

The step is ``h_t = modrelu(gi_t + h_{t-1} @ W_hh^T + b_hh, b)`` with ``modrelu(z, b) =
sign(z) * relu(|z| + b)`` and the input projection ``gi_t = x_t @ W_ih^T + b_ih``
precomputed for the whole sequence by the caller. The nonlinearity and the step in plain
autograd ops (:func:`modrelu`, :func:`modrelu_step`) live with the other step equations in
:mod:`seqnorm.steps` and are handed on here, beside the kernel they define.

:func:`modrelu_rnn` runs the whole sequence as one ``torch.autograd.Function`` whose
backward is one reverse loop for ``dL/dh`` and a single matmul for ``dL/dW_hh``: the torch
path's kernel for modReLU, which torch has none of.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..steps import modrelu, modrelu_step

__all__ = ["modrelu", "modrelu_rnn", "modrelu_step"]


class _ModReLURNN(torch.autograd.Function):
    """All hidden states of a modReLU RNN; see :func:`modrelu_rnn`."""

    @staticmethod
    def forward(
        ctx: Any, gi: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, bias: Tensor
    ) -> Tensor:
        out = gi.new_empty(gi.shape)  # (T, B, H), contiguous whatever gi's strides
        if b_hh is None:
            out.copy_(gi)
        else:
            torch.add(gi, b_hh, out=out)  # (T, B, H) gi_t + b_hh
        w_t = w_hh.t()  # (H, H) view
        mag = out.new_empty(out.shape[1:])  # (B, H) scratch
        h = h0  # (B, H)
        for z in out.unbind(0):  # z is a (B, H) view of out; each is overwritten by h_t
            z.addmm_(h, w_t)  # (B, H) pre-activation gi_t + b_hh + h_{t-1} @ W^T
            torch.abs(z, out=mag).add_(bias).relu_()  # (B, H) relu(|z| + b)
            z.sign_().mul_(mag)  # (B, H) h_t
            h = z
        # Backward needs only the outputs: h_t != 0 exactly where |z| + b > 0 and z != 0,
        # and there sign(h_t) == sign(z).
        ctx.save_for_backward(out, h0, w_hh)
        ctx.has_b_hh = b_hh is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        out, h0, w_hh = ctx.saved_tensors
        T, B, H = out.shape
        need_gi, need_h0, need_w, need_b_hh, need_bias = ctx.needs_input_grad
        # Per-step scratch only: on hosts where fresh memory is slow to fault in, a
        # whole-sequence temporary (a mask, sign(out)) costs more than the work itself.
        dz = out.new_empty(out.shape)  # (T, B, H) dL/dz_t, also dL/dgi
        sign = out.new_empty(out.shape[1:])  # (B, H) sign(z_t) where |z_t| + b > 0, else 0
        acc = out.new_zeros(out.shape[1:]) if need_bias else None  # (B, H) sum_t dL/db
        dzs, gs, outs = dz.unbind(0), grad_out.unbind(0), out.unbind(0)
        for t in range(T - 1, -1, -1):
            if t == T - 1:
                dzs[t].copy_(gs[t])  # (B, H)
            else:
                torch.addmm(gs[t], dzs[t + 1], w_hh, out=dzs[t])  # (B, H) dL/dh_t
            torch.sign(outs[t], out=sign)  # (B, H)
            if acc is not None:
                acc.addcmul_(dzs[t], sign)  # (B, H) dL/dh_t * dh_t/db
            dzs[t].mul_(sign.abs_())  # (B, H) dL/dz_t = dL/dh_t * [|z_t| + b > 0]
        d_h0 = d_w = d_b_hh = d_bias = None
        if need_h0:
            d_h0 = dz[0] @ w_hh if T else h0.new_zeros(h0.shape)  # (B, H)
        if need_w:
            d_w = w_hh.new_zeros(w_hh.shape)  # (H, H) dZ^T [h0; h_1..h_{T-1}]
            if T:
                d_w.addmm_(dz[0].t(), h0)
                d_w.addmm_(dz[1:].reshape(-1, H).t(), out[:-1].reshape(-1, H))
        if need_b_hh and ctx.has_b_hh:
            d_b_hh = dz.sum((0, 1))  # (H,)
        if acc is not None:
            d_bias = acc.sum(0)  # (H,)
        return dz if need_gi else None, d_h0, d_w, d_b_hh, d_bias


def modrelu_rnn(gi: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, bias: Tensor) -> Tensor:
    """All hidden states of a modReLU RNN over a whole sequence, with a fast backward.

    Computes ``h_t = modrelu(gi_t + h_{t-1} @ w_hh^T + b_hh, bias)`` for ``t = 1..T`` as one
    ``torch.autograd.Function``: the forward keeps only its output; the backward runs one
    reverse loop for ``dL/dh`` (a matmul and a mask per step) and then forms ``dL/dw_hh`` as
    one matmul over all ``T * B`` rows. Time and memory are O(T). The result equals a loop of
    :func:`modrelu_step` to rounding.

    The backward is ``once_differentiable``: asking for a second derivative (double backward,
    e.g. a gradient penalty) raises torch's error; use a loop of :func:`modrelu_step` there.
    Float32 and float64 on any device; inputs may be non-contiguous.

    Args:
        gi: input projections ``x_t @ W_ih^T + b_ih`` for all steps ``(T, B, H)``.
        h0: initial hidden state ``(B, H)``.
        w_hh: recurrent matrix ``(H, H)``.
        b_hh: recurrent bias ``(H,)`` or ``None``.
        bias: modReLU's bias, one per hidden unit ``(H,)``.

    Returns:
        The hidden states ``h_1..h_T`` ``(T, B, H)``; ``h_T`` is the last row.

    Raises:
        ValueError: if a shape, dtype or device does not match ``gi``'s.

    >>> T, B, H = 5, 2, 3
    >>> out = modrelu_rnn(torch.randn(T, B, H), torch.zeros(B, H), torch.eye(H), None,
    ...                   torch.zeros(H))
    >>> out.shape
    torch.Size([5, 2, 3])
    """
    if gi.dim() != 3:
        raise ValueError(f"gi must have shape (T, B, H), got {tuple(gi.shape)}")
    _, B, H = gi.shape
    shapes = {"h0": (h0, (B, H)), "w_hh": (w_hh, (H, H)), "bias": (bias, (H,))}
    if b_hh is not None:
        shapes["b_hh"] = (b_hh, (H,))
    for name, (x, shape) in shapes.items():
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
        if x.dtype != gi.dtype or x.device != gi.device:
            raise ValueError(
                f"{name} must have gi's dtype and device ({gi.dtype}, {gi.device}), "
                f"got ({x.dtype}, {x.device})"
            )
    if not gi.is_floating_point():
        raise ValueError(f"gi must be a floating-point tensor, got {gi.dtype}")
    return _ModReLURNN.apply(gi, h0, w_hh, b_hh, bias)
