"""``spectral``: ``W / sigma(W)``, the largest singular value (or operator norm) becomes 1."""

from __future__ import annotations

from torch import Tensor

from .cap import Cap
from .norm import SigmaNorm

__all__ = ["Spectral", "SpectralCap"]


class SpectralCap(Cap):
    """The formula of ``spectral``: ``factor = 1 / sigma``, so the capped sigma is 1."""

    def factor(self, sigma: Tensor) -> Tensor:
        return 1 / sigma

    def within(self, sigma: Tensor, tol: float) -> bool:
        return bool(((sigma - 1).abs() <= tol).all())


class Spectral(SpectralCap, SigmaNorm):
    """``W / sigma(W)`` per gate block: every block's largest singular value is 1.

    Args: as :class:`~seqnorm.constraints.norm.SigmaNorm`.

    >>> import torch
    >>> cap = Spectral(torch.Size((4, 4)), 1)
    >>> cap.holds(cap(3 * torch.eye(4))), cap.holds(3 * torch.eye(4))
    (True, False)
    """
