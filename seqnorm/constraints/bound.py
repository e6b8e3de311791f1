"""``bound``: ``W / max(1, sigma(W) / gamma)`` per gate block, rescales only above the cap."""

from __future__ import annotations

import torch
from torch import Tensor

from ..linalg import as_blocks
from .norm import SigmaNorm
from .scale import check_gamma

__all__ = ["Bound"]


class Bound(SigmaNorm):
    """``W / max(1, sigma(W) / gamma)`` per gate block: shrinks only when ``sigma > gamma``.

    Args:
        shape: shape of the constrained matrix.
        blocks: number of gate blocks.
        gamma: the cap on every block's largest singular value.
        estimator: how sigma is computed, ``"exact"`` or ``"power"`` (see ``SigmaNorm``).
        n_power_iterations: steps per training forward with ``estimator="power"``.
        eps: floor on sigma.
    """

    def __init__(
        self,
        shape: torch.Size,
        blocks: int,
        gamma: float = 1.0,
        estimator: str = "exact",
        n_power_iterations: int = 1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(shape, blocks, estimator, n_power_iterations, eps)
        self.gamma = check_gamma(gamma)

    def forward(self, W: Tensor) -> Tensor:
        Wb = as_blocks(W, self.blocks)
        div = (self.sigma(W) / self.gamma).clamp_min(1.0)  # (k,)
        return (Wb / div[:, None, None]).reshape_as(W)

    @staticmethod
    def holds(s: Tensor, tol: float, gamma: float = 1.0) -> bool:
        """Whether singular values ``s`` (``(k, n)``, descending) satisfy the constraint."""
        return bool((s[:, 0] <= gamma + tol).all())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma={self.gamma}"
