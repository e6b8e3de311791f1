"""``band``: every singular value of every gate block in ``[1 - r, 1 + r]``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..linalg import as_blocks, compute_dtype
from .cap import Constraint
from .orthogonal import polar, skew

__all__ = ["Band"]


class Band(Constraint):
    """Singular values in ``[1 - r, 1 + r]``: ``W = U diag(s) V^T`` per gate block.

    ``U = base_u @ expm(skew(A_u))`` and ``V = base_v @ expm(skew(A_v))`` are orthogonal by
    construction and ``s = 1 + r * tanh(s_raw)``, so the band holds exactly whatever values the
    three stored tensors (``original0..2``) take.

    Args:
        shape: shape of the constrained matrix ``(blocks*n, n)``.
        blocks: number of square gate blocks.
        r: half-width of the band, in ``(0, 1)``.
    """

    def __init__(self, shape: torch.Size, blocks: int, *, r: float = 0.1) -> None:
        super().__init__()
        rows, cols = shape
        if rows // blocks != cols:
            raise ValueError(
                f"band needs square gate blocks, got shape {tuple(shape)} with blocks={blocks}"
            )
        if not (isinstance(r, (int, float)) and 0 < r < 1):
            raise ValueError(f"r must be in the open interval (0, 1), got {r!r}")
        self.blocks, self.r = blocks, float(r)
        eye = torch.eye(cols).repeat(blocks, 1, 1)
        self.register_buffer("base_u", eye.clone())
        self.register_buffer("base_v", eye.clone())

    def forward(self, A_u: Tensor, A_v: Tensor, s_raw: Tensor) -> Tensor:
        U = self.base_u.to(A_u.dtype) @ torch.matrix_exp(skew(A_u))  # (k, H, H)
        V = self.base_v.to(A_v.dtype) @ torch.matrix_exp(skew(A_v))  # (k, H, H)
        s = 1 + self.r * torch.tanh(s_raw)  # (k, H)
        Wb = (U * s[:, None, :]) @ V.transpose(-2, -1)
        return Wb.reshape(-1, Wb.shape[-1])

    @torch.no_grad()
    def right_inverse(self, W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``U, V`` of ``W``'s SVD into the bases, its singular values clamped into the band."""
        U, S, V = polar(as_blocks(W, self.blocks))
        self.base_u, self.base_v = U, V
        frac = ((S - 1) / self.r).clamp(-0.999, 0.999)
        return torch.zeros_like(U), torch.zeros_like(V), torch.atanh(frac)

    def holds(self, W: Tensor, tol: float = 1e-3) -> bool:
        """Whether every singular value of every block of ``W`` lies in ``[1 - r, 1 + r]``."""
        s = torch.linalg.svdvals(as_blocks(W.detach(), self.blocks).to(compute_dtype(W.dtype)))
        return bool(((s[:, -1] >= 1 - self.r - tol) & (s[:, 0] <= 1 + self.r + tol)).all())

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}, r={self.r}"
