"""The largest singular value from its singular vectors, with exact first and second derivatives.

``sigma = u^T W v`` is the largest singular value of ``W`` when ``u, v`` are its leading
singular vectors (found without a gradient, e.g. by
:func:`~seqnorm.linalg.top_singular_vectors`). Autograd through that expression with ``u, v``
held constant gets the first derivative right (``u v^T``: ``u, v`` are stationary) but not
the second, which comes from how ``u, v`` turn with ``W``. :func:`top_sigma` computes the same
value with both derivatives exact; a third raises torch's ``once_differentiable`` error.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["top_sigma"]

#: A block's two largest singular values closer than this (relative) count as repeated.
_TIE_RTOL = 100


def top_sigma(W: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``u^T W v`` per block ``(k,)``: the largest singular value of each block of ``W``.

    Args:
        W: the blocks ``(k, m, n)``.
        u: their leading left singular vectors ``(k, m)``, no gradient.
        v: their leading right singular vectors ``(k, n)``, no gradient.

    Returns:
        ``sigma`` ``(k,)``, whose gradient is ``u v^T`` and whose second derivative is that
        of the largest singular value. Where a block's largest singular value is repeated
        (or zero) it has no second derivative: asking for one raises ``RuntimeError``.

    >>> W = torch.tensor([[[3.0, 0.0], [0.0, 1.0]]], dtype=torch.float64, requires_grad=True)
    >>> e0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    >>> (g,) = torch.autograd.grad(top_sigma(W, e0, e0).sum(), W, create_graph=True)
    >>> g.tolist()
    [[[1.0, 0.0], [0.0, 0.0]]]
    """
    return _TopSigma.apply(W, u, v)


class _TopSigma(torch.autograd.Function):
    @staticmethod
    def forward(W: Tensor, u: Tensor, v: Tensor) -> Tensor:  # noqa: D102
        return torch.einsum("bi,bij,bj->b", u, W, v)  # (k,)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:  # noqa: D102
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, None, None]:  # noqa: D102
        W, u, v = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a gradient with its own derivative
            return _TopSigmaGrad.apply(g, W, u, v), None, None
        return g[:, None, None] * u[:, :, None] * v[:, None, :], None, None  # (k, m, n)


class _TopSigmaGrad(torch.autograd.Function):
    """``g u v^T`` per block, the gradient of ``g * sigma``; its backward is sigma's Hessian."""

    @staticmethod
    def forward(g: Tensor, W: Tensor, u: Tensor, v: Tensor) -> Tensor:  # noqa: D102
        return g[:, None, None] * u[:, :, None] * v[:, None, :]  # (k, m, n)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:  # noqa: D102
        ctx.save_for_backward(*inputs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # noqa: D102
        g, W, u, v = ctx.saved_tensors
        need_g, need_W = ctx.needs_input_grad[:2]
        dg = torch.einsum("bi,bij,bj->b", u, G, v) if need_g else None  # (k,)
        dW = g[:, None, None] * _hessian(W, G) if need_W else None  # (k, m, n)
        return dg, dW, None, None


def _hessian(W: Tensor, G: Tensor) -> Tensor:
    """The gradient of ``u1^T G v1`` with respect to ``W`` (``u1, v1``: leading singular
    vectors of each block of ``W``, ``(k, m, n)``), i.e. sigma's Hessian applied to ``G``.

    ``z = [u1; v1] / sqrt(2)`` is the top eigenvector of ``B = [[0, W], [W^T, 0]]``, with the
    eigenvalue ``s1``, and ``u1^T G v1 = z^T C z`` with ``C = [[0, G], [G^T, 0]]``. First order
    perturbation of a simple eigenvector, ``dz = (s1 I - B)^+ dB z``, gives the gradient
    ``y_u v1^T + u1 y_v^T`` with ``y = (s1 I - B + z z^T)^-1 (C z - (z^T C z) z) * sqrt(2)``:
    one ``(m + n)`` solve per block, finite wherever ``s1`` is simple, whatever the other
    singular values (zeros and ties among them included).
    """
    k, m, n = W.shape
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)  # (k, m, r), (k, r), (k, r, n)
    u, v, s = U[..., 0], Vh[..., 0, :], S[..., 0]  # (k, m), (k, n), (k,)
    second = S[..., 1] if S.shape[-1] > 1 else torch.zeros_like(s)  # (k,)
    tie = (s - second <= _TIE_RTOL * torch.finfo(S.dtype).eps * s) | (s == 0)  # (k,)
    if bool(tie.any()):
        b = int(tie.nonzero()[0, 0])
        raise RuntimeError(
            f"double backward through the spectral norm: the largest singular value of "
            f"block {b} is repeated or zero (its two largest are "
            f"{S[b, :2].tolist()}), and sigma_max has no second derivative there; "
            f"take first derivatives only, or move W off the tie (any training step does)"
        )
    a = torch.bmm(G, v.unsqueeze(-1)).squeeze(-1)  # (k, m) G v1
    b_ = torch.bmm(G.mT, u.unsqueeze(-1)).squeeze(-1)  # (k, n) G^T u1
    c = (u * a).sum(-1, keepdim=True)  # (k, 1) u1^T G v1
    rhs = torch.cat([a - c * u, b_ - c * v], -1)  # (k, m + n) sqrt(2) (C z - (z^T C z) z)
    z = torch.cat([u, v], -1) / 2**0.5  # (k, m + n)
    M = -torch.cat(
        [torch.cat([W.new_zeros(k, m, m), W], -1), torch.cat([W.mT, W.new_zeros(k, n, n)], -1)],
        -2,
    )  # (k, m + n, m + n) -B
    M.diagonal(dim1=-2, dim2=-1).add_(s.unsqueeze(-1))
    M.add_(z.unsqueeze(-1) * z.unsqueeze(-2))  # s1 I - B + z z^T
    y = torch.linalg.solve(M, rhs)  # (k, m + n)
    return y[:, :m, None] * v[:, None, :] + u[:, :, None] * y[:, None, m:]  # (k, m, n)
