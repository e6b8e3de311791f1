"""``orthogonal``: every gate block orthogonal, by dynamic trivialization (expRNN, scoRNN)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..linalg import as_blocks, compute_dtype

__all__ = ["MAPS", "Orthogonal", "polar", "skew"]

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


class Orthogonal(nn.Module):
    """Orthogonal gate blocks: ``W = base @ map(skew(A))`` with ``map`` exp or Cayley.

    The stored parameter ``A`` is unconstrained; ``base`` is a buffer. This is dynamic
    trivialization (Lezcano-Casado, 2019): every ``rebase_every`` training forwards (one per
    optimiser step in a usual loop) the current point is folded into the base
    (``base <- polar(base @ map(skew(A)))``, ``A <- 0``), so the map is always used near the
    identity, where it is well conditioned. ``W`` does not change at a re-base. Assigning a
    weight (``layer.weight_hh_l0 = W``, or registration) sets ``base`` to its nearest orthogonal
    matrix and ``A`` to 0. All singular values are 1 to float precision.

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
        if rebase_every is not None and (
            not isinstance(rebase_every, int) or isinstance(rebase_every, bool) or rebase_every < 1
        ):
            raise ValueError(f"rebase_every must be a positive int or None, got {rebase_every!r}")
        self.blocks, self.map, self.rebase_every = blocks, map, rebase_every
        self.register_buffer("base", torch.eye(cols).repeat(blocks, 1, 1))
        #: Training forwards since construction; a re-base happens every ``rebase_every``.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _map(self, Ab: Tensor) -> Tensor:
        # In float64: after a large step skew(A) can have a large norm, and float32's
        # exp/Cayley then drift from orthogonal by ~1e-4. Per call, not per time step.
        S = skew(Ab.to(torch.float64))  # (k, n, n)
        Q = torch.matrix_exp(S) if self.map == "exp" else _cayley(S)
        return Q.to(Ab.dtype)

    def forward(self, A: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled() and A.device.type != "meta":
            if self.rebase_every is not None and self.steps > 0:
                if int(self.steps) % self.rebase_every == 0:
                    self.rebase(A)
            self.steps += 1
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
        U, _, V = polar(as_blocks(W, self.blocks))
        self.base = (U @ V.transpose(-2, -1)).to(W.dtype)  # (k, n, n)
        return torch.zeros_like(W)

    @staticmethod
    def holds(s: Tensor, tol: float) -> bool:
        """Whether singular values ``s`` (``(k, n)``) are all 1 within ``tol``."""
        return bool(((s - 1).abs() <= tol).all())

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, map={self.map!r}, rebase_every={self.rebase_every}"
