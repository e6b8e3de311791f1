"""Pure linear-algebra helpers: exact and iterative spectral norms, stable rank, checks.

Every function here works on a single matrix ``(m, n)`` or on a stack of gate blocks.
``blocks=k`` views a stacked ``(k*H, H)`` recurrent matrix as ``(k, H, H)``, which is how
seqnorm treats the gates of a GRU (k=3) or LSTM (k=4).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "as_blocks",
    "check_int",
    "power_iteration",
    "spectral_norm",
    "stable_rank",
    "compute_dtype",
    "top_singular_vectors",
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype power iteration runs in: float32 or higher, never half/bfloat16."""
    if dtype in (torch.float64, torch.complex128):
        return dtype
    return torch.float32


def check_int(
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    expected: str | None = None,
    type_error: type[Exception] = ValueError,
    value_error: type[Exception] = ValueError,
) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) in ``[minimum, maximum)``, else an error.

    The one integer check of seqnorm. Each public API keeps the exception types it has
    always raised: ``type_error`` for a non-int, ``value_error`` for one out of range.

    Args:
        name: the argument's name, for the message.
        value: what was given.
        minimum: smallest allowed value (``None``: no lower bound).
        maximum: one past the largest allowed value (``None``: no upper bound).
        expected: what the message says was expected (default: from the bounds).
        type_error: raised when ``value`` is not an int.
        value_error: raised when it is out of range.

    >>> check_int("blocks", 3, minimum=1)
    3
    >>> check_int("blocks", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: blocks must be an int >= 1, got 0
    """
    if minimum is not None and maximum is not None:
        what = f"an int in [{minimum}, {maximum})"
    elif minimum is not None:
        what = f"an int >= {minimum}"
    elif maximum is not None:
        what = f"an int < {maximum}"
    else:
        what = "an int"
    what = expected or what
    if not isinstance(value, int) or isinstance(value, bool):
        raise type_error(f"{name} must be {what}, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value >= maximum):
        raise value_error(f"{name} must be {what}, got {value!r}")
    return value


def as_blocks(W: Tensor, blocks: int = 1) -> Tensor:
    """View a stacked matrix ``(blocks*H, n)`` as ``(blocks, H, n)``.

    Args:
        W: a 2-D tensor whose rows are ``blocks`` equal gate blocks stacked.
        blocks: number of gate blocks.

    Raises:
        ValueError: if ``W`` is not 2-D or ``blocks`` does not divide its rows.

    >>> as_blocks(torch.zeros(6, 2), blocks=3).shape
    torch.Size([3, 2, 2])
    """
    if W.dim() != 2:
        raise ValueError(f"W must be a 2-D matrix, got shape {tuple(W.shape)}")
    check_int("blocks", blocks, minimum=1, expected="a positive int")
    if W.shape[0] % blocks:
        raise ValueError(
            f"blocks={blocks} must divide the number of rows of W, got shape {tuple(W.shape)}"
        )
    return W.reshape(blocks, W.shape[0] // blocks, W.shape[1])


def spectral_norm(W: Tensor, blocks: int = 1) -> Tensor:
    """Exact largest singular value of each gate block, shape ``(blocks,)``.

    Args:
        W: matrix ``(blocks*H, n)``.
        blocks: number of gate blocks.

    >>> spectral_norm(torch.diag(torch.tensor([3.0, 1.0])))
    tensor([3.])
    """
    Wb = as_blocks(W, blocks)
    return torch.linalg.matrix_norm(Wb.to(compute_dtype(W.dtype)), ord=2).to(W.dtype)


def stable_rank(W: Tensor, blocks: int = 1, eps: float = 1e-12) -> Tensor:
    """Stable rank ``||W||_F^2 / ||W||_2^2`` of each gate block, shape ``(blocks,)``.

    It lies in ``[1, rank(W)]``: 1 for a rank-one block, H for an orthogonal one. A zero
    block has stable rank 0 (not NaN).

    >>> stable_rank(torch.eye(4))
    tensor([4.])
    """
    Wb = as_blocks(W, blocks).to(compute_dtype(W.dtype))
    fro2 = Wb.pow(2).sum(dim=(-2, -1))
    s2 = torch.linalg.matrix_norm(Wb, ord=2).pow(2)
    return (fro2 / s2.clamp_min(eps)).to(W.dtype)


def _normalize(x: Tensor, eps: float) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


@torch.no_grad()
def power_iteration(
    W: Tensor,
    u: Tensor,
    v: Tensor,
    n_iterations: int = 1,
    eps: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    """Run ``n_iterations`` of batched power iteration on ``W`` (``(k, m, n)``).

    ``u`` (``(k, m)``) and ``v`` (``(k, n)``) are the current estimates of the leading
    left/right singular vectors; new ones are returned (the inputs are not modified), so
    that ``sigma ~= u^T W v``. The iteration runs in float32 or higher. Where a block is
    (numerically) zero the previous vectors are kept instead of collapsing to zero.

    Args:
        W: stack of matrices ``(k, m, n)``.
        u: left vectors ``(k, m)``.
        v: right vectors ``(k, n)``.
        n_iterations: number of iterations (>= 0).
        eps: floor on vector norms.
    """
    if n_iterations < 0:
        raise ValueError(f"n_iterations must be >= 0, got {n_iterations}")
    dt = compute_dtype(W.dtype)
    with torch.autocast(W.device.type, enabled=False):
        return _iterate(W.to(dt), u.to(dt), v.to(dt), n_iterations, eps)


def _iterate(
    W: Tensor, u: Tensor, v: Tensor, n_iterations: int, eps: float
) -> tuple[Tensor, Tensor]:
    for _ in range(n_iterations):
        wv = torch.bmm(W, v.unsqueeze(-1)).squeeze(-1)  # (k, m)
        ok = wv.norm(dim=-1, keepdim=True) > eps
        u = torch.where(ok, _normalize(wv, eps), u)
        wtu = torch.bmm(W.transpose(1, 2), u.unsqueeze(-1)).squeeze(-1)  # (k, n)
        ok = wtu.norm(dim=-1, keepdim=True) > eps
        v = torch.where(ok, _normalize(wtu, eps), v)
    return u, v


#: Relative width of the bracket the fast path of :func:`top_singular_vectors` certifies on
#: each block's largest eigenvalue of ``W^T W`` (sigma squared): the returned pair gives a
#: ``u^T W v`` within half of it (1e-6, relative) below the largest singular value.
CERTIFY_RTOL = 2e-6

#: Relative shifts tried, in turn, for the float32 factorization behind the inverse iteration.
_SHIFTS = (1e-3, 3e-2)

#: Inverse-iteration steps with that factorization.
_INVERSE_STEPS = 3

#: Column block of :func:`_cholesky_`.
_CHOLESKY_BLOCK = 64


def _bmv(G: Tensor, x: Tensor) -> Tensor:
    return torch.bmm(G, x.unsqueeze(-1)).squeeze(-1)


def _shifted(G: Tensor, s: Tensor) -> Tensor:
    """``s I - G`` for each block (``s``: ``(k,)``), a new tensor."""
    A = -G
    A.diagonal(dim1=-2, dim2=-1).add_(s.unsqueeze(-1))
    return A


def _cholesky_(A: Tensor) -> Tensor:
    """Blocked Cholesky factorization of each symmetric ``A`` (``(k, n, n)``), in place.

    Returns a ``(k,)`` mask of the blocks that are *not* positive definite; where it is
    False, ``A``'s lower triangle holds the factor ``L`` (its strict upper triangle is left
    as it was: LAPACK's triangular solves never read it). Right-looking, in column blocks of
    ``_CHOLESKY_BLOCK``: ``linalg.cholesky_ex`` itself spends a third of its time clearing
    the upper triangle of a fresh output.
    """
    k, n, _ = A.shape
    failed = torch.zeros(k, dtype=torch.bool, device=A.device)
    for j0 in range(0, n, _CHOLESKY_BLOCK):
        j1 = min(n, j0 + _CHOLESKY_BLOCK)
        L, info = torch.linalg.cholesky_ex(A[:, j0:j1, j0:j1])
        failed |= info != 0
        A[:, j0:j1, j0:j1] = L
        if j1 < n:
            P = torch.linalg.solve_triangular(L.mT, A[:, j1:, j0:j1], upper=True, left=False)
            A[:, j1:, j0:j1] = P
            A[:, j1:, j1:].baddbmm_(P, P.mT, alpha=-1)
    return failed | ~torch.isfinite(A.diagonal(dim1=-2, dim2=-1)).all(-1)


def _certified_top(G: Tensor, x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Top eigenvector of each symmetric PSD float32 ``G`` (``(k, n, n)``), warm-started at ``x``.

    Two power steps, then inverse iteration with a float32 Cholesky factor of
    ``(1 + shift) lam I - G`` (``lam``: the current Rayleigh quotient; a larger shift where
    that is not positive definite), then the certificate: a float64 Cholesky factorization of
    ``(1 + CERTIFY_RTOL) lam I - G`` exists only if every eigenvalue of ``G`` lies below that
    shift, so ``lam_max`` is within ``CERTIFY_RTOL`` of the final Rayleigh quotient ``lam``
    (which never exceeds it). Returns the vectors and a ``(k,)`` mask of the blocks so
    certified; the others need an eigendecomposition.
    """
    for _ in range(2):
        x = _normalize(_bmv(G, x), eps)
    lam = (x * _bmv(G, x)).sum(-1)
    todo = lam > eps  # a zero block has no direction to find
    for shift in _SHIFTS:
        if not bool(todo.any()):
            break
        every = bool(todo.all())  # the usual case: no copies of G
        idx = todo.nonzero().squeeze(-1)
        A = _shifted(G if every else G[idx], lam[idx] * (1 + shift))
        good = ~_cholesky_(A)
        if not bool(good.any()):
            continue
        if not bool(good.all()):
            idx, A = idx[good], A[good]
        y = x if every and idx.numel() == x.shape[0] else x[idx]
        for _ in range(_INVERSE_STEPS):  # y <- (L L^T)^-1 y, from the lower triangle only
            z = torch.linalg.solve_triangular(A, y.unsqueeze(-1), upper=False)
            z = torch.linalg.solve_triangular(A.mT, z, upper=True)
            y = _normalize(z.squeeze(-1), eps)
        x = x.index_copy(0, idx, y)
        todo = todo.index_fill(0, idx, False)
    G64, x64 = G.double(), x.double()
    lam64 = (x64 * _bmv(G64, x64)).sum(-1)
    certified = ~_cholesky_(_shifted(G64, lam64 * (1 + CERTIFY_RTOL)))
    return x, certified & ~todo & (lam > eps)


def _top_eigenvectors(G: Tensor, x0: Tensor, eps: float) -> Tensor:
    """Top eigenvector of each block of the Gram stack ``G``: certified inverse iteration from
    ``x0`` in float32 (the blocks it cannot certify, and float64, by ``eigh``)."""
    if G.dtype != torch.float32 or G.device.type != "cpu" or torch.compiler.is_compiling():
        # (a compiled graph cannot branch on the certificate's outcome)
        return torch.linalg.eigh(G).eigenvectors[..., -1]
    x, ok = _certified_top(G, _normalize(x0, eps), eps)
    if not bool(ok.all()):
        bad = (~ok).nonzero().squeeze(-1)
        x = x.index_copy(0, bad, torch.linalg.eigh(G[bad]).eigenvectors[..., -1])
    return x


@torch.no_grad()
def top_singular_vectors(
    W: Tensor, u: Tensor, v: Tensor, eps: float = 1e-12
) -> tuple[Tensor, Tensor]:
    """Leading left/right singular vectors of each matrix of ``W`` (``(k, m, n)``), exactly.

    From the smaller Gram matrix (``W^T W`` or ``W W^T``), in float32 or higher; ``u^T W v``
    then equals the largest singular value to float precision. ``u`` (``(k, m)``) and ``v``
    (``(k, n)``) are the previous vectors: in float32 on the CPU they warm-start an inverse
    iteration whose result is *certified* (a float64 Cholesky factorization proves every
    eigenvalue of the Gram matrix lies within ``CERTIFY_RTOL`` of the one found, so
    ``u^T W v`` is within 1e-6, relative, of sigma_max); a block that fails the check, and
    float64, other devices and compiled graphs, take a symmetric eigendecomposition (``eigh``)
    instead. Where a
    block is zero, ``u`` and ``v`` are returned (any vector is then a singular vector).

    >>> W = torch.diag(torch.tensor([1.0, 3.0])).unsqueeze(0)
    >>> u, v = top_singular_vectors(W, torch.ones(1, 2), torch.ones(1, 2))
    >>> round(torch.einsum("bi,bij,bj->b", u, W, v).item(), 5)
    3.0
    """
    dt = compute_dtype(W.dtype)
    with torch.autocast(W.device.type, enabled=False):
        Wd, u0, v0 = W.to(dt), u.to(dt), v.to(dt)
        if Wd.shape[-2] < Wd.shape[-1]:  # wide: the m x m Gram matrix is the smaller one
            u1 = _top_eigenvectors(Wd @ Wd.transpose(-2, -1), u0, eps)  # (k, m)
            v1 = torch.bmm(Wd.transpose(-2, -1), u1.unsqueeze(-1)).squeeze(-1)  # (k, n)
            ok = v1.norm(dim=-1, keepdim=True) > eps
            return torch.where(ok, u1, u0), torch.where(ok, _normalize(v1, eps), v0)
        v1 = _top_eigenvectors(Wd.transpose(-2, -1) @ Wd, v0, eps)  # (k, n)
        u1 = torch.bmm(Wd, v1.unsqueeze(-1)).squeeze(-1)  # (k, m)
        ok = u1.norm(dim=-1, keepdim=True) > eps
        return torch.where(ok, _normalize(u1, eps), u0), torch.where(ok, v1, v0)
