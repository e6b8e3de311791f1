"""``spectral``: ``W / sigma(W)`` per gate block, the largest singular value becomes 1."""

from __future__ import annotations

from torch import Tensor

from ..linalg import as_blocks
from .norm import SigmaNorm

__all__ = ["Spectral"]


class Spectral(SigmaNorm):
    """``W / sigma(W)`` per gate block: every block's largest singular value is 1.

    Args: as :class:`~seqnorm.constraints.norm.SigmaNorm`.
    """

    def forward(self, W: Tensor) -> Tensor:
        Wb = as_blocks(W, self.blocks)  # (k, m, n)
        return (Wb / self.sigma(W)[:, None, None]).reshape_as(W)

    @staticmethod
    def holds(s: Tensor, tol: float, **options: object) -> bool:
        """Whether singular values ``s`` (``(k, n)``, descending) satisfy the constraint."""
        return bool(((s[:, 0] - 1).abs() <= tol).all())
