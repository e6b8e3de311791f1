"""``orthogonal`` for a non-square matrix: orthonormal rows (wide) or columns (tall)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..linalg import compute_dtype
from .cap import Constraint
from .orthogonal import Orthogonal

__all__ = ["SemiOrthogonal"]


@torch.no_grad()
def _complete(P: Tensor) -> Tensor:
    """A square orthogonal matrix whose top-left ``(m, n)`` corner is ``P``.

    ``P`` must have orthonormal columns (``m >= n``) or orthonormal rows (``m < n``).
    """
    m, n = P.shape
    if m < n:
        return _complete(P.T).T
    Q, _ = torch.linalg.qr(P, mode="complete")  # (m, m); Q[:, n:] spans P's complement
    return torch.cat([P, Q[:, n:]], dim=1)


class SemiOrthogonal(Constraint):
    """Non-square ``W`` (``m x n``) with all ``min(m, n)`` singular values 1.

    ``W`` is the top-left ``m x n`` corner of a square orthogonal ``p x p`` matrix
    (``p = max(m, n)``) parametrized by :class:`~seqnorm.constraints.orthogonal.Orthogonal`
    (dynamic trivialization with the exp or Cayley map). A corner of an orthogonal matrix
    that spans all its rows (wide) or columns (tall) has orthonormal rows or columns, so
    every singular value is 1 whatever the stored ``p x p`` tensor holds. Assigning a weight
    (or registration) stores its nearest semi-orthogonal matrix ``U V^T`` (from the reduced
    SVD ``W = U S V^T``), completed to a square orthogonal one.

    Args:
        shape: ``(m, n)``, non-square.
        blocks: must be 1 (gate blocks are square).
        map: ``"exp"`` or ``"cayley"`` (see ``Orthogonal``).
        rebase_every: see ``Orthogonal``.
    """

    def __init__(
        self,
        shape: torch.Size,
        blocks: int = 1,
        *,
        map: str = "exp",
        rebase_every: int | None = 100,
    ) -> None:
        super().__init__()
        rows, cols = shape
        if blocks != 1:
            raise ValueError(f"a non-square orthogonal matrix needs blocks=1, got blocks={blocks}")
        if rows == cols:
            raise ValueError(f"shape must be non-square (use Orthogonal), got {tuple(shape)}")
        self.rows, self.cols = int(rows), int(cols)
        p = max(self.rows, self.cols)
        self.square = Orthogonal(torch.Size((p, p)), 1, map=map, rebase_every=rebase_every)

    def forward(self, A: Tensor) -> Tensor:
        return self.square(A)[: self.rows, : self.cols]  # (m, n)

    @torch.no_grad()
    def right_inverse(self, W: Tensor) -> Tensor:
        """The square orthogonal completion of ``W``'s nearest semi-orthogonal matrix."""
        U, _, Vh = torch.linalg.svd(W.to(compute_dtype(W.dtype)), full_matrices=False)
        return self.square.right_inverse(_complete(U @ Vh).to(W.dtype))

    def holds(self, W: Tensor, tol: float = 1e-3) -> bool:
        """Whether all ``min(m, n)`` singular values of ``W`` are 1 within ``tol``."""
        s = torch.linalg.svdvals(W.detach().to(compute_dtype(W.dtype)))
        return bool(((s - 1).abs() <= tol).all())

    def extra_repr(self) -> str:
        return f"shape=({self.rows}, {self.cols})"
