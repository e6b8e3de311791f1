"""The differentiable step loop the native kernels compute: their double backward.

:func:`reference` runs a cell's step equation (:mod:`seqnorm.steps`) over packed ``gi`` in
plain autograd ops, with the same packed-state walk as the kernels (one full state buffer;
at step ``t`` only the first ``batch_sizes[t]`` rows step). The registered backwards call
:func:`regrad` instead of their C++ backward when a graph of the gradient is asked for
(``create_graph=True``), so second derivatives work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..steps import State

__all__ = ["graph_grads", "reference", "regrad"]

#: A step equation of :mod:`seqnorm.steps`: ``step(gi, state, w_hh, b_hh, *extras) -> state``.
Step = Callable[..., Any]


def reference(
    step: Step,
    gi: Tensor,
    state: State,
    w_hh: Tensor,
    b_hh: Tensor | None,
    extra: Tensor | None,
    batch_sizes: Tensor,
    reverse: bool,
) -> tuple[Tensor, State]:
    """What :func:`seqnorm.native.recurrence` computes, step by step in autograd ops.

    Args:
        step: the cell's step equation (``seqnorm.steps.gru_step``...).
        The others as :func:`seqnorm.native.recurrence`'s.
    """
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
    step: Step,
    inputs: Sequence[Tensor | None],
    grads: Sequence[Tensor | None],
    batch_sizes: Tensor,
    reverse: bool,
) -> list[Tensor | None]:
    """Gradients of the projected recurrence as a differentiable graph (double backward).

    Args:
        step: the cell's step equation.
        inputs: ``(x, w_ih, b_ih, *state, w_hh, b_hh, extra)``; ``gi`` is
            ``F.linear(x, w_ih, b_ih)`` (``x`` itself without ``w_ih``).
        grads: the gradients of the outputs ``(out, *final_state)`` (``None``: zero); their
            number gives the state's (two for an LSTM's ``(h, c)``).
        batch_sizes, reverse: as :func:`reference`'s.

    Returns:
        One gradient per input; ``None`` for an input that does not need one.
    """
    n_state = len(grads) - 1

    def outputs() -> list[Tensor]:
        x, w_ih, b_ih = inputs[:3]
        gi = x if w_ih is None else torch.nn.functional.linear(x, w_ih, b_ih)
        state = inputs[3 : 3 + n_state]
        w_hh, b_hh, extra = inputs[3 + n_state :]
        s0 = tuple(state) if n_state > 1 else state[0]
        out, final = reference(step, gi, s0, w_hh, b_hh, extra, batch_sizes, reverse)
        return [out, *(final if n_state > 1 else (final,))]

    return graph_grads(outputs, inputs, grads)


def graph_grads(
    outputs: Callable[[], Sequence[Tensor]],
    inputs: Sequence[Tensor | None],
    grads: Sequence[Tensor | None],
) -> list[Tensor | None]:
    """The gradients of ``outputs()`` (computed here, with grad enabled), weighted by
    ``grads``, with respect to every input that requires grad, as a differentiable graph:
    the double backward of a kernel, by differentiating its reference.

    Args:
        outputs: computes the outputs from ``inputs``.
        inputs: the tensors to differentiate by (``None`` or not requiring grad: skipped).
        grads: one per output (``None``: zero).

    Returns:
        One gradient per input: ``None`` for an input that does not need one, zeros for one
        the outputs do not depend on.
    """
    with torch.enable_grad():
        leaves = [x if x is not None and x.requires_grad else None for x in inputs]
        wanted = [x for x in leaves if x is not None]
        if not wanted:
            return [None] * len(inputs)
        pairs = [(o, g) for o, g in zip(outputs(), grads, strict=True) if g is not None]
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
