"""Helpers shared by the probes: which module is a seqnorm layer, buffers left as found, and
the Jacobian's largest singular value by double-backward power iteration."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..layers import RecurrentLayer

__all__ = ["check_layer", "jacobian_sigma_max", "preserved_buffers"]


def check_layer(layer: nn.Module) -> RecurrentLayer:
    """``layer`` itself if it is a seqnorm sequence layer.

    Raises:
        TypeError: if it is not a ``SpectralRNN``, ``SpectralGRU`` or ``SpectralLSTM``.
    """
    if not isinstance(layer, RecurrentLayer):
        raise TypeError(
            f"layer must be a SpectralRNN, SpectralGRU or SpectralLSTM, got {type(layer).__name__}"
        )
    return layer


@contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer's value on exit (a training-mode forward updates some)."""
    saved = [(m, n, b.detach().clone()) for m in model.modules() for n, b in m._buffers.items()
             if b is not None]  # fmt: skip
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, value in saved:
                current = module._buffers.get(name)
                if current is not None and current.shape == value.shape:
                    current.copy_(value)


def jacobian_sigma_max(
    vjp: Callable[[Tensor, bool], Tensor],
    out: Tensor,
    v: Tensor,
    n_iterations: int,
    tol: float | None = None,
) -> Tensor:
    """Largest singular value of each row's Jacobian ``J_b`` by power iteration on ``J^T J``.

    Vector-Jacobian products come from ``vjp``; Jacobian-vector products from the
    double-backward trick: ``w -> vjp(w)`` is linear in ``w``, so its derivative in ``w``
    applied to ``v`` is ``J v``. The estimate ``||J^T u||`` never exceeds the true norm and
    converges to it.

    Args:
        vjp: ``(u, create_graph) -> J^T u``, row ``b`` of the result from row ``b`` of ``u``
            (rows independent); ``u`` has the shape of ``out``.
        out: the output (``(B, ...)``), the shape of ``u``.
        v: the start vectors ``(B, ...)``, unit rows, the shape of ``J^T u``.
        n_iterations: most iterations.
        tol: stop once no row's estimate moves by more than this (relative); ``None``: run
            all ``n_iterations``.

    Returns:
        ``(B,)``, detached; zeros when the output does not depend on the input.
    """
    eps = torch.finfo(v.dtype).tiny

    def unit(t: Tensor) -> Tensor:
        return t / t.flatten(1).norm(dim=1).clamp_min(eps).reshape(-1, *[1] * (t.dim() - 1))

    w = torch.zeros_like(out, requires_grad=True)
    wj = vjp(w, True)  # linear in w: its derivative in w is J
    sigma = v.new_zeros(v.shape[0])
    if not wj.requires_grad:  # the output does not depend on the input
        return sigma
    for _ in range(n_iterations):
        (u,) = torch.autograd.grad(wj, w, v, retain_graph=True)  # J v, shape of out
        g = vjp(unit(u), False).detach()  # J^T u
        new = g.flatten(1).norm(dim=1)  # (B,)
        done = tol is not None and bool(((new - sigma).abs() <= tol * new.clamp_min(eps)).all())
        sigma, v = new, unit(g)
        if done:
            break
    return sigma.detach()
