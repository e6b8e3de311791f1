"""``orthogonal``: every gate block orthogonal, by dynamic trivialization (expRNN, scoRNN)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..linalg import as_blocks, check_int, compute_dtype
from .cap import Constraint

__all__ = ["MAPS", "Orthogonal", "expm_skew", "polar", "skew"]

#: Maps from a skew-symmetric matrix to an orthogonal one.
MAPS = ("exp", "cayley")


def skew(A: Tensor) -> Tensor:
    """The skew-symmetric matrix ``triu(A, 1) - triu(A, 1)^T`` of each block ``(..., n, n)``."""
    A = A.triu(1)
    return A - A.transpose(-2, -1)


@torch.no_grad()
def polar(Wb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``U, S, V`` with ``Wb = U diag(S) V^T`` per block; ``U V^T`` is the nearest orthogonal."""
    U, S, Vh = torch.linalg.svd(Wb.to(compute_dtype(Wb.dtype)))
    return U.to(Wb.dtype), S.to(Wb.dtype), Vh.transpose(-2, -1).to(Wb.dtype)


def _cayley(S: Tensor) -> Tensor:
    eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device).expand_as(S)
    return torch.linalg.solve(eye + S, eye - S)  # (I + S)^-1 (I - S), as scoRNN


class _ExpSkew(torch.autograd.Function):
    """``exp(S)`` of real skew-symmetric ``S`` from one Hermitian eigendecomposition.

    ``iS`` is Hermitian: ``iS = V diag(l) V^H``, so ``exp(S) = V diag(exp(-i l)) V^H``. The
    backward is the exact adjoint of the Frechet derivative of ``exp`` for a normal matrix,
    ``V ((V^H G V) * Phi) V^H`` with ``Phi_jk = exp(i (l_j + l_k) / 2) sinc((l_j - l_k) / 2)``
    (divided differences of ``exp`` at ``i l``, stable when eigenvalues coincide). It costs
    a few complex matrix products instead of ``torch.matrix_exp``'s backward, the exponential
    of a ``2n x 2n`` block matrix.

    That backward is not itself differentiable (``lam`` and ``V`` are constants to it), so when
    a graph of the gradient is asked for (``create_graph=True``: a double backward) the
    gradient is computed as ``torch.matrix_exp``'s is (:func:`_expm_adjoint`), in
    differentiable ops.
    """

    @staticmethod
    def forward(S: Tensor) -> Tensor:  # noqa: D102 (S: (k, n, n) real skew)
        lam, V = torch.linalg.eigh(S.to(_complex(S.dtype)) * 1j)  # (k, n), (k, n, n)
        Q = (V * torch.polar(torch.ones_like(lam), -lam)[..., None, :]) @ V.mH  # (k, n, n)
        return Q.real.to(S.dtype), lam, V

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001, D102
        (S,) = inputs
        _, lam, V = output
        ctx.save_for_backward(S, lam, V)
        ctx.mark_non_differentiable(lam, V)

    @staticmethod
    def backward(ctx, G: Tensor, _lam: Tensor, _V: Tensor) -> Tensor:  # noqa: ANN001, D102
        S, lam, V = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a gradient that is differentiable
            return _expm_adjoint(S, G)
        d = lam[..., :, None] - lam[..., None, :]  # (k, n, n)
        m = lam[..., :, None] + lam[..., None, :]
        # Divided differences of exp at x = i*lam for X = -S = S^T, exp(X)'s adjoint direction.
        phi = torch.polar(torch.sinc(d / (2 * torch.pi)), m / 2)  # (k, n, n) complex
        Gc = G.to(V.dtype)
        return (V @ ((V.mH @ Gc @ V) * phi) @ V.mH).real.to(G.dtype)


def _expm_adjoint(S: Tensor, G: Tensor) -> Tensor:
    """The gradient ``L(S^T, G)`` of ``<G, exp(S)>`` with respect to ``S`` ``(k, n, n)``, in
    differentiable ops (so to any order).

    ``L(A, E)``, the Frechet derivative of ``exp`` at ``A`` in direction ``E``, is the upper
    right block of ``exp([[A, E], [0, A]])`` (Higham, *Functions of Matrices*, 3.2); its
    adjoint is ``L(A^T, .)``. This is what ``torch.matrix_exp``'s own backward computes.
    """
    n = S.shape[-1]
    St = S.mT  # (k, n, n)
    M = torch.cat([torch.cat([St, G], -1), torch.cat([torch.zeros_like(S), St], -1)], -2)
    return torch.matrix_exp(M)[..., :n, n:]  # (k, n, n) of the (k, 2n, 2n) exponential


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def expm_skew(S: Tensor) -> Tensor:
    """``torch.matrix_exp(S)`` for real skew-symmetric blocks ``S`` ``(..., n, n)``, faster.

    Computed in the dtype of ``S`` from an eigendecomposition (see ``_ExpSkew``); its
    gradient is the exact gradient of the matrix exponential, and so are its higher ones
    (a double backward differentiates ``torch.matrix_exp``'s own gradient formula).

    >>> S = skew(torch.randn(2, 5, 5, dtype=torch.float64))
    >>> torch.allclose(expm_skew(S), torch.matrix_exp(S), atol=1e-12)
    True
    """
    return _ExpSkew.apply(S)[0]


