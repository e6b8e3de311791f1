"""The LRU's diagonal complex scan: ``seqnorm::lru_forward`` / ``seqnorm::lru_backward``.

Mode ``lru``: ``h_t = lambda * h_{t-1} + u_t`` elementwise over a complex state of ``P``
entries, ``u_t = x_t @ W^T (+ b)``. Complex tensors travel as real planes: a row of ``u``,
``h`` and ``h0`` is ``[re_0 .. re_{P-1} | im_0 .. im_{P-1}]`` (``2P`` reals), and ``lambda``
(the ``w_hh`` of :func:`seqnorm.native.recurrence`) is ``(2P,)`` the same way. The schemas,
fake (meta) shapes and autograd are defined here, so importing this module never needs the
compiled library; ``csrc/lru.cpp`` registers the CPU kernels. :func:`reference` is the same
scan in autograd ops: the double backward, and the layer's path without the native kernels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from . import build
from .reference import graph_grads

__all__ = ["MODES", "recurrence", "reference", "scan", "sequence"]

MODES = ("lru",)

torch.library.define(
    "seqnorm::lru_forward",
    "(Tensor x, Tensor? w_ih, Tensor? b_ih, Tensor h0, Tensor lam, Tensor batch_sizes) "
    "-> (Tensor, Tensor)",
)
torch.library.define(
    "seqnorm::lru_backward",
    "(Tensor? grad_out, Tensor? grad_hn, Tensor x, Tensor? w_ih, bool has_b_ih, Tensor h0, "
    "Tensor lam, Tensor out, Tensor batch_sizes) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)


@torch.library.register_fake("seqnorm::lru_forward")
def _forward_fake(x, w_ih, b_ih, h0, lam, batch_sizes):  # noqa: ANN001, ANN202
    build.load_library()  # tracing runs this: the compiled graph will call the kernel
    return x.new_empty(x.shape[0], lam.shape[0]), h0.new_empty(h0.shape)  # out, h_n


@torch.library.register_fake("seqnorm::lru_backward")
def _backward_fake(grad_out, grad_hn, x, w_ih, has_b_ih, h0, lam, out, batch_sizes):  # noqa: ANN001, ANN202
    none = x.new_empty(0)
    if w_ih is None:
        d_w, d_b = none, none
    else:
        d_w, d_b = w_ih.new_empty(w_ih.shape), w_ih.new_empty(lam.shape) if has_b_ih else none
    return x.new_empty(x.shape), d_w, d_b, h0.new_empty(h0.shape), lam.new_empty(lam.shape)


def reference(
    u: Tensor, lam: Tensor, h0: Tensor, batch_sizes: Tensor | list[int]
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The scan step by step in autograd ops, on packed planes (what the kernel computes).

    Args:
        u: ``(N, 2P)``, packed: step ``t``'s rows follow step ``t - 1``'s.
        lam: ``(2P,)``.
        h0: ``(B, 2P)``, ``B = batch_sizes[0]``.
        batch_sizes: non-increasing, one per step.

    Returns:
        ``(out, h_n, states)``: every step's state ``(N, 2P)`` packed like ``u``, each
        sequence's state after its own last step ``(B, 2P)``, and the states as a list of
        ``T`` tensors ``(batch_sizes[t], 2P)`` (each its own autograd node).
    """
    P = lam.shape[0] // 2
    lr, li = lam[:P], lam[P:]  # (P,)
    sizes = batch_sizes.tolist() if isinstance(batch_sizes, Tensor) else list(batch_sizes)
    steps = u.split(sizes) if sizes else ()  # once: no per-step indexing of a long tensor
    state, states = h0, []
    for n, g in zip(sizes, steps, strict=True):
        prev = state[:n]  # (n, 2P)
        a, b = prev[:, :P], prev[:, P:]
        h = torch.cat([lr * a - li * b, lr * b + li * a], dim=1) + g  # (n, 2P)
        states.append(h)
        state = h if n == state.shape[0] else torch.cat([h, state[n:]])  # (B, 2P)
    out = torch.cat(states) if states else u.new_zeros(0, lam.shape[0])
    return out, state, states


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, w_ih, b_ih, h0, lam, batch_sizes = inputs
    ctx.set_materialize_grads(False)  # an unused output costs no zero-filled gradient
    ctx.save_for_backward(x, w_ih, b_ih, h0, lam, output[0], batch_sizes)


