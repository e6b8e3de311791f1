"""The differentiable step loop the native kernels compute: their double backward.

:func:`reference` runs the cell's step (``seqnorm.layers.spec.SPECS[mode].step``) over
packed ``gi`` in plain autograd ops, with the same packed-state walk as the kernels (one
full state buffer; at step ``t`` only the first ``batch_sizes[t]`` rows step). The
registered backwards call :func:`regrad` instead of their C++ backward when a graph of the
gradient is asked for (``create_graph=True``), so second derivatives work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["reference", "regrad"]

State = Tensor | tuple[Tensor, Tensor]


def reference(
    mode: str,
    gi: Tensor,
    state: State,
    w_hh: Tensor,
    b_hh: Tensor | None,
    extra: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, State]:
    """The native recurrence's result, step by step in autograd ops (same arguments)."""
    from seqnorm.layers.spec import SPECS  # lazy: the layers import this package

    step = SPECS[mode].step
    args = (w_hh, b_hh) if extra is None else (w_hh, b_hh, extra)
    sizes = [int(s) for s in batch_sizes.tolist()]
    off = [0]
    for s in sizes:
        off.append(off[-1] + s)
    pair = isinstance(state, tuple)
    s = state
    outs: list[Tensor] = [gi[:0]] * len(sizes)
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    for t in order:
        n = sizes[t]
        g = gi[off[t] : off[t] + n]  # (n, G*H)
        if pair:
            new = step(g, (s[0][:n], s[1][:n]), *args)
            s = tuple(torch.cat([a, b[n:]]) for a, b in zip(new, s, strict=True))
            outs[t] = new[0]
        else:
            new = step(g, s[:n], *args)  # (n, H)
            s = torch.cat([new, s[n:]])  # (B, H)
            outs[t] = new
    return torch.cat(outs) if outs else gi.new_zeros(0, (s[0] if pair else s).shape[1]), s


def regrad(
    mode: str,
    inputs: Sequence[Tensor | None],
    grads: Sequence[Tensor | None],
    extra_args: tuple[Tensor, bool],
) -> list[Tensor | None]:
    """Gradients of the projected recurrence w.r.t. ``inputs`` = ``(x, w_ih, b_ih, state...,
    w_hh, b_hh, extra)`` as a differentiable graph (double backward). ``gi`` is
    ``F.linear(x, w_ih, b_ih)`` (``x`` itself without ``w_ih``); ``grads`` are the output
    gradients (``None``: zero). An input that does not need a gradient gets ``None``."""
    batch_sizes, reverse = extra_args
    lstm = mode == "lstm"
    with torch.enable_grad():
        leaves = [x if x is not None and x.requires_grad else None for x in inputs]
        wanted = [x for x in leaves if x is not None]
        if not wanted:
            return [None] * len(inputs)
        x, w_ih, b_ih = inputs[:3]
        gi = x if w_ih is None else torch.nn.functional.linear(x, w_ih, b_ih)
        if lstm:
            h0, c0, w_hh, b_hh, extra = inputs[3:]
            out, (h_n, c_n) = reference(mode, gi, (h0, c0), w_hh, b_hh, extra, batch_sizes, reverse)
            outputs = [out, h_n, c_n]
        else:
            h0, w_hh, b_hh, extra = inputs[3:]
            out, h_n = reference(mode, gi, h0, w_hh, b_hh, extra, batch_sizes, reverse)
            outputs = [out, h_n]
        pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if g is not None]
        if not pairs:
            return [None if x is None else torch.zeros_like(x) for x in leaves]
        got = iter(
            torch.autograd.grad(
                [o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True,
                allow_unused=True,
            )
        )  # fmt: skip
    res = []
    for x in leaves:
        g = next(got) if x is not None else None
        res.append(torch.zeros_like(x) if x is not None and g is None else g)
    return res