class Orthogonal(Constraint):
    """Orthogonal gate blocks: ``W = base @ map(skew(A))`` with ``map`` exp or Cayley.

    The stored parameter ``A`` is unconstrained; ``base`` is a buffer. This is dynamic
    trivialization (Lezcano-Casado, 2019): every ``rebase_every`` training forwards (one per
    optimiser step in a usual loop) the current point is folded into the base
    (``base <- polar(base @ map(skew(A)))``, ``A <- 0``), so the map is always used near the
    identity, where it is well conditioned. ``W`` does not change at a re-base. Assigning a
    weight (``layer.weight_hh_l0 = W``, or registration) sets ``base`` to its nearest orthogonal
    matrix and ``A`` to 0. All singular values are 1 to float precision.

    The map is computed in float64 whatever the weight's dtype (after a large step ``skew(A)``
    can have a large norm, and float32's exp/Cayley then drift from orthogonal by ~1e-4); the
    exponential from one Hermitian eigendecomposition (:func:`expm_skew`), the Cayley map
    from one solve. Once per call, not per time step.

    Under ``torch.compile`` the re-base (a data-dependent branch) is not traced: compiled
    code counts its forwards but does not re-base, i.e. it trains by static trivialization
    until an eager training forward re-bases.

    Args:
        shape: shape of the constrained matrix ``(blocks*n, n)``.
        blocks: number of square gate blocks.
        map: ``"exp"`` (matrix exponential, expRNN) or ``"cayley"`` (scoRNN).
        rebase_every: re-base after this many training forwards; ``None`` never re-bases
            (static trivialization).
    """

    def __init__(
        self,
        shape: torch.Size,
        blocks: int,
        *,
        map: str = "exp",
        rebase_every: int | None = 100,
    ) -> None:
        super().__init__()
        rows, cols = shape
        if rows // blocks != cols:
            raise ValueError(
                f"orthogonal needs square gate blocks, got shape {tuple(shape)} "
                f"with blocks={blocks}"
            )
        if map not in MAPS:
            raise ValueError(f"map must be one of {MAPS}, got {map!r}")
        if rebase_every is not None:
            check_int("rebase_every", rebase_every, minimum=1, expected="a positive int or None")
        self.blocks, self.map, self.rebase_every = blocks, map, rebase_every
        self.register_buffer("base", torch.eye(cols).repeat(blocks, 1, 1))
        #: Training forwards since construction; a re-base happens every ``rebase_every``.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _map(self, Ab: Tensor) -> Tensor:
        S = skew(Ab.to(torch.float64))  # (k, n, n)
        Q = expm_skew(S) if self.map == "exp" else _cayley(S)
        return Q.to(Ab.dtype)

    def forward(self, A: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled() and A.device.type != "meta":
            if self.rebase_every is not None and not torch.compiler.is_compiling():
                n = int(self.steps)
                if n > 0 and n % self.rebase_every == 0:
                    self.rebase(A)
            self.steps.add_(1)
        Ab = as_blocks(A, self.blocks)  # (k, n, n)
        return (self.base.to(A.dtype) @ self._map(Ab)).reshape_as(A)  # (k*n, n)

    @torch.no_grad()
    def rebase(self, A: Tensor) -> None:
        """Fold ``map(skew(A))`` into ``base`` and zero ``A`` in place; ``W`` is unchanged."""
        Q = self.base.to(A.dtype) @ self._map(as_blocks(A, self.blocks))
        U, _, V = polar(Q)
        self.base.copy_(U @ V.transpose(-2, -1))
        A.zero_()

    @torch.no_grad()
    def right_inverse(self, W: Tensor) -> Tensor:
        """``A = 0`` with ``base`` the nearest orthogonal matrix to each block of ``W``."""
        U, _, V = polar(as_blocks(W, self.blocks))
        self.base = (U @ V.transpose(-2, -1)).to(W.dtype)  # (k, n, n)
        return torch.zeros_like(W)

    def holds(self, W: Tensor, tol: float = 1e-3) -> bool:
        """Whether every singular value of every block of ``W`` is 1 within ``tol``."""
        s = torch.linalg.svdvals(as_blocks(W.detach(), self.blocks).to(compute_dtype(W.dtype)))
        return bool(((s - 1).abs() <= tol).all())

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, map={self.map!r}, rebase_every={self.rebase_every}"