def _regrad(
    inputs: tuple[Tensor | None, ...], grads: tuple[Tensor | None, ...], batch_sizes: Tensor
) -> list[Tensor | None]:
    """Gradients w.r.t. ``(x, w_ih, b_ih, h0, lam)`` as a differentiable graph (double
    backward), by differentiating :func:`reference`; ``None`` for an input without grad."""

    def outputs() -> list[Tensor]:
        x, w_ih, b_ih, h0, lam = inputs
        u = x if w_ih is None else F.linear(x, w_ih, b_ih)
        out, h_n, _ = reference(u, lam, h0, batch_sizes)
        return [out, h_n]

    return graph_grads(outputs, inputs, grads)


def _backward(ctx: Any, grad_out: Tensor | None, grad_hn: Tensor | None) -> tuple[Any, ...]:
    x, w_ih, b_ih, h0, lam, out, batch_sizes = ctx.saved_tensors
    if grad_out is None and grad_hn is None:
        return (None,) * 6
    if torch.is_grad_enabled():  # create_graph=True: differentiate the step loop instead
        d = _regrad((x, w_ih, b_ih, h0, lam), (grad_out, grad_hn), batch_sizes)
        return (*d, None)
    d_x, d_w, d_b, d_h0, d_lam = torch.ops.seqnorm.lru_backward(
        grad_out, grad_hn, x, w_ih, b_ih is not None, h0, lam, out, batch_sizes
    )
    return (d_x, d_w if w_ih is not None else None, d_b if b_ih is not None else None, d_h0,
            d_lam, None)  # fmt: skip


torch.library.register_autograd("seqnorm::lru_forward", _backward, setup_context=_setup)


def scan(
    x: Tensor,
    lam: Tensor,
    h0: Tensor,
    batch_sizes: Tensor,
    w_ih: Tensor | None = None,
    b_ih: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The native scan: ``h_t = lambda * h_{t-1} + u_t`` with ``u = x @ w_ih^T + b_ih`` (or
    ``x`` itself without ``w_ih``), on packed planes; differentiable (twice).

    Args:
        x: ``(N, I)``, packed; without ``w_ih``, ``u`` itself ``(N, 2P)``.
        lam: ``(2P,)``: ``[Re lambda | Im lambda]``.
        h0: ``(B, 2P)``, ``B = batch_sizes[0]``.
        batch_sizes: CPU int64 ``(T,)``, non-increasing (as a ``PackedSequence`` has them).
        w_ih: ``(2P, I)`` or ``None``.
        b_ih: ``(2P,)`` or ``None``.

    Returns:
        ``(out, h_n)``: every step's state ``(N, 2P)`` packed like ``x``, and each sequence's
        state after its own last step ``(B, 2P)``.

    Raises:
        NativeUnavailable: if the kernels cannot be built here.
    """
    if not build.is_loaded() and not torch.compiler.is_compiling():
        build.load_library()
    return torch.ops.seqnorm.lru_forward(x, w_ih, b_ih, h0, lam, batch_sizes)


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
    """The LRU's scan as :func:`seqnorm.native.sequence` calls it: ``w_hh`` is ``lambda``
    ``(2P,)``; there is no ``b_hh`` or ``extra``, and the scan runs forward in time only."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if b_hh is not None or extra is not None:
        raise ValueError("the LRU's scan takes no b_hh and no extra (its recurrence is lambda)")
    if reverse:
        raise ValueError("the LRU's scan runs forward in time only, got reverse=True")
    return scan(x, w_hh, h0, batch_sizes, w_ih, b_ih)


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
    """The LRU's scan over packed ``u = gi``: see :func:`seqnorm.native.recurrence`."""
    return sequence(mode, gi, None, None, h0, w_hh, b_hh, extra, batch_sizes, reverse)
